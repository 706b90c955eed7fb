//! The many-connections benchmark (issue 12): in one process the fake IdP and the fake SMTP
//! (fast mode, no reply delay), and `postern serve` (the release binary, a fresh data dir per
//! part) as a child, its connections created with `postern connection import` from a CSV file
//! of client-credentials connections (provider microsoft, pacing off except in the pacing part).
//!
//! ```text
//! cargo bench --bench connections                      # everything, full sizes (~20 min)
//! cargo bench --bench connections -- --quick           # a short version (~2 min)
//! cargo bench --bench connections -- --only idle --connections 10000 --idle-secs 60
//! cargo bench --bench connections -- --only fairness   # or idle, fanout, pacing
//! cargo bench --bench connections -- --only pacing --per-minute 120 --messages 60
//! cargo bench --bench connections -- --only fanout --per-connection 30
//! cargo bench --bench connections -- --only fanout --max-sessions 1024   # a session each
//! ```
//!
//! 1. Idle at scale: import time, start-up time (spawn → /healthz answers), then serve's CPU
//!    (utime + stime from /proc, 10 ms ticks) over the idle time as a share of one core, and
//!    its RSS (VmRSS now, VmHWM the peak). 10,000 and 100,000 connections (`--connections N`
//!    for one size).
//! 2. Fairness: one connection's backlog (queued through the relay while it is disabled, held
//!    in the store, then enabled) drains while 100 others each send one message a second
//!    through the HTTP API; their latency is from the request sent to the arrival at the fake.
//! 3. Many connections at once: the same number of messages through one connection, then
//!    through 1,000 connections at once (HTTP API); delivered msg/s, token requests (fake IdP),
//!    and the most upstream sessions one mailbox had open at once (fake SMTP).
//! 4. Pacing: a connection with `messages-per-minute=30` sends 300 messages (10 minutes).
//!
//! Nothing is asserted: targets are printed beside the figures.

#[path = "relay/load.rs"]
#[allow(dead_code)]
mod load;
#[path = "relay/postern.rs"]
#[allow(dead_code)]
mod postern;

#[path = "connections/fairness.rs"]
mod fairness;
#[path = "connections/fanout.rs"]
mod fanout;
#[path = "connections/idle.rs"]
mod idle;
#[path = "connections/pacing.rs"]
mod pacing;
#[path = "connections/serve.rs"]
mod serve;
#[path = "connections/submit.rs"]
mod submit;

use std::time::{Duration, Instant};

use fake_provider::idp::IdpConfig;
use fake_provider::smtp::{SmtpConfig, TokenValidator};
use fake_provider::{FakeIdp, FakeSmtp};

/// 12345 → "12,345".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

struct Sizes {
    idle: Vec<usize>,
    idle_secs: u64,
    backlog: usize,
    fair_secs: u64,
    fanout: usize,
    per_connection: usize,
    per_minute: u32,
    paced: usize,
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only: Option<String> = arg(&args, "--only");
    let mut sizes = if quick {
        Sizes {
            idle: vec![2_000],
            idle_secs: 10,
            backlog: 5_000,
            fair_secs: 10,
            fanout: 200,
            per_connection: 3,
            per_minute: 600,
            paced: 60,
        }
    } else {
        Sizes {
            idle: vec![10_000, 100_000],
            idle_secs: 60,
            backlog: 50_000,
            fair_secs: 30,
            fanout: 1_000,
            per_connection: 3,
            per_minute: 30,
            paced: 300,
        }
    };
    if let Some(n) = arg(&args, "--connections") {
        sizes.idle = vec![n];
    }
    if let Some(s) = arg(&args, "--idle-secs") {
        sizes.idle_secs = s;
    }
    if let Some(n) = arg::<u32>(&args, "--max-sessions") {
        let _ = serve::MAX_SESSIONS.set(n);
        println!("delivery.max_sessions = {n}");
    }
    if let Some(n) = arg(&args, "--per-connection") {
        sizes.per_connection = n;
    }
    if let Some(n) = arg(&args, "--per-minute") {
        sizes.per_minute = n;
    }
    if let Some(n) = arg(&args, "--messages") {
        sizes.paced = n;
    }
    let part = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let idp = FakeIdp::start(IdpConfig::default())
            .await
            .expect("fake IdP");
        let smtp = FakeSmtp::start(
            SmtpConfig::office365().fast(),
            TokenValidator::Idp(idp.clone()),
        )
        .await
        .expect("fake SMTP");
        let arrivals = submit::track(&smtp);
        let t0 = Instant::now();
        println!("load average at the start: {}", load_average());
        if part("idle") {
            for &n in &sizes.idle {
                idle::run(&idp, &smtp, n, Duration::from_secs(sizes.idle_secs)).await;
            }
        }
        if part("fairness") {
            fairness::run(&idp, &smtp, &arrivals, sizes.backlog, 100, sizes.fair_secs).await;
        }
        if part("fanout") {
            fanout::run(
                &idp,
                &smtp,
                &arrivals,
                sizes.fanout,
                sizes.per_connection,
                32,
            )
            .await;
        }
        if part("pacing") {
            pacing::run(&idp, &smtp, &arrivals, sizes.per_minute, sizes.paced).await;
        }
        println!(
            "\nload average at the end: {} (2 cores, shared); took {:.0} s",
            load_average(),
            t0.elapsed().as_secs_f64()
        );
    });
}
