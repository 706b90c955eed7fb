//! A small provider look-alike for the client's tests: real TCP on 127.0.0.1, real TLS with a
//! throw-away CA, scripted answers (Exchange Online or Gmail style), and a record of what it saw.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use secrecy::ExposeSecret;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::smtp::sasl;

/// How the server answers AUTH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStyle {
    /// `535 5.7.3` for a bad token.
    Microsoft,
    /// `535 5.7.139` whatever the token.
    SmtpAuthDisabled,
    /// `334 <base64 JSON>`, then `535 5.7.8` after the client's empty line.
    Gmail,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub implicit_tls: bool,
    pub offer_starttls: bool,
    pub pipelining: bool,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub size: Option<u64>,
    pub auth_mechanisms: &'static str,
    pub auth: AuthStyle,
    pub user: String,
    pub valid_tokens: HashSet<String>,
    /// Hang up right after refusing a token.
    pub close_after_auth_failure: bool,
    /// Answer RSET with `421` and hang up (an idle timeout noticed late).
    pub rset_421: bool,
    /// Never send the greeting.
    pub silent: bool,
    pub refused_recipients: HashSet<String>,
    /// Names the certificate is issued for.
    pub cert_names: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            implicit_tls: false,
            offer_starttls: true,
            pipelining: true,
            eight_bit_mime: true,
            smtputf8: true,
            size: Some(157_286_400),
            auth_mechanisms: "LOGIN XOAUTH2",
            auth: AuthStyle::Microsoft,
            user: "app@contoso.example".into(),
            valid_tokens: ["good-token".to_string()].into(),
            close_after_auth_failure: false,
            rset_421: false,
            silent: false,
            refused_recipients: HashSet::new(),
            cert_names: vec!["localhost".into()],
        }
    }
}

/// A message as the server stored it.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub data: Vec<u8>,
}

/// Everything the server saw, across connections.
#[derive(Debug, Default)]
pub struct Record {
    pub connections: usize,
    /// Each command line, tagged with its connection number; SASL lines as `<sasl>`.
    pub lines: Vec<(usize, String)>,
    /// The command lines that arrived in each read.
    pub batches: Vec<Vec<String>>,
    /// The command lines that arrived in the same read as a message's final dot, after it.
    pub after_dot: Vec<String>,
    pub tokens: Vec<String>,
    pub messages: Vec<Received>,
}

impl Record {
    pub fn commands(&self) -> Vec<String> {
        self.lines.iter().map(|(_, l)| l.clone()).collect()
    }

    pub fn count(&self, prefix: &str) -> usize {
        self.lines
            .iter()
            .filter(|(_, l)| l.starts_with(prefix))
            .count()
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub record: Arc<Mutex<Record>>,
    _dir: tempfile::TempDir,
    pub ca_file: std::path::PathBuf,
}

impl TestServer {
    pub async fn start(options: Options) -> Self {
        let (ca_pem, acceptor) = test_pki(&options.cert_names);
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca_pem).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let record = Arc::new(Mutex::new(Record::default()));
        let options = Arc::new(options);
        let rec = record.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let id = {
                    let mut r = rec.lock().unwrap();
                    r.connections += 1;
                    r.connections
                };
                let session = Session::new(id, options.clone(), rec.clone());
                tokio::spawn(session.run(tcp, acceptor.clone()));
            }
        });
        Self {
            addr,
            record,
            _dir: dir,
            ca_file,
        }
    }

    pub fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap()
    }
}

/// A CA and a server certificate it signed for `names`.
fn test_pki(names: &[String]) -> (String, TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Postern client test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(names.to_vec())
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    (ca.pem(), TlsAcceptor::from(Arc::new(config)))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Command,
    AuthResponse,
    AfterChallenge,
    Data,
}

enum Action {
    Continue,
    StartTls,
    Close,
}

struct Session {
    id: usize,
    options: Arc<Options>,
    record: Arc<Mutex<Record>>,
    tls: bool,
    authenticated: bool,
    mode: Mode,
    mechanism: String,
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
    data: Vec<u8>,
}

impl Session {
    fn new(id: usize, options: Arc<Options>, record: Arc<Mutex<Record>>) -> Self {
        Self {
            id,
            options,
            record,
            tls: false,
            authenticated: false,
            mode: Mode::Command,
            mechanism: String::new(),
            mail_from: None,
            rcpt_to: Vec::new(),
            data: Vec::new(),
        }
    }

    async fn run(mut self, tcp: tokio::net::TcpStream, acceptor: TlsAcceptor) {
        let mut io: Box<dyn Io> = if self.options.implicit_tls {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            self.tls = true;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        if self.options.silent {
            tokio::time::sleep(Duration::from_secs(5)).await;
            return;
        }
        if io.write_all(b"220 localhost ESMTP test\r\n").await.is_err() {
            return;
        }
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match tokio::time::timeout(Duration::from_secs(10), io.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => return,
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut out = Vec::new();
            let mut batch = Vec::new();
            let mut action = Action::Continue;
            let mut after_dot = false;
            while let Some(lf) = buf.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = buf.drain(..=lf).collect();
                let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if self.mode == Mode::Data {
                    self.data_line(line, &mut out);
                    after_dot = self.mode == Mode::Command;
                    continue;
                }
                let text = String::from_utf8_lossy(line).into_owned();
                let shown = if self.mode == Mode::AuthResponse {
                    "<sasl>".to_string()
                } else {
                    text.clone()
                };
                batch.push(shown.clone());
                if after_dot {
                    self.record.lock().unwrap().after_dot.push(shown.clone());
                }
                self.record.lock().unwrap().lines.push((self.id, shown));
                action = self.command(&text, &mut out);
                if !matches!(action, Action::Continue) {
                    break;
                }
            }
            if !batch.is_empty() {
                self.record.lock().unwrap().batches.push(batch);
            }
            if io.write_all(&out).await.is_err() {
                return;
            }
            match action {
                Action::Continue => {}
                Action::Close => {
                    let _ = io.shutdown().await;
                    return;
                }
                Action::StartTls => {
                    let Ok(tls) = acceptor.accept(io).await else {
                        return;
                    };
                    io = Box::new(tls);
                    self.tls = true;
                    buf.clear();
                }
            }
        }
    }

    fn command(&mut self, line: &str, out: &mut Vec<u8>) -> Action {
        match self.mode {
            Mode::AuthResponse => return self.auth_response(line, out),
            Mode::AfterChallenge => {
                self.mode = Mode::Command;
                reply(
                    out,
                    "535-5.7.8 Username and Password not accepted. For more information, go to\r\n535 5.7.8  https://support.google.com/mail/?p=BadCredentials",
                );
                return self.after_auth_failure();
            }
            Mode::Command | Mode::Data => {}
        }
        let upper = line.to_ascii_uppercase();
        let o = self.options.clone();
        if upper.starts_with("EHLO ") {
            let mut caps = vec!["localhost Hello".to_string()];
            if !self.tls && o.offer_starttls {
                caps.push("STARTTLS".into());
            }
            if let Some(size) = o.size {
                caps.push(format!("SIZE {size}"));
            }
            if o.pipelining {
                caps.push("PIPELINING".into());
            }
            caps.push("ENHANCEDSTATUSCODES".into());
            // Like Exchange Online, AUTH only once the session is secured.
            if self.tls || !o.offer_starttls {
                caps.push(format!("AUTH {}", o.auth_mechanisms));
            }
            if o.eight_bit_mime {
                caps.push("8BITMIME".into());
            }
            if o.smtputf8 {
                caps.push("SMTPUTF8".into());
            }
            let n = caps.len();
            for (i, c) in caps.iter().enumerate() {
                let sep = if i + 1 == n { ' ' } else { '-' };
                out.extend_from_slice(format!("250{sep}{c}\r\n").as_bytes());
            }
        } else if upper == "STARTTLS" {
            reply(out, "220 2.0.0 SMTP server ready");
            return Action::StartTls;
        } else if let Some(rest) = upper.strip_prefix("AUTH ") {
            if rest.contains(' ') {
                // The client must never put the token on the AUTH line.
                reply(out, "504 5.7.4 initial response not expected in this test");
            } else {
                self.mechanism = rest.to_string();
                self.mode = Mode::AuthResponse;
                reply(out, "334 ");
            }
        } else if upper.starts_with("MAIL FROM:") {
            if !self.authenticated {
                reply(out, "530 5.7.57 Client not authenticated to send mail.");
            } else {
                self.mail_from = Some(line.to_string());
                reply(out, "250 2.1.0 Sender OK");
            }
        } else if upper.starts_with("RCPT TO:") {
            let addr = between_brackets(line);
            if self.mail_from.is_none() {
                reply(out, "503 5.5.2 Need mail command");
            } else if o.refused_recipients.contains(&addr) {
                reply(out, "550 5.1.1 User unknown");
            } else {
                self.rcpt_to.push(addr);
                reply(out, "250 2.1.5 Recipient OK");
            }
        } else if upper == "DATA" {
            if self.rcpt_to.is_empty() {
                reply(out, "554 5.5.1 No valid recipients");
            } else {
                self.mode = Mode::Data;
                reply(out, "354 Start mail input; end with <CRLF>.<CRLF>");
            }
        } else if upper == "RSET" {
            if o.rset_421 {
                reply(out, "421 4.4.2 Connection dropped due to idle timeout");
                return Action::Close;
            }
            self.mail_from = None;
            self.rcpt_to.clear();
            reply(out, "250 2.0.0 Resetting");
        } else if upper == "QUIT" {
            reply(out, "221 2.0.0 Service closing transmission channel");
            return Action::Close;
        } else {
            reply(out, "500 5.3.3 Unrecognized command");
        }
        Action::Continue
    }

    fn auth_response(&mut self, line: &str, out: &mut Vec<u8>) -> Action {
        self.mode = Mode::Command;
        let o = self.options.clone();
        let decoded = match self.mechanism.as_str() {
            "XOAUTH2" => sasl::decode_xoauth2(line).map(|r| (r.user, r.token)),
            "OAUTHBEARER" => {
                sasl::decode_oauthbearer(line).map(|r| (r.user.unwrap_or_default(), r.token))
            }
            _ => {
                reply(out, "504 5.7.4 Unrecognized authentication type");
                return Action::Continue;
            }
        };
        let Ok((user, token)) = decoded else {
            reply(out, "501 5.5.2 Cannot decode response");
            return Action::Continue;
        };
        let token = token.expose_secret().to_string();
        self.record.lock().unwrap().tokens.push(token.clone());
        if o.auth == AuthStyle::SmtpAuthDisabled {
            reply(
                out,
                "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.",
            );
            return Action::Continue;
        }
        if user == o.user && o.valid_tokens.contains(&token) {
            self.authenticated = true;
            reply(out, "235 2.7.0 Authentication successful");
            return Action::Continue;
        }
        match o.auth {
            AuthStyle::Gmail => {
                self.mode = Mode::AfterChallenge;
                let challenge = sasl::encode_error_challenge("401", "https://mail.google.com/");
                reply(out, &format!("334 {challenge}"));
                Action::Continue
            }
            _ => {
                reply(
                    out,
                    "535 5.7.3 Authentication unsuccessful [AM0PR01CA0001.eurprd01.prod.exchangelabs.com]",
                );
                self.after_auth_failure()
            }
        }
    }

    fn after_auth_failure(&self) -> Action {
        if self.options.close_after_auth_failure {
            Action::Close
        } else {
            Action::Continue
        }
    }

    fn data_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        if line == b"." {
            self.mode = Mode::Command;
            let mut record = self.record.lock().unwrap();
            record.messages.push(Received {
                mail_from: self.mail_from.take().unwrap_or_default(),
                rcpt_to: std::mem::take(&mut self.rcpt_to),
                data: std::mem::take(&mut self.data),
            });
            let id = record.messages.len();
            reply(
                out,
                &format!(
                    "250 2.0.0 OK <QUEUE-{id}@localhost> [Hostname=AM0PR01MB0001] Queued mail for delivery"
                ),
            );
            return;
        }
        let line = line.strip_prefix(b".").unwrap_or(line);
        self.data.extend_from_slice(line);
        self.data.extend_from_slice(b"\r\n");
    }
}

fn reply(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn between_brackets(line: &str) -> String {
    let start = line.find('<').map_or(0, |i| i + 1);
    let end = line.rfind('>').unwrap_or(line.len());
    line.get(start..end).unwrap_or_default().to_string()
}
