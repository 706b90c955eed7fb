//! `/api/v1/relay-users`: the logins legacy apps use with the SMTP relay. A generated password
//! is in the create (or reset) response, once.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::json::{JsonBody, secret};
use crate::domain::{DisplayName, FromPolicy};
use crate::http::AppState;
use crate::http::auth::AdminKey;
use crate::http::error::{ApiError, ApiResult, FieldProblem, Problem};
use crate::smtp::server::AllowedFrom;
use crate::store::relay_users::NewPassword;
use crate::store::relay_users::{RelayUser, RelayUserError};

impl From<RelayUserError> for ApiError {
    fn from(e: RelayUserError) -> Self {
        match e {
            RelayUserError::Duplicate(_) => ApiError::Conflict(e.to_string()),
            RelayUserError::NoSuchUser(_) => ApiError::NotFound(e.to_string()),
            RelayUserError::Store(s) => s.into(),
            other => ApiError::Validation(vec![FieldProblem {
                field: match other {
                    RelayUserError::WeakPassword => "password".into(),
                    _ => "name".into(),
                },
                message: other.to_string(),
            }]),
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRelayUser {
    /// The login name the app uses (AUTH PLAIN/LOGIN).
    pub name: String,
    /// The connection its mail goes out through.
    pub connection: String,
    /// Other From addresses it may use besides the connection's mailbox: `ops@x.com` or `@x.com`.
    #[serde(default)]
    pub allow_from: Vec<String>,
    /// Write-only. Leave out to have Postern generate a strong one (returned once).
    #[serde(default, deserialize_with = "secret")]
    #[schema(value_type = Option<String>, write_only)]
    pub password: Option<SecretString>,
    /// What the relay does with a sender it may not use: `refuse` (default, 550),
    /// `allow-listed` (the same, explicitly) or `rewrite` (sent as the connection's mailbox,
    /// the original address in `Reply-To:`).
    #[serde(default)]
    pub from_policy: Option<String>,
    /// The name in a rewritten `From:` (`"Scanner" <mailbox>`), at most 64 characters; only
    /// with `from_policy: rewrite`. Left out: the message's own display name is kept.
    #[serde(default)]
    pub display_name: Option<String>,
}

impl NewRelayUser {
    /// The From policy and display name, parsed; 422 naming the field otherwise.
    fn parse_from_policy(&self) -> ApiResult<(FromPolicy, Option<DisplayName>)> {
        let problem = |field: &str, message: String| {
            ApiError::Validation(vec![FieldProblem {
                field: field.into(),
                message,
            }])
        };
        let policy = match &self.from_policy {
            Some(p) => p
                .parse::<FromPolicy>()
                .map_err(|e| problem("from_policy", e.to_string()))?,
            None => FromPolicy::default(),
        };
        let display_name = self
            .display_name
            .as_deref()
            .map(DisplayName::parse)
            .transpose()
            .map_err(|e| problem("display_name", e.to_string()))?;
        if display_name.is_some() && policy != FromPolicy::Rewrite {
            return Err(problem(
                "display_name",
                "a display name is for a rewritten From: set `from_policy` to `rewrite`".into(),
            ));
        }
        Ok((policy, display_name))
    }
}

impl std::fmt::Debug for NewRelayUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewRelayUser")
            .field("name", &self.name)
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

/// A relay user (never its password).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RelayUserView {
    pub name: String,
    pub connection: String,
    pub allow_from: Vec<String>,
    /// `generated` or `chosen`.
    pub password: String,
    /// `refuse`, `allow-listed` or `rewrite`.
    pub from_policy: String,
    /// The name in a rewritten `From:`; absent: the message's own is kept.
    pub display_name: Option<String>,
    pub created_at: String,
}

impl From<&RelayUser> for RelayUserView {
    fn from(u: &RelayUser) -> Self {
        Self {
            name: u.name.clone(),
            connection: u.connection.clone(),
            allow_from: u.allow_from.clone(),
            password: u.password.to_string(),
            from_policy: u.from_policy.to_string(),
            display_name: u.display_name.as_ref().map(ToString::to_string),
            created_at: u.created_at.clone(),
        }
    }
}

/// A relay user just created or reset; `generated_password` is shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RelayUserCreated {
    #[serde(flatten)]
    pub user: RelayUserView,
    pub generated_password: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/relay-users", tag = "relay-users", security(("api_key" = [])),
    responses((status = 200, body = Vec<RelayUserView>),
        (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list(_caller: AdminKey, State(state): State<AppState>) -> ApiResult<Response> {
    let users = state.store().list_relay_users().await?;
    Ok(axum::Json(users.iter().map(RelayUserView::from).collect::<Vec<_>>()).into_response())
}

#[utoipa::path(post, path = "/api/v1/relay-users", tag = "relay-users", security(("api_key" = [])),
    request_body = NewRelayUser,
    responses((status = 201, description = "Created; a generated password is shown once", body = RelayUserCreated),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    caller: AdminKey,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<NewRelayUser>,
) -> ApiResult<Response> {
    let (from_policy, display_name) = body.parse_from_policy()?;
    AllowedFrom::parse(&body.allow_from).map_err(|e| {
        ApiError::Validation(vec![FieldProblem {
            field: "allow_from".into(),
            message: e.to_string(),
        }])
    })?;
    let conn = state
        .store()
        .find_connection(&body.connection)
        .await?
        .ok_or_else(|| {
            ApiError::Validation(vec![FieldProblem {
                field: "connection".into(),
                message: format!("connection `{}` does not exist", body.connection),
            }])
        })?;
    let (user, generated) = state
        .store()
        .create_relay_user(
            &body.name,
            conn.id,
            &body.allow_from,
            body.password
                .as_ref()
                .map_or(NewPassword::GENERATED, NewPassword::Chosen),
        )
        .await?;
    let user = if (from_policy, &display_name) == (FromPolicy::default(), &None) {
        user
    } else {
        match state
            .store()
            .set_relay_from_policy(&user.name, from_policy, display_name.as_ref())
            .await
        {
            Ok(user) => user,
            Err(e) => {
                // No half-made user whose generated password nobody saw.
                let _ = state.store().remove_relay_user(&user.name).await;
                return Err(e.into());
            }
        }
    };
    tracing::info!(user = %user.name, by = %caller.key.name, "relay user created");
    Ok((
        StatusCode::CREATED,
        axum::Json(RelayUserCreated {
            user: RelayUserView::from(&user),
            generated_password: generated.map(|p| p.expose_secret().to_string()),
        }),
    )
        .into_response())
}

#[utoipa::path(delete, path = "/api/v1/relay-users/{name}", tag = "relay-users", security(("api_key" = [])),
    params(("name" = String, Path, description = "Relay user name")),
    responses((status = 204, description = "Removed: its logins stop at once"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn remove(
    caller: AdminKey,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    state.store().remove_relay_user(&name).await?;
    tracing::info!(user = %name, by = %caller.key.name, "relay user removed");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/relay-users/{name}/reset-password", tag = "relay-users",
    security(("api_key" = [])), params(("name" = String, Path, description = "Relay user name")),
    responses((status = 200, description = "A new generated password, shown once", body = RelayUserCreated),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn reset_password(
    caller: AdminKey,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let generated = state
        .store()
        .reset_relay_password(&name, NewPassword::GENERATED)
        .await?;
    let user = state.store().relay_user(&name).await?;
    tracing::info!(user = %name, by = %caller.key.name, "relay user password reset");
    Ok(axum::Json(RelayUserCreated {
        user: RelayUserView::from(&user),
        generated_password: generated.map(|p| p.expose_secret().to_string()),
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> NewRelayUser {
        serde_json::from_value(json).unwrap()
    }

    fn field_of(e: ApiError) -> String {
        match e {
            ApiError::Validation(problems) => problems[0].field.clone(),
            other => panic!("not a 422: {other:?}"),
        }
    }

    #[test]
    fn the_from_policy_is_optional_and_bad_values_name_their_field() {
        let plain = body(serde_json::json!({"name": "a", "connection": "c"}));
        assert_eq!(
            plain.parse_from_policy().unwrap(),
            (FromPolicy::Refuse, None)
        );
        let rewrite = body(serde_json::json!({"name": "a", "connection": "c",
            "from_policy": "rewrite", "display_name": "Scanner"}));
        let (policy, name) = rewrite.parse_from_policy().unwrap();
        assert_eq!(policy, FromPolicy::Rewrite);
        assert_eq!(name.unwrap().as_str(), "Scanner");
        for (json, field) in [
            (serde_json::json!({"from_policy": "accept"}), "from_policy"),
            (
                serde_json::json!({"from_policy": "rewrite", "display_name": "a\r\nBcc: x@y"}),
                "display_name",
            ),
            (
                serde_json::json!({"from_policy": "rewrite", "display_name": "x".repeat(65)}),
                "display_name",
            ),
            (
                serde_json::json!({"display_name": "Scanner"}),
                "display_name",
            ),
        ] {
            let mut json = json;
            json["name"] = "a".into();
            json["connection"] = "c".into();
            let e = body(json.clone()).parse_from_policy().unwrap_err();
            assert_eq!(field_of(e), field, "{json}");
        }
    }
}
