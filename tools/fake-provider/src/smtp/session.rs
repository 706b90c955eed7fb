//! One SMTP session: greeting, EHLO, STARTTLS, AUTH, the mail transaction, DATA and BDAT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokio::net::TcpStream;

use super::config::{AuthAdvert, Flavor, SmtpTls};
use super::conn::{Conn, ConnError};
use super::sasl::{Bearer, gmail_challenge, parse_oauthbearer, parse_xoauth2};
use super::{Shared, Stage, UserSession, bump};

/// RFC 5321 command line limit; AUTH lines may be longer (RFC 4954 §4: 12,288).
const COMMAND_MAX: usize = 512;
const AUTH_MAX: usize = 12_288;

/// Mail transaction in progress.
#[derive(Default)]
struct Tx {
    from: String,
    params: Vec<String>,
    rcpts: Vec<String>,
    bdat: Option<Vec<u8>>,
}

/// Whether to go on after a command.
enum Flow {
    Continue,
    Close,
}

struct Session {
    shared: Arc<Shared>,
    conn: Conn,
    peer: SocketAddr,
    ehlo: bool,
    user: Option<String>,
    /// Counts this session for `user` in the per-user session peaks while it lives.
    counted: Option<UserSession>,
    tx: Option<Tx>,
}

pub(super) async fn run(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let conn =
        Conn::new(tcp, shared.config.read_timeout).with_reply_delay(shared.config.reply_delay);
    let mut s = Session {
        shared,
        conn,
        peer,
        ehlo: false,
        user: None,
        counted: None,
        tx: None,
    };
    if let Err(e) = s.serve().await {
        if !s.shared.config.fast {
            tracing::debug!(peer = %s.peer, error = %e, "fake SMTP session ended");
        }
        if matches!(e, ConnError::Timeout) {
            s.conn.reply("421 4.4.2 Timeout waiting for client input");
        }
    }
    s.conn.close().await;
}

fn code_of(reply: &str) -> u16 {
    reply.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0)
}

impl Session {
    async fn serve(&mut self) -> Result<(), ConnError> {
        if self.shared.config.tls == SmtpTls::Implicit && !self.handshake().await? {
            return Ok(());
        }
        if self.shared.down.load(Ordering::Relaxed) {
            self.conn.reply(super::replies::SERVICE_UNAVAILABLE);
            return Ok(());
        }
        if let Some(reply) = self.shared.take_injection(&Stage::Connect) {
            self.conn.reply(&reply);
            if code_of(&reply) >= 400 {
                return Ok(());
            }
        } else {
            let greeting = match self.shared.config.flavor {
                Flavor::Office365 => "Microsoft ESMTP MAIL Service ready",
                Flavor::Gmail => "ESMTP fake - gsmtp",
            };
            self.conn
                .reply(&format!("220 {} {greeting}", self.shared.config.hostname));
        }
        loop {
            let line = match self.conn.line(AUTH_MAX).await {
                Ok(line) => line,
                Err(ConnError::TooLong(_)) => {
                    self.conn.reply("500 5.5.2 Line too long");
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            if self.shared.down.load(Ordering::Relaxed) {
                self.conn.reply(super::replies::SERVICE_UNAVAILABLE);
                return Ok(());
            }
            if let Flow::Close = self.command(&line).await? {
                return Ok(());
            }
        }
    }

    /// TLS handshake; false (and counted) when the client gave up, e.g. on a bad certificate.
    async fn handshake(&mut self) -> Result<bool, ConnError> {
        let acceptor = self.shared.acceptor.clone();
        match self.conn.start_tls(&acceptor).await {
            Ok(()) => {
                bump(&self.shared.counters.tls_handshakes);
                Ok(true)
            }
            Err(e) => {
                bump(&self.shared.counters.tls_failures);
                if !self.shared.config.fast {
                    tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                }
                Ok(false)
            }
        }
    }

    /// Send `reply`; a 421 also ends the session.
    fn send(&mut self, reply: &str) -> Flow {
        self.conn.reply(reply);
        if code_of(reply) == 421 {
            Flow::Close
        } else {
            Flow::Continue
        }
    }

    async fn command(&mut self, raw: &[u8]) -> Result<Flow, ConnError> {
        let text = String::from_utf8_lossy(raw);
        let line = text.trim_end_matches(['\r', '\n']);
        let (verb, arg) = match line.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.trim()),
            None => (line.to_ascii_uppercase(), ""),
        };
        if !self.shared.config.fast {
            // Never log AUTH arguments: they are bearer tokens.
            let shown = if verb == "AUTH" {
                "AUTH <redacted>"
            } else {
                line
            };
            tracing::debug!(peer = %self.peer, command = shown, "fake SMTP command");
        }
        if verb != "AUTH" && raw.len() > COMMAND_MAX {
            return Ok(self.send("500 5.5.2 Line too long"));
        }
        let flow = match verb.as_str() {
            "EHLO" | "HELO" => self.ehlo(&verb, arg),
            "STARTTLS" => return self.starttls().await,
            "AUTH" => return self.auth(arg).await,
            "MAIL" => self.mail(arg),
            "RCPT" => self.rcpt(arg),
            "DATA" => return self.data().await,
            "BDAT" => return self.bdat(arg).await,
            "RSET" => {
                self.tx = None;
                self.send("250 2.0.0 Resetting")
            }
            "NOOP" => self.send("250 2.0.0 OK"),
            "VRFY" => self.send("252 2.1.5 Cannot VRFY user"),
            "QUIT" => {
                self.conn
                    .reply("221 2.0.0 Service closing transmission channel");
                Flow::Close
            }
            _ => self.send("500 5.3.3 Unrecognized command"),
        };
        Ok(flow)
    }

    fn ehlo(&mut self, verb: &str, arg: &str) -> Flow {
        if arg.is_empty() {
            return self.send("501 5.5.4 Invalid domain name");
        }
        self.ehlo = true;
        self.tx = None;
        let cfg = &self.shared.config;
        let greet = format!("{} Hello [{}]", cfg.hostname, self.peer.ip());
        if verb == "HELO" {
            return self.send(&format!("250 {greet}"));
        }
        let tls = self.conn.is_tls();
        let mut caps = vec![
            format!("SIZE {}", cfg.max_size),
            "PIPELINING".into(),
            "DSN".into(),
        ];
        caps.push("ENHANCEDSTATUSCODES".into());
        if cfg.tls == SmtpTls::StartTls && !tls {
            caps.push("STARTTLS".into());
        }
        if tls || cfg.tls == SmtpTls::NoStartTls {
            let mut mechs = match cfg.flavor {
                Flavor::Office365 => "LOGIN XOAUTH2".to_owned(),
                Flavor::Gmail => "LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN".to_owned(),
            };
            if cfg.oauthbearer {
                mechs.push_str(" OAUTHBEARER");
            }
            if cfg.auth_advert != AuthAdvert::EqualsOnly {
                caps.push(format!("AUTH {mechs}"));
            }
            if cfg.auth_advert != AuthAdvert::Standard {
                caps.push(format!("AUTH={mechs}"));
            }
        }
        caps.extend(["8BITMIME", "BINARYMIME"].map(String::from));
        if cfg.chunking {
            caps.push("CHUNKING".into());
        }
        caps.push("SMTPUTF8".into());
        let mut reply = format!("250-{greet}");
        for (i, cap) in caps.iter().enumerate() {
            let sep = if i + 1 == caps.len() { ' ' } else { '-' };
            reply.push_str(&format!("\r\n250{sep}{cap}"));
        }
        self.send(&reply)
    }

    async fn starttls(&mut self) -> Result<Flow, ConnError> {
        if self.shared.config.tls != SmtpTls::StartTls || self.conn.is_tls() {
            return Ok(self.send("500 5.3.3 Unrecognized command"));
        }
        self.conn.reply("220 2.0.0 SMTP server ready");
        if !self.handshake().await? {
            return Ok(Flow::Close);
        }
        // RFC 3207 §4.2: forget everything learnt before TLS.
        self.ehlo = false;
        self.user = None;
        self.counted = None;
        self.tx = None;
        Ok(Flow::Continue)
    }

    /// Read one SASL continuation line, base64-decoded. `None`: the client cancelled with `*`.
    async fn sasl_line(&mut self) -> Result<Option<Vec<u8>>, ConnError> {
        let line = self.conn.line(AUTH_MAX).await?;
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']).trim();
        if text == "*" {
            return Ok(None);
        }
        Ok(Some(STANDARD.decode(text).unwrap_or_default()))
    }

    async fn auth(&mut self, arg: &str) -> Result<Flow, ConnError> {
        let cfg = &self.shared.config;
        let tls = self.conn.is_tls();
        if !tls {
            bump(&self.shared.counters.cleartext_auth_attempts);
        }
        let advertised = tls || cfg.tls == SmtpTls::NoStartTls;
        let (mech, initial) = match arg.split_once(' ') {
            Some((m, i)) => (m.to_ascii_uppercase(), Some(i.trim().to_owned())),
            None => (arg.to_ascii_uppercase(), None),
        };
        let oauth = mech == "XOAUTH2" || (mech == "OAUTHBEARER" && cfg.oauthbearer);
        let basic = mech == "LOGIN" || (mech == "PLAIN" && cfg.flavor == Flavor::Gmail);
        if !advertised || !(oauth || basic) {
            return Ok(self.send("504 5.7.4 Unrecognized authentication type"));
        }
        if !self.ehlo {
            return Ok(self.send("503 5.5.2 Send hello first"));
        }
        if self.user.is_some() {
            return Ok(self.send("503 5.5.2 Already authenticated"));
        }
        if self.tx.is_some() {
            return Ok(self.send("503 5.5.2 AUTH not allowed during a mail transaction"));
        }
        if basic {
            return self.basic_auth(&mech, initial).await;
        }
        let message = match initial.as_deref() {
            Some("=") => Vec::new(),
            Some("*") => return Ok(self.send("501 5.7.0 Authentication cancelled")),
            Some(ir) => STANDARD.decode(ir).unwrap_or_default(),
            None => {
                self.conn.reply("334 ");
                match self.sasl_line().await? {
                    Some(m) => m,
                    None => return Ok(self.send("501 5.7.0 Authentication cancelled")),
                }
            }
        };
        let bearer: Option<Bearer> = if mech == "XOAUTH2" {
            parse_xoauth2(&message)
        } else {
            parse_oauthbearer(&message)
        };
        if let Some(reply) = self.shared.take_injection(&Stage::Auth) {
            if code_of(&reply) / 100 == 2 {
                self.user = bearer.and_then(|b| b.user);
                self.count_session();
                bump(&self.shared.counters.auth_successes);
            } else {
                bump(&self.shared.counters.auth_failures);
            }
            return Ok(self.send(&reply));
        }
        let accepted = bearer.and_then(|b| {
            self.shared
                .validator
                .check(b.user.as_deref(), &b.token, &self.shared.audiences)
        });
        match accepted {
            Some(user) => {
                self.user = Some(user);
                self.count_session();
                bump(&self.shared.counters.auth_successes);
                Ok(self.send("235 2.7.0 Authentication successful"))
            }
            None => {
                bump(&self.shared.counters.auth_failures);
                self.reject_token(&mech).await
            }
        }
    }

    fn count_session(&mut self) {
        if let Some(user) = &self.user {
            self.counted = Some(UserSession::start(&self.shared, user));
        }
    }

    async fn reject_token(&mut self, mech: &str) -> Result<Flow, ConnError> {
        match self.shared.config.flavor {
            Flavor::Office365 => Ok(self.send(&format!(
                "535 5.7.3 Authentication unsuccessful [{}]",
                self.shared.config.hostname
            ))),
            Flavor::Gmail => {
                // Gmail first sends a JSON error challenge; the client must answer it (an empty
                // line after XOAUTH2, `%x01` after OAUTHBEARER: RFC 7628 §3.2.3) to get the 535.
                let oauthbearer = mech == "OAUTHBEARER";
                self.conn
                    .reply(&format!("334 {}", gmail_challenge(oauthbearer)));
                let answer = self.conn.line(AUTH_MAX).await?;
                let expected = if oauthbearer { "AQ==" } else { "" };
                if String::from_utf8_lossy(&answer).trim_end() != expected {
                    return Ok(self.send("501 5.5.2 Cannot Decode response"));
                }
                Ok(self.send(
                    "535-5.7.8 Username and Password not accepted. For more information, go to\r\n\
                     535 5.7.8  https://support.google.com/mail/?p=BadCredentials fake - gsmtp",
                ))
            }
        }
    }

    /// LOGIN/PLAIN: read the credentials, then refuse: only OAuth is enabled at these providers.
    async fn basic_auth(&mut self, mech: &str, initial: Option<String>) -> Result<Flow, ConnError> {
        if mech == "LOGIN" {
            for prompt in ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6"] {
                if prompt.ends_with("VXNlcm5hbWU6") && initial.is_some() {
                    continue;
                }
                self.conn.reply(prompt);
                if self.sasl_line().await?.is_none() {
                    return Ok(self.send("501 5.7.0 Authentication cancelled"));
                }
            }
        } else if initial.is_none() {
            self.conn.reply("334 ");
            if self.sasl_line().await?.is_none() {
                return Ok(self.send("501 5.7.0 Authentication cancelled"));
            }
        }
        bump(&self.shared.counters.auth_failures);
        let reply = match self.shared.config.flavor {
            Flavor::Office365 => {
                "535 5.7.139 Authentication unsuccessful, basic authentication is disabled."
            }
            Flavor::Gmail => "535 5.7.8 Username and Password not accepted.",
        };
        Ok(self.send(reply))
    }
}

mod transaction;
