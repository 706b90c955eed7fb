//! The token manager in-process: single flight, rotation, the crash window, transient and
//! permanent failures, restarts, keep-alive, client credentials and the device grant.

use std::time::Duration;

use fake_provider::idp::InjectedError;
use postern::domain::ConnectionStatus;
use postern::oauth::{
    Audience, AuthorizeError, DevicePolling, Grant, PollEvent, TokenError, TokenOrigin, TokenSource,
};
use postern::store::SecretKind;
use secrecy::{ExposeSecret, SecretString};

use super::{APP_SCOPE, Lib, USER, idp_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_callers_on_an_expired_token_cause_one_refresh() {
    let lib = Lib::new(idp_config(), "authorization-code").await;
    lib.seed().await;
    let manager = lib.manager();
    let conn = lib.conn().await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (manager, conn, barrier) = (manager.clone(), conn.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            manager.access_token(&conn).await
        }));
    }
    let mut values = std::collections::HashSet::new();
    for t in tasks {
        let token = t.await.unwrap().expect("token");
        values.insert(token.value.expose_secret().to_string());
    }
    assert_eq!(
        lib.idp.counters().refresh_token,
        1,
        "exactly one refresh for 50 callers"
    );
    assert_eq!(values.len(), 1, "every caller got the same token");
    let token = values.into_iter().next().unwrap();
    assert!(
        lib.idp.validate_access_token(&token).is_some(),
        "a real token from the provider"
    );
    // The next caller is served from the cache.
    manager.access_token(&conn).await.unwrap();
    assert_eq!(lib.idp.counters().refresh_token, 1);
}

/// Three instances on one PostgreSQL (three stores, three pools, three managers), 50 callers
/// each, on an expired token that rotates: one token request in all, which the other instances
/// read back from the store, and never a reuse of the rotated refresh token (`invalid_grant`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_an_expired_rotating_token_cause_one_refresh() {
    let lib = Lib::new(idp_config(), "authorization-code").await;
    let (Some(b), Some(c)) = (lib.another_instance().await, lib.another_instance().await) else {
        eprintln!(
            "skipped: several instances share a store only on PostgreSQL (set POSTERN_TEST_STORE_URL)"
        );
        return;
    };
    lib.seed().await;
    let managers = [lib.manager(), lib.manager_on(b), lib.manager_on(c)];
    let conn = lib.conn().await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(150));
    let mut tasks = Vec::new();
    for manager in &managers {
        for _ in 0..50 {
            let (manager, conn, barrier) = (manager.clone(), conn.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                manager.access_token(&conn).await
            }));
        }
    }
    let mut values = std::collections::HashSet::new();
    for t in tasks {
        let token = t.await.unwrap().expect("every caller gets a token");
        values.insert(token.value.expose_secret().to_string());
    }
    let requests = lib.idp.token_requests();
    assert_eq!(
        lib.idp.counters().refresh_token,
        1,
        "exactly one refresh for 3 instances x 50 callers: {requests:?}"
    );
    assert!(requests.iter().all(|r| r.error.is_none()), "{requests:?}");
    assert_eq!(values.len(), 1, "every caller got the same token");
    let token = values.into_iter().next().unwrap();
    assert!(lib.idp.validate_access_token(&token).is_some());
    assert_eq!(
        lib.stored(SecretKind::RefreshToken).await,
        lib.idp.current_refresh_token_for(USER),
        "the rotated refresh token is the one committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_stores_the_new_refresh_token_and_never_reuses_the_old() {
    let lib = Lib::new(idp_config(), "authorization-code").await;
    let first = lib.seed().await;
    let manager = lib.manager();
    let conn = lib.conn().await;
    manager.access_token(&conn).await.unwrap();
    let second = lib.stored(SecretKind::RefreshToken).await.unwrap();
    assert_ne!(
        second, first,
        "the rotated refresh token replaced the old one"
    );
    assert_eq!(
        lib.idp.current_refresh_token_for(USER).as_deref(),
        Some(second.as_str())
    );
    // Postern keeps refreshing: each success proves it sent the newest token, since a reused
    // one would have revoked the whole family at the fake.
    for _ in 0..3 {
        manager
            .force_refresh(conn.id)
            .await
            .expect("refresh with the newest token");
    }
    assert_eq!(lib.idp.counters().refresh_token, 4);
    let newest = lib.stored(SecretKind::RefreshToken).await.unwrap();
    assert_eq!(
        lib.idp.current_refresh_token_for(USER).as_deref(),
        Some(newest.as_str())
    );
    assert!(lib.idp.token_requests().iter().all(|r| r.error.is_none()));
    // The old token replayed by someone else is refused (reuse detection).
    let replay = manager
        .client()
        .request(
            &conn.settings,
            Some(&SecretString::from(super::SECRET)),
            Grant::RefreshToken(&SecretString::from(first)),
        )
        .await;
    let err = replay.expect_err("the fake refuses a reused refresh token");
    assert!(err.to_string().contains("invalid_grant"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_token_response_and_commit_loses_nothing() {
    let lib = Lib::new(idp_config(), "authorization-code").await;
    let stored = lib.seed().await;
    let conn = lib.conn().await;
    // The token endpoint answers a refresh, then the process "dies" before the commit: the
    // answer is dropped and the store still holds the refresh token it sent.
    let lost = lib
        .manager()
        .client()
        .request(
            &conn.settings,
            Some(&SecretString::from(super::SECRET)),
            Grant::RefreshToken(&SecretString::from(stored.clone())),
        )
        .await
        .expect("the endpoint answered");
    drop(lost);
    assert_eq!(
        lib.stored(SecretKind::RefreshToken).await.as_deref(),
        Some(stored.as_str())
    );
    // A fresh process (a new manager on the same store) still refreshes.
    let fresh = lib.manager();
    fresh
        .access_token(&conn)
        .await
        .expect("refresh after the crash");
    assert_eq!(lib.conn().await.status, ConnectionStatus::Authorized);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_503s_are_retried_and_recover() {
    let lib = Lib::new(idp_config(), "authorization-code").await;
    let first = lib.seed().await;
    lib.idp.inject(2, InjectedError::http(503, None));
    lib.idp.inject(1, InjectedError::http(429, Some(1)));
    let manager = lib.manager();
    let token = manager
        .access_token(&lib.conn().await)
        .await
        .expect("recovered after retries");
    assert_eq!(token.origin, TokenOrigin::Provider);
    let c = lib.idp.counters();
    assert_eq!(c.refresh_token, 4, "three failures, then success");
    assert_eq!(lib.conn().await.status, ConnectionStatus::Authorized);
    assert_ne!(lib.stored(SecretKind::RefreshToken).await.unwrap(), first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_transient_and_keeps_everything() {
    let lib = Lib::new(idp_config(), "authorization-code").await;
    let rt = lib.seed().await;
    lib.idp.inject(
        10,
        InjectedError::oauth(503, "temporarily_unavailable", "AADSTS90033: busy"),
    );
    let manager = lib.manager();
    let err = manager.access_token(&lib.conn().await).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(lib.idp.counters().refresh_token, 4, "bounded tries");
    assert_eq!(
        lib.conn().await.status,
        ConnectionStatus::Authorized,
        "status unchanged"
    );
    assert_eq!(
        lib.stored(SecretKind::RefreshToken).await.as_deref(),
        Some(rt.as_str()),
        "tokens kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_grant_needs_reauthorization_and_keeps_the_token() {
    let lib = Lib::new(idp_config(), "authorization-code").await;
    let rt = lib.seed().await;
    lib.idp.expire_refresh_tokens_for(USER);
    let manager = lib.manager();
    let err = manager.access_token(&lib.conn().await).await.unwrap_err();
    assert!(err.needs_reauthorization(), "{err}");
    let conn = lib.conn().await;
    let ConnectionStatus::NeedsReauthorization { reason } = &conn.status else {
        panic!("status is {:?}", conn.status)
    };
    assert!(
        reason.starts_with("invalid_grant: AADSTS700082"),
        "{reason}"
    );
    assert!(!reason.contains(&rt), "no secret in the reason");
    assert_eq!(
        lib.stored(SecretKind::RefreshToken).await.as_deref(),
        Some(rt.as_str()),
        "never deleted"
    );
    // No more calls to the provider until an admin acts.
    let before = lib.idp.counters().total;
    let again = manager.access_token_by_id(conn.id).await.unwrap_err();
    assert!(again.needs_reauthorization());
    assert!(
        manager
            .for_connection(conn.id)
            .access_token()
            .await
            .unwrap_err()
            .needs_reauthorization()
    );
    assert_eq!(lib.idp.counters().total, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_uses_the_sealed_access_token() {
    let lib = Lib::new(idp_config(), "authorization-code").await;
    lib.seed().await;
    let first = lib.manager().access_token(&lib.conn().await).await.unwrap();
    assert_eq!(first.origin, TokenOrigin::Provider);
    let restarted = lib.manager();
    let again = restarted.access_token(&lib.conn().await).await.unwrap();
    assert_eq!(again.origin, TokenOrigin::Store);
    assert_eq!(again.value.expose_secret(), first.value.expose_secret());
    assert_eq!(
        lib.idp.counters().refresh_token,
        1,
        "no refresh after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_refresh_replaces_a_refused_token_once() {
    let lib = Lib::new(idp_config(), "authorization-code").await;
    lib.seed().await;
    let manager = lib.manager();
    let source = manager.for_connection(lib.conn.id);
    let refused = source.access_token().await.unwrap();
    lib.idp.revoke_access_token(refused.expose_secret());
    // Three SMTP sessions are refused at once: one refresh serves them all.
    let (a, b, c) = tokio::join!(
        source.force_refresh(),
        source.force_refresh(),
        source.force_refresh()
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_ne!(a.expose_secret(), refused.expose_secret());
    assert_eq!(a.expose_secret(), b.expose_secret());
    assert_eq!(b.expose_secret(), c.expose_secret());
    assert_eq!(lib.idp.counters().refresh_token, 2);
    assert!(lib.idp.validate_access_token(a.expose_secret()).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_connections_never_reach_the_provider() {
    let lib = Lib::new(idp_config(), "authorization-code").await;
    lib.seed().await;
    lib.store.set_enabled("contoso", false).await.unwrap();
    let err = lib
        .manager()
        .access_token_by_id(lib.conn.id)
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::NotUsable(_)), "{err}");
    assert!(err.to_string().contains("disabled"));
    assert_eq!(lib.idp.counters().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_authorized_connections_say_what_to_run() {
    let lib = Lib::new(idp_config(), "authorization-code").await;
    let err = lib
        .manager()
        .access_token(&lib.conn().await)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("postern connection authorize contoso"),
        "{err}"
    );
    assert_eq!(lib.idp.counters().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_refreshes_only_idle_connections() {
    let lib = Lib::new(idp_config(), "authorization-code").await;
    lib.seed().await;
    let manager = lib.manager();
    manager.access_token(&lib.conn().await).await.unwrap();
    assert!(
        manager.keepalive().await.unwrap().refreshed.is_empty(),
        "used just now"
    );
    // Eight days pass without a refresh.
    let eight_days_ago = "UPDATE secrets SET updated_at = updated_at - 8 * 86400";
    match lib.store.db() {
        postern::store::On::Sqlite(pool) => {
            sqlx::query(eight_days_ago).execute(pool).await.unwrap();
        }
        postern::store::On::Postgres(pool) => {
            sqlx::query(eight_days_ago).execute(pool).await.unwrap();
        }
    }
    let before = lib.idp.counters().refresh_token;
    let report = manager.keepalive().await.unwrap();
    assert_eq!(report.refreshed, vec!["contoso".to_string()]);
    assert!(report.failed.is_empty());
    assert_eq!(lib.idp.counters().refresh_token, before + 1);
    assert!(
        manager.keepalive().await.unwrap().refreshed.is_empty(),
        "fresh again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_get_app_only_tokens_without_a_refresh_token() {
    let lib = Lib::new(idp_config(), "client-credentials").await;
    let manager = lib.manager();
    let done = manager
        .authorize_client_credentials(&lib.conn().await)
        .await
        .expect("app-only token");
    assert!(!done.refresh_token_stored);
    let conn = lib.conn().await;
    assert_eq!(conn.status, ConnectionStatus::Authorized);
    assert!(!conn.refresh_token_set);
    let token = manager.access_token(&conn).await.unwrap();
    let info = lib
        .idp
        .validate_access_token(token.value.expose_secret())
        .unwrap();
    assert!(info.app_only);
    assert_eq!(
        lib.idp.counters().client_credentials,
        1,
        "the second call used the cache"
    );
    let requests = lib.idp.token_requests();
    assert_eq!(requests[0].scope.as_deref(), Some(APP_SCOPE));
    // Expired: a new client-credentials request, still no refresh token.
    let forced = manager.force_refresh(conn.id).await.unwrap();
    assert_eq!(forced.origin, TokenOrigin::Provider);
    assert_eq!(lib.idp.counters().client_credentials, 2);
    assert_eq!(lib.idp.counters().refresh_token, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_flow_honours_slow_down() {
    let mut config = idp_config();
    config.device_interval = 0;
    config.auto_approve_after_polls = Some(3);
    config.default_user = USER.into();
    let lib = Lib::new(config, "authorization-code").await;
    lib.idp.inject_slow_down(2);
    let manager = lib.manager();
    let conn = lib.conn().await;
    let auth = manager.start_device(&conn).await.unwrap();
    assert!(!auth.user_code.is_empty());
    assert!(auth.verification_uri.starts_with("http://127.0.0.1"));
    let polling = DevicePolling {
        slow_down_step: Duration::from_millis(100),
        min_interval: Duration::from_millis(20),
    };
    let mut events = Vec::new();
    let done = manager
        .finish_device(&conn, &auth, &polling, |e| events.push(e))
        .await
        .expect("device sign-in");
    assert!(done.refresh_token_stored);
    assert_eq!(
        events,
        vec![
            PollEvent::SlowDown {
                interval: Duration::from_millis(120)
            },
            PollEvent::SlowDown {
                interval: Duration::from_millis(220)
            },
            PollEvent::Pending,
        ]
    );
    assert_eq!(lib.idp.counters().device_code, 4);
    let conn = lib.conn().await;
    assert_eq!(conn.status, ConnectionStatus::Authorized);
    assert!(conn.refresh_token_set);
    assert_eq!(
        lib.stored(SecretKind::RefreshToken).await,
        lib.idp.current_refresh_token_for(USER)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_flow_stops_when_declined_or_expired() {
    let mut config = idp_config();
    config.device_interval = 0;
    let lib = Lib::new(config, "authorization-code").await;
    let manager = lib.manager();
    let conn = lib.conn().await;
    let polling = DevicePolling {
        slow_down_step: Duration::from_millis(50),
        min_interval: Duration::from_millis(20),
    };
    for (act, error) in [("deny", "access_denied"), ("expire", "expired_token")] {
        let auth = manager.start_device(&conn).await.unwrap();
        let idp = lib.idp.clone();
        let code = auth.user_code.clone();
        match act {
            "deny" => assert!(idp.deny_device(&code)),
            _ => assert!(idp.expire_device(&code)),
        }
        let err = manager
            .finish_device(&conn, &auth, &polling, |_| {})
            .await
            .unwrap_err();
        match err {
            AuthorizeError::Provider(p) => assert_eq!(p.error, error),
            other => panic!("{act}: {other}"),
        }
    }
    assert_eq!(lib.conn().await.status, ConnectionStatus::New);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauthorizing_makes_a_refused_connection_usable_again() {
    let lib = Lib::new(idp_config(), "authorization-code").await;
    lib.seed().await;
    lib.idp.revoke_refresh_tokens_for(USER);
    let manager = lib.manager();
    assert!(
        manager
            .access_token(&lib.conn().await)
            .await
            .unwrap_err()
            .needs_reauthorization()
    );
    // The admin signs in again (here through the device grant, auto-approved).
    let auth = manager.start_device(&lib.conn().await).await.unwrap();
    assert!(lib.idp.approve_device(&auth.user_code));
    let polling = DevicePolling {
        slow_down_step: Duration::from_millis(50),
        min_interval: Duration::from_millis(20),
    };
    let mut auth = auth;
    auth.interval = 0;
    manager
        .finish_device(&lib.conn().await, &auth, &polling, |_| {})
        .await
        .unwrap();
    let conn = lib.conn().await;
    assert_eq!(conn.status, ConnectionStatus::Authorized);
    manager.force_refresh(conn.id).await.expect("usable again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_and_graph_tokens_are_kept_apart() {
    let lib = Lib::new(idp_config(), "authorization-code").await;
    lib.seed().await;
    let manager = lib.manager();
    let conn = lib.conn().await;
    let smtp = manager.access_token(&conn).await.unwrap();
    let graph = manager
        .access_token_for(&conn, Audience::Graph)
        .await
        .unwrap();
    let aud = |t: &SecretString| lib.idp.validate_access_token(t.expose_secret()).unwrap();
    assert_eq!(aud(&smtp.value).aud, "https://outlook.office.com");
    assert_eq!(aud(&graph.value).aud, "https://graph.microsoft.com");
    assert_eq!(aud(&graph.value).scopes, ["Mail.Send"]);
    // One refresh token bought both: two refreshes, each stored under its own kind.
    assert_eq!(lib.idp.counters().refresh_token, 2);
    assert_eq!(
        lib.stored(SecretKind::AccessToken).await.as_deref(),
        Some(smtp.value.expose_secret())
    );
    assert_eq!(
        lib.stored(SecretKind::GraphAccessToken).await.as_deref(),
        Some(graph.value.expose_secret())
    );
    // Graph refuses its token: the forced refresh replaces the Graph token only.
    let source = manager.for_audience(conn.id, Audience::Graph);
    assert_eq!(
        source.access_token().await.unwrap().expose_secret(),
        graph.value.expose_secret()
    );
    lib.idp.revoke_access_token(graph.value.expose_secret());
    let renewed = source.force_refresh().await.unwrap();
    assert_ne!(renewed.expose_secret(), graph.value.expose_secret());
    assert_eq!(aud(&renewed).aud, "https://graph.microsoft.com");
    assert_eq!(lib.idp.counters().refresh_token, 3);
    let smtp_again = manager.access_token(&conn).await.unwrap();
    assert_eq!(
        smtp_again.value.expose_secret(),
        smtp.value.expose_secret(),
        "the SMTP token survived the Graph refresh"
    );
    assert_eq!(
        lib.stored(SecretKind::AccessToken).await.as_deref(),
        Some(smtp.value.expose_secret())
    );
    // A restart reads each audience's token back from the store, without a refresh.
    let restarted = lib.manager();
    let graph_back = restarted
        .access_token_for(&conn, Audience::Graph)
        .await
        .unwrap();
    assert_eq!(graph_back.origin, TokenOrigin::Store);
    assert_eq!(graph_back.value.expose_secret(), renewed.expose_secret());
    let smtp_back = restarted.access_token(&conn).await.unwrap();
    assert_eq!(smtp_back.value.expose_secret(), smtp.value.expose_secret());
    assert_eq!(lib.idp.counters().refresh_token, 3);
}
