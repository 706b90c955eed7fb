//! The figures of one measurement, medians over runs, and the printed tables and targets.

use std::time::Duration;

use crate::load::{LoadResult, Mode};
use crate::postern::Memory;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Relay,
    Direct,
    /// The relay on a given store (`--store postgres`).
    Store(Store),
}

/// SQLite (one instance, in-process) or PostgreSQL with `instances` instances on one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Store {
    pub postgres: bool,
    pub instances: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub accepted: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub accepted_rate: f64,
    pub delivered_rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Postern's CPU per message (relay only), with the database server's on PostgreSQL.
    pub cpu_ms_per_msg: Option<f64>,
    /// The database server's part of it (PostgreSQL only).
    pub db_cpu_ms_per_msg: Option<f64>,
    /// The system (kernel) part of it.
    pub sys_ms_per_msg: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    /// Anonymous memory at the end (the rest of the peak is mostly the binary's code).
    pub anon_mib: Option<f64>,
    pub token_requests: u64,
    pub upstream_connections: u64,
    /// CPU per message of the benchmark process itself (load generator + fake provider).
    pub bench_cpu_ms_per_msg: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

impl Figures {
    /// `delivered_in`: from the start until the last message reached the provider.
    pub fn from_load(
        r: &LoadResult,
        delivered_in: Duration,
        cpu: Option<(Duration, Duration)>,
        memory: Option<Memory>,
        token_requests: u64,
        upstream_connections: u64,
    ) -> Self {
        let n = r.accepted.max(1) as f64;
        Figures {
            accepted: r.accepted,
            errors: r.errors,
            first_error: r.first_error.clone(),
            accepted_rate: r.accepted as f64 / r.elapsed.as_secs_f64().max(1e-9),
            delivered_rate: r.accepted as f64 / delivered_in.as_secs_f64().max(1e-9),
            p50_ms: percentile(&r.latencies, 0.50),
            p99_ms: percentile(&r.latencies, 0.99),
            cpu_ms_per_msg: cpu.map(|(u, s)| (u + s).as_secs_f64() * 1000.0 / n),
            db_cpu_ms_per_msg: None,
            sys_ms_per_msg: cpu.map(|(_, s)| s.as_secs_f64() * 1000.0 / n),
            peak_rss_mib: memory.map(|m| m.peak_kib as f64 / 1024.0),
            anon_mib: memory.map(|m| m.anon_kib as f64 / 1024.0),
            token_requests,
            upstream_connections,
            bench_cpu_ms_per_msg: 0.0,
        }
    }

    /// Records the database server's CPU (already counted in `cpu_ms_per_msg`).
    pub fn with_db_cpu(mut self, cpu: Option<Duration>) -> Self {
        self.db_cpu_ms_per_msg =
            cpu.map(|c| c.as_secs_f64() * 1000.0 / self.accepted.max(1) as f64);
        self
    }

    pub fn with_bench_cpu(mut self, cpu: Duration) -> Self {
        self.bench_cpu_ms_per_msg = cpu.as_secs_f64() * 1000.0 / self.accepted.max(1) as f64;
        self
    }

    /// Everything the machine spent per message: this process, plus Postern on the relay path.
    fn total_cpu_ms(&self) -> f64 {
        self.bench_cpu_ms_per_msg + self.cpu_ms_per_msg.unwrap_or(0.0)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Burst {
    pub sessions: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub opened_in: Duration,
    /// With every session open and idle.
    pub idle: Memory,
}

/// Every measurement of one run.
#[derive(Debug, Clone, Default)]
pub struct Round {
    pub rows: Vec<(Mode, usize, Path, Figures)>,
    pub burst: Option<Burst>,
}

pub fn mode_name(mode: Mode, clients: usize) -> String {
    let m = match mode {
        Mode::OnePerConnection => "one",
        Mode::ManyPerConnection => "many",
    };
    format!("{m}/c{clients}")
}

fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn median_u(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

impl Round {
    pub fn push(&mut self, mode: Mode, clients: usize, path: Path, f: Figures) {
        self.rows.push((mode, clients, path, f));
    }

    pub fn get(&self, mode: Mode, clients: usize, path: Path) -> Option<&Figures> {
        self.rows
            .iter()
            .find(|(m, c, p, _)| *m == mode && *c == clients && *p == path)
            .map(|(.., f)| f)
    }

    /// The median of every figure, row by row (each figure on its own).
    pub fn median(rounds: &[Round]) -> Round {
        let Some(first) = rounds.first() else {
            return Round::default();
        };
        let mut out = Round::default();
        for (mode, clients, path, _) in &first.rows {
            let all: Vec<&Figures> = rounds
                .iter()
                .filter_map(|r| r.get(*mode, *clients, *path))
                .collect();
            let f = |get: fn(&Figures) -> f64| median_f(all.iter().map(|x| get(x)).collect());
            let opt = |get: fn(&Figures) -> Option<f64>| {
                let v: Vec<f64> = all.iter().filter_map(|x| get(x)).collect();
                (!v.is_empty()).then(|| median_f(v))
            };
            let u = |get: fn(&Figures) -> u64| median_u(all.iter().map(|x| get(x)).collect());
            let m = Figures {
                accepted: u(|x| x.accepted as u64) as usize,
                errors: all.iter().map(|x| x.errors).sum(),
                first_error: all.iter().find_map(|x| x.first_error.clone()),
                accepted_rate: f(|x| x.accepted_rate),
                delivered_rate: f(|x| x.delivered_rate),
                p50_ms: f(|x| x.p50_ms),
                p99_ms: f(|x| x.p99_ms),
                cpu_ms_per_msg: opt(|x| x.cpu_ms_per_msg),
                db_cpu_ms_per_msg: opt(|x| x.db_cpu_ms_per_msg),
                sys_ms_per_msg: opt(|x| x.sys_ms_per_msg),
                peak_rss_mib: opt(|x| x.peak_rss_mib),
                anon_mib: opt(|x| x.anon_mib),
                token_requests: u(|x| x.token_requests),
                upstream_connections: u(|x| x.upstream_connections),
                bench_cpu_ms_per_msg: f(|x| x.bench_cpu_ms_per_msg),
            };
            out.push(*mode, *clients, *path, m);
        }
        let bursts: Vec<&Burst> = rounds.iter().filter_map(|r| r.burst.as_ref()).collect();
        if !bursts.is_empty() {
            out.burst = Some(Burst {
                sessions: bursts[0].sessions,
                failed: bursts.iter().map(|b| b.failed).sum(),
                first_error: bursts.iter().find_map(|b| b.first_error.clone()),
                opened_in: Duration::from_secs_f64(median_f(
                    bursts.iter().map(|b| b.opened_in.as_secs_f64()).collect(),
                )),
                idle: Memory {
                    peak_kib: median_u(bursts.iter().map(|b| b.idle.peak_kib).collect()),
                    rss_kib: median_u(bursts.iter().map(|b| b.idle.rss_kib).collect()),
                    anon_kib: median_u(bursts.iter().map(|b| b.idle.anon_kib).collect()),
                    file_kib: median_u(bursts.iter().map(|b| b.idle.file_kib).collect()),
                },
            });
        }
        out
    }

    pub fn print(&self) {
        println!(
            "{:<8} {:<6} {:>6} {:>6} {:>10} {:>11} {:>8} {:>8} {:>10} {:>7} {:>9} {:>8} {:>6} {:>8} {:>10}",
            "mode",
            "path",
            "msgs",
            "errors",
            "accepted/s",
            "delivered/s",
            "p50 ms",
            "p99 ms",
            "CPU ms/msg",
            "of sys",
            "peak RSS",
            "of anon",
            "tokens",
            "upstream",
            "load+fake"
        );
        for (mode, clients, path, f) in &self.rows {
            let path = match path {
                Path::Relay => "relay",
                Path::Direct => "direct",
                Path::Store(_) => "store",
            };
            println!(
                "{:<8} {:<6} {:>6} {:>6} {:>10.0} {:>11.0} {:>8.2} {:>8.2} {:>10} {:>7} {:>9} {:>8} {:>6} {:>8} {:>10.3}",
                mode_name(*mode, *clients),
                path,
                f.accepted,
                f.errors,
                f.accepted_rate,
                f.delivered_rate,
                f.p50_ms,
                f.p99_ms,
                f.cpu_ms_per_msg.map_or("-".into(), |c| format!("{c:.3}")),
                f.sys_ms_per_msg.map_or("-".into(), |c| format!("{c:.3}")),
                f.peak_rss_mib.map_or("-".into(), |m| format!("{m:.1} MiB")),
                f.anon_mib.map_or("-".into(), |m| format!("{m:.1} MiB")),
                f.token_requests,
                f.upstream_connections,
                f.bench_cpu_ms_per_msg,
            );
            if let Some(e) = &f.first_error {
                println!("         first error: {e}");
            }
        }
        println!(
            "(direct: one token, fetched over HTTP before the runs, serves every connection; \
             relay: tokens and upstream connections counted from Postern's start; \
             load+fake: CPU ms per message of the load generator and fake provider process)"
        );
        if let Some(b) = &self.burst {
            println!(
                "burst: {} sessions at once through STARTTLS in {:.2} s, {} failed; \
                 idle RSS {:.1} MiB (anon {:.1}, file {:.1}), peak RSS {:.1} MiB",
                b.sessions,
                b.opened_in.as_secs_f64(),
                b.failed,
                b.idle.rss_kib as f64 / 1024.0,
                b.idle.anon_kib as f64 / 1024.0,
                b.idle.file_kib as f64 / 1024.0,
                b.idle.peak_kib as f64 / 1024.0
            );
            if let Some(e) = &b.first_error {
                println!("       first error: {e}");
            }
        }
    }

    /// `backlog`: the run's median fsync time, when the provider was slowed (`--provider-delay`):
    /// then the only CPU target is the backlog path's, at many/c16, and relay / direct is no
    /// target (the direct path is not held to a mailbox's session limit).
    pub fn print_targets(&self, backlog: Option<Duration>) {
        let check = |ok: bool| if ok { "met" } else { "MISSED" };
        let ratio = |mode, clients, target: f64| {
            let (Some(r), Some(d)) = (
                self.get(mode, clients, Path::Relay),
                self.get(mode, clients, Path::Direct),
            ) else {
                return;
            };
            let x = r.delivered_rate / d.delivered_rate.max(1e-9);
            println!(
                "  {:<9} end-to-end relay / direct = {x:.2}x (target >= {target}x): {}",
                mode_name(mode, clients),
                check(x >= target)
            );
            // With every core busy, throughput is cores / CPU per message: the ratio of the
            // two paths' total CPU per message is the most the relay can reach here.
            println!(
                "            CPU per message, all processes: direct {:.3} ms, relay {:.3} ms \
                 (load+fake {:.3} + Postern {:.3}); CPU-bound ceiling {:.2}x",
                d.total_cpu_ms(),
                r.total_cpu_ms(),
                r.bench_cpu_ms_per_msg,
                r.cpu_ms_per_msg.unwrap_or(0.0),
                d.total_cpu_ms() / r.total_cpu_ms().max(1e-9)
            );
        };
        println!("targets:");
        if backlog.is_none() {
            ratio(Mode::ManyPerConnection, 16, 0.8);
            ratio(Mode::OnePerConnection, 16, 1.5);
        }
        for (mode, clients, path, f) in &self.rows {
            if *path != Path::Relay {
                continue;
            }
            let limit = match (backlog, mode, clients) {
                (None, Mode::ManyPerConnection, _) => Some(0.1),
                (None, Mode::OnePerConnection, _) => Some(0.3),
                (Some(_), Mode::ManyPerConnection, 16) => Some(0.15),
                (Some(_), _, _) => None,
            };
            let beside = match backlog {
                Some(fsync) => format!("backlog path, disk fsync {} µs, ", fsync.as_micros()),
                None => String::new(),
            };
            match (f.cpu_ms_per_msg, limit) {
                (Some(c), Some(limit)) => println!(
                    "  {:<9} Postern CPU {c:.3} ms/message ({beside}target <= {limit}): {}",
                    mode_name(*mode, *clients),
                    check(c <= limit)
                ),
                (Some(c), None) => println!(
                    "  {:<9} Postern CPU {c:.3} ms/message ({beside}no target in this mode)",
                    mode_name(*mode, *clients),
                ),
                (None, _) => {}
            }
            // The same ratio however busy the shared machine: both sides slow down together.
            if let Some(c) = f.cpu_ms_per_msg
                && f.bench_cpu_ms_per_msg > 0.0
            {
                println!(
                    "  {:<9} Postern CPU / the two endpoints' (load+fake) in the same run = {:.2}x",
                    mode_name(*mode, *clients),
                    c / f.bench_cpu_ms_per_msg
                );
            }
            println!(
                "  {:<9} token requests {} (target: 1 per connection per token lifetime): {}",
                mode_name(*mode, *clients),
                f.token_requests,
                check(f.token_requests == 1)
            );
            if *clients == 16
                && let Some(m) = f.peak_rss_mib
            {
                println!(
                    "  {:<9} peak RSS {m:.1} MiB (target <= 20 MB = 19.1 MiB): {}",
                    mode_name(*mode, *clients),
                    check(m * 1024.0 * 1024.0 <= 20e6)
                );
            }
        }
        if let Some(b) = &self.burst {
            println!(
                "  burst     {} sessions, {} failed, idle RSS {:.1} MiB (target: none failed, <= 64 MB = 61.0 MiB): {}",
                b.sessions,
                b.failed,
                b.idle.rss_kib as f64 / 1024.0,
                check(b.failed == 0 && (b.idle.rss_kib as f64) * 1024.0 <= 64e6)
            );
        }
    }
}
