//! Floods of the HTTP side of the real `postern serve`: wrong API keys, large message
//! submissions, a dribbled body and OAuth callbacks with made-up state. The server's memory
//! stays bounded, the refusals say what to do, and the fake provider counts what got through.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::world::{Flow, Home, Providers, USER, figure, follow_redirect, http};

const MIB: u64 = 1024 * 1024;

async fn world(flow: Flow) -> (Providers, Home) {
    let p = Providers::start().await;
    let mut home = Home::new(None);
    home.setup(&p, flow).await;
    (p, home)
}

/// Creates an API key with `role`; returns it.
fn api_key(home: &mut Home, name: &str, role: &str) -> String {
    let out = home.run(&["api-key", "create", name, "--role", role]);
    out.lines()
        .map(str::trim)
        .find(|l| l.starts_with("pk_"))
        .expect("the new API key")
        .to_string()
}

/// A random token of `len` URL-safe characters.
fn random(len: usize) -> String {
    let mut s = String::new();
    while s.len() < len {
        s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    s.truncate(len);
    s
}

fn mib(kib: u64) -> u64 {
    kib >> 10
}

/// What the server answered a hand-written request.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

/// `POST /api/v1/messages` written by hand, so a large body can be shared between requests
/// (`parts` are written one after the other) and written at any pace. The reply is read while
/// the body is still going out: a refusal may come before the body is read.
async fn submit(
    addr: SocketAddr,
    key: &str,
    content_type: &str,
    parts: Vec<Bytes>,
    pace: Option<(usize, Duration)>,
    timeout: Duration,
) -> Result<Answer, String> {
    let len: usize = parts.iter().map(Bytes::len).sum();
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "POST /api/v1/messages HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\n\
         content-type: {content_type}\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
    );
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        for part in parts {
            match pace {
                None => wr.write_all(&part).await?,
                Some((chunk, every)) => {
                    for c in part.chunks(chunk) {
                        wr.write_all(c).await?;
                        tokio::time::sleep(every).await;
                    }
                }
            }
        }
        // Dropping the write half would half-close the connection, which hyper takes as the
        // client going away: hold it until the reply is read.
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(())
    });
    let mut reply = Vec::new();
    let read = tokio::time::timeout(timeout, rd.read_to_end(&mut reply)).await;
    writer.abort();
    if read.is_err() {
        return Err(format!("no answer within {timeout:?}"));
    }
    let text = String::from_utf8_lossy(&reply).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or(format!("no reply: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(format!("no status: {head}"))?;
    let retry_after = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("retry-after")
            .then(|| value.trim().to_string())
    });
    Ok(Answer {
        status,
        retry_after,
        body: body.to_string(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_api_keys_stays_cheap_and_the_right_key_gets_through() {
    let n = figure("HTTP_FLOOD_WRONG_KEYS", 300) as usize;
    let (_p, mut home) = world(Flow::ClientCredentials).await;
    let key = api_key(&mut home, "app", "send");
    let server = home.serve();
    let url = format!("http://{}/api/v1/messages", server.http);
    let (peak_before, _) = server.memory_kib();

    let client = http();
    let started = Instant::now();
    let mut storm = tokio::task::JoinSet::new();
    for i in 0..n {
        // Mostly well-formed keys (each costs the server a lookup), some plain garbage.
        let wrong = if i % 5 == 0 {
            random(20)
        } else {
            format!("pk_{}", random(43))
        };
        let (client, url) = (client.clone(), url.clone());
        storm.spawn(async move {
            match client.get(&url).bearer_auth(wrong).send().await {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            }
        });
    }
    // The right key, while the storm is on.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let asked = Instant::now();
    let right = client.get(&url).bearer_auth(&key).send().await;
    let right_took = asked.elapsed();
    let right = right.map(|r| r.status().as_u16()).unwrap_or(0);
    let mut answers: BTreeMap<u16, usize> = BTreeMap::new();
    while let Some(status) = storm.join_next().await {
        *answers.entry(status.unwrap()).or_default() += 1;
    }
    let took = started.elapsed();
    let (peak, rss) = server.memory_kib();
    println!(
        "http flood: wrong API keys: {n} at once answered {answers:?} in {:.2}s ({:.0}/s); \
         the right key answered {right} in {} ms; serve peak RSS {} MiB (before {} MiB, now {} MiB)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        right_took.as_millis(),
        mib(peak),
        mib(peak_before),
        mib(rss)
    );
    assert!(
        answers.keys().all(|s| [401, 429, 503].contains(s)),
        "every wrong key is refused: {answers:?}"
    );
    assert_eq!(right, 200, "the right key during the storm");
    assert!(right_took < Duration::from_secs(2), "{right_took:?}");
    assert!(peak <= 64 * 1024, "serve peak RSS {} MiB", mib(peak));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_from_unknown_callers_are_never_buffered() {
    let n = figure("HTTP_FLOOD_WRONG_KEYS", 300) as usize / 3;
    let (_p, home) = world(Flow::ClientCredentials).await;
    let server = home.serve();
    let (peak_before, _) = server.memory_kib();
    // Large submissions with wrong keys: refused before their bodies are read.
    let body = message_body(8 * MIB);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (addr, body) = (server.http, body.clone());
        tasks.spawn(async move {
            let key = format!("pk_{}", random(43));
            submit(
                addr,
                &key,
                "message/rfc822",
                vec![body],
                None,
                Duration::from_secs(30),
            )
            .await
            .map(|a| a.status)
        });
    }
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let key = match done.unwrap() {
            Ok(status) => status.to_string(),
            // The server may close before the client has written its whole body.
            Err(_) => "closed".to_string(),
        };
        *answers.entry(key).or_default() += 1;
    }
    let took = started.elapsed();
    // The login form, the one body read before anyone is known, is small.
    let login = http()
        .post(format!("http://{}/admin/login", server.http))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username=admin&password={}", "x".repeat(64 * 1024)))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    let (peak, _) = server.memory_kib();
    println!(
        "http flood: unknown callers: {n} x 8 MiB submissions with wrong keys answered {answers:?} \
         in {:.2}s; a 64 KiB login form: {login}; serve peak RSS {} MiB (before {} MiB)",
        took.as_secs_f64(),
        mib(peak),
        mib(peak_before)
    );
    assert!(
        answers.keys().all(|k| k == "401" || k == "closed"),
        "{answers:?}"
    );
    assert!(answers.contains_key("401"), "{answers:?}");
    assert_eq!(login, 413);
    assert!(peak <= 64 * 1024, "serve peak RSS {} MiB", mib(peak));
}

/// A ready message of about `size` bytes: 76-character lines, the same for every request.
fn message_body(size: u64) -> Bytes {
    let line: Vec<u8> = (0..76u8)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[usize::from(i) % 36])
        .chain(*b"\r\n")
        .collect();
    let mut body = Vec::with_capacity(size as usize + 78);
    let mut n = 0u64;
    while (body.len() as u64) < size {
        // Vary the lines so a shifted copy could not compare equal.
        let mut l = line.clone();
        l[..8].copy_from_slice(format!("{:08}", n % 100_000_000).as_bytes());
        body.extend_from_slice(&l);
        n += 1;
    }
    Bytes::from(body)
}

/// The bytes after the header block.
fn after_headers(data: &[u8]) -> &[u8] {
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    &data[end + 4..]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_submissions_stay_within_the_memory_budget() {
    let n = figure("HTTP_FLOOD_MESSAGES", 12);
    let size = figure("HTTP_FLOOD_MESSAGE_MIB", 4) * MIB;
    let budget_mib = figure("HTTP_FLOOD_BUDGET_MIB", 32);
    let (p, mut home) = world(Flow::ClientCredentials).await;
    let key = api_key(&mut home, "bulk", "send");
    home.set_env(
        "POSTERN_SERVER__HTTP_MESSAGE_MEMORY_BUDGET",
        &(budget_mib * MIB).to_string(),
    );
    let server = home.serve();
    // Warm up (first token, first message) so the baseline includes the steady state.
    let small = submit(
        server.http,
        &key,
        "message/rfc822",
        vec![Bytes::from(format!(
            "From: {USER}\r\nTo: rcpt@example.org\r\nSubject: warm-up\r\n\r\nhello\r\n"
        ))],
        None,
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(small.status, 202, "{small:?}");
    assert!(p.smtp.wait_for_count(1, Duration::from_secs(30)).await);
    // Postern has recorded it as sent: disabling the connection now cuts no delivery short.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.messages_with_status("sent").await < 1 {
        assert!(
            Instant::now() < deadline,
            "the warm-up is not recorded as sent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection is disabled while the flood comes in: its mail waits in the store (held),
    // so the submissions' memory is measured on its own; deliveries follow when it is enabled.
    home.run(&["connection", "disable", "fake"]);
    // The delivery worker notices at its next look at the store.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (baseline, _) = server.memory_kib();

    // Half raw messages, half JSON with the message as a base64 attachment: the same large
    // part for every request, a small unique part in front.
    let raw = message_body(size);
    let attachment = message_body(size * 3 / 4);
    let encoded = Bytes::from(STANDARD.encode(&attachment));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let json = i % 2 == 1;
        let parts = if json {
            vec![
                Bytes::from(format!(
                    "{{\"to\":[\"rcpt@example.org\"],\"subject\":\"flood {i}\",\"text\":\"see the attachment\",\
                     \"attachments\":[{{\"filename\":\"blob.bin\",\"content\":\""
                )),
                encoded.clone(),
                Bytes::from_static(b"\"}]}"),
            ]
        } else {
            vec![
                Bytes::from(format!(
                    "From: {USER}\r\nTo: rcpt@example.org\r\nSubject: flood {i}\r\n\r\n"
                )),
                raw.clone(),
            ]
        };
        let content_type = if json {
            "application/json"
        } else {
            "message/rfc822"
        };
        let (addr, key) = (server.http, key.clone());
        tasks.spawn(async move {
            let answer = submit(
                addr,
                &key,
                content_type,
                parts,
                None,
                Duration::from_secs(120),
            )
            .await;
            (i, answer)
        });
    }
    let mut accepted = Vec::new();
    let mut refused = 0;
    while let Some(done) = tasks.join_next().await {
        let (i, answer) = done.unwrap();
        let answer = answer.unwrap_or_else(|e| panic!("submission {i}: {e}"));
        match answer.status {
            202 => accepted.push(i),
            503 | 429 => {
                assert!(answer.retry_after.is_some(), "{answer:?}");
                assert!(
                    answer.body.contains("http_message_memory_budget"),
                    "{answer:?}"
                );
                refused += 1;
            }
            _ => panic!("submission {i}: {answer:?}"),
        }
    }
    let took = started.elapsed();
    let (peak_submitted, _) = server.memory_kib();
    home.run(&["connection", "enable", "fake"]);

    let expected = 1 + accepted.len() as u64;
    assert!(
        p.smtp
            .wait_for_count(expected, Duration::from_secs(60 + 5 * expected))
            .await,
        "{} of {expected} delivered",
        p.smtp.messages().len()
    );
    let delivered = p.smtp.messages();
    for &i in &accepted {
        let marker = format!("Subject: flood {i}\r\n");
        let m = delivered
            .iter()
            .find(|m| {
                m.data
                    .windows(marker.len())
                    .take(64 * 1024)
                    .any(|w| w == marker.as_bytes())
            })
            .unwrap_or_else(|| {
                let heads: Vec<String> = delivered
                    .iter()
                    .map(|m| String::from_utf8_lossy(&m.data[..m.data.len().min(300)]).into_owned())
                    .collect();
                panic!("submission {i} was accepted but not delivered: {heads:#?}")
            });
        if i % 2 == 1 {
            let parsed = mail_parser::MessageParser::default()
                .parse(&m.data)
                .expect("a MIME message");
            let att = parsed.attachment(0).expect("the attachment");
            assert!(att.contents() == &attachment[..], "attachment {i} intact");
        } else {
            assert!(
                after_headers(&m.data).starts_with(&raw),
                "message {i} intact"
            );
        }
    }
    let (peak, _) = server.memory_kib();
    // Receiving may hold the budget, plus a little per connection (hyper's buffers, tasks).
    let budget = budget_mib * 1024;
    let slack = 8 * 1024;
    // Delivering is the outbox's business, not the budget's: a sender holds one batch, its
    // bodies within `CLAIM_BYTES` (8 MiB) or one bigger message alone (`outbox/worker.rs`), so
    // 16 of these messages is a generous allowance; the one being sent is encoded, and the
    // claim query briefly holds a row twice (SQLite's copy and ours): three more.
    let in_batch = (accepted.len() as u64).min(16);
    let delivery = (in_batch + 3) * size / 1024;
    let grown = peak.saturating_sub(baseline);
    let grown_submitting = peak_submitted.saturating_sub(baseline);
    println!(
        "http flood: large messages: {n} x {} MiB at once: {} accepted (all delivered intact), \
         {refused} refused with 503 + Retry-After, in {:.1}s",
        size / MIB,
        accepted.len(),
        took.as_secs_f64()
    );
    println!(
        "http flood: large messages: serve peak RSS {} MiB before, +{} MiB while receiving \
         (connection disabled; bound: budget {budget_mib} MiB + {} MiB), +{} MiB more once \
         delivering (bound: {} messages of {} MiB in a delivery batch, + 3 in flight = {} MiB)",
        mib(baseline),
        mib(grown_submitting),
        mib(slack),
        mib(grown - grown_submitting),
        in_batch,
        size / MIB,
        mib(delivery),
    );
    assert!(!accepted.is_empty(), "nothing accepted");
    assert!(
        grown_submitting <= budget + slack,
        "receiving grew serve by {} MiB",
        mib(grown_submitting)
    );
    assert!(
        grown <= budget + slack + delivery,
        "serve grew by {} MiB",
        mib(grown)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dribbled_body_is_cut_off_and_gives_its_room_back() {
    let (p, mut home) = world(Flow::ClientCredentials).await;
    let key = api_key(&mut home, "slow", "send");
    home.set_env(
        "POSTERN_SERVER__HTTP_MESSAGE_MEMORY_BUDGET",
        &(8 * MIB).to_string(),
    );
    home.set_env("POSTERN_SERVER__HTTP_REQUEST_TIMEOUT_SECS", "3");
    home.set_env("POSTERN_SERVER__HTTP_IDLE_TIMEOUT_SECS", "10");
    let server = home.serve();
    let small = || {
        vec![Bytes::from(format!(
            "From: {USER}\r\nTo: rcpt@example.org\r\nSubject: after the dribble\r\n\r\nhello\r\n"
        ))]
    };

    // 4 MiB announced (its reservation takes the whole 8 MiB budget), sent at 10 kB/s.
    let started = Instant::now();
    let dribbler = {
        let (addr, key) = (server.http, key.clone());
        tokio::spawn(async move {
            let head = Bytes::from(format!(
                "From: {USER}\r\nTo: rcpt@example.org\r\nSubject: dribble\r\n\r\n"
            ));
            let answer = submit(
                addr,
                &key,
                "message/rfc822",
                vec![head, message_body(4 * MIB)],
                Some((1000, Duration::from_millis(100))),
                Duration::from_secs(20),
            )
            .await;
            (answer, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    let meanwhile = submit(
        server.http,
        &key,
        "message/rfc822",
        small(),
        None,
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    let waited = asked.elapsed();
    let (dribbled, cut_after) = dribbler.await.unwrap();
    let dribbled = dribbled.unwrap();
    let after = submit(
        server.http,
        &key,
        "message/rfc822",
        small(),
        None,
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    println!(
        "http flood: dribbled body: answered {} after {:.1}s; a submission meanwhile got {} \
         (Retry-After {:?}) after {:.1}s; one after it got {}",
        dribbled.status,
        cut_after.as_secs_f64(),
        meanwhile.status,
        meanwhile.retry_after,
        waited.as_secs_f64(),
        after.status
    );
    assert_eq!(meanwhile.status, 503, "{meanwhile:?}");
    assert!(meanwhile.retry_after.is_some(), "{meanwhile:?}");
    assert!(
        meanwhile.body.contains("http_message_memory_budget"),
        "{meanwhile:?}"
    );
    assert!(waited < Duration::from_secs(4), "a short wait: {waited:?}");
    assert_eq!(dribbled.status, 408, "{dribbled:?}");
    assert!(cut_after < Duration::from_secs(6), "{cut_after:?}");
    assert_eq!(after.status, 202, "the room came back: {after:?}");
    assert!(p.smtp.wait_for_count(1, Duration::from_secs(30)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(p.smtp.messages().len(), 1, "only the complete message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth_callback_flood_never_reaches_the_token_endpoint() {
    let n = figure("HTTP_FLOOD_CALLBACKS", 500) as usize;
    let (p, mut home) = world(Flow::AuthorizationCode).await;
    let admin = api_key(&mut home, "ops", "admin");
    let server = home.serve();
    let base = format!("http://{}", server.http);
    // A real consent in progress: it must survive the flood.
    let started: serde_json::Value = http()
        .post(format!("{base}/api/v1/connections/fake/authorize"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let authorize_url = started["authorize_url"].as_str().unwrap().to_string();
    let tokens_before = p.idp.counters().total;
    let (peak_before, _) = server.memory_kib();

    let t = Instant::now();
    let client = http();
    let answers: Vec<u16> = futures::stream::iter(0..n)
        .map(|i| {
            let query = match i % 4 {
                0 => format!("state={}&code={}", random(43), random(40)),
                1 => format!("code={}", random(40)),
                2 => format!("state={}&error=access_denied", random(43)),
                _ => format!("state={}&code={}", random(4000), random(4000)),
            };
            let (client, url) = (client.clone(), format!("{base}/oauth/callback?{query}"));
            async move {
                match client.get(url).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                }
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let took = t.elapsed();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for s in answers {
        *statuses.entry(s).or_default() += 1;
    }
    let tokens_after_flood = p.idp.counters().total;
    let health = http()
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    let (peak, rss) = server.memory_kib();

    // The real consent still completes, with one token request.
    let callback = follow_redirect(&authorize_url).await;
    let done = http().get(&callback).send().await.unwrap();
    let done_status = done.status().as_u16();
    let tokens_end = p.idp.counters().total;
    println!(
        "http flood: OAuth callbacks: {n} with made-up state answered {statuses:?} in {:.2}s \
         ({:.0}/s); token requests during the flood: {}; /healthz {health}; serve peak RSS {} MiB \
         (before {} MiB, now {} MiB); the real consent afterwards: {done_status}, {} token request",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        tokens_after_flood - tokens_before,
        mib(peak),
        mib(peak_before),
        mib(rss),
        tokens_end - tokens_after_flood
    );
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        vec![400],
        "{statuses:?}"
    );
    assert_eq!(tokens_after_flood, tokens_before, "no token request");
    assert_eq!(health, 200);
    assert!(peak <= 64 * 1024, "serve peak RSS {} MiB", mib(peak));
    assert_eq!(done_status, 200, "the real consent completes");
    assert_eq!(tokens_end, tokens_after_flood + 1);
}
