//! The outbox writer: new messages and delivery records, committed together (group commit).
//!
//! One task owns one store connection and writes everything waiting in one transaction, so one
//! fsync serves every client waiting for its `250` and every sender recording its attempts, and
//! no two writers wait on each other's lock. While one commit waits for the disk, the next batch
//! gathers: the batch size follows the load.
//!
//! On SQLite the senders' claims go through here too, each in a transaction of the writer's that
//! does not wait for the disk. On a connection of their own they took SQLite's write lock against
//! the writer's, and a writer that finds the lock taken sleeps (SQLite's busy handler: 1, 2, 5,
//! 10, … up to 100 ms a try): under a backlog's claims, the `202`s and `250`s of other connections
//! waited for hundreds of milliseconds. PostgreSQL has row locks, not one write lock: claims there
//! go straight to the store (`FOR UPDATE SKIP LOCKED`).
//!
//! A batch with new mail waits up to [`GROUP_WAIT`] for messages whose bodies are arriving (see
//! [`super::arrivals`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::store::outbox_batch::WriterConnection;
use tokio::sync::{mpsc, oneshot};

use super::arrivals::{Arrivals, Arriving};
pub use super::lanes::Wakers;
use crate::store::attempts::Attempt;
use crate::store::messages::claim_sqlite::{Frame, claim_in};
use crate::store::messages::{
    Claim, ClaimLimit, ClaimedMessage, Lease, MessageStatus, NewMessage, Queued, Source,
    claim_due_on, new_lease_id, now_ms,
};
use crate::store::outbox_batch::{Insert, Written, write_batch};
use crate::store::{Store, StoreError};
use gather::Writer;

mod gather;
#[cfg(test)]
mod group_tests;

/// Most jobs (messages or attempt batches) written in one transaction.
const MAX_BATCH: usize = 512;
/// Bytes of new message bodies gathered into one transaction at most (one bigger message goes
/// alone). Writing a batch holds two more copies of its bodies (the driver's and SQLite's bound
/// arguments): without this cap, a batch of 200 × 35 MB would hold 14 GB more.
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// How long a batch with new mail waits, at most, for the messages on their way. A body on its
/// way is a read or two from done; the wait only caps a slow client's effect on the others.
const GROUP_WAIT: Duration = Duration::from_millis(1);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The disk is full: tell the client to try later (`452 4.3.1`).
    #[error("insufficient storage to queue the message")]
    DiskFull,
    #[error("the outbox is shutting down")]
    Closed,
    #[error("cannot queue the message: {0}")]
    Store(StoreError),
}

impl From<StoreError> for QueueError {
    fn from(e: StoreError) -> Self {
        if e.is_disk_full() {
            QueueError::DiskFull
        } else {
            QueueError::Store(e)
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, Arc<StoreError>>>;

/// A sender's claim: a connection's oldest due mail, within a limit, leased.
#[derive(Debug, Clone, Copy)]
struct ClaimJob {
    connection_id: i64,
    limit: ClaimLimit,
    lease_ms: i64,
}

enum Job {
    Insert(NewMessage, Reply<Queued>, Arriving),
    Record(Vec<Attempt>, Reply<Vec<MessageStatus>>),
    Claim(ClaimJob, Reply<Claim>),
}

impl Job {
    fn body_bytes(&self) -> usize {
        match self {
            Job::Insert(m, ..) => m.body.len(),
            Job::Record(..) | Job::Claim(..) => 0,
        }
    }
}

/// The way in: every ingress (relay, HTTP API, CLI) queues through here, and the delivery
/// workers record their attempts through here.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Job>,
    wakers: Wakers,
    arrivals: Arrivals,
    /// PostgreSQL: claims go straight to the store (see the module's documentation).
    claims_direct: Option<Store>,
}

fn shared(e: Arc<StoreError>) -> StoreError {
    Arc::try_unwrap(e).unwrap_or_else(StoreError::Batch)
}

impl Outbox {
    /// Starts the writer task. It ends when every `Outbox` clone is dropped.
    pub fn start(store: Store, wakers: Wakers) -> (Self, tokio::task::JoinHandle<()>) {
        Self::start_waiting(store, wakers, GROUP_WAIT)
    }

    /// [`Outbox::start`], with batches waiting up to `group_wait` for the messages on their way.
    pub(crate) fn start_waiting(
        store: Store,
        wakers: Wakers,
        group_wait: Duration,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<Job>(4 * MAX_BATCH);
        let claims_direct = store.backend().is_postgres().then(|| store.clone());
        let arrivals = Arrivals::default();
        let writer = Writer {
            store,
            rx,
            wakers: wakers.clone(),
            arrivals: arrivals.clone(),
            group_wait,
        };
        let handle = tokio::spawn(run_writer(writer));
        (
            Self {
                tx,
                wakers,
                arrivals,
                claims_direct,
            },
            handle,
        )
    }

    pub fn wakers(&self) -> &Wakers {
        &self.wakers
    }

    /// Counts a message whose body has begun to arrive (the writer waits a moment for it).
    pub fn arriving(&self) -> Arriving {
        self.arrivals.arriving()
    }

    /// Leases the oldest due mail of a connection, within `limit` (see [`Store::claim_due`]): on
    /// SQLite in the writer's next cycle, on PostgreSQL at once.
    pub async fn claim(
        &self,
        connection_id: i64,
        limit: ClaimLimit,
        lease_ms: i64,
    ) -> Result<Claim, StoreError> {
        if let Some(store) = &self.claims_direct {
            return store.claim_due(connection_id, limit, lease_ms).await;
        }
        let (reply, answer) = oneshot::channel();
        let job = ClaimJob {
            connection_id,
            limit,
            lease_ms,
        };
        self.tx
            .send(Job::Claim(job, reply))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        match answer.await {
            Ok(result) => result.map_err(shared),
            Err(_) => Err(StoreError::WriterStopped),
        }
    }

    /// Queues `message`; returns only once it is committed to disk.
    pub async fn enqueue(&self, message: NewMessage) -> Result<Queued, QueueError> {
        self.enqueue_arrived(message, Arriving::none()).await
    }

    /// [`Outbox::enqueue`] for a message that was on its way (see [`Outbox::arriving`]).
    pub async fn enqueue_arrived(
        &self,
        message: NewMessage,
        arriving: Arriving,
    ) -> Result<Queued, QueueError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job::Insert(message, reply, arriving))
            .await
            .map_err(|_| QueueError::Closed)?;
        match answer.await {
            Ok(Ok(q)) => Ok(q),
            Ok(Err(e)) => Err(shared(e).into()),
            Err(_) => Err(QueueError::Closed),
        }
    }

    /// Records delivery attempts (with the next messages coming in); returns each message's
    /// new status, in order, once it is on disk.
    pub async fn record(&self, attempts: Vec<Attempt>) -> Result<Vec<MessageStatus>, StoreError> {
        if attempts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job::Record(attempts, reply))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        match answer.await {
            Ok(result) => result.map_err(shared),
            Err(_) => Err(StoreError::WriterStopped),
        }
    }
}

/// Writes whatever is waiting (up to `MAX_BATCH` jobs) in one transaction, then hands the new
/// relay mail to its connection's senders (see [`super::lanes`]).
async fn run_writer(mut w: Writer) {
    let mut conn: Option<WriterConnection> = None;
    // A job that would have made the last batch too big: it starts the next one.
    let mut carried: Option<Job> = None;
    while let Some(jobs) = w.gather(&mut carried).await {
        let mut messages = Vec::new();
        let mut queued_replies = Vec::new();
        let mut records = Vec::new();
        let mut record_replies = Vec::new();
        let mut claims = Vec::new();
        for job in jobs {
            match job {
                Job::Insert(m, r, _) => {
                    messages.push(m);
                    queued_replies.push(r);
                }
                Job::Record(a, r) => {
                    record_replies.push((a.len(), r));
                    records.extend(a);
                }
                Job::Claim(c, r) => claims.push((c, r)),
            }
        }
        // This process's other writers wait for the cycle rather than sleep in SQLite's busy
        // handler (see `store::write_turn`); it is given back before the answers go out.
        let turn = w.store.write_turn().await;
        // Claims first: their senders go back to the provider while the new mail's commit waits
        // for the disk.
        if !claims.is_empty() && claim_all(&w.store, &mut conn, claims).await.is_err() {
            // A fresh connection next time, in case this one is what failed.
            conn = None;
        }
        if messages.is_empty() && records.is_empty() {
            continue;
        }
        let leases = handoff_leases(&messages, &w.wakers, w.store.lease_ms());
        let (queued, statuses) = match conn.as_mut() {
            Some(c) => cycle(c, &messages, &leases, &records).await,
            None => match w.store.writer_connection().await {
                Ok(c) => cycle(conn.insert(c), &messages, &leases, &records).await,
                Err(e) => {
                    let e = Arc::new(e);
                    (Err(e.clone()), Err(e))
                }
            },
        };
        drop(turn);
        if let Err(e) = queued.as_ref().and(statuses.as_ref()) {
            tracing::error!(error = %e, messages = messages.len(), records = records.len(), "could not write to the outbox");
            // A fresh connection next time, in case this one is what failed.
            conn = None;
        }
        match queued {
            Ok(queued) => {
                let orphans = finish_messages(&w.wakers, messages, &leases, queued, queued_replies);
                give_back(&w.store, &w.wakers, orphans).await;
            }
            Err(e) => {
                for r in queued_replies {
                    let _ = r.send(Err(e.clone()));
                }
            }
        }
        match statuses {
            Ok(statuses) => {
                let mut statuses = statuses.into_iter();
                for (n, reply) in record_replies {
                    let _ = reply.send(Ok(statuses.by_ref().take(n).collect()));
                }
            }
            Err(e) => {
                for (_, r) in record_replies {
                    let _ = r.send(Err(e.clone()));
                }
            }
        }
    }
    give_back_lanes(&w.store, &w.wakers).await;
}

type Shared<T> = Result<T, Arc<StoreError>>;

/// Answers each claim, on the writer's connection (opened if needed), in transactions that do not
/// wait for the disk: a claim lost to a power cut only sends those messages again.
async fn claim_all(
    store: &Store,
    conn: &mut Option<WriterConnection>,
    claims: Vec<(ClaimJob, Reply<Claim>)>,
) -> Result<(), ()> {
    let c = match conn {
        Some(c) => c,
        None => match store.writer_connection().await {
            Ok(c) => conn.insert(c),
            Err(e) => {
                tracing::error!(error = %e, claims = claims.len(), "could not claim mail");
                let e = Arc::new(e);
                for (_, reply) in claims {
                    let _ = reply.send(Err(e.clone()));
                }
                return Err(());
            }
        },
    };
    match c {
        WriterConnection::Sqlite(c) => claim_all_sqlite(c, claims).await,
        WriterConnection::Postgres(c) => {
            let mut failed = false;
            for (job, reply) in claims {
                let on = crate::store::On::Postgres(&mut *c);
                let result = claim_due_on(on, job.connection_id, job.limit, job.lease_ms).await;
                if let Err(e) = &result {
                    tracing::error!(error = %e, connection = job.connection_id, "could not claim mail");
                    failed = true;
                }
                let _ = reply.send(result.map_err(Arc::new));
            }
            if failed { Err(()) } else { Ok(()) }
        }
    }
}

/// Every claim of the cycle in one transaction that does not wait for the disk (the writer's
/// last commit may have left `synchronous` at FULL), opened by the first claim's command and
/// committed by the last one's. The answers go out only once it is committed: a sender must never
/// send mail whose claim was rolled back. If one claim fails, they all do, and their senders ask
/// again.
async fn claim_all_sqlite(
    c: &mut sqlx::SqliteConnection,
    claims: Vec<(ClaimJob, Reply<Claim>)>,
) -> Result<(), ()> {
    let mut answers = Vec::with_capacity(claims.len());
    let n = claims.len();
    let result: Result<(), StoreError> = async {
        for (i, (job, _)) in claims.iter().enumerate() {
            let frame = Frame::nth(i, n);
            answers
                .push(claim_in(&mut *c, job.connection_id, job.limit, job.lease_ms, frame).await?);
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            for ((_, reply), answer) in claims.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, claims = claims.len(), "could not claim mail");
            // Nothing was claimed; a failed ROLLBACK leaves the connection to be replaced.
            let _ = sqlx::query("ROLLBACK").execute(&mut *c).await;
            let e = Arc::new(e);
            for (_, reply) in claims {
                let _ = reply.send(Err(e.clone()));
            }
            Err(())
        }
    }
}

/// One transaction for everything; if it fails, the new mail and the records are tried apart, so
/// a bad record cannot refuse new mail (nor the reverse).
async fn cycle(
    conn: &mut WriterConnection,
    messages: &[NewMessage],
    leases: &[Option<Handoff>],
    records: &[Attempt],
) -> (Shared<Vec<Queued>>, Shared<Vec<MessageStatus>>) {
    match write(conn, messages, leases, records).await {
        Ok(w) => (Ok(w.queued), Ok(w.statuses)),
        Err(e) if messages.is_empty() || records.is_empty() => {
            let e = Arc::new(e);
            (Err(e.clone()), Err(e))
        }
        Err(_) => {
            let queued = write(conn, messages, leases, &[]).await;
            let statuses = write(conn, &[], &[], records).await;
            (
                queued.map(|w| w.queued).map_err(Arc::new),
                statuses.map(|w| w.statuses).map_err(Arc::new),
            )
        }
    }
}

async fn write(
    conn: &mut WriterConnection,
    messages: &[NewMessage],
    leases: &[Option<Handoff>],
    records: &[Attempt],
) -> Result<Written, StoreError> {
    let inserts: Vec<Insert<'_>> = messages
        .iter()
        .zip(leases)
        .map(|(message, lease)| Insert {
            message,
            lease_until: lease.map(|l| l.until),
            lease_id: lease.map(|l| l.lease_id),
        })
        .collect();
    write_batch(conn, &inserts, records).await
}

/// The claim new mail handed straight to a sender is inserted with.
#[derive(Debug, Clone, Copy)]
struct Handoff {
    until: i64,
    lease_id: i64,
}

/// Which new messages go straight to a sender: relay mail (the API and CLI send their own
/// immediate mail) for a connection whose lane is open and has room (in messages and bytes).
fn handoff_leases(messages: &[NewMessage], wakers: &Wakers, lease_ms: i64) -> Vec<Option<Handoff>> {
    let lease = Handoff {
        until: now_ms() + lease_ms,
        lease_id: new_lease_id(),
    };
    // Per connection: messages and body bytes admitted so far in this batch.
    let mut admitted: HashMap<i64, (usize, usize)> = HashMap::new();
    messages
        .iter()
        .map(|m| {
            if m.source != Source::Relay || m.idempotency_key.is_some() {
                return None;
            }
            let (n, bytes) = admitted.entry(m.connection_id).or_default();
            let with_this = *bytes + m.body.len();
            wakers.lane(m.connection_id).admit(*n, with_this).then(|| {
                *n += 1;
                *bytes = with_this;
                lease
            })
        })
        .collect()
}

/// Answers the clients, then hands the claimed mail to its senders and wakes the others.
/// Returns mail whose senders all ended in the meantime (to go back to the queue).
fn finish_messages(
    wakers: &Wakers,
    messages: Vec<NewMessage>,
    leases: &[Option<Handoff>],
    queued: Vec<Queued>,
    queued_replies: Vec<Reply<Queued>>,
) -> Vec<ClaimedMessage> {
    let queued_at = now_ms();
    let mut handed: HashMap<i64, Vec<ClaimedMessage>> = HashMap::new();
    let mut woken: Vec<i64> = Vec::new();
    for ((m, lease), q) in messages.into_iter().zip(leases).zip(&queued) {
        if q.duplicate {
            continue;
        }
        let Some(lease) = lease else {
            woken.push(m.connection_id);
            continue;
        };
        handed
            .entry(m.connection_id)
            .or_default()
            .push(ClaimedMessage {
                id: q.id.clone(),
                lease_id: lease.lease_id,
                connection_id: m.connection_id,
                mail_from: m.mail_from,
                recipients: (0..).zip(m.recipients).collect(),
                body: m.body,
                attempts: 1,
                queued_at,
            });
    }
    for (reply, q) in queued_replies.into_iter().zip(queued) {
        let _ = reply.send(Ok(q));
    }
    let mut orphans = Vec::new();
    for (id, batch) in handed {
        orphans.extend(wakers.lane(id).push(batch));
    }
    woken.sort_unstable();
    woken.dedup();
    for id in woken {
        wakers.wake(id);
    }
    orphans
}

/// Mail handed to a lane whose last sender had just ended goes back to the queue, and the
/// scheduler hears of it.
async fn give_back(store: &Store, wakers: &Wakers, orphans: Vec<ClaimedMessage>) {
    if orphans.is_empty() {
        return;
    }
    let ids: Vec<Lease> = orphans.iter().map(ClaimedMessage::lease).collect();
    if let Err(e) = store.unclaim(&ids).await {
        tracing::warn!(error = %e, count = ids.len(), "could not return handed-over mail to the queue; it returns at the next start");
    }
    let mut conns: Vec<i64> = orphans.iter().map(|m| m.connection_id).collect();
    conns.sort_unstable();
    conns.dedup();
    for id in conns {
        wakers.wake(id);
    }
}

/// At the end, mail still waiting in a lane (its senders stopped first) returns to the queue.
async fn give_back_lanes(store: &Store, wakers: &Wakers) {
    let ids: Vec<Lease> = wakers
        .lanes()
        .iter()
        .flat_map(|l| l.take(usize::MAX))
        .map(|m| m.lease())
        .collect();
    if ids.is_empty() {
        return;
    }
    if let Err(e) = store.unclaim(&ids).await {
        tracing::warn!(error = %e, count = ids.len(), "could not return handed-over mail to the queue; it returns at the next start");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::attempts::AttemptRecord;

    fn message() -> NewMessage {
        crate::store::messages::test_message(&["b@example.org"])
    }

    /// Both jobs reach the writer in one cycle (one thread: it runs only once both are sent).
    #[tokio::test(flavor = "current_thread")]
    async fn a_bad_record_in_the_same_cycle_does_not_refuse_new_mail() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::test_store(dir.path()).await;
        let (outbox, _writer) = Outbox::start(store.clone(), Wakers::default());
        let bogus = Attempt {
            id: "no-such-message".into(),
            lease_id: 1,
            record: AttemptRecord::Whole("421 closing".into()),
            retry_at_ms: now_ms(),
            give_up: false,
            transport: Some("smtp"),
        };
        let (queued, recorded) =
            tokio::join!(outbox.enqueue(message()), outbox.record(vec![bogus]));
        assert!(recorded.is_err(), "the record of an unknown message fails");
        let queued = queued.expect("the new message is queued all the same");
        let detail = store.message_detail(&queued.id).await.unwrap().unwrap();
        assert_eq!(detail.summary.status, "queued");
        // And the writer goes on.
        outbox.enqueue(message()).await.unwrap();
    }

    /// On SQLite, claims go through the writer: two claims and new mail in one cycle take each
    /// waiting message once, oldest first, and the new mail is claimable in the next cycle.
    #[tokio::test(flavor = "current_thread")]
    async fn claims_through_the_writer_take_each_message_once_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).await.unwrap();
        let batch: Vec<NewMessage> = (0..5).map(|_| message()).collect();
        let waiting: Vec<String> = store
            .insert_messages(&batch)
            .await
            .unwrap()
            .into_iter()
            .map(|q| q.id)
            .collect();
        let (outbox, _writer) = Outbox::start(store.clone(), Wakers::default());
        let up_to = |messages| ClaimLimit {
            messages,
            bytes: crate::store::messages::CLAIM_BYTES,
            oversized_first: true,
        };
        let (a, b, new) = tokio::join!(
            outbox.claim(1, up_to(3), 60_000),
            outbox.claim(1, up_to(3), 60_000),
            outbox.enqueue(message()),
        );
        let (a, b, new) = (a.unwrap(), b.unwrap(), new.unwrap());
        let claimed: Vec<String> = a
            .messages
            .iter()
            .chain(&b.messages)
            .map(|m| m.id.clone())
            .collect();
        assert_eq!(claimed, waiting, "oldest first, none twice");
        assert!(!a.drained, "the first claim left due mail behind");
        assert!(b.drained, "the second took the rest");
        assert_eq!(a.messages[0].recipients, [(0, "b@example.org".to_string())]);
        let detail = store.message_detail(&waiting[0]).await.unwrap().unwrap();
        assert_eq!(detail.summary.status, "sending");

        let next = outbox.claim(1, up_to(3), 60_000).await.unwrap();
        let ids: Vec<String> = next.messages.into_iter().map(|m| m.id).collect();
        assert_eq!(ids, [new.id], "the new message, in the next cycle");
        assert!(next.drained);
        // A cycle's only claim commits in its own command: another connection sees it.
        let detail = store.message_detail(&ids[0]).await.unwrap().unwrap();
        assert_eq!(detail.summary.status, "sending");
    }

    /// The writer takes this process's write turn (see `store::write_turn`): while another
    /// writer holds it, new mail waits uncommitted, and then goes in.
    #[tokio::test]
    async fn new_mail_waits_for_the_write_turn_then_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).await.unwrap();
        let (outbox, _writer) = Outbox::start(store.clone(), Wakers::default());
        let token_save = store.write_turn().await;
        let queueing = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.enqueue(message()).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !queueing.is_finished(),
            "new mail was committed during another writer's turn"
        );
        drop(token_save);
        let queued = tokio::time::timeout(std::time::Duration::from_secs(10), queueing)
            .await
            .expect("the new mail still waits after the turn was given back")
            .unwrap()
            .unwrap();
        let detail = store.message_detail(&queued.id).await.unwrap().unwrap();
        assert_eq!(detail.summary.status, "queued");
    }
}
