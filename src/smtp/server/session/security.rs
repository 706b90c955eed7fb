//! The session's AUTH (PLAIN, LOGIN) and STARTTLS handling, with failed-AUTH throttling.

use secrecy::SecretString;

use super::{Action, Greeting, Phase, SaslStep, Session, Wait};
use crate::smtp::server::auth::{self, SaslError};
use crate::smtp::server::command::Mechanism;
use crate::smtp::server::reply::Reply;

impl Session {
    pub(super) fn starttls(&mut self) {
        if !self.config.starttls_available {
            return self.error(Reply::status(502, "5.5.1", "STARTTLS not available"));
        }
        if self.peer.tls_active {
            return self.error(Reply::status(503, "5.5.1", "TLS already active"));
        }
        if !matches!(self.greeting, Some(Greeting::Ehlo(_))) {
            return self.error(Reply::status(503, "5.5.1", "Send EHLO first"));
        }
        self.reply(Reply::status(220, "2.0.0", "Ready to start TLS"));
        // RFC 3207 §4.2: forget everything learned in cleartext, AUTH included. A device is
        // known by its address, not by anything it said: it stays itself.
        self.greeting = None;
        self.identity = self.device.clone();
        self.tx = None;
        self.buf.clear();
        self.phase = Phase::Waiting(Wait::Tls);
        self.push(Action::StartTls);
    }

    /// AUTH is offered on encrypted or loopback connections, or where the admin allowed it.
    pub(super) fn auth_allowed(&self) -> bool {
        self.peer.tls_active
            || (self.peer.is_loopback() && self.config.cleartext_auth_on_loopback)
            || self.config.allow_cleartext_auth
            || self
                .config
                .cleartext_auth_networks
                .iter()
                .any(|net| net.contains(self.peer.addr.ip()))
    }

    pub(super) fn auth(&mut self, mechanism: Mechanism, initial: Option<SecretString>) {
        // Devices that only know HELO may still AUTH, where the admin allowed them leniency.
        let greeted = match self.greeting {
            Some(Greeting::Ehlo(_)) => true,
            Some(Greeting::Helo(_)) => self.peer.lenient,
            None => false,
        };
        if !greeted {
            return self.error(Reply::status(503, "5.5.1", "Send EHLO first"));
        }
        // A device may still log in as a relay user; it becomes that user.
        if self.identity.is_some() && self.identity != self.device {
            return self.error(Reply::status(503, "5.5.1", "Already authenticated"));
        }
        if self.tx.is_some() {
            return self.error(Reply::status(
                503,
                "5.5.1",
                "AUTH not allowed during a mail transaction",
            ));
        }
        if !self.auth_allowed() {
            return self.error(Reply::status(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            ));
        }
        match (mechanism, initial) {
            (Mechanism::Other, _) => {
                self.error(Reply::status(
                    504,
                    "5.5.4",
                    "Unrecognized authentication type",
                ));
            }
            (Mechanism::Plain, None) => {
                self.phase = Phase::Sasl(SaslStep::Plain);
                self.reply(Reply::plain(334, ""));
            }
            (Mechanism::Plain, Some(response)) => self.sasl_plain(&response),
            (Mechanism::Login, None) => {
                self.phase = Phase::Sasl(SaslStep::LoginUser);
                self.reply(Reply::plain(334, "VXNlcm5hbWU6"));
            }
            (Mechanism::Login, Some(response)) => self.sasl_login_user(&response),
        }
    }

    pub(super) fn sasl_line(&mut self, step: SaslStep, line: &[u8]) {
        let Ok(text) = std::str::from_utf8(line) else {
            return self.sasl_error(SaslError::Base64);
        };
        if text.trim() == "*" {
            return self.reply(Reply::status(501, "5.0.0", "Authentication cancelled"));
        }
        let response = SecretString::from(text.to_string());
        match step {
            SaslStep::Plain => self.sasl_plain(&response),
            SaslStep::LoginUser => self.sasl_login_user(&response),
            SaslStep::LoginPassword { username } => match auth::login_password(&response) {
                Ok(password) => self.authenticate(username, password),
                Err(e) => self.sasl_error(e),
            },
        }
    }

    fn sasl_plain(&mut self, response: &SecretString) {
        match auth::plain(response) {
            Ok(c) => self.authenticate(c.username, c.password),
            Err(e) => self.sasl_error(e),
        }
    }

    fn sasl_login_user(&mut self, response: &SecretString) {
        match auth::login_username(response) {
            Ok(username) => {
                self.phase = Phase::Sasl(SaslStep::LoginPassword { username });
                self.reply(Reply::plain(334, "UGFzc3dvcmQ6"));
            }
            Err(e) => self.sasl_error(e),
        }
    }

    fn sasl_error(&mut self, e: SaslError) {
        match e {
            SaslError::Base64 => self.error(Reply::status(501, "5.5.2", "Invalid base64 data")),
            SaslError::Malformed => {
                self.error(Reply::status(
                    501,
                    "5.5.2",
                    "Malformed authentication response",
                ));
            }
            SaslError::Unacceptable => self.auth_failed(),
        }
    }

    fn authenticate(&mut self, username: String, password: SecretString) {
        self.phase = Phase::Waiting(Wait::Auth);
        self.push(Action::Authenticate { username, password });
    }

    /// Starts this session's failure count at `failures` earlier ones from the same client
    /// (within the throttle's limit less one, so a right password still gets its one try).
    pub(crate) fn remember_auth_failures(&mut self, failures: u32) {
        let limit = self.config.auth_throttle.max_failures.saturating_sub(1);
        self.auth_failures = failures.min(limit);
    }

    /// Password guessing gets slower, then the connection is closed.
    pub(super) fn auth_failed(&mut self) {
        self.auth_failures += 1;
        let throttle = self.config.auth_throttle;
        let delay = throttle.delay_for(self.auth_failures);
        if !delay.is_zero() {
            self.push(Action::Delay(delay));
        }
        if self.auth_failures >= throttle.max_failures {
            let host = &self.config.hostname;
            self.reply(Reply::status(
                421,
                "4.7.0",
                format!("{host} Too many authentication failures"),
            ));
            self.close();
        } else {
            self.reply(Reply::status(
                535,
                "5.7.8",
                "Authentication credentials invalid",
            ));
        }
    }
}
