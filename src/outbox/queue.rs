//! Enqueue with group commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc, oneshot};

use crate::store::messages::{NewMessage, Queued};
use crate::store::{Store, StoreError};

/// Most messages committed in one transaction.
const MAX_BATCH: usize = 512;

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

/// One `Notify` per connection, so a new message wakes the workers that can send it.
#[derive(Debug, Clone, Default)]
pub struct Wakers(Arc<Mutex<HashMap<i64, Arc<Notify>>>>);

impl Wakers {
    pub fn get(&self, connection_id: i64) -> Arc<Notify> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(connection_id).or_default().clone()
    }

    pub fn wake(&self, connection_id: i64) {
        self.get(connection_id).notify_waiters();
    }

    pub fn wake_all(&self) {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for n in map.values() {
            n.notify_waiters();
        }
    }
}

type Job = (NewMessage, oneshot::Sender<Result<Queued, Arc<StoreError>>>);

/// The way in: every ingress (relay, HTTP API, CLI) queues through here.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Job>,
    wakers: Wakers,
}

impl Outbox {
    /// Starts the committer task. It ends when every `Outbox` clone is dropped.
    pub fn start(store: Store, wakers: Wakers) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<Job>(4 * MAX_BATCH);
        let handle = tokio::spawn(committer(store, rx, wakers.clone()));
        (Self { tx, wakers }, handle)
    }

    pub fn wakers(&self) -> &Wakers {
        &self.wakers
    }

    /// Queues `message`; returns only once it is committed to disk.
    pub async fn enqueue(&self, message: NewMessage) -> Result<Queued, QueueError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((message, reply))
            .await
            .map_err(|_| QueueError::Closed)?;
        match answer.await {
            Ok(Ok(q)) => Ok(q),
            Ok(Err(e)) => Err(match Arc::try_unwrap(e) {
                Ok(e) => e.into(),
                Err(shared) if shared.is_disk_full() => QueueError::DiskFull,
                Err(shared) => QueueError::Store(StoreError::Corrupt(shared.to_string())),
            }),
            Err(_) => Err(QueueError::Closed),
        }
    }
}

/// Takes whatever is waiting (up to `MAX_BATCH`) and commits it in one transaction. While one
/// commit waits for its fsync, the next batch gathers: the batch size follows the load.
async fn committer(store: Store, mut rx: mpsc::Receiver<Job>, wakers: Wakers) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let (messages, replies): (Vec<NewMessage>, Vec<_>) = jobs.into_iter().unzip();
        match store.insert_messages(&messages).await {
            Ok(queued) => {
                for (reply, q) in replies.into_iter().zip(queued) {
                    let _ = reply.send(Ok(q));
                }
                let mut woken: Vec<i64> = messages.iter().map(|m| m.connection_id).collect();
                woken.dedup();
                for id in woken {
                    wakers.wake(id);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, count = messages.len(), "could not queue messages");
                let e = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
