//! A sender that keeps one authenticated session between messages and reconnects when needed.
//!
//! A pool is this, several times over: N transports behind a queue, one per allowed concurrent
//! connection (Exchange Online allows 3 per mailbox).

use super::client::SmtpClient;
use super::connection::SmtpConnection;
use super::error::SmtpError;
use super::message::Envelope;
use super::report::SendReport;
use crate::oauth::TokenSource;

/// Sends messages one at a time over a reused session.
///
/// The session is replaced when its token is older than the configured maximum age, when it
/// broke, or when the server closed it while idle; if a reused session turns out to be closed
/// before the message was sent, the message goes once more over a new session.
pub struct Transport<T> {
    client: SmtpClient<T>,
    idle: Option<SmtpConnection>,
}

impl<T> std::fmt::Debug for Transport<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("client", &self.client)
            .field("idle", &self.idle)
            .finish()
    }
}

impl<T: TokenSource> Transport<T> {
    pub fn new(client: SmtpClient<T>) -> Self {
        Self { client, idle: None }
    }

    pub async fn send(
        &mut self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<SendReport, SmtpError> {
        self.send_then(envelope, message, None).await
    }

    /// [`send`](Self::send), telling the session which message comes next so that its envelope
    /// goes out with this one's data ([`SmtpConnection::send_then`]).
    pub async fn send_then(
        &mut self,
        envelope: &Envelope,
        message: &[u8],
        next: Option<(&Envelope, &[u8])>,
    ) -> Result<SendReport, SmtpError> {
        let (mut conn, reused) = match self.take_usable().await {
            Some(conn) => (conn, true),
            None => (self.client.connect().await?, false),
        };
        let mut result = conn.send_then(envelope, message, next).await;
        if reused && result.as_ref().is_err_and(SmtpError::is_stale_connection) {
            tracing::debug!(host = %self.client.config().host, "reused session was closed; reconnecting once");
            conn = self.client.connect().await?;
            result = conn.send_then(envelope, message, next).await;
        }
        // Kept unless broken: an expired token is noticed, and the session ended with QUIT,
        // when the next message comes.
        if !conn.broken {
            self.idle = Some(conn);
        }
        result
    }

    /// Whether a session is kept open for the next message.
    pub fn has_idle_connection(&self) -> bool {
        self.idle.is_some()
    }

    /// Ends the kept session, if any, with QUIT.
    pub async fn close(&mut self) {
        if let Some(conn) = self.idle.take()
            && let Err(e) = conn.quit().await
        {
            tracing::debug!(error = %e, "QUIT failed");
        }
    }

    /// The idle session if it can still carry a message; an expired one is ended politely.
    async fn take_usable(&mut self) -> Option<SmtpConnection> {
        let mut conn = self.idle.take()?;
        if conn.is_usable() {
            return Some(conn);
        }
        if !conn.broken {
            // Only its token is too old: the server is still listening, say goodbye.
            let _ = conn.quit().await;
        }
        None
    }
}
