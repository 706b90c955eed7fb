//! The relay benchmark: in one process, the fake provider (IdP + SMTP, fast mode) and a load
//! generator; `postern serve` (the release binary, fresh data dir per measurement) as a child.
//! Every mode is measured twice in the same run: through the relay (STARTTLS + AUTH PLAIN, as
//! a legacy app) and straight to the fake provider (STARTTLS + XOAUTH2, the baseline).
//!
//! ```text
//! cargo bench --bench relay                # 3 runs, medians at the end
//! cargo bench --bench relay -- --runs 1 --quick
//! cargo bench --bench relay -- --runs 1 --only many/c16   # one mode (or `burst`)
//! cargo bench --bench relay -- --provider-delay 2          # the backlog path (below)
//! cargo bench --bench relay -- --transport graph --runs 1   # Graph rows beside SMTP (below)
//! cargo bench --bench relay -- --store postgres --runs 1    # SQLite beside PostgreSQL (below)
//! ```
//!
//! `--store postgres` (`--instances 1,2,3` by default): per mode, the relay on SQLite (one
//! instance) and on PostgreSQL with each number of `serve` instances sharing one fresh
//! database and data key, the clients spread round-robin over their relay ports. The server
//! is a private cluster (`scripts/pg-cluster.sh`, stopped at the end) or
//! `POSTERN_BENCH_STORE_URL`; without PostgreSQL installed the rows are skipped, saying why.
//! CPU per message sums every Postern process and the PostgreSQL server's processes.
//!
//! `--transport graph`: for each mode, the relay delivering through SMTP (the baseline) and then
//! through the fake Microsoft Graph (HTTPS sendMail, app-only Graph token), both end to end from
//! the first submission to the last message at the fake; one row each and their ratio.
//!
//! `--provider-delay MS`: the fake provider waits MS milliseconds before each batch of replies
//! and offers no CHUNKING, like a real one that is slower than the apps; the lanes fill and
//! most mail goes through the store (claimed back in batches), which is the path production
//! takes when Exchange Online accepts 30 messages a minute per mailbox.
//!
//! Figures: accepted msg/s (the client got its 250), end-to-end delivered msg/s (first
//! submission to the last message arriving at the fake provider), p50/p99 latency (the whole
//! connection in one-per-connection mode, MAIL to 250 in many-per-connection mode), Postern CPU
//! per message (utime + stime of the serve process over the measurement, /proc ticks of 10 ms),
//! peak RSS (VmHWM), token requests (fake IdP) and upstream connections (fake SMTP) during the
//! measurement, including Postern's start and warm-up; the system share of the CPU and the
//! anonymous share of the RSS (the rest is mostly the binary's code pages) are shown too. Each
//! run starts with the disk's fsync time: every `250` waits for one, so a busy shared disk
//! shows in the relay's figures. Nothing here is asserted: the targets are printed beside the
//! figures.
//!
//! Profiling: `RELAY_BENCH_WRAP="valgrind --tool=callgrind"` runs `serve` under that command
//! (it is stopped with SIGTERM, so the profiler writes its output).

#[path = "relay/load.rs"]
mod load;
#[path = "relay/pg.rs"]
mod pg;
#[path = "relay/postern.rs"]
mod postern;
#[path = "relay/report.rs"]
mod report;
#[path = "relay/stores.rs"]
mod stores;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_provider::idp::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, IdpConfig, IdpCounters};
use fake_provider::smtp::{SmtpConfig, SmtpCounters, TokenValidator};
use fake_provider::{FakeGraph, FakeIdp, FakeSmtp};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use load::{Auth, Mode, Target};
use postern::Postern;
use report::{Figures, Path, Round};

/// Per mode: how many messages, and the time limit.
pub(crate) struct Plan {
    pub mode: Mode,
    pub clients: usize,
    pub count: usize,
}

const LIMIT: Duration = Duration::from_secs(30);
const BURST: usize = 1000;

fn plans(quick: bool) -> Vec<Plan> {
    let k = if quick { 4 } else { 1 };
    vec![
        Plan {
            mode: Mode::OnePerConnection,
            clients: 1,
            count: 400 / k,
        },
        Plan {
            mode: Mode::OnePerConnection,
            clients: 16,
            count: 2000 / k,
        },
        Plan {
            mode: Mode::ManyPerConnection,
            clients: 1,
            count: 2000 / k,
        },
        Plan {
            mode: Mode::ManyPerConnection,
            clients: 16,
            count: 8000 / k,
        },
    ]
}

/// A client config trusting exactly `ca`, without session resumption (see [`Target::tls`]).
fn tls_trusting(ca: CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("a usable CA certificate");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// An app-only token for the direct baseline, asked for once over HTTP like any OAuth client.
async fn direct_token(idp: &FakeIdp) -> String {
    let http = reqwest::Client::new();
    let answer: serde_json::Value = http
        .post(idp.token_url("contoso.example"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", DEFAULT_CLIENT_ID),
            ("client_secret", DEFAULT_CLIENT_SECRET),
            ("scope", "https://outlook.office365.com/.default"),
        ])
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token answer");
    answer["access_token"]
        .as_str()
        .expect("an access token")
        .to_string()
}

async fn direct(smtp: &FakeSmtp, target: &Target, plan: &Plan) -> Figures {
    let before = smtp.counters();
    let own0 = postern::own_cpu();
    let r = load::run(target, plan.mode, plan.clients, plan.count, LIMIT).await;
    let own = postern::own_cpu().saturating_sub(own0);
    let upstream = smtp.counters().connections - before.connections;
    Figures::from_load(&r, r.elapsed, None, None, 0, upstream).with_bench_cpu(own)
}

/// The relay as a legacy app sees it: STARTTLS trusting its certificate, AUTH PLAIN as `app`.
fn relay_target(p: &Postern) -> Target {
    Target {
        addr: p.relay,
        tls: tls_trusting(CertificateDer::from_pem_file(&p.relay_cert).expect("relay-cert.pem")),
        auth: Auth::Plain {
            user: "app".into(),
            password: p.password.clone(),
        },
    }
}

async fn relay(idp: &FakeIdp, smtp: &FakeSmtp, plan: &Plan) -> Figures {
    let counters = (idp.counters(), smtp.counters());
    let p = tokio::task::block_in_place(|| Postern::start(idp, smtp));
    measure(idp, smtp, plan, std::slice::from_ref(&p), counters, None).await
}

/// The load of `plan` through the instances `ps` (clients spread round-robin over them),
/// after a warm-up, until every message reached the fake provider. Postern's CPU is the sum
/// over the instances; with `postmaster`, the database server's CPU is added to it (and kept
/// apart in `db_cpu_ms_per_msg`). Token requests and upstream connections count from
/// `before` (taken before the instances started).
pub(crate) async fn measure(
    idp: &FakeIdp,
    smtp: &FakeSmtp,
    plan: &Plan,
    ps: &[Postern],
    before: (IdpCounters, SmtpCounters),
    postmaster: Option<u32>,
) -> Figures {
    let (idp0, smtp0) = before;
    let targets: Vec<Target> = ps.iter().map(relay_target).collect();
    // Warm-up (token, upstream sessions, SQLite pages), delivered before measuring.
    let warm = load::run_spread(&targets, Mode::ManyPerConnection, 4, 32, LIMIT).await;
    let warmed = smtp0.messages + warm.accepted as u64;
    assert!(
        smtp.wait_for_count(warmed, LIMIT).await,
        "warm-up not delivered; see {}",
        ps[0].log_path().display()
    );
    let cpu = || {
        ps.iter()
            .fold((Duration::ZERO, Duration::ZERO), |(u, s), p| {
                let (pu, ps) = p.cpu();
                (u + pu, s + ps)
            })
    };
    let db0 = postmaster.map(pg::server_cpu);
    let cpu0 = cpu();
    let own0 = postern::own_cpu();
    let t0 = Instant::now();
    let r = load::run_spread(&targets, plan.mode, plan.clients, plan.count, LIMIT).await;
    let delivered = smtp
        .wait_for_count(warmed + r.accepted as u64, 2 * LIMIT)
        .await;
    let e2e = t0.elapsed();
    let cpu1 = cpu();
    let db = postmaster
        .map(pg::server_cpu)
        .zip(db0)
        .map(|(b, a)| b.saturating_sub(a));
    let own = postern::own_cpu().saturating_sub(own0);
    // The database's CPU is part of the cost on PostgreSQL (in-process on SQLite): counted
    // as user time, since /proc's cutime does not split reaped backends' time finer than that.
    let cpu = (
        cpu1.0.saturating_sub(cpu0.0) + db.unwrap_or_default(),
        cpu1.1.saturating_sub(cpu0.1),
    );
    let memory =
        ps.iter()
            .map(Postern::memory)
            .fold(Default::default(), |a: postern::Memory, m| {
                postern::Memory {
                    peak_kib: a.peak_kib + m.peak_kib,
                    rss_kib: a.rss_kib + m.rss_kib,
                    anon_kib: a.anon_kib + m.anon_kib,
                    file_kib: a.file_kib + m.file_kib,
                }
            });
    if !delivered {
        eprintln!(
            "warning: not every message was delivered; see {}",
            ps[0].log_path().display()
        );
    }
    Figures::from_load(
        &r,
        e2e,
        Some(cpu),
        Some(memory),
        idp.counters().total - idp0.total,
        smtp.counters().connections - smtp0.connections,
    )
    .with_db_cpu(db)
    .with_bench_cpu(own)
}

/// The relay delivering to the fake Graph: the same load and figures as [`relay`].
async fn relay_graph(idp: &FakeIdp, smtp: &FakeSmtp, graph: &FakeGraph, plan: &Plan) -> Figures {
    let (idp0, g0) = (idp.counters(), graph.counters());
    let p = tokio::task::block_in_place(|| Postern::start_with(idp, smtp, Some(graph)));
    let target = relay_target(&p);
    let warm = load::run(&target, Mode::ManyPerConnection, 4, 32, LIMIT).await;
    let warmed = g0.accepted + warm.accepted as u64;
    assert!(
        graph.wait_for_count(warmed, LIMIT).await,
        "warm-up not delivered through Graph; see {}",
        p.log_path().display()
    );
    let cpu0 = p.cpu();
    let own0 = postern::own_cpu();
    let t0 = Instant::now();
    let r = load::run(&target, plan.mode, plan.clients, plan.count, LIMIT).await;
    let delivered = graph
        .wait_for_count(warmed + r.accepted as u64, 4 * LIMIT)
        .await;
    let e2e = t0.elapsed();
    let cpu1 = p.cpu();
    let own = postern::own_cpu().saturating_sub(own0);
    let cpu = (cpu1.0.saturating_sub(cpu0.0), cpu1.1.saturating_sub(cpu0.1));
    let memory = p.memory();
    if !delivered {
        eprintln!(
            "warning: not every message was delivered through Graph; see {}",
            p.log_path().display()
        );
    }
    println!(
        "  graph: {} requests, at most {} in flight (Graph allows 4 per app and mailbox)",
        graph.counters().requests - g0.requests,
        graph.counters().max_in_flight
    );
    Figures::from_load(
        &r,
        e2e,
        Some(cpu),
        Some(memory),
        idp.counters().total - idp0.total,
        0,
    )
    .with_bench_cpu(own)
}

/// `--transport graph`: per mode, the relay through SMTP then through Graph, and the ratio.
async fn graph_rows(idp: &FakeIdp, smtp: &FakeSmtp, plans: &[Plan], only: Option<&str>) {
    let graph = FakeGraph::start(idp.clone()).await.expect("fake Graph");
    println!("\n== relay: SMTP (baseline) and Microsoft Graph, end to end ==");
    println!(
        "{:<12} {:>16} {:>16} {:>8}",
        "mode", "smtp msg/s", "graph msg/s", "ratio"
    );
    for plan in plans {
        let name = report::mode_name(plan.mode, plan.clients);
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let s = relay(idp, smtp, plan).await;
        let g = relay_graph(idp, smtp, &graph, plan).await;
        let (s_rate, g_rate) = (s.delivered_rate, g.delivered_rate);
        let cpu = |f: &Figures| f.cpu_ms_per_msg.unwrap_or(0.0);
        println!(
            "{name:<12} {s_rate:>16.0} {g_rate:>16.0} {:>7.2}x   (Postern CPU ms/msg: smtp {:.3}, graph {:.3})",
            g_rate / s_rate.max(f64::MIN_POSITIVE),
            cpu(&s),
            cpu(&g)
        );
    }
}

/// `BURST` sessions at once (through STARTTLS), idle for a second: failures and memory.
async fn burst(idp: &FakeIdp, smtp: &FakeSmtp) -> report::Burst {
    let p = tokio::task::block_in_place(|| Postern::start(idp, smtp));
    let target = relay_target(&p);
    let t0 = Instant::now();
    let (live, failed, first_error) = load::burst(&target, BURST).await;
    let opened_in = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let memory = p.memory();
    drop(live);
    report::Burst {
        sessions: BURST,
        failed,
        first_error,
        opened_in,
        idle: memory,
    }
}

/// Median time of a 4 KiB write + fsync in the temp dir (where the data dirs go): durable
/// commits wait for this, so it is printed with the figures. A busy shared disk shows here.
fn fsync_probe() -> Duration {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut f = std::fs::File::create(dir.path().join("probe")).expect("probe file");
    let mut times: Vec<Duration> = (0..50)
        .map(|_| {
            let t = Instant::now();
            f.write_all(&[b'x'; 4096]).expect("write");
            f.sync_all().expect("fsync");
            t.elapsed()
        })
        .collect();
    times.sort_unstable();
    times[times.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(3usize);
    let quick = args.iter().any(|a| a == "--quick");
    // `--only one/c16` (or many/c1, burst...) measures just that: for profiling.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    // `--store postgres [--instances 1,2,3]`: SQLite beside PostgreSQL with that many instances.
    let postgres = match args
        .iter()
        .position(|a| a == "--store")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
    {
        None | Some("sqlite") => false,
        Some("postgres") => true,
        Some(other) => {
            eprintln!("--store {other}: expected `sqlite` or `postgres`");
            std::process::exit(2);
        }
    };
    let instances: Vec<usize> = match args
        .iter()
        .position(|a| a == "--instances")
        .and_then(|i| args.get(i + 1))
    {
        None => vec![1, 2, 3],
        Some(list) => list
            .split(',')
            .map(|n| n.trim().parse().ok().filter(|&n| n > 0))
            .collect::<Option<_>>()
            .unwrap_or_else(|| {
                eprintln!("--instances {list}: expected counts like `1,2,3`");
                std::process::exit(2);
            }),
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let graph_mode = args
        .iter()
        .position(|a| a == "--transport")
        .and_then(|i| args.get(i + 1))
        .is_some_and(|t| t == "graph");
    rt.block_on(async {
        let mut idp_config = IdpConfig::default();
        if graph_mode {
            // App-only Graph tokens carry the Mail.Send application permission.
            idp_config.app_roles.push("Mail.Send".into());
        }
        let idp = FakeIdp::start(idp_config).await.expect("fake IdP");
        let delay = args
            .iter()
            .position(|a| a == "--provider-delay")
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse::<u64>().ok());
        let mut config = SmtpConfig::office365().fast();
        if let Some(ms) = delay {
            config.reply_delay = Duration::from_millis(ms);
            config.chunking = false;
            println!(
                "provider: {ms} ms before each batch of replies, no CHUNKING (the backlog path)"
            );
        }
        let smtp = FakeSmtp::start(config, TokenValidator::Idp(idp.clone()))
            .await
            .expect("fake SMTP");
        let token = direct_token(&idp).await;
        let direct_target = Target {
            addr: smtp.addr(),
            tls: tls_trusting(smtp.ca().ca_der()),
            auth: Auth::XOAuth2 {
                user: load::FROM.into(),
                token,
            },
        };
        let plans = plans(quick);
        if postgres {
            stores::run(&idp, &smtp, &plans, only.as_deref(), &instances, runs).await;
            return;
        }
        if graph_mode {
            for _ in 0..runs {
                graph_rows(&idp, &smtp, &plans, only.as_deref()).await;
            }
            return;
        }
        let mut rounds = Vec::new();
        let mut fsyncs = Vec::new();
        for run in 1..=runs {
            let mut round = Round::default();
            let fsync = fsync_probe();
            fsyncs.push(fsync);
            for plan in &plans {
                let name = report::mode_name(plan.mode, plan.clients);
                if only.as_ref().is_some_and(|o| *o != name) {
                    continue;
                }
                // Direct first, then the relay: a busy neighbour on the machine hurts both alike.
                let d = direct(&smtp, &direct_target, plan).await;
                round.push(plan.mode, plan.clients, Path::Direct, d);
                let r = relay(&idp, &smtp, plan).await;
                round.push(plan.mode, plan.clients, Path::Relay, r);
            }
            if only.as_deref().is_none_or(|o| o == "burst") {
                round.burst = Some(burst(&idp, &smtp).await);
            }
            println!(
                "\n== run {run} of {runs} (disk: fsync of 4 KiB takes {} µs, median of 50) ==",
                fsync.as_micros()
            );
            round.print();
            rounds.push(round);
        }
        println!("\n== medians of {runs} run(s) ==");
        let median = Round::median(&rounds);
        median.print();
        fsyncs.sort();
        median.print_targets(delay.map(|_| fsyncs[fsyncs.len() / 2]));
    });
}
