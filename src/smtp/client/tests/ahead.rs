//! Cross-message pipelining: the next message's envelope with this one's final dot.

use super::server::{Options, Record, TestServer};
use super::{FakeTokens, MESSAGE, client, envelope};
use crate::smtp::client::{Envelope, Transport};

const OTHER: &[u8] = b"From: app@contoso.example\r\nSubject: other\r\n\r\nAnother one.\r\n";

/// Sends MESSAGE to a@example.org with `next` (and OTHER) announced as the message after it.
async fn a_then(transport: &mut Transport<FakeTokens>, next: &Envelope) {
    let report = transport
        .send_then(&envelope(&["a@example.org"]), MESSAGE, Some((next, OTHER)))
        .await
        .unwrap();
    assert!(report.all_accepted());
}

/// Each message the server took, by its first recipient.
fn delivered(record: &Record) -> Vec<&str> {
    record
        .messages
        .iter()
        .map(|m| m.rcpt_to[0].as_str())
        .collect()
}

#[tokio::test]
async fn the_next_envelope_goes_out_with_the_final_dot() {
    let server = TestServer::start(Options::default()).await;
    let mut transport = client(&server, FakeTokens::good()).transport();
    let (first, second) = (envelope(&["a@example.org"]), envelope(&["b@example.org"]));
    let report = transport
        .send_then(&first, MESSAGE, Some((&second, OTHER)))
        .await
        .unwrap();
    assert!(report.all_accepted());
    let report = transport.send(&second, OTHER).await.unwrap();
    assert!(report.all_accepted());
    transport.close().await;

    let record = server.record();
    assert_eq!(record.connections, 1);
    assert_eq!(
        record.after_dot,
        [
            "RSET".to_string(),
            format!("MAIL FROM:<app@contoso.example> SIZE={}", OTHER.len()),
            "RCPT TO:<b@example.org>".to_string(),
            "DATA".to_string()
        ]
    );
    let got: Vec<(&[String], &[u8])> = record
        .messages
        .iter()
        .map(|m| (&m.rcpt_to[..], &m.data[..]))
        .collect();
    assert_eq!(
        got,
        [
            (&["a@example.org".to_string()][..], MESSAGE),
            (&["b@example.org".to_string()][..], OTHER)
        ]
    );
    assert_eq!(record.count("QUIT"), 1, "the session ended normally");
}

#[tokio::test]
async fn another_message_than_the_one_sent_ahead_goes_on_a_new_session() {
    let server = TestServer::start(Options::default()).await;
    let mut transport = client(&server, FakeTokens::good()).transport();
    a_then(&mut transport, &envelope(&["b@example.org"])).await;
    // Not the message announced: the session (whose server waits for b's text) is dropped.
    let report = transport
        .send(&envelope(&["c@example.org"]), MESSAGE)
        .await
        .unwrap();
    assert!(report.all_accepted());
    transport.close().await;

    let record = server.record();
    assert_eq!(record.connections, 2);
    assert_eq!(
        delivered(&record),
        ["a@example.org", "c@example.org"],
        "b never sent"
    );
}

#[tokio::test]
async fn closing_with_a_message_ahead_sends_nothing_the_server_could_take_as_its_text() {
    let server = TestServer::start(Options::default()).await;
    let mut transport = client(&server, FakeTokens::good()).transport();
    a_then(&mut transport, &envelope(&["b@example.org"])).await;
    transport.close().await;
    // Let the server notice the hang-up.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let record = server.record();
    assert_eq!(record.count("QUIT"), 0);
    assert_eq!(record.messages.len(), 1, "{:?}", record.messages);
}

#[tokio::test]
async fn a_refused_recipient_ahead_is_reported_and_the_session_goes_on() {
    let server = TestServer::start(Options {
        refused_recipients: ["nobody@example.org".to_string()].into(),
        ..Options::default()
    })
    .await;
    let mut transport = client(&server, FakeTokens::good()).transport();
    let refused = envelope(&["nobody@example.org"]);
    a_then(&mut transport, &refused).await;
    let err = transport.send(&refused, OTHER).await.unwrap_err();
    assert!(
        matches!(
            err,
            crate::smtp::client::SmtpError::RecipientsRefused { .. }
        ),
        "{err:?}"
    );
    transport
        .send(&envelope(&["c@example.org"]), MESSAGE)
        .await
        .unwrap();
    transport.close().await;

    let record = server.record();
    assert_eq!(record.connections, 1);
    assert_eq!(delivered(&record), ["a@example.org", "c@example.org"]);
}

#[tokio::test]
async fn without_pipelining_nothing_goes_ahead() {
    let server = TestServer::start(Options {
        pipelining: false,
        ..Options::default()
    })
    .await;
    let mut transport = client(&server, FakeTokens::good()).transport();
    let second = envelope(&["b@example.org"]);
    a_then(&mut transport, &second).await;
    transport.send(&second, OTHER).await.unwrap();
    let record = server.record();
    assert!(record.after_dot.is_empty(), "{:?}", record.after_dot);
    assert_eq!(record.messages.len(), 2);
}
