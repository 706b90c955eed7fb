//! What a Graph sendMail answer means for the message. Sans-IO: status, `Retry-After` and body in,
//! a class out, with the catalogue's explanation for the errors an admin must fix.

use std::time::Duration;

/// The class of one sendMail answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphReply {
    /// `202 Accepted`: Graph took the message.
    Sent,
    /// Try again later (429, 503, 504, other 5xx): after `retry_after` if Graph said.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// `401`: the token was refused; refresh it once and resend.
    TokenRefused(String),
    /// The message cannot pass as it is, or the admin must change something first.
    Failed(String),
}

/// The `error.code` and `error.message` of a Graph error body.
pub fn error_of(body: &[u8]) -> (Option<String>, Option<String>) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let e = &v["error"];
    (
        e["code"].as_str().map(str::to_string),
        e["message"].as_str().map(|m| m.chars().take(300).collect()),
    )
}

/// `Retry-After` as seconds (Graph sends seconds; an HTTP date is not used by Graph).
pub fn retry_after(value: Option<&str>) -> Option<Duration> {
    let secs: u64 = value?.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(24 * 3600)))
}

/// `HTTP 403 ErrorSendAsDenied: <message> — <cause> <remedy>`.
pub fn describe(status: u16, body: &[u8], connection: &str) -> String {
    let (code, message) = error_of(body);
    let mut text = format!("Graph answered HTTP {status}");
    if let Some(c) = &code {
        text.push(' ');
        text.push_str(c);
    }
    if let Some(m) = &message {
        text.push_str(": ");
        text.push_str(m);
    }
    let entry = code.as_deref().and_then(crate::explain::graph).or_else(|| {
        (status == 413)
            .then(|| crate::explain::graph("RequestEntityTooLarge"))
            .flatten()
    });
    if let Some(e) = entry {
        let cx = crate::explain::Context {
            connection: Some(connection),
            redirect_uri: None,
        };
        text.push_str(" — ");
        text.push_str(&e.explain(cx));
    }
    text
}

pub fn classify(status: u16, retry: Option<&str>, body: &[u8], connection: &str) -> GraphReply {
    match status {
        200..=299 => GraphReply::Sent,
        401 => GraphReply::TokenRefused(describe(status, body, connection)),
        408 | 429 | 500..=599 => GraphReply::Retry {
            reason: describe(status, body, connection),
            retry_after: retry_after(retry),
        },
        _ => GraphReply::Failed(describe(status, body, connection)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: &str) -> Vec<u8> {
        format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#).into_bytes()
    }

    #[test]
    fn each_answer_has_its_class() {
        assert_eq!(classify(202, None, b"", "c"), GraphReply::Sent);
        for (status, retry, after) in [
            (429, Some("7"), Some(7)),
            (503, None, None),
            (504, Some("x"), None),
        ] {
            match classify(status, retry, &body("ApplicationThrottled"), "c") {
                GraphReply::Retry { retry_after, .. } => {
                    assert_eq!(retry_after, after.map(Duration::from_secs), "{status}")
                }
                other => panic!("{status}: {other:?}"),
            }
        }
        assert!(matches!(
            classify(401, None, &body("InvalidAuthenticationToken"), "c"),
            GraphReply::TokenRefused(_)
        ));
        for (status, code, says) in [
            (403, "ErrorSendAsDenied", "Send as"),
            (403, "ErrorAccessDenied", "Grant admin consent"),
            (403, "MailboxNotEnabledForRESTAPI", "license"),
            (400, "ErrorInvalidRecipients", "valid address"),
            (413, "RequestEntityTooLarge", "4 MB"),
        ] {
            match classify(status, None, &body(code), "sales") {
                GraphReply::Failed(text) => {
                    assert!(text.contains(code) && text.contains(says), "{text}");
                }
                other => panic!("{code}: {other:?}"),
            }
        }
        // A 413 without a body still says why.
        match classify(413, None, b"", "c") {
            GraphReply::Failed(t) => assert!(t.contains("4 MB"), "{t}"),
            other => panic!("{other:?}"),
        }
    }
}
