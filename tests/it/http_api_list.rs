//! `GET /api/v1/connections` over 120 connections: filters, cursor paging, the scope, and the
//! OpenAPI document describing them.

use std::collections::BTreeSet;

use reqwest::Method;

use crate::http_helpers::{HttpApp, json, spawn_http};
use crate::seed;

async fn page(app: &HttpApp, key: &str, query: &str) -> (u16, serde_json::Value) {
    let resp = app
        .request(
            Method::GET,
            &format!("/api/v1/connections?{query}"),
            Some(key),
        )
        .send()
        .await
        .unwrap();
    let (status, v, _) = json(resp).await;
    (status, v)
}

fn names(v: &serde_json::Value) -> Vec<String> {
    v["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

/// Every page for `query`, following `next_cursor`; returns the names and the page count.
async fn walk(app: &HttpApp, key: &str, query: &str) -> (Vec<String>, usize) {
    let mut got = Vec::new();
    let mut pages = 0;
    let mut cursor = String::new();
    loop {
        let (status, v) = page(app, key, &format!("{query}&cursor={cursor}")).await;
        assert_eq!(status, 200, "{v}");
        got.extend(names(&v));
        pages += 1;
        match v["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => return (got, pages),
        }
    }
}

#[tokio::test]
async fn the_connection_list_filters_and_pages_in_the_api() {
    let app = spawn_http().await;
    let admin = app.admin_key().await;
    seed::connections(&app.store, 120).await;
    let want = seed::expected(120);

    // The default page is 50.
    let (_, first) = page(&app, &admin, "").await;
    assert_eq!(names(&first).len(), 50);
    assert!(first["next_cursor"].is_string());

    let (all, pages) = walk(&app, &admin, "limit=25").await;
    assert_eq!(pages, 5);
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 120);
    assert_eq!(all, want.iter().map(|w| w.0.clone()).collect::<Vec<_>>());

    let (disabled, pages) = walk(&app, &admin, "status=disabled&limit=5").await;
    let want_disabled: Vec<String> = want
        .iter()
        .filter(|w| w.2 == "disabled")
        .map(|w| w.0.clone())
        .collect();
    assert_eq!(disabled, want_disabled);
    assert_eq!(pages, want_disabled.len().div_ceil(5));

    let (google_new, _) = walk(&app, &admin, "provider=google&status=new&limit=7").await;
    let want_google_new: Vec<String> = want
        .iter()
        .filter(|w| w.1 == "google" && w.2 == "new")
        .map(|w| w.0.clone())
        .collect();
    assert_eq!(google_new, want_google_new);

    let (_, fab) = page(&app, &admin, "search=fabRIKAM").await;
    assert_eq!(names(&fab), ["cust-042"]);
    assert!(fab["next_cursor"].is_null());

    // Bad values are 400 with the reason.
    for (query, says) in [
        ("status=broken", "needs-reauthorization"),
        ("provider=yahoo", "google"),
        ("cursor=garbage", "without a cursor"),
        ("limit=0", "limit"),
    ] {
        let (status, v) = page(&app, &admin, query).await;
        assert_eq!(status, 400, "{query}");
        assert!(v["detail"].as_str().unwrap().contains(says), "{query}: {v}");
    }

    // A scoped key pages through its own connections only, filters included.
    let scope: Vec<String> = (0..12).map(|i| format!("cust-{:03}", i * 10)).collect();
    let key = app
        .store
        .create_api_key("cust", postern::store::ApiRole::Send, &scope)
        .await
        .unwrap();
    let key = secrecy::ExposeSecret::expose_secret(&key.secret).to_string();
    let (mine, pages) = walk(&app, &key, "limit=5").await;
    assert_eq!((mine, pages), (scope.clone(), 3));
    let (google, _) = walk(&app, &key, "provider=google&limit=5").await;
    // Multiples of 10 are multiples of 5: all twelve are Google.
    assert_eq!(google.len(), 12);
    let (_, none) = page(&app, &key, "search=fabrikam").await;
    assert!(names(&none).is_empty(), "cust-042 is not in the scope");
}

#[tokio::test]
async fn the_openapi_document_describes_the_list_filters_and_cursor() {
    let app = spawn_http().await;
    let (_, doc, _) = json(
        app.request(Method::GET, "/api/v1/openapi.json", None)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let params: Vec<&str> = doc["paths"]["/api/v1/connections"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params, ["status", "provider", "search", "limit", "cursor"]);
    let page = &doc["components"]["schemas"]["ConnectionPageDoc"]["properties"];
    assert!(
        page["next_cursor"].is_object() && page["connections"].is_object(),
        "{page}"
    );
}
