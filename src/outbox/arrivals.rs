//! Messages on their way into the outbox: a relay session has answered `354` and is reading
//! the body.
//!
//! The writer commits whatever is waiting, and each commit waits for the disk. Under load, the
//! clients it just answered send their next message while the others' commit runs, and the
//! batches settle into small cohorts that take turns: 16 busy clients made commits of 6 to 8
//! messages, each paying a sync and the index and log pages of a transaction. A commit that
//! first waits a moment for the bodies already coming in (PostgreSQL's `commit_delay`, with
//! `commit_siblings` as the condition) takes whole cohorts at once. Nothing waits when no
//! message is on its way, so a lone client's `250` is as quick as before.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The count of messages on their way, shared by the relay sessions and the outbox writer.
#[derive(Debug, Clone, Default)]
pub struct Arrivals(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    on_the_way: AtomicUsize,
    abandoned: Notify,
}

/// One message on its way: counted until the writer has it, or until dropped (the client
/// gave up, the message was refused).
#[derive(Debug, Default)]
pub struct Arriving(Option<Arc<Inner>>);

impl Arrivals {
    /// A message's body has begun to arrive.
    pub fn arriving(&self) -> Arriving {
        self.0.on_the_way.fetch_add(1, Ordering::SeqCst);
        Arriving(Some(self.0.clone()))
    }

    /// How many messages are on their way now.
    pub fn on_the_way(&self) -> usize {
        self.0.on_the_way.load(Ordering::SeqCst)
    }

    /// Resolves after a message stopped being on its way without reaching the writer (it may
    /// also resolve spuriously: check [`Arrivals::on_the_way`] again).
    pub async fn abandoned(&self) {
        self.0.abandoned.notified().await;
    }
}

impl Arriving {
    /// Not counted: a message from elsewhere than a relay session's `DATA`.
    pub fn none() -> Self {
        Self(None)
    }

    /// The writer has the message: no longer waited for.
    pub(super) fn arrived(mut self) {
        if let Some(inner) = self.0.take() {
            inner.on_the_way.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Arriving {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            inner.on_the_way.fetch_sub(1, Ordering::SeqCst);
            inner.abandoned.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_message_counts_until_it_arrives_or_is_abandoned() {
        let arrivals = Arrivals::default();
        let a = arrivals.arriving();
        let b = arrivals.arriving();
        assert_eq!(arrivals.on_the_way(), 2);
        a.arrived();
        assert_eq!(arrivals.on_the_way(), 1);
        drop(b);
        assert_eq!(arrivals.on_the_way(), 0);
        // The abandonment woke whoever waits for arrivals.
        tokio::time::timeout(Duration::from_secs(5), arrivals.abandoned())
            .await
            .expect("an abandoned message is announced");
    }

    #[tokio::test]
    async fn an_uncounted_message_changes_nothing() {
        let arrivals = Arrivals::default();
        drop(Arriving::none());
        Arriving::none().arrived();
        assert_eq!(arrivals.on_the_way(), 0);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), arrivals.abandoned())
                .await
                .is_err(),
            "nothing was abandoned"
        );
    }
}
