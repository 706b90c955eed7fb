//! A buffered SMTP connection: plain or TLS stream, an input buffer read in pipelined batches,
//! and an output buffer flushed only when the input runs dry (RFC 2920 server behaviour).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Tolerance for over-long body lines: kept (this is a test double), but bounded.
const DATA_LINE_MAX: usize = 1 << 20;

/// Why reading from the client stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("client closed the connection")]
    Closed,
    #[error("read timed out")]
    Timeout,
    #[error("line longer than {0} octets")]
    TooLong(usize),
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only during the TLS upgrade.
    Gone,
}

pub(crate) struct Conn {
    stream: Stream,
    input: Vec<u8>,
    /// Start of unconsumed input.
    pos: usize,
    output: Vec<u8>,
    timeout: Duration,
    /// Waited before each batch of replies goes out (a provider slower than the client).
    reply_delay: Duration,
}

impl Conn {
    pub fn new(tcp: TcpStream, timeout: Duration) -> Self {
        Self {
            stream: Stream::Plain(tcp),
            input: Vec::with_capacity(8192),
            pos: 0,
            output: Vec::with_capacity(1024),
            timeout,
            reply_delay: Duration::ZERO,
        }
    }

    pub fn with_reply_delay(mut self, delay: Duration) -> Self {
        self.reply_delay = delay;
        self
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Queue a reply line (or several, CRLF-separated); CRLF is appended.
    pub fn reply(&mut self, text: &str) {
        self.output
            .extend_from_slice(text.trim_end_matches(['\r', '\n']).as_bytes());
        self.output.extend_from_slice(b"\r\n");
    }

    pub async fn flush(&mut self) -> Result<(), ConnError> {
        if self.output.is_empty() {
            return Ok(());
        }
        if !self.reply_delay.is_zero() {
            tokio::time::sleep(self.reply_delay).await;
        }
        let out = std::mem::take(&mut self.output);
        let write = async {
            match &mut self.stream {
                Stream::Plain(s) => s.write_all(&out).await,
                Stream::Tls(s) => {
                    s.write_all(&out).await?;
                    s.flush().await
                }
                Stream::Gone => Err(io::ErrorKind::NotConnected.into()),
            }
        };
        let result = tokio::time::timeout(self.timeout, write).await;
        self.output = out;
        self.output.clear();
        result.map_err(|_| ConnError::Timeout)??;
        Ok(())
    }

    /// Read more input; flushes pending replies first, since the client may wait for them.
    async fn fill(&mut self) -> Result<(), ConnError> {
        self.flush().await?;
        if self.pos > 0 && self.pos * 2 >= self.input.len() {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        let old = self.input.len();
        self.input.resize(old + 16 * 1024, 0);
        let read = async {
            match &mut self.stream {
                Stream::Plain(s) => s.read(&mut self.input[old..]).await,
                Stream::Tls(s) => s.read(&mut self.input[old..]).await,
                Stream::Gone => Err(io::ErrorKind::NotConnected.into()),
            }
        };
        let n = tokio::time::timeout(self.timeout, read).await;
        let n = match n {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                self.input.truncate(old);
                return Err(e.into());
            }
            Err(_) => {
                self.input.truncate(old);
                return Err(ConnError::Timeout);
            }
        };
        self.input.truncate(old + n);
        if n == 0 {
            Err(ConnError::Closed)
        } else {
            Ok(())
        }
    }

    /// The next line including its LF (usually CRLF), at most `max` octets.
    pub async fn line(&mut self, max: usize) -> Result<Vec<u8>, ConnError> {
        let mut searched = 0;
        loop {
            let pending = &self.input[self.pos..];
            if let Some(i) = pending[searched..].iter().position(|&b| b == b'\n') {
                let end = searched + i + 1;
                if end > max {
                    self.pos += end;
                    return Err(ConnError::TooLong(max));
                }
                let line = pending[..end].to_vec();
                self.pos += end;
                return Ok(line);
            }
            searched = pending.len();
            if searched > max {
                return Err(ConnError::TooLong(max));
            }
            self.fill().await?;
        }
    }

    /// Exactly `n` octets (BDAT chunks).
    pub async fn exact(&mut self, n: usize, into: &mut Vec<u8>) -> Result<(), ConnError> {
        let mut left = n;
        loop {
            let avail = (self.input.len() - self.pos).min(left);
            into.extend_from_slice(&self.input[self.pos..self.pos + avail]);
            self.pos += avail;
            left -= avail;
            if left == 0 {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    /// A DATA body up to CRLF "." CRLF, dot-unstuffed, scanned in place (no per-line allocation).
    /// Appends to `sink` while `keep` and the size stays within `max`; returns the full size.
    pub async fn data(
        &mut self,
        sink: &mut Vec<u8>,
        keep: bool,
        max: usize,
    ) -> Result<usize, ConnError> {
        let mut size = 0usize;
        // A "." line ends the body only after a CRLF-ended line (or at the start).
        let mut after_crlf = true;
        loop {
            while let Some(i) = self.input[self.pos..].iter().position(|&b| b == b'\n') {
                let (start, end) = (self.pos, self.pos + i + 1);
                self.pos = end;
                let line = &self.input[start..end];
                if after_crlf && line == b".\r\n" {
                    return Ok(size);
                }
                let body = if line[0] == b'.' { &line[1..] } else { line };
                size += body.len();
                if keep && size <= max {
                    sink.extend_from_slice(body);
                }
                after_crlf = line.ends_with(b"\r\n");
            }
            if self.input.len() - self.pos > DATA_LINE_MAX {
                return Err(ConnError::TooLong(DATA_LINE_MAX));
            }
            self.fill().await?;
        }
    }

    /// Upgrade to TLS (STARTTLS or implicit). Buffered plaintext input is discarded (RFC 3207 §4.2).
    pub async fn start_tls(&mut self, acceptor: &TlsAcceptor) -> Result<(), ConnError> {
        self.flush().await?;
        self.input.clear();
        self.pos = 0;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(io::Error::other("already TLS").into());
        };
        let tls = tokio::time::timeout(self.timeout, acceptor.accept(tcp))
            .await
            .map_err(|_| ConnError::Timeout)??;
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// Send pending replies and close the write side (bounded by the timeout).
    pub async fn close(&mut self) {
        let _ = self.flush().await;
        let shutdown = async {
            match &mut self.stream {
                Stream::Plain(s) => s.shutdown().await,
                Stream::Tls(s) => s.shutdown().await,
                Stream::Gone => Ok(()),
            }
        };
        let _ = tokio::time::timeout(self.timeout, shutdown).await;
    }
}

/// Build a tokio-rustls acceptor from a server config.
pub(crate) fn acceptor(config: Arc<rustls::ServerConfig>) -> TlsAcceptor {
    TlsAcceptor::from(config)
}
