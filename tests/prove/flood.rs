//! Floods against the real `postern serve`: thousands of slow or silent sessions (slowloris),
//! hundreds of STARTTLS handshakes at once, and hundreds of big messages at once. Each test
//! spends a resource all at once and checks the refusal, the serve process's peak memory, and
//! that legitimate mail still gets through intact. Figures are printed on `flood:` lines.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::client::{Client, message, trusting};
use crate::world::{Flow, Home, Providers, USER, figure};

async fn world() -> (Providers, Home) {
    let p = Providers::start().await;
    let mut home = Home::new(None);
    home.setup(&p, Flow::ClientCredentials).await;
    (p, home)
}

/// The `i`-th of many loopback client addresses (127.1.0.0/16), so the relay sees many clients.
fn source(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250) as u8 + 1))
}

async fn connect_from(addr: SocketAddr, src: IpAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src, 0))?;
    tokio::time::timeout(Duration::from_secs(30), socket.connect(addr))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))?
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// How a slowloris session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    /// `421 4.7.0` instead of a greeting: no slot.
    Refused,
    /// `421 4.4.2` after this long: the relay gave up on it.
    TimedOut(Duration),
    /// Closed without the timeout reply, or some other answer.
    Other(String),
    /// Still open when the test stopped waiting.
    Held,
}

/// Connects, then either says nothing (`dribble` false) or sends `EHLO` one byte every
/// `every`, never completing a line in time; reads whatever the relay says.
async fn slowloris(addr: SocketAddr, src: IpAddr, dribble: bool, every: Duration) -> Ending {
    let mut tcp = match connect_from(addr, src).await {
        Ok(t) => t,
        Err(e) => return Ending::Other(format!("connect: {e}")),
    };
    let started = Instant::now();
    let line = b"EHLO slowloris.example\r\n";
    let mut heard = Vec::new();
    let mut buf = [0u8; 512];
    let mut next = 0;
    let give_up = started + Duration::from_secs(150);
    loop {
        let tick = tokio::time::sleep(every);
        tokio::select! {
            r = tcp.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    let text = String::from_utf8_lossy(&heard).into_owned();
                    return if text.starts_with("421 4.7.0") {
                        Ending::Refused
                    } else if text.contains("421 4.4.2") {
                        Ending::TimedOut(started.elapsed())
                    } else {
                        Ending::Other(text)
                    };
                }
                Ok(n) => heard.extend_from_slice(&buf[..n]),
            },
            () = tick => {
                if Instant::now() > give_up {
                    return Ending::Held;
                }
                if dribble && heard.starts_with(b"220 ") {
                    let _ = tcp.write_all(&line[next % line.len()..][..1]).await;
                    next += 1;
                }
            }
        }
    }
}

/// Submits one message, retrying (bounded) while the relay says 421 or the connection fails.
async fn legit(server: SocketAddr, password: &str, marker: &str) -> (u32, Duration) {
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the legitimate client got no slot in 120 s ({attempts} attempts)"
        );
        let Ok(mut c) = Client::connect(server).await else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        if c.greeting.code != 220 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let sent = async {
            c.expect("EHLO legit.example", 250).await?;
            let r = c.auth_plain("app", password).await?;
            assert_eq!(r.code, 235, "{r}");
            c.send_mail(USER, "rcpt@example.org", &message(marker))
                .await
        };
        match sent.await {
            Ok(r) if r.code == 250 => return (attempts, started.elapsed()),
            Ok(r) => panic!("the legitimate message was refused: {r}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_sessions_are_refused_or_timed_out_and_mail_still_flows() {
    let sessions = figure("FLOOD_SLOWLORIS", 400) as usize;
    let slots = figure("FLOOD_SLOWLORIS_SLOTS", (sessions * 3 / 4) as u64) as usize;
    let (p, mut home) = world().await;
    home.set_env("POSTERN_SERVER__MAX_CONNECTIONS", &slots.to_string());
    let server = home.serve();
    let (peak_before, _) = server.memory_kib();

    let started = Instant::now();
    let connected = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..sessions {
        let (addr, connected) = (server.relay, Arc::clone(&connected));
        tasks.push(tokio::spawn(async move {
            let ending = slowloris(addr, source(i), i % 2 == 0, Duration::from_secs(2));
            connected.fetch_add(1, Ordering::Relaxed);
            ending.await
        }));
        // A burst, not a wall: let the accept loop keep up.
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let opened = started.elapsed();
    // Every slot is held now: a legitimate client has to wait for stress mode to free one.
    let (attempts, waited) = legit(server.relay, &home.relay_password, "flood-legit").await;
    let mut endings = Vec::new();
    for t in tasks {
        endings.push(t.await.unwrap());
    }
    let (peak, rss) = server.memory_kib();
    let refused = endings.iter().filter(|e| **e == Ending::Refused).count();
    let mut timed: Vec<Duration> = endings
        .iter()
        .filter_map(|e| match e {
            Ending::TimedOut(d) => Some(*d),
            _ => None,
        })
        .collect();
    timed.sort();
    let held = endings.iter().filter(|e| **e == Ending::Held).count();
    let other: Vec<&Ending> = endings
        .iter()
        .filter(|e| matches!(e, Ending::Other(_)))
        .collect();
    let secs = |d: Option<&Duration>| d.map_or(0.0, Duration::as_secs_f64);
    println!(
        "flood: slowloris {sessions} sessions (half silent, half 1 byte/2 s) against {slots} slots, \
         opened in {:.1} s: {refused} refused 421 4.7.0, {} timed out 421 4.4.2 (median {:.1} s, \
         max {:.1} s), {held} still held, {} other",
        opened.as_secs_f64(),
        timed.len(),
        secs(timed.get(timed.len() / 2)),
        secs(timed.last()),
        other.len()
    );
    println!(
        "flood: slowloris legitimate client delivered after {:.1} s and {attempts} attempts",
        waited.as_secs_f64()
    );
    println!(
        "flood: slowloris serve peak RSS {:.1} MiB (before {:.1} MiB, now {:.1} MiB)",
        mib(peak),
        mib(peak_before),
        mib(rss)
    );
    assert!(other.is_empty(), "unexpected endings: {other:?}");
    assert_eq!(held, 0, "sessions still held after 150 s");
    if sessions > slots {
        assert!(refused > 0, "nobody beyond max_connections was refused");
    }
    assert_eq!(refused + timed.len(), sessions);
    assert!(
        peak < 64 * 1024,
        "serve peak RSS {:.1} MiB over 64 MiB",
        mib(peak)
    );
    assert!(
        p.smtp.wait_for_count(1, Duration::from_secs(30)).await,
        "the legitimate message never reached the provider"
    );
    assert_eq!(p.count_with("flood-legit"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_starttls_handshakes_at_once_complete_or_are_refused() {
    let clients = figure("FLOOD_TLS", 100) as usize;
    let (_p, home) = world().await;
    let server = home.serve();
    let tls = trusting(&home.data_dir.join("relay-cert.pem"));
    let (peak_before, _) = server.memory_kib();

    let started = Instant::now();
    let ready = Arc::new(AtomicUsize::new(0));
    let (release, released) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (addr, tls, ready) = (server.relay, tls.clone(), Arc::clone(&ready));
        let mut released = released.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect_from(addr, source(i))
                .await
                .map_err(|e| e.0)?;
            if c.greeting.code == 421 {
                ready.fetch_add(1, Ordering::Relaxed);
                return Ok::<_, String>(false);
            }
            c.expect("EHLO tls.example", 250).await.map_err(|e| e.0)?;
            c.starttls(&tls).await.map_err(|e| e.0)?;
            c.expect("EHLO tls.example", 250).await.map_err(|e| e.0)?;
            ready.fetch_add(1, Ordering::Relaxed);
            // Hold the session (all of them open together) until the memory is read.
            let _ = tokio::time::timeout(Duration::from_secs(60), released.wait_for(|r| *r)).await;
            c.quit().await;
            Ok(true)
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    while ready.load(Ordering::Relaxed) < clients && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let handshaken = started.elapsed();
    let (peak, rss) = server.memory_kib();
    release.send_replace(true);
    let (mut done, mut refused, mut failed) = (0, 0, Vec::new());
    for t in tasks {
        match t.await.unwrap() {
            Ok(true) => done += 1,
            Ok(false) => refused += 1,
            Err(e) => failed.push(e),
        }
    }
    println!(
        "flood: starttls {clients} clients at once: {done} encrypted sessions, {refused} refused \
         421, {} failed, in {:.1} s",
        failed.len(),
        handshaken.as_secs_f64()
    );
    println!(
        "flood: starttls serve peak RSS {:.1} MiB (before {:.1} MiB, with all sessions open \
         {:.1} MiB): {:.0} KiB per encrypted session",
        mib(peak),
        mib(peak_before),
        mib(rss),
        (peak.saturating_sub(peak_before)) as f64 / done.max(1) as f64
    );
    assert!(failed.is_empty(), "handshakes failed: {failed:?}");
    assert_eq!(done + refused, clients);
    // Each encrypted session costs rustls buffers and the session: well under 256 KiB.
    assert!(
        peak < peak_before + 256 * clients as u64 + 16 * 1024,
        "serve peak RSS {:.1} MiB",
        mib(peak)
    );
}

/// The headers of big message `marker`; its body follows in [`body_chunk`]s.
fn big_headers(marker: &str) -> Vec<u8> {
    format!(
        "From: <{USER}>\r\nTo: <rcpt@example.org>\r\nSubject: {marker}\r\n\
         Date: Tue, 1 Jul 2025 10:52:37 +0200\r\nMessage-ID: <{marker}@prove.test>\r\n\r\n"
    )
    .into_bytes()
}

/// Lines `first..` of the body of `marker`, about 64 KiB of them (80 octets a line).
fn body_chunk(marker: &str, first: u64) -> (Vec<u8>, u64) {
    let mut chunk = Vec::with_capacity(66 * 1024);
    let mut line = first;
    while chunk.len() < 64 * 1024 {
        let text = format!("{marker} line {line:>10} ");
        chunk.extend_from_slice(text.as_bytes());
        chunk.resize(chunk.len() + 78 - text.len(), b'x');
        chunk.extend_from_slice(b"\r\n");
        line += 1;
    }
    (chunk, line)
}

/// Sends big message `i` of about `size` bytes, generated as it goes (a few hundred clients
/// never hold their messages at once). Returns the reply to its final dot (or the greeting's
/// refusal) and the SHA-256 of the message sent.
async fn send_big(
    addr: SocketAddr,
    src: IpAddr,
    password: String,
    i: usize,
    size: usize,
) -> Result<(u16, [u8; 32]), String> {
    let marker = format!("flood-big-{i:04}");
    let mut c = Client::connect_from(addr, src).await.map_err(|e| e.0)?;
    if c.greeting.code != 220 {
        return Ok((c.greeting.code, [0; 32]));
    }
    c.expect("EHLO big.example", 250).await.map_err(|e| e.0)?;
    let r = c.auth_plain("app", &password).await.map_err(|e| e.0)?;
    if r.code != 235 {
        return Err(format!("AUTH answered {r}"));
    }
    c.expect(&format!("MAIL FROM:<{USER}>"), 250)
        .await
        .map_err(|e| e.0)?;
    c.expect("RCPT TO:<rcpt@example.org>", 250)
        .await
        .map_err(|e| e.0)?;
    c.expect("DATA", 354).await.map_err(|e| e.0)?;
    let mut hash = Sha256::new();
    let headers = big_headers(&marker);
    hash.update(&headers);
    c.send_raw(&headers).await.map_err(|e| e.0)?;
    // No line starts with a dot: the body goes as it is.
    let (mut sent, mut line) = (headers.len(), 0);
    while sent < size {
        let (chunk, next) = body_chunk(&marker, line);
        line = next;
        hash.update(&chunk);
        sent += chunk.len();
        c.send_raw(&chunk).await.map_err(|e| e.0)?;
    }
    c.send_raw(b".\r\n").await.map_err(|e| e.0)?;
    let end = c.read_reply().await.map_err(|e| e.0)?;
    let _ = c.command("QUIT").await;
    Ok((end.code, hash.finalize().into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_messages_at_once_share_the_memory_budget_and_arrive_intact() {
    let count = figure("FLOOD_MESSAGES", 40) as usize;
    let size = figure("FLOOD_MESSAGE_MB", 8) as usize * 1_000_000;
    let budget_mib = figure("FLOOD_BUDGET_MIB", 64);
    let (p, mut home) = world().await;
    // The default (256 MiB) goes unset, so the same run also works against an older build.
    if budget_mib != 256 {
        home.set_env(
            "POSTERN_SERVER__MESSAGE_MEMORY_BUDGET",
            &(budget_mib << 20).to_string(),
        );
    }
    let server = home.serve();
    // One ordinary message first: the baseline includes a sender and its provider session.
    let r = legit(server.relay, &home.relay_password, "flood-warmup").await;
    assert!(
        p.smtp.wait_for_count(1, Duration::from_secs(30)).await,
        "{r:?}"
    );
    let (peak_before, _) = server.memory_kib();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..count {
        let (addr, pw) = (server.relay, home.relay_password.clone());
        tasks.push(tokio::spawn(tokio::time::timeout(
            Duration::from_secs(600),
            send_big(addr, source(i), pw, i, size),
        )));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap().expect("a big message took over 600 s"));
    }
    let took = started.elapsed();
    let accepted: Vec<(usize, [u8; 32])> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o {
            Ok((250, hash)) => Some((i, *hash)),
            _ => None,
        })
        .collect();
    let refused = outcomes
        .iter()
        .filter(|o| matches!(o, Ok((452, _))))
        .count();
    let other: Vec<_> = outcomes
        .iter()
        .filter(|o| !matches!(o, Ok((250 | 452, _))))
        .collect();
    let delivered = p
        .smtp
        .wait_for_count(1 + accepted.len() as u64, Duration::from_secs(300))
        .await;
    let (peak, rss) = server.memory_kib();
    // What may be resident beyond the budget, besides the bodies it covers: the writer's two
    // copies of one batch of bodies (sqlx's and SQLite's bound arguments; a batch is at most
    // 16 MiB, or one bigger message), the connection's lane (8 MiB), and each of the
    // connection's 3 senders holding the message it sends and its encoded copy; plus slack for
    // the allocator, TLS buffers and SQLite's cache.
    let senders = 3u64;
    let size_kib = size as u64 / 1024;
    let budget_kib = budget_mib << 10;
    let allowance_kib = 2 * size_kib.max(16 * 1024) + 8 * 1024 + senders * 2 * size_kib + 64 * 1024;
    println!(
        "flood: budget {count} x {} MB at once with a {budget_mib} MiB budget: {} accepted 250, \
         {refused} refused 452 4.3.1, {} other, in {:.1} s",
        size / 1_000_000,
        accepted.len(),
        other.len(),
        took.as_secs_f64()
    );
    println!(
        "flood: budget serve peak RSS {:.1} MiB (before {:.1} MiB, now {:.1} MiB); bound: before \
         + budget {budget_mib} MiB + allowance {:.1} MiB (2 copies of a writer batch, an 8 MiB \
         lane, {senders} senders x 2 messages, 64 MiB slack) = {:.1} MiB",
        mib(peak),
        mib(peak_before),
        mib(rss),
        mib(allowance_kib),
        mib(peak_before + budget_kib + allowance_kib)
    );
    assert!(other.is_empty(), "unexpected outcomes: {other:?}");
    assert!(!accepted.is_empty(), "no big message was accepted");
    if (count * size) as u64 > 2 * (budget_mib << 20) {
        assert!(
            refused > 0,
            "{count} x {size} bytes fit a {budget_mib} MiB budget?"
        );
    }
    assert!(delivered, "not every accepted message was delivered");
    let got = p.smtp.messages();
    let mut intact = 0;
    for (i, hash) in &accepted {
        let marker = format!("Subject: flood-big-{i:04}\r\n");
        let m: Vec<_> = got
            .iter()
            .filter(|m| {
                crate::world::contains(&m.data[..m.data.len().min(2048)], marker.as_bytes())
            })
            .collect();
        assert_eq!(m.len(), 1, "message {i} delivered {} times", m.len());
        // The relay prepends its Received header and changes nothing else.
        let data = &m[0].data;
        let start = data
            .windows(6)
            .position(|w| w == b"From: ")
            .expect("the From header");
        assert!(data.starts_with(b"Received: "), "message {i}");
        let got_hash: [u8; 32] = Sha256::digest(&data[start..]).into();
        assert_eq!(&got_hash, hash, "message {i} changed on the way");
        intact += 1;
    }
    println!(
        "flood: budget {intact} of {} accepted messages delivered intact (SHA-256 equal)",
        accepted.len()
    );
    assert!(
        peak < peak_before + budget_kib + allowance_kib,
        "serve peak RSS {:.1} MiB over the bound",
        mib(peak)
    );
}
