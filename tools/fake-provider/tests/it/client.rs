//! A small hand-written SMTP client (plain, STARTTLS, implicit TLS) and HTTP helpers for the tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const WAIT: Duration = Duration::from_secs(5);

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Gone,
}

/// One SMTP reply: code and the text of every line (without the code), joined with `\n`.
#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

pub struct SmtpClient {
    stream: Stream,
    buf: Vec<u8>,
}

impl SmtpClient {
    pub async fn connect(addr: SocketAddr) -> SmtpClient {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        SmtpClient {
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
        }
    }

    /// Connect with TLS from the first byte (port 465 style).
    pub async fn connect_tls(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<SmtpClient> {
        let tcp = TcpStream::connect(addr).await?;
        let tls = tls_connect(tcp, config).await?;
        Ok(SmtpClient {
            stream: Stream::Tls(Box::new(tls)),
            buf: Vec::new(),
        })
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        let r = match &mut self.stream {
            Stream::Plain(s) => s.write_all(bytes).await,
            Stream::Tls(s) => {
                s.write_all(bytes).await.expect("write");
                s.flush().await
            }
            Stream::Gone => panic!("no stream"),
        };
        r.expect("write");
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        let read = async {
            match &mut self.stream {
                Stream::Plain(s) => s.read(&mut chunk).await,
                Stream::Tls(s) => s.read(&mut chunk).await,
                Stream::Gone => Ok(0),
            }
        };
        let n = tokio::time::timeout(WAIT, read)
            .await
            .expect("read timed out")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Read one (possibly multi-line) reply; `None` when the server closed the connection.
    pub async fn try_reply(&mut self) -> Option<Reply> {
        let mut text = Vec::new();
        loop {
            while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let line = String::from_utf8(line).expect("utf8 reply");
                let line = line.trim_end_matches("\r\n");
                assert!(line.len() >= 3, "short reply line {line:?}");
                let code: u16 = line[..3].parse().expect("reply code");
                text.push(line.get(4..).unwrap_or("").to_owned());
                if line.as_bytes().get(3) != Some(&b'-') {
                    return Some(Reply {
                        code,
                        text: text.join("\n"),
                    });
                }
            }
            if self.fill().await == 0 {
                return None;
            }
        }
    }

    pub async fn reply(&mut self) -> Reply {
        self.try_reply()
            .await
            .expect("server closed the connection")
    }

    /// Send a command line and read its reply.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.write(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// STARTTLS then the handshake, trusting `config`'s roots.
    pub async fn starttls(&mut self, config: Arc<rustls::ClientConfig>) -> std::io::Result<()> {
        let r = self.cmd("STARTTLS").await;
        assert_eq!(r.code, 220, "{r:?}");
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            panic!("already TLS");
        };
        let tls = tls_connect(tcp, config).await?;
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// True once the server has closed the connection (EOF within the wait).
    pub async fn closed(&mut self) -> bool {
        self.buf.clear();
        self.fill().await == 0
    }
}

async fn tls_connect(
    tcp: TcpStream,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from("localhost").expect("name");
    tokio::time::timeout(WAIT, TlsConnector::from(config).connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("TLS timed out"))?
}

/// XOAUTH2 initial response, base64.
pub fn xoauth2(user: &str, token: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

/// An HTTP client that does not follow redirects (the tests read `Location`). The workspace
/// builds reqwest without a crypto provider, so hand it a ring-based rustls config.
pub fn http() -> reqwest::Client {
    let ca = fake_provider::smtp::TestCa::generate().expect("ca");
    let tls = Arc::unwrap_or_clone(ca.client_config().expect("tls config"));
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("http client")
}
