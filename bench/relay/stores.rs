//! `--store postgres`: the relay on SQLite (one instance) beside PostgreSQL with 1, 2, 3…
//! instances on one fresh database per measurement, the clients spread round-robin over the
//! instances' relay ports; and the ratios, met or missed.

use fake_provider::{FakeIdp, FakeSmtp};

use crate::pg;
use crate::postern::{Postern, SharedStore};
use crate::report::{Path, Round, Store, mode_name};
use crate::{Plan, measure};

/// Every row of every run, then the medians and the targets.
pub async fn run(
    idp: &FakeIdp,
    smtp: &FakeSmtp,
    plans: &[Plan],
    only: Option<&str>,
    instances: &[usize],
    runs: usize,
) {
    // Dropped last (after every instance), also when a measurement panics: stops the cluster.
    let mut server = match pg::Server::open() {
        Ok(s) => {
            println!("PostgreSQL: {}", s.describe());
            Some(s)
        }
        Err(why) => {
            println!("PostgreSQL rows skipped: {why}");
            None
        }
    };
    let postmaster = match &server {
        Some(s) => {
            let pid = s.postmaster().await;
            if pid.is_none() {
                println!(
                    "the PostgreSQL server is not a process on this machine: its CPU is not counted"
                );
            }
            pid
        }
        None => None,
    };
    let mut rounds = Vec::new();
    for run in 1..=runs {
        let mut round = Round::default();
        for plan in plans {
            if only.is_some_and(|o| o != mode_name(plan.mode, plan.clients)) {
                continue;
            }
            let sqlite = Store {
                postgres: false,
                instances: 1,
            };
            let before = (idp.counters(), smtp.counters());
            let p = tokio::task::block_in_place(|| Postern::start(idp, smtp));
            let f = measure(idp, smtp, plan, std::slice::from_ref(&p), before, None).await;
            drop(p);
            round.push(plan.mode, plan.clients, Path::Store(sqlite), f);
            let Some(server) = server.as_mut() else {
                continue;
            };
            for &n in instances {
                let store = SharedStore::new(server.fresh_database().await);
                let before = (idp.counters(), smtp.counters());
                let ps =
                    tokio::task::block_in_place(|| Postern::start_shared(idp, smtp, &store, n));
                let f = measure(idp, smtp, plan, &ps, before, postmaster).await;
                tokio::task::block_in_place(|| drop(ps));
                server.drop_database(&store.url).await;
                let pg = Store {
                    postgres: true,
                    instances: n,
                };
                round.push(plan.mode, plan.clients, Path::Store(pg), f);
            }
        }
        println!("\n== stores: run {run} of {runs} ==");
        print(&round);
        rounds.push(round);
    }
    let median = Round::median(&rounds);
    println!("\n== stores: medians of {runs} run(s) ==");
    print(&median);
    print_targets(&median, instances);
}

fn store_name(s: Store) -> String {
    if s.postgres {
        format!("postgres x{}", s.instances)
    } else {
        "sqlite x1".into()
    }
}

fn print(round: &Round) {
    println!(
        "{:<9} {:<12} {:>6} {:>6} {:>10} {:>11} {:>8} {:>8} {:>10} {:>9} {:>6} {:>8}",
        "mode",
        "store",
        "msgs",
        "errors",
        "accepted/s",
        "delivered/s",
        "p50 ms",
        "p99 ms",
        "CPU ms/msg",
        "of db",
        "tokens",
        "upstream"
    );
    for (mode, clients, path, f) in &round.rows {
        let Path::Store(store) = path else { continue };
        println!(
            "{:<9} {:<12} {:>6} {:>6} {:>10.0} {:>11.0} {:>8.2} {:>8.2} {:>10} {:>9} {:>6} {:>8}",
            mode_name(*mode, *clients),
            store_name(*store),
            f.accepted,
            f.errors,
            f.accepted_rate,
            f.delivered_rate,
            f.p50_ms,
            f.p99_ms,
            f.cpu_ms_per_msg.map_or("-".into(), |c| format!("{c:.3}")),
            f.db_cpu_ms_per_msg
                .map_or("-".into(), |c| format!("{c:.3}")),
            f.token_requests,
            f.upstream_connections,
        );
        if let Some(e) = &f.first_error {
            println!("          first error: {e}");
        }
    }
    println!(
        "(CPU ms/msg: every Postern process, plus on PostgreSQL the database server's processes \
         (\"of db\": postmaster, backends, WAL writer, checkpointer…), since there the database's \
         work is part of the cost while on SQLite it is in-process; tokens and upstream: counted \
         from the instances' start)"
    );
}

/// The targets on delivered msg/s: PostgreSQL with one instance at least 0.5x SQLite,
/// and the most instances at least 0.8x one instance (more instances cannot add CPU on this
/// machine, so this measures what coordinating them costs).
fn print_targets(round: &Round, instances: &[usize]) {
    let check = |ok: bool| if ok { "met" } else { "MISSED" };
    let mut modes: Vec<_> = round.rows.iter().map(|(m, c, ..)| (*m, *c)).collect();
    modes.dedup();
    let get = |mode, clients, postgres, n| {
        round.get(
            mode,
            clients,
            Path::Store(Store {
                postgres,
                instances: n,
            }),
        )
    };
    println!("targets (delivered msg/s; the issue names c16, c1 is for information):");
    for (mode, clients) in modes {
        let name = mode_name(mode, clients);
        let (Some(sqlite), Some(pg1)) = (get(mode, clients, false, 1), get(mode, clients, true, 1))
        else {
            continue;
        };
        let x = pg1.delivered_rate / sqlite.delivered_rate.max(1e-9);
        println!(
            "  {name:<9} postgres x1 / sqlite x1 = {x:.2}x (target >= 0.5x): {}",
            check(x >= 0.5)
        );
        let Some(&most) = instances.iter().max().filter(|&&n| n > 1) else {
            continue;
        };
        if let Some(pgn) = get(mode, clients, true, most) {
            let x = pgn.delivered_rate / pg1.delivered_rate.max(1e-9);
            println!(
                "  {name:<9} postgres x{most} / postgres x1 = {x:.2}x (target >= 0.8x): {}",
                check(x >= 0.8)
            );
        }
    }
}
