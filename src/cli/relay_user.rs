//! `postern relay-user ...`: the logins legacy apps use with the relay.

use std::path::PathBuf;

use clap::Subcommand;
use secrecy::{ExposeSecret, SecretString};

use super::output::{print_json, print_table};
use super::secret_input;
use super::{CliError, CliResult, Ctx};
use crate::smtp::server::AllowedFrom;
use crate::store::relay_users::{NewPassword, PasswordShape, RelayUserError};

#[derive(Debug, Subcommand)]
pub enum RelayUserCommand {
    /// Create a relay user bound to a connection; prints a generated password once.
    #[command(
        after_help = "Examples:\n  postern relay-user add erp --connection contoso --allow-from @contoso.com\n  postern relay-user add scanner --connection contoso --password-length 24 --alphanumeric\n\nThe app then logs in to the relay (AUTH PLAIN or LOGIN) as `erp` with the printed password. A device that caps passwords or refuses symbols gets a shorter, letters-and-digits one: still checked with one keyed hash, never a slow hash per login."
    )]
    Add {
        name: String,
        /// The connection that delivers this user's mail.
        #[arg(long)]
        connection: String,
        /// Extra allowed senders besides the connection's mailbox: an address or @domain (repeatable).
        #[arg(long = "allow-from", value_name = "ADDR|@DOMAIN")]
        allow_from: Vec<String>,
        /// Use the password in this file instead of a generated one (at least 12 characters).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        #[command(flatten)]
        shape: ShapeArgs,
    },
    /// List relay users.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete a relay user.
    Remove { name: String },
    /// Replace a relay user's password (prints the new generated one once).
    ResetPassword {
        name: String,
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        #[command(flatten)]
        shape: ShapeArgs,
    },
}

/// The shape of a generated password, for devices (scanners, printers) that cap its length or
/// refuse symbols.
#[derive(Debug, clap::Args)]
pub struct ShapeArgs {
    /// Generate a password of N characters (16 to 128) instead of 43.
    #[arg(long, value_name = "N", conflicts_with = "password_file")]
    password_length: Option<usize>,
    /// Generate letters and digits only (no `-` or `_`).
    #[arg(long, conflicts_with = "password_file")]
    alphanumeric: bool,
}

/// The new password: the file's, or a generated one of the asked shape.
fn new_password<'a>(chosen: Option<&'a SecretString>, shape: &ShapeArgs) -> NewPassword<'a> {
    match chosen {
        Some(p) => NewPassword::Chosen(p),
        None => NewPassword::Generated(PasswordShape {
            length: shape.password_length,
            alphanumeric: shape.alphanumeric,
        }),
    }
}

impl From<RelayUserError> for CliError {
    fn from(e: RelayUserError) -> Self {
        if e.is_usage() {
            CliError::Usage(e.to_string())
        } else {
            CliError::Failed(e.into())
        }
    }
}

pub async fn run(ctx: &Ctx, cmd: RelayUserCommand) -> CliResult {
    let store = ctx.store().await?;
    match cmd {
        RelayUserCommand::Add {
            name,
            connection,
            allow_from,
            password_file,
            shape,
        } => {
            AllowedFrom::parse(&allow_from).map_err(|e| CliError::Usage(e.to_string()))?;
            let conn = store.connection(&connection).await?;
            let chosen =
                secret_input::from_file_or_env("password", password_file.as_deref(), None)?;
            let (user, generated) = store
                .create_relay_user(
                    &name,
                    conn.id,
                    &allow_from,
                    new_password(chosen.as_ref(), &shape),
                )
                .await?;
            println!(
                "created relay user `{}` for connection `{}`.",
                user.name, user.connection
            );
            println!(
                "It may send as {} and: {}",
                conn.settings.user,
                if allow_from.is_empty() {
                    "nothing else".into()
                } else {
                    allow_from.join(", ")
                }
            );
            if let Some(pw) = generated {
                println!(
                    "Password (shown once, store it in the app now): {}",
                    pw.expose_secret()
                );
            }
            Ok(())
        }
        RelayUserCommand::List { json } => {
            let users = store.list_relay_users().await?;
            if json {
                return Ok(print_json(&users)?);
            }
            if users.is_empty() {
                println!(
                    "No relay users. Create one with `postern relay-user add NAME --connection CONN`."
                );
                return Ok(());
            }
            let rows: Vec<Vec<String>> = users
                .iter()
                .map(|u| {
                    vec![
                        u.name.clone(),
                        u.connection.clone(),
                        u.allow_from.join(" "),
                        u.password.to_string(),
                        u.created_at.clone(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "NAME",
                    "CONNECTION",
                    "ALSO ALLOWED FROM",
                    "PASSWORD",
                    "CREATED",
                ],
                &rows,
            );
            Ok(())
        }
        RelayUserCommand::Remove { name } => {
            store.remove_relay_user(&name).await?;
            println!("removed relay user `{name}`.");
            Ok(())
        }
        RelayUserCommand::ResetPassword {
            name,
            password_file,
            shape,
        } => {
            let chosen =
                secret_input::from_file_or_env("password", password_file.as_deref(), None)?;
            let password = new_password(chosen.as_ref(), &shape);
            match store.reset_relay_password(&name, password).await? {
                Some(pw) => println!(
                    "new password for `{name}` (shown once): {}",
                    pw.expose_secret()
                ),
                None => println!("password for `{name}` replaced."),
            }
            Ok(())
        }
    }
}
