//! Outages: the provider's SMTP server, then its token endpoint, go away and come back.
//! Messages wait and are all delivered afterwards; no message fails, no token is lost.
//! Figures: `PROVE_OUTAGE_SECS` (default 6; the run: 60), `PROVE_OUTAGE_MESSAGES` (20).

use std::time::{Duration, Instant};

use fake_provider::idp::InjectedError;

use crate::client::{Client, message, trusting};
use crate::world::{Flow, Home, Providers, Server, USER, figure};

/// Submits `count` messages marked `{prefix}-{i}` over one session; all must get 250.
pub(crate) async fn submit(server: &Server, home: &Home, prefix: &str, count: u64) {
    let tls = trusting(&home.data_dir.join("relay-cert.pem"));
    let mut c = Client::submission(server.relay, &tls, "app", &home.relay_password)
        .await
        .unwrap();
    for i in 0..count {
        let r = c
            .send_mail(USER, "rcpt@example.org", &message(&format!("{prefix}-{i}")))
            .await
            .unwrap();
        assert_eq!(
            r.code, 250,
            "the relay accepts while the provider is away: {r}"
        );
    }
    c.quit().await;
}

/// Waits (bounded) until Postern has recorded `n` messages as sent.
async fn sent_recorded(server: &Server, n: u64) {
    let started = Instant::now();
    while server.messages_with_status("sent").await < n {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the deliveries were not recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until the provider has `n` messages; returns how long that took.
async fn all_arrive(p: &Providers, n: u64, limit: Duration) -> Duration {
    let started = Instant::now();
    assert!(
        p.smtp.wait_for_count(n, limit).await,
        "only {} of {n} messages arrived within {limit:?}",
        p.smtp.counters().messages
    );
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_then_back_delivers_everything() {
    let secs = figure("PROVE_OUTAGE_SECS", 6);
    let count = figure("PROVE_OUTAGE_MESSAGES", 20);
    let p = Providers::start().await;
    let mut home = Home::new(None);
    home.setup(&p, Flow::ClientCredentials).await;
    let server = home.serve();
    submit(&server, &home, "before", 2).await;
    all_arrive(&p, 2, Duration::from_secs(30)).await;
    // Arrived is not yet recorded: cut the provider off before Postern has read its `250`
    // and the message is sent again later (at-least-once), which this test does not measure.
    sent_recorded(&server, 2).await;

    // Half the outage: connection refused. The other half: the server answers 421.
    p.smtp_gate.close();
    submit(&server, &home, "refused", count / 2).await;
    tokio::time::sleep(Duration::from_secs(secs / 2)).await;
    let waiting_midway = waiting(&server).await;
    p.smtp.set_down(true);
    p.smtp_gate.reopen().await;
    submit(&server, &home, "421", count - count / 2).await;
    tokio::time::sleep(Duration::from_secs(secs - secs / 2)).await;
    let during = p.smtp.counters();
    assert_eq!(
        during.messages, 2,
        "nothing is delivered while the provider is down"
    );
    p.smtp.set_down(false);
    let recovered_in = all_arrive(&p, 2 + count, Duration::from_secs(60)).await;

    let failed = server.messages_with_status("failed").await;
    let attempts = attempts(&server.metrics().await);
    println!(
        "provider down {secs}s ({}s refused, {}s 421): {count} messages queued ({waiting_midway} \
         waiting midway), {} connections greeted with 421, all {count} delivered {:.1}s after \
         recovery, failed {failed}; attempts by outcome {attempts:?}",
        secs / 2,
        secs - secs / 2,
        during.connections,
        recovered_in.as_secs_f64()
    );
    assert_eq!(failed, 0, "no message is marked failed");
    assert_eq!(p.smtp.counters().messages, 2 + count, "no duplicates");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_down_keeps_tokens_and_resumes() {
    let secs = figure("PROVE_OUTAGE_SECS", 6);
    let count = figure("PROVE_OUTAGE_MESSAGES", 20);
    let p = Providers::start().await;
    let mut home = Home::new(None);
    home.setup(&p, Flow::AuthorizationCode).await;
    let server = home.serve();
    submit(&server, &home, "before", 1).await;
    all_arrive(&p, 1, Duration::from_secs(30)).await;
    let refreshes_before = p.idp.counters().refresh_token;

    // Every access token stops working, so Postern must go to the token endpoint, which is
    // refusing connections, then answering 503, then 429 with Retry-After.
    p.idp.revoke_all_access_tokens();
    p.idp_gate.close();
    // Cut the authenticated sessions Postern keeps open, so the next delivery must log in.
    p.smtp_gate.close();
    p.smtp_gate.reopen().await;
    submit(&server, &home, "refused", count / 2).await;
    tokio::time::sleep(Duration::from_secs(secs / 2)).await;
    p.idp.set_down(true);
    p.idp_gate.reopen().await;
    submit(&server, &home, "503", count - count / 2).await;
    tokio::time::sleep(Duration::from_secs(secs - secs / 2)).await;
    // Refused and 503 phases over: nothing can have been delivered without a token.
    let during_outage = p.smtp.counters().messages - 1;
    let shown = connection_json(&mut home);
    // Back, but the first three token requests get 429 with Retry-After.
    p.idp.inject(3, InjectedError::http(429, Some(1)));
    p.idp.set_down(false);
    let recovered_in = all_arrive(&p, 1 + count, Duration::from_secs(60)).await;

    let throttled = p
        .idp
        .token_requests()
        .iter()
        .filter(|r| r.status == 429)
        .count();
    let failed = server.messages_with_status("failed").await;
    println!(
        "token endpoint down {secs}s ({}s refused, {}s 503, then 3 x 429): {count} messages \
         waited ({during_outage} delivered during the outage), token requests answered 429 \
         {throttled}, refreshes {}, all delivered {:.1}s after recovery, failed {failed}; status during the outage: {} \
         (refresh token {})",
        secs / 2,
        secs - secs / 2,
        p.idp.counters().refresh_token - refreshes_before,
        recovered_in.as_secs_f64(),
        shown["status"],
        shown["refresh_token"]
    );
    assert_eq!(during_outage, 0, "no token, no delivery");
    assert_eq!(shown["status"], "authorized", "{shown}");
    assert_eq!(shown["refresh_token"], "set", "{shown}");
    let after = connection_json(&mut home);
    assert_eq!(after["status"], "authorized", "{after}");
    assert_eq!(after["refresh_token"], "set", "{after}");
    assert_eq!(failed, 0);
    assert!(p.idp.counters().refresh_token > refreshes_before);
    server.stop();
}

/// Messages waiting for a retry or their first try.
async fn waiting(server: &Server) -> u64 {
    let mut n = 0;
    for status in ["queued", "deferred", "sending"] {
        n += server.messages_with_status(status).await;
    }
    n
}

fn connection_json(home: &mut Home) -> serde_json::Value {
    let out = home.run(&["connection", "show", "fake", "--json"]);
    serde_json::from_str(&out).expect("connection show --json")
}

/// `postern_delivery_attempts_total` by outcome.
fn attempts(metrics: &str) -> Vec<(String, u64)> {
    metrics
        .lines()
        .filter(|l| l.starts_with("postern_delivery_attempts_total{"))
        .filter_map(|l| {
            let outcome = l.split("outcome=\"").nth(1)?.split('"').next()?;
            Some((outcome.to_string(), l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}
