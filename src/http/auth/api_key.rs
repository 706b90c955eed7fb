//! `Authorization: Bearer pk_...` for the HTTP API.
//!
//! A wrong key costs an HMAC and one indexed read, never a write, and leaves nothing behind in
//! memory: the HMAC key is read once and kept ([`ApiKeyCheck`]).

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use secrecy::SecretString;

use crate::http::AppState;
use crate::http::error::ApiError;
use crate::store::{AccessError, ApiKey, ApiRole};

type Hasher = Box<dyn Fn(&SecretString) -> Option<Vec<u8>> + Send + Sync>;

/// Checks presented keys with the HMAC key read once from the store.
#[derive(Default)]
pub struct ApiKeyCheck {
    hasher: tokio::sync::OnceCell<Hasher>,
}

impl std::fmt::Debug for ApiKeyCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKeyCheck(..)")
    }
}

impl ApiKeyCheck {
    /// The live key `presented`, if any.
    pub async fn authenticate(
        &self,
        store: &crate::store::Store,
        presented: &SecretString,
    ) -> Result<Option<ApiKey>, AccessError> {
        let hasher = self
            .hasher
            .get_or_try_init(|| async {
                let hasher = store.api_key_hasher().await?;
                Ok::<Hasher, AccessError>(Box::new(move |s| hasher.hash(s)))
            })
            .await?;
        match hasher(presented) {
            Some(hash) => store.authenticate_api_key_hash(&hash).await,
            None => Ok(None),
        }
    }
}

/// The API key that made the request.
#[derive(Debug, Clone)]
pub struct ApiCaller {
    pub key: ApiKey,
}

impl ApiCaller {
    /// `admin` keys only; `send` keys get 403.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.key.role {
            ApiRole::Admin => Ok(()),
            ApiRole::Send => Err(ApiError::Forbidden(format!(
                "API key `{}` has the `send` role: it may only submit messages and read its own; \
                 this needs an `admin` key",
                self.key.name
            ))),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.key.role == ApiRole::Admin
    }

    /// How messages submitted with this key name their submitter.
    pub fn submitter(&self) -> String {
        format!("api-key:{}", self.key.name)
    }
}

fn bearer(parts: &Parts) -> Result<SecretString, ApiError> {
    let missing = || {
        ApiError::Unauthorized(
            "send an API key as `Authorization: Bearer pk_...` (create one with \
             `postern api-key create NAME --role send|admin`)"
                .into(),
        )
    };
    let value = parts.headers.get(AUTHORIZATION).ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(missing());
    }
    Ok(SecretString::from(token.trim().to_string()))
}

impl FromRequestParts<AppState> for ApiCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        match state.api_keys().authenticate(state.store(), &token).await? {
            Some(key) => {
                tracing::Span::current().record("api_key", key.name.as_str());
                Ok(ApiCaller { key })
            }
            None => Err(ApiError::Unauthorized(
                "the API key is not valid or has been revoked".into(),
            )),
        }
    }
}

/// An `admin` API key: `send` keys are refused (403) before the body is even read.
#[derive(Debug, Clone)]
pub struct AdminKey(pub ApiCaller);

impl FromRequestParts<AppState> for AdminKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = ApiCaller::from_request_parts(parts, state).await?;
        caller.require_admin()?;
        Ok(AdminKey(caller))
    }
}

impl std::ops::Deref for AdminKey {
    type Target = ApiCaller;
    fn deref(&self) -> &ApiCaller {
        &self.0
    }
}
