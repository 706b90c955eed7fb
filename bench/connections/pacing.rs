//! Pacing: a connection limited to N messages a minute sends many; how long they took against
//! the expected time, and the most that arrived in any one minute (never more than N).

use std::time::{Duration, Instant};

use fake_provider::{FakeIdp, FakeSmtp};

use crate::serve::{DataDir, OWN_TENANT, Row, Serve};
use crate::submit::{self, Api};

pub async fn run(
    idp: &FakeIdp,
    smtp: &FakeSmtp,
    arrivals: &submit::Shared,
    per_minute: u32,
    count: usize,
) {
    let rows = [Row {
        name: "paced".into(),
        tenant: OWN_TENANT.into(),
        user: "paced@contoso.example".into(),
        per_minute,
        enabled: true,
    }];
    let data = tokio::task::block_in_place(|| DataDir::import(idp, smtp, &rows));
    let key = tokio::task::block_in_place(|| data.api_key());
    let serve = Serve::start(&data).await;
    let api = Api::new(serve.http, key);
    let expected = Duration::from_secs_f64(count as f64 * 60.0 / per_minute as f64);

    let t0 = Instant::now();
    let mut errors = 0;
    for k in 0..count {
        if api
            .send("paced", &format!("bench paced {k}"))
            .await
            .is_err()
        {
            errors += 1;
        }
    }
    let submitted_in = t0.elapsed();
    let sent = count - errors;
    let all = submit::wait_until(arrivals, expected * 2 + Duration::from_secs(60), |a| {
        a.times("bench paced ").len() >= sent
    })
    .await;
    let times = arrivals.lock().unwrap().times("bench paced ");
    let took = times
        .last()
        .map_or(Duration::ZERO, |l| l.saturating_duration_since(t0));
    // The most arrivals within any 60 s (the window starting at each arrival).
    let window = Duration::from_secs(60);
    let most = (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|&&t| t - times[i] < window)
                .count()
        })
        .max()
        .unwrap_or(0);
    // The closest two arrivals came (the interval is 60 s / the limit).
    let closest = times
        .windows(2)
        .map(|w| w[1].saturating_duration_since(w[0]))
        .min()
        .unwrap_or_default();
    let interval = Duration::from_secs(60) / per_minute;
    let off = (took.as_secs_f64() / expected.as_secs_f64() - 1.0) * 100.0;
    let verdict = if off < -2.0 {
        "MISSED: faster than the limit"
    } else if most > per_minute as usize {
        "MISSED: more than the limit within 60 s"
    } else if off > 2.0 {
        "MISSED: slower"
    } else {
        "met"
    };
    println!(
        "\n== pacing: messages-per-minute={per_minute}, {count} messages ==\n\
         submitted in {:.2} s ({errors} refused); {} arrived{}\n\
         first request → last arrival: {:.1} s, expected {:.1} s ({off:+.2} %; target ±2 %, never more than the limit in any 60 s: {verdict})\n\
         most arrivals in any 60 s: {most} (limit {per_minute}); closest two arrivals {:.3} s apart (interval {:.3} s)",
        submitted_in.as_secs_f64(),
        times.len(),
        if all { "" } else { " — NOT ALL ARRIVED" },
        took.as_secs_f64(),
        expected.as_secs_f64(),
        closest.as_secs_f64(),
        interval.as_secs_f64(),
    );
}
