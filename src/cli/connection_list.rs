//! `postern connection list`: filters and paging for instances with thousands of connections.
//!
//! Without `--limit` every match is listed, as before. `--json` always prints an array of
//! connections (the stable shape scripts already read); the cursor for the next page goes to
//! stderr, like every other remark.

use clap::Args;

use super::output::{print_json, print_table};
use super::{CliError, CliResult, Ctx};
use crate::domain::ConnectionView;
use crate::store::{ConnectionQuery, ListQueryError};

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only connections showing this status: new, authorized, needs-reauthorization, disabled.
    #[arg(long, value_name = "S")]
    status: Option<String>,
    /// Only connections of this provider (microsoft, outlook, google, ...).
    #[arg(long, value_name = "P")]
    provider: Option<String>,
    /// Only connections whose name, display name, user or domain contains TEXT (any case).
    #[arg(long, value_name = "TEXT")]
    search: Option<String>,
    /// At most N connections (1 to 1000); the cursor for the next page is printed on stderr.
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
    /// Continue after the page that printed this cursor.
    #[arg(long, value_name = "C")]
    cursor: Option<String>,
    #[arg(long)]
    json: bool,
}

impl From<ListQueryError> for CliError {
    fn from(e: ListQueryError) -> Self {
        CliError::Usage(e.to_string())
    }
}

pub async fn list(ctx: &Ctx, a: ListArgs) -> CliResult {
    let q = ConnectionQuery::parse(
        a.status.as_deref(),
        a.provider.as_deref(),
        a.search.as_deref(),
        a.cursor.as_deref(),
        a.limit,
    )?;
    let filtered = q.status.is_some() || q.provider.is_some() || q.search.is_some();
    let store = ctx.store().await?;
    let page = store.query_connections(&q).await?;
    let views: Vec<ConnectionView> = page.connections.iter().map(ConnectionView::from).collect();
    if a.json {
        print_json(&views)?;
    } else if views.is_empty() && !filtered && a.cursor.is_none() {
        println!(
            "No connections yet. Create one with `postern connection add NAME --provider microsoft ...`."
        );
    } else if views.is_empty() {
        println!("No connection matches.");
    } else {
        let rows: Vec<Vec<String>> = views.iter().map(row).collect();
        print_table(
            &[
                "NAME",
                "PROVIDER",
                "USER",
                "STATUS",
                "ENABLED",
                "SECRET EXPIRES",
            ],
            &rows,
        );
    }
    if let Some(next) = page.next_cursor {
        eprintln!("more: add --cursor {next} for the next page");
    }
    Ok(())
}

fn row(v: &ConnectionView) -> Vec<String> {
    let status = match &v.status_reason {
        Some(r) if v.status == "needs-reauthorization" => format!("{}: {r}", v.status),
        _ => v.status.clone(),
    };
    vec![
        v.name.clone(),
        v.provider.clone(),
        v.user.clone(),
        status,
        if v.enabled { "yes" } else { "no" }.into(),
        v.secret_expires.clone().unwrap_or_else(|| "-".into()),
    ]
}
