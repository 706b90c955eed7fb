//! Test double for Postern: a fake OAuth identity provider and a fake provider SMTP server.
//!
//! Used in-process by Postern's integration tests and benchmarks, and as the `fake-provider`
//! binary for manual tries. Everything listens on 127.0.0.1 and nothing reaches the internet.
//!
//! # Layout
//!
//! - [`idp`]: [`FakeIdp`], a Microsoft-style OAuth 2.0 server over HTTP (authorize with PKCE,
//!   token with four grants and refresh-token rotation, device code, RFC 7662 introspection),
//!   with error injection and counters.
//! - [`smtp`]: [`FakeSmtp`], an Exchange Online or Gmail look-alike over TCP and rustls
//!   (STARTTLS or implicit TLS, XOAUTH2/OAUTHBEARER checked against the IdP, pipelining,
//!   DATA/BDAT), with injectable replies and a record of every message.
//! - [`graph`]: [`FakeGraph`], Microsoft Graph's `sendMail` over HTTPS (tokens checked against
//!   the IdP for Graph's audience, each MIME message recorded, injectable 429/401/403/413, a 4 MB cap).
//! - [`smtp::tls`]: the throw-away test CA whose PEM clients must trust.
//!
//! # Example
//!
//! ```
//! use fake_provider::idp::{DEFAULT_CLIENT_ID, IdpConfig};
//! use fake_provider::smtp::{SmtpConfig, Stage, TokenValidator, replies};
//! use fake_provider::{FakeIdp, FakeSmtp};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), fake_provider::Error> {
//! let idp = FakeIdp::start(IdpConfig::default()).await?;
//! let smtp = FakeSmtp::start(SmtpConfig::office365(), TokenValidator::Idp(idp.clone())).await?;
//!
//! // Seed a connection without running consent, then point the client at the fakes.
//! let scope = "https://outlook.office.com/SMTP.Send offline_access";
//! let refresh = idp.issue_refresh_token(DEFAULT_CLIENT_ID, "user@contoso.example", scope);
//! let token_url = idp.token_url("organizations"); // http://127.0.0.1:PORT/organizations/oauth2/v2.0/token
//! let (smtp_addr, ca_pem) = (smtp.addr(), smtp.ca_pem());
//! # let _ = (refresh, token_url, smtp_addr, ca_pem);
//!
//! // Make the provider misbehave.
//! smtp.inject(Stage::DataEnd, replies::SEND_AS_DENIED, 1);
//!
//! // ... run the client, then check what a user would see:
//! assert_eq!(idp.counters().refresh_token, 0);
//! assert!(smtp.messages().is_empty());
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod error;
pub mod graph;
pub mod idp;
pub mod smtp;
mod util;

pub use error::Error;
pub use graph::FakeGraph;
pub use idp::FakeIdp;
pub use smtp::FakeSmtp;
