//! Many connections at once: the same number of messages through one connection, then spread
//! over many connections sending at the same time; token requests and upstream sessions per
//! mailbox from the fakes' counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fake_provider::{FakeIdp, FakeSmtp};

use crate::postern::own_cpu;
use crate::serve::{DataDir, OWN_TENANT, Row, Serve, mailbox};
use crate::submit::{self, Api};
use crate::thousands;

/// The Microsoft preset's upstream sessions per connection (`max_concurrent`).
const SESSION_LIMIT: u32 = 3;

struct Phase {
    sent: usize,
    errors: usize,
    first_error: Option<String>,
    /// First request sent → last message arrived.
    took: Duration,
    tokens: u64,
    arrived: bool,
    /// Upstream sessions opened (TCP connections the fake SMTP accepted).
    sessions: u64,
    /// `serve`'s CPU time over the phase, and the benchmark process's (load + fakes).
    serve_cpu: Duration,
    own_cpu: Duration,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.sent as f64 / self.took.as_secs_f64().max(1e-9)
    }

    /// "serve 0.123 ms/msg, load+fakes 0.045 ms/msg, 1,000 sessions".
    fn costs(&self) -> String {
        let per = |d: Duration| d.as_secs_f64() * 1000.0 / self.sent.max(1) as f64;
        format!(
            "CPU serve {:.3} ms/msg, load+fakes {:.3} ms/msg; {} upstream sessions opened",
            per(self.serve_cpu),
            per(self.own_cpu),
            thousands(self.sessions)
        )
    }
}

/// Sends `jobs` (connection, subject) with `clients` requests in flight, and waits for them.
async fn phase(
    serve: &Serve,
    smtp: &FakeSmtp,
    api: &Api,
    idp: &FakeIdp,
    arrivals: &submit::Shared,
    jobs: Vec<(String, String)>,
    clients: usize,
) -> Phase {
    let tokens0 = idp.counters().total;
    let sessions0 = smtp.counters().connections;
    let (serve0, own0) = (serve.cpu(), own_cpu());
    let jobs = Arc::new(jobs);
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (api, jobs, next) = (api.clone(), jobs.clone(), next.clone());
        tasks.spawn(async move {
            let (mut ok, mut errors) = (Vec::new(), Vec::new());
            while let Some((conn, subject)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                match api.send(conn, subject).await {
                    Ok(()) => ok.push(subject.clone()),
                    Err(e) => errors.push(e),
                }
            }
            (ok, errors)
        });
    }
    let (mut sent, mut errors) = (Vec::new(), Vec::new());
    while let Some(r) = tasks.join_next().await {
        let (o, e) = r.expect("a client panicked");
        sent.extend(o);
        errors.extend(e);
    }
    let arrived = submit::wait_until(arrivals, Duration::from_secs(300), |a| {
        sent.iter().all(|s| a.at(s).is_some())
    })
    .await;
    let (serve_cpu, own_cpu) = (serve.cpu() - serve0, own_cpu() - own0);
    let a = arrivals.lock().unwrap();
    let last = sent.iter().filter_map(|s| a.at(s)).max().unwrap_or(t0);
    Phase {
        sessions: smtp.counters().connections - sessions0,
        serve_cpu,
        own_cpu,
        sent: sent.len(),
        errors: errors.len(),
        first_error: errors.into_iter().next(),
        took: last.saturating_duration_since(t0),
        tokens: idp.counters().total - tokens0,
        arrived,
    }
}

pub async fn run(
    idp: &FakeIdp,
    smtp: &FakeSmtp,
    arrivals: &submit::Shared,
    connections: usize,
    per_connection: usize,
    clients: usize,
) {
    let mut rows = vec![Row {
        name: "solo".into(),
        tenant: OWN_TENANT.into(),
        user: "solo@contoso.example".into(),
        per_minute: 0,
        enabled: true,
    }];
    rows.extend((1..=connections).map(Row::numbered));
    let data = tokio::task::block_in_place(|| DataDir::import(idp, smtp, &rows));
    let key = tokio::task::block_in_place(|| data.api_key());
    let serve = Serve::start(&data).await;
    let api = Api::new(serve.http, key);
    let n = connections * per_connection;

    let solo_jobs = (0..n)
        .map(|k| ("solo".to_string(), format!("bench solo {k}")))
        .collect();
    let solo = phase(&serve, smtp, &api, idp, arrivals, solo_jobs, clients).await;

    smtp.reset_session_peaks();
    // Round by round, so every connection has mail at the same time.
    let many_jobs = (0..per_connection)
        .flat_map(|k| {
            (1..=connections).map(move |i| (format!("c{i}"), format!("bench many c{i} {k}")))
        })
        .collect();
    let many = phase(&serve, smtp, &api, idp, arrivals, many_jobs, clients).await;
    let peaks = smtp.session_peaks();
    let mailboxes: Vec<u32> = (1..=connections)
        .map(|i| peaks.get(&mailbox(i)).copied().unwrap_or(0))
        .collect();
    let max = mailboxes.iter().copied().max().unwrap_or(0);
    let over = mailboxes.iter().filter(|&&p| p > SESSION_LIMIT).count();
    let solo_peak = peaks.get("solo@contoso.example").copied().unwrap_or(0);

    println!(
        "\n== {} connections at once, {per_connection} messages each, through the HTTP API ({clients} requests in flight) ==\n\
         one connection, {} messages:      {:.0} delivered msg/s ({:.2} s, first request → last arrival), {} token request(s), {} errors{}\n\
         \x20 {}\n\
         {} connections, {} messages: {:.0} delivered msg/s ({:.2} s), {:.2}× the single connection (target ≥ 0.8×: {}), {} errors{}\n\
         \x20 {}\n\
         token requests: {} for {} connections (target 1 per connection: {})\n\
         upstream sessions per mailbox at once: max {} over the {} mailboxes (limit {SESSION_LIMIT}: {}); the single connection's mailbox: {}",
        thousands(connections as u64),
        thousands(n as u64),
        solo.rate(),
        solo.took.as_secs_f64(),
        solo.tokens,
        solo.errors,
        arrival_note(&solo),
        solo.costs(),
        thousands(connections as u64),
        thousands(n as u64),
        many.rate(),
        many.took.as_secs_f64(),
        many.rate() / solo.rate().max(1e-9),
        if many.rate() >= 0.8 * solo.rate() {
            "met"
        } else {
            "MISSED"
        },
        many.errors,
        arrival_note(&many),
        many.costs(),
        thousands(many.tokens),
        thousands(connections as u64),
        if many.tokens == connections as u64 {
            "met"
        } else {
            "MISSED"
        },
        max,
        thousands(connections as u64),
        if over == 0 {
            "never above".to_string()
        } else {
            format!("!!! BREACHED by {over} mailbox(es) !!!")
        },
        solo_peak,
    );
    if !solo.arrived || !many.arrived {
        println!("serve's log ends:\n{}", serve.log_tail());
    }
    if over > 0 || solo_peak > SESSION_LIMIT {
        eprintln!(
            "!!! upstream session limit breached: {over} mailbox(es) above {SESSION_LIMIT} (max {max}), single connection {solo_peak} !!!"
        );
    }
}

fn arrival_note(p: &Phase) -> String {
    let mut s = String::new();
    if let Some(e) = &p.first_error {
        s.push_str(&format!(" (first: {e})"));
    }
    if !p.arrived {
        s.push_str(" — NOT ALL ARRIVED within 300 s");
    }
    s
}
