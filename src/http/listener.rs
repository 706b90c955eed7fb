//! The HTTP listener's own limits: at most `server.http_max_connections` connections at once
//! (one more is answered `503` and closed at once, never queued); a connection that sends and
//! receives nothing for `server.http_idle_timeout_secs` is closed, and so is one that takes
//! longer than [`HEAD_TIMEOUT`] to send a request's head (slowloris).
//!
//! axum's `serve` gives hyper no timer, so hyper's own header-read timeout is off: the head
//! deadline is kept here, by watching for the blank line that ends a request head.
//!
//! Together with the request timeout (the router) and the message memory budget
//! ([`super::budget`]) this bounds what slow or silent clients can hold: a connection slot and
//! hyper's read buffer each, for a bounded time.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::serve::{Listener, ListenerExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// Refused connections answered at once; beyond that they are just closed.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// How long a refused connection gets to read its `503`.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);
/// Refusals are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Longest time from a request's first byte to the end of its head (request line and headers).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// What the HTTP listener allows.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub head_timeout: Duration,
}

impl ConnectionLimits {
    pub fn from_settings(s: &crate::settings::ServerSettings) -> Self {
        Self {
            max_connections: (s.http_max_connections as usize).max(1),
            idle_timeout: Duration::from_secs(s.http_idle_timeout_secs),
            head_timeout: HEAD_TIMEOUT,
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes, then drains.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    // `tap_io` (a no-op) lets `ConnectInfo<SocketAddr>` work for a listener of our own.
    let listener = CappedListener::new(listener, limits).tap_io(|_| {});
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// A TCP listener that hands out at most `max_connections` connections at a time.
#[derive(Debug)]
pub struct CappedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    limits: ConnectionLimits,
    refused_since_warn: u64,
    last_warn: Option<Instant>,
}

impl CappedListener {
    pub fn new(inner: TcpListener, limits: ConnectionLimits) -> Self {
        Self {
            inner,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT)),
            limits,
            refused_since_warn: 0,
            last_warn: None,
        }
    }

    fn refuse(&mut self, stream: TcpStream) {
        self.refused_since_warn += 1;
        if self.last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            tracing::warn!(
                refused = self.refused_since_warn,
                max = self.limits.max_connections,
                "HTTP connections refused: server.http_max_connections are open"
            );
            self.refused_since_warn = 0;
            self.last_warn = Some(Instant::now());
        }
        // Answer politely while few are being answered; otherwise just close.
        if let Ok(permit) = self.refusals.clone().try_acquire_owned() {
            tokio::spawn(async move {
                let _permit = permit;
                let _ = tokio::time::timeout(REFUSAL_GRACE, answer_busy(stream)).await;
            });
        }
    }
}

/// The refusal a connection over the cap gets.
const BUSY: &str = "{\"type\":\"about:blank\",\"title\":\"Service Unavailable\",\"status\":503,\
\"detail\":\"the server has as many HTTP connections open as it allows \
(server.http_max_connections): retry in a second, or reuse fewer connections\"}";

async fn answer_busy(mut stream: TcpStream) {
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        BUSY.len()
    );
    if stream.write_all(head.as_bytes()).await.is_err()
        || stream.write_all(BUSY.as_bytes()).await.is_err()
    {
        return;
    }
    let _ = stream.shutdown().await;
    // Read what the client already sent, so closing does not reset the answer away.
    let mut sink = [0u8; 4096];
    let mut left: usize = 64 * 1024;
    while left > 0 {
        match stream.read(&mut sink).await {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

impl Listener for CappedListener {
    type Io = Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Guarded, SocketAddr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match self.slots.clone().try_acquire_owned() {
                Ok(permit) => return (Guarded::new(stream, permit, &self.limits), addr),
                Err(_) => self.refuse(stream),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection holding its slot; it fails with `TimedOut` after the idle timeout.
#[derive(Debug)]
pub struct Guarded {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    idle: Duration,
    head_timeout: Duration,
    last_activity: Instant,
    /// Fires at the earliest possible deadline; re-armed lazily from the fields above and below.
    timer: Pin<Box<Sleep>>,
    /// Waiting for a request head (true from the start and after each response).
    in_head: bool,
    /// When the head being read sent its first byte.
    head_started: Option<Instant>,
    /// How much of the `\r\n\r\n` that ends a head has been seen.
    head_end: u8,
}

impl Guarded {
    fn new(stream: TcpStream, slot: OwnedSemaphorePermit, limits: &ConnectionLimits) -> Self {
        Self {
            stream,
            _slot: slot,
            idle: limits.idle_timeout,
            head_timeout: limits.head_timeout,
            last_activity: Instant::now(),
            timer: Box::pin(tokio::time::sleep(limits.idle_timeout)),
            in_head: true,
            head_started: None,
            head_end: 0,
        }
    }

    fn deadline(&self) -> (Instant, &'static str) {
        let idle = self.last_activity + self.idle;
        match self.head_started.map(|t| t + self.head_timeout) {
            Some(head) if head < idle => (head, "HTTP request head took too long"),
            _ => (
                idle,
                "HTTP connection idle for longer than server.http_idle_timeout_secs",
            ),
        }
    }

    /// Follows the bytes of a request head; true when it has taken too long.
    fn read_head(&mut self, bytes: &[u8]) -> bool {
        if !self.in_head || bytes.is_empty() {
            return false;
        }
        let started = *self.head_started.get_or_insert_with(Instant::now);
        for &b in bytes {
            self.head_end = match (self.head_end, b) {
                (0 | 2, b'\r') => self.head_end + 1,
                (1, b'\n') => 2,
                (3, b'\n') => 4,
                (_, b'\r') => 1,
                _ => 0,
            };
            if self.head_end == 4 {
                self.in_head = false;
                self.head_started = None;
                self.head_end = 0;
                return false;
            }
        }
        started.elapsed() >= self.head_timeout
    }

    /// A response went out: the next bytes start a new request head. An interim `1xx`
    /// (`100 Continue`) is not the end of a request: its body comes next.
    fn wrote(&mut self, start: &[u8]) {
        self.last_activity = Instant::now();
        if !self.in_head && !start.starts_with(b"HTTP/1.1 1") {
            self.in_head = true;
            self.head_started = None;
            self.head_end = 0;
        }
    }

    /// Called when the socket is not ready: `Ready(error)` once the connection has been idle
    /// for the whole timeout.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            let earliest = tokio::time::Instant::from_std(self.deadline().0);
            if self.timer.deadline() > earliest {
                self.timer.as_mut().reset(earliest);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let (deadline, why) = self.deadline();
            if Instant::now() >= deadline {
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, why));
            }
            self.timer
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline));
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.last_activity = Instant::now();
                if this.read_head(&buf.filled()[before..]) {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        this.deadline().1,
                    )));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.wrote(buf);
                Poll::Ready(r)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                let start = bufs
                    .iter()
                    .find(|b| !b.is_empty())
                    .map_or(&[][..], |b| &b[..]);
                this.wrote(start);
                Poll::Ready(r)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start(limits: ConnectionLimits) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let router = Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .route(
                "/echo",
                axum::routing::post(
                    |body: axum::body::Bytes| async move { body.len().to_string() },
                ),
            );
        tokio::spawn(serve(l, router, limits, std::future::pending()));
        addr
    }

    async fn get(stream: &mut TcpStream) -> String {
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[tokio::test]
    async fn connections_over_the_cap_get_503_and_a_freed_slot_is_reused() {
        let addr = start(ConnectionLimits {
            max_connections: 2,
            idle_timeout: Duration::from_secs(60),
            head_timeout: HEAD_TIMEOUT,
        })
        .await;
        let mut a = TcpStream::connect(addr).await.unwrap();
        let mut b = TcpStream::connect(addr).await.unwrap();
        assert!(get(&mut a).await.starts_with("HTTP/1.1 200"));
        assert!(get(&mut b).await.starts_with("HTTP/1.1 200"));
        let mut c = TcpStream::connect(addr).await.unwrap();
        let refused = get(&mut c).await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(refused.contains("retry-after: 1"), "{refused}");
        assert!(refused.contains("http_max_connections"), "{refused}");
        drop(a);
        // The slot comes back once the server notices the close.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut d = TcpStream::connect(addr).await.unwrap();
            if get(&mut d).await.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(Instant::now() < deadline, "the slot was not freed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_idle_timeout() {
        let addr = start(ConnectionLimits {
            max_connections: 1,
            idle_timeout: Duration::from_millis(300),
            head_timeout: HEAD_TIMEOUT,
        })
        .await;
        // Half a request line, then silence: closed, and its slot is free again.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HT").await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
            .await
            .expect("closed by the server")
            .unwrap_or(0);
        assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buf[..n]));
        let mut next = TcpStream::connect(addr).await.unwrap();
        assert!(get(&mut next).await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn a_head_dribbled_slower_than_the_head_timeout_is_cut_off() {
        let addr = start(ConnectionLimits {
            max_connections: 4,
            idle_timeout: Duration::from_secs(60),
            head_timeout: Duration::from_millis(500),
        })
        .await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let mut cut = false;
        for b in b"GET / HTTP/1.1\r\nhost: x\r\nx-pad: "
            .iter()
            .cycle()
            .take(200)
        {
            if slow.write_all(&[*b]).await.is_err() {
                cut = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
            .await
            .map(|r| r.unwrap_or(0))
            .unwrap_or(usize::MAX);
        assert!(cut || n == 0, "still open after {:?}", started.elapsed());
        // A body sent after `100 Continue` is not a head, however slowly it comes.
        let mut upload = TcpStream::connect(addr).await.unwrap();
        upload
            .write_all(
                b"POST /echo HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 40\r\n\r\n",
            )
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = upload.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 100"), "{:?}", &buf[..n]);
        for _ in 0..40 {
            upload.write_all(b"x").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let n = upload.read(&mut buf).await.unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("40"), "{answer}");
        // A prompt request on a connection that already served one is fine.
        let mut ok = TcpStream::connect(addr).await.unwrap();
        assert!(get(&mut ok).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(get(&mut ok).await.starts_with("HTTP/1.1 200"));
    }
}
