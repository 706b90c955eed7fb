//! Fairness: one connection drains a large backlog while many others each send one message a
//! second; the latency of those (API request sent → arrival at the fake SMTP).

use std::time::{Duration, Instant};

use fake_provider::{FakeIdp, FakeSmtp};

use crate::load::{self, FROM, Mode};
use crate::serve::{DataDir, OWN_TENANT, Row, Serve};
use crate::submit::{self, Api, percentile};
use crate::{ms, thousands};

pub async fn run(
    idp: &FakeIdp,
    smtp: &FakeSmtp,
    arrivals: &submit::Shared,
    backlog: usize,
    senders: usize,
    secs: u64,
) {
    // `big` starts disabled: the relay queues its mail and the scheduler holds it.
    let mut rows = vec![Row {
        name: "big".into(),
        tenant: OWN_TENANT.into(),
        user: FROM.into(),
        per_minute: 0,
        enabled: false,
    }];
    rows.extend((1..=senders).map(Row::numbered));
    let data = tokio::task::block_in_place(|| DataDir::import(idp, smtp, &rows));
    let password = tokio::task::block_in_place(|| data.relay_user("big", "big"));
    let key = tokio::task::block_in_place(|| data.api_key());
    let serve = Serve::start(&data).await;
    let api = Api::new(serve.http, key);
    let before = arrivals.lock().unwrap().of(FROM).0;

    let target = serve.relay_target(&data, "big", &password);
    let t = Instant::now();
    let queued = load::run(
        &target,
        Mode::ManyPerConnection,
        16,
        backlog,
        Duration::from_secs(600),
    )
    .await;
    let queued_in = t.elapsed();
    let early = arrivals.lock().unwrap().of(FROM).0 - before;
    tokio::task::block_in_place(|| data.cli(&["connection", "enable", "big"]));
    let enabled = Instant::now();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 1..=senders {
        let api = api.clone();
        let offset = Duration::from_millis((i as u64 * 1000) / senders as u64);
        tasks.spawn(async move {
            let mut sent = Vec::new();
            let mut errors = Vec::new();
            for k in 0..secs {
                tokio::time::sleep_until((enabled + offset + Duration::from_secs(k)).into()).await;
                let subject = format!("bench fair c{i} {k}");
                let t0 = Instant::now();
                match api.send(&format!("c{i}"), &subject).await {
                    Ok(()) => sent.push((subject, t0, t0.elapsed())),
                    Err(e) => errors.push(e),
                }
            }
            (sent, errors)
        });
    }
    let (mut sent, mut errors) = (Vec::new(), Vec::new());
    while let Some(r) = tasks.join_next().await {
        let (s, e) = r.expect("a sender panicked");
        sent.extend(s);
        errors.extend(e);
    }
    let all_small = submit::wait_until(arrivals, Duration::from_secs(120), |a| {
        sent.iter().all(|(s, _, _)| a.at(s).is_some())
    })
    .await;
    let want = before + queued.accepted as u64;
    let drained =
        submit::wait_until(arrivals, Duration::from_secs(600), |a| a.of(FROM).0 >= want).await;
    let (got, last_big) = arrivals.lock().unwrap().of(FROM);
    let drain_end = last_big.unwrap_or(enabled);

    let a = arrivals.lock().unwrap();
    let (mut during, mut after, mut all, mut accept) = (vec![], vec![], vec![], vec![]);
    // A connection's first message also pays its first token and its first upstream session.
    let (mut first, mut later, mut accept_during) = (vec![], vec![], vec![]);
    for (s, t0, accepted_in) in &sent {
        let Some(at) = a.at(s) else { continue };
        let latency = at.saturating_duration_since(*t0);
        all.push(latency);
        if s.ends_with(" 0") {
            first.push(latency);
        } else {
            later.push(latency);
        }
        accept.push(*accepted_in);
        if at <= drain_end {
            accept_during.push(*accepted_in);
            during.push(latency);
        } else {
            after.push(latency);
        }
    }
    drop(a);
    for v in [
        &mut during,
        &mut after,
        &mut all,
        &mut accept,
        &mut first,
        &mut later,
        &mut accept_during,
    ] {
        v.sort_unstable();
    }
    let p99 = percentile(&all, 0.99);
    println!(
        "\n== fairness: a backlog of {} on one connection, {senders} others sending 1 message/s for {secs} s ==\n\
         backlog: {} queued through the relay (16 sessions, connection disabled) in {:.1} s, {} errors ({} delivered early); \
         enabled, then drained in {:.1} s ({:.0} msg/s){}\n\
         others:  {} sent, {} refused{}, {} arrived{}\n\
         latency (API request sent → arrival at the fake SMTP): p50 {} p99 {} max {} (target p99 ≤ 1 s: {})\n\
         \x20        while the backlog drained: {} messages, p50 {} p99 {}; after: {} messages, p50 {} p99 {}\n\
         \x20        each connection's first message (token + session set-up): {} messages, p50 {} p99 {}; the others: p50 {} p99 {}\n\
         \x20        the API's own answer (202) took p50 {} p99 {} (while the backlog drained: p50 {} p99 {})",
        thousands(backlog as u64),
        thousands(queued.accepted as u64),
        queued_in.as_secs_f64(),
        queued.errors,
        early,
        drain_end.saturating_duration_since(enabled).as_secs_f64(),
        (got - before) as f64
            / drain_end
                .saturating_duration_since(enabled)
                .as_secs_f64()
                .max(1e-9),
        if drained {
            String::new()
        } else {
            format!(
                " — NOT DRAINED: {} of {} arrived",
                got - before,
                queued.accepted
            )
        },
        sent.len(),
        errors.len(),
        errors
            .first()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
        all.len(),
        if all_small {
            ""
        } else {
            " — SOME NEVER ARRIVED"
        },
        ms(percentile(&all, 0.5)),
        ms(p99),
        ms(all.last().copied().unwrap_or_default()),
        if p99 <= Duration::from_secs(1) {
            "met"
        } else {
            "MISSED"
        },
        during.len(),
        ms(percentile(&during, 0.5)),
        ms(percentile(&during, 0.99)),
        after.len(),
        ms(percentile(&after, 0.5)),
        ms(percentile(&after, 0.99)),
        first.len(),
        ms(percentile(&first, 0.5)),
        ms(percentile(&first, 0.99)),
        ms(percentile(&later, 0.5)),
        ms(percentile(&later, 0.99)),
        ms(percentile(&accept, 0.5)),
        ms(percentile(&accept, 0.99)),
        ms(percentile(&accept_during, 0.5)),
        ms(percentile(&accept_during, 0.99)),
    );
    if let Some(e) = &queued.first_error {
        println!("backlog: first relay error: {e}");
    }
    if !drained || !all_small {
        println!("serve's log ends:\n{}", serve.log_tail());
    }
}
