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
