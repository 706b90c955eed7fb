//! Google's JWT bearer grant (RFC 7523) for service accounts with domain-wide delegation: the
//! assertion's RS256 signature is checked with the service account's public key, then its
//! `iss`, `sub`, `aud`, `iat`/`exp` and `scope`, as Google's token endpoint does.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};

use super::error::OAuthError;
use super::grants::store_access;
use super::tokens::{Mint, parse_scope};
use super::{Shared, lock};
use crate::util::now_unix;

pub(crate) const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Google's limit on an assertion's life, and the clock skew it tolerates.
const MAX_LIFETIME: i64 = 3600;
const SKEW: i64 = 300;

/// A service account made for a test: its key pair and Google's JSON key file.
#[derive(Clone)]
pub struct ServiceAccount {
    /// `iss` of its assertions.
    pub client_email: String,
    /// The numeric id a Workspace admin grants domain-wide delegation to.
    pub client_id: String,
    /// Google's JSON key file (contains the private key: a test value, still never logged).
    pub key_json: String,
    public_key_der: Vec<u8>,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl ServiceAccount {
    /// A new 2048-bit RSA key pair and its key file, naming `token_uri` as Google's files do.
    ///
    /// # Panics
    /// If key generation fails (it does not for 2048 bits).
    pub fn generate(client_email: &str, client_id: &str, token_uri: &str) -> Self {
        let private =
            rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("RSA key generation");
        let pem = private
            .to_pkcs8_pem(LineEnding::LF)
            .expect("PKCS#8 encoding");
        let public_key_der = private
            .to_public_key()
            .to_pkcs1_der()
            .expect("PKCS#1 encoding")
            .as_bytes()
            .to_vec();
        let key_json = serde_json::json!({
            "type": "service_account",
            "project_id": "fake-project",
            "private_key_id": format!("{:040x}", rand::random::<u128>()),
            "private_key": pem.as_str(),
            "client_email": client_email,
            "client_id": client_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        })
        .to_string();
        Self {
            client_email: client_email.to_owned(),
            client_id: client_id.to_owned(),
            key_json,
            public_key_der,
        }
    }
}

/// A registered service account: its public key and the scopes delegated to its client id.
#[derive(Debug, Clone)]
pub(crate) struct Registered {
    pub client_id: String,
    pub public_key_der: Vec<u8>,
    pub delegated_scopes: Vec<String>,
}

/// Registered service accounts by `client_email`.
pub(crate) type Registry = HashMap<String, Registered>;

pub(crate) fn register(shared: &Shared, account: &ServiceAccount, delegated_scopes: &[&str]) {
    lock(&shared.service_accounts).insert(
        account.client_email.clone(),
        Registered {
            client_id: account.client_id.clone(),
            public_key_der: account.public_key_der.clone(),
            delegated_scopes: delegated_scopes.iter().map(|s| (*s).to_owned()).collect(),
        },
    );
}

fn invalid(description: &str) -> OAuthError {
    OAuthError::plain(400, "invalid_grant", description)
}

/// Checks the assertion and issues an access token for `sub` (no refresh token).
pub(crate) fn jwt_bearer(
    shared: &Shared,
    tenant: &str,
    assertion: &str,
) -> Result<serde_json::Value, OAuthError> {
    let mut parts = assertion.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("Invalid JWT: not three dot-separated parts."));
    };
    let json = |part: &str| -> Option<serde_json::Value> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
    };
    let (Some(header_json), Some(c)) = (json(header), json(claims)) else {
        return Err(invalid(
            "Invalid JWT: header or claims are not base64url JSON.",
        ));
    };
    if header_json["alg"] != "RS256" {
        return Err(invalid("Invalid JWT: the algorithm must be RS256."));
    }
    let text = |name: &str| c[name].as_str().unwrap_or_default().to_owned();
    let iss = text("iss");
    let Some(account) = lock(&shared.service_accounts).get(&iss).cloned() else {
        return Err(invalid("Invalid grant: account not found"));
    };
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| invalid("Invalid JWT Signature."))?;
    let signed = &assertion[..header.len() + 1 + claims.len()];
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &account.public_key_der)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| invalid("Invalid JWT Signature."))?;
    let token_url = format!("{}/{tenant}/oauth2/v2.0/token", shared.base_url);
    if text("aud") != token_url {
        return Err(invalid(&format!(
            "Invalid JWT: Failed audience check. The expected audience is {token_url}."
        )));
    }
    let now = i64::try_from(now_unix()).unwrap_or(i64::MAX);
    let (iat, exp) = (c["iat"].as_i64(), c["exp"].as_i64());
    let fresh = matches!((iat, exp), (Some(iat), Some(exp))
        if iat <= now + SKEW && exp > now - SKEW && exp > iat && exp - iat <= MAX_LIFETIME);
    if !fresh {
        return Err(invalid(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable \
             timeframe. Check your iat and exp values in the JWT claim.",
        ));
    }
    let sub = text("sub");
    if sub.is_empty() || !sub.contains('@') {
        return Err(invalid("Invalid email or User ID"));
    }
    let scope = text("scope");
    let delegated = !scope.is_empty()
        && scope
            .split_whitespace()
            .all(|s| account.delegated_scopes.iter().any(|d| d == s));
    if !delegated {
        return Err(OAuthError::plain(
            401,
            "unauthorized_client",
            "Client is unauthorized to retrieve access tokens using this method, or client not \
             authorized for any of the scopes requested.",
        ));
    }
    let parsed = parse_scope(&scope)?;
    let expires_in = shared.expires_in.load(Ordering::Relaxed);
    let access = store_access(
        shared,
        &Mint {
            client_id: &account.client_id,
            user: &sub,
            tid: &shared.config.tenant_id,
            scope: &parsed,
            app_only: false,
            roles: &[],
            expires_in,
        },
    );
    Ok(serde_json::json!({
        "access_token": access,
        "expires_in": expires_in,
        "token_type": "Bearer",
    }))
}
