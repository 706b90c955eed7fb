//! The fake identity provider over real HTTP, as an OAuth client sees it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fake_provider::FakeIdp;
use fake_provider::idp::{
    ClientRegistration, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_USER, IdpConfig,
    InjectedError, RedirectPolicy, RefreshState,
};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::client::http;

const TENANT: &str = "contoso.example";
const SCOPE: &str = "https://outlook.office.com/SMTP.Send offline_access";
const REDIRECT: &str = "http://localhost:53682/callback";
const VERIFIER: &str = "a-verifier-that-is-long-enough-for-rfc-7636-pkce-0123456789";

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Run the authorize endpoint; returns the redirect's query pairs.
async fn authorize(idp: &FakeIdp, redirect: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let ch = challenge(VERIFIER);
    let mut q = vec![
        ("client_id", DEFAULT_CLIENT_ID),
        ("response_type", "code"),
        ("redirect_uri", redirect),
        ("scope", SCOPE),
        ("state", "st-123"),
        ("code_challenge", ch.as_str()),
        ("code_challenge_method", "S256"),
    ];
    q.extend_from_slice(extra);
    let resp = http()
        .get(idp.authorize_url(TENANT))
        .query(&q)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(redirect), "{location}");
    url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// POST the token endpoint with the default client's secret in the form.
async fn token(idp: &FakeIdp, form: &[(&str, &str)]) -> (u16, Value) {
    let mut form = form.to_vec();
    form.push(("client_id", DEFAULT_CLIENT_ID));
    form.push(("client_secret", DEFAULT_CLIENT_SECRET));
    let resp = http()
        .post(idp.token_url(TENANT))
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    // Down mode answers plain text: keep it as a JSON string.
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn claims(access_token: &str) -> Value {
    let payload = access_token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn refresh(idp: &FakeIdp, rt: &str) -> (u16, Value) {
    token(
        idp,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("scope", SCOPE),
        ],
    )
    .await
}

#[tokio::test]
async fn authorization_code_with_pkce() {
    let idp = FakeIdp::start(IdpConfig::default()).await.unwrap();
    let q = authorize(&idp, REDIRECT, &[("login_hint", "boss@contoso.example")]).await;
    assert_eq!(get(&q, "state"), Some("st-123"));
    let code = get(&q, "code").unwrap().to_owned();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    let (status, body) = token(&idp, &form).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let at = body["access_token"].as_str().unwrap();
    assert!(at.len() > 1000);
    assert!(body["refresh_token"].as_str().is_some());
    let c = claims(at);
    assert_eq!(c["aud"], "https://outlook.office.com");
    assert_eq!(c["scp"], "SMTP.Send");
    assert_eq!(c["upn"], "boss@contoso.example");
    let info = idp.validate_access_token(at).unwrap();
    assert_eq!(
        (info.user.as_str(), info.app_only),
        ("boss@contoso.example", false)
    );

    // Single use.
    let (status, body) = token(&idp, &form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(body["error_codes"][0], 54005);
    assert!(body["trace_id"].is_string() && body["correlation_id"].is_string());
}

#[tokio::test]
async fn wrong_verifier_and_unregistered_redirect_are_refused() {
    let client = ClientRegistration::confidential(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
        .with_redirects(RedirectPolicy::Exact(vec![REDIRECT.into()]));
    let idp = FakeIdp::start(IdpConfig::default().with_client(client))
        .await
        .unwrap();
    let q = authorize(&idp, REDIRECT, &[]).await;
    let code = get(&q, "code").unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        (
            "code_verifier",
            "another-verifier-that-is-long-enough-for-pkce-0123456789",
        ),
    ];
    let (status, body) = token(&idp, &form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS501481")
    );

    let q = authorize(&idp, "http://localhost:9999/other", &[]).await;
    assert_eq!(get(&q, "error"), Some("invalid_request"));
    assert!(
        get(&q, "error_description")
            .unwrap()
            .starts_with("AADSTS50011")
    );
    assert_eq!(get(&q, "code"), None);
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let idp = FakeIdp::start(IdpConfig::default()).await.unwrap();
    let rt1 = idp.issue_refresh_token(DEFAULT_CLIENT_ID, DEFAULT_USER, SCOPE);
    let (status, body) = refresh(&idp, &rt1).await;
    assert_eq!(status, 200, "{body}");
    let rt2 = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt1, rt2);
    assert_eq!(idp.refresh_token_state(&rt1), Some(RefreshState::Used));
    assert_eq!(
        idp.current_refresh_token_for(DEFAULT_USER).as_deref(),
        Some(rt2.as_str())
    );
    let (status, body) = refresh(&idp, &rt2).await;
    assert_eq!(status, 200, "{body}");
    let rt3 = body["refresh_token"].as_str().unwrap().to_owned();

    // Replaying a token whose successor was used: invalid_grant, and the newest token dies with it.
    let (status, body) = refresh(&idp, &rt1).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS70000")
    );
    let (status, body) = refresh(&idp, &rt3).await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (400, Some(50173))
    );
    assert_eq!(idp.counters().refresh_token, 4);
    assert_eq!(idp.current_refresh_token_for(DEFAULT_USER), None);
}

#[tokio::test]
async fn a_replay_before_the_successor_is_used_still_works_like_microsoft() {
    // A client that crashed after the token response but before saving it sends the old token again.
    let idp = FakeIdp::start(IdpConfig::default()).await.unwrap();
    let rt1 = idp.issue_refresh_token(DEFAULT_CLIENT_ID, DEFAULT_USER, SCOPE);
    let (status, body) = refresh(&idp, &rt1).await;
    assert_eq!(status, 200, "{body}");
    let lost = body["refresh_token"].as_str().unwrap().to_owned();
    let (status, body) = refresh(&idp, &rt1).await;
    assert_eq!(status, 200, "the old token works once more: {body}");
    let kept = body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(
        idp.refresh_token_state(&lost),
        Some(RefreshState::Used),
        "the lost successor is superseded"
    );
    let (status, _) = refresh(&idp, &kept).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn client_credentials_and_client_authentication() {
    let idp = FakeIdp::start(IdpConfig::default()).await.unwrap();
    let app_scope = "https://outlook.office365.com/.default";
    let (status, body) = token(
        &idp,
        &[("grant_type", "client_credentials"), ("scope", app_scope)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("refresh_token").is_none());
    let info = idp
        .validate_access_token(body["access_token"].as_str().unwrap())
        .unwrap();
    assert!(info.app_only);
    assert_eq!(info.aud, "https://outlook.office365.com");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["roles"][0],
        "SMTP.SendAsApp"
    );

    let (status, body) = token(
        &idp,
        &[("grant_type", "client_credentials"), ("scope", SCOPE)],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );

    // Wrong secret over HTTP Basic.
    let resp = http()
        .post(idp.token_url(TENANT))
        .basic_auth(DEFAULT_CLIENT_ID, Some("wrong"))
        .form(&[("grant_type", "client_credentials"), ("scope", app_scope)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215: Invalid client secret provided.")
    );
}

#[tokio::test]
async fn device_flow_with_slow_down_and_approval() {
    let config = IdpConfig {
        device_interval: 1,
        ..IdpConfig::default()
    };
    let idp = FakeIdp::start(config).await.unwrap();
    let resp = http()
        .post(idp.device_url(TENANT))
        .form(&[("client_id", DEFAULT_CLIENT_ID), ("scope", SCOPE)])
        .send()
        .await
        .unwrap();
    let dev: Value = resp.json().await.unwrap();
    assert_eq!(dev["interval"], 1);
    let device_code = dev["device_code"].as_str().unwrap();
    let user_code = dev["user_code"].as_str().unwrap();
    assert!(dev["message"].as_str().unwrap().contains(user_code));
    let poll = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", device_code),
    ];

    assert_eq!(token(&idp, &poll).await.1["error"], "authorization_pending");
    idp.inject_slow_down(1);
    assert_eq!(token(&idp, &poll).await.1["error"], "slow_down");
    assert_eq!(idp.pending_device_codes(), vec![user_code.to_owned()]);
    assert!(idp.approve_device(user_code));
    let (status, body) = token(&idp, &poll).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["refresh_token"].is_string());
    assert_eq!(token(&idp, &poll).await.1["error"], "invalid_grant");
    assert_eq!(idp.counters().device_code, 4);
}

#[tokio::test]
async fn injected_errors_down_mode_and_shutdown() {
    let idp = FakeIdp::start(IdpConfig {
        expires_in_as_string: true,
        ..IdpConfig::default()
    })
    .await
    .unwrap();
    let rt = idp.issue_refresh_token(DEFAULT_CLIENT_ID, DEFAULT_USER, SCOPE);
    idp.inject(1, InjectedError::http(503, Some(7)));
    idp.inject(
        1,
        InjectedError::oauth(400, "invalid_grant", "AADSTS50076: MFA required."),
    );
    let resp = http()
        .post(idp.token_url(TENANT))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt.as_str()),
            ("client_id", DEFAULT_CLIENT_ID),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "7");
    let (status, body) = refresh(&idp, &rt).await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (400, Some(50076))
    );
    // The token was not consumed by the injected failures.
    let (status, body) = refresh(&idp, &rt).await;
    assert_eq!(status, 200);
    assert_eq!(body["expires_in"], "3600");

    // Introspection, as Dovecot uses it.
    let at = body["access_token"].as_str().unwrap();
    let resp = http()
        .post(idp.introspect_url())
        .form(&[("token", at)])
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        (v["active"].as_bool(), v["email"].as_str()),
        (Some(true), Some(DEFAULT_USER))
    );
    idp.revoke_all_access_tokens();
    let resp = http()
        .post(idp.introspect_url())
        .form(&[("token", at)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["active"], false);

    idp.set_down(true);
    assert_eq!(refresh(&idp, &rt).await.0, 503);
    idp.shutdown().await;
    assert!(http().post(idp.token_url(TENANT)).send().await.is_err());
}

#[tokio::test]
async fn device_flow_denied_expired_and_auto_approved() {
    let config = IdpConfig {
        auto_approve_after_polls: Some(2),
        ..IdpConfig::default()
    };
    let idp = FakeIdp::start(config).await.unwrap();
    let start = || async {
        let resp = http()
            .post(idp.device_url(TENANT))
            .form(&[("client_id", DEFAULT_CLIENT_ID), ("scope", SCOPE)])
            .send()
            .await
            .unwrap();
        let v: Value = resp.json().await.unwrap();
        (
            v["device_code"].as_str().unwrap().to_owned(),
            v["user_code"].as_str().unwrap().to_owned(),
        )
    };
    let poll = |code: String| {
        let idp = idp.clone();
        async move {
            let form = [
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", code.as_str()),
            ];
            token(&idp, &form).await
        }
    };
    let (device, user) = start().await;
    assert!(idp.deny_device(&user));
    assert_eq!(poll(device).await.1["error"], "access_denied");
    let (device, user) = start().await;
    assert!(idp.expire_device(&user));
    assert_eq!(poll(device).await.1["error"], "expired_token");

    let (device, _) = start().await;
    assert_eq!(
        poll(device.clone()).await.1["error"],
        "authorization_pending"
    );
    assert_eq!(
        poll(device.clone()).await.1["error"],
        "authorization_pending"
    );
    let (status, body) = poll(device).await;
    assert_eq!(status, 200, "{body}");
    let info = idp
        .validate_access_token(body["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(info.user, DEFAULT_USER);
}
