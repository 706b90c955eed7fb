//! `postern connection list` over 120 connections: filters and cursor paging, every page.

use std::collections::BTreeSet;

use crate::helpers::TestHome;
use crate::seed;

fn names(json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

/// The cursor the CLI printed on stderr for the next page, if any.
fn next_cursor(stderr: &str) -> Option<String> {
    let rest = stderr.split("--cursor ").nth(1)?;
    Some(rest.split_whitespace().next()?.to_string())
}

#[tokio::test]
async fn paging_walks_every_connection_once_and_filters_match_what_list_shows() {
    let home = TestHome::new();
    let store = home.store().await;
    seed::connections(&store, 120).await;
    store.close().await;
    let want = seed::expected(120);

    // Every page of 25, in order, no duplicate, none missing.
    let mut got = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut args = vec!["connection", "list", "--json", "--limit", "25"];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c.as_str()]);
        }
        let run = home.run(&args).ok();
        let page = names(&run.stdout);
        assert!(page.len() <= 25);
        got.extend(page);
        pages += 1;
        match next_cursor(&run.stderr) {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 5);
    let all: Vec<String> = want.iter().map(|w| w.0.clone()).collect();
    assert_eq!(got, all);
    assert_eq!(got.iter().collect::<BTreeSet<_>>().len(), 120);

    // Filters, against the fixture's rules.
    let disabled = home
        .run(&["connection", "list", "--json", "--status", "disabled"])
        .ok();
    let want_disabled: Vec<String> = want
        .iter()
        .filter(|w| w.2 == "disabled")
        .map(|w| w.0.clone())
        .collect();
    assert_eq!(names(&disabled.stdout), want_disabled);
    let google = home
        .run(&["connection", "list", "--json", "--provider", "gmail"])
        .ok();
    assert_eq!(names(&google.stdout).len(), 24);
    // Search: display name, any case; user; combined with a status.
    let fab = home
        .run(&["connection", "list", "--json", "--search", "FABRIKAM"])
        .ok();
    assert_eq!(names(&fab.stdout), ["cust-042"]);
    let user = home
        .run(&["connection", "list", "--json", "--search", "ops@customer11"])
        .ok();
    assert_eq!(
        names(&user.stdout),
        [
            "cust-011", "cust-110", "cust-111", "cust-112", "cust-113", "cust-114", "cust-115",
            "cust-116", "cust-117", "cust-118", "cust-119"
        ]
    );
    let table = home
        .run(&[
            "connection",
            "list",
            "--search",
            "customer11",
            "--status",
            "disabled",
        ])
        .ok();
    assert!(
        table.stdout.contains("cust-115") && !table.stdout.contains("cust-114"),
        "{}",
        table.all()
    );

    // Wrong values say what would do.
    let bad = home.run(&["connection", "list", "--status", "broken"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("needs-reauthorization"),
        "{}",
        bad.all()
    );
    let bad = home.run(&["connection", "list", "--cursor", "garbage"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("without a cursor"), "{}", bad.all());
    let none = home.run(&["connection", "list", "--search", "nobody"]).ok();
    assert!(
        none.stdout.contains("No connection matches"),
        "{}",
        none.all()
    );
}
