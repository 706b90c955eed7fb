//! The byte stream under a session: plain or TLS, with batched writes and buffered reply reads,
//! every wait under a timeout. The only part of the client that touches sockets after connect.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::error::{SmtpError, Stage};
use super::reply::{Reply, parse_reply};

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A stream plus its read buffer and pending output.
pub struct Wire {
    pub stream: Stream,
    rbuf: Vec<u8>,
    /// Commands queued by [`Wire::queue`] and written together by [`Wire::flush`].
    out: Vec<u8>,
    /// The queued output holds a secret (a SASL line): wipe it once written.
    out_is_secret: bool,
}

const READ_CHUNK: usize = 8 * 1024;

impl Wire {
    pub fn new(stream: Stream) -> Self {
        Self {
            stream,
            rbuf: Vec::with_capacity(READ_CHUNK),
            out: Vec::with_capacity(1024),
            out_is_secret: false,
        }
    }

    /// Appends a command (its `Display` is the wire text) to the next batch.
    pub fn queue(&mut self, command: impl std::fmt::Display) {
        use std::io::Write as _;
        // Writing into a Vec cannot fail.
        let _ = write!(self.out, "{command}");
    }

    /// Appends raw bytes (message data) to the next batch.
    pub fn queue_bytes(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Appends a line that holds a secret; the buffer is wiped after the write.
    pub fn queue_secret_line(&mut self, line: &secrecy::SecretString) {
        use secrecy::ExposeSecret as _;
        self.out.extend_from_slice(line.expose_secret().as_bytes());
        self.out.extend_from_slice(b"\r\n");
        self.out_is_secret = true;
    }

    /// Writes the queued batch in one go.
    pub async fn flush(&mut self, stage: Stage, limit: Duration) -> Result<(), SmtpError> {
        let out = std::mem::take(&mut self.out);
        let result = timed(stage, limit, async {
            self.stream.write_all(&out).await?;
            self.stream.flush().await
        })
        .await;
        // Keep the allocation for the next batch.
        self.out = out;
        if std::mem::take(&mut self.out_is_secret) {
            zeroize::Zeroize::zeroize(&mut self.out);
        }
        self.out.clear();
        result
    }

    /// Writes `data` as it is (no copy into the batch), in blocks each under `limit`; commands
    /// queued meanwhile go out in the last block's write.
    pub async fn write_blocks(
        &mut self,
        data: &[u8],
        block: usize,
        stage: Stage,
        limit: Duration,
    ) -> Result<(), SmtpError> {
        let queued = std::mem::take(&mut self.out);
        let mut chunks = data.chunks(block).peekable();
        let mut last = Vec::new();
        while let Some(chunk) = chunks.next() {
            if chunks.peek().is_none() && !queued.is_empty() {
                // The last block and the queued commands in one write: one TLS record, one
                // segment, one wake-up for the server.
                last.reserve(chunk.len() + queued.len());
                last.extend_from_slice(chunk);
                last.extend_from_slice(&queued);
                timed(stage, limit, self.stream.write_all(&last)).await?;
            } else {
                timed(stage, limit, self.stream.write_all(chunk)).await?;
            }
        }
        if data.is_empty() && !queued.is_empty() {
            timed(stage, limit, self.stream.write_all(&queued)).await?;
        }
        self.out = queued;
        self.out.clear();
        timed(stage, limit, self.stream.flush()).await
    }

    /// Reads the next reply, which may already be buffered (pipelining).
    pub async fn read_reply(&mut self, stage: Stage, limit: Duration) -> Result<Reply, SmtpError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match parse_reply(&self.rbuf) {
                Ok(Some((reply, used))) => {
                    self.rbuf.drain(..used);
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(SmtpError::Protocol {
                        stage,
                        detail: e.to_string(),
                    });
                }
            }
            // Read into spare capacity: no zeroing of a fresh chunk on every read.
            self.rbuf.reserve(READ_CHUNK);
            let read =
                tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf)).await;
            let n = match read {
                Ok(Ok(n)) => n,
                Ok(Err(source)) => return Err(io_error(stage, source)),
                Err(_) => {
                    return Err(SmtpError::Timeout {
                        stage,
                        after: limit,
                    });
                }
            };
            if n == 0 {
                return Err(SmtpError::Closed { stage });
            }
        }
    }

    /// Bytes the server sent that no reply has consumed yet.
    pub fn has_buffered_input(&self) -> bool {
        !self.rbuf.is_empty()
    }

    /// Without waiting: has the server closed the connection or said something unasked
    /// (typically `421 idle timeout` before closing)? Either way the session is over.
    pub fn peer_has_spoken(&mut self) -> bool {
        if self.has_buffered_input() {
            return true;
        }
        let mut probe = [0u8; 512];
        match self.stream.read(&mut probe).now_or_never() {
            None => false,
            Some(Ok(n)) => {
                self.rbuf.extend_from_slice(&probe[..n]);
                true
            }
            Some(Err(_)) => true,
        }
    }

    pub async fn shutdown(&mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.stream.shutdown()).await;
    }
}

/// Runs one network step under its timeout, mapping failures to the stage.
pub async fn timed<T>(
    stage: Stage,
    limit: Duration,
    step: impl Future<Output = io::Result<T>>,
) -> Result<T, SmtpError> {
    match tokio::time::timeout(limit, step).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(io_error(stage, source)),
        Err(_) => Err(SmtpError::Timeout {
            stage,
            after: limit,
        }),
    }
}

fn io_error(stage: Stage, source: io::Error) -> SmtpError {
    match source.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => SmtpError::Closed { stage },
        _ => SmtpError::Io { stage, source },
    }
}
