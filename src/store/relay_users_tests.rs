use super::*;

/// Does `password` log `name` in?
async fn verifies(store: &Store, name: &str, password: &SecretString) -> bool {
    store
        .verify_relay_user(name, password, None)
        .await
        .unwrap()
        .is_some()
}

use crate::store::test_store_with_connection as store_with_connection;

#[tokio::test]
async fn generated_and_chosen_passwords_verify_and_wrong_ones_do_not() {
    let (_d, store, conn) = store_with_connection().await;
    let (user, pw) = store
        .create_relay_user(
            "app1",
            conn,
            &["@contoso.com".into()],
            NewPassword::GENERATED,
        )
        .await
        .unwrap();
    let pw = pw.unwrap();
    assert_eq!(user.password, "generated");
    assert!(pw.expose_secret().len() >= 40);
    assert!(verifies(&store, "app1", &pw).await);
    assert!(!verifies(&store, "app1", &SecretString::from("nope")).await);
    assert!(!verifies(&store, "ghost", &pw).await);

    let chosen = SecretString::from("correct horse battery staple".to_string());
    store
        .create_relay_user("app2", conn, &[], NewPassword::Chosen(&chosen))
        .await
        .unwrap();
    assert!(verifies(&store, "app2", &chosen).await);
    assert!(!verifies(&store, "app2", &pw).await);
    assert!(matches!(
        store
            .create_relay_user(
                "app3",
                conn,
                &[],
                NewPassword::Chosen(&SecretString::from("short"))
            )
            .await,
        Err(RelayUserError::WeakPassword)
    ));

    let new_pw = store
        .reset_relay_password("app1", NewPassword::GENERATED)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !verifies(&store, "app1", &pw).await,
        "old password no longer works"
    );
    assert!(verifies(&store, "app1", &new_pw).await);
    assert!(matches!(
        store
            .create_relay_user("app1", conn, &[], NewPassword::GENERATED)
            .await,
        Err(RelayUserError::Duplicate(_))
    ));
    store.remove_relay_user("app1").await.unwrap();
    assert!(!verifies(&store, "app1", &new_pw).await);
}

#[tokio::test]
async fn generated_passwords_come_in_the_shape_a_device_needs() {
    let (_d, store, conn) = store_with_connection().await;
    let shape = PasswordShape {
        length: Some(24),
        alphanumeric: true,
    };
    let (user, pw) = store
        .create_relay_user("scanner", conn, &[], NewPassword::Generated(shape))
        .await
        .unwrap();
    let pw = pw.unwrap();
    assert_eq!(user.password, "generated", "a keyed hash, not argon2");
    assert_eq!(pw.expose_secret().len(), 24);
    assert!(
        pw.expose_secret()
            .chars()
            .all(|c| c.is_ascii_alphanumeric())
    );
    assert!(verifies(&store, "scanner", &pw).await);
    // Base64url of a chosen length; the default stays 43 characters.
    let other = PasswordShape {
        length: Some(16),
        alphanumeric: false,
    };
    let pw = store
        .reset_relay_password("scanner", NewPassword::Generated(other))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pw.expose_secret().len(), 16);
    let pw = store
        .reset_relay_password("scanner", NewPassword::GENERATED)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pw.expose_secret().len(), 43);
    for bad in [8, 15, 129] {
        let shape = PasswordShape {
            length: Some(bad),
            alphanumeric: true,
        };
        let err = store
            .reset_relay_password("scanner", NewPassword::Generated(shape))
            .await
            .unwrap_err();
        assert!(
            matches!(err, RelayUserError::BadLength(n) if n == bad),
            "{err}"
        );
        assert!(err.to_string().contains("16 to 128"), "{err}");
    }
    // A refused shape changed nothing.
    assert!(verifies(&store, "scanner", &pw).await);
}

#[tokio::test]
async fn the_from_policy_and_display_name_are_stored_and_read_back() {
    let (_d, store, conn) = store_with_connection().await;
    let (user, _) = store
        .create_relay_user("erp", conn, &[], NewPassword::GENERATED)
        .await
        .unwrap();
    assert_eq!(user.from_policy, FromPolicy::Refuse, "the default");
    assert_eq!(user.display_name, None);
    let name = DisplayName::parse("ERP \"Prod\"").unwrap();
    let user = store
        .set_relay_from_policy("erp", FromPolicy::Rewrite, Some(&name))
        .await
        .unwrap();
    assert_eq!(user.from_policy, FromPolicy::Rewrite);
    assert_eq!(user.display_name.as_ref(), Some(&name));
    let listed = store.list_relay_users().await.unwrap();
    assert_eq!(listed[0].from_policy, FromPolicy::Rewrite);
    let user = store
        .set_relay_from_policy("erp", FromPolicy::AllowListed, None)
        .await
        .unwrap();
    assert_eq!(
        (user.from_policy, user.display_name),
        (FromPolicy::AllowListed, None)
    );
    assert!(matches!(
        store
            .set_relay_from_policy("ghost", FromPolicy::Rewrite, None)
            .await,
        Err(RelayUserError::NoSuchUser(_))
    ));
}

#[tokio::test]
async fn passwords_still_verify_after_a_key_rotation() {
    let (_d, mut store, conn) = store_with_connection().await;
    let (_, pw) = store
        .create_relay_user("app", conn, &[], NewPassword::GENERATED)
        .await
        .unwrap();
    store.rotate_key(None).await.unwrap();
    assert!(verifies(&store, "app", &pw.unwrap()).await);
}

#[tokio::test]
async fn devices_are_bound_to_networks_that_overlap_no_one_else() {
    let (_d, store, conn) = store_with_connection().await;
    let net = |s: &str| IpNetwork::parse(s).unwrap();
    let (_, pw) = store
        .create_relay_user("scanner", conn, &[], NewPassword::GENERATED)
        .await
        .unwrap();
    let user = store
        .set_relay_networks("scanner", &[net("192.168.1.50"), net("10.9.0.0/16")])
        .await
        .unwrap();
    assert_eq!(user.networks, ["192.168.1.50/32", "10.9.0.0/16"]);
    assert_eq!(user.password, "none");
    assert!(
        !verifies(&store, "scanner", &pw.unwrap()).await,
        "the password from before no longer works"
    );
    assert!(matches!(
        store
            .reset_relay_password("scanner", NewPassword::GENERATED)
            .await,
        Err(RelayUserError::BoundToNetworks(_))
    ));

    store
        .create_relay_user("printer", conn, &[], NewPassword::GENERATED)
        .await
        .unwrap();
    let err = store
        .set_relay_networks("printer", &[net("192.168.1.0/24")])
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("192.168.1.0/24")
            && text.contains("192.168.1.50/32")
            && text.contains("`scanner`"),
        "{text}"
    );
    let err = store
        .set_relay_networks("printer", &[net("172.16.0.0/12"), net("172.16.5.5")])
        .await
        .unwrap_err();
    assert!(
        matches!(err, RelayUserError::NetworkOverlap { .. }),
        "{err}"
    );
    // Its own networks do not count against a user being changed.
    store
        .set_relay_networks("scanner", &[net("192.168.1.50")])
        .await
        .unwrap();
    store
        .set_relay_networks("printer", &[net("192.168.1.51")])
        .await
        .unwrap();
}

#[test]
fn generated_passwords_never_start_with_a_dash() {
    // One in 64 would by chance; 2,000 draws of each shape would all pass by luck once in
    // 10^13 runs if the rule were gone.
    let shapes = [
        PasswordShape::default(),
        PasswordShape {
            length: Some(20),
            alphanumeric: false,
        },
    ];
    for shape in shapes {
        for _ in 0..2_000 {
            let p = shape.generate().unwrap();
            assert!(!p.expose_secret().starts_with('-'), "{shape:?}");
        }
    }
}
