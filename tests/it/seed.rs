//! Many connections at once, straight into a store, for the tests of listing at scale.

use postern::domain::ConnectionInput;
use postern::store::Store;

/// `cust-000` .. : every 5th is Google, every 7th disabled, `cust-042` is "Fabrikam Billing".
pub async fn connections(store: &Store, n: usize) {
    for i in 0..n {
        let google = i % 5 == 0;
        let (s, _) = ConnectionInput {
            name: Some(format!("cust-{i:03}")),
            display_name: Some(if i == 42 {
                "Fabrikam Billing".to_string()
            } else {
                format!("Customer {i}")
            }),
            provider: Some(if google { "google" } else { "microsoft" }.into()),
            user: Some(format!("ops@customer{i}.example")),
            tenant: (!google).then(|| format!("customer{i}.onmicrosoft.com")),
            client_id: Some("1b2c3d4e-0000-1111-2222-333344445555".into()),
            enabled: Some(i % 7 != 3),
            ..Default::default()
        }
        .validate()
        .unwrap();
        store.insert_connection(&s).await.unwrap();
    }
}

/// What [`connections`] made, by the fixture's rules: (name, provider, shown status).
pub fn expected(n: usize) -> Vec<(String, &'static str, &'static str)> {
    (0..n)
        .map(|i| {
            (
                format!("cust-{i:03}"),
                if i % 5 == 0 { "google" } else { "microsoft" },
                if i % 7 == 3 { "disabled" } else { "new" },
            )
        })
        .collect()
}
