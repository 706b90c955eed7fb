//! `postern connection import` / `export`: a round trip in every format, all errors at once
//! with nothing written, dry runs, updates, and 2,000 connections from one file.

use std::time::Instant;

use crate::helpers::{CLIENT_ID, Run, TestHome, contains_bytes};

const SECRET: &str = "Zx8Q~import-secret-never-exported";

fn list(home: &TestHome) -> Vec<serde_json::Value> {
    let run = home.run(&["connection", "list", "--json"]).ok();
    serde_json::from_str::<serde_json::Value>(&run.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// A connection as a user compares it: everything but timestamps, status and secrets.
fn comparable(mut c: serde_json::Value) -> serde_json::Value {
    let o = c.as_object_mut().unwrap();
    for k in ["created_at", "updated_at", "client_secret", "refresh_token"] {
        o.remove(k);
    }
    c
}

fn import(home: &TestHome, file: &str, extra: &[&str]) -> Run {
    let mut args = vec!["connection", "import", file];
    args.extend_from_slice(extra);
    home.run(&args)
}

#[test]
fn an_export_imports_into_a_fresh_store_as_the_same_connections_in_every_format() {
    let source = TestHome::new();
    source
        .add_connection(
            "contoso",
            SECRET,
            &["--display-name", "Contoso, \"EU\" billing"],
        )
        .ok();
    source
        .add_connection(
            "fabrikam",
            SECRET,
            &["--port", "465", "--tls", "implicit", "--disabled"],
        )
        .ok();
    let gsecret = source.file("g.secret", SECRET);
    source
        .run(&[
            "connection",
            "add",
            "gmail-team",
            "--provider",
            "google",
            "--user",
            "team@example.com",
            "--client-id",
            "1234-abc.apps.googleusercontent.com",
            "--client-secret-file",
            &gsecret,
        ])
        .ok();
    let before: Vec<_> = list(&source).into_iter().map(comparable).collect();
    assert_eq!(before.len(), 3);

    for format in ["json", "csv", "toml"] {
        let export = source
            .run(&["connection", "export", "--format", format])
            .ok();
        assert!(
            !export.stdout.contains(SECRET),
            "{format}: a secret was exported"
        );
        assert!(
            export.stdout.contains("not set"),
            "{format}: the refresh token column"
        );
        let target = TestHome::new();
        let file = target.file(&format!("all.{format}"), &export.stdout);
        let run = import(&target, &file, &[]).ok();
        assert!(
            run.stdout.contains("3 created, 0 updated"),
            "{format}: {}",
            run.all()
        );
        let after: Vec<_> = list(&target).into_iter().map(comparable).collect();
        assert_eq!(after, before, "{format}");
        // Importing the same export again updates, and changes nothing.
        let again = import(&target, &file, &[]).ok();
        assert!(
            again.stdout.contains("0 created, 3 updated"),
            "{}",
            again.all()
        );
        assert_eq!(
            list(&target)
                .into_iter()
                .map(comparable)
                .collect::<Vec<_>>(),
            before
        );
    }
}

#[test]
fn every_bad_row_is_named_and_nothing_is_written() {
    let home = TestHome::new();
    home.file("s.txt", SECRET);
    let csv = format!(
        "name,provider,user,tenant,client_id,client_secret_file\n\
         good-1,microsoft,a@contoso.com,contoso.onmicrosoft.com,{CLIENT_ID},s.txt\n\
         bad-tenant,microsoft,b@contoso.com,not a tenant!,{CLIENT_ID},s.txt\n\
         good-2,microsoft,c@contoso.com,contoso.onmicrosoft.com,{CLIENT_ID},s.txt\n\
         bad-user,microsoft,nobody,contoso.onmicrosoft.com,{CLIENT_ID},missing.txt\n"
    );
    let file = home.file("customers.csv", &csv);
    let run = import(&home, &file, &[]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("row 2 (line 3, bad-tenant): tenant:"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("row 4 (line 5, bad-user): user:"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("missing.txt"), "{}", run.stderr);
    assert!(
        run.stderr.contains("nothing was written: 2 of 4 rows"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("good-1"), "{}", run.stderr);
    assert!(list(&home).is_empty());

    // A secret pasted into the file is refused, and never repeated.
    let inline = home.file(
        "inline.json",
        &format!(
            r#"[{{"name": "c", "provider": "microsoft", "user": "a@contoso.com",
                 "tenant": "contoso.onmicrosoft.com", "client_id": "{CLIENT_ID}",
                 "client_secret": "{SECRET}"}}]"#
        ),
    );
    let run = import(&home, &inline, &[]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("client_secret_file"), "{}", run.stderr);
    assert!(!run.all().contains(SECRET));
    assert!(!contains_bytes(&home.data_bytes(), SECRET));
}

#[test]
fn a_dry_run_writes_nothing_and_an_import_updates_existing_connections() {
    let home = TestHome::new();
    home.add_connection("contoso", SECRET, &[]).ok();
    let toml = format!(
        "[[connection]]\nname = \"contoso\"\ndisplay_name = \"Contoso Ltd\"\n\n\
         [[connection]]\nname = \"northwind\"\nprovider = \"microsoft\"\nuser = \"ops@northwind.com\"\n\
         tenant = \"northwind.onmicrosoft.com\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_env = \"NORTHWIND_SECRET\"\n"
    );
    let file = home.file("batch.toml", &toml);
    let run: Run = home
        .cmd(&["connection", "import", &file, "--dry-run"])
        .env("NORTHWIND_SECRET", "nw-secret-value")
        .output()
        .unwrap()
        .into();
    let run = run.ok();
    assert!(run.stdout.contains("would update contoso"), "{}", run.all());
    assert!(
        run.stdout.contains("would create northwind"),
        "{}",
        run.all()
    );
    assert!(run.stdout.contains("nothing was written"));
    let names: Vec<_> = list(&home).iter().map(|c| c["name"].clone()).collect();
    assert_eq!(names, ["contoso"]);
    assert!(list(&home)[0]["display_name"].is_null());

    // Without the variable, the row says which one is missing.
    let run = import(&home, &file, &[]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("row 2 (northwind)") && run.stderr.contains("NORTHWIND_SECRET"),
        "{}",
        run.stderr
    );

    let run: Run = home
        .cmd(&["connection", "import", &file])
        .env("NORTHWIND_SECRET", "nw-secret-value")
        .output()
        .unwrap()
        .into();
    assert!(run.ok().stdout.contains("1 created, 1 updated"));
    let after = list(&home);
    assert_eq!(after[0]["display_name"], "Contoso Ltd");
    assert_eq!(after[0]["tenant"], "contoso.onmicrosoft.com", "kept");
    assert_eq!(after[0]["client_secret"], "set", "kept");
    assert_eq!(after[1]["name"], "northwind");
    assert_eq!(after[1]["client_secret"], "set");
    assert!(!contains_bytes(&home.data_bytes(), "nw-secret-value"));
}

#[test]
fn two_thousand_connections_import_from_one_file() {
    let home = TestHome::new();
    home.file("shared.secret", SECRET);
    let mut csv =
        String::from("name,display_name,provider,user,tenant,client_id,client_secret_file\n");
    for i in 0..2000 {
        csv.push_str(&format!(
            "cust-{i:04},Customer {i},microsoft,ops@customer{i}.example,customer{i}.onmicrosoft.com,{CLIENT_ID},shared.secret\n"
        ));
    }
    let file = home.file("customers.csv", &csv);
    let started = Instant::now();
    let run = import(&home, &file, &[]).ok();
    let took = started.elapsed();
    println!(
        "import of 2,000 connections (CSV, one transaction, debug build): {took:.2?} — {}",
        run.stdout.trim()
    );
    assert!(run.stdout.contains("2000 created"), "{}", run.all());
    let all = list(&home);
    assert_eq!(all.len(), 2000);
    assert_eq!(all[1999]["name"], "cust-1999");
    assert!(all.iter().all(|c| c["client_secret"] == "set"));
}
