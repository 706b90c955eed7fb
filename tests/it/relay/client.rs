//! A small SMTP client playing the legacy app: one command at a time, every reply checked by
//! the test. Trusts exactly the relay's self-signed certificate. Every read has a timeout.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const TIMEOUT: Duration = Duration::from_secs(20);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A server reply: its code and every line's text, joined with `\n`.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

pub struct Client {
    io: BufReader<Box<dyn Io>>,
}

impl Client {
    /// Connects and reads the greeting.
    pub async fn connect(addr: SocketAddr) -> (Self, Reply) {
        let tcp = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect to the relay");
        Self::greeted(tcp).await
    }

    async fn greeted(tcp: TcpStream) -> (Self, Reply) {
        let mut c = Client {
            io: BufReader::new(Box::new(tcp)),
        };
        let greeting = c.read_reply().await;
        (c, greeting)
    }

    /// Connects from `source` (any 127.0.0.0/8 address works on loopback), as a device with
    /// its own address would, and reads the greeting.
    pub async fn connect_from(addr: SocketAddr, source: std::net::IpAddr) -> (Self, Reply) {
        let socket = if source.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .expect("a client socket");
        socket
            .bind(SocketAddr::new(source, 0))
            .expect("bind the client's source address");
        let tcp = tokio::time::timeout(TIMEOUT, socket.connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect to the relay");
        Self::greeted(tcp).await
    }

    /// Connect, EHLO, STARTTLS, EHLO again: ready for AUTH.
    pub async fn connect_tls(addr: SocketAddr, cert: &Path) -> Self {
        let (mut c, greeting) = Self::connect(addr).await;
        assert_eq!(greeting.code, 220, "{greeting:?}");
        let ehlo = c.cmd("EHLO app.example").await;
        assert!(ehlo.text.contains("STARTTLS"), "{ehlo:?}");
        c.starttls(cert).await;
        let ehlo = c.cmd("EHLO app.example").await;
        assert_eq!(ehlo.code, 250, "{ehlo:?}");
        c
    }

    pub async fn read_reply(&mut self) -> Reply {
        self.try_read_reply().await.expect("read a reply")
    }

    /// Reads a reply; an error when the connection fails or closes.
    pub async fn try_read_reply(&mut self) -> std::io::Result<Reply> {
        let mut text = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(TIMEOUT, self.io.read_line(&mut line))
                .await
                .map_err(|_| std::io::Error::other("reply timed out"))??;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let line = line.trim_end_matches(['\r', '\n']);
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("not a reply line: {line:?}"));
            text.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply {
                    code,
                    text: text.join("\n"),
                });
            }
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.try_write(bytes).await.expect("write to the relay");
    }

    pub async fn try_write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let w = self.io.get_mut();
        tokio::time::timeout(TIMEOUT, async {
            w.write_all(bytes).await?;
            w.flush().await
        })
        .await
        .map_err(|_| std::io::Error::other("write timed out"))?
    }

    /// Sends one command line and reads its reply.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.write(format!("{line}\r\n").as_bytes()).await;
        self.read_reply().await
    }

    pub async fn starttls(&mut self, cert: &Path) {
        let r = self.cmd("STARTTLS").await;
        assert_eq!(r.code, 220, "{r:?}");
        assert!(self.io.buffer().is_empty(), "nothing may follow the 220");
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(cert).expect("relay-cert.pem"))
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let plain = std::mem::replace(
            &mut self.io,
            BufReader::new(Box::new(tokio::io::join(
                tokio::io::empty(),
                tokio::io::sink(),
            ))),
        );
        let tls = tokio::time::timeout(
            TIMEOUT,
            TlsConnector::from(Arc::new(config)).connect(
                ServerName::try_from("localhost").unwrap(),
                plain.into_inner(),
            ),
        )
        .await
        .expect("TLS handshake timed out")
        .expect("TLS handshake with the relay");
        self.io = BufReader::new(Box::new(tls));
    }

    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Reply {
        let token = B64.encode(format!("\0{user}\0{password}"));
        self.cmd(&format!("AUTH PLAIN {token}")).await
    }

    pub async fn auth_login(&mut self, user: &str, password: &str) -> Reply {
        let r = self.cmd("AUTH LOGIN").await;
        assert_eq!(r.code, 334, "{r:?}");
        let r = self.cmd(&B64.encode(user)).await;
        assert_eq!(r.code, 334, "{r:?}");
        self.cmd(&B64.encode(password)).await
    }

    /// MAIL, RCPT..., DATA and the content (dot-stuffed here); the reply to the final dot.
    /// Panics when MAIL, a RCPT or DATA is refused: use [`Client::cmd`] to test those.
    pub async fn send(&mut self, from: &str, to: &[&str], content: &[u8]) -> Reply {
        let r = self.cmd(&format!("MAIL FROM:<{from}>")).await;
        assert_eq!(r.code, 250, "MAIL: {r:?}");
        for rcpt in to {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>")).await;
            assert_eq!(r.code, 250, "RCPT: {r:?}");
        }
        self.data(content).await
    }

    /// DATA and the content; the reply to the final dot.
    pub async fn data(&mut self, content: &[u8]) -> Reply {
        let r = self.cmd("DATA").await;
        assert_eq!(r.code, 354, "DATA: {r:?}");
        self.write(&dot_stuffed(content)).await;
        self.read_reply().await
    }

    /// The whole transaction, pipelined, stopping at the first I/O error (the server died);
    /// the replies to MAIL, RCPT, DATA and the final dot.
    pub async fn try_send(
        &mut self,
        from: &str,
        to: &str,
        content: &[u8],
    ) -> std::io::Result<[Reply; 4]> {
        self.try_write(format!("MAIL FROM:<{from}>\r\nRCPT TO:<{to}>\r\nDATA\r\n").as_bytes())
            .await?;
        let mail = self.try_read_reply().await?;
        let rcpt = self.try_read_reply().await?;
        let data = self.try_read_reply().await?;
        if data.code != 354 {
            return Ok([mail, rcpt, data.clone(), data]);
        }
        self.try_write(&dot_stuffed(content)).await?;
        Ok([mail, rcpt, data, self.try_read_reply().await?])
    }
}

/// The content as sent after DATA: leading dots doubled, ending with `CRLF.CRLF`.
fn dot_stuffed(content: &[u8]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(content.len() + 8);
    for line in content.split_inclusive(|b| *b == b'\n') {
        if line.first() == Some(&b'.') {
            wire.push(b'.');
        }
        wire.extend_from_slice(line);
    }
    if !wire.ends_with(b"\r\n") {
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b".\r\n");
    wire
}

/// The id in `250 2.0.0 Ok: queued as ID`.
pub fn queued_id(r: &Reply) -> String {
    assert_eq!(r.code, 250, "{r:?}");
    r.text
        .rsplit_once("queued as ")
        .map(|(_, id)| id.trim().to_string())
        .unwrap_or_else(|| panic!("no id in {r:?}"))
}

/// A message as a legacy app writes it: no Message-ID or Date (the relay adds them).
pub fn message(from: &str, to: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: App <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\r\nHello from {subject}.\r\n.a line with a leading dot\r\n"
    )
    .into_bytes()
}
