//! Three `postern serve` processes on one PostgreSQL database: a mailbox's session limit holds
//! across them (connection ownership), and a SIGKILLed instance loses no accepted mail.
//! PostgreSQL only: without `POSTERN_TEST_STORE_URL` there is one instance (SQLite) and these
//! tests skip, saying so.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_provider::smtp::SmtpConfig;
use postern::store::messages::MessageStatus;

use super::TO;
use super::client::{Client, queued_id};
use super::world::{Flow, Serve, USER, World, generated_password};
use fake_provider::idp::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET};

/// The ownership and message leases of these tests (s): short, so a takeover is quick.
const LEASE_SECS: u64 = 5;

/// A world on PostgreSQL whose provider answers each round trip after `delay`; None (and why,
/// printed) on SQLite.
async fn cluster_world(delay: Duration) -> Option<Arc<World>> {
    if std::env::var_os(postern::store::TEST_STORE_URL).is_none() {
        eprintln!(
            "skipped: needs several instances on one PostgreSQL store; set {} (scripts/pg-cluster.sh start DIR)",
            postern::store::TEST_STORE_URL
        );
        return None;
    }
    let config = SmtpConfig {
        reply_delay: delay,
        ..SmtpConfig::office365()
    };
    let w = World::with_provider(Flow::ClientCredentials, config)
        .await
        .setting("POSTERN_DELIVERY__LEASE_SECS", &LEASE_SECS.to_string());
    Some(Arc::new(w))
}

/// A message with its own Message-ID (the relay keeps it), so the provider's record tells
/// which arrived and how often.
fn tagged(message_id: &str) -> Vec<u8> {
    format!(
        "From: App <{USER}>\r\nTo: <{TO}>\r\nMessage-ID: <{message_id}>\r\nSubject: {message_id}\r\n\r\nload\r\n"
    )
    .into_bytes()
}

/// The Message-IDs the provider received, each with how many times.
fn received(w: &World) -> HashMap<String, u32> {
    let mut seen = HashMap::new();
    for m in w.smtp.messages() {
        let text = String::from_utf8_lossy(&m.data);
        if let Some(id) = text.lines().find_map(|l| {
            l.strip_prefix("Message-ID: <")
                .and_then(|r| r.strip_suffix('>'))
                .map(str::to_string)
        }) {
            *seen.entry(id).or_insert(0) += 1;
        }
    }
    seen
}

/// `apps` clients spread over `relays`, together sending `total` messages; each records what
/// was acknowledged with 250 (queue id, Message-ID) and stops at the first I/O error (its
/// instance was killed).
fn spread_load(
    w: &Arc<World>,
    relays: &[SocketAddr],
    apps: usize,
    total: usize,
    accepted: &Arc<Mutex<Vec<(String, String)>>>,
) -> tokio::task::JoinSet<()> {
    let mut set = tokio::task::JoinSet::new();
    for app in 0..apps {
        let (w, accepted, relay) = (w.clone(), accepted.clone(), relays[app % relays.len()]);
        let share = total / apps + usize::from(app < total % apps);
        set.spawn(async move {
            let mut c = Client::connect_tls(relay, &w.relay_cert()).await;
            assert_eq!(c.auth_plain("app", &w.password).await.code, 235);
            for n in 0..share {
                let mid = format!("load-{app}-{n}@cluster.test");
                match c.try_send(USER, TO, &tagged(&mid)).await {
                    Ok([.., done]) if done.code == 250 => {
                        accepted.lock().unwrap().push((queued_id(&done), mid));
                    }
                    Ok(replies) => panic!("refused: {replies:?}"),
                    Err(_) => return, // its instance was killed
                }
            }
            let _ = c.try_write(b"QUIT\r\n").await;
        });
    }
    set
}

/// Waits until the provider has every one of `ids`; panics with what is missing after `limit`.
async fn wait_delivered(w: &World, ids: &[String], limit: Duration) -> HashMap<String, u32> {
    let deadline = Instant::now() + limit;
    loop {
        let seen = received(w);
        let missing: Vec<&String> = ids.iter().filter(|id| !seen.contains_key(*id)).collect();
        if missing.is_empty() {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged messages never reached the provider, e.g. {:?}\n{}",
            missing.len(),
            &missing[..missing.len().min(5)],
            w.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn three(w: &World) -> Vec<Serve> {
    let mut serves = Vec::new();
    for _ in 0..3 {
        serves.push(w.serve().await);
    }
    serves
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_never_open_more_sessions_to_a_mailbox_than_it_allows() {
    let Some(w) = cluster_world(Duration::from_millis(30)).await else {
        return;
    };
    let serves = three(&w).await;
    let relays: Vec<SocketAddr> = serves.iter().map(|s| s.relay).collect();
    let accepted: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut apps = spread_load(&w, &relays, 6, 300, &accepted);
    while let Some(r) = apps.join_next().await {
        r.unwrap();
    }
    let ids: Vec<String> = accepted
        .lock()
        .unwrap()
        .iter()
        .map(|(_, m)| m.clone())
        .collect();
    assert_eq!(ids.len(), 300, "every message accepted");
    let seen = wait_delivered(&w, &ids, Duration::from_secs(45)).await;
    let peak = w.smtp.session_peaks().get(USER).copied().unwrap_or(0);
    println!("3 instances, 300 messages: peak {peak} concurrent sessions to the mailbox (limit 3)");
    assert!(
        peak <= 3,
        "the mailbox allows 3 sessions but saw {peak} at once\n{}",
        w.log()
    );
    assert!(
        peak >= 2,
        "the load never overlapped sessions (peak {peak}): the test proves nothing"
    );
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    assert_eq!(duplicates, 0, "no instance died, so nothing goes twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_instance_loses_no_acknowledged_mail_and_the_others_take_its_claims_over() {
    let Some(w) = cluster_world(Duration::from_millis(15)).await else {
        return;
    };
    // CI: 600; a longer run with POSTERN_TEST_CLUSTER_MESSAGES=5000 (scripts/cluster-kill.sh).
    let total: usize = std::env::var("POSTERN_TEST_CLUSTER_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let mut serves = three(&w).await;
    let relays: Vec<SocketAddr> = serves.iter().map(|s| s.relay).collect();
    let accepted: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut apps = spread_load(&w, &relays, 6, total, &accepted);

    // Under load, kill the instance that owns the connection (it holds the claims) without
    // warning, and leave it dead.
    let store = w.store().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (victim, mut in_flight) = loop {
        let owners = store.connection_owners().await.unwrap();
        let sending: Vec<String> = store
            .queue_entries(Some(MessageStatus::Sending), None)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        let owner = owners.first().and_then(|(_, instance)| {
            serves
                .iter()
                .position(|s| instance.starts_with(&format!("pid{}-", s.pid())))
        });
        if let Some(i) = owner
            && !sending.is_empty()
            && accepted.lock().unwrap().len() >= total / 4
        {
            break (i, sending);
        }
        assert!(Instant::now() < deadline, "no load built up\n{}", w.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let killed_at = Instant::now();
    serves.remove(victim).kill().await;
    // Claimed until the kill: no other instance claims while the dead one's ownership lasts.
    for e in store
        .queue_entries(Some(MessageStatus::Sending), None)
        .await
        .unwrap()
    {
        if !in_flight.contains(&e.id) {
            in_flight.push(e.id);
        }
    }
    println!(
        "killed instance {victim} (the owner) with {} messages claimed",
        in_flight.len()
    );

    // Its claims go out from the others once their leases run out.
    for id in &in_flight {
        let left = Duration::from_secs(LEASE_SECS * 3).saturating_sub(killed_at.elapsed());
        let deadline = Instant::now() + left;
        loop {
            let d = store.message_detail(id).await.unwrap().unwrap();
            if d.summary.status == "sent" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} claimed by the killed instance was not taken over: {d:?}\n{}",
                w.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let takeover = killed_at.elapsed();
    println!(
        "the killed instance's {} claims delivered by the others {:.1} s after the kill (lease {LEASE_SECS} s)",
        in_flight.len(),
        takeover.as_secs_f64()
    );

    while let Some(r) = apps.join_next().await {
        r.unwrap();
    }
    let acked: Vec<String> = accepted
        .lock()
        .unwrap()
        .iter()
        .map(|(_, m)| m.clone())
        .collect();
    assert!(acked.len() >= total / 4);
    // The backlog drains at what 3 sessions to the provider carry: longer runs wait longer.
    let limit = Duration::from_secs(45 + total as u64 / 40);
    let seen = wait_delivered(&w, &acked, limit).await;
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    let twice: HashSet<&String> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(m, _)| m)
        .collect();
    println!(
        "{} of {total} messages acknowledged (the rest were refused by the dead instance's sockets); all delivered; {duplicates} duplicates ({} in flight at the kill)",
        acked.len(),
        in_flight.len()
    );
    assert!(
        duplicates as usize <= in_flight.len(),
        "{duplicates} duplicates ({twice:?}) but only {} messages were in flight",
        in_flight.len()
    );
}

/// Four connections, each paced to 10 messages a second so a backlog lasts; the first instance
/// alone takes all four. A second instance starts and is given mail for all four: within a
/// few heartbeats each instance owns two (rebalancing), nothing is sent twice, every mailbox
/// stays within its 3 sessions, and all mail arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_connections_spread_to_an_instance_that_joins() {
    let Some(w) = cluster_world(Duration::from_millis(5)).await else {
        return;
    };
    let (secret, ca) = (
        w.home.file("client-secret", DEFAULT_CLIENT_SECRET),
        w.home.file("provider-ca.pem", &w.smtp.ca_pem()),
    );
    let (port, token_url) = (
        w.smtp.port().to_string(),
        w.idp.token_url("contoso.example"),
    );
    let mut boxes = Vec::new();
    for n in 1..=4 {
        let (name, mailbox, app) = (
            format!("busy{n}"),
            format!("busy{n}@contoso.example"),
            format!("busy-app{n}"),
        );
        w.home
            .run(&[
                "connection",
                "add",
                &name,
                "--provider",
                "microsoft",
                "--limit",
                "messages-per-minute=600",
                "--tenant",
                "contoso.example",
                "--user",
                &mailbox,
                "--client-id",
                DEFAULT_CLIENT_ID,
                "--client-secret-file",
                &secret,
                "--host",
                "127.0.0.1",
                "--port",
                &port,
                "--token-url",
                &token_url,
                "--ca-file",
                &ca,
                "--flow",
                "client-credentials",
            ])
            .ok();
        let out = w
            .home
            .run(&["relay-user", "add", &app, "--connection", &name])
            .ok();
        boxes.push((mailbox, app, generated_password(&out.stdout)));
    }
    let boxes = Arc::new(boxes);
    // `per_box` messages for each mailbox through `relay`; returns the Message-IDs accepted.
    let send = |relay: SocketAddr, per_box: usize, tag: &'static str| {
        let (w, boxes) = (w.clone(), boxes.clone());
        async move {
            let mut set = tokio::task::JoinSet::new();
            for mailbox_app in boxes.iter() {
                let (mailbox, app, password) = mailbox_app.clone();
                let w = w.clone();
                set.spawn(async move {
                    let mut c = Client::connect_tls(relay, &w.relay_cert()).await;
                    assert_eq!(c.auth_plain(&app, &password).await.code, 235);
                    let mut ids = Vec::new();
                    for n in 0..per_box {
                        let mid = format!("{tag}-{n}-{mailbox}");
                        let body = format!(
                            "From: <{mailbox}>\r\nTo: <{TO}>\r\nMessage-ID: <{mid}>\r\nSubject: {mid}\r\n\r\nx\r\n"
                        );
                        let r = c.send(&mailbox, &[TO], body.as_bytes()).await;
                        assert_eq!(r.code, 250, "{mid}: {r:?}");
                        ids.push(mid);
                    }
                    ids
                });
            }
            let mut ids = Vec::new();
            while let Some(r) = set.join_next().await {
                ids.extend(r.unwrap());
            }
            ids
        }
    };

    let a = w.serve().await;
    // 150 a mailbox at 10 a second: 15 s of work for instance A, which takes all four.
    let mut ids = send(a.relay, 150, "first").await;
    let store = w.store().await;
    let owner_of = |owners: &[(i64, String)], s: &Serve| {
        owners
            .iter()
            .filter(|(_, i)| i.starts_with(&format!("pid{}-", s.pid())))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while owner_of(&store.connection_owners().await.unwrap(), &a) < 4 {
        assert!(
            Instant::now() < deadline,
            "A never owned the four busy connections\n{}",
            w.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let b = w.serve().await;
    ids.extend(send(b.relay, 5, "second").await);
    let joined = Instant::now();
    let spread = loop {
        let owners = store.connection_owners().await.unwrap();
        let (on_a, on_b) = (owner_of(&owners, &a), owner_of(&owners, &b));
        if on_a == 2 && on_b == 2 {
            break joined.elapsed();
        }
        assert!(
            joined.elapsed() < Duration::from_secs(LEASE_SECS * 4),
            "the busy connections did not spread: A owns {on_a}, B {on_b}\n{}",
            w.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "a second instance owned 2 of the 4 busy connections {:.1} s after it started taking mail (ownership heartbeat {:.1} s)",
        spread.as_secs_f64(),
        LEASE_SECS as f64 / 3.0
    );

    let seen = wait_delivered(&w, &ids, Duration::from_secs(60)).await;
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    assert_eq!(duplicates, 0, "no instance died, so nothing goes twice");
    let peaks = w.smtp.session_peaks();
    for (mailbox, _, _) in boxes.iter() {
        let peak = peaks.get(mailbox).copied().unwrap_or(0);
        assert!(
            peak <= 3,
            "{mailbox} allows 3 sessions but saw {peak} at once"
        );
    }
}
