//! kill -9 under load: once Postern said `250`, the message reaches the provider, whatever
//! happens to the process. Figures: `PROVE_CRASH_MESSAGES` (default 500; the run:
//! 5000), `PROVE_CRASH_KILLS` (3), `PROVE_CRASH_CLIENTS` (8).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng as _;
use tokio_rustls::TlsConnector;

use crate::client::{Client, message, trusting};
use crate::world::{Flow, Home, Providers, Server, USER, figure};

const MARKER: &str = "prove-crash-";

/// What the clients saw.
#[derive(Default)]
struct Ledger {
    /// Messages that got `250` at the final dot.
    acked: Mutex<HashSet<usize>>,
    /// Messages still to submit, in order; a message goes back when its outcome was unknown.
    next: AtomicUsize,
    retry: Mutex<Vec<usize>>,
    /// Submissions whose connection broke before the answer (outcome unknown to the client).
    broken: AtomicU64,
    /// `4xx` answers (the client retries, like any MTA).
    deferred: AtomicU64,
}

impl Ledger {
    fn take(&self, n: usize) -> Option<usize> {
        if let Some(i) = self.retry.lock().unwrap().pop() {
            return Some(i);
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < n).then_some(i)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing() {
    let n = figure("PROVE_CRASH_MESSAGES", 500) as usize;
    let kills = figure("PROVE_CRASH_KILLS", 3) as usize;
    let clients = figure("PROVE_CRASH_CLIENTS", 8) as usize;
    let p = Providers::start_with(fake_provider::smtp::SmtpConfig::office365()).await;
    let mut home = Home::new(None);
    home.setup(&p, Flow::ClientCredentials).await;
    let first = home.serve();
    let (relay, http) = (first.relay.to_string(), first.http.to_string());
    let tls = trusting(&home.data_dir.join("relay-cert.pem"));
    let password = home.relay_password.clone();
    let server: Arc<Mutex<Option<Server>>> = Arc::new(Mutex::new(Some(first)));
    let ledger = Arc::new(Ledger::default());
    let started = Instant::now();

    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (ledger, tls, password) = (ledger.clone(), tls.clone(), password.clone());
        let addr = server.lock().unwrap().as_ref().unwrap().relay;
        tasks.push(tokio::spawn(async move {
            submit_all(addr, tls, password, ledger, n).await;
        }));
    }

    // Kill at random moments while the clients are busy: when a random share of the messages
    // has been acknowledged, plus a random few milliseconds.
    let mut thresholds: Vec<usize> = (0..kills)
        .map(|_| rand::thread_rng().gen_range(n / 10..=n * 7 / 10))
        .collect();
    thresholds.sort_unstable();
    let mut killed_at = Vec::new();
    let mut under_load = 0;
    for t in thresholds {
        let deadline = Instant::now() + Duration::from_secs(600);
        while ledger.acked.lock().unwrap().len() < t && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let jitter = rand::thread_rng().gen_range(0..20);
        tokio::time::sleep(Duration::from_millis(jitter)).await;
        let acked = ledger.acked.lock().unwrap().len();
        if acked < n {
            under_load += 1;
        }
        let old = server.lock().unwrap().take().unwrap();
        old.kill9();
        killed_at.push(acked);
        let new = home.serve_on(&relay, &http);
        *server.lock().unwrap() = Some(new);
    }
    for t in tasks {
        t.await.unwrap();
    }
    let submitted_in = started.elapsed();

    // Every acknowledged message must arrive; wait (bounded) for the queue to drain.
    let acked = ledger.acked.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(120 + n as u64 / 20);
    let mut delivered = deliveries(&p);
    while acked.iter().any(|i| !delivered.contains_key(i)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        delivered = deliveries(&p);
    }
    let lost: Vec<usize> = acked
        .iter()
        .copied()
        .filter(|i| !delivered.contains_key(i))
        .collect();
    let duplicated: usize = delivered.values().map(|&c| c - 1).sum();
    let unacked_delivered = delivered.keys().filter(|i| !acked.contains(i)).count();
    println!(
        "kill -9 under load: {n} messages, {clients} clients, {kills} kills ({under_load} while \
         submitting, after {killed_at:?} acks), \
         submitted in {:.1}s, all delivered after {:.1}s",
        submitted_in.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "kill -9 under load: acknowledged {}, delivered {} distinct, lost {}, duplicated {}, \
         broken submissions {}, 4xx {}, delivered without 250 {}",
        acked.len(),
        delivered.len(),
        lost.len(),
        duplicated,
        ledger.broken.load(Ordering::Relaxed),
        ledger.deferred.load(Ordering::Relaxed),
        unacked_delivered
    );
    let server = server.lock().unwrap().take().unwrap();
    assert_eq!(acked.len(), n, "every message was acknowledged in the end");
    assert!(
        lost.is_empty(),
        "lost after 250: {lost:?}\n{}",
        server.log()
    );
    server.stop();
}

/// One client: a reused authenticated session; on a broken connection it reconnects and
/// submits the same message again, as a real MTA would.
async fn submit_all(
    addr: std::net::SocketAddr,
    tls: TlsConnector,
    password: String,
    ledger: Arc<Ledger>,
    n: usize,
) {
    let mut session: Option<Client> = None;
    let mut failures_in_a_row = 0u32;
    while let Some(i) = ledger.take(n) {
        let mut c = match session.take() {
            Some(c) => c,
            None => match Client::submission(addr, &tls, "app", &password).await {
                Ok(c) => c,
                Err(_) => {
                    ledger.retry.lock().unwrap().push(i);
                    failures_in_a_row += 1;
                    assert!(failures_in_a_row < 600, "the relay never came back");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let marker = format!("{MARKER}{i:06}");
        match c
            .send_mail(USER, "rcpt@example.org", &message(&marker))
            .await
        {
            Ok(r) if r.code == 250 => {
                failures_in_a_row = 0;
                ledger.acked.lock().unwrap().insert(i);
                session = Some(c);
            }
            Ok(r) => {
                ledger.deferred.fetch_add(1, Ordering::Relaxed);
                ledger.retry.lock().unwrap().push(i);
                assert!(r.code < 500, "refused for good: {r}");
                let _ = c.command("RSET").await;
                session = Some(c);
            }
            Err(_) => {
                ledger.broken.fetch_add(1, Ordering::Relaxed);
                ledger.retry.lock().unwrap().push(i);
            }
        }
    }
    if let Some(c) = session {
        c.quit().await;
    }
}

/// Message number -> how many times the provider accepted it.
fn deliveries(p: &Providers) -> HashMap<usize, usize> {
    let mut seen = HashMap::new();
    for m in p.smtp.messages() {
        let text = String::from_utf8_lossy(&m.data);
        if let Some(at) = text.find(&format!("Message-ID: <{MARKER}")) {
            let digits = &text[at + 13 + MARKER.len()..][..6];
            if let Ok(i) = digits.parse::<usize>() {
                *seen.entry(i).or_insert(0) += 1;
            }
        }
    }
    seen
}
