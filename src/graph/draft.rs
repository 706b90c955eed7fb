//! The `draft` way for a message over Graph's 4 MB request limit (`--graph-large draft`): create a
//! draft from the message without its large attachments (`POST /users/{user}/messages`, MIME in
//! base64), upload each attachment through an upload session
//! (`POST …/messages/{id}/attachments/createUploadSession`, then `PUT` chunks to the returned URL,
//! which carries its own authorization: no bearer), then `POST …/messages/{id}/send`. Creating and
//! updating a draft needs the `Mail.ReadWrite` permission besides `Mail.Send`.

use base64::Engine as _;
use bytes::Bytes;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};

use super::reply::{self, GraphReply};
use super::split::{self, Attachment};
use super::{GraphClient, GraphOutcome, MAX_REQUEST_BYTES, error_chain, token_outcome};
use crate::oauth::TokenSource;

/// Upload chunks: a multiple of 320 KiB, as Graph requires, and under 4 MB (10 × 320 KiB).
pub const CHUNK_BYTES: usize = 10 * 320 * 1024;

/// One HTTP answer: status, `Retry-After`, body (at most 64 KiB kept).
type Answer = (u16, Option<String>, Vec<u8>);

/// The bearer token in use, and whether it was already refreshed once after a 401.
struct Bearer {
    token: SecretString,
    refreshed: bool,
}

/// A step that did not succeed, already in the outbox's terms.
type Step<T> = Result<T, GraphOutcome>;

impl<S: TokenSource> GraphClient<S> {
    /// `{graph}/v1.0/users/{user}/messages[/rest…]`.
    fn messages_url(&self, rest: &[&str]) -> String {
        let mut url = self.base.clone();
        {
            let mut p = url.path_segments_mut().expect("an https base URL");
            p.clear().extend(["v1.0", "users", &self.user, "messages"]);
            p.extend(rest);
        }
        url.to_string()
    }

    /// One request (with `token` when given): the status, `Retry-After` and at most 64 KiB of
    /// the body (error bodies and Graph's answers here are small JSON; a 202 has none), or a
    /// network error.
    pub(super) async fn request(
        &self,
        method: Method,
        url: &str,
        token: Option<&SecretString>,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Answer, reqwest::Error> {
        let mut req = self.http.request(method, url).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t.expose_secret());
        }
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let mut resp = req.send().await?;
        let status = resp.status().as_u16();
        let retry = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut out = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            if out.len() < 64 * 1024 {
                out.extend_from_slice(&chunk);
            }
        }
        Ok((status, retry, out))
    }

    /// A request with the bearer token; after a 401, one forced refresh and one more try.
    /// Success is any 2xx: its body is returned.
    async fn authorized(
        &self,
        auth: &mut Bearer,
        method: Method,
        url: &str,
        content_type: &str,
        body: Bytes,
        what: &str,
    ) -> Step<Answer> {
        loop {
            let headers = [("content-type", content_type.to_string())];
            let answer = self
                .request(
                    method.clone(),
                    url,
                    Some(&auth.token),
                    &headers,
                    body.clone(),
                )
                .await
                .map_err(|e| GraphOutcome::Defer {
                    reason: format!(
                        "Graph request ({what}) to {url} failed: {}",
                        error_chain(&e)
                    ),
                    retry_after: None,
                })?;
            match reply::classify(answer.0, answer.1.as_deref(), &answer.2, &self.connection) {
                GraphReply::Sent => return Ok(answer),
                GraphReply::Retry {
                    reason,
                    retry_after,
                } => {
                    return Err(GraphOutcome::Defer {
                        reason: format!("{what}: {reason}"),
                        retry_after,
                    });
                }
                GraphReply::Failed(reason) => {
                    return Err(GraphOutcome::Fail(format!("{what}: {reason}")));
                }
                GraphReply::TokenRefused(reason) if auth.refreshed => {
                    return Err(GraphOutcome::Defer {
                        reason: format!(
                            "{what}: {reason} (a freshly refreshed token was refused too)"
                        ),
                        retry_after: None,
                    });
                }
                GraphReply::TokenRefused(_) => {
                    auth.refreshed = true;
                    auth.token = self.tokens.force_refresh().await.map_err(token_outcome)?;
                }
            }
        }
    }

    /// Sends `mime` (already prepared for the envelope) as a draft plus upload sessions.
    pub(super) async fn send_as_draft(&self, mime: &[u8]) -> GraphOutcome {
        let parts = match split::split(mime, MAX_REQUEST_BYTES) {
            Ok(p) => p,
            Err(e) => {
                return GraphOutcome::Fail(format!(
                    "not sent: the message is {} bytes, over Graph's 4 MB request limit, and \
                     cannot go as a draft (--graph-large draft): {e}; Postern never truncates a \
                     message",
                    mime.len()
                ));
            }
        };
        let mut auth = match self.tokens.access_token().await {
            Ok(token) => Bearer {
                token,
                refreshed: false,
            },
            Err(e) => return token_outcome(e),
        };
        let body = Bytes::from(base64::engine::general_purpose::STANDARD.encode(&parts.mime));
        let created = self
            .authorized(
                &mut auth,
                Method::POST,
                &self.messages_url(&[]),
                "text/plain",
                body,
                "creating the draft",
            )
            .await;
        let created = match created {
            Ok(a) => a,
            Err(GraphOutcome::Fail(reason)) if reason.contains("HTTP 403") => {
                return GraphOutcome::Fail(format!(
                    "{reason} — the message is over Graph's 4 MB limit and this connection sends \
                     such messages as a draft (--graph-large draft), which needs the Microsoft \
                     Graph Mail.ReadWrite permission (grant it and consent again), or set \
                     --graph-large fail to have such messages fail"
                ));
            }
            Err(other) => return other,
        };
        let id = serde_json::from_slice::<serde_json::Value>(&created.2)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_string));
        let Some(id) = id else {
            return GraphOutcome::Defer {
                reason: "creating the draft: Graph's answer has no message id".into(),
                retry_after: None,
            };
        };
        let mut result = Ok(());
        for att in &parts.attachments {
            result = self.upload(&mut auth, &id, att).await;
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = self
                .authorized(
                    &mut auth,
                    Method::POST,
                    &self.messages_url(&[&id, "send"]),
                    "application/json",
                    Bytes::new(),
                    "sending the draft",
                )
                .await
                .map(drop);
        }
        match result {
            Ok(()) => GraphOutcome::Sent(format!(
                "202 Accepted (Microsoft Graph draft with {} attachment(s) uploaded in sessions, \
                 then send)",
                parts.attachments.len()
            )),
            Err(outcome) => {
                // Leave no half-built draft in the mailbox; the next try builds a new one.
                let url = self.messages_url(&[&id]);
                let gone = self
                    .request(Method::DELETE, &url, Some(&auth.token), &[], Bytes::new())
                    .await
                    .is_ok_and(|a| (200..300).contains(&a.0));
                with_note(
                    outcome,
                    if gone {
                        " (the draft was deleted)"
                    } else {
                        " (the draft could not be deleted: it stays in the mailbox's Drafts)"
                    },
                )
            }
        }
    }

    async fn upload(&self, auth: &mut Bearer, id: &str, att: &Attachment) -> Step<()> {
        let what = format!("uploading attachment {}", att.name);
        let session = serde_json::json!({ "AttachmentItem": {
            "attachmentType": "file",
            "name": att.name,
            "size": att.bytes.len(),
            "contentType": att.content_type,
        }});
        let answer = self
            .authorized(
                auth,
                Method::POST,
                &self.messages_url(&[id, "attachments", "createUploadSession"]),
                "application/json",
                Bytes::from(session.to_string()),
                &what,
            )
            .await?;
        let upload_url = serde_json::from_slice::<serde_json::Value>(&answer.2)
            .ok()
            .and_then(|v| v["uploadUrl"].as_str().map(str::to_string))
            .ok_or_else(|| GraphOutcome::Defer {
                reason: format!("{what}: Graph's answer has no uploadUrl"),
                retry_after: None,
            })?;
        let total = att.bytes.len();
        let mut at = 0;
        while at < total {
            let end = (at + CHUNK_BYTES).min(total);
            let headers = [
                ("content-type", "application/octet-stream".to_string()),
                ("content-range", format!("bytes {at}-{}/{total}", end - 1)),
            ];
            // The upload URL is pre-authorized: a bearer token there is refused.
            let (status, retry, body) = self
                .request(
                    Method::PUT,
                    &upload_url,
                    None,
                    &headers,
                    Bytes::copy_from_slice(&att.bytes[at..end]),
                )
                .await
                .map_err(|e| GraphOutcome::Defer {
                    reason: format!("{what}: {}", error_chain(&e)),
                    retry_after: None,
                })?;
            match reply::classify(status, retry.as_deref(), &body, &self.connection) {
                GraphReply::Sent => {}
                GraphReply::Retry {
                    reason,
                    retry_after,
                } => {
                    return Err(GraphOutcome::Defer {
                        reason: format!("{what}: {reason}"),
                        retry_after,
                    });
                }
                GraphReply::Failed(r) | GraphReply::TokenRefused(r) => {
                    return Err(GraphOutcome::Fail(format!("{what}: {r}")));
                }
            }
            at = end;
        }
        Ok(())
    }
}

fn with_note(outcome: GraphOutcome, note: &str) -> GraphOutcome {
    match outcome {
        GraphOutcome::Defer {
            reason,
            retry_after,
        } => GraphOutcome::Defer {
            reason: reason + note,
            retry_after,
        },
        GraphOutcome::Hold(r) => GraphOutcome::Hold(r + note),
        GraphOutcome::Fail(r) => GraphOutcome::Fail(r + note),
        sent @ GraphOutcome::Sent(_) => sent,
    }
}
