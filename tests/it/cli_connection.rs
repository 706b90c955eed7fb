//! `postern connection ...`, `secrets rotate-key` and `serve` start-up, through the real binary.

use std::os::unix::fs::PermissionsExt;

use crate::helpers::{TestHome, contains_bytes};

const SECRET: &str = "Xy7~client-secret-VALUE-0123456789";
const REFRESH: &str = "0.AAAA-refresh-token-VALUE-abcdefghijklmnop";

#[test]
fn add_list_show_edit_enable_disable_remove() {
    let home = TestHome::new();
    let out = home
        .add_connection("contoso", SECRET, &["--display-name", "Contoso mail"])
        .ok();
    assert!(
        out.stdout.contains("http://localhost"),
        "tells the redirect URI to register: {}",
        out.stdout
    );

    // Each command is a new process: the second sees what the first stored.
    let list = home.run(&["connection", "list"]).ok();
    assert!(
        list.stdout.contains("contoso")
            && list.stdout.contains("new")
            && list.stdout.contains("ops@contoso.com")
    );

    let show = home.run(&["connection", "show", "contoso", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(v["host"], "smtp.office365.com");
    assert_eq!(v["port"], 587);
    assert_eq!(v["tenant"], "contoso.onmicrosoft.com");
    assert_eq!(
        v["scope"],
        "https://outlook.office.com/SMTP.Send offline_access"
    );
    assert_eq!(v["client_secret"], "set");
    assert_eq!(v["refresh_token"], "not set");
    assert_eq!(v["display_name"], "Contoso mail");

    home.run(&[
        "connection",
        "edit",
        "contoso",
        "--port",
        "465",
        "--tls",
        "implicit",
    ])
    .ok();
    let v: serde_json::Value = serde_json::from_str(
        &home
            .run(&["connection", "show", "contoso", "--json"])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(
        (v["port"].as_u64(), v["tls"].as_str()),
        (Some(465), Some("implicit"))
    );
    assert_eq!(
        v["client_secret"], "set",
        "editing other fields keeps the secret"
    );

    home.run(&["connection", "disable", "contoso"]).ok();
    let list = home.run(&["connection", "list", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(
        (v[0]["status"].as_str(), v[0]["enabled"].as_bool()),
        (Some("disabled"), Some(false))
    );
    home.run(&["connection", "enable", "contoso"]).ok();
    let v: serde_json::Value =
        serde_json::from_str(&home.run(&["connection", "list", "--json"]).ok().stdout).unwrap();
    assert_eq!(v[0]["status"], "new");

    let refused = home.run(&["connection", "remove", "contoso"]);
    assert_eq!(
        refused.code,
        2,
        "without a terminal, remove needs --yes: {}",
        refused.all()
    );
    home.run(&["connection", "remove", "contoso", "--yes"]).ok();
    let gone = home.run(&["connection", "show", "contoso"]);
    assert_eq!(gone.code, 2);
    assert!(gone.stderr.contains("does not exist"), "{}", gone.stderr);
}

#[test]
fn wrong_values_get_exit_code_2_and_the_explanation() {
    let home = TestHome::new();
    let out = home.add_connection(
        "bad",
        SECRET,
        &[
            "--scope",
            "https://graph.microsoft.com/SMTP.Send offline_access",
        ],
    );
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains("Graph") && out.stderr.contains("https://outlook.office.com/SMTP.Send"),
        "{}",
        out.stderr
    );

    let out = home.add_connection(
        "bad",
        SECRET,
        &[
            "--scope",
            "https://outlook.office.com/SMTP.Send offiline_access",
        ],
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("misspelling of `offline_access`"),
        "{}",
        out.stderr
    );

    let out = home.run(&[
        "connection",
        "add",
        "x",
        "--provider",
        "microsoft",
        "--user",
        "ops@contoso.com",
        "--client-id",
        "my-secret~value",
    ]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("not a GUID"), "{}", out.stderr);

    home.add_connection("dup", SECRET, &[]).ok();
    let out = home.add_connection("dup", SECRET, &[]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);

    let out = home.run(&["connection", "frobnicate"]);
    assert_eq!(out.code, 2, "clap usage errors are 2");
}

#[test]
fn secrets_never_appear_in_output_or_the_database_file() {
    let home = TestHome::new();
    let rt = home.file("rt.txt", REFRESH);
    home.add_connection("contoso", SECRET, &["--refresh-token-file", &rt])
        .ok();
    let show = home.run(&["connection", "show", "contoso"]).ok();
    let json = home.run(&["connection", "show", "contoso", "--json"]).ok();
    let list = home.run(&["connection", "list", "--json"]).ok();
    for out in [&show, &json, &list] {
        assert!(
            !out.all().contains(SECRET) && !out.all().contains(REFRESH),
            "secret leaked: {}",
            out.all()
        );
    }
    assert!(json.stdout.contains("\"refresh_token\": \"set\""));
    let bytes = home.data_bytes();
    assert!(bytes.len() > 4096, "the database holds data");
    assert!(
        contains_bytes(&bytes, "ops@contoso.com"),
        "sanity: plain fields are found in the raw bytes"
    );
    assert!(
        !contains_bytes(&bytes, SECRET),
        "client secret stored in clear"
    );
    assert!(
        !contains_bytes(&bytes, REFRESH),
        "refresh token stored in clear"
    );
}

#[test]
fn the_key_file_must_be_private() {
    let home = TestHome::new();
    home.add_connection("contoso", SECRET, &[]).ok();
    let key = home.data_dir().join("secret.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = home.run(&["connection", "list"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("chmod 600"), "{}", out.stderr);
}

#[test]
fn rotate_key_keeps_secrets_readable_with_the_new_key_only() {
    let home = TestHome::new();
    let rt = home.file("rt.txt", REFRESH);
    home.add_connection("contoso", SECRET, &["--refresh-token-file", &rt])
        .ok();
    let key = home.data_dir().join("secret.key");
    let old_key = std::fs::read_to_string(&key).unwrap();
    let out = home.run(&["secrets", "rotate-key"]).ok();
    assert!(
        out.stdout.contains("re-sealed 2 secret(s)"),
        "{}",
        out.stdout
    );
    let new_key = std::fs::read_to_string(&key).unwrap();
    assert_ne!(old_key, new_key);
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Readable with the new key: the store opens every secret (checked by a library read).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let data_dir = home.data_dir();
    let (secret, refresh) = rt.block_on(async {
        let store = home.store().await;
        let c = store.connection("contoso").await.unwrap();
        let s = store
            .secret(c.id, postern::store::SecretKind::ClientSecret)
            .await
            .unwrap()
            .unwrap();
        let r = store
            .secret(c.id, postern::store::SecretKind::RefreshToken)
            .await
            .unwrap()
            .unwrap();
        use secrecy::ExposeSecret;
        (
            s.value.expose_secret().to_string(),
            r.value.expose_secret().to_string(),
        )
    });
    assert_eq!((secret.as_str(), refresh.as_str()), (SECRET, REFRESH));

    // Unreadable with the old key: the store refuses to open with it, and says which key.
    std::fs::write(&key, &old_key).unwrap();
    let failed = rt.block_on(async {
        postern::store::Store::open_url(home.store_url.as_deref(), &data_dir, None)
            .await
            .map(|_| ())
    });
    let err = failed.unwrap_err().to_string();
    assert!(
        err.contains("does not open the secrets already in the database")
            && err.contains("secret.key"),
        "{err}"
    );
}

#[test]
fn serve_starts_and_answers_health_checks() {
    let home = TestHome::new();
    let mut child = home
        .cmd(&[
            "serve",
            "--http-listen",
            "127.0.0.1:0",
            "--smtp-listen",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let addr = loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        if let Some(rest) = line.split("http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    std::io::Write::write_all(
        &mut stream,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_us_government_connection_gets_the_national_cloud_hosts_and_scope() {
    let home = TestHome::new();
    let secret = home.file("gov.secret", SECRET);
    let add = |name: &str, provider: &str, extra: &[&str]| {
        let mut args = vec![
            "connection",
            "add",
            name,
            "--provider",
            provider,
            "--user",
            "ops@agency.example",
            "--tenant",
            "agency.onmicrosoft.us",
            "--client-id",
            "1b2c3d4e-0000-1111-2222-333344445555",
            "--client-secret-file",
            &secret,
        ];
        args.extend_from_slice(extra);
        home.run(&args)
    };
    add("x", "microsoft-us-gov", &[]).ok();
    let show = home.run(&["connection", "show", "x", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(v["provider"], "microsoft-us-gov");
    assert_eq!(v["host"], "smtp.office365.us");
    assert_eq!(v["port"], 587);
    assert_eq!(
        v["scope"],
        "https://outlook.office365.us/SMTP.Send offline_access"
    );
    assert_eq!(
        v["token_url"],
        "https://login.microsoftonline.us/agency.onmicrosoft.us/oauth2/v2.0/token"
    );

    // The guide mistakes are refused with this cloud's own scope as the fix.
    let out = add(
        "graph",
        "microsoft-us-gov",
        &[
            "--scope",
            "https://graph.microsoft.us/Mail.Send offline_access",
        ],
    );
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("Graph")
            && out
                .stderr
                .contains("https://outlook.office365.us/SMTP.Send"),
        "{}",
        out.stderr
    );

    // An unknown provider lists the national clouds.
    let out = add("y", "azure-gov", &[]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("microsoft-us-gov") && out.stderr.contains("microsoft-china"),
        "{}",
        out.stderr
    );
}

#[test]
fn completion_scripts_cover_the_commands_and_bash_parses_them() {
    let home = TestHome::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = home.run(&["completions", shell]).ok();
        for command in ["connection", "relay-user", "queue", "completions"] {
            assert!(out.stdout.contains(command), "{shell} lacks {command}");
        }
    }
    let bash = home.run(&["completions", "bash"]).ok().stdout;
    let script = home.path().join("postern.bash");
    std::fs::write(&script, bash).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("run bash");
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let wrong = home.run(&["completions", "tcsh"]);
    assert_eq!(wrong.code, 2, "{}", wrong.all());
}

#[test]
fn secret_expiry_is_kept_shown_and_cleared_and_a_bad_date_is_refused() {
    let home = TestHome::new();
    home.add_connection("contoso", SECRET, &["--secret-expires", "2027-03-31"])
        .ok();
    let show = |home: &TestHome| -> serde_json::Value {
        let out = home.run(&["connection", "show", "contoso", "--json"]).ok();
        serde_json::from_str(&out.stdout).unwrap()
    };
    assert_eq!(show(&home)["secret_expires"], "2027-03-31");
    let list = home.run(&["connection", "list"]).ok();
    assert!(
        list.stdout.contains("SECRET EXPIRES") && list.stdout.contains("2027-03-31"),
        "{}",
        list.stdout
    );
    let text = home.run(&["connection", "show", "contoso"]).ok();
    assert!(
        text.stdout.contains("Secret expires         2027-03-31"),
        "{}",
        text.stdout
    );

    let bad = home.run(&[
        "connection",
        "edit",
        "contoso",
        "--secret-expires",
        "31/03/2027",
    ]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(
        bad.stderr.contains("--secret-expires") && bad.stderr.contains("YYYY-MM-DD"),
        "{}",
        bad.stderr
    );
    assert_eq!(
        show(&home)["secret_expires"],
        "2027-03-31",
        "a refused edit changes nothing"
    );

    home.run(&["connection", "edit", "contoso", "--secret-expires", "none"])
        .ok();
    assert!(show(&home)["secret_expires"].is_null());
}

#[test]
fn a_graph_connection_takes_graph_scopes_and_shows_its_transport() {
    let home = TestHome::new();
    // The SMTP scope on a Graph connection: refused, with the Graph scope as the fix.
    let bad = home.add_connection(
        "graph",
        SECRET,
        &[
            "--transport",
            "graph",
            "--scope",
            "https://outlook.office.com/SMTP.Send offline_access",
        ],
    );
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(
        bad.all()
            .contains("https://graph.microsoft.com/Mail.Send offline_access"),
        "{}",
        bad.all()
    );
    home.add_connection("graph", SECRET, &["--transport", "graph"])
        .ok();
    let show = home.run(&["connection", "show", "graph"]).ok().stdout;
    for line in [
        "graph",
        "https://graph.microsoft.com/Mail.Send offline_access",
        "https://graph.microsoft.com",
    ] {
        assert!(show.contains(line), "{line} in {show}");
    }
    // Back to SMTP: the Graph scope is refused there, so the SMTP scope comes with it.
    let bad = home.run(&["connection", "edit", "graph", "--transport", "smtp"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(bad.all().contains("535 5.7.3"), "{}", bad.all());
    home.run(&[
        "connection",
        "edit",
        "graph",
        "--transport",
        "smtp",
        "--scope",
        "https://outlook.office.com/SMTP.Send offline_access",
    ])
    .ok();
    let json: serde_json::Value = serde_json::from_str(
        &home
            .run(&["connection", "show", "graph", "--json"])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(json["transport"], "smtp");
    assert_eq!(json["graph_url"], serde_json::Value::Null);
}

#[test]
fn graph_large_is_fail_by_default_and_draft_only_where_graph_is_used() {
    let home = TestHome::new();
    home.add_connection("graph", SECRET, &["--transport", "graph"])
        .ok();
    let show = |name: &str| -> serde_json::Value {
        serde_json::from_str(
            &home
                .run(&["connection", "show", name, "--json"])
                .ok()
                .stdout,
        )
        .unwrap()
    };
    assert_eq!(show("graph")["graph_large"], "fail");
    home.run(&["connection", "edit", "graph", "--graph-large", "draft"])
        .ok();
    assert_eq!(show("graph")["graph_large"], "draft");
    let text = home.run(&["connection", "show", "graph"]).ok().stdout;
    assert!(text.contains("draft"), "{text}");
    // An SMTP connection without the Graph fallback: refused, with the reason and the fix.
    home.add_connection("smtp", SECRET, &[]).ok();
    let bad = home.run(&["connection", "edit", "smtp", "--graph-large", "draft"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(
        bad.all().contains("does not use Graph") && bad.all().contains("--graph-large fail"),
        "{}",
        bad.all()
    );
    assert_eq!(show("smtp")["graph_large"], "fail", "nothing changed");
    let bad = home.run(&["connection", "edit", "graph", "--graph-large", "split"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(bad.all().contains("graph_large `split`"), "{}", bad.all());
}
