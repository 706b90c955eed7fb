//! Token minting and the in-memory grant store (codes, refresh-token families, access tokens).

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::error::OAuthError;
use crate::util::{now_unix, random_b64, random_guid};

/// What an access token grants, as the fake IdP knows it (looked up, never parsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Mailbox user for delegated tokens; the client id for app-only tokens.
    pub user: String,
    /// `scp` values (delegated) or `roles` (app-only), e.g. `["SMTP.Send"]`.
    pub scopes: Vec<String>,
    /// Audience: the resource of the scope, e.g. `https://outlook.office.com`.
    pub aud: String,
    /// True for client-credentials tokens.
    pub app_only: bool,
    /// Client the token was issued to.
    pub client_id: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Scopes that carry no resource (OpenID Connect and refresh).
const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];
/// Resource of bare scope names such as `Mail.Send`.
pub(crate) const GRAPH: &str = "https://graph.microsoft.com";

/// A requested scope string split into its single resource and the scope names on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedScope {
    pub aud: String,
    pub names: Vec<String>,
    pub offline_access: bool,
}

/// Split `https://outlook.office.com/SMTP.Send offline_access` into resource + names.
/// Microsoft refuses to mix two resources in one request (AADSTS28000); so do we.
pub(crate) fn parse_scope(scope: &str) -> Result<ParsedScope, OAuthError> {
    let mut aud: Option<String> = None;
    let mut names = Vec::new();
    let mut oidc = Vec::new();
    let mut offline_access = false;
    for s in scope.split_whitespace() {
        if s.eq_ignore_ascii_case("offline_access") {
            offline_access = true;
            continue;
        }
        if OIDC_SCOPES.iter().any(|o| o.eq_ignore_ascii_case(s)) {
            oidc.push(s.to_owned());
            continue;
        }
        let (resource, name) = match url::Url::parse(s) {
            Ok(u) if s.contains("://") => {
                let resource = u.origin().ascii_serialization();
                let resource = if resource == "null" {
                    format!("{}://{}", u.scheme(), host(&u))
                } else {
                    resource
                };
                let path = u.path().trim_start_matches('/');
                // A resource-only scope (Google's `https://mail.google.com/`) is its own name.
                let name = if path.is_empty() {
                    s.to_owned()
                } else {
                    path.to_owned()
                };
                (resource, name)
            }
            _ => (GRAPH.to_owned(), s.to_owned()),
        };
        match &aud {
            Some(a) if !a.eq_ignore_ascii_case(&resource) => {
                return Err(OAuthError::new(
                    400,
                    "invalid_scope",
                    28000,
                    "AADSTS28000: Provided value for the input parameter scope is not valid \
                     because it contains more than one resource.",
                ));
            }
            _ => aud = Some(resource),
        }
        names.push(name);
    }
    if names.is_empty() {
        names = oidc;
    }
    if names.is_empty() && !offline_access {
        return Err(OAuthError::request(
            900144,
            "AADSTS900144: The request body must contain the following parameter: 'scope'.",
        ));
    }
    Ok(ParsedScope {
        aud: aud.unwrap_or_else(|| GRAPH.to_owned()),
        names,
        offline_access,
    })
}

fn host(u: &url::Url) -> String {
    u.host_str().unwrap_or_default().to_owned()
}

/// Claims needed to mint an access token.
#[derive(Debug, Clone)]
pub(crate) struct Mint<'a> {
    pub client_id: &'a str,
    pub user: &'a str,
    pub tid: &'a str,
    pub scope: &'a ParsedScope,
    pub app_only: bool,
    pub roles: &'a [String],
    pub expires_in: u64,
}

/// A JWT-looking access token (header.payload.signature, base64url). The signature is random
/// bytes: only this IdP validates tokens, by lookup. A padding claim makes it >1,000 characters
/// like Microsoft's, so clients meet the 512-octet SMTP command limit.
pub(crate) fn mint_access_token(m: &Mint<'_>) -> (String, TokenInfo) {
    let iat = now_unix();
    let exp = iat.saturating_add(m.expires_in);
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": "fake-provider-key"});
    let mut payload = serde_json::json!({
        "aud": m.scope.aud,
        "iss": format!("https://sts.windows.net/{}/", m.tid),
        "iat": iat,
        "nbf": iat,
        "exp": exp,
        "appid": m.client_id,
        "tid": m.tid,
        "oid": random_guid(),
        "uti": random_b64(16),
        "ver": "1.0",
        "xms_fake_padding": random_b64(450),
    });
    let scopes = if m.app_only {
        m.roles.to_vec()
    } else {
        m.scope.names.clone()
    };
    if m.app_only {
        payload["roles"] = serde_json::json!(scopes);
        payload["sub"] = serde_json::json!(m.client_id);
    } else {
        payload["scp"] = serde_json::json!(scopes.join(" "));
        payload["upn"] = serde_json::json!(m.user);
        payload["preferred_username"] = serde_json::json!(m.user);
        payload["unique_name"] = serde_json::json!(m.user);
        payload["sub"] = serde_json::json!(random_b64(24));
    }
    let token = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        random_b64(256)
    );
    let user = if m.app_only { m.client_id } else { m.user };
    let info = TokenInfo {
        user: user.to_owned(),
        scopes,
        aud: m.scope.aud.clone(),
        app_only: m.app_only,
        client_id: m.client_id.to_owned(),
        exp,
    };
    (token, info)
}

/// A refresh token opaque string (Microsoft's start with `0.A` and are long).
pub(crate) fn mint_refresh_token() -> String {
    format!("0.AXfake.{}", random_b64(384))
}

/// State of a refresh token, as [`FakeIdp::refresh_token_state`](super::FakeIdp::refresh_token_state) reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshState {
    /// Usable once.
    Active,
    /// Already exchanged (rotation). Like Microsoft, a replay is tolerated while its successor
    /// has not been used yet (a client that crashed before saving the new token); a replay after
    /// the successor was used revokes the whole family (reuse detection).
    Used,
    /// Revoked (reuse detected, or revoked by the test): AADSTS50173.
    Revoked,
    /// Expired by the test: AADSTS700082.
    Expired,
}

/// One refresh token and the grant it continues.
#[derive(Debug, Clone)]
pub(crate) struct RefreshRecord {
    pub client_id: String,
    pub user: String,
    pub scope: String,
    pub tid: String,
    pub family: u64,
    pub state: RefreshState,
    /// Issue order, to find the newest token of a user.
    pub seq: u64,
    /// The token issued when this one was redeemed (rotation).
    pub successor: Option<String>,
}

/// An authorization code waiting to be redeemed.
#[derive(Debug, Clone)]
pub(crate) struct CodeGrant {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub challenge: String,
    pub user: String,
    pub tid: String,
    pub expires_at: u64,
    pub redeemed: bool,
}

/// An issued access token and whether the test revoked it.
#[derive(Debug, Clone)]
pub(crate) struct AccessRecord {
    pub info: TokenInfo,
    pub revoked: bool,
}

/// Everything issued so far, behind one mutex in the IdP.
#[derive(Debug, Default)]
pub(crate) struct Grants {
    pub codes: HashMap<String, CodeGrant>,
    pub refresh: HashMap<String, RefreshRecord>,
    pub access: HashMap<String, AccessRecord>,
    next_family: u64,
    next_seq: u64,
}

impl Grants {
    /// A new refresh token; `family` continues a rotation chain, `None` starts a new one.
    pub fn add_refresh(
        &mut self,
        family: Option<u64>,
        client_id: &str,
        user: &str,
        scope: &str,
        tid: &str,
    ) -> String {
        let family = family.unwrap_or_else(|| {
            self.next_family += 1;
            self.next_family
        });
        self.next_seq += 1;
        let token = mint_refresh_token();
        let record = RefreshRecord {
            client_id: client_id.to_owned(),
            user: user.to_owned(),
            scope: scope.to_owned(),
            tid: tid.to_owned(),
            family,
            state: RefreshState::Active,
            seq: self.next_seq,
            successor: None,
        };
        self.refresh.insert(token.clone(), record);
        token
    }

    /// Reuse detection: every token of the family becomes unusable.
    pub fn revoke_family(&mut self, family: u64) {
        for r in self.refresh.values_mut().filter(|r| r.family == family) {
            r.state = RefreshState::Revoked;
        }
    }

    /// The newest active refresh token of `user`.
    pub fn current_refresh_for(&self, user: &str) -> Option<String> {
        self.refresh
            .iter()
            .filter(|(_, r)| r.user.eq_ignore_ascii_case(user) && r.state == RefreshState::Active)
            .max_by_key(|(_, r)| r.seq)
            .map(|(t, _)| t.clone())
    }

    /// Set the state of every refresh token of `user` that is still active.
    pub fn set_user_refresh_state(&mut self, user: &str, state: RefreshState) -> usize {
        let mut n = 0;
        for r in self.refresh.values_mut() {
            if r.user.eq_ignore_ascii_case(user) && r.state == RefreshState::Active {
                r.state = state;
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_resources() {
        let p = parse_scope("https://outlook.office.com/SMTP.Send offline_access").unwrap();
        assert_eq!(p.aud, "https://outlook.office.com");
        assert_eq!(p.names, vec!["SMTP.Send"]);
        assert!(p.offline_access);
        let p = parse_scope("https://mail.google.com/").unwrap();
        assert_eq!(p.aud, "https://mail.google.com");
        assert_eq!(p.names, vec!["https://mail.google.com/"]);
        let p = parse_scope("Mail.Send").unwrap();
        assert_eq!(p.aud, GRAPH);
        let err = parse_scope(
            "https://outlook.office.com/SMTP.Send https://graph.microsoft.com/Mail.Send",
        )
        .unwrap_err();
        assert_eq!(err.code, 28000);
    }

    #[test]
    fn access_tokens_look_like_long_jwts() {
        let scope = parse_scope("https://outlook.office.com/SMTP.Send").unwrap();
        let m = Mint {
            client_id: "c",
            user: "u@example.com",
            tid: "t",
            scope: &scope,
            app_only: false,
            roles: &[],
            expires_in: 60,
        };
        let (token, info) = mint_access_token(&m);
        assert!(token.len() > 1000);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(payload["aud"], "https://outlook.office.com");
        assert_eq!(payload["scp"], "SMTP.Send");
        assert_eq!(payload["upn"], "u@example.com");
        assert_eq!(info.user, "u@example.com");
    }
}
