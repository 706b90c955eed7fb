//! `/api/v1/messages`: submit mail (structured JSON or a raw `message/rfc822` body), read the
//! sent-mail log, retry or delete queued mail. `send` keys see only what they submitted; a key
//! scoped to connections sees, retries and deletes the messages of those connections.
//!
//! A submission reserves room in the message memory budget before its body is read (see
//! [`crate::http::budget`]), and drops each copy of the message as soon as the next one exists:
//! body, then parsed parts, then decoded attachments, then the composed message.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::domain::{Connection, EmailAddress};
use crate::http::AppState;
use crate::http::auth::ApiCaller;
use crate::http::budget::Reservation;
use crate::http::error::{ApiError, ApiResult, FieldProblem, Problem};
use crate::outbox::QueueError;
use crate::outbox::direct::compose::{Attachment, Draft, header_addresses, strip_bcc};
use crate::store::messages::{MessageFilter, MessageStatus, NewMessage, Source};
use crate::store::queue_admin::{QueueAdminError, RetryTarget};

/// Headers a JSON submission may add; everything else is Postern's to write.
pub const HEADER_ALLOW_LIST: &[&str] = &[
    "In-Reply-To",
    "References",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Auto-Submitted",
    "Precedence",
    "X-Priority",
    "Importance",
];

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 200;

/// A file to attach.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachmentBody {
    pub filename: String,
    /// e.g. `application/pdf`; guessed from the file name when absent.
    pub content_type: Option<String>,
    /// The file's bytes, base64 (standard alphabet, padding optional).
    pub content: String,
}

/// A message built by Postern from parts.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    /// The connection to send through; may be left out when there is exactly one.
    pub connection: Option<String>,
    /// Default: the connection's mailbox.
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    /// Envelope only: never written into the message.
    #[serde(default)]
    pub bcc: Vec<String>,
    #[serde(default)]
    pub reply_to: Vec<String>,
    #[serde(default)]
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    #[serde(default)]
    pub attachments: Vec<AttachmentBody>,
    /// Extra headers from the allow-list (`In-Reply-To`, `References`, `List-Unsubscribe`, ...).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// Envelope parameters for a raw `message/rfc822` body.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RawParams {
    /// The connection to send through; may be left out when there is exactly one.
    pub connection: Option<String>,
    /// Envelope sender; default: the message's From, else the connection's mailbox.
    pub from: Option<String>,
    /// Envelope recipients, comma-separated; default: the To, Cc and Bcc headers.
    pub to: Option<String>,
}

/// What a submission returns (202): the message is durably queued.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub id: String,
    /// `queued`.
    pub status: &'static str,
    /// True when the `Idempotency-Key` matched an earlier submission: nothing new was queued.
    pub duplicate: bool,
}

fn field(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Validation(vec![FieldProblem {
        field: field.into(),
        message: message.into(),
    }])
}

fn addresses(name: &str, list: &[String]) -> Result<Vec<EmailAddress>, ApiError> {
    list.iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| EmailAddress::parse(s).map_err(|e| field(name, e.to_string())))
        .collect()
}

/// The connection named, or the only one (of the key's scope, for a scoped key).
async fn pick_connection(
    state: &AppState,
    caller: &ApiCaller,
    name: Option<&str>,
) -> ApiResult<Connection> {
    if let Some(n) = name {
        caller.check_connection_name(n)?;
    }
    match (name, caller.scope()) {
        (None, Some([only])) => Ok(state.store().connection_by_id(only.id).await?),
        (None, Some(scope)) => {
            let names: Vec<String> = scope.iter().map(|c| format!("`{}`", c.name)).collect();
            Err(field(
                "connection",
                format!(
                    "this key may send through {}: name the one to use",
                    if names.is_empty() {
                        "no connection any more".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            ))
        }
        (Some(n), _) => state
            .store()
            .find_connection(n)
            .await?
            .ok_or_else(|| field("connection", format!("connection `{n}` does not exist"))),
        (None, None) => {
            let mut all = state.store().list_connections().await?;
            match all.len() {
                1 => Ok(all.remove(0)),
                0 => Err(field(
                    "connection",
                    "there is no connection yet: create one first",
                )),
                _ => Err(field(
                    "connection",
                    "there are several connections: name the one to send through",
                )),
            }
        }
    }
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "the Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
            ))
        })?;
    Ok(Some(v.to_string()))
}

/// Extra header lines from the allow-list, checked; written above the built message's own.
fn extra_headers(body: &MessageBody) -> ApiResult<Vec<u8>> {
    let mut out = Vec::new();
    let reply_to = addresses("reply_to", &body.reply_to)?;
    if !reply_to.is_empty() {
        let list: Vec<&str> = reply_to.iter().map(EmailAddress::as_str).collect();
        out.extend_from_slice(format!("Reply-To: {}\r\n", list.join(", ")).as_bytes());
    }
    for (name, value) in &body.headers {
        let Some(canonical) = HEADER_ALLOW_LIST
            .iter()
            .find(|h| h.eq_ignore_ascii_case(name))
        else {
            return Err(field(
                "headers",
                format!(
                    "header `{name}` may not be set; allowed: {}",
                    HEADER_ALLOW_LIST.join(", ")
                ),
            ));
        };
        if value.chars().any(char::is_control) || !value.is_ascii() || value.len() > 900 {
            return Err(field(
                "headers",
                format!(
                    "header `{canonical}` must be printable ASCII on one line (at most 900 characters)"
                ),
            ));
        }
        out.extend_from_slice(format!("{canonical}: {value}\r\n").as_bytes());
    }
    Ok(out)
}

/// Builds the message from JSON parts with the same composer as `postern send`. Takes the
/// parts' text out of `body` as it goes, so two copies of an attachment never coexist.
fn compose(body: &mut MessageBody, conn: &Connection) -> ApiResult<(String, Vec<String>, Vec<u8>)> {
    let from = match &body.from {
        Some(f) => EmailAddress::parse(f).map_err(|e| field("from", e.to_string()))?,
        None => conn.settings.user.clone(),
    };
    let extra = extra_headers(body)?;
    let mut attachments = Vec::new();
    for (i, a) in body.attachments.iter_mut().enumerate() {
        let content = std::mem::take(&mut a.content);
        let data = base64::engine::general_purpose::STANDARD
            .decode(content.trim().trim_end_matches('='))
            .or_else(|_| {
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(content.trim().trim_end_matches('='))
            })
            .map_err(|_| field(&format!("attachments[{i}].content"), "not valid base64"))?;
        drop(content);
        let mut att = Attachment::new(a.filename.clone(), data);
        if let Some(ct) = &a.content_type {
            if ct.chars().any(|c| c.is_control() || c == ';') || !ct.contains('/') {
                return Err(field(
                    &format!("attachments[{i}].content_type"),
                    "not a content type like `application/pdf`",
                ));
            }
            att.content_type = ct.clone();
        }
        attachments.push(att);
    }
    let draft = Draft {
        from,
        from_name: conn.settings.display_name.clone(),
        to: addresses("to", &body.to)?,
        cc: addresses("cc", &body.cc)?,
        bcc: addresses("bcc", &body.bcc)?,
        subject: body.subject.clone(),
        text: body.text.take(),
        html: body.html.take(),
        attachments,
    };
    let composed = draft
        .compose()
        .map_err(|e| field("message", e.to_string()))?;
    drop(draft);
    // The extra headers go in front, in place (a large block grows without a copy).
    let mut bytes = composed.bytes;
    bytes.splice(0..0, extra);
    Ok((
        composed.from.to_string(),
        composed
            .recipients
            .iter()
            .map(ToString::to_string)
            .collect(),
        bytes,
    ))
}

/// A ready message: envelope from the parameters, else from its headers; Bcc removed.
fn raw(
    params: &RawParams,
    conn: &Connection,
    body: Bytes,
) -> ApiResult<(String, Vec<String>, Vec<u8>)> {
    let headers = header_addresses(&body).map_err(|e| field("message", e.to_string()))?;
    let from = match &params.from {
        Some(f) => EmailAddress::parse(f).map_err(|e| field("from", e.to_string()))?,
        None => headers
            .from
            .clone()
            .unwrap_or_else(|| conn.settings.user.clone()),
    };
    let recipients = match &params.to {
        Some(to) => addresses("to", std::slice::from_ref(to))?,
        None => headers.recipients(),
    };
    if recipients.is_empty() {
        return Err(field(
            "to",
            "no recipients: give `to` or put To/Cc/Bcc headers in the message",
        ));
    }
    let stripped = match strip_bcc(&body) {
        std::borrow::Cow::Owned(v) => Some(v),
        std::borrow::Cow::Borrowed(_) => None,
    };
    // Without a Bcc header the body itself becomes the message (no copy when it is unshared).
    let bytes = stripped.unwrap_or_else(|| Vec::from(body));
    Ok((
        from.to_string(),
        recipients.iter().map(ToString::to_string).collect(),
        bytes,
    ))
}

#[utoipa::path(post, path = "/api/v1/messages", tag = "messages", security(("api_key" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key (per API key) queues the message once."),
        RawParams,
    ),
    request_body(content(
        (MessageBody = "application/json"),
        (Vec<u8> = "message/rfc822"),
    )),
    responses(
        (status = 202, description = "Durably queued", body = Accepted),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 413, body = Problem),
        (status = 415, description = "Neither JSON nor message/rfc822", body = Problem),
        (status = 422, body = Problem),
        (status = 503, description = "Try again later (see `Retry-After`): the message memory budget is in use, the disk is full or the server is stopping", body = Problem)))]
pub async fn submit(
    caller: ApiCaller,
    State(state): State<AppState>,
    Query(params): Query<RawParams>,
    headers: HeaderMap,
    // After the key check, before the body: held until the message is queued.
    room: Reservation,
    body: axum::body::Body,
) -> ApiResult<Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let idempotency_key = idempotency_key(&headers)?;
    let unsupported = || {
        ApiError::UnsupportedMediaType(
            "send `application/json` (a message built from parts) or `message/rfc822` (a ready message)".into(),
        )
    };
    // Refused before the body is read.
    if !matches!(content_type.as_str(), "application/json" | "message/rfc822") {
        return Err(unsupported());
    }
    let body = Bytes::from(room.read_body(body, state.message_body_limit()).await?);
    let (conn, (mail_from, recipients, bytes)) = match content_type.as_str() {
        "application/json" => {
            let mut parsed: MessageBody =
                serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body))
                    .map_err(|e| {
                        ApiError::BadRequest(format!("field `{}`: {}", e.path(), e.inner()))
                    })?;
            drop(body);
            let conn = pick_connection(&state, &caller, parsed.connection.as_deref()).await?;
            let built = compose(&mut parsed, &conn)?;
            (conn, built)
        }
        "message/rfc822" => {
            let conn = pick_connection(&state, &caller, params.connection.as_deref()).await?;
            let built = raw(&params, &conn, body)?;
            (conn, built)
        }
        _ => return Err(unsupported()),
    };
    let outbox = state
        .outbox()
        .ok_or_else(|| ApiError::Unavailable("the outbox is not running".into()))?;
    let queued = outbox
        .enqueue(NewMessage {
            connection_id: conn.id,
            connection_name: conn.name().to_string(),
            source: Source::Api,
            submitter: Some(caller.submitter()),
            mail_from,
            recipients,
            body: bytes,
            idempotency_key,
        })
        .await
        .map_err(|e| match e {
            QueueError::DiskFull => {
                ApiError::Unavailable("the server's disk is full: try again later".into())
            }
            QueueError::Closed => {
                ApiError::Unavailable("the server is shutting down: try again".into())
            }
            QueueError::Store(e) => ApiError::internal(e),
        })?;
    tracing::info!(id = %queued.id, connection = %conn.name(), duplicate = queued.duplicate, "message queued");
    let location = format!("/api/v1/messages/{}", queued.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        axum::Json(Accepted {
            id: queued.id,
            status: "queued",
            duplicate: queued.duplicate,
        }),
    )
        .into_response())
}

/// Filters for the sent-mail log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// queued, sending, sent, deferred, failed or held.
    pub status: Option<String>,
    pub connection: Option<String>,
    /// Only messages queued at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Only messages to this address.
    pub recipient: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<u32>,
}

/// One page of the sent-mail log, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessagePage {
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<crate::store::messages::MessageSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

pub const DEFAULT_PAGE: u32 = 50;

/// The store filter for `params`, restricted to what the caller may read: its own messages for
/// an unscoped `send` key, its connections' messages for a scoped one.
fn caller_filter(params: &ListParams, caller: &ApiCaller) -> ApiResult<MessageFilter> {
    if let Some(c) = params.connection.as_deref().filter(|s| !s.is_empty()) {
        caller.check_connection_name(c)?;
    }
    Ok(MessageFilter {
        submitter: own(caller),
        connection_ids: caller.scope_ids(),
        ..filter(params)?
    })
}

/// The store filter for `params`, unrestricted (the admin UI's).
pub fn filter(params: &ListParams) -> ApiResult<MessageFilter> {
    let status = params
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<MessageStatus>())
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let since = params
        .since
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .map_err(|_| {
                    ApiError::BadRequest(format!(
                        "`since` must be an RFC 3339 time such as 2026-01-31T08:00:00Z, not `{s}`"
                    ))
                })
        })
        .transpose()?;
    Ok(MessageFilter {
        status,
        connection: params.connection.clone().filter(|s| !s.is_empty()),
        since,
        recipient: params.recipient.clone().filter(|s| !s.is_empty()),
        submitter: None,
        connection_ids: None,
        before_id: params.cursor.clone().filter(|s| !s.is_empty()),
        limit: Some(params.limit.unwrap_or(DEFAULT_PAGE).clamp(1, 200)),
    })
}

/// An unscoped `send` key reads only what it submitted; a scoped one, everything of its
/// connections (the scope is the boundary there).
fn own(caller: &ApiCaller) -> Option<String> {
    (!caller.is_admin() && caller.scope().is_none()).then(|| caller.submitter())
}

#[utoipa::path(get, path = "/api/v1/messages", tag = "messages", security(("api_key" = [])),
    params(ListParams),
    responses((status = 200, body = MessagePage),
        (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn list(
    caller: ApiCaller,
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> ApiResult<Response> {
    let f = caller_filter(&params, &caller)?;
    let limit = f.limit.unwrap_or(DEFAULT_PAGE) as usize;
    let messages = state.store().list_messages(&f).await?;
    let next_cursor = (messages.len() == limit)
        .then(|| messages.last().map(|m| m.id.clone()))
        .flatten();
    Ok(axum::Json(MessagePage {
        messages,
        next_cursor,
    })
    .into_response())
}

#[utoipa::path(get, path = "/api/v1/messages/{id}", tag = "messages", security(("api_key" = [])),
    params(("id" = String, Path, description = "Message id")),
    responses((status = 200, description = "Status, recipients with the provider's replies, attempts (each with `transport`: `smtp`, `graph`, or null when none was tried)", body = Object),
        (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn show(
    caller: ApiCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let detail = state
        .store()
        .message_detail(&id)
        .await?
        // Another key's message is "not found" to a send key: its existence is not theirs to know.
        .filter(|d| {
            caller.is_admin()
                || caller.scope().is_some()
                || d.summary.submitter.as_deref() == Some(&caller.submitter())
        })
        .ok_or_else(|| ApiError::NotFound(format!("message `{id}` does not exist")))?;
    if caller.scope().is_some() {
        let conn = state.store().message_connection_id(&id).await?;
        if !conn.is_some_and(|c| caller.may_use(c)) {
            return Err(ApiError::NotFound(format!("message `{id}` does not exist")));
        }
    }
    Ok(axum::Json(detail).into_response())
}

#[utoipa::path(post, path = "/api/v1/messages/{id}/retry", tag = "messages", security(("api_key" = [])),
    params(("id" = String, Path, description = "Message id")),
    responses((status = 202, description = "Queued for delivery now", body = Accepted),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "Already sent", body = Problem)))]
pub async fn retry(
    caller: ApiCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.check_message_action(&id, state.store().message_connection_id(&id).await?)?;
    state
        .store()
        .retry_messages(&RetryTarget::One(id.clone()))
        .await
        .map_err(queue_error)?;
    wake(&state, &id).await;
    tracing::info!(id = %id, by = %caller.key.name, "message retried");
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Accepted {
            id,
            status: "queued",
            duplicate: false,
        }),
    )
        .into_response())
}

/// Tells the message's connection worker to look now rather than at its next timer.
async fn wake(state: &AppState, id: &str) {
    if let (Some(outbox), Ok(Some(d))) = (state.outbox(), state.store().message_detail(id).await)
        && let Ok(Some(conn)) = state.store().find_connection(&d.summary.connection).await
    {
        outbox.wakers().wake(conn.id);
    }
}

pub(crate) fn queue_error(e: QueueAdminError) -> ApiError {
    match e {
        QueueAdminError::NotFound(id) => {
            ApiError::NotFound(format!("message `{id}` does not exist"))
        }
        e @ QueueAdminError::WrongState { .. } => ApiError::Conflict(e.to_string()),
        QueueAdminError::Store(e) => e.into(),
    }
}

#[utoipa::path(delete, path = "/api/v1/messages/{id}", tag = "messages", security(("api_key" = [])),
    params(("id" = String, Path, description = "Message id")),
    responses((status = 204, description = "Deleted from the queue"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "Not waiting (being sent or already sent)", body = Problem)))]
pub async fn remove(
    caller: ApiCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.check_message_action(&id, state.store().message_connection_id(&id).await?)?;
    state
        .store()
        .delete_queued_message(&id)
        .await
        .map_err(queue_error)?;
    tracing::info!(id = %id, by = %caller.key.name, "queued message deleted");
    Ok(StatusCode::NO_CONTENT)
}
