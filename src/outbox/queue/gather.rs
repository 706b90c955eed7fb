//! What one transaction of the writer holds: the jobs waiting, and, when they include new mail,
//! the messages on their way (see [`crate::outbox::arrivals`]).

use std::time::Duration;

use tokio::sync::mpsc;

use super::{Job, MAX_BATCH, MAX_BATCH_BYTES, Wakers};
use crate::outbox::arrivals::{Arrivals, Arriving};
use crate::store::Store;

/// The writer task's own state.
pub(super) struct Writer {
    pub(super) store: Store,
    pub(super) rx: mpsc::Receiver<Job>,
    pub(super) wakers: Wakers,
    pub(super) arrivals: Arrivals,
    pub(super) group_wait: Duration,
}

#[derive(Default)]
struct Batch {
    jobs: Vec<Job>,
    bytes: usize,
}

impl Batch {
    /// Whether `job`'s body fits (one bigger message goes alone).
    fn has_room_for(&self, job: &Job) -> bool {
        self.jobs.is_empty() || self.bytes + job.body_bytes() <= MAX_BATCH_BYTES
    }

    fn push(&mut self, job: Job) {
        self.bytes += job.body_bytes();
        self.jobs.push(match job {
            Job::Insert(m, reply, arriving) => {
                arriving.arrived();
                Job::Insert(m, reply, Arriving::none())
            }
            other => other,
        });
    }

    fn full(&self) -> bool {
        self.jobs.len() >= MAX_BATCH
    }

    fn has_new_mail(&self) -> bool {
        self.jobs.iter().any(|j| matches!(j, Job::Insert(..)))
    }
}

impl Writer {
    /// The next transaction's jobs: `carried` (a job the last batch had no room for) or the next
    /// to come, what else is waiting, and for new mail the messages on their way, within
    /// `group_wait`. `None` once every [`super::Outbox`] is gone.
    pub(super) async fn gather(&mut self, carried: &mut Option<Job>) -> Option<Vec<Job>> {
        let first = match carried.take() {
            Some(job) => job,
            None => self.rx.recv().await?,
        };
        let mut batch = Batch::default();
        batch.push(first);
        while !batch.full() {
            let Ok(job) = self.rx.try_recv() else { break };
            if !batch.has_room_for(&job) {
                *carried = Some(job);
                return Some(batch.jobs);
            }
            batch.push(job);
        }
        if batch.has_new_mail() {
            self.wait_for_arrivals(&mut batch, carried).await;
        }
        Some(batch.jobs)
    }

    /// Adds the messages on their way as they come, until none is left on its way, the batch is
    /// full, or `group_wait` has passed.
    async fn wait_for_arrivals(&mut self, batch: &mut Batch, carried: &mut Option<Job>) {
        let deadline = tokio::time::Instant::now() + self.group_wait;
        while self.arrivals.on_the_way() > 0 && !batch.full() {
            tokio::select! {
                job = self.rx.recv() => match job {
                    Some(job) if !batch.has_room_for(&job) => {
                        *carried = Some(job);
                        return;
                    }
                    Some(job) => batch.push(job),
                    None => return,
                },
                () = self.arrivals.abandoned() => {}
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }
}
