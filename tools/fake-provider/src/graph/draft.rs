//! The fake's draft way of sending (what Postern's `--graph-large draft` uses): create a draft
//! from MIME, upload sessions that assemble an attachment from `Content-Range` chunks (the upload
//! URL refuses a bearer token, as Graph's does), send (the draft and its attachments become a
//! recorded message), delete. Creating a draft and its upload sessions needs `Mail.ReadWrite`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use super::{Ctx, Draft, GRAPH_AUDIENCE, GraphAttachment, GraphMessage, MAX_REQUEST_BYTES};
use super::{Upload, error};

/// The token's check: Graph's audience, the permission `need` (a prefix: `Mail.Send`,
/// `Mail.ReadWrite`), the mailbox. `Some` is the refusal to answer with.
fn refusal(ctx: &Ctx, headers: &HeaderMap, user: &str, need: &str) -> Option<Response> {
    let s = &ctx.shared;
    let info = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| ctx.idp.validate_access_token(t));
    let Some(info) = info.filter(|i| i.aud == GRAPH_AUDIENCE) else {
        s.bad_tokens.fetch_add(1, Ordering::Relaxed);
        return Some(error(
            401,
            "InvalidAuthenticationToken",
            "Access token is empty, expired or not valid.",
            None,
        ));
    };
    let injected = {
        let mut q = s.injected.lock().unwrap_or_else(|e| e.into_inner());
        (!q.is_empty()).then(|| q.remove(0))
    };
    if let Some(r) = injected {
        return Some(error(r.status, r.code, r.message, r.retry_after));
    }
    if !info.scopes.iter().any(|p| p.starts_with(need)) {
        return Some(error(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
            None,
        ));
    }
    if !info.app_only && !info.user.eq_ignore_ascii_case(user) {
        return Some(error(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
            None,
        ));
    }
    None
}

fn not_found() -> Response {
    error(
        404,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
        None,
    )
}

pub(super) async fn create(
    State(ctx): State<Arc<Ctx>>,
    Path(user): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    ctx.shared.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(r) = refusal(&ctx, &headers, &user, "Mail.ReadWrite") {
        return r;
    }
    if body.len() > MAX_REQUEST_BYTES {
        return error(
            413,
            "RequestEntityTooLarge",
            "The request exceeds the maximum size (4 MB).",
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
    let id = format!(
        "AAMk{}",
        ctx.shared.next_id.fetch_add(1, Ordering::Relaxed) + 1
    );
    ctx.shared
        .drafts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            id.clone(),
            Draft {
                mailbox: user,
                mime,
                attachments: Vec::new(),
            },
        );
    (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({ "id": id, "isDraft": true })),
    )
        .into_response()
}

pub(super) async fn create_upload_session(
    State(ctx): State<Arc<Ctx>>,
    Path((user, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    ctx.shared.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(r) = refusal(&ctx, &headers, &user, "Mail.ReadWrite") {
        return r;
    }
    if !ctx
        .shared
        .drafts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(&id)
    {
        return not_found();
    }
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let item = &v["AttachmentItem"];
    let (Some(name), Some(size)) = (item["name"].as_str(), item["size"].as_u64()) else {
        return error(
            400,
            "ErrorInvalidRequest",
            "AttachmentItem needs name and size.",
            None,
        );
    };
    let session = format!(
        "s{}",
        ctx.shared.next_id.fetch_add(1, Ordering::Relaxed) + 1
    );
    ctx.shared
        .uploads
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            session.clone(),
            Upload {
                draft: id,
                name: name.to_string(),
                content_type: item["contentType"].as_str().unwrap_or("").to_string(),
                size: size as usize,
                bytes: Vec::new(),
            },
        );
    (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({
            "uploadUrl": format!("{}/upload/{session}", ctx.base_url),
            "nextExpectedRanges": ["0-"],
        })),
    )
        .into_response()
}

/// `Content-Range: bytes FIRST-LAST/TOTAL`.
fn range(headers: &HeaderMap) -> Option<(usize, usize, usize)> {
    let v = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let (span, total) = v.strip_prefix("bytes ")?.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, total.parse().ok()?))
}

pub(super) async fn upload(
    State(ctx): State<Arc<Ctx>>,
    Path(session): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    ctx.shared.requests.fetch_add(1, Ordering::Relaxed);
    // Graph's upload URL carries its own authorization; a bearer token there is refused.
    if headers.contains_key(header::AUTHORIZATION) {
        return error(
            401,
            "InvalidAuthenticationToken",
            "Do not send an Authorization header to the upload URL.",
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
    let mut uploads = ctx.shared.uploads.lock().unwrap_or_else(|e| e.into_inner());
    let Some(up) = uploads.get_mut(&session) else {
        return not_found();
    };
    let Some((first, last, total)) = range(&headers) else {
        return error(
            400,
            "InvalidRange",
            "Content-Range is missing or malformed.",
            None,
        );
    };
    let last_chunk = last + 1 == total;
    // Every chunk but the last is a multiple of 320 KiB, and chunks come in order.
    if first != up.bytes.len()
        || total != up.size
        || last + 1 - first != body.len()
        || (!last_chunk && !body.len().is_multiple_of(320 * 1024))
    {
        return error(
            416,
            "InvalidRange",
            "The range does not follow the bytes received or is not a multiple of 320 KiB.",
            None,
        );
    }
    up.bytes.extend_from_slice(&body);
    if !last_chunk {
        let next = up.bytes.len();
        return (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "nextExpectedRanges": [format!("{next}-")] })),
        )
            .into_response();
    }
    let Some(up) = uploads.remove(&session) else {
        return not_found();
    };
    drop(uploads);
    let mut drafts = ctx.shared.drafts.lock().unwrap_or_else(|e| e.into_inner());
    let Some(draft) = drafts.get_mut(&up.draft) else {
        return not_found();
    };
    draft.attachments.push(GraphAttachment {
        name: up.name,
        content_type: up.content_type,
        bytes: up.bytes,
    });
    StatusCode::CREATED.into_response()
}

pub(super) async fn send(
    State(ctx): State<Arc<Ctx>>,
    Path((user, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let s = &ctx.shared;
    s.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(r) = refusal(&ctx, &headers, &user, "Mail.Send") {
        return r;
    }
    let Some(draft) = s
        .drafts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id)
    else {
        return not_found();
    };
    s.messages
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(GraphMessage {
            mailbox: draft.mailbox,
            mime: draft.mime,
            attachments: draft.attachments,
        });
    s.accepted.fetch_add(1, Ordering::Relaxed);
    StatusCode::ACCEPTED.into_response()
}

pub(super) async fn delete(
    State(ctx): State<Arc<Ctx>>,
    Path((user, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    ctx.shared.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(r) = refusal(&ctx, &headers, &user, "Mail.ReadWrite") {
        return r;
    }
    let gone = ctx
        .shared
        .drafts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id);
    if gone.is_none() {
        return not_found();
    }
    ctx.shared.deleted.fetch_add(1, Ordering::Relaxed);
    StatusCode::NO_CONTENT.into_response()
}
