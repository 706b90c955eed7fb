//! A small SMTP submission client for the tests: plain or STARTTLS, AUTH PLAIN, raw bytes when
//! a test needs to send something no polite client would. Every read has a timeout.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const READ_TIMEOUT: Duration = Duration::from_secs(30);

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A reply: its code and every line joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// What went wrong below SMTP: the connection closed, timed out or failed.
#[derive(Debug)]
pub struct Broken(pub String);

pub type Result<T> = std::result::Result<T, Broken>;

fn broken(what: &str, e: impl std::fmt::Display) -> Broken {
    Broken(format!("{what}: {e}"))
}

/// A TLS client configuration trusting exactly the relay's certificate file.
pub fn trusting(cert: &Path) -> TlsConnector {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    let der = CertificateDer::from_pem_file(cert).expect("relay certificate");
    roots.add(der).expect("add relay certificate");
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

pub struct Client {
    io: BufReader<Pin<Box<dyn Stream>>>,
    pub greeting: Reply,
}

impl Client {
    /// Connects and reads the greeting.
    pub async fn connect(addr: SocketAddr) -> Result<Client> {
        let tcp = tokio::time::timeout(READ_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|e| broken("connect", e))?
            .map_err(|e| broken("connect", e))?;
        Client::greeted(tcp).await
    }

    /// Connects from `source` (another loopback address looks like another client).
    pub async fn connect_from(addr: SocketAddr, source: std::net::IpAddr) -> Result<Client> {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| broken("socket", e))?;
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| broken("bind", e))?;
        let tcp = tokio::time::timeout(READ_TIMEOUT, socket.connect(addr))
            .await
            .map_err(|e| broken("connect", e))?
            .map_err(|e| broken("connect", e))?;
        Client::greeted(tcp).await
    }

    async fn greeted(tcp: TcpStream) -> Result<Client> {
        let stream: Pin<Box<dyn Stream>> = Box::pin(tcp);
        let mut client = Client {
            io: BufReader::new(stream),
            greeting: Reply {
                code: 0,
                text: String::new(),
            },
        };
        client.greeting = client.read_reply().await?;
        Ok(client)
    }

    /// Connects, EHLO, STARTTLS, EHLO, AUTH PLAIN: ready for MAIL FROM.
    pub async fn submission(
        addr: SocketAddr,
        tls: &TlsConnector,
        user: &str,
        password: &str,
    ) -> Result<Client> {
        let mut c = Client::connect(addr).await?;
        c.expect("EHLO prove.test", 250).await?;
        c.starttls(tls).await?;
        c.expect("EHLO prove.test", 250).await?;
        let auth = c.auth_plain(user, password).await?;
        if auth.code != 235 {
            return Err(Broken(format!("AUTH answered {auth}")));
        }
        Ok(c)
    }

    pub async fn read_reply(&mut self) -> Result<Reply> {
        let mut text = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(READ_TIMEOUT, self.io.read_line(&mut line))
                .await
                .map_err(|e| broken("read", e))?
                .map_err(|e| broken("read", e))?;
            if n == 0 {
                return Err(Broken("connection closed".into()));
            }
            let line = line.trim_end_matches(['\r', '\n']);
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| Broken(format!("not a reply: {line:?}")))?;
            text.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply {
                    code,
                    text: text.join("\n"),
                });
            }
        }
    }

    /// Sends raw bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        let io = self.io.get_mut();
        io.write_all(bytes).await.map_err(|e| broken("write", e))?;
        io.flush().await.map_err(|e| broken("write", e))
    }

    /// Sends one command line and reads its reply.
    pub async fn command(&mut self, line: &str) -> Result<Reply> {
        self.send_raw(format!("{line}\r\n").as_bytes()).await?;
        self.read_reply().await
    }

    /// Sends a command and insists on `code`.
    pub async fn expect(&mut self, line: &str, code: u16) -> Result<Reply> {
        let reply = self.command(line).await?;
        if reply.code == code {
            Ok(reply)
        } else {
            Err(Broken(format!("{line:?} answered {reply}")))
        }
    }

    pub async fn starttls(&mut self, tls: &TlsConnector) -> Result<()> {
        self.expect("STARTTLS", 220).await?;
        // A placeholder while the real stream is handed to the TLS handshake.
        let placeholder: Pin<Box<dyn Stream>> = Box::pin(tokio::io::duplex(1).0);
        let old = std::mem::replace(&mut self.io, BufReader::new(placeholder));
        let name = ServerName::try_from("localhost").expect("server name");
        let tls_stream = tokio::time::timeout(READ_TIMEOUT, tls.connect(name, old.into_inner()))
            .await
            .map_err(|e| broken("TLS", e))?
            .map_err(|e| broken("TLS", e))?;
        self.io = BufReader::new(Box::pin(tls_stream));
        Ok(())
    }

    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Result<Reply> {
        let b64 = STANDARD.encode(format!("\0{user}\0{password}"));
        self.command(&format!("AUTH PLAIN {b64}")).await
    }

    /// MAIL, RCPT, DATA and the dot-stuffed body; the reply to the final dot (or the first
    /// refusal on the way).
    pub async fn send_mail(&mut self, from: &str, to: &str, body: &[u8]) -> Result<Reply> {
        let r = self.command(&format!("MAIL FROM:<{from}>")).await?;
        if r.code != 250 {
            return Ok(r);
        }
        let r = self.command(&format!("RCPT TO:<{to}>")).await?;
        if r.code != 250 {
            let _ = self.command("RSET").await;
            return Ok(r);
        }
        let r = self.command("DATA").await?;
        if r.code != 354 {
            return Ok(r);
        }
        let mut data = Vec::with_capacity(body.len() + 8);
        for line in body.split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b".") {
                data.push(b'.');
            }
            data.extend_from_slice(line);
        }
        if !data.ends_with(b"\r\n") {
            data.extend_from_slice(b"\r\n");
        }
        data.extend_from_slice(b".\r\n");
        self.send_raw(&data).await?;
        self.read_reply().await
    }

    pub async fn quit(mut self) {
        let _ = self.command("QUIT").await;
    }
}

/// A small message with a unique marker in its Message-ID and body.
pub fn message(marker: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <rcpt@example.org>\r\nSubject: {marker}\r\n\
         Message-ID: <{marker}@prove.test>\r\n\r\nbody of {marker}\r\n",
        from = crate::world::USER
    )
    .into_bytes()
}
