//! Upstream SMTP client: delivery to the provider with STARTTLS/implicit TLS and XOAUTH2.
//!
//! # Layout
//!
//! Sans-IO (bytes in, values out; table-tested):
//! - `reply`: server replies and their parser, enhanced status codes.
//! - `ehlo`: the capabilities a server offers.
//! - `command`: commands whose `Display` is the wire text.
//! - `message`: the envelope, body checks, dot-stuffing.
//! - `error`, `explain`, `report`: what happened, for the retry policy and for humans.
//!
//! The async shell:
//! - `wire`: the stream, batched writes, buffered reads, timeouts.
//! - `handshake`: DNS, TCP, TLS, greeting, EHLO, STARTTLS.
//! - `auth`: XOAUTH2 / OAUTHBEARER with the token.
//! - `transaction`: MAIL/RCPT/DATA, pipelined when offered.
//! - `client`: [`SmtpClient`], which hands out authenticated [`SmtpConnection`]s.
//! - `transport`: [`Transport`], one reused session with reconnects.
//!
//! ```no_run
//! # use postern::smtp::client::{Envelope, SmtpClient, SmtpClientConfig};
//! # use postern::domain::TlsMode;
//! # async fn demo(tokens: impl postern::oauth::TokenSource) -> Result<(), postern::smtp::client::SmtpError> {
//! let config = SmtpClientConfig::new("smtp.office365.com", 587, TlsMode::Starttls, "app@example.com");
//! let mut transport = SmtpClient::new(config, tokens)?.transport();
//! let envelope = Envelope::new("app@example.com", ["someone@example.org"]);
//! let report = transport.send(&envelope, b"Subject: hi\r\n\r\nHello\r\n").await?;
//! assert!(report.all_accepted());
//! transport.close().await;
//! # Ok(()) }
//! ```

mod ahead;
mod auth;
#[allow(clippy::module_inception)]
mod client;
mod command;
mod config;
mod connection;
mod ehlo;
mod error;
mod explain;
mod fuzz;
mod handshake;
mod message;
mod reply;
mod report;
mod tls;
mod trace;
mod transaction;
mod transport;
mod wire;

#[cfg(test)]
mod tests;

pub use client::SmtpClient;
pub use config::{AuthMechanism, SmtpClientConfig, Timeouts, default_hello_name};
pub use connection::SmtpConnection;
pub use ehlo::Capabilities;
pub use error::{SmtpError, Stage};
pub use explain::explain_reply;
pub use fuzz::fuzz_reply;
pub use message::Envelope;
pub use reply::{EnhancedCode, Reply};
pub use report::{RecipientResult, SendReport};
pub use tls::{client_config as tls_client_config, fingerprint};
pub use trace::Step;
pub use transport::Transport;
