//! The dispatcher: one task that starts senders for the connections the [`Schedule`] names, and
//! the senders themselves, which end when their connection has been idle for a while.
//!
//! News reaches the scheduler from the outbox writer and the HTTP API ([`Wakers::wake`]), from
//! senders (deferred mail's due time), and from a look at the store every [`RESYNC`]: mail
//! queued by another process (the CLI), and connections whose held mail may now go. That look
//! reads indexes of waiting mail only; an idle instance does nothing else, however many
//! connections it has.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::super::lanes::Lane;
use super::super::schedule::{AfterBatch, Schedule};
use super::{BATCH, Delivery, Outcome, TokenFactory, hold_reason};
use crate::domain::Connection;
use crate::store::StoreError;
use crate::store::messages::{MessageStatus, now_ms};
use crate::store::outbox_batch::new_mail_connections;

/// How often the store is asked which connections have due or releasable mail.
const RESYNC: Duration = Duration::from_secs(2);
/// On SQLite the store is asked only when its files changed since the last look, or after
/// this long whatever they say (a change within the file system's timestamp granularity that
/// left the sizes as they were would otherwise go unseen).
const RESYNC_ANYWAY: Duration = Duration::from_secs(30);
/// A sender re-reads its connection (an admin's change) at most this long after it changed.
const REREAD: Duration = Duration::from_secs(2);
/// A sender with nothing to do keeps its upstream session this long, then ends.
const LINGER: Duration = Duration::from_secs(60);

/// How a sender ended.
#[derive(Debug)]
struct End {
    /// It gave its session to a waiting connection (the scheduler already counted that).
    yielded: bool,
    /// The earliest waiting mail it knows of.
    next_due: Option<i64>,
}

impl End {
    fn idle(next_due: Option<i64>) -> Self {
        Self {
            yielded: false,
            next_due,
        }
    }
}

impl<F: TokenFactory> Delivery<F> {
    fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.inner
            .schedule
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Runs senders for connections with due mail until `stop`; in-flight deliveries finish first.
    pub async fn run(self, stop: CancellationToken) {
        match self.inner.store.recover_leases().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                count = n,
                "returned messages claimed by a previous run to the queue"
            ),
            Err(e) => tracing::error!(error = %e, "could not recover claimed messages"),
        }
        let wakers = self.inner.outbox.wakers().clone();
        // New mail queued by any instance (PostgreSQL): the notification names its connections,
        // which are due now, with no look at the store; one that names none (too many to fit)
        // or a listener that lost its connection (notifications missed) asks for a look now
        // rather than at the next resync.
        let remote = std::sync::Arc::new(tokio::sync::Notify::new());
        match self.inner.store.new_mail_listener().await {
            Ok(None) => {}
            Ok(Some(mut listener)) => {
                let (remote, stop, wakers) = (remote.clone(), stop.clone(), wakers.clone());
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => break,
                            n = listener.try_recv() => match n {
                                Ok(Some(n)) => match new_mail_connections(n.payload()) {
                                    Some(ids) => ids.into_iter().for_each(|c| wakers.wake(c)),
                                    None => remote.notify_one(),
                                },
                                // The connection was lost (reconnected at the next call):
                                // what was sent meanwhile is missed.
                                Ok(None) => remote.notify_one(),
                                Err(e) => {
                                    tracing::warn!(error = %e, "new-mail notifications: listener failed; retrying");
                                    tokio::time::sleep(RESYNC).await;
                                    remote.notify_one();
                                }
                            },
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(
                error = %e,
                "cannot listen for other instances' new mail: found by the periodic look instead"
            ),
        }
        if self.inner.owners.is_shared() {
            tokio::spawn(self.clone().heartbeat(stop.clone()));
        }
        let mut tasks = JoinSet::new();
        // Connections changed since this time (s) are checked for releasable held mail; 0: all.
        let mut held_since = 0;
        let mut next_resync = Instant::now();
        let mut last_mark = None;
        let mut last_resync: Option<Instant> = None;
        loop {
            if Instant::now() >= next_resync {
                // Marked before the look, so a commit during it is seen at the next one.
                let mark = self.inner.store.files_mark();
                let stale = last_resync.is_none_or(|at| at.elapsed() >= RESYNC_ANYWAY);
                if mark.is_none() || mark != last_mark || stale {
                    held_since = self.resync(held_since).await;
                    last_mark = mark;
                    last_resync = Some(Instant::now());
                }
                next_resync = Instant::now() + RESYNC;
            }
            let now = now_ms();
            let plan = {
                let mut s = self.schedule();
                for c in wakers.take_news() {
                    s.due(c, now, now);
                }
                let plan = s.plan(now);
                self.inner.metrics.scheduler(s.sessions(), s.waiting());
                if s.waiting() > 0 {
                    // Every session is taken: the lingering ones are better given away.
                    self.inner.pressure.notify_waiters();
                }
                plan
            };
            for c in plan.wake {
                wakers.lane(c).wake.notify_waiters();
            }
            for c in plan.start {
                tasks.spawn(self.clone().sender(c, stop.clone()));
            }
            let timer = self.schedule().next_timer().map(|at| {
                Instant::now() + Duration::from_millis(at.saturating_sub(now_ms()).max(0) as u64)
            });
            let until = timer.map_or(next_resync, |t| t.min(next_resync));
            tokio::select! {
                () = stop.cancelled() => break,
                () = wakers.noticed() => {}
                () = self.inner.kick.notified() => {}
                () = remote.notified() => next_resync = Instant::now(),
                () = tokio::time::sleep_until(until.into()) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Tells the scheduler what the store holds; returns the time (s) to check held mail from
    /// next time.
    async fn resync(&self, held_since: i64) -> i64 {
        let store = &self.inner.store;
        // PostgreSQL: claims of an instance that died return to the queue once their lease runs
        // out (by the database's clock), for whichever instance looks first.
        if store.backend().is_postgres() {
            match store.recover_leases().await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(count = n, "took over messages whose lease ran out"),
                Err(e) => tracing::warn!(error = %e, "could not take over expired leases"),
            }
        }
        let checked_at = chrono::Utc::now().timestamp();
        match store.due_by_connection().await {
            Ok(due) => {
                let now = now_ms();
                let mut s = self.schedule();
                let woken: Vec<i64> = due
                    .into_iter()
                    .filter(|&(c, at)| s.due(c, at, now))
                    .map(|(c, _)| c)
                    .collect();
                drop(s);
                for c in woken {
                    self.inner.outbox.wakers().lane(c).wake.notify_waiters();
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the queue"),
        }
        // A second of overlap: a change in the same second as the last look is not missed.
        let changed = match store.held_connections_changed_since(held_since - 1).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(error = %e, "cannot read held mail");
                return held_since;
            }
        };
        for id in changed {
            let conn = match store.connection_by_id(id).await {
                Ok(c) => c,
                Err(_) => continue,
            };
            if hold_reason(&conn).is_some() {
                continue;
            }
            match store.release_connection_mail(id).await {
                Ok(n) if n > 0 => {
                    tracing::info!(connection = %conn.name(), count = n, "connection usable again: released held mail");
                    let now = now_ms();
                    self.schedule().due(id, now, now);
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot release held mail"),
            }
        }
        checked_at
    }

    /// Renews this instance's connection ownerships every third of the lease, until `stop`.
    async fn heartbeat(self, stop: CancellationToken) {
        let owners = &self.inner.owners;
        tracing::info!(
            instance = owners.instance(),
            "delivery shares connections with other instances by ownership leases"
        );
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(owners.heartbeat()) => {}
            }
            let handing = match owners.renew(&self.inner.store).await {
                Ok(handing) => handing,
                Err(e) => {
                    tracing::warn!(error = %e, "could not renew connection ownership; senders stop when it runs out");
                    Vec::new()
                }
            };
            // Mail waiting in the lanes is claimed too: paced by its connection's limits, it
            // may wait longer than a lease, and another instance would take over a claim that
            // ran out and send it as well. Renewed with the ownerships.
            let waiting: Vec<_> = self
                .inner
                .outbox
                .wakers()
                .lanes()
                .iter()
                .flat_map(|lane| lane.leases())
                .collect();
            if !waiting.is_empty()
                && let Err(e) = self.inner.store.extend_claims(&waiting).await
            {
                tracing::warn!(error = %e, "could not renew the claims of mail waiting for its sender");
            }
            // Connections given up with no sender running now: nothing else releases them.
            for c in handing {
                let idle = || !self.schedule().busy(c);
                if let Err(e) = owners.release(&self.inner.store, c, idle).await {
                    tracing::warn!(error = %e, "could not release a connection's ownership; it runs out with its lease");
                }
            }
        }
    }

    /// One sender for `connection_id`, until it is idle, yields, or `stop`; none when another
    /// instance owns the connection (it runs the senders, within the connection's limits).
    async fn sender(self, connection_id: i64, stop: CancellationToken) {
        use super::super::owners::Acquired;
        let retry_at = match self
            .inner
            .owners
            .acquire(&self.inner.store, connection_id)
            .await
        {
            Ok(Acquired::Owned { fresh }) => {
                if fresh {
                    self.forget_usage(connection_id);
                }
                None
            }
            Ok(Acquired::Elsewhere(at)) => {
                Some(now_ms() + at.saturating_duration_since(Instant::now()).as_millis() as i64)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the ownership of a connection");
                Some(now_ms() + RESYNC.as_millis() as i64)
            }
        };
        if let Some(at) = retry_at {
            // Its owner sends; look again when its lease could have run out.
            let now = now_ms();
            self.schedule().finished(connection_id, Some(at), now);
            self.inner.kick.notify_one();
            return;
        }
        let lane = self.inner.outbox.wakers().lane(connection_id);
        lane.sender_started();
        let end = self.send_until_idle(&lane, connection_id, &stop).await;
        // The last sender gives back what is still in the lane (nothing takes it now).
        let left: Vec<crate::store::messages::Lease> = lane
            .sender_stopped()
            .iter()
            .map(crate::store::messages::ClaimedMessage::lease)
            .collect();
        let mut next_due = end.next_due;
        if !left.is_empty() {
            match self.inner.store.unclaim(&left).await {
                Ok(()) => next_due = Some(now_ms()),
                Err(e) => {
                    tracing::warn!(error = %e, count = left.len(), "could not return handed-over mail to the queue; it returns at the next start")
                }
            }
        }
        let now = now_ms();
        {
            let mut s = self.schedule();
            if end.yielded {
                if let Some(at) = next_due {
                    s.due(connection_id, at, now);
                }
            } else {
                s.finished(connection_id, next_due, now);
            }
        }
        self.inner.kick.notify_one();
        // The last sender gone: the connection is free for any instance.
        let idle = || !self.schedule().busy(connection_id);
        if let Err(e) = self
            .inner
            .owners
            .release(&self.inner.store, connection_id, idle)
            .await
        {
            tracing::warn!(error = %e, "could not release a connection's ownership; it runs out with its lease");
        }
    }

    async fn send_until_idle(
        &self,
        lane: &Lane,
        connection_id: i64,
        stop: &CancellationToken,
    ) -> End {
        let store = &self.inner.store;
        let mut transport = None;
        // The connection as last read: re-read every `REREAD`, not for every batch.
        let mut cached: Option<(Connection, Instant)> = None;
        // Look in the store (not only the lane): at start, and when woken with news for it.
        let mut check_store = true;
        let mut idle_since = Instant::now();
        let end = loop {
            if stop.is_cancelled() {
                break End::idle(None);
            }
            if !self.inner.owners.owns(connection_id) {
                // Ownership lost (its renewal failed in time): the next sender asks again.
                break End::idle(Some(now_ms()));
            }
            let pushed = lane.pushed.notified();
            let woken = lane.wake.notified();
            let pressed = self.inner.pressure.notified();
            if cached.as_ref().is_none_or(|(_, at)| at.elapsed() >= REREAD) {
                match store.connection_by_id(connection_id).await {
                    Ok(c) => cached = Some((c, Instant::now())),
                    Err(StoreError::NoSuchConnection(_)) => break End::idle(None),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read connection");
                        break End::idle(Some(now_ms() + RESYNC.as_millis() as i64));
                    }
                }
            }
            let Some((conn, _)) = cached.as_ref() else {
                break End::idle(None);
            };
            if transport.is_none() {
                match self.transport(conn) {
                    Ok(t) => transport = Some(t),
                    Err(e) => {
                        tracing::error!(connection = %conn.name(), error = %e, "bad delivery settings (SMTP or Graph)");
                        break End::idle(None);
                    }
                }
            }
            let Some(t) = transport.as_mut() else {
                break End::idle(None);
            };
            if check_store {
                self.schedule().looking(connection_id);
            }
            let step = match self.step(conn, t, stop, check_store).await {
                Ok(step) => step,
                Err(e) => {
                    tracing::error!(connection = %conn.name(), error = %e, "delivery step failed");
                    break End::idle(Some(now_ms() + RESYNC.as_millis() as i64));
                }
            };
            let mut more = !lane.is_empty();
            match &step.outcome {
                // Held: nothing more to do until an admin acts (the resync notices).
                Outcome::Held(_) => break End::idle(None),
                Outcome::Attempted(done) => {
                    idle_since = Instant::now();
                    if done.iter().any(|(_, s)| *s == MessageStatus::Held) {
                        break End::idle(None);
                    }
                    // A full batch, or due mail left in the store (a claim stops at
                    // `CLAIM_BYTES` too): more may be waiting.
                    more |= done.len() >= BATCH || (check_store && !step.store_drained);
                }
                Outcome::Empty => {}
            }
            if check_store && step.store_drained {
                check_store = false;
                // Deferred mail: the scheduler wakes us (or a later sender) when it is due. The
                // claim said when, unless this step deferred mail of its own since.
                let deferred = matches!(&step.outcome, Outcome::Attempted(done)
                    if done.iter().any(|(_, s)| *s == MessageStatus::Deferred));
                let next_due = if deferred {
                    store.next_due(connection_id).await.ok().flatten()
                } else {
                    step.next_due
                };
                if let Some(at) = next_due {
                    check_store = self.schedule().due(connection_id, at, now_ms());
                    more |= check_store;
                }
            }
            let limit = conn.settings.max_concurrent;
            if self.schedule().after_batch(connection_id, more, limit) == AfterBatch::Yield {
                self.inner.kick.notify_one();
                break End {
                    yielded: true,
                    next_due: None,
                };
            }
            if more {
                self.inner.kick.notify_one();
                continue;
            }
            if self.schedule().starved() {
                // Idle while other connections wait for a session: give ours up now.
                break End::idle(None);
            }
            tokio::select! {
                () = stop.cancelled() => break End::idle(None),
                () = pressed => break End::idle(None),
                () = pushed => {}
                () = woken => check_store = true,
                () = tokio::time::sleep_until((idle_since + LINGER).into()) => break End::idle(None),
            }
        };
        if let Some(mut t) = transport {
            t.close().await;
        }
        end
    }
}
