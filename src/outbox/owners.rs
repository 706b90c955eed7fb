//! Which connections this instance owns (PostgreSQL, several instances): it runs senders for a
//! connection only while it holds the connection's ownership lease (see
//! [`crate::store::owners`]), so the connection's limits are enforced by one scheduler across
//! the cluster. On SQLite one process serves the store and owns everything: nothing here costs
//! a round trip there.
//!
//! Safety margin: a lease counts as held here until `lease` after the statement that took or
//! last renewed it *started*, so this instance stops using a connection before any other
//! instance can take it by the database's clock (the two clocks tick at the same rate; their
//! offsets do not matter).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::owners::Take;
use crate::store::{Store, StoreError};

/// A connection held by another instance is tried again after at most this long (its owner
/// may release it early, when its senders end).
const RETRY: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Owners {
    /// This process's name in `connection_owners` (unique per run: several instances may share
    /// a host name).
    instance: String,
    /// False on SQLite: everything is owned, nothing is asked.
    shared: bool,
    lease: Duration,
    /// Owned connections, each valid until this instant (unless renewed).
    held: Mutex<HashMap<i64, Instant>>,
    /// Connections another instance holds: not asked again before this instant.
    elsewhere: Mutex<HashMap<i64, Instant>>,
    /// Owned connections being handed to an instance that wants them (rebalancing): no new
    /// message starts on them, and the lease is deleted once their senders end.
    yielding: Mutex<HashSet<i64>>,
    /// Takes, renewals and releases run one at a time, so a release never deletes a lease that
    /// a take just renewed for a new sender.
    ops: tokio::sync::Mutex<()>,
}

/// What [`Owners::acquire`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// Ours (already, or taken now: `fresh`, then its daily usage is read again from the log).
    Owned { fresh: bool },
    /// Another instance's: try again at this instant.
    Elsewhere(Instant),
}

impl Owners {
    pub fn new(store: &Store) -> Self {
        Self {
            instance: format!(
                "pid{}-{:012x}",
                std::process::id(),
                rand::random::<u64>() & 0xffff_ffff_ffff
            ),
            shared: store.backend().is_postgres(),
            lease: Duration::from_millis(store.lease_ms().max(1) as u64),
            held: Mutex::new(HashMap::new()),
            elsewhere: Mutex::new(HashMap::new()),
            yielding: Mutex::new(HashSet::new()),
            ops: tokio::sync::Mutex::new(()),
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Whether ownership is shared with other instances (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Instant>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn elsewhere(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Instant>> {
        self.elsewhere.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn yielding(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.yielding.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this instance may send for `connection_id` now (no round trip).
    pub fn owns(&self, connection_id: i64) -> bool {
        !self.shared
            || self
                .held()
                .get(&connection_id)
                .is_some_and(|&until| until > Instant::now())
    }

    /// Ownership of `connection_id` for a sender about to start: from memory when held, else
    /// one statement (at most once per [`RETRY`] while another instance holds it).
    pub async fn acquire(&self, store: &Store, connection_id: i64) -> Result<Acquired, StoreError> {
        if self.owns(connection_id) {
            return Ok(Acquired::Owned { fresh: false });
        }
        if self.yielding().contains(&connection_id) {
            // Being handed over: its senders are ending, another instance takes it after.
            return Ok(Acquired::Elsewhere(Instant::now() + RETRY));
        }
        if let Some(&at) = self.elsewhere().get(&connection_id)
            && at > Instant::now()
        {
            return Ok(Acquired::Elsewhere(at));
        }
        let _op = self.ops.lock().await;
        if self.owns(connection_id) {
            return Ok(Acquired::Owned { fresh: false });
        }
        let started = Instant::now();
        match store.take_connection(connection_id, &self.instance).await? {
            Take::Taken => {
                self.elsewhere().remove(&connection_id);
                self.held().insert(connection_id, started + self.lease);
                Ok(Acquired::Owned { fresh: true })
            }
            Take::Held { expires_in_ms } => {
                let wait = Duration::from_millis(expires_in_ms as u64).min(RETRY);
                let at = Instant::now() + wait.max(Duration::from_millis(100));
                self.elsewhere().insert(connection_id, at);
                Ok(Acquired::Elsewhere(at))
            }
        }
    }

    /// Renews every lease held, in one statement; connections lost (the lease ran out and
    /// another instance took it) are forgotten, so their senders stop at their next message.
    /// Rebalancing: while this instance holds more than its share of the cluster's owned
    /// connections, it gives up the ones other instances want (they stop taking new messages
    /// here; [`Owners::release`] deletes each lease once its senders end). Returns the
    /// connections being given up.
    pub async fn renew(&self, store: &Store) -> Result<Vec<i64>, StoreError> {
        if !self.shared {
            return Ok(Vec::new());
        }
        let _op = self.ops.lock().await;
        if self.held().is_empty() && self.yielding().is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let renewal = store.renew_connections(&self.instance).await?;
        let mut held = self.held();
        let mut yielding = self.yielding();
        yielding.retain(|c| renewal.kept.contains(c));
        let lost: Vec<i64> = held
            .keys()
            .filter(|c| !renewal.kept.contains(c))
            .copied()
            .collect();
        for c in &lost {
            held.remove(c);
            tracing::warn!(
                connection = c,
                "lost the ownership of a connection (its lease ran out): its senders stop"
            );
        }
        for &c in &renewal.kept {
            if !yielding.contains(&c) {
                held.insert(c, started + self.lease);
            }
        }
        let over = renewal.kept.len().saturating_sub(renewal.share);
        let give = over.saturating_sub(yielding.len());
        for &c in renewal
            .wanted
            .iter()
            .filter(|c| !yielding.contains(c))
            .take(give)
            .collect::<Vec<_>>()
        {
            held.remove(&c);
            yielding.insert(c);
            tracing::info!(
                connection = c,
                owned = renewal.kept.len(),
                share = renewal.share,
                "handing a connection to another instance that wants it (rebalancing)"
            );
        }
        Ok(yielding.iter().copied().collect())
    }

    /// Gives `connection_id` up when `idle()` (checked after every take and renewal finished,
    /// so no sender starts on a lease being deleted) says no sender of it runs.
    pub async fn release(
        &self,
        store: &Store,
        connection_id: i64,
        idle: impl FnOnce() -> bool,
    ) -> Result<(), StoreError> {
        if !self.shared {
            return Ok(());
        }
        let _op = self.ops.lock().await;
        {
            let mut held = self.held();
            let mut yielding = self.yielding();
            let handed = yielding.contains(&connection_id);
            if !(held.contains_key(&connection_id) || handed) || !idle() {
                return Ok(());
            }
            held.remove(&connection_id);
            yielding.remove(&connection_id);
            if handed {
                // Not taken back before the instance that wants it asks again (every RETRY).
                self.elsewhere()
                    .insert(connection_id, Instant::now() + 2 * RETRY);
            }
        }
        store
            .release_connection(connection_id, &self.instance)
            .await
    }

    /// How often the leases are renewed: a third of the lease.
    pub fn heartbeat(&self) -> Duration {
        (self.lease / 3).max(Duration::from_millis(300))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two instances: the first took four busy connections before the second started; the
    /// second asks for them; at the next heartbeat the first gives two up (its share), the
    /// second takes them, and nothing moves after that.
    #[tokio::test]
    async fn an_instance_over_its_share_hands_wanted_connections_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::test_store(dir.path()).await;
        if !store.backend().is_postgres() {
            eprintln!(
                "skipped: ownership is shared on PostgreSQL only; set {}",
                crate::store::TEST_STORE_URL
            );
            return;
        }
        let (a, b) = (Owners::new(&store), Owners::new(&store));
        let busy = [1, 2, 3, 4];
        for c in busy {
            assert_eq!(
                a.acquire(&store, c).await.unwrap(),
                Acquired::Owned { fresh: true }
            );
        }
        for c in busy {
            assert!(matches!(
                b.acquire(&store, c).await.unwrap(),
                Acquired::Elsewhere(_)
            ));
        }
        let handing = a.renew(&store).await.unwrap();
        assert_eq!(
            handing.len(),
            2,
            "4 owned, 2 instances: a keeps its share of 2"
        );
        for &c in &handing {
            assert!(
                !a.owns(c),
                "no new message starts on a connection being handed over"
            );
            assert!(matches!(
                a.acquire(&store, c).await.unwrap(),
                Acquired::Elsewhere(_)
            ));
        }
        // Its senders ended: the leases go.
        for &c in &handing {
            a.release(&store, c, || true).await.unwrap();
        }
        // The second instance asks again (every RETRY at most) and gets them.
        tokio::time::sleep(RETRY).await;
        for c in busy {
            let got = b.acquire(&store, c).await.unwrap();
            assert_eq!(
                matches!(got, Acquired::Owned { .. }),
                handing.contains(&c),
                "connection {c}: {got:?}"
            );
        }
        let owners = store.connection_owners().await.unwrap();
        let of = |o: &Owners| owners.iter().filter(|(_, i)| i == o.instance()).count();
        assert_eq!((of(&a), of(&b)), (2, 2), "{owners:?}");
        // Balanced: the next heartbeats move nothing, though b still wants a's two.
        assert!(a.renew(&store).await.unwrap().is_empty());
        assert!(b.renew(&store).await.unwrap().is_empty());
        assert_eq!(busy.iter().filter(|&&c| a.owns(c)).count(), 2);
        assert_eq!(busy.iter().filter(|&&c| b.owns(c)).count(), 2);
    }
}
