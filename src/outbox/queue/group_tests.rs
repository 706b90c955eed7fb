//! The writer's wait for messages on their way (see [`crate::outbox::arrivals`]).

use std::time::Duration;

use super::*;
use crate::store::messages::CLAIM_BYTES;

/// Longer than any test here may take: a writer that waits it out fails the test.
const FOREVER: Duration = Duration::from_secs(60);
/// Every answer a test expects comes within this.
const SOON: Duration = Duration::from_secs(10);

fn message() -> NewMessage {
    crate::store::messages::test_message(&["b@example.org"])
}

async fn outbox(dir: &tempfile::TempDir, group_wait: Duration) -> Outbox {
    let store = crate::store::test_store(dir.path()).await;
    Outbox::start_waiting(store, Wakers::default(), group_wait).0
}

fn enqueue_later(outbox: &Outbox) -> tokio::task::JoinHandle<Result<Queued, QueueError>> {
    let outbox = outbox.clone();
    tokio::spawn(async move { outbox.enqueue(message()).await })
}

#[tokio::test]
async fn a_commit_waits_for_a_message_on_its_way_and_takes_it_along() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = outbox(&dir, FOREVER).await;
    let coming = outbox.arriving();
    let first = enqueue_later(&outbox);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !first.is_finished(),
        "the first message's commit waits for the one on its way"
    );
    let second = tokio::time::timeout(SOON, outbox.enqueue_arrived(message(), coming))
        .await
        .expect("the message on its way is committed at once")
        .unwrap();
    let first = tokio::time::timeout(SOON, first)
        .await
        .expect("and the first with it")
        .unwrap()
        .unwrap();
    assert_ne!(first.id, second.id);
}

#[tokio::test]
async fn a_message_abandoned_on_its_way_is_no_longer_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = outbox(&dir, FOREVER).await;
    let coming = outbox.arriving();
    let first = enqueue_later(&outbox);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!first.is_finished());
    drop(coming);
    tokio::time::timeout(SOON, first)
        .await
        .expect("committed once nothing is on its way")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_wait_for_a_slow_message_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = outbox(&dir, Duration::from_millis(50)).await;
    let _slow = outbox.arriving();
    tokio::time::timeout(SOON, outbox.enqueue(message()))
        .await
        .expect("committed after the wait, the slow message still on its way")
        .unwrap();
}

#[tokio::test]
async fn nothing_waits_when_nothing_is_on_its_way_and_claims_never_wait() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = outbox(&dir, FOREVER).await;
    tokio::time::timeout(SOON, outbox.enqueue(message()))
        .await
        .expect("a lone message is committed at once")
        .unwrap();
    let _coming = outbox.arriving();
    let limit = ClaimLimit {
        messages: 10,
        bytes: CLAIM_BYTES,
        oversized_first: true,
    };
    let claim = tokio::time::timeout(SOON, outbox.claim(1, limit, 60_000))
        .await
        .expect("a claim does not wait for new mail")
        .unwrap();
    assert_eq!(claim.messages.len(), 1);
}
