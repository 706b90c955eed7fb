//! Reading an access token's claims for diagnostics (`postern connection token`).
//!
//! The payload is decoded WITHOUT verifying the signature: only the provider's resource server
//! needs to trust it; Postern merely shows the admin what the token says (audience, scopes,
//! expiry) to explain a `535 5.7.3`. Nothing here decides whether a token is used.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Audiences of Microsoft Graph: SMTP rejects tokens meant for it.
const GRAPH_AUDIENCES: [&str; 9] = [
    "https://graph.microsoft.com",
    "https://graph.microsoft.com/",
    // National clouds (US Government, DoD, 21Vianet): same Graph app id, own hosts.
    "https://graph.microsoft.us",
    "https://graph.microsoft.us/",
    "https://dod-graph.microsoft.us",
    "https://dod-graph.microsoft.us/",
    "https://microsoftgraph.chinacloudapi.cn",
    "https://microsoftgraph.chinacloudapi.cn/",
    "00000003-0000-0000-c000-000000000000",
];

/// The claims worth showing. Every field is optional: providers differ.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub audience: Vec<String>,
    /// Delegated scopes (`scp`, space separated).
    pub scp: Option<String>,
    /// App-only permissions (`roles`).
    pub roles: Vec<String>,
    /// Expiry, Unix seconds.
    pub exp: Option<i64>,
    /// Who the token is for (`upn`, `preferred_username` or `unique_name`).
    pub user: Option<String>,
    /// The application it was issued to (`appid` or `azp`).
    pub app_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
struct RawClaims {
    aud: Option<OneOrMany>,
    scp: Option<String>,
    roles: Option<OneOrMany>,
    exp: Option<i64>,
    upn: Option<String>,
    preferred_username: Option<String>,
    unique_name: Option<String>,
    appid: Option<String>,
    azp: Option<String>,
}

impl Claims {
    /// The claims of a JWT access token; `None` for opaque tokens (Google's, for instance).
    pub fn decode(token: &SecretString) -> Option<Self> {
        let mut parts = token.expose_secret().split('.');
        let (_header, payload) = (parts.next()?, parts.next()?);
        parts.next()?;
        let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
        let raw: RawClaims = serde_json::from_slice(&bytes).ok()?;
        Some(Claims {
            audience: raw.aud.map(OneOrMany::into_vec).unwrap_or_default(),
            scp: raw.scp,
            roles: raw.roles.map(OneOrMany::into_vec).unwrap_or_default(),
            exp: raw.exp,
            user: raw.upn.or(raw.preferred_username).or(raw.unique_name),
            app_id: raw.appid.or(raw.azp),
        })
    }

    /// The token is for Microsoft Graph, which SMTP AUTH rejects with `535 5.7.3`.
    pub fn is_graph(&self) -> bool {
        self.audience
            .iter()
            .any(|a| GRAPH_AUDIENCES.iter().any(|g| a.eq_ignore_ascii_case(g)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: serde_json::Value) -> SecretString {
        let enc = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        SecretString::from(format!(
            "{}.{}.sig",
            enc(&serde_json::json!({"alg":"RS256"})),
            enc(&payload)
        ))
    }

    #[test]
    fn outlook_delegated_token() {
        let t = jwt(serde_json::json!({
            "aud": "https://outlook.office.com", "scp": "SMTP.Send", "exp": 1_900_000_000,
            "upn": "ops@contoso.com", "appid": "abc"
        }));
        let c = Claims::decode(&t).unwrap();
        assert_eq!(c.audience, vec!["https://outlook.office.com"]);
        assert_eq!(c.scp.as_deref(), Some("SMTP.Send"));
        assert_eq!(c.exp, Some(1_900_000_000));
        assert_eq!(c.user.as_deref(), Some("ops@contoso.com"));
        assert!(!c.is_graph());
    }

    #[test]
    fn graph_and_app_only() {
        let c = Claims::decode(&jwt(serde_json::json!({
            "aud": ["00000003-0000-0000-c000-000000000000"], "roles": ["Mail.Send"]
        })))
        .unwrap();
        assert!(c.is_graph());
        assert_eq!(c.roles, vec!["Mail.Send"]);
        assert!(
            Claims::decode(&jwt(
                serde_json::json!({"aud": "https://graph.microsoft.com"})
            ))
            .unwrap()
            .is_graph()
        );
    }

    #[test]
    fn opaque_tokens_have_no_claims() {
        assert_eq!(Claims::decode(&SecretString::from("ya29.a0AfH6SMB")), None);
        assert_eq!(Claims::decode(&SecretString::from("a.!!!.c")), None);
    }
}
