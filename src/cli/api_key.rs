//! `postern api-key ...`: keys for the HTTP API. The key is printed once, at creation.

use clap::Subcommand;
use secrecy::ExposeSecret;

use super::output::{print_json, print_table};
use super::{CliError, CliResult, Ctx};
use crate::store::{AccessError, ApiKey, ApiRole};

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key and print it (once: only a keyed hash is stored).
    #[command(
        after_help = "Examples:\n  postern api-key create billing-app --role send\n  postern api-key create contoso-app --role send --connection contoso\n\nRoles: `send` may submit messages and read the ones it submitted; `admin` may do everything.\nA send key with --connection may only send through those connections, and reads, retries\nand cancels their messages and reads their status."
    )]
    Create {
        name: String,
        /// send or admin.
        #[arg(long)]
        role: String,
        /// Scope a send key to this connection (repeat for several).
        #[arg(long = "connection", value_name = "NAME")]
        connections: Vec<String>,
        /// Print `{"name":..., "role":..., "key":...}`.
        #[arg(long)]
        json: bool,
    },
    /// List live keys (never the keys themselves).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: it stops working at once.
    Revoke { name: String },
}

impl From<AccessError> for CliError {
    fn from(e: AccessError) -> Self {
        if e.is_usage() {
            CliError::Usage(e.to_string())
        } else {
            CliError::Failed(e.into())
        }
    }
}

fn time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// The connections a scoped key may use (`None`: any).
fn scope_names(k: &ApiKey) -> Option<Vec<String>> {
    k.scope
        .as_ref()
        .map(|s| s.iter().map(|c| c.name.clone()).collect())
}

pub async fn run(ctx: &Ctx, cmd: ApiKeyCommand) -> CliResult {
    let store = ctx.store().await?;
    match cmd {
        ApiKeyCommand::Create {
            name,
            role,
            connections,
            json,
        } => {
            let role: ApiRole = role.parse()?;
            let created = store.create_api_key(&name, role, &connections).await?;
            if json {
                print_json(&serde_json::json!({
                    "name": created.key.name,
                    "role": created.key.role,
                    "connections": scope_names(&created.key),
                    "key": created.secret.expose_secret(),
                }))?;
            } else {
                println!("{}", created.secret.expose_secret());
                eprintln!(
                    "created API key `{}` ({}{}). It is shown only this once: store it now.\n\
                     Use it as `Authorization: Bearer <key>`.",
                    created.key.name,
                    created.key.role,
                    match scope_names(&created.key) {
                        Some(s) => format!(", only for {}", s.join(", ")),
                        None => String::new(),
                    }
                );
            }
        }
        ApiKeyCommand::List { json } => {
            let keys = store.list_api_keys().await?;
            if json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        serde_json::json!({
                            "name": k.name, "role": k.role, "prefix": k.prefix,
                            "created_at": k.created_at, "last_used_at": k.last_used_at,
                            "connections": scope_names(k),
                        })
                    })
                    .collect();
                print_json(&v)?;
            } else if keys.is_empty() {
                println!("No API keys. Create one with `postern api-key create NAME --role send`.");
            } else {
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        vec![
                            k.name.clone(),
                            k.role.to_string(),
                            match scope_names(k) {
                                None => "any".into(),
                                Some(s) if s.is_empty() => "none (removed)".into(),
                                Some(s) => s.join(","),
                            },
                            format!("{}…", k.prefix),
                            time(k.created_at),
                            k.last_used_at.map(time).unwrap_or_else(|| "never".into()),
                        ]
                    })
                    .collect();
                print_table(
                    &["NAME", "ROLE", "CONNECTIONS", "KEY", "CREATED", "LAST USED"],
                    &rows,
                );
            }
        }
        ApiKeyCommand::Revoke { name } => {
            store.revoke_api_key(&name).await?;
            println!("revoked API key `{name}`.");
        }
    }
    Ok(())
}
