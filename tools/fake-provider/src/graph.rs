//! A fake Microsoft Graph `sendMail` endpoint over HTTPS: `POST /v1.0/users/{user}/sendMail` with
//! `Content-Type: text/plain` and the message's MIME in base64, answered `202 Accepted` with no
//! body. Bearer tokens are checked against the fake IdP (audience `https://graph.microsoft.com`,
//! the Mail.Send permission, the mailbox), each accepted message is recorded byte for byte, and
//! Graph's answers can be injected: 429 with `Retry-After`, 401, 403 with Graph's error codes, 413.

mod draft;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::Error;
use crate::FakeIdp;
use crate::smtp::tls::TestCa;

/// The audience Graph tokens carry.
pub const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";
/// Graph refuses a request bigger than 4 MB (the base64 MIME counts).
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// One message Graph accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphMessage {
    /// The `{user}` of the URL (the mailbox it is sent from).
    pub mailbox: String,
    /// The MIME message, decoded from base64: exactly the bytes Postern sent.
    pub mime: Vec<u8>,
    /// Attachments uploaded through upload sessions (a message sent as a draft), in order.
    pub attachments: Vec<GraphAttachment>,
}

/// One file attached to a draft through an upload session, assembled from its chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphAttachment {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// A draft (`POST /users/{user}/messages`) until it is sent or deleted.
#[derive(Debug, Clone)]
struct Draft {
    mailbox: String,
    mime: Vec<u8>,
    attachments: Vec<GraphAttachment>,
}

/// An upload session: the bytes received so far for one attachment of one draft.
#[derive(Debug, Clone)]
struct Upload {
    draft: String,
    name: String,
    content_type: String,
    size: usize,
    bytes: Vec<u8>,
}

/// An answer to give instead of handling the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphReply {
    pub status: u16,
    /// Graph's `error.code`, e.g. `ErrorSendAsDenied`.
    pub code: &'static str,
    pub message: &'static str,
    /// `Retry-After`, seconds.
    pub retry_after: Option<u64>,
}

/// Graph's answers as Microsoft documents them.
pub mod replies {
    use super::GraphReply;

    pub fn throttled(retry_after: u64) -> GraphReply {
        GraphReply {
            status: 429,
            code: "ApplicationThrottled",
            message: "Application is over its MailboxConcurrency limit.",
            retry_after: Some(retry_after),
        }
    }
    pub const UNAUTHORIZED: GraphReply = GraphReply {
        status: 401,
        code: "InvalidAuthenticationToken",
        message: "Access token has expired or is not yet valid.",
        retry_after: None,
    };
    pub const SEND_AS_DENIED: GraphReply = GraphReply {
        status: 403,
        code: "ErrorSendAsDenied",
        message: "The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account.",
        retry_after: None,
    };
    pub const ACCESS_DENIED: GraphReply = GraphReply {
        status: 403,
        code: "ErrorAccessDenied",
        message: "Access is denied. Check credentials and try again.",
        retry_after: None,
    };
    pub const MAILBOX_NOT_ENABLED: GraphReply = GraphReply {
        status: 403,
        code: "MailboxNotEnabledForRESTAPI",
        message: "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        retry_after: None,
    };
    pub const INVALID_RECIPIENTS: GraphReply = GraphReply {
        status: 400,
        code: "ErrorInvalidRecipients",
        message: "At least one recipient is not valid.",
        retry_after: None,
    };
    pub const UNAVAILABLE: GraphReply = GraphReply {
        status: 503,
        code: "ServiceUnavailable",
        message: "Service Unavailable",
        retry_after: Some(1),
    };
}

/// What the fake saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GraphCounters {
    /// sendMail requests, whatever the answer.
    pub requests: u64,
    /// Answered 202.
    pub accepted: u64,
    /// Answered 401 because of the token (not injected).
    pub bad_tokens: u64,
    /// The most requests in flight at once.
    pub max_in_flight: usize,
}

#[derive(Default)]
struct Shared {
    messages: Mutex<Vec<GraphMessage>>,
    injected: Mutex<Vec<GraphReply>>,
    requests: AtomicU64,
    accepted: AtomicU64,
    bad_tokens: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    latency_us: AtomicU64,
    drafts: Mutex<std::collections::HashMap<String, Draft>>,
    uploads: Mutex<std::collections::HashMap<String, Upload>>,
    next_id: AtomicU64,
    /// Drafts deleted (`DELETE /users/{user}/messages/{id}`).
    deleted: AtomicU64,
}

struct Ctx {
    shared: Arc<Shared>,
    idp: FakeIdp,
    base_url: String,
}

/// The running fake; the server stops when the last handle is dropped... or the test ends.
#[derive(Clone)]
pub struct FakeGraph {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_pem: String,
    _task: Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for FakeGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGraph")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// TLS on accept: the handshake runs in the accept loop (a test fake: few clients, loopback).
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let handshake = self.acceptor.accept(tcp);
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), handshake).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

impl FakeGraph {
    /// Listens on 127.0.0.1 (port 0) with a certificate for `127.0.0.1` and `localhost` signed by a
    /// fresh test CA ([`FakeGraph::ca_pem`]); tokens are checked with `idp`.
    pub async fn start(idp: FakeIdp) -> Result<Self, Error> {
        let ca = TestCa::generate()?;
        let config = ca.server_config(&["127.0.0.1".to_string(), "localhost".to_string()])?;
        let tcp = TcpListener::bind("127.0.0.1:0").await?;
        let addr = tcp.local_addr()?;
        let shared = Arc::new(Shared::default());
        let ctx = Arc::new(Ctx {
            shared: shared.clone(),
            idp,
            base_url: format!("https://{addr}"),
        });
        let app = axum::Router::new()
            .route(
                "/v1.0/users/{user}/sendMail",
                axum::routing::post(send_mail),
            )
            .route(
                "/v1.0/users/{user}/messages",
                axum::routing::post(draft::create),
            )
            .route(
                "/v1.0/users/{user}/messages/{id}",
                axum::routing::delete(draft::delete),
            )
            .route(
                "/v1.0/users/{user}/messages/{id}/attachments/createUploadSession",
                axum::routing::post(draft::create_upload_session),
            )
            .route(
                "/v1.0/users/{user}/messages/{id}/send",
                axum::routing::post(draft::send),
            )
            .route("/upload/{session}", axum::routing::put(draft::upload))
            // The cap is answered by the handler (413 as Graph does), so read a little more.
            .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES * 2))
            .with_state(ctx);
        let listener = TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(config),
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            shared,
            addr,
            ca_pem: ca.ca_pem(),
            _task: Arc::new(AbortOnDrop(task)),
        })
    }

    /// `https://127.0.0.1:PORT`, for `--graph-url`.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The test CA's certificate (PEM) to trust (`--ca-file`).
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// The next `n` requests get `reply` (after the token check passes).
    pub fn inject(&self, reply: GraphReply, n: usize) {
        let mut q = self
            .shared
            .injected
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        q.extend(std::iter::repeat_n(reply, n));
    }

    /// Every request takes this long before it is answered (to see concurrency).
    pub fn set_latency(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.shared.latency_us.store(us, Ordering::Relaxed);
    }

    /// Drafts still in the mailboxes (not sent, not deleted).
    pub fn drafts(&self) -> usize {
        self.shared
            .drafts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Drafts deleted.
    pub fn deleted_drafts(&self) -> u64 {
        self.shared.deleted.load(Ordering::Relaxed)
    }

    pub fn messages(&self) -> Vec<GraphMessage> {
        self.shared
            .messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn counters(&self) -> GraphCounters {
        let s = &self.shared;
        GraphCounters {
            requests: s.requests.load(Ordering::Relaxed),
            accepted: s.accepted.load(Ordering::Relaxed),
            bad_tokens: s.bad_tokens.load(Ordering::Relaxed),
            max_in_flight: s.max_in_flight.load(Ordering::Relaxed),
        }
    }

    /// Waits until `n` messages in all were accepted (counted, nothing copied); false on timeout.
    pub async fn wait_for_count(&self, n: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.shared.accepted.load(Ordering::Relaxed) < n {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Waits until `n` messages were accepted (or `timeout`), and returns them.
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<GraphMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.messages();
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn error(status: u16, code: &str, message: &str, retry_after: Option<u64>) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, axum::Json(body)).into_response();
    if let Some(s) = retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, s.to_string().parse().expect("digits"));
    }
    r
}

/// Counts a request in flight for as long as it lives.
struct InFlight(Arc<Shared>);

impl InFlight {
    fn enter(shared: &Arc<Shared>) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn send_mail(
    State(ctx): State<Arc<Ctx>>,
    Path(user): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = &ctx.shared;
    let _flight = InFlight::enter(s);
    s.requests.fetch_add(1, Ordering::Relaxed);
    let latency = s.latency_us.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_micros(latency)).await;
    }
    // The token: issued by the IdP, for Graph, with Mail.Send, for this mailbox.
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(info) = token.and_then(|t| ctx.idp.validate_access_token(t)) else {
        s.bad_tokens.fetch_add(1, Ordering::Relaxed);
        return error(
            401,
            "InvalidAuthenticationToken",
            "Access token is empty, expired or not valid.",
            None,
        );
    };
    if info.aud != GRAPH_AUDIENCE {
        s.bad_tokens.fetch_add(1, Ordering::Relaxed);
        return error(401, "InvalidAuthenticationToken", "Invalid audience.", None);
    }
    let injected = {
        let mut q = s.injected.lock().unwrap_or_else(|e| e.into_inner());
        (!q.is_empty()).then(|| q.remove(0))
    };
    if let Some(r) = injected {
        return error(r.status, r.code, r.message, r.retry_after);
    }
    let may_send = info.scopes.iter().any(|p| p.starts_with("Mail.Send"));
    if !may_send {
        return error(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
            None,
        );
    }
    let shared_ok = info.scopes.iter().any(|p| p == "Mail.Send.Shared");
    if !info.app_only && !info.user.eq_ignore_ascii_case(&user) && !shared_ok {
        return error(
            403,
            "ErrorSendAsDenied",
            "The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account.",
            None,
        );
    }
    if body.len() > MAX_REQUEST_BYTES {
        return error(
            413,
            "RequestEntityTooLarge",
            "The request exceeds the maximum size (4 MB).",
            None,
        );
    }
    let text_plain = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("text/plain"));
    if !text_plain {
        return error(
            400,
            "ErrorMimeContentInvalid",
            "MIME content must be sent with Content-Type: text/plain.",
            None,
        );
    }
    let Ok(mime) = base64::engine::general_purpose::STANDARD.decode(body.trim_ascii()) else {
        return error(
            400,
            "ErrorMimeContentInvalidBase64String",
            "Invalid base64 string for MIME content.",
            None,
        );
    };
    s.messages
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(GraphMessage {
            mailbox: user,
            mime,
            attachments: Vec::new(),
        });
    s.accepted.fetch_add(1, Ordering::Relaxed);
    StatusCode::ACCEPTED.into_response()
}
