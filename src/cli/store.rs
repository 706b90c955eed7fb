//! `postern store copy`: move the whole store between SQLite and PostgreSQL (either way).

use std::path::PathBuf;

use clap::Subcommand;

use super::{CliError, CliResult, Ctx};
use crate::store::copy::{self, CopyError, Endpoint};
use crate::store::{DB_FILE, KEY_FILE};

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy the whole store into an empty one (SQLite to PostgreSQL, or back); stop serve first.
    #[command(after_help = "\
Examples:
  postern store copy --to postgres://postern@db.example/postern
  postern --store-url postgres://postern@db.example/postern store copy --to /var/lib/postern-new
  postern store copy --from sqlite:///var/lib/postern/postern.db --to postgres://postern@db/postern

A store is postgres://USER@HOST/DB (or postgresql://…) for PostgreSQL; sqlite:///PATH/postern.db, or a
plain directory path (its postern.db), for SQLite. The target is created or migrated as serve does,
and must be empty. Everything is copied in one transaction, then each table's rows are counted on
both sides; admin sessions and OAuth consents in progress are left behind, and mail that was being
sent comes out queued (due now).

Secrets are copied sealed, as stored: start serve on the copy with the same data key (the same
secret.key file, store.key_file or POSTERN_SECRET_KEY). Stop every serve using the source first:
mail it accepts after the copy begins would not be in the copy (a running serve on a SQLite source
is detected and refused).")]
    Copy {
        /// The empty store to copy into (URL, SQLite file or directory).
        #[arg(long, value_name = "URL")]
        to: String,
        /// The store to copy from (default: the configured store, --store-url or --data-dir).
        #[arg(long, value_name = "URL")]
        from: Option<String>,
    },
}

pub async fn run(ctx: &Ctx, cmd: StoreCommand) -> CliResult {
    match cmd {
        StoreCommand::Copy { to, from } => copy_store(ctx, &to, from.as_deref()).await,
    }
}

fn refused(e: CopyError) -> CliError {
    if e.is_refusal() {
        CliError::Usage(e.to_string())
    } else {
        CliError::Failed(e.into())
    }
}

async fn copy_store(ctx: &Ctx, to: &str, from: Option<&str>) -> CliResult {
    let from = match from {
        Some(f) => Endpoint::parse(f).map_err(refused)?,
        None => match ctx.settings.store.url.as_deref().map(str::trim) {
            Some(url) if !url.is_empty() => Endpoint::parse(url).map_err(refused)?,
            _ => Endpoint::Sqlite(ctx.settings.store.data_dir.join(DB_FILE)),
        },
    };
    let to = Endpoint::parse(to).map_err(refused)?;
    println!("copying {} to {}", from.describe(), to.describe());
    let mut last = String::new();
    let mut progress = |table: &str, done: i64, total: i64| {
        // A line per table, and one per batch of a large table.
        if table != last || done == total || done % 10_000 < 500 {
            eprintln!("  {table}: {done} of {total} rows");
            last = table.to_string();
        }
    };
    let copied = copy::copy(&from, &to, &mut progress)
        .await
        .map_err(refused)?;
    println!("copied and counted in both stores:");
    println!("{:<24} {:>10}", "TABLE", "ROWS");
    for (table, rows) in &copied.tables {
        println!("{table:<24} {rows:>10}");
    }
    if !copied.skipped.is_empty() {
        println!(
            "not copied (transient): {} (admins sign in again; consents in progress start again)",
            copied.skipped.join(", ")
        );
    }
    if copied.requeued > 0 {
        println!(
            "{} messages that were being sent are queued again in the copy (due now).",
            copied.requeued
        );
    }
    let key = if std::env::var_os("POSTERN_SECRET_KEY").is_some() {
        "POSTERN_SECRET_KEY".to_string()
    } else {
        ctx.settings
            .store
            .key_file
            .clone()
            .unwrap_or_else(|| ctx.settings.store.data_dir.join(KEY_FILE))
            .display()
            .to_string()
    };
    let start = match &to {
        Endpoint::Postgres(_) => {
            "postern --store-url URL serve (or store.url in postern.toml)".into()
        }
        Endpoint::Sqlite(db) => {
            let dir = db.parent().map(PathBuf::from).unwrap_or_default();
            format!(
                "postern --data-dir {} serve (with store.url unset; put the key in {} or set store.key_file)",
                dir.display(),
                dir.join(KEY_FILE).display()
            )
        }
    };
    println!(
        "Secrets were copied sealed: the copy opens only with the same data key as the source \
         ({key} here). Start it with {start}."
    );
    Ok(())
}
