//! Microsoft-shaped OAuth error bodies and the injected-failure type.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::util::{now_unix, random_guid, timestamp};

/// An OAuth error as the token endpoint answers it (`{"error","error_description","error_codes",...}`).
#[derive(Debug, Clone)]
pub(crate) struct OAuthError {
    pub status: u16,
    pub error: String,
    pub code: u32,
    pub description: String,
}

impl OAuthError {
    pub fn new(status: u16, error: &str, code: u32, description: impl Into<String>) -> Self {
        Self {
            status,
            error: error.to_owned(),
            code,
            description: description.into(),
        }
    }

    /// Google's shape: `{"error","error_description"}`, no AADSTS code.
    pub fn plain(status: u16, error: &str, description: impl Into<String>) -> Self {
        Self::new(status, error, 0, description)
    }

    /// 400 `invalid_grant`.
    pub fn grant(code: u32, description: impl Into<String>) -> Self {
        Self::new(400, "invalid_grant", code, description)
    }

    /// 400 `invalid_request`.
    pub fn request(code: u32, description: impl Into<String>) -> Self {
        Self::new(400, "invalid_request", code, description)
    }
}

/// The JSON body Microsoft sends with an error: the description carries the AADSTS code and ids.
pub(crate) fn error_body(error: &str, codes: &[u32], description: &str) -> serde_json::Value {
    let trace = random_guid();
    let correlation = random_guid();
    let ts = timestamp(now_unix());
    let description = match codes.first() {
        Some(code) if !description.starts_with("AADSTS") => format!("AADSTS{code}: {description}"),
        _ => description.to_owned(),
    };
    serde_json::json!({
        "error": error,
        "error_description": format!(
            "{description} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {ts}"
        ),
        "error_codes": codes,
        "timestamp": ts,
        "trace_id": trace,
        "correlation_id": correlation,
    })
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let body = if self.code == 0 {
            serde_json::json!({"error": self.error, "error_description": self.description})
        } else {
            error_body(&self.error, &[self.code], &self.description)
        };
        (status, axum::Json(body)).into_response()
    }
}

/// A failure the test asks the token endpoint to produce instead of its normal answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InjectedError {
    /// HTTP status (e.g. 400, 401, 429, 500, 503).
    pub status: u16,
    /// OAuth `error` code; `None` sends a plain-text body instead of JSON (like a proxy error page).
    pub error: Option<String>,
    /// `error_description`; an `AADSTSnnnn:` prefix also fills `error_codes`.
    pub description: Option<String>,
    /// `Retry-After` header, in seconds.
    pub retry_after: Option<u64>,
}

impl InjectedError {
    /// An OAuth error with the given status, `error` and description.
    pub fn oauth(status: u16, error: &str, description: &str) -> Self {
        Self {
            status,
            error: Some(error.to_owned()),
            description: Some(description.to_owned()),
            retry_after: None,
        }
    }

    /// A bare HTTP status (plain-text body), e.g. 503 or 429, optionally with `Retry-After`.
    pub fn http(status: u16, retry_after: Option<u64>) -> Self {
        Self {
            status,
            error: None,
            description: None,
            retry_after,
        }
    }

    pub(crate) fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = match &self.error {
            Some(error) => {
                let description = self.description.as_deref().unwrap_or("");
                let codes: Vec<u32> = aadsts_code(description).into_iter().collect();
                (status, axum::Json(error_body(error, &codes, description))).into_response()
            }
            None => (
                status,
                status.canonical_reason().unwrap_or("error").to_owned(),
            )
                .into_response(),
        };
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// The number in an `AADSTSnnnn:` prefix.
fn aadsts_code(description: &str) -> Option<u32> {
    let rest = description.strip_prefix("AADSTS")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_prefix_is_parsed_and_not_repeated() {
        assert_eq!(
            aadsts_code("AADSTS7000215: Invalid client secret provided."),
            Some(7000215)
        );
        let body = error_body(
            "invalid_client",
            &[7000215],
            "AADSTS7000215: Invalid client secret",
        );
        let d = body["error_description"].as_str().unwrap();
        assert!(d.starts_with("AADSTS7000215: Invalid client secret Trace ID: "));
        let body = error_body("invalid_grant", &[70000], "Bad grant.");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .starts_with("AADSTS70000: Bad grant.")
        );
    }
}
