//! The token endpoint: client authentication and the four grant types.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256};

use super::device::Poll;
use super::error::OAuthError;
use super::tokens::{AccessRecord, Mint, RefreshState, parse_scope};
use super::{ClientAuth, Count, Shared, TokenRequest, lock};
use crate::util::now_unix;

pub(crate) const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Parse an `application/x-www-form-urlencoded` body; the first value of a key wins.
pub(crate) fn parse_form(body: &[u8]) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    map
}

/// Mint an access token and remember it for validation/introspection.
pub(crate) fn store_access(shared: &Shared, mint: &Mint<'_>) -> String {
    let (token, info) = super::tokens::mint_access_token(mint);
    lock(&shared.grants).access.insert(
        token.clone(),
        AccessRecord {
            info,
            revoked: false,
        },
    );
    token
}

/// Handle one token request end to end (count, inject, authenticate, grant, record).
pub(crate) fn token(shared: &Shared, tenant: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let form = parse_form(body);
    let grant_type = form.get("grant_type").cloned().unwrap_or_default();
    shared
        .counters
        .bump(Count::Grant(match grant_type.as_str() {
            "authorization_code" => "authorization_code",
            "refresh_token" => "refresh_token",
            "client_credentials" => "client_credentials",
            DEVICE_GRANT => DEVICE_GRANT,
            super::jwt::JWT_BEARER_GRANT => super::jwt::JWT_BEARER_GRANT,
            _ => "other",
        }));
    let basic = basic_credentials(headers);
    let client_auth = match (&basic, form.contains_key("client_secret")) {
        (Some(_), _) => ClientAuth::Basic,
        (None, true) => ClientAuth::Form,
        (None, false) => ClientAuth::None,
    };
    let client_id = basic
        .as_ref()
        .map(|(id, _)| id.clone())
        .or_else(|| form.get("client_id").cloned());
    let mut record = TokenRequest {
        tenant: tenant.to_owned(),
        grant_type: grant_type.clone(),
        client_id: client_id.clone(),
        client_auth,
        scope: form.get("scope").cloned(),
        status: 200,
        error: None,
    };

    let injected = lock(&shared.injected).pop_front();
    let response = if let Some(inj) = injected {
        record.status = inj.status;
        record.error = inj.error.clone();
        inj.into_response()
    } else {
        let secret = basic
            .map(|(_, s)| s)
            .or_else(|| form.get("client_secret").cloned());
        // A service account's assertion is its own client authentication (RFC 7523 §3).
        let result = if grant_type == super::jwt::JWT_BEARER_GRANT {
            required(&form, "assertion").and_then(|a| super::jwt::jwt_bearer(shared, tenant, a))
        } else {
            authenticate(shared, client_id.as_deref(), secret.as_deref()).and_then(|id| {
            let tid = shared.tid_for(tenant);
            match grant_type.as_str() {
                "authorization_code" => authorization_code(shared, &id, &form),
                "refresh_token" => refresh_token(shared, &id, &form),
                "client_credentials" => client_credentials(shared, &id, tenant, &tid, &form),
                DEVICE_GRANT => device_code(shared, &id, &form),
                "" => Err(OAuthError::request(
                    900144,
                    "AADSTS900144: The request body must contain the following parameter: 'grant_type'.",
                )),
                other => Err(OAuthError::new(
                    400,
                    "unsupported_grant_type",
                    70003,
                    format!("AADSTS70003: The app requested an unsupported grant type '{other}'."),
                )),
            }
        })
        };
        match result {
            Ok(body) => axum::Json(body).into_response(),
            Err(e) => {
                record.status = e.status;
                record.error = Some(e.error.clone());
                e.into_response()
            }
        }
    };
    lock(&shared.requests).push(record);
    response
}

/// `Authorization: Basic` with form-urlencoded id and secret (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

/// Check client id and secret; returns the client id.
fn authenticate(
    shared: &Shared,
    client_id: Option<&str>,
    secret: Option<&str>,
) -> Result<String, OAuthError> {
    let Some(client_id) = client_id.filter(|c| !c.is_empty()) else {
        return Err(OAuthError::request(
            900144,
            "AADSTS900144: The request body must contain the following parameter: 'client_id'.",
        ));
    };
    let Some(client) = shared.config.client(client_id) else {
        return Err(OAuthError::new(
            400,
            "unauthorized_client",
            700016,
            format!(
                "AADSTS700016: Application with identifier '{client_id}' was not found in the \
                 directory 'Fake Tenant'."
            ),
        ));
    };
    match (&client.secret, secret) {
        (None, _) => {}
        (Some(_), None) => {
            return Err(OAuthError::new(
                401,
                "invalid_client",
                7000218,
                "AADSTS7000218: The request body must contain the following parameter: \
                 'client_assertion' or 'client_secret'.",
            ));
        }
        (Some(expected), Some(given)) if expected != given => {
            return Err(OAuthError::new(
                401,
                "invalid_client",
                7000215,
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in \
                 the request is the client secret value, not the client secret ID.",
            ));
        }
        _ => {}
    }
    Ok(client_id.to_owned())
}

fn required<'a>(form: &'a HashMap<String, String>, name: &str) -> Result<&'a str, OAuthError> {
    form.get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            OAuthError::request(
                900144,
                format!(
                    "AADSTS900144: The request body must contain the following parameter: '{name}'."
                ),
            )
        })
}

/// Issue an access token and, for delegated grants with `offline_access`, a refresh token.
fn issue(
    shared: &Shared,
    client_id: &str,
    user: &str,
    scope: &str,
    tid: &str,
    family: Option<u64>,
) -> Result<serde_json::Value, OAuthError> {
    let parsed = parse_scope(scope)?;
    let expires_in = shared.expires_in.load(Ordering::Relaxed);
    let mint = Mint {
        client_id,
        user,
        tid,
        scope: &parsed,
        app_only: false,
        roles: &[],
        expires_in,
    };
    let access = store_access(shared, &mint);
    let mut body = token_body(shared, &access, scope, expires_in);
    if family.is_some() || parsed.offline_access || !shared.config.refresh_requires_offline_access {
        let refresh = lock(&shared.grants).add_refresh(family, client_id, user, scope, tid);
        body["refresh_token"] = serde_json::json!(refresh);
    }
    Ok(body)
}

fn token_body(shared: &Shared, access: &str, scope: &str, expires_in: u64) -> serde_json::Value {
    let exp = if shared.config.expires_in_as_string {
        serde_json::json!(expires_in.to_string())
    } else {
        serde_json::json!(expires_in)
    };
    serde_json::json!({
        "token_type": "Bearer",
        "scope": scope,
        "expires_in": exp,
        "ext_expires_in": exp,
        "access_token": access,
    })
}

fn authorization_code(
    shared: &Shared,
    client_id: &str,
    form: &HashMap<String, String>,
) -> Result<serde_json::Value, OAuthError> {
    let code = required(form, "code")?;
    let redirect_uri = form.get("redirect_uri").map(String::as_str).unwrap_or("");
    let verifier = form.get("code_verifier").map(String::as_str).unwrap_or("");
    let grant = {
        let mut grants = lock(&shared.grants);
        let Some(g) = grants.codes.get_mut(code) else {
            return Err(OAuthError::grant(
                70000,
                "AADSTS70000: The provided value for the 'code' parameter is not valid.",
            ));
        };
        if g.redeemed {
            return Err(OAuthError::grant(
                54005,
                "AADSTS54005: OAuth2 Authorization code was already redeemed, please retry with a \
                 new valid code or use an existing refresh token.",
            ));
        }
        if now_unix() >= g.expires_at {
            return Err(OAuthError::grant(
                70008,
                "AADSTS70008: The provided authorization code or refresh token has expired due to \
                 inactivity. Send a new interactive authorization request for this user and resource.",
            ));
        }
        if g.client_id != client_id {
            return Err(OAuthError::grant(
                70000,
                "AADSTS70000: The provided authorization code was issued to a different client.",
            ));
        }
        if g.redirect_uri != redirect_uri {
            return Err(OAuthError::grant(
                500112,
                format!(
                    "AADSTS500112: The reply address '{redirect_uri}' does not match the reply \
                     address '{}' provided when requesting Authorization code.",
                    g.redirect_uri
                ),
            ));
        }
        if !pkce_matches(verifier, &g.challenge) {
            return Err(OAuthError::grant(
                501481,
                "AADSTS501481: The Code_Verifier does not match the code_challenge supplied in \
                 the authorization request.",
            ));
        }
        g.redeemed = true;
        g.clone()
    };
    issue(
        shared,
        client_id,
        &grant.user,
        &grant.scope,
        &grant.tid,
        None,
    )
}

/// RFC 7636 S256: BASE64URL(SHA256(verifier)) == challenge; verifier is 43-128 characters.
pub(crate) fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    (43..=128).contains(&verifier.len())
        && URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == challenge
}

fn refresh_token(
    shared: &Shared,
    client_id: &str,
    form: &HashMap<String, String>,
) -> Result<serde_json::Value, OAuthError> {
    let token = required(form, "refresh_token")?;
    let record = {
        let mut grants = lock(&shared.grants);
        let Some(rec) = grants.refresh.get_mut(token) else {
            return Err(OAuthError::grant(
                9002313,
                "AADSTS9002313: Invalid request. Request is malformed or invalid.",
            ));
        };
        if rec.client_id != client_id {
            return Err(OAuthError::grant(
                70000,
                "AADSTS70000: The provided refresh token was issued to a different client.",
            ));
        }
        match rec.state {
            RefreshState::Active => {
                rec.state = RefreshState::Used;
                rec.clone()
            }
            RefreshState::Used => {
                let successor_unused = rec
                    .successor
                    .clone()
                    .and_then(|s| {
                        grants
                            .refresh
                            .get(&s)
                            .map(|r| r.state == RefreshState::Active)
                    })
                    .unwrap_or(false);
                let family = grants.refresh[token].family;
                if successor_unused {
                    // The client never saved the token we rotated to: the old one still works
                    // once, and the unused successor is superseded.
                    if let Some(successor) = grants.refresh[token].successor.clone()
                        && let Some(r) = grants.refresh.get_mut(&successor)
                    {
                        r.state = RefreshState::Used;
                    }
                    grants.refresh[token].clone()
                } else {
                    // Reuse detection: a replayed token may be stolen, so the whole family dies.
                    grants.revoke_family(family);
                    return Err(OAuthError::grant(
                        70000,
                        "AADSTS70000: The provided value for the 'refresh_token' is not valid. The \
                         refresh token was already used; the token family has been revoked.",
                    ));
                }
            }
            RefreshState::Revoked => {
                return Err(OAuthError::grant(
                    50173,
                    "AADSTS50173: The provided grant has expired due to it being revoked, a fresh \
                     auth token is needed. The user might have changed or reset their password.",
                ));
            }
            RefreshState::Expired => {
                return Err(OAuthError::grant(
                    700082,
                    "AADSTS700082: The refresh token has expired due to inactivity. The token was \
                     issued and was inactive for 90.00:00:00.",
                ));
            }
        }
    };
    let scope = form
        .get("scope")
        .filter(|s| !s.trim().is_empty())
        .unwrap_or(&record.scope);
    let response = issue(
        shared,
        client_id,
        &record.user,
        scope,
        &record.tid,
        Some(record.family),
    )?;
    if let Some(next) = response.get("refresh_token").and_then(|v| v.as_str()) {
        let mut grants = lock(&shared.grants);
        if let Some(rec) = grants.refresh.get_mut(token) {
            rec.successor = Some(next.to_string());
        }
    }
    Ok(response)
}

fn client_credentials(
    shared: &Shared,
    client_id: &str,
    tenant: &str,
    tid: &str,
    form: &HashMap<String, String>,
) -> Result<serde_json::Value, OAuthError> {
    if shared
        .config
        .client(client_id)
        .is_some_and(|c| c.secret.is_none())
    {
        return Err(OAuthError::new(
            401,
            "invalid_client",
            7000218,
            "AADSTS7000218: The request body must contain the following parameter: \
             'client_assertion' or 'client_secret'.",
        ));
    }
    if ["common", "organizations", "consumers"]
        .iter()
        .any(|t| t.eq_ignore_ascii_case(tenant))
    {
        return Err(OAuthError::request(
            50059,
            "AADSTS50059: No tenant-identifying information found in either the request or \
             implied by any provided credentials.",
        ));
    }
    let scope = required(form, "scope")?;
    if !scope.split_whitespace().all(|s| s.ends_with("/.default")) {
        return Err(OAuthError::new(
            400,
            "invalid_scope",
            1002012,
            format!(
                "AADSTS1002012: The provided value for scope {scope} is not valid. Client \
                 credential flows must have a scope value with /.default suffixed to the resource \
                 identifier (application ID URI)."
            ),
        ));
    }
    let parsed = parse_scope(scope)?;
    let expires_in = shared.expires_in.load(Ordering::Relaxed);
    let mint = Mint {
        client_id,
        user: client_id,
        tid,
        scope: &parsed,
        app_only: true,
        roles: &shared.config.app_roles,
        expires_in,
    };
    let access = store_access(shared, &mint);
    Ok(token_body(shared, &access, scope, expires_in))
}

fn device_code(
    shared: &Shared,
    client_id: &str,
    form: &HashMap<String, String>,
) -> Result<serde_json::Value, OAuthError> {
    let device_code = required(form, "device_code")?;
    let auto = shared
        .config
        .auto_approve_after_polls
        .map(|n| (n, shared.config.default_user.as_str()));
    let poll = lock(&shared.devices).poll(device_code, client_id, auto);
    match poll {
        Poll::Refuse(e) => Err(e),
        Poll::Issue { user, grant } => {
            issue(shared, client_id, &user, &grant.scope, &grant.tid, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(pkce_matches(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_matches(
            "short",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
    }
}
