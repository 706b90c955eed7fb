//! The entry point: a connection's SMTP settings and token source, handing out authenticated sessions.

use std::sync::Arc;
use std::time::Instant;

use secrecy::SecretString;

use super::config::SmtpClientConfig;
use super::connection::SmtpConnection;
use super::error::SmtpError;
use super::handshake;
use super::tls;
use super::trace::{Step, Trace};
use super::transport::Transport;
use crate::oauth::{TokenError, TokenSource};

/// Everything needed to open authenticated sessions to one provider for one mailbox.
/// Cheap to clone: a pool or several workers can share it.
pub struct SmtpClient<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    config: SmtpClientConfig,
    tls: Arc<rustls::ClientConfig>,
    tokens: T,
}

impl<T> Clone for SmtpClient<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T> std::fmt::Debug for SmtpClient<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpClient")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl<T: TokenSource> SmtpClient<T> {
    /// Checks the configuration and loads the trusted certificates (platform roots plus the CA
    /// file, if any).
    pub fn new(config: SmtpClientConfig, tokens: T) -> Result<Self, SmtpError> {
        tls::server_name(&config.host)?;
        if !super::config::is_valid_hello_name(&config.hello_name) {
            return Err(SmtpError::Config(format!(
                "`{}` is not a valid EHLO name",
                config.hello_name
            )));
        }
        let tls = tls::client_config(config.ca_file.as_deref(), config.insecure_skip_tls_verify)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                tls,
                tokens,
            }),
        })
    }

    pub fn config(&self) -> &SmtpClientConfig {
        &self.inner.config
    }

    /// An authenticated session, ready to [`send`](SmtpConnection::send).
    ///
    /// If the server rejects the token (535 5.7.3, or a 401 challenge), the token is refreshed
    /// once and AUTH tried again, on a new connection if the server hung up.
    pub async fn connect(&self) -> Result<SmtpConnection, SmtpError> {
        self.connect_with(&mut Trace::off()).await
    }

    /// [`connect`](Self::connect), recording each step (DNS, TCP, TLS, EHLO, AUTH) for
    /// `connection test`; the steps are recorded whether or not it succeeds.
    pub async fn connect_traced(&self, steps: &mut Vec<Step>) -> Result<SmtpConnection, SmtpError> {
        self.connect_with(&mut Trace::into(steps)).await
    }

    /// A sender that keeps one session open between messages.
    pub fn transport(&self) -> Transport<T> {
        Transport::new(self.clone())
    }

    async fn connect_with(&self, trace: &mut Trace<'_>) -> Result<SmtpConnection, SmtpError> {
        let Inner {
            config,
            tls,
            tokens,
        } = &*self.inner;
        let mut conn = handshake::open(config, tls, trace).await?;

        let acquired = Instant::now();
        let token = token_step(trace, "token", tokens.access_token().await)?;
        match conn.authenticate(config, &token, trace).await {
            Ok(()) => {
                conn.token_acquired = acquired;
                return Ok(conn);
            }
            Err(e) if e.is_token_rejected() => {
                tracing::info!(host = %config.host, reply = %e, "token rejected; refreshing once");
            }
            Err(e) => return Err(e),
        }

        let acquired = Instant::now();
        let token = token_step(trace, "refresh", tokens.force_refresh().await)?;
        if !conn.is_usable() {
            conn = handshake::open(config, tls, trace).await?;
        }
        let second = match conn.authenticate(config, &token, trace).await {
            // Some servers hang up after a failed AUTH; we only see it when trying again.
            Err(SmtpError::Closed { .. } | SmtpError::Io { .. }) => {
                conn = handshake::open(config, tls, trace).await?;
                conn.authenticate(config, &token, trace).await
            }
            other => other,
        };
        second.map(|()| {
            conn.token_acquired = acquired;
            conn
        })
    }
}

fn token_step(
    trace: &mut Trace<'_>,
    name: &'static str,
    result: Result<SecretString, TokenError>,
) -> Result<SecretString, SmtpError> {
    let detail = match name {
        "refresh" => "refreshed the access token after the server rejected it",
        _ => "access token ready",
    };
    trace
        .record(name, result, |_| detail.to_string())
        .map_err(SmtpError::Token)
}
