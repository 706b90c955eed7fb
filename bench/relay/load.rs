//! The load generator: N concurrent SMTP clients submitting 2 KB messages, either to the relay
//! (STARTTLS + AUTH PLAIN, like a legacy app) or straight to the provider (STARTTLS + XOAUTH2).
//! Both paths use the same code, so the only difference measured is what sits behind the port.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub const FROM: &str = "user@contoso.example";
pub const TO: &str = "someone@example.org";
/// Every network wait is bounded.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// How a client logs in.
#[derive(Clone)]
pub enum Auth {
    /// AUTH PLAIN with an initial response (a legacy app at the relay).
    Plain { user: String, password: String },
    /// AUTH XOAUTH2, then the base64 line after 334 (an OAuth client at the provider).
    XOAuth2 { user: String, token: String },
}

/// Where the load goes.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// Trusts the server's certificate. Session resumption is off: a legacy app making one
    /// connection per message does a full handshake each time.
    pub tls: Arc<rustls::ClientConfig>,
    pub auth: Auth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Connect, TLS, AUTH, one message, QUIT, for every message.
    OnePerConnection,
    /// One session per client for all its messages.
    ManyPerConnection,
}

/// What one load run did.
#[derive(Debug, Default)]
pub struct LoadResult {
    pub accepted: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    /// From the start until the last message was accepted.
    pub elapsed: Duration,
    /// Per message: the whole connection (one mode) or MAIL to the final 250 (many mode).
    pub latencies: Vec<Duration>,
}

/// A 2 KB message with the usual headers.
pub fn message() -> Vec<u8> {
    let mut m = format!(
        "From: Bench <{FROM}>\r\nTo: <{TO}>\r\nSubject: relay benchmark\r\n\
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

/// An authenticated SMTP session.
pub struct Session {
    io: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "timed out")
}

/// Names the step that failed.
fn at(step: &'static str) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{step}: {e}"))
}

/// Reads until `n` final reply lines have arrived; fails on a 4xx/5xx or an unexpected code.
async fn replies(
    io: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    n: usize,
    expect: &[u8],
) -> io::Result<()> {
    let (mut finals, mut scanned) = (0, 0);
    buf.clear();
    while finals < n {
        let mut chunk = [0u8; 2048];
        let read = tokio::time::timeout(IO_TIMEOUT, io.read(&mut chunk))
            .await
            .map_err(|_| timed_out())??;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..read]);
        while let Some(lf) = buf[scanned..].iter().position(|&b| b == b'\n') {
            let line = &buf[scanned..scanned + lf + 1];
            if line.get(3) == Some(&b' ') {
                // `2` stands for any positive reply, 354 (to DATA) included.
                let positive = line.starts_with(b"2") || line.starts_with(b"3");
                if !(line.starts_with(expect) || (expect == b"2" && positive)) {
                    return Err(io::Error::other(
                        String::from_utf8_lossy(line).trim_end().to_string(),
                    ));
                }
                finals += 1;
            }
            scanned += lf + 1;
        }
    }
    Ok(())
}

async fn send_all(io: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> io::Result<()> {
    // TLS streams may keep records buffered until flushed.
    let write = async {
        io.write_all(bytes).await?;
        io.flush().await
    };
    tokio::time::timeout(IO_TIMEOUT, write)
        .await
        .map_err(|_| timed_out())?
}

impl Session {
    /// Connect, EHLO, STARTTLS, EHLO, AUTH.
    pub async fn open(t: &Target) -> io::Result<Self> {
        let mut tcp = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(t.addr))
            .await
            .map_err(|_| timed_out())??;
        tcp.set_nodelay(true)?;
        let mut buf = Vec::with_capacity(4096);
        replies(&mut tcp, &mut buf, 1, b"220")
            .await
            .map_err(at("greeting"))?;
        send_all(&mut tcp, b"EHLO bench.example\r\n").await?;
        replies(&mut tcp, &mut buf, 1, b"250")
            .await
            .map_err(at("EHLO"))?;
        send_all(&mut tcp, b"STARTTLS\r\n").await?;
        replies(&mut tcp, &mut buf, 1, b"220")
            .await
            .map_err(at("STARTTLS"))?;
        let name = ServerName::try_from("localhost").expect("a valid name");
        let mut io = tokio::time::timeout(
            IO_TIMEOUT,
            TlsConnector::from(t.tls.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| timed_out())
        .map_err(at("TLS handshake"))??;
        send_all(&mut io, b"EHLO bench.example\r\n").await?;
        replies(&mut io, &mut buf, 1, b"250")
            .await
            .map_err(at("EHLO after TLS"))?;
        match &t.auth {
            Auth::Plain { user, password } => {
                let line = format!(
                    "AUTH PLAIN {}\r\n",
                    B64.encode(format!("\0{user}\0{password}"))
                );
                send_all(&mut io, line.as_bytes()).await?;
            }
            Auth::XOAuth2 { user, token } => {
                send_all(&mut io, b"AUTH XOAUTH2\r\n").await?;
                replies(&mut io, &mut buf, 1, b"334").await?;
                let raw = format!("user={user}\x01auth=Bearer {token}\x01\x01");
                send_all(&mut io, format!("{}\r\n", B64.encode(raw)).as_bytes()).await?;
            }
        }
        replies(&mut io, &mut buf, 1, b"235")
            .await
            .map_err(at("AUTH"))?;
        Ok(Self { io, buf })
    }

    /// MAIL, RCPT and DATA pipelined, then the content (already ending in `.CRLF`).
    pub async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        let envelope = format!("MAIL FROM:<{FROM}>\r\nRCPT TO:<{TO}>\r\nDATA\r\n");
        send_all(&mut self.io, envelope.as_bytes()).await?;
        replies(&mut self.io, &mut self.buf, 3, b"2")
            .await
            .map_err(at("MAIL/RCPT/DATA"))?;
        send_all(&mut self.io, data).await?;
        replies(&mut self.io, &mut self.buf, 1, b"250")
            .await
            .map_err(at("end of data"))
    }

    pub async fn quit(mut self) -> io::Result<()> {
        send_all(&mut self.io, b"QUIT\r\n").await?;
        replies(&mut self.io, &mut self.buf, 1, b"221")
            .await
            .map_err(at("QUIT"))
    }
}

/// Runs `clients` concurrent clients until `count` messages were sent or `limit` passed.
pub async fn run(
    target: &Target,
    mode: Mode,
    clients: usize,
    count: usize,
    limit: Duration,
) -> LoadResult {
    run_spread(std::slice::from_ref(target), mode, clients, count, limit).await
}

/// Like [`run`], with the clients spread round-robin over `targets` (several instances).
pub async fn run_spread(
    targets: &[Target],
    mode: Mode,
    clients: usize,
    count: usize,
    limit: Duration,
) -> LoadResult {
    let mut data = message();
    data.extend_from_slice(b".\r\n");
    let data = Arc::new(data);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + limit;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..clients {
        let t = targets[i % targets.len()].clone();
        let (data, next) = (data.clone(), next.clone());
        tasks.spawn(async move {
            let mut r = LoadResult::default();
            let mut session: Option<Session> = None;
            let mut last = start;
            while Instant::now() < deadline && next.fetch_add(1, Ordering::Relaxed) < count {
                let t0 = Instant::now();
                let outcome = async {
                    let mut s = match session.take() {
                        Some(s) => s,
                        None => Session::open(&t).await?,
                    };
                    let t_mail = Instant::now();
                    s.send(&data).await?;
                    let done = Instant::now();
                    match mode {
                        Mode::OnePerConnection => {
                            s.quit().await?;
                            Ok::<_, io::Error>((done - t0, done))
                        }
                        Mode::ManyPerConnection => {
                            session = Some(s);
                            Ok((done - t_mail, done))
                        }
                    }
                }
                .await;
                match outcome {
                    Ok((latency, done)) => {
                        r.accepted += 1;
                        r.latencies.push(latency);
                        last = done;
                    }
                    Err(e) => {
                        r.errors += 1;
                        r.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            if let Some(s) = session {
                let _ = s.quit().await;
            }
            r.elapsed = last - start;
            r
        });
    }
    let mut all = LoadResult::default();
    while let Some(r) = tasks.join_next().await {
        let r = r.expect("a load client panicked");
        all.accepted += r.accepted;
        all.errors += r.errors;
        if all.first_error.is_none() {
            all.first_error = r.first_error;
        }
        all.elapsed = all.elapsed.max(r.elapsed);
        all.latencies.extend(r.latencies);
    }
    all.latencies.sort_unstable();
    all
}

/// Opens `n` sessions at once (TCP, greeting, EHLO, STARTTLS, EHLO) and keeps them idle.
/// Returns the live sessions and how many failed.
pub async fn burst(t: &Target, n: usize) -> (Vec<TlsStream<TcpStream>>, usize, Option<String>) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let t = t.clone();
        tasks.spawn(async move {
            let mut tcp = TcpStream::connect(t.addr).await?;
            let mut buf = Vec::new();
            replies(&mut tcp, &mut buf, 1, b"220").await?;
            send_all(&mut tcp, b"EHLO burst.example\r\nSTARTTLS\r\n").await?;
            replies(&mut tcp, &mut buf, 2, b"2").await?;
            let name = ServerName::try_from("localhost").expect("a valid name");
            let mut io = TlsConnector::from(t.tls.clone()).connect(name, tcp).await?;
            send_all(&mut io, b"EHLO burst.example\r\n").await?;
            replies(&mut io, &mut buf, 1, b"250").await?;
            Ok::<_, io::Error>(io)
        });
    }
    let (mut live, mut failed, mut first) = (Vec::with_capacity(n), 0, None);
    while let Some(r) = tasks.join_next().await {
        match r.expect("a burst client panicked") {
            Ok(io) => live.push(io),
            Err(e) => {
                failed += 1;
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
    (live, failed, first)
}
