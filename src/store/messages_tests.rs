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
