//! Graph messages over the 4 MB request limit (`--graph-large fail|draft`) end to end: the real
//! `postern serve`, a 5 MB message (a text part and a 5 MB binary attachment) relayed to a Graph
//! connection, the fake Graph's sendMail and its draft + upload session endpoints.

use base64::Engine as _;

use super::client::{Client, queued_id};
use super::world::{USER, World};

const TO: &str = "someone@example.org";
const TEXT: &str = "Hello, the 5 MB export is attached.";

/// A text part and a 5 MB binary attachment named `export.bin`; returns the message and the file.
fn five_mb_message() -> (Vec<u8>, Vec<u8>) {
    let file: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&file);
    let mut m = format!(
        "From: App <{USER}>\r\nTo: <{TO}>\r\nSubject: export\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{TEXT}\r\n--b1\r\n\
         Content-Type: application/octet-stream; name=\"export.bin\"\r\n\
         Content-Disposition: attachment; filename=\"export.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n"
    );
    for line in b64.as_bytes().chunks(76) {
        m.push_str(std::str::from_utf8(line).unwrap());
        m.push_str("\r\n");
    }
    m.push_str("--b1--\r\n");
    (m.into_bytes(), file)
}

async fn relay(w: &World, addr: std::net::SocketAddr, content: &[u8]) -> String {
    let mut c = Client::connect_tls(addr, &w.relay_cert()).await;
    c.cmd("EHLO app.example").await;
    assert_eq!(c.auth_plain("app", &w.password).await.code, 235);
    let id = queued_id(&c.send(USER, &[TO], content).await);
    assert_eq!(c.cmd("QUIT").await.code, 221);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5mb_message_fails_with_the_reason_on_fail_and_names_mail_readwrite_on_draft_without_it()
{
    let w = World::graph().await;
    let view = w.json(&["connection", "show", "fake"]).await;
    assert_eq!(view["graph_large"], "fail", "the default: {view}");
    let serve = w.serve().await;
    let graph = w.graph.as_ref().unwrap();
    let store = w.store().await;
    let (content, _) = five_mb_message();

    let id = relay(&w, serve.relay, &content).await;
    let d = w.wait_status(&store, &id, "failed").await;
    let text = format!("{d:?}");
    assert!(
        text.contains("4 MB") && text.contains("--graph-large draft") && text.contains("bytes"),
        "the size, the limit and the setting to change: {text}"
    );
    assert_eq!(graph.counters().requests, 0, "nothing reached Graph");
    assert!(graph.messages().is_empty());

    // draft, but the grant has only Mail.Send: Graph refuses the draft; the reason names the
    // permission, and nothing is sent or left behind. (A running sender keeps the transport it
    // built until its lane goes idle: restart so the new setting is in force at once.)
    drop(serve);
    w.postern(&["connection", "edit", "fake", "--graph-large", "draft"])
        .await
        .ok();
    let serve = w.serve().await;
    let id = relay(&w, serve.relay, &content).await;
    let d = w.wait_status(&store, &id, "failed").await;
    let text = format!("{d:?}");
    assert!(
        text.contains("Mail.ReadWrite") && text.contains("--graph-large fail"),
        "{text}"
    );
    assert!(graph.messages().is_empty());
    assert_eq!(graph.drafts(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5mb_message_on_a_draft_connection_arrives_with_the_attachment_byte_identical() {
    let w = World::graph().await;
    let scope = "https://graph.microsoft.com/Mail.Send https://graph.microsoft.com/Mail.ReadWrite offline_access";
    let refresh = w.home.file(
        "refresh-rw",
        &w.idp
            .issue_refresh_token(fake_provider::idp::DEFAULT_CLIENT_ID, USER, scope),
    );
    w.postern(&[
        "connection",
        "edit",
        "fake",
        "--scope",
        scope,
        "--refresh-token-file",
        &refresh,
        "--graph-large",
        "draft",
    ])
    .await
    .ok();
    let view = w.json(&["connection", "show", "fake"]).await;
    assert_eq!(view["graph_large"], "draft", "{view}");
    let serve = w.serve().await;
    let graph = w.graph.as_ref().unwrap();
    let store = w.store().await;
    let (content, file) = five_mb_message();

    let id = relay(&w, serve.relay, &content).await;
    let d = w.wait_status(&store, &id, "sent").await;
    let got = graph.messages();
    assert_eq!(got.len(), 1, "{}", w.log());
    let m = &got[0];
    assert_eq!(m.mailbox, USER);
    assert_eq!(m.attachments.len(), 1);
    let att = &m.attachments[0];
    assert_eq!(
        (att.name.as_str(), att.content_type.as_str()),
        ("export.bin", "application/octet-stream")
    );
    assert!(att.bytes == file, "the attachment arrives byte for byte");
    let mime = String::from_utf8(m.mime.clone()).unwrap();
    assert!(
        mime.contains("Subject: export")
            && mime.contains(&format!(
                "Content-Type: text/plain; charset=utf-8\r\n\r\n{TEXT}\r\n"
            ))
            && !mime.contains("export.bin"),
        "the text part intact, the attachment out of the MIME: {mime}"
    );
    assert!(
        d.recipient_results[0]
            .reply
            .as_deref()
            .unwrap_or("")
            .contains("draft"),
        "{d:?}"
    );
    assert_eq!(graph.drafts(), 0, "the draft was sent, none left");
}
