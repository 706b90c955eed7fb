//! Failed logins (relay SMTP AUTH, admin web login) counted across every instance on the store,
//! so a guesser cannot spread its tries over the instances behind a load balancer.
//!
//! Deciding never waits for the database: each instance keeps the cluster's counts in memory
//! ([`SharedFailures`]) and a sync task, once a [`TICK`], writes the failures seen here since the
//! last tick (one transaction, however many wrong passwords arrived) and reads the rows any
//! instance changed since (an indexed range on `last_at`, empty when nobody is guessing). A right
//! password costs no round trip; a flood of wrong ones costs one write per client per tick; the
//! maps are bounded like the relay's own memory. Another instance's failures are seen within a
//! tick or two, which is all throttling needs (the argon2 pool bounds the guessing rate anyway).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Store, StoreError};

/// How long failures are remembered after the last one (the relay's and the web login's window).
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// How often an instance writes its new failures and reads the others'.
pub const TICK: Duration = Duration::from_secs(1);
/// Clients remembered at most (per map); past that, expired entries go, then everything, so a
/// flood from very many addresses cannot grow memory.
const CAPACITY: usize = 10_000;
/// Rows read back may have been stamped a little before an earlier read committed: re-read
/// this far behind the last read.
const OVERLAP_MS: i64 = 5_000;
/// Expired rows are deleted every this many ticks.
const SWEEP_TICKS: u32 = 60;

/// What was guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// Relay SMTP AUTH, by client address (IPv6 by /64).
    Relay,
    /// Admin web login, by client address (or user name without one).
    Login,
}

impl FailureKind {
    fn as_str(self) -> &'static str {
        match self {
            FailureKind::Relay => "relay",
            FailureKind::Login => "login",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "relay" => Some(FailureKind::Relay),
            "login" => Some(FailureKind::Login),
            _ => None,
        }
    }
}

type Key = (FailureKind, String);

/// Failures within the window, and when the last one was (this module's and the relay's own
/// memory count alike).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FailureCount {
    pub failures: u32,
    pub last: Instant,
}

impl FailureCount {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            failures: 0,
            last: now,
        }
    }

    /// One more failure at `now`; one a whole window after the last starts a new count.
    pub(crate) fn add(&mut self, now: Instant) {
        if now.duration_since(self.last) >= WINDOW {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.last = now;
    }
}

#[derive(Debug, Default)]
struct State {
    /// The cluster's counts as last read, plus this instance's failures since.
    known: HashMap<Key, FailureCount>,
    /// Failures not written yet.
    pending: HashMap<Key, u32>,
    /// Successful logins not written yet (their counts are cleared).
    cleared: Vec<Key>,
    /// Database time (ms) of the last read.
    read_up_to: Option<i64>,
    /// The store's count of failure writes after this instance's last sync.
    writes_seen: u64,
    ticks: u32,
}

/// The cluster-wide failure counts, as this instance knows them; cheap to clone.
#[derive(Debug, Clone)]
pub struct SharedFailures {
    store: Store,
    state: Arc<Mutex<State>>,
}

impl SharedFailures {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            state: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Failures of `subject` within the window, cluster-wide, and how long ago the last was.
    pub fn recent(&self, kind: FailureKind, subject: &str) -> (u32, Duration) {
        let state = self.lock();
        state
            .known
            .get(&(kind, subject.to_string()))
            .map(|k| (k.failures, k.last.elapsed()))
            .filter(|(_, age)| *age < WINDOW)
            .unwrap_or((0, Duration::ZERO))
    }

    /// Records one failure of `subject` (written at the next tick).
    pub fn failed(&self, kind: FailureKind, subject: &str) {
        let now = Instant::now();
        let key = (kind, subject.to_string());
        let mut state = self.lock();
        bound(&mut state.known, |k| now.duration_since(k.last) < WINDOW);
        state
            .known
            .entry(key.clone())
            .or_insert(FailureCount::new(now))
            .add(now);
        if state.pending.len() < CAPACITY || state.pending.contains_key(&key) {
            *state.pending.entry(key).or_default() += 1;
        }
    }

    /// Forgets `subject`'s failures (a right password), here at once and in the store at the
    /// next tick; no round trip unless it had failures.
    pub fn succeeded(&self, kind: FailureKind, subject: &str) {
        let key = (kind, subject.to_string());
        let mut state = self.lock();
        let had = state.known.remove(&key).is_some();
        state.pending.remove(&key);
        if had && state.cleared.len() < CAPACITY {
            state.cleared.push(key);
        }
    }

    /// Writes this instance's new failures and reads everyone's changes since the last read.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let (pending, cleared, since, sweep) = {
            let mut s = self.lock();
            s.ticks = s.ticks.wrapping_add(1);
            (
                std::mem::take(&mut s.pending),
                std::mem::take(&mut s.cleared),
                s.read_up_to.map_or(0, |t| t - OVERLAP_MS),
                s.ticks % SWEEP_TICKS == 1,
            )
        };
        let adds: Vec<(&str, &str, i64)> = pending
            .iter()
            .map(|((k, s), n)| (k.as_str(), s.as_str(), i64::from(*n)))
            .collect();
        let clears: Vec<(&str, &str)> = cleared
            .iter()
            .map(|(k, s)| (k.as_str(), s.as_str()))
            .collect();
        let writes_before = self.store.auth_writes();
        let wrote = match self.store.write_auth_failures(&adds, &clears, sweep).await {
            Ok(wrote) => wrote,
            Err(e) => {
                // Kept for the next tick rather than lost.
                let mut s = self.lock();
                for (key, n) in pending {
                    *s.pending.entry(key).or_default() += n;
                }
                s.cleared.extend(cleared);
                return Err(e);
            }
        };
        // On SQLite one process serves the data directory (`serve.lock`), so only instances
        // in this process write the counts, and this one read back what they wrote: a read is
        // needed at the first sync and after another of them wrote. An idle instance then
        // does nothing here. On PostgreSQL other processes write: read every tick.
        let writes_after = self.store.auth_writes();
        {
            let mut s = self.lock();
            let others_wrote =
                writes_before != s.writes_seen || writes_after - writes_before > u64::from(wrote);
            if !(s.read_up_to.is_none() || others_wrote || self.store.backend().is_postgres()) {
                s.writes_seen = writes_after;
                return Ok(());
            }
        }
        let (now, rows) = self.store.auth_failures_since(since).await?;
        let at = Instant::now();
        let mut s = self.lock();
        for (kind, subject, failures, last_at) in rows {
            let Some(kind) = FailureKind::parse(&kind) else {
                continue;
            };
            let age = Duration::from_millis(u64::try_from(now - last_at).unwrap_or(0));
            if age >= WINDOW {
                continue;
            }
            let key = (kind, subject);
            // Failures seen here since this sync began are not in the row yet.
            let unwritten = s.pending.get(&key).copied().unwrap_or(0);
            let failures = u32::try_from(failures)
                .unwrap_or(u32::MAX)
                .saturating_add(unwritten);
            let last = at.checked_sub(age).unwrap_or(at);
            bound(&mut s.known, |k| at.duration_since(k.last) < WINDOW);
            s.known.insert(key, FailureCount { failures, last });
        }
        s.read_up_to = Some(now);
        s.writes_seen = writes_after;
        Ok(())
    }

    /// Syncs every [`TICK`] until `stop`, then once more.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(TICK) => false,
                _ = stop.cancelled() => true,
            };
            if let Err(e) = self.sync().await {
                tracing::warn!(error = %e, "sharing failed-login counts through the store");
            }
            if stopping {
                return;
            }
        }
    }
}

/// Makes room in `map` before an insert: drops entries that fail `keep`, then everything.
fn bound<V>(map: &mut HashMap<Key, V>, keep: impl Fn(&V) -> bool) {
    if map.len() >= CAPACITY {
        map.retain(|_, v| keep(v));
        if map.len() >= CAPACITY {
            map.clear();
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

impl Store {
    /// Adds failures (a count per subject: a failure after the window starts a new count) and
    /// clears subjects that logged in, in one transaction; `sweep` also deletes expired rows.
    /// Returns whether there was anything to write.
    pub(crate) async fn write_auth_failures(
        &self,
        adds: &[(&str, &str, i64)],
        clears: &[(&str, &str)],
        sweep: bool,
    ) -> Result<bool, StoreError> {
        let _turn = self.write_turn().await;
        if adds.is_empty() && clears.is_empty() && !sweep {
            return Ok(false);
        }
        on!(self.db(), |pool, q| {
            let mut tx = pool.begin().await?;
            let now = db_now_ms!(q, &mut *tx);
            let cutoff = now - millis(WINDOW);
            if sweep {
                sqlx::query(q.sql("DELETE FROM auth_failures WHERE last_at <= ?"))
                    .bind(cutoff)
                    .execute(&mut *tx)
                    .await?;
            }
            for (kind, subject) in clears {
                sqlx::query(q.sql("DELETE FROM auth_failures WHERE kind = ? AND subject = ?"))
                    .bind(kind)
                    .bind(subject)
                    .execute(&mut *tx)
                    .await?;
            }
            for (kind, subject, n) in adds {
                sqlx::query(q.sql(
                    "INSERT INTO auth_failures (kind, subject, failures, last_at) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (kind, subject) DO UPDATE SET failures = CASE WHEN \
                     auth_failures.last_at > ? THEN auth_failures.failures + excluded.failures \
                     ELSE excluded.failures END, last_at = excluded.last_at",
                ))
                .bind(kind)
                .bind(subject)
                .bind(n)
                .bind(now)
                .bind(cutoff)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        self.auth_writes
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(true)
    }

    /// Failure writes made through this store handle and its clones so far.
    fn auth_writes(&self) -> u64 {
        self.auth_writes.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The database's time (ms) and the failure rows changed after `since` (ms), newest first.
    pub(crate) async fn auth_failures_since(
        &self,
        since: i64,
    ) -> Result<(i64, Vec<(String, String, i64, i64)>), StoreError> {
        Ok(on!(self.db(), |pool, q| {
            let now = db_now_ms!(q, pool);
            // `LIMIT CAST(? AS INTEGER)`, not `LIMIT ?`: SQLite compiles a bare LIMIT
            // parameter's value into the plan, so each run (once a second, idle or not) would
            // compile the statement again (see `claim_sqlite`).
            let rows = sqlx::query_as::<_, (String, String, i64, i64)>(q.sql(
                "SELECT kind, subject, failures, last_at FROM auth_failures WHERE last_at > ? \
                 ORDER BY last_at DESC LIMIT CAST(? AS INTEGER)",
            ))
            .bind(since)
            .bind(CAPACITY as i64)
            .fetch_all(pool)
            .await?;
            (now, rows)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_instances_see_each_others_failures_and_a_login_clears_them() {
        let (_dir, store, _) = crate::store::test_store_with_connection().await;
        let (a, b) = (
            SharedFailures::new(store.clone()),
            SharedFailures::new(store.clone()),
        );
        for _ in 0..3 {
            a.failed(FailureKind::Relay, "192.0.2.1");
        }
        b.failed(FailureKind::Relay, "192.0.2.1");
        b.failed(FailureKind::Login, "ip:192.0.2.1");
        // Nothing is shared before a sync: deciding never waits for the database.
        assert_eq!(b.recent(FailureKind::Relay, "192.0.2.1").0, 1);
        a.sync().await.unwrap();
        b.sync().await.unwrap();
        a.sync().await.unwrap();
        assert_eq!(a.recent(FailureKind::Relay, "192.0.2.1").0, 4);
        assert_eq!(b.recent(FailureKind::Relay, "192.0.2.1").0, 4);
        assert_eq!(a.recent(FailureKind::Login, "ip:192.0.2.1").0, 1);
        assert_eq!(a.recent(FailureKind::Relay, "192.0.2.2").0, 0);

        a.succeeded(FailureKind::Relay, "192.0.2.1");
        assert_eq!(a.recent(FailureKind::Relay, "192.0.2.1").0, 0);
        a.sync().await.unwrap();
        let (_, rows) = store.auth_failures_since(0).await.unwrap();
        assert!(
            rows.iter().all(|r| r.0 != "relay"),
            "a right password clears the shared count: {rows:?}"
        );
    }

    #[tokio::test]
    async fn a_flood_of_addresses_stays_bounded_in_memory() {
        let (_dir, store, _) = crate::store::test_store_with_connection().await;
        let s = SharedFailures::new(store);
        for i in 0..(CAPACITY as u32 + 10) {
            s.failed(FailureKind::Relay, &std::net::Ipv4Addr::from(i).to_string());
        }
        let state = s.lock();
        assert!(state.known.len() <= CAPACITY && state.pending.len() <= CAPACITY);
    }
}
