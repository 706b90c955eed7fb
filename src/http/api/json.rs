//! Request bodies: JSON with problem-document errors instead of axum's plain-text rejections.

use axum::extract::{FromRequest, Request};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::http::error::ApiError;

/// Like `axum::Json`, but a bad body becomes a problem document naming the field.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(v)) => v,
            Err(e) => return Err(e.into()),
        };
        serde_path_to_error::deserialize(bytes)
            .map(JsonBody)
            .map_err(|e| {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                if path == "." {
                    ApiError::BadRequest(format!("the JSON body is not valid: {message}"))
                } else {
                    ApiError::BadRequest(format!("field `{path}`: {message}"))
                }
            })
    }
}

/// Accepts a JSON number or string (ports, limits), kept as the text the validators expect.
pub fn number_or_string<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        N(i64),
        S(String),
    }
    Ok(match Option::<NumOrStr>::deserialize(d)? {
        None => None,
        Some(NumOrStr::N(n)) => Some(n.to_string()),
        Some(NumOrStr::S(s)) => Some(s),
    })
}

/// A secret field: held as `SecretString` from the moment it is parsed.
pub fn secret<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<secrecy::SecretString>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(secrecy::SecretString::from))
}
