use super::*;

const MIB: usize = 1024 * 1024;

fn sized(size: usize) -> NewMessage {
    let mut m = test_message(&["b@example.org"]);
    m.body.resize(size.max(m.body.len()), b'x');
    m
}

fn up_to(messages: u32) -> ClaimLimit {
    ClaimLimit {
        messages,
        bytes: CLAIM_BYTES,
        oversized_first: true,
    }
}

#[tokio::test]
async fn a_claim_stops_at_its_byte_cap_and_repeated_claims_drain_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::test_store(dir.path()).await;
    // One message over the cap, five of 5 MiB and three small ones, in this order.
    let sizes = [
        9 * MIB,
        0,
        5 * MIB,
        5 * MIB,
        0,
        5 * MIB,
        5 * MIB,
        5 * MIB,
        0,
    ];
    let batch: Vec<NewMessage> = sizes.iter().map(|&n| sized(n)).collect();
    let lens: Vec<u64> = batch.iter().map(|m| m.body.len() as u64).collect();
    let queued: Vec<String> = store
        .insert_messages(&batch)
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.id)
        .collect();
    drop(batch);
    let size_of = |id: &str| lens[queued.iter().position(|q| q == id).unwrap()];

    let mut claims = Vec::new();
    loop {
        let claim = store.claim_due(1, up_to(16), 60_000).await.unwrap();
        if claim.messages.is_empty() {
            assert!(claim.drained);
            break;
        }
        let ids: Vec<String> = claim.messages.into_iter().map(|m| m.id).collect();
        let bytes: u64 = ids.iter().map(|id| size_of(id)).sum();
        assert!(
            bytes <= CLAIM_BYTES || ids.len() == 1,
            "{} messages, {bytes} bytes",
            ids.len()
        );
        claims.push((ids, claim.drained));
        assert!(claims.len() <= sizes.len(), "a claim takes at least one");
    }
    let counts: Vec<usize> = claims.iter().map(|(ids, _)| ids.len()).collect();
    assert_eq!(
        counts,
        [1, 2, 2, 1, 1, 2],
        "9 MiB alone; then 5 MiB with a small one where it fits"
    );
    let drained: Vec<bool> = claims.iter().map(|(_, d)| *d).collect();
    assert_eq!(
        drained,
        [false, false, false, false, false, true],
        "a claim cut short by bytes is not the end of the queue"
    );
    let all: Vec<String> = claims.into_iter().flat_map(|(ids, _)| ids).collect();
    assert_eq!(all, queued, "everything once, oldest first");
    let sending = store
        .list_messages(&MessageFilter {
            status: Some(MessageStatus::Sending),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(sending.len(), sizes.len());
}

#[tokio::test]
async fn a_claim_says_drained_exactly_and_may_leave_big_mail_for_later() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::test_store(dir.path()).await;
    store.insert_messages(&[sized(0), sized(0)]).await.unwrap();
    let claim = store.claim_due(1, up_to(2), 60_000).await.unwrap();
    assert_eq!(claim.messages.len(), 2);
    assert!(claim.drained, "a full claim that took the last due mail");

    let big = sized(MIB);
    let big_len = big.body.len();
    store.insert_messages(&[big]).await.unwrap();
    let room_for_less = ClaimLimit {
        messages: 16,
        bytes: MIB as u64 / 2,
        oversized_first: false,
    };
    let claim = store.claim_due(1, room_for_less, 60_000).await.unwrap();
    assert!(claim.messages.is_empty() && !claim.drained);
    let claim = store.claim_due(1, up_to(16), 60_000).await.unwrap();
    assert_eq!(claim.messages.len(), 1);
    assert_eq!(claim.messages[0].body.len(), big_len);
    assert!(claim.drained);
}

#[test]
fn reads_subject_and_message_id_from_headers_only() {
    let body = b"From: a@b.c\r\nSubject: Hello\r\n  world\r\nMessage-ID: <1@b.c>\r\n\r\nSubject: not this\r\n";
    let (s, m) = header_fields(body);
    assert_eq!(s.as_deref(), Some("Hello world"));
    assert_eq!(m.as_deref(), Some("<1@b.c>"));
    let (s, _) = header_fields(b"Subject: =?UTF-8?B?SGFsbMO2?=\r\n\r\nx");
    assert_eq!(s.as_deref(), Some("Hall\u{f6}"));
}

/// A worker whose lease ran out and was taken over cannot overwrite the newer claim: its
/// records (bulk or one by one, through the writer or alone), renewals and releases change
/// nothing, and the new owner's record lands.
#[tokio::test]
async fn a_late_worker_whose_lease_was_taken_over_changes_nothing() {
    use super::super::attempts::{Attempt, AttemptRecord};
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::test_store(dir.path()).await;
    let id = store
        .insert_messages(&[test_message(&["b@example.org"])])
        .await
        .unwrap()[0]
        .id
        .clone();
    let late = store
        .claim_ready(1, 10, 50)
        .await
        .unwrap()
        .remove(0)
        .lease();
    // The lease runs out (its worker hung) and another worker takes the message over.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(store.recover_leases().await.unwrap(), 1);
    let new = store
        .claim_ready(1, 10, 60_000)
        .await
        .unwrap()
        .remove(0)
        .lease();
    assert_eq!(new.id, id);
    assert_ne!(new.lease_id, late.lease_id, "a new lease id per claim");

    let sent = |claim: &Lease| Attempt {
        id: claim.id.clone(),
        lease_id: claim.lease_id,
        record: AttemptRecord::Recipients(vec![(0, RecipientOutcome::Sent("250 late".into()))]),
        retry_at_ms: now_ms(),
        give_up: false,
        transport: Some("smtp"),
    };
    let failed = Attempt {
        id: id.clone(),
        lease_id: late.lease_id,
        record: AttemptRecord::Whole("550 late".into()),
        retry_at_ms: now_ms(),
        give_up: true,
        transport: Some("smtp"),
    };
    let untouched = |detail: MessageDetail, status: &str| {
        assert_eq!(detail.summary.status, status);
        detail
    };
    // The late worker's records say what the message is now, and change nothing.
    let now = store
        .record_attempts(&[sent(&late), failed.clone()])
        .await
        .unwrap();
    assert_eq!(now, [MessageStatus::Sending, MessageStatus::Sending]);
    let outcomes = [(0, RecipientOutcome::Deferred("451 late".into()))];
    let alone = store
        .record_attempt(&late, &outcomes, now_ms(), false, Some("smtp"))
        .await;
    assert_eq!(alone.unwrap(), MessageStatus::Sending);
    let alone = store
        .defer_message(&late, "421 late", now_ms(), true, Some("smtp"))
        .await;
    assert_eq!(alone.unwrap(), MessageStatus::Sending);
    assert_eq!(
        store
            .extend_claims(std::slice::from_ref(&late))
            .await
            .unwrap(),
        0
    );
    store.unclaim(std::slice::from_ref(&late)).await.unwrap();
    let detail = untouched(store.message_detail(&id).await.unwrap().unwrap(), "sending");
    assert!(detail.attempt_log.is_empty(), "{:?}", detail.attempt_log);
    assert_eq!(detail.recipient_results[0].status, "pending");

    // The new owner's claim is renewed and its record lands.
    assert_eq!(
        store
            .extend_claims(std::slice::from_ref(&new))
            .await
            .unwrap(),
        1
    );
    let done = store.record_attempts(&[sent(&new)]).await.unwrap();
    assert_eq!(done, [MessageStatus::Sent]);
    // A record arriving later still from the late worker changes nothing either.
    let now = store.record_attempts(&[failed]).await.unwrap();
    assert_eq!(now, [MessageStatus::Sent]);
    let detail = untouched(store.message_detail(&id).await.unwrap().unwrap(), "sent");
    assert_eq!(detail.attempt_log.len(), 1);
    assert_eq!(
        detail.attempt_log[0].detail.as_deref(),
        Some("sent: 250 late")
    );
    assert_eq!(detail.recipient_results[0].status, "sent");
}

/// A store from before migration 0019 (bodies in `messages`), with a queued message and a
/// sent one: after the upgrade the queued body is readable and claimable, the sent one still
/// has none. On PostgreSQL too when the test server is set.
#[tokio::test]
async fn bodies_stored_before_their_own_table_survive_the_upgrade() {
    use sqlx::migrate::Migrator;
    use std::borrow::Cow;
    let dir = tempfile::tempdir().unwrap();
    let url = crate::store::fresh_test_database().await;
    let before = |all: Migrator| Migrator {
        migrations: Cow::Owned(
            all.migrations
                .iter()
                .filter(|m| m.version < 19)
                .cloned()
                .collect(),
        ),
        ..all
    };
    let old = [
        "INSERT INTO messages (id, connection_id, connection_name, source, mail_from, size, body, \
         status, queued_at, next_attempt_at) VALUES ('q1', 7, 'c', 'cli', 'a@b.c', 9, $1, 'queued', 1, 1)",
        "INSERT INTO recipients (message_id, position, address, status) VALUES ('q1', 0, 'x@y.z', 'pending')",
        "INSERT INTO messages (id, connection_id, connection_name, source, mail_from, size, body, \
         status, queued_at, next_attempt_at) VALUES ('s1', 7, 'c', 'cli', 'a@b.c', 9, NULL, 'sent', 1, 1)",
    ];
    let body = b"Subject: x\r\n\r\nold body\r\n".to_vec();
    // The store as migration 18 left it, with the rows above; a macro, the pools' types differ.
    macro_rules! at_18 {
        ($pool:expr, $migrations:literal) => {{
            let pool = $pool;
            before(sqlx::migrate!($migrations))
                .run(&pool)
                .await
                .unwrap();
            for sql in old {
                sqlx::query(sql).bind(&body).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }};
    }
    match &url {
        Some(url) => at_18!(
            sqlx::PgPool::connect(url).await.unwrap(),
            "./migrations/postgres"
        ),
        None => at_18!(
            sqlx::SqlitePool::connect_with(
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(dir.path().join(crate::store::DB_FILE))
                    .create_if_missing(true),
            )
            .await
            .unwrap(),
            "./migrations/sqlite"
        ),
    }
    let store = Store::open_url(url.as_deref(), dir.path(), None)
        .await
        .unwrap();
    assert_eq!(store.message_body("q1").await.unwrap(), Some(body.clone()));
    assert!(!store.message_body_stored("s1").await.unwrap());
    let claimed = store.claim_ready(7, 10, 60_000).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].body, body);
    assert_eq!(claimed[0].recipients, vec![(0, "x@y.z".to_string())]);
}

/// A retry claims only the recipients still waiting, in their order, addresses intact (the
/// claim brings them as JSON from SQLite).
#[tokio::test]
async fn a_retry_claims_only_the_recipients_still_waiting_in_order() {
    use super::super::attempts::{Attempt, AttemptRecord};
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::test_store(dir.path()).await;
    let to = [
        "a@example.org",
        "\"b \\\"q\\\"\"@example.org",
        "c@example.org",
    ];
    store.insert_messages(&[test_message(&to)]).await.unwrap();
    let first = store.claim_due(1, up_to(16), 60_000).await.unwrap();
    assert!(first.drained);
    let claimed = &first.messages[0];
    let all: Vec<(i64, String)> = (0..).zip(to.iter().map(|a| a.to_string())).collect();
    assert_eq!(claimed.recipients, all);
    // The middle one is delivered, the others deferred, due again at once.
    let attempt = Attempt {
        id: claimed.id.clone(),
        lease_id: claimed.lease_id,
        record: AttemptRecord::Recipients(vec![
            (0, RecipientOutcome::Deferred("451 later".into())),
            (1, RecipientOutcome::Sent("250 ok".into())),
            (2, RecipientOutcome::Deferred("451 later".into())),
        ]),
        retry_at_ms: now_ms(),
        give_up: false,
        transport: Some("smtp"),
    };
    assert_eq!(
        store.record_attempts(&[attempt]).await.unwrap(),
        [MessageStatus::Deferred]
    );
    let retry = store.claim_due(1, up_to(16), 60_000).await.unwrap();
    assert_eq!(retry.messages.len(), 1);
    assert_eq!(
        retry.messages[0].recipients,
        vec![(0, to[0].to_string()), (2, to[2].to_string())]
    );
    assert_eq!(retry.messages[0].attempts, 2);
}

/// A claim that finds nothing due says when the connection's next mail is: the sender schedules
/// its wake-up from it without asking the store again.
#[tokio::test]
async fn a_claim_says_when_deferred_mail_is_due_next() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::test_store(dir.path()).await;
    store
        .insert_messages(&[
            test_message(&["a@example.org"]),
            test_message(&["b@example.org"]),
        ])
        .await
        .unwrap();
    let first = store.claim_due(1, up_to(1), 60_000).await.unwrap();
    assert!(!first.drained);
    let waiting = first.next_due.expect("the second message waits, due now");
    assert!(waiting <= now_ms());
    let second = store.claim_due(1, up_to(1), 60_000).await.unwrap();
    assert!(second.drained);
    assert_eq!(second.next_due, None, "nothing left queued or deferred");
    let later = now_ms() + 600_000;
    let m = &second.messages[0];
    store
        .record_attempt(
            &m.lease(),
            &[(0, RecipientOutcome::Deferred("451 later".into()))],
            later,
            false,
            Some("smtp"),
        )
        .await
        .unwrap();
    let third = store.claim_due(1, up_to(16), 60_000).await.unwrap();
    assert!(third.messages.is_empty());
    assert!(third.drained, "deferred mail is not due yet");
    assert_eq!(third.next_due, Some(later));
}
