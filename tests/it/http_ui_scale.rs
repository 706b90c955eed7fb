//! The admin UI for many customers: scoped API keys on the keys page, and the connection list's
//! search, status filter and paging.

use axum::http::StatusCode;

use crate::http_ui::{Ui, connection_form, form};

#[tokio::test]
async fn the_keys_page_creates_and_shows_scoped_keys() {
    let ui = Ui::new().await;
    let session = ui.login().await;
    let csrf = ui.get("/admin/api-keys", Some(&session)).await.csrf();
    // The form's connection is `contoso`.
    ui.post("/admin/connections", Some(&session), connection_form(&csrf))
        .await;
    let page = ui.get("/admin/api-keys", Some(&session)).await;
    assert!(page.body.contains("name=\"connections\""), "{}", page.body);

    let bad = ui
        .post(
            "/admin/api-keys",
            Some(&session),
            form(&[
                ("csrf", &csrf),
                ("name", "cust"),
                ("role", "send"),
                ("connections", "contoso, nosuch"),
            ]),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("`nosuch`"), "{}", bad.body);
    assert!(ui.store.list_api_keys().await.unwrap().is_empty());

    let created = ui
        .post(
            "/admin/api-keys",
            Some(&session),
            form(&[
                ("csrf", &csrf),
                ("name", "cust"),
                ("role", "send"),
                ("connections", "contoso"),
            ]),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let keys = ui.store.list_api_keys().await.unwrap();
    let scope: Vec<&str> = keys[0]
        .scope
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(scope, ["contoso"]);
    let list = ui.get("/admin/api-keys", Some(&session)).await;
    let row = list.body.split("<tr><td>cust</td>").nth(1).unwrap();
    assert!(row.starts_with("<td>send</td><td>contoso</td>"), "{row}");
}

#[tokio::test]
async fn the_connection_list_searches_filters_by_status_with_counts_and_pages() {
    let ui = Ui::new().await;
    let session = ui.login().await;
    crate::seed::connections(&ui.store, 120).await;

    let first = ui.get("/admin", Some(&session)).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(
        first
            .body
            .matches("<tr>\n  <td><a href=\"/admin/connections/")
            .count(),
        50
    );
    // Counts per status: 17 of the fixture's 120 are disabled (i % 7 == 3).
    assert!(first.body.contains(">any (120)</option>"), "{}", first.body);
    assert!(
        first.body.contains(">disabled (17)</option>"),
        "{}",
        first.body
    );
    assert!(first.body.contains(">new (103)</option>"), "{}", first.body);
    let next = first
        .body
        .split("href=\"")
        .filter_map(|s| s.split('"').next())
        .find(|h| h.contains("cursor="))
        .expect("a next page link")
        .replace("&amp;", "&")
        .replace("&#38;", "&");
    let second = ui.get(&next, Some(&session)).await;
    assert!(
        second.body.contains("cust-050") && !second.body.contains("cust-049\""),
        "{next}: {}",
        second.body
    );
    assert!(second.body.contains("First page"));

    // Search and status together; the counts follow the search.
    let found = ui
        .get("/admin?search=CUSTOMER11&status=disabled", Some(&session))
        .await;
    assert_eq!(found.status, StatusCode::OK);
    assert!(
        found.body.contains("/admin/connections/cust-115\""),
        "{}",
        found.body
    );
    assert!(!found.body.contains("/admin/connections/cust-114\""));
    assert!(found.body.contains("value=\"CUSTOMER11\""));
    assert!(found.body.contains("value=\"disabled\" selected"));
    assert!(found.body.contains(">any (11)</option>"), "{}", found.body);
    assert!(!found.body.contains("rel=\"next\""));

    let bad = ui.get("/admin?status=broken", Some(&session)).await;
    assert_eq!(bad.status, StatusCode::OK);
    assert!(
        bad.body.contains("status `broken` is not known"),
        "{}",
        bad.body
    );
}
