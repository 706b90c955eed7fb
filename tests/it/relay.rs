//! The relay end to end: the real `postern serve` binary, the fake IdP and provider SMTP
//! in-process, and a small SMTP client playing the legacy app.

pub(crate) mod client;
mod cluster;
mod fallback;
mod graph;
mod graph_large;
mod reload;
pub(crate) mod world;

use std::time::Duration;

use fake_provider::smtp::{ALWAYS, Stage, replies};

use client::{Client, message, queued_id};
use world::{Flow, USER, World};

const TO: &str = "someone@example.org";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_app_submits_with_starttls_and_auth_plain_or_login_and_the_mail_is_delivered() {
    let w = World::new(Flow::ClientCredentials).await;
    let serve = w.serve().await;

    // AUTH PLAIN, one message.
    let mut c = Client::connect_tls(serve.relay, &w.relay_cert()).await;
    let ehlo = c.cmd("EHLO app.example").await;
    for ext in ["AUTH PLAIN LOGIN", "SIZE", "PIPELINING", "8BITMIME"] {
        assert!(ehlo.text.contains(ext), "{ext} in {ehlo:?}");
    }
    assert_eq!(c.auth_plain("app", &w.password).await.code, 235);
    let first = queued_id(&c.send(USER, &[TO], &message(USER, TO, "plain 1")).await);
    assert_eq!(c.cmd("QUIT").await.code, 221);

    // AUTH LOGIN, two messages in one session, two recipients each.
    let mut c = Client::connect_tls(serve.relay, &w.relay_cert()).await;
    assert_eq!(c.auth_login("app", &w.password).await.code, 235);
    let mut ids = vec![first];
    for n in 1..=2 {
        let subject = format!("login {n}");
        let r = c
            .send(
                USER,
                &[TO, "other@example.net"],
                &message(USER, TO, &subject),
            )
            .await;
        ids.push(queued_id(&r));
    }
    assert_eq!(c.cmd("QUIT").await.code, 221);

    let got = w.smtp.wait_for_messages(3, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 3, "{}", w.log());
    let store = w.store().await;
    for id in &ids {
        let d = w.wait_status(&store, id, "sent").await;
        assert_eq!(d.summary.source, "relay");
        assert_eq!(d.summary.submitter.as_deref(), Some("app"));
        assert!(
            d.recipient_results
                .iter()
                .all(|r| r.status == "sent" && r.reply.as_deref().unwrap_or("").starts_with("250")),
            "{d:?}"
        );
    }
    let m = got
        .iter()
        .find(|m| String::from_utf8_lossy(&m.data).contains("Subject: login 2"))
        .expect("the second LOGIN message arrived");
    assert_eq!(m.mail_from, USER);
    assert_eq!(m.rcpt_to, [TO, "other@example.net"]);
    assert!(m.tls, "delivered over TLS");
    let data = String::from_utf8_lossy(&m.data);
    assert!(
        data.starts_with("Received: "),
        "a Received header first: {data}"
    );
    for header in ["\r\nMessage-ID: <", "\r\nDate: "] {
        assert!(data.contains(header), "the relay added {header:?}: {data}");
    }
    let sent = String::from_utf8(message(USER, TO, "login 2")).unwrap();
    let (headers, body) = sent.split_once("\r\n\r\n").unwrap();
    assert!(
        data.contains(headers) && data.ends_with(&format!("\r\n\r\n{body}")),
        "the app's headers and body arrive unchanged (dot-stuffing undone): {data}"
    );
    // One app-only token served every message; upstream sessions were reused.
    assert_eq!(w.idp.counters().client_credentials, 1);
    assert!(
        w.smtp.counters().connections <= 3,
        "{:?}",
        w.smtp.counters()
    );
    // What an operator's Prometheus sees.
    let metrics = serve.metrics().await;
    for line in [
        "postern_relay_messages_accepted_total 3",
        "postern_relay_auth_successes_total 2",
        "postern_delivery_attempts_total{outcome=\"sent\"} 3",
        "postern_connection_status{connection=\"fake\",status=\"authorized\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    let store = if w.home.store_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("postern_instance_info{instance=\"")
                && l.ends_with(&format!("\",store=\"{store}\"}} 1"))),
        "the instance and its store in {metrics}"
    );
    let store_bytes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("postern_store_bytes "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("postern_store_bytes in {metrics}"));
    // On PostgreSQL the figure is the server's size of the database: there is no file here.
    let db = match &w.home.store_url {
        None => std::fs::metadata(w.home.data_dir().join("postern.db"))
            .unwrap()
            .len(),
        Some(_) => 1,
    };
    assert!(
        store_bytes >= db,
        "{store_bytes} bytes, the database file alone {db}"
    );
    assert!(metrics.contains("postern_retention_deleted_messages_total 0"));
    // The queue is empty now.
    assert_eq!(w.json(&["queue", "list"]).await, serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanner_with_a_short_alphanumeric_password_logs_in_with_auth_login() {
    let w = World::new(Flow::ClientCredentials).await;
    #[rustfmt::skip]
    let out = w
        .postern(&["relay-user", "add", "scanner", "--connection", "fake",
            "--password-length", "24", "--alphanumeric"])
        .await
        .ok();
    let password = world::generated_password(&out.stdout);
    assert_eq!(password.len(), 24, "{password:?}");
    assert!(password.chars().all(|c| c.is_ascii_alphanumeric()));
    // A length a device cannot use is refused, saying what is allowed.
    #[rustfmt::skip]
    let bad = w
        .postern(&["relay-user", "add", "printer", "--connection", "fake",
            "--password-length", "8"])
        .await;
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(bad.all().contains("16 to 128"), "{}", bad.all());

    let serve = w.serve().await;
    let mut c = Client::connect_tls(serve.relay, &w.relay_cert()).await;
    assert_eq!(c.auth_login("scanner", &password).await.code, 235);
    let id = queued_id(&c.send(USER, &[TO], &message(USER, TO, "scan")).await);
    assert_eq!(c.cmd("QUIT").await.code, 221);
    let store = w.store().await;
    let d = w.wait_status(&store, &id, "sent").await;
    assert_eq!(d.summary.submitter.as_deref(), Some("scanner"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_refuses_what_it_must() {
    let w = World::new(Flow::ClientCredentials)
        .await
        .setting("POSTERN_SERVER__MAX_MESSAGE_SIZE", "4096");
    let serve = w.serve().await;

    // No AUTH: 530 at MAIL (never an open relay).
    let mut c = Client::connect_tls(serve.relay, &w.relay_cert()).await;
    let r = c.cmd(&format!("MAIL FROM:<{USER}>")).await;
    assert_eq!(r.code, 530, "{r:?}");

    // A wrong password: 535 5.7.8; the session may try again.
    let r = c.auth_plain("app", "not-the-password").await;
    assert_eq!((r.code, r.text.starts_with("5.7.8")), (535, true), "{r:?}");
    let r = c.auth_login("nobody", &w.password).await;
    assert_eq!(r.code, 535, "{r:?}");

    // A sender the relay user may not use: 550 5.7.1, saying why.
    let mut c = Client::connect_tls(serve.relay, &w.relay_cert()).await;
    assert_eq!(c.auth_plain("app", &w.password).await.code, 235);
    let r = c.cmd("MAIL FROM:<ceo@elsewhere.example>").await;
    assert_eq!(r.code, 550, "{r:?}");
    assert!(r.text.starts_with("5.7.1"), "{r:?}");

    // Too large: announced, refused up front with SIZE=, and refused after the data without it.
    let ehlo = c.cmd("EHLO app.example").await;
    assert!(ehlo.text.contains("SIZE 4096"), "{ehlo:?}");
    let r = c.cmd(&format!("MAIL FROM:<{USER}> SIZE=10000")).await;
    assert_eq!(r.code, 552, "{r:?}");
    let mut big = message(USER, TO, "too large");
    big.extend(
        std::iter::repeat_n(b"x".repeat(70), 100).flat_map(|l| [l, b"\r\n".to_vec()].concat()),
    );
    assert_eq!(c.cmd(&format!("MAIL FROM:<{USER}>")).await.code, 250);
    assert_eq!(c.cmd(&format!("RCPT TO:<{TO}>")).await.code, 250);
    let r = c.data(&big).await;
    assert_eq!(r.code, 552, "{r:?}");
    // The session goes on: a small message still passes.
    let ok = c.send(USER, &[TO], &message(USER, TO, "small")).await;
    queued_id(&ok);

    assert!(w.smtp.wait_for_count(1, Duration::from_secs(30)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        w.smtp.counters().messages,
        1,
        "nothing refused was delivered"
    );
    drop(serve);
}

/// Connect, STARTTLS, AUTH PLAIN as `app`, send one message; its queue id.
async fn submit(w: &World, relay: std::net::SocketAddr, subject: &str) -> String {
    let mut c = Client::connect_tls(relay, &w.relay_cert()).await;
    assert_eq!(c.auth_plain("app", &w.password).await.code, 235);
    let id = queued_id(&c.send(USER, &[TO], &message(USER, TO, subject)).await);
    c.cmd("QUIT").await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_451_defers_the_mail_and_the_retry_delivers_it() {
    let w = World::new(Flow::ClientCredentials)
        .await
        .setting("POSTERN_DELIVERY__FIRST_RETRY_SECS", "1");
    w.smtp.inject(Stage::DataEnd, replies::TEMP_ERROR, 1);
    let serve = w.serve().await;
    let id = submit(&w, serve.relay, "try twice").await;

    let store = w.store().await;
    let d = w.wait_status(&store, &id, "sent").await;
    let outcomes: Vec<_> = d.attempt_log.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["deferred", "sent"], "{d:?}");
    assert!(
        d.attempt_log[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("451 4.7.0"),
        "{d:?}"
    );
    assert_eq!(d.summary.attempts, 2);
    assert_eq!(w.smtp.counters().messages, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_550_fails_the_mail_with_the_reply_and_queue_retry_sends_it_again() {
    let w = World::new(Flow::ClientCredentials).await;
    w.smtp
        .inject(Stage::Rcpt(None), replies::UNKNOWN_RECIPIENT, ALWAYS);
    let serve = w.serve().await;
    let id = submit(&w, serve.relay, "refused").await;

    let store = w.store().await;
    let d = w.wait_status(&store, &id, "failed").await;
    assert!(
        d.recipient_results[0]
            .reply
            .as_deref()
            .unwrap()
            .contains("550 5.1.1 RESOLVER.ADR.RecipNotFound"),
        "{d:?}"
    );
    // What the admin sees.
    let failed = w.json(&["queue", "list", "--status", "failed"]).await;
    assert_eq!(failed[0]["id"], id.as_str());
    assert!(
        failed[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("550 5.1.1"),
        "{failed}"
    );
    assert_eq!(
        w.json(&["queue", "list"]).await,
        serde_json::json!([]),
        "failed mail no longer waits"
    );

    // Fixed on the provider's side: retry it, and the running server sends it promptly.
    w.smtp.clear_injections();
    let out = w.postern(&["queue", "retry", &id]).await.ok();
    assert!(out.stdout.contains("due now"), "{out:?}");
    let d = w.wait_status(&store, &id, "sent").await;
    assert_eq!(d.recipient_results[0].status, "sent");
    assert_eq!(w.smtp.counters().messages, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_commands_hold_release_and_delete_mail_of_a_running_server() {
    let w = World::new(Flow::ClientCredentials).await;
    // The provider is down: mail is deferred (for a minute, the default first retry).
    w.smtp.set_down(true);
    let serve = w.serve().await;
    let keep = submit(&w, serve.relay, "keep").await;
    let drop_it = submit(&w, serve.relay, "drop").await;
    let store = w.store().await;
    w.wait_status(&store, &keep, "deferred").await;
    w.wait_status(&store, &drop_it, "deferred").await;

    let listed = w.json(&["queue", "list"]).await;
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(listed[0]["status"], "deferred");
    assert!(
        listed[0]["last_error"].as_str().unwrap().contains("421"),
        "{listed}"
    );
    let table = w.postern(&["queue", "list"]).await.ok();
    assert!(
        table.stdout.contains(&keep) && table.stdout.contains("deferred"),
        "{table:?}"
    );

    w.postern(&["queue", "hold", &keep]).await.ok();
    w.postern(&["queue", "delete", &drop_it]).await.ok();
    let listed = w.json(&["queue", "list"]).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(
        (listed[0]["status"].as_str(), listed[0]["held_by"].as_str()),
        (Some("held"), Some("admin"))
    );
    let refused = w.postern(&["queue", "retry", &keep]).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("queue release"), "{refused:?}");
    let unknown = w.postern(&["queue", "delete", "0000"]).await;
    assert_eq!(unknown.code, 2, "{unknown:?}");

    // The provider is back. `retry --all` leaves held mail alone, and fresh mail passes it by.
    w.smtp.set_down(false);
    let out = w.postern(&["queue", "retry", "--all"]).await.ok();
    assert!(out.stdout.contains("0 message(s) due now"), "{out:?}");
    let probe = submit(&w, serve.relay, "probe").await;
    w.wait_status(&store, &probe, "sent").await;
    assert_eq!(w.smtp.counters().messages, 1, "held mail is not sent");
    w.postern(&["queue", "release", &keep]).await.ok();
    w.wait_status(&store, &keep, "sent").await;
    assert!(store.message_detail(&drop_it).await.unwrap().is_none());
    assert_eq!(
        w.smtp.counters().messages,
        2,
        "the deleted message never left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_needing_reauthorization_holds_its_mail_until_a_new_refresh_token() {
    let w = World::new(Flow::AuthorizationCode).await;
    // The user revoked the app's consent: the stored refresh token is dead.
    assert!(w.idp.revoke_refresh_tokens_for(USER) > 0);
    let serve = w.serve().await;
    let id = submit(&w, serve.relay, "waits for consent").await;

    let store = w.store().await;
    let d = w.wait_status(&store, &id, "held").await;
    assert_eq!(d.summary.held_by.as_deref(), Some("connection"));
    assert!(d.summary.last_error.unwrap().contains("re-authoriz"));
    let conns = w.json(&["connection", "list"]).await;
    assert_eq!(conns[0]["status"], "needs-reauthorization", "{conns}");
    let listed = w.json(&["queue", "list"]).await;
    assert_eq!(listed[0]["status"], "held", "{listed}");
    assert_eq!(w.smtp.counters().messages, 0);

    // The admin re-authorizes (here: a new refresh token from a consent done elsewhere).
    let fresh = w.home.file(
        "refresh-token-2",
        &w.idp
            .issue_refresh_token(fake_provider::idp::DEFAULT_CLIENT_ID, USER, world::SCOPE),
    );
    w.postern(&["connection", "edit", "fake", "--refresh-token-file", &fresh])
        .await
        .ok();
    let d = w.wait_status(&store, &id, "sent").await;
    assert_eq!(d.recipient_results[0].status, "sent");
    assert_eq!(w.smtp.counters().messages, 1);
    let conns = w.json(&["connection", "list"]).await;
    assert_ne!(conns[0]["status"], "needs-reauthorization", "{conns}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_mid_load_a_restart_delivers_every_accepted_message() {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    let w = Arc::new(World::new(Flow::ClientCredentials).await);
    // Token requests hang, so workers sit on their claimed batches when the server dies.
    w.idp.set_latency(Duration::from_secs(20));
    let serve = w.serve().await;
    let accepted: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    // Apps past AUTH: the kill waits for all four (on a loaded machine one may still be
    // logging in when the others have sent 40 messages).
    let sending_apps = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut apps = tokio::task::JoinSet::new();
    for app in 0..4 {
        let (w, accepted, relay) = (w.clone(), accepted.clone(), serve.relay);
        let sending_apps = sending_apps.clone();
        apps.spawn(async move {
            let mut c = Client::connect_tls(relay, &w.relay_cert()).await;
            assert_eq!(c.auth_plain("app", &w.password).await.code, 235);
            sending_apps.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            for n in 0..100 {
                let subject = format!("load {app}-{n}");
                match c.try_send(USER, TO, &message(USER, TO, &subject)).await {
                    Ok([.., done]) if done.code == 250 => {
                        accepted.lock().unwrap().push((queued_id(&done), subject));
                    }
                    Ok(replies) => panic!("refused: {replies:?}"),
                    Err(_) => return, // the server was killed
                }
            }
        });
    }

    // Wait for a load with claimed messages, then kill the server without warning.
    let store = w.store().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let sending = store
            .queue_entries(Some(postern::store::messages::MessageStatus::Sending), None)
            .await
            .unwrap()
            .len();
        if sending > 0
            && accepted.lock().unwrap().len() >= 40
            && sending_apps.load(std::sync::atomic::Ordering::SeqCst) == 4
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no load built up: {}",
            w.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    serve.kill().await;
    while let Some(r) = apps.join_next().await {
        r.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    let claimed = store
        .queue_entries(Some(postern::store::messages::MessageStatus::Sending), None)
        .await
        .unwrap()
        .len();
    assert!(
        claimed > 0,
        "some messages were claimed when the server died"
    );
    assert_eq!(
        w.smtp.counters().messages,
        0,
        "nothing was delivered before the kill"
    );

    w.idp.set_latency(Duration::ZERO);
    let _serve = w.serve().await;
    for (id, _) in &accepted {
        w.wait_status(&store, id, "sent").await;
    }
    let delivered: HashSet<String> = w
        .smtp
        .messages()
        .iter()
        .filter_map(|m| {
            String::from_utf8_lossy(&m.data)
                .lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
        })
        .collect();
    for (id, subject) in &accepted {
        assert!(
            delivered.contains(subject),
            "{id} ({subject}) was accepted but never delivered"
        );
    }
    // SQLite: the restart returns every claim; PostgreSQL: claims whose lease ran out are taken
    // over (by whichever instance looks first), at start or at a later look.
    let log = w.log();
    assert!(
        log.contains("returned messages claimed by a previous run")
            || (w.home.store_url.is_some()
                && log.contains("took over messages whose lease ran out")),
        "{log}"
    );
    // Messages committed just before the kill, whose 250 never reached the app, go too.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !store.queue_entries(None, None).await.unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "{}", w.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        w.json(&["queue", "list"]).await,
        serde_json::json!([]),
        "nothing left waiting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cleartext_listener_takes_auth_only_from_its_networks() {
    // Loopback counts as local unless told otherwise; here 127.0.0.2 plays the LAN device
    // and 127.0.0.3 anyone else.
    let w = World::new(Flow::ClientCredentials)
        .await
        .setting("POSTERN_SERVER__PLAIN_LISTEN", "127.0.0.1:0")
        .setting("POSTERN_SERVER__PLAIN_NETWORKS", "[\"127.0.0.2/32\"]")
        .setting("POSTERN_SERVER__CLEARTEXT_AUTH_ON_LOOPBACK", "false");
    let serve = w.serve().await;
    let plain = serve.plain.expect("serve printed the cleartext listener");
    assert_ne!(plain, serve.relay);

    let (mut c, greeting) = Client::connect_from(plain, "127.0.0.2".parse().unwrap()).await;
    assert_eq!(greeting.code, 220, "{greeting:?}");
    let ehlo = c.cmd("EHLO scanner.lan").await;
    assert!(ehlo.text.contains("AUTH PLAIN LOGIN"), "{ehlo:?}");
    assert!(!ehlo.text.contains("STARTTLS"), "no TLS offered: {ehlo:?}");
    assert_eq!(c.auth_plain("app", &w.password).await.code, 235);
    let id = queued_id(
        &c.send(USER, &[TO], &message(USER, TO, "scan in clear"))
            .await,
    );
    assert_eq!(c.cmd("QUIT").await.code, 221);

    let (mut c, _) = Client::connect_from(plain, "127.0.0.3".parse().unwrap()).await;
    assert_eq!(c.cmd("EHLO elsewhere.example").await.code, 250);
    let refused = c.auth_plain("app", &w.password).await;
    assert_eq!(refused.code, 538, "{refused:?}");
    assert_eq!(c.cmd("QUIT").await.code, 221);

    // The STARTTLS listener is unchanged: no AUTH in clear from a listed network either.
    let (mut c, _) = Client::connect_from(serve.relay, "127.0.0.2".parse().unwrap()).await;
    assert_eq!(c.cmd("EHLO scanner.lan").await.code, 250);
    assert_eq!(c.auth_plain("app", &w.password).await.code, 538);
    assert_eq!(c.cmd("QUIT").await.code, 221);

    let got = w.smtp.wait_for_messages(1, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 1, "{}", w.log());
    assert!(String::from_utf8_lossy(&got[0].data).contains("Subject: scan in clear"));
    let store = w.store().await;
    assert_eq!(
        w.wait_status(&store, &id, "sent")
            .await
            .summary
            .submitter
            .as_deref(),
        Some("app")
    );
    drop(serve);
}

/// A scan as many multifunction printers send it: bare LF throughout, a leading dot stuffed.
const SCAN: &str = "From: Scanner <scanner@lan.local>\nTo: <someone@example.org>\nDate: Tue, 1 Jul 2025 10:00:00 +0000\nMessage-ID: <scan-1@mfp.lan>\nSubject: Scan 0042\nMIME-Version: 1.0\n\nPage 1 of 1\n..a line with a leading dot\n\n";

/// `relay-user add NAME --connection fake --network NET`, which must print no password.
async fn add_scanner(w: &World, name: &str, network: &str) {
    let out = w
        .postern(&[
            "relay-user",
            "add",
            name,
            "--connection",
            "fake",
            "--network",
            network,
        ])
        .await
        .ok();
    assert!(!out.stdout.contains("Password"), "{}", out.stdout);
    assert!(out.stdout.contains("without AUTH"), "{}", out.stdout);
}

/// Reads `n` replies; their codes.
async fn codes(c: &mut Client, n: usize) -> Vec<u16> {
    let mut codes = Vec::new();
    for _ in 0..n {
        codes.push(c.read_reply().await.code);
    }
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_bound_scanner_sends_bare_lf_with_helo_and_no_auth_and_the_mail_is_delivered() {
    let w = World::new(Flow::ClientCredentials).await;
    add_scanner(&w, "scanner", "127.0.0.2/32").await;
    let users = w.json(&["relay-user", "list"]).await;
    let scanner = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "scanner")
        .unwrap();
    assert_eq!(scanner["networks"], serde_json::json!(["127.0.0.2/32"]));
    assert_eq!(scanner["password"], "none");
    let list = w.postern(&["relay-user", "list"]).await.ok();
    assert!(list.stdout.contains("NETWORKS") && list.stdout.contains("127.0.0.2/32"));
    let serve = w.serve().await;

    let (mut c, greeting) = Client::connect_from(serve.relay, "127.0.0.2".parse().unwrap()).await;
    assert_eq!(greeting.code, 220);
    c.write(format!("HELO mfp.lan\nMAIL FROM:<{USER}>\nRCPT TO:<{TO}>\nDATA\n").as_bytes())
        .await;
    assert_eq!(codes(&mut c, 4).await, [250, 250, 250, 354]);
    c.write(format!("{SCAN}.\n").as_bytes()).await;
    let id = queued_id(&c.read_reply().await);
    c.write(b"QUIT\n").await;
    assert_eq!(c.read_reply().await.code, 221);

    let got = w.smtp.wait_for_messages(1, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 1, "{}", w.log());
    let data = String::from_utf8(got[0].data.clone()).unwrap();
    // Byte for byte what the scanner sent, with CRLF line endings and the stuffing undone;
    // only a `Received:` header added in front.
    let sent = SCAN.replace('\n', "\r\n").replace("\r\n..", "\r\n.");
    let (added, rest) = data.split_at(data.len() - sent.len());
    assert_eq!(rest, sent);
    assert!(
        added.starts_with("Received: ") && added.ends_with("\r\n"),
        "{added:?}"
    );
    assert!(!added.contains("\r\nMessage-ID") && !added.contains("\r\nDate"));
    assert_eq!(got[0].mail_from, USER);
    let store = w.store().await;
    let d = w.wait_status(&store, &id, "sent").await;
    assert_eq!(d.summary.submitter.as_deref(), Some("scanner"));
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_bare_lf_scan_from_another_address_gets_the_strict_rules() {
    let w = World::new(Flow::ClientCredentials).await;
    add_scanner(&w, "scanner", "127.0.0.2/32").await;
    let serve = w.serve().await;

    // From 127.0.0.1 (not the scanner's network): no AUTH, no mail.
    let (mut c, _) = Client::connect(serve.relay).await;
    c.write(format!("HELO mfp.lan\nMAIL FROM:<{USER}>\n").as_bytes())
        .await;
    assert_eq!(codes(&mut c, 2).await, [250, 530]);
    // AUTH wants EHLO there.
    let r = c.auth_plain("app", &w.password).await;
    assert_eq!((r.code, r.text.as_str()), (503, "5.5.1 Send EHLO first"));

    // Logged in, the same bytes do not end the message at `LF.LF`: it goes on until
    // `CRLF.CRLF`, and the bare-LF "end" and what follows it stay content.
    assert_eq!(c.cmd("EHLO app.example").await.code, 250);
    assert_eq!(c.auth_plain("app", &w.password).await.code, 235);
    c.write(format!("MAIL FROM:<{USER}>\nRCPT TO:<{TO}>\nDATA\n").as_bytes())
        .await;
    assert_eq!(codes(&mut c, 3).await, [250, 250, 354]);
    c.write(format!("{SCAN}.\nQUIT\n").as_bytes()).await;
    c.write(b"\r\n.\r\n").await;
    let id = queued_id(&c.read_reply().await);
    assert_eq!(c.cmd("QUIT").await.code, 221);

    let got = w.smtp.wait_for_messages(1, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 1, "{}", w.log());
    let data = String::from_utf8_lossy(&got[0].data);
    assert!(
        data.ends_with("\r\n.a line with a leading dot\r\n\r\n\r\nQUIT\r\n\r\n"),
        "{data:?}"
    );
    let store = w.store().await;
    let d = w.wait_status(&store, &id, "sent").await;
    assert_eq!(d.summary.submitter.as_deref(), Some("app"));

    // A device added while the relay runs is known within seconds, without a restart.
    add_scanner(&w, "desk", "127.0.0.3").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (mut c, _) = Client::connect_from(serve.relay, "127.0.0.3".parse().unwrap()).await;
        c.write(format!("HELO desk.lan\nMAIL FROM:<{USER}>\nQUIT\n").as_bytes())
            .await;
        if codes(&mut c, 3).await == [250, 250, 221] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new device was never recognised"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_smuggling_from_a_device_network_stays_in_the_devices_own_session() {
    let w = World::new(Flow::ClientCredentials).await;
    add_scanner(&w, "scanner", "127.0.0.2").await;
    let serve = w.serve().await;

    // One write: a message ending `LF.LF`, then a "smuggled" message as another sender, then
    // one as the device's own sender. After `LF.LF` the bytes are the device's commands.
    let (mut c, _) = Client::connect_from(serve.relay, "127.0.0.2".parse().unwrap()).await;
    c.write(
        format!(
            "HELO mfp.lan\nMAIL FROM:<{USER}>\nRCPT TO:<{TO}>\nDATA\n{SCAN}.\n\
             MAIL FROM:<ceo@elsewhere.example>\nRCPT TO:<victim@example.org>\nDATA\nforged\n.\n\
             MAIL FROM:<{USER}>\nRCPT TO:<second@example.org>\nDATA\nSubject: second\n\nsecond\n.\nQUIT\n"
        )
        .as_bytes(),
    )
    .await;
    let mut replies = Vec::new();
    for _ in 0..14 {
        replies.push(c.read_reply().await);
    }
    let got: Vec<u16> = replies.iter().map(|r| r.code).collect();
    assert_eq!(
        got,
        [
            250, 250, 250, 354, 250, 550, 503, 503, 500, 500, 250, 250, 354, 250
        ],
        "{replies:?}"
    );
    assert!(replies[5].text.contains("scanner"), "{:?}", replies[5]);
    let ids = [queued_id(&replies[4]), queued_id(&replies[13])];
    assert_eq!(c.read_reply().await.code, 221);

    let got = w.smtp.wait_for_messages(2, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 2, "{}", w.log());
    for m in &got {
        assert_eq!(m.mail_from, USER);
        assert!(!String::from_utf8_lossy(&m.data).contains("forged"));
        assert!(!m.rcpt_to.contains(&"victim@example.org".to_string()));
    }
    let store = w.store().await;
    for id in &ids {
        let d = w.wait_status(&store, id, "sent").await;
        assert_eq!(d.summary.submitter.as_deref(), Some("scanner"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.smtp.counters().messages, 2);
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_matching_everyone_or_another_device_are_refused() {
    let w = World::new(Flow::ClientCredentials).await;
    add_scanner(&w, "scanner", "192.168.1.50/32").await;
    let add = |name: &'static str, nets: &'static [&'static str]| {
        let mut args = vec!["relay-user", "add", name, "--connection", "fake"];
        for n in nets {
            args.extend(["--network", n]);
        }
        args
    };
    for (nets, says) in [
        (&["0.0.0.0/0"][..], "matches every address"),
        (&["::/0"][..], "matches every address"),
        (&["192.168.1.0/24"][..], "relay user `scanner`"),
        (&["10.0.0.0/8", "10.1.0.0/16"][..], "overlaps 10.0.0.0/8"),
        (&["192.168.1.5/24"][..], "192.168.1.0/24"),
    ] {
        let out = w.postern(&add("printer", nets)).await;
        assert_eq!(out.code, 2, "{nets:?}: {}", out.all());
        assert!(out.stderr.contains(says), "{nets:?}: {}", out.stderr);
    }
    // Nothing was created on the way.
    let list = w.postern(&["relay-user", "list"]).await.ok();
    assert!(!list.stdout.contains("printer"), "{}", list.stdout);
    // A network of its own is fine.
    add_scanner(&w, "printer", "192.168.1.51").await;
    // Moving a device: `edit --network` checks the same way.
    #[rustfmt::skip]
    let moved = w.postern(&["relay-user", "edit", "printer", "--network", "192.168.1.52"]).await.ok();
    assert!(moved.stdout.contains("192.168.1.52/32"), "{}", moved.stdout);
    #[rustfmt::skip]
    let clash = w.postern(&["relay-user", "edit", "printer", "--network", "192.168.1.0/24"]).await;
    assert_eq!(clash.code, 2, "{}", clash.all());
    let list = w.postern(&["relay-user", "list"]).await.ok();
    assert!(list.stdout.contains("192.168.1.52/32"), "{}", list.stdout);
}

/// `relay-user add NAME --connection fake ARGS...`; the generated password.
async fn add_user(w: &World, name: &str, args: &[&str]) -> String {
    let mut all = vec!["relay-user", "add", name, "--connection", "fake"];
    all.extend_from_slice(args);
    let out = w.postern(&all).await.ok();
    world::generated_password(&out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rewrite_from_policy_sends_a_fixed_sender_as_the_mailbox_and_refuse_still_refuses() {
    let w = World::new(Flow::ClientCredentials).await;
    let erp = add_user(&w, "erp", &["--from-policy", "rewrite"]).await;
    #[rustfmt::skip]
    let mfp = add_user(&w, "mfp", &["--from-policy", "rewrite", "--display-name", "Scanner 2nd floor"]).await;
    let strict = add_user(&w, "strict", &[]).await;
    // Bad values are refused before any user is made, saying why.
    for (args, says) in [
        (&["--display-name", "X"][..], "--from-policy rewrite"),
        (&["--from-policy", "accept"][..], "allow-listed"),
        (
            &[
                "--from-policy",
                "rewrite",
                "--display-name",
                "a\r\nBcc: x@y.z",
            ][..],
            "control characters",
        ),
    ] {
        let mut all = vec!["relay-user", "add", "bad", "--connection", "fake"];
        all.extend_from_slice(args);
        let out = w.postern(&all).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.all());
        assert!(out.all().contains(says), "{args:?}: {}", out.all());
    }
    let users = w.json(&["relay-user", "list"]).await;
    let policies: Vec<serde_json::Value> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| serde_json::json!([u["name"], u["from_policy"], u["display_name"]]))
        .collect();
    assert_eq!(
        policies,
        [
            serde_json::json!(["app", "refuse", null]),
            serde_json::json!(["erp", "rewrite", null]),
            serde_json::json!(["mfp", "rewrite", "Scanner 2nd floor"]),
            serde_json::json!(["strict", "refuse", null]),
        ],
        "no `bad` user left behind"
    );

    let serve = w.serve().await;
    // The ERP's hard-coded sender: accepted, sent as the mailbox, its own display name kept.
    let mut c = Client::connect_tls(serve.relay, &w.relay_cert()).await;
    assert_eq!(c.auth_plain("erp", &erp).await.code, 235);
    let erp_mail = message("noreply@erp.local", TO, "invoice 7");
    queued_id(&c.send("noreply@erp.local", &[TO], &erp_mail).await);
    assert_eq!(c.cmd("QUIT").await.code, 221);
    // The scanner: the configured display name, an existing Reply-To kept.
    let mut c = Client::connect_tls(serve.relay, &w.relay_cert()).await;
    assert_eq!(c.auth_login("mfp", &mfp).await.code, 235);
    let scan = format!(
        "From: \"MFP, Floor 2\"\r\n <scanner@lan.local>\r\nReply-To: desk@lan.local\r\nTo: <{TO}>\r\nSubject: scan 1\r\n\r\nFrom: not a header\r\n"
    );
    queued_id(&c.send("scanner@lan.local", &[TO], scan.as_bytes()).await);
    assert_eq!(c.cmd("QUIT").await.code, 221);
    // A refusing user gets 550 as before.
    let mut c = Client::connect_tls(serve.relay, &w.relay_cert()).await;
    assert_eq!(c.auth_plain("strict", &strict).await.code, 235);
    let r = c.cmd("MAIL FROM:<noreply@erp.local>").await;
    assert_eq!(r.code, 550, "{r:?}");
    assert!(r.text.contains("5.7.1"), "{r:?}");
    assert_eq!(c.cmd("QUIT").await.code, 221);

    let got = w.smtp.wait_for_messages(2, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 2, "{}", w.log());
    let find = |subject: &str| {
        got.iter()
            .find(|m| String::from_utf8_lossy(&m.data).contains(subject))
            .unwrap_or_else(|| panic!("{subject} arrived"))
    };
    let m = find("Subject: invoice 7");
    assert_eq!(m.mail_from, USER, "the envelope sender is the mailbox");
    let data = String::from_utf8_lossy(&m.data);
    assert!(
        data.contains(&format!(
            "\r\nFrom: \"App\" <{USER}>\r\nReply-To: noreply@erp.local\r\nTo: <{TO}>\r\n"
        )),
        "{data}"
    );
    assert_eq!(data.matches("From: ").count(), 1, "{data}");
    assert!(data.ends_with("\r\n\r\nHello from invoice 7.\r\n.a line with a leading dot\r\n"));
    let m = find("Subject: scan 1");
    assert_eq!(m.mail_from, USER);
    let data = String::from_utf8_lossy(&m.data);
    assert!(
        data.contains(&format!(
            "\r\nFrom: \"Scanner 2nd floor\" <{USER}>\r\nReply-To: desk@lan.local\r\n"
        )),
        "{data}"
    );
    assert_eq!(data.matches("Reply-To:").count(), 1, "{data}");
    assert!(
        data.ends_with("\r\n\r\nFrom: not a header\r\n"),
        "the body is untouched: {data}"
    );
    // The log says who sent as what.
    let log = w.log();
    let line = log
        .lines()
        .find(|l| l.contains("relay rewrote the sender") && l.contains("erp"))
        .unwrap_or_else(|| panic!("a rewrite line in {log}"));
    assert!(
        line.contains("noreply@erp.local") && line.contains(USER),
        "{line}"
    );

    // `edit` changes the policy; the list shows it.
    #[rustfmt::skip]
    w.postern(&["relay-user", "edit", "erp", "--from-policy", "allow-listed"]).await.ok();
    let out = w
        .postern(&["relay-user", "edit", "erp", "--display-name", "ERP"])
        .await;
    assert_eq!(out.code, 2, "a display name needs rewrite: {}", out.all());
    let list = w.postern(&["relay-user", "list"]).await.ok().stdout;
    assert!(list.contains("allow-listed"), "{list}");
    assert!(list.contains("rewrite as \"Scanner 2nd floor\""), "{list}");
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_bound_scanner_with_the_rewrite_policy_sends_its_own_address_as_the_mailbox() {
    let w = World::new(Flow::ClientCredentials).await;
    add_scanner(&w, "mfp", "127.0.0.2/32").await;
    #[rustfmt::skip]
    w.postern(&["relay-user", "edit", "mfp", "--from-policy", "rewrite"]).await.ok();
    let serve = w.serve().await;

    // The scanner's own address, bare LF throughout, HELO, no AUTH.
    let (mut c, greeting) = Client::connect_from(serve.relay, "127.0.0.2".parse().unwrap()).await;
    assert_eq!(greeting.code, 220);
    c.write(
        format!("HELO mfp.lan\nMAIL FROM:<scanner@lan.local>\nRCPT TO:<{TO}>\nDATA\n").as_bytes(),
    )
    .await;
    assert_eq!(codes(&mut c, 4).await, [250, 250, 250, 354]);
    c.write(format!("{SCAN}.\n").as_bytes()).await;
    queued_id(&c.read_reply().await);
    c.write(b"QUIT\n").await;
    assert_eq!(c.read_reply().await.code, 221);

    let got = w.smtp.wait_for_messages(1, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 1, "{}", w.log());
    assert_eq!(got[0].mail_from, USER);
    let data = String::from_utf8(got[0].data.clone()).unwrap();
    assert!(
        data.contains(&format!(
            "\r\nFrom: \"Scanner\" <{USER}>\r\nReply-To: scanner@lan.local\r\nTo: <{TO}>\r\n"
        )),
        "{data}"
    );
    assert!(
        data.ends_with("\r\n\r\nPage 1 of 1\r\n.a line with a leading dot\r\n\r\n"),
        "{data}"
    );
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_is_restored_and_what_it_held_is_delivered() {
    let w = World::new(Flow::ClientCredentials).await;
    if w.home.store_url.is_some() {
        eprintln!(
            "skipped on PostgreSQL: `postern backup` and `restore` copy the SQLite store; a \
             PostgreSQL store is backed up with pg_dump or pg_basebackup"
        );
        return;
    }
    // Mail of a disabled connection is held: the store keeps it until the end.
    w.postern(&["connection", "disable", "fake"]).await.ok();
    let serve = w.serve().await;
    for n in 0..10 {
        submit(&w, serve.relay, &format!("before {n}")).await;
    }
    // More mail arrives while the backup is taken.
    let load = {
        let (relay, cert, password) = (serve.relay, w.relay_cert(), w.password.clone());
        tokio::spawn(async move {
            let mut c = Client::connect_tls(relay, &cert).await;
            assert_eq!(c.auth_plain("app", &password).await.code, 235);
            for n in 0..30 {
                let subject = format!("during {n}");
                queued_id(&c.send(USER, &[TO], &message(USER, TO, &subject)).await);
            }
            c.cmd("QUIT").await;
        })
    };
    let file = w.home.path().join("backup.db");
    let file_arg = file.display().to_string();
    let out = w.postern(&["backup", &file_arg]).await.ok();
    assert!(
        out.stdout.contains("The data key is not in it"),
        "{}",
        out.stdout
    );
    load.await.unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "the backup is private: {mode:o}");
    // Never over an existing file, and never under a running serve.
    assert_eq!(w.postern(&["backup", &file_arg]).await.code, 2);
    let busy = w.postern(&["restore", &file_arg]).await;
    assert_eq!(busy.code, 2, "{}", busy.all());
    assert!(busy.all().contains("stop it"), "{}", busy.all());

    drop(serve);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restored = w.postern(&["restore", &file_arg]).await.ok();
    assert!(
        restored.stdout.contains("all open with the key"),
        "{}",
        restored.stdout
    );
    let waiting = w.json(&["queue", "list"]).await;
    let held = waiting.as_array().unwrap().len();
    assert!(
        (10..=40).contains(&held),
        "the backup holds the 10 messages from before and part of the load: {held}"
    );
    w.postern(&["connection", "enable", "fake"]).await.ok();
    let _serve = w.serve().await;
    let got = w
        .smtp
        .wait_for_messages(held, Duration::from_secs(30))
        .await;
    assert_eq!(got.len(), held, "everything the backup held is delivered");
    assert_eq!(w.json(&["queue", "list"]).await, serde_json::json!([]));
}
