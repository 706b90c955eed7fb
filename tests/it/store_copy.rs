//! `postern store copy`: SQLite ⇄ PostgreSQL with every row, every secret still opening, and
//! the refusals (a non-empty target, a target schema without a source column) writing nothing.

use std::collections::BTreeMap;

use postern::store::On;
use postern::store::messages::{NewMessage, Source};
use secrecy::SecretString;
use sqlx::{Row as _, TypeInfo as _, ValueRef as _};

use crate::helpers::{TestHome, fresh_store_url};

/// A home on SQLite whatever the test store (the copies here choose their stores themselves).
fn sqlite_home() -> TestHome {
    TestHome {
        dir: tempfile::tempdir().unwrap(),
        store_url: None,
    }
}

/// A PostgreSQL database for the tests that need one; None (with the reason printed) when
/// there is no test server, which CI (CI=true) does not accept.
fn postgres_or_skip(test: &str) -> Option<String> {
    let url = fresh_store_url();
    if url.is_none() {
        // CI's SQLite pass (POSTERN_TEST_SQLITE_PASS) is followed by its PostgreSQL pass.
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true")
                || std::env::var_os("POSTERN_TEST_SQLITE_PASS").is_some(),
            "CI=true but {} is not set: {test} needs PostgreSQL",
            postern::store::TEST_STORE_URL
        );
        eprintln!(
            "skipped {test}: it needs PostgreSQL ({} unset; `scripts/pg-cluster.sh start DIR` starts one)",
            postern::store::TEST_STORE_URL
        );
    }
    url
}

/// What a user keeps in a store: a connection with its client secret and refresh token, a relay
/// user, an API key, an admin, queued mail (one message claimed by a sender) with attempts.
/// Returns the API key and the id of the claimed message.
async fn populate(home: &TestHome) -> (String, String) {
    let rt = home.file("refresh.txt", "refresh-token-0123456789");
    home.add_connection("c1", "client-secret-abc", &["--refresh-token-file", &rt])
        .ok();
    home.add_connection("c2", "client-secret-def", &[]).ok();
    let pw = home.file("relay.pw", "relay-password-12345");
    home.run(&[
        "relay-user",
        "add",
        "app",
        "--connection",
        "c1",
        "--password-file",
        &pw,
    ])
    .ok();
    let admin_pw = home.file("admin.pw", "admin-password-12345");
    home.run(&["admin", "create", "alice", "--password-file", &admin_pw])
        .ok();
    let created = home
        .run(&[
            "api-key",
            "create",
            "ci",
            "--role",
            "send",
            "--connection",
            "c1",
        ])
        .ok();
    let key = created.stdout.trim().to_string();
    assert!(!key.is_empty(), "the key is printed");

    let store = home.store().await;
    let conn = store.connection("c1").await.unwrap();
    let message = |n: usize| NewMessage {
        connection_id: conn.id,
        connection_name: "c1".into(),
        source: Source::Relay,
        submitter: Some("app".into()),
        mail_from: "ops@contoso.com".into(),
        recipients: vec![format!("to{n}@example.org"), "cc@example.org".into()],
        body: format!("Subject: {n}\r\n\r\nbody {n} \u{e9}\r\n").into_bytes(),
        idempotency_key: None,
    };
    let queued: Vec<NewMessage> = (0..30).map(message).collect();
    let ids = store.insert_messages(&queued).await.unwrap();
    let claimed = store.insert_claimed(&[message(99)]).await.unwrap();
    let On::Sqlite(pool) = store.db() else {
        unreachable!()
    };
    for q in &ids[..5] {
        sqlx::query("INSERT INTO attempts (message_id, at, outcome, detail) VALUES (?, 1, 'deferred', '421 try later')")
            .bind(&q.id)
            .execute(pool)
            .await
            .unwrap();
    }
    store.close().await;
    (key, claimed[0].id.clone())
}

/// Every row of every table of a SQLite store, as text, sorted (tables by name).
async fn dump(db: &std::path::Path) -> BTreeMap<String, Vec<String>> {
    use sqlx::Connection as _;
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(db);
    let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%' AND name <> '_sqlx_migrations'",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let mut all = BTreeMap::new();
    for t in tables {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM \"{t}\"")))
            .fetch_all(&mut c)
            .await
            .unwrap();
        let mut text: Vec<String> = rows
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| {
                        let raw = r.try_get_raw(i).unwrap();
                        let ty = raw.type_info().name().to_string();
                        match ty.as_str() {
                            _ if raw.is_null() => "NULL".to_string(),
                            "INTEGER" => r.get::<i64, _>(i).to_string(),
                            "REAL" => r.get::<f64, _>(i).to_string(),
                            "TEXT" => format!("'{}'", r.get::<String, _>(i)),
                            _ => format!(
                                "x{}",
                                r.get::<Vec<u8>, _>(i)
                                    .iter()
                                    .map(|b| format!("{b:02x}"))
                                    .collect::<String>()
                            ),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect();
        text.sort();
        all.insert(t, text);
    }
    c.close().await.unwrap();
    all
}

/// The secrets of the store at `url`/`data_dir` open with its key, a relay password and the API
/// key still check.
async fn secrets_still_work(url: Option<&str>, data_dir: &std::path::Path, api_key: &str) {
    let store = postern::store::Store::open_url(url, data_dir, None)
        .await
        .unwrap();
    assert!(store.check_secrets_open().await.unwrap() >= 3);
    let pw = SecretString::from("relay-password-12345".to_string());
    assert!(
        store
            .verify_relay_user("app", &pw, None)
            .await
            .unwrap()
            .is_some()
    );
    let wrong = SecretString::from("not-the-password".to_string());
    assert!(
        store
            .verify_relay_user("app", &wrong, None)
            .await
            .unwrap()
            .is_none()
    );
    let key = SecretString::from(api_key.to_string());
    assert!(store.authenticate_api_key(&key).await.unwrap().is_some());
    store.close().await;
}

fn db_of(home: &TestHome) -> std::path::PathBuf {
    home.data_dir().join("postern.db")
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_to_sqlite_keeps_every_row_and_requeues_claimed_mail() {
    let source = sqlite_home();
    let (api_key, claimed) = populate(&source).await;
    let target = sqlite_home();
    let to = target.data_dir().display().to_string();

    // A running serve on the source is refused.
    let lock = postern::store::backup::lock_for_serve(&source.data_dir()).unwrap();
    let run = source.run(&["store", "copy", "--to", &to]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("running `postern serve`"),
        "{}",
        run.all()
    );
    drop(lock);

    let run = source.run(&["store", "copy", "--to", &to]).ok();
    assert!(run.stdout.contains("messages"), "{}", run.stdout);
    assert!(run.stdout.contains("same data key"), "{}", run.stdout);
    assert!(
        run.stdout.contains("1 messages that were being sent"),
        "{}",
        run.stdout
    );

    let before = dump(&db_of(&source)).await;
    let after = dump(&db_of(&target)).await;
    for (table, rows) in &before {
        if table == "messages" {
            assert_eq!(after[table].len(), rows.len());
        } else {
            assert_eq!(&after[table], rows, "table {table}");
        }
    }
    assert_eq!(before["attempts"].len(), 5);
    assert_eq!(before["recipients"].len(), 62);

    // The claimed message is queued again in the copy, with no lease; the others are as they were.
    let store = postern::store::Store::open(
        &target.data_dir(),
        Some(&source.data_dir().join("secret.key")),
    )
    .await
    .unwrap();
    let On::Sqlite(pool) = store.db() else {
        unreachable!()
    };
    let (status, lease): (String, Option<i64>) =
        sqlx::query_as("SELECT status, lease_until FROM messages WHERE id = ?")
            .bind(&claimed)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), lease), ("queued", None));
    store.close().await;

    std::fs::copy(
        source.data_dir().join("secret.key"),
        target.data_dir().join("secret.key"),
    )
    .unwrap();
    secrets_still_work(None, &target.data_dir(), &api_key).await;
    let show = target.run(&["connection", "show", "c1"]).ok();
    assert!(show.stdout.contains("ops@contoso.com"), "{}", show.stdout);
    assert!(!show.all().contains("client-secret-abc"), "{}", show.all());
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_to_postgresql_and_back_keeps_every_row_and_secret() {
    let Some(pg) = postgres_or_skip("the SQLite-PostgreSQL round trip") else {
        return;
    };
    let source = sqlite_home();
    let (api_key, _) = populate(&source).await;

    let run = source.run(&["store", "copy", "--to", &pg]).ok();
    assert!(run.stdout.contains("connections"), "{}", run.stdout);
    let show = source
        .run(&["--store-url", &pg, "connection", "show", "c1"])
        .ok();
    assert!(show.stdout.contains("ops@contoso.com"), "{}", show.stdout);
    // New rows get ids after the copied ones (the sequences moved past them).
    source
        .run(&[
            "--store-url",
            &pg,
            "connection",
            "add",
            "c3",
            "--provider",
            "google",
            "--user",
            "a@gmail.com",
            "--client-id",
            "x.apps.googleusercontent.com",
            "--client-secret-file",
            &source.file("g.secret", "gsecret"),
        ])
        .ok();

    let back = sqlite_home();
    let to = format!("sqlite://{}", db_of(&back).display());
    source
        .run(&["--store-url", &pg, "store", "copy", "--to", &to])
        .ok();
    let before = dump(&db_of(&source)).await;
    let after = dump(&db_of(&back)).await;
    for (table, rows) in &before {
        match table.as_str() {
            "messages" => assert_eq!(after[table].len(), rows.len()),
            "connections" | "secrets" => assert_eq!(after[table].len(), rows.len() + 1, "{table}"),
            _ => assert_eq!(&after[table], rows, "table {table}"),
        }
    }
    std::fs::copy(
        source.data_dir().join("secret.key"),
        back.data_dir().join("secret.key"),
    )
    .unwrap();
    secrets_still_work(None, &back.data_dir(), &api_key).await;
    // The copy on PostgreSQL opens with the same key, and its secrets and passwords work (checked
    // last: authenticating records the key's use, which the comparison above would see).
    secrets_still_work(Some(&pg), &source.data_dir(), &api_key).await;
    let list = back.run(&["connection", "list"]).ok();
    assert!(list.stdout.contains("c3"), "{}", list.stdout);
}

/// The target for a refusal test: PostgreSQL when there is a test server, else SQLite.
fn any_target() -> (TestHome, String) {
    let home = TestHome::new();
    let to = match &home.store_url {
        Some(url) => url.clone(),
        None => home.data_dir().display().to_string(),
    };
    (home, to)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_empty_target_is_refused_and_left_as_it_was() {
    let source = sqlite_home();
    source.add_connection("c1", "client-secret-abc", &[]).ok();
    let (target, to) = any_target();
    target.add_connection("mine", "other-secret", &[]).ok();
    let before = target.run(&["connection", "list"]).ok().stdout;

    let run = source.run(&["store", "copy", "--to", &to]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("not empty"), "{}", run.stderr);
    assert!(run.stderr.contains("table `connections`"), "{}", run.stderr);
    assert!(
        run.stderr.contains("DROP DATABASE") || run.stderr.contains("remove"),
        "says how to start over: {}",
        run.stderr
    );
    assert_eq!(target.run(&["connection", "list"]).ok().stdout, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_column_the_target_lacks_is_refused_by_name() {
    let source = sqlite_home();
    source.add_connection("c1", "client-secret-abc", &[]).ok();
    // As a newer postern would leave it: a column this one's migrations do not have.
    let store = source.store().await;
    let On::Sqlite(pool) = store.db() else {
        unreachable!()
    };
    sqlx::query("ALTER TABLE connections ADD COLUMN from_a_newer_postern TEXT")
        .execute(pool)
        .await
        .unwrap();
    store.close().await;

    let (target, to) = any_target();
    let run = source.run(&["store", "copy", "--to", &to]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("connections.from_a_newer_postern"),
        "{}",
        run.stderr
    );
    let list = target.run(&["connection", "list", "--json"]).ok();
    assert!(
        !list.stdout.contains("c1"),
        "nothing was copied: {}",
        list.stdout
    );
}
