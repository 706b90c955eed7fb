//! Idle at scale: import N connections, start `serve`, and watch it do nothing.

use std::time::{Duration, Instant};

use fake_provider::{FakeIdp, FakeSmtp};

use crate::serve::{DataDir, Row, Serve};
use crate::{mib, thousands};

/// Targets at 10,000 connections.
const TARGET_N: usize = 10_000;
const CPU_TARGET_PERCENT: f64 = 1.0;
const RSS_TARGET_MB: f64 = 100.0;

/// Idle time after which start-up's background work is over (also printed on its own).
const SETTLE: Duration = Duration::from_secs(10);

pub async fn run(idp: &FakeIdp, smtp: &FakeSmtp, n: usize, idle: Duration) {
    let rows: Vec<Row> = (0..n).map(Row::numbered).collect();
    let data = tokio::task::block_in_place(|| DataDir::import(idp, smtp, &rows));
    let (tokens0, upstream0) = (idp.counters().total, smtp.counters().connections);
    let serve = Serve::start(&data).await;
    let startup_cpu = serve.cpu();
    let at_start = serve.memory();
    let cpu0 = serve.cpu();
    let t0 = Instant::now();
    // The first seconds carry the start-up's background work (the notifications' first look at
    // every connection, the first look at the queue); what follows is what idling costs.
    let settle = SETTLE.min(idle / 2);
    tokio::time::sleep(settle).await;
    let cpu_settled = serve.cpu();
    tokio::time::sleep(idle - settle).await;
    let cpu = serve.cpu().saturating_sub(cpu0);
    let wall = t0.elapsed();
    let later = serve.cpu().saturating_sub(cpu_settled);
    let later_percent = later.as_secs_f64() * 100.0 / (wall - settle).as_secs_f64();
    let m = serve.memory();
    let percent = cpu.as_secs_f64() * 100.0 / wall.as_secs_f64();
    let rss_mb = m.rss_kib as f64 * 1024.0 / 1e6;
    println!(
        "\n== idle: {} connections ==\n\
         import:   {:.2} s (`postern connection import` of a CSV file, wall time)\n\
         start-up: {:.2} s until /healthz answered (serve's CPU by then: {:.2} s; RSS {})\n\
         idle {:.0} s: CPU {:.3} % of one core ({} ms user+system){}\n\
         \x20         after its first {:.0} s: {:.3} % ({} ms)\n\
         \x20         RSS {} now ({:.1} MB){}, peak (VmHWM) {}, {} threads\n\
         \x20         token requests {}, upstream connections {} (none expected: nothing to send)",
        thousands(n as u64),
        data.import_time.as_secs_f64(),
        serve.startup.as_secs_f64(),
        startup_cpu.as_secs_f64(),
        mib(at_start.rss_kib),
        wall.as_secs_f64(),
        percent,
        cpu.as_millis(),
        target(n, percent <= CPU_TARGET_PERCENT, "≤ 1 % of a core"),
        settle.as_secs_f64(),
        later_percent,
        later.as_millis(),
        mib(m.rss_kib),
        rss_mb,
        target(n, rss_mb <= RSS_TARGET_MB, "≤ 100 MB"),
        mib(m.peak_kib),
        m.threads,
        idp.counters().total - tokens0,
        smtp.counters().connections - upstream0,
    );
}

fn target(n: usize, met: bool, what: &str) -> String {
    match (n == TARGET_N, met) {
        (false, _) => " (no target at this size)".into(),
        (true, true) => format!(" (target {what}: met)"),
        (true, false) => format!(" (target {what}: MISSED)"),
    }
}
