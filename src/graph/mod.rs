//! The Microsoft Graph transport: `POST {graph}/v1.0/users/{user}/sendMail` with
//! `Content-Type: text/plain` and the message's MIME in base64; `202 Accepted` means sent.
//!
//! - [`envelope`]: the envelope wins over the headers (sans-IO).
//! - [`reply`]: what an answer means: sent, retry (with `Retry-After`), token refused, failed (sans-IO).
//! - [`split`]: a message over 4 MB, without its large attachments, and those (sans-IO).
//! - `draft`: `--graph-large draft`: draft, attachment upload sessions, send.
//! - [`GraphClient`]: the thin async shell: token, request, one forced refresh after a 401.

mod draft;
pub mod envelope;
pub mod reply;
pub mod split;

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;

use crate::domain::{Connection, GraphLarge};
use crate::oauth::{TokenError, TokenSource};
pub use reply::GraphReply;

/// Graph refuses a request bigger than 4 MB; the base64 body is all of it but a few bytes.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// How long one sendMail request may take (a 4 MB upload included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// What one delivery through Graph came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphOutcome {
    /// Accepted (`202`), with what Postern noted (Bcc added, recipients removed).
    Sent(String),
    /// Not sent; try again, after `retry_after` when Graph said.
    Defer {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The connection needs an admin (re-authorization): hold its mail.
    Hold(String),
    /// Never passes as it is; the reason says what the admin must change.
    Fail(String),
}

/// Why a Graph client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("Graph transport: {0}")]
    Config(String),
}

/// One connection's Graph sender. Cheap to keep; requests reuse its HTTPS connections.
#[derive(Debug)]
pub struct GraphClient<S> {
    http: reqwest::Client,
    url: String,
    connection: String,
    tokens: S,
    /// The Graph base URL and the mailbox, for the draft requests.
    base: url::Url,
    user: String,
    large: GraphLarge,
}

/// The sendMail URL of a connection: the mailbox's address, percent-encoded as a path segment.
pub fn send_mail_url(conn: &Connection) -> String {
    let mut url = conn.settings.graph_base();
    url.path_segments_mut()
        .expect("an https base URL")
        .clear()
        .extend(["v1.0", "users", conn.settings.user.as_str(), "sendMail"]);
    url.to_string()
}

/// An HTTPS client trusting the platform roots and the connection's CA file.
pub fn http_client(
    conn: &Connection,
    insecure_skip_tls_verify: bool,
) -> Result<reqwest::Client, GraphError> {
    let tls = crate::smtp::client::tls_client_config(
        conn.settings.ca_file.as_deref(),
        insecure_skip_tls_verify,
    )
    .map_err(|e| GraphError::Config(e.to_string()))?;
    reqwest::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(15))
        // sendMail never redirects; following one would send the token elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("postern/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| GraphError::Config(e.to_string()))
}

fn token_outcome(e: TokenError) -> GraphOutcome {
    if e.needs_reauthorization() || matches!(e, TokenError::NotUsable(_)) {
        GraphOutcome::Hold(e.to_string())
    } else {
        let retry_after = match &e {
            TokenError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        };
        GraphOutcome::Defer {
            reason: e.to_string(),
            retry_after,
        }
    }
}

/// The message as Graph takes it: too big is refused here, before any request (never truncated).
pub fn encode(mime: &[u8], connection: &str) -> Result<Bytes, String> {
    let encoded_len = mime.len().div_ceil(3) * 4;
    if encoded_len > MAX_REQUEST_BYTES {
        let entry = crate::explain::graph("RequestEntityTooLarge")
            .map(|e| {
                e.explain(crate::explain::Context {
                    connection: Some(connection),
                    redirect_uri: None,
                })
            })
            .unwrap_or_default();
        return Err(format!(
            "not sent: the message is {} bytes, {} bytes in base64, over Graph's 4 MB request limit \
             ({MAX_REQUEST_BYTES} bytes); Postern never truncates a message. To send such \
             messages as a draft plus attachment uploads, set `postern connection edit {connection} \
             --graph-large draft` (needs the Graph Mail.ReadWrite permission) — {entry}",
            mime.len(),
            encoded_len
        ));
    }
    Ok(Bytes::from(
        base64::engine::general_purpose::STANDARD.encode(mime),
    ))
}

impl<S: TokenSource> GraphClient<S> {
    pub fn new(
        conn: &Connection,
        insecure_skip_tls_verify: bool,
        tokens: S,
    ) -> Result<Self, GraphError> {
        Ok(Self {
            http: http_client(conn, insecure_skip_tls_verify)?,
            url: send_mail_url(conn),
            connection: conn.name().to_string(),
            tokens,
            base: conn.settings.graph_base(),
            user: conn.settings.user.as_str().to_string(),
            large: conn.settings.graph_large,
        })
    }

    /// The sendMail URL this client posts to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One sendMail POST with `token`: the status, `Retry-After` and body, or a network error.
    async fn post(
        &self,
        token: &secrecy::SecretString,
        body: Bytes,
    ) -> Result<(u16, Option<String>, Vec<u8>), reqwest::Error> {
        let content_type = [("Content-Type", "text/plain".to_string())];
        self.request(
            reqwest::Method::POST,
            &self.url,
            Some(token),
            &content_type,
            body,
        )
        .await
    }

    /// Sends `mime` to exactly `recipients` (see [`envelope`]).
    pub async fn send(&self, recipients: &[String], mime: &[u8]) -> GraphOutcome {
        let prepared = envelope::prepare(mime, recipients);
        let body = match encode(&prepared.mime, &self.connection) {
            Ok(b) => b,
            Err(_) if self.large == GraphLarge::Draft => {
                return match self.send_as_draft(&prepared.mime).await {
                    GraphOutcome::Sent(s) => GraphOutcome::Sent(note(&s, &prepared)),
                    other => other,
                };
            }
            Err(reason) => return GraphOutcome::Fail(reason),
        };
        let mut token = match self.tokens.access_token().await {
            Ok(t) => t,
            Err(e) => return token_outcome(e),
        };
        let mut refreshed = false;
        loop {
            let (status, retry, resp) = match self.post(&token, body.clone()).await {
                Ok(r) => r,
                Err(e) => {
                    return GraphOutcome::Defer {
                        reason: format!(
                            "Graph request to {} failed: {}",
                            self.url,
                            error_chain(&e)
                        ),
                        retry_after: None,
                    };
                }
            };
            match reply::classify(status, retry.as_deref(), &resp, &self.connection) {
                GraphReply::Sent => {
                    return GraphOutcome::Sent(note(
                        &format!("{status} Accepted (Microsoft Graph sendMail)"),
                        &prepared,
                    ));
                }
                GraphReply::Retry {
                    reason,
                    retry_after,
                } => {
                    return GraphOutcome::Defer {
                        reason,
                        retry_after,
                    };
                }
                GraphReply::Failed(reason) => return GraphOutcome::Fail(reason),
                GraphReply::TokenRefused(reason) if refreshed => {
                    // A fresh token refused too: the scope or consent is wrong, not the token's age.
                    return GraphOutcome::Defer {
                        reason: format!("{reason} (a freshly refreshed token was refused too)"),
                        retry_after: None,
                    };
                }
                GraphReply::TokenRefused(_) => {
                    refreshed = true;
                    token = match self.tokens.force_refresh().await {
                        Ok(t) => t,
                        Err(e) => return token_outcome(e),
                    };
                }
            }
        }
    }
}

fn note(sent: &str, p: &envelope::Prepared) -> String {
    let mut s = sent.to_string();
    if !p.added_bcc.is_empty() {
        s.push_str(&format!("; Bcc added for {}", p.added_bcc.join(", ")));
    }
    if !p.removed.is_empty() {
        s.push_str(&format!(
            "; removed from the headers (not in the envelope): {}",
            p.removed.join(", ")
        ));
    }
    s
}

/// The error and its sources, one line (reqwest hides the cause, e.g. the TLS failure, in them).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
