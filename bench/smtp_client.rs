//! Throughput of the upstream SMTP client over one reused session, against the fake provider,
//! compared with a minimal hand-written client (STARTTLS, XOAUTH2, pipelined MAIL/RCPT/DATA and
//! nothing else) driving the same server in the same run.
//!
//! `cargo bench --bench smtp_client [-- MESSAGES]` (default 2,000 per round, 5 rounds). The server runs on its own runtime thread; each
//! client runs on the main thread, whose CPU time (`/proc/thread-self/stat`) is the client's alone.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_provider::FakeSmtp;
use fake_provider::smtp::{SmtpConfig, TokenValidator};
use postern::domain::TlsMode;
use postern::oauth::{TokenError, TokenSource};
use postern::smtp::client::{Envelope, SmtpClient, SmtpClientConfig};
use postern::smtp::sasl::xoauth2_initial_response;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const USER: &str = "bench@contoso.example";
const TOKEN: &str = "bench-token-eyJ0eXAiOiJKV1QiLCJub25jZSI6IjEyMyJ9";
const FROM: &str = "bench@contoso.example";
const TO: &str = "someone@example.org";

struct StaticToken;

impl TokenSource for StaticToken {
    fn access_token(&self) -> impl Future<Output = Result<SecretString, TokenError>> + Send {
        std::future::ready(Ok(SecretString::from(TOKEN)))
    }
    fn force_refresh(&self) -> impl Future<Output = Result<SecretString, TokenError>> + Send {
        std::future::ready(Ok(SecretString::from(TOKEN)))
    }
}

/// A 2 KB message with ordinary headers and 76-column body lines.
fn message() -> Vec<u8> {
    let mut m = format!(
        "From: Bench <{FROM}>\r\nTo: <{TO}>\r\nSubject: benchmark message\r\n\
         Date: Tue, 1 Jul 2025 10:00:00 +0000\r\nMessage-ID: <bench@contoso.example>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    .into_bytes();
    while m.len() < 2048 - 78 {
        m.extend_from_slice(&[b'x'; 76]);
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// CPU time of the calling thread (user + system), from /proc in clock ticks of 10 ms.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the `(comm)`, which may contain spaces: utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

const ROUNDS: usize = 5;

struct Figures {
    rate: f64,
    cpu: Duration,
}

fn measure<F: Future<Output = ()>>(rt: &tokio::runtime::Runtime, count: usize, run: F) -> Figures {
    let cpu0 = thread_cpu();
    let t0 = Instant::now();
    rt.block_on(run);
    let wall = t0.elapsed();
    Figures {
        rate: count as f64 / wall.as_secs_f64(),
        cpu: thread_cpu().saturating_sub(cpu0),
    }
}

async fn postern_client(port: u16, ca_file: std::path::PathBuf, count: usize) {
    let mut config = SmtpClientConfig::new("localhost", port, TlsMode::Starttls, USER);
    config.ca_file = Some(ca_file);
    let mut transport = SmtpClient::new(config, StaticToken).unwrap().transport();
    let envelope = Envelope::new(FROM, [TO]);
    let body = message();
    for _ in 0..count {
        let report = transport.send(&envelope, &body).await.unwrap();
        assert!(report.all_accepted());
    }
    transport.close().await;
}

/// The least a client can do: no parsing beyond counting final reply lines, no checks.
async fn raw_client(port: u16, tls: Arc<rustls::ClientConfig>, count: usize) {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut buf = Vec::new();
    read_replies(&mut tcp, &mut buf, 1).await;
    tcp.write_all(b"EHLO raw.bench\r\n").await.unwrap();
    read_replies(&mut tcp, &mut buf, 1).await;
    tcp.write_all(b"STARTTLS\r\n").await.unwrap();
    read_replies(&mut tcp, &mut buf, 1).await;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    s.write_all(b"EHLO raw.bench\r\n").await.unwrap();
    read_replies(&mut s, &mut buf, 1).await;
    s.write_all(b"AUTH XOAUTH2\r\n").await.unwrap();
    read_replies(&mut s, &mut buf, 1).await;
    let line = xoauth2_initial_response(USER, &SecretString::from(TOKEN));
    s.write_all(format!("{}\r\n", line.expose_secret()).as_bytes())
        .await
        .unwrap();
    read_replies(&mut s, &mut buf, 1).await;
    let envelope = format!("MAIL FROM:<{FROM}>\r\nRCPT TO:<{TO}>\r\nDATA\r\n");
    let mut data = message();
    data.extend_from_slice(b".\r\n");
    for _ in 0..count {
        s.write_all(envelope.as_bytes()).await.unwrap();
        read_replies(&mut s, &mut buf, 3).await;
        s.write_all(&data).await.unwrap();
        read_replies(&mut s, &mut buf, 1).await;
    }
    s.write_all(b"QUIT\r\n").await.unwrap();
    read_replies(&mut s, &mut buf, 1).await;
}

/// Reads until `n` final reply lines (`NNN ` at a line start) have arrived.
async fn read_replies(s: &mut (impl AsyncReadExt + Unpin), buf: &mut Vec<u8>, n: usize) {
    let mut finals = 0;
    buf.clear();
    let mut scanned = 0;
    while finals < n {
        let mut chunk = [0u8; 4096];
        let read = s.read(&mut chunk).await.unwrap();
        assert!(read > 0, "server closed");
        buf.extend_from_slice(&chunk[..read]);
        while let Some(lf) = buf[scanned..].iter().position(|&b| b == b'\n') {
            let line = &buf[scanned..scanned + lf + 1];
            assert!(
                line[0] != b'4' && line[0] != b'5',
                "{}",
                String::from_utf8_lossy(line)
            );
            if line.get(3) == Some(&b' ') {
                finals += 1;
            }
            scanned += lf + 1;
        }
    }
}

fn main() {
    let count: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let smtp = server_rt
        .block_on(FakeSmtp::start(
            SmtpConfig::office365().fast(),
            TokenValidator::AcceptAny,
        ))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, smtp.ca_pem()).unwrap();
    let raw_tls = smtp.ca().client_config().unwrap();

    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Warm both paths (TLS, allocator, server) so neither pays first-run costs in the figures.
    measure(
        &client_rt,
        50,
        postern_client(smtp.port(), ca_file.clone(), 50),
    );
    measure(&client_rt, 50, raw_client(smtp.port(), raw_tls.clone(), 50));

    // Alternate the two clients so a busy neighbour on the machine hurts both alike; CPU time is
    // summed over all rounds because /proc counts in 10 ms ticks.
    let before = smtp.counters().messages;
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ours.push(measure(
            &client_rt,
            count,
            postern_client(smtp.port(), ca_file.clone(), count),
        ));
        raw.push(measure(
            &client_rt,
            count,
            raw_client(smtp.port(), raw_tls.clone(), count),
        ));
    }
    assert_eq!(
        smtp.counters().messages - before,
        (2 * ROUNDS * count) as u64
    );

    println!(
        "{ROUNDS} rounds x {count} messages x {} bytes per client, one session per round",
        message().len()
    );
    let report = |name: &str, figures: &[Figures]| {
        let mut rates: Vec<f64> = figures.iter().map(|f| f.rate).collect();
        rates.sort_by(f64::total_cmp);
        let cpu = figures.iter().map(|f| f.cpu).sum::<Duration>();
        let median = rates[rates.len() / 2];
        println!(
            "{name:<15}: median {median:>7.0} msg/s (min {:>6.0}, max {:>6.0})  {:.4} CPU ms/msg",
            rates[0],
            rates[rates.len() - 1],
            cpu.as_secs_f64() * 1000.0 / (ROUNDS * count) as f64
        );
        median
    };
    let ours = report("postern client", &ours);
    let raw = report("raw baseline", &raw);
    println!(
        "ratio (postern / baseline, median msg/s): {:.2}",
        ours / raw
    );
}
