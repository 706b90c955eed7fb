//! `postern admin create USER`: accounts for the web UI (argon2id password hashes).

use std::path::PathBuf;

use clap::Subcommand;
use secrecy::{ExposeSecret, SecretString};

use super::secret_input;
use super::{CliError, CliResult, Ctx};
use crate::store::MIN_PASSWORD_CHARS;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an admin account for the web UI; the password is prompted (hidden) or read from a file.
    #[command(
        after_help = "Example:\n  postern admin create alice\n  postern admin create alice --password-file ./alice.pw"
    )]
    Create {
        user: String,
        /// Read the password from this file instead of prompting.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// List admin accounts.
    List,
}

fn prompt_password() -> Result<SecretString, CliError> {
    let first = secret_input::prompt(&format!(
        "Password (at least {MIN_PASSWORD_CHARS} characters): "
    ))?
    .ok_or_else(|| {
        CliError::Usage(
            "no password given: run this at a terminal, or pass --password-file FILE".into(),
        )
    })?;
    let again = secret_input::prompt("Password again: ")?
        .unwrap_or_else(|| SecretString::from(String::new()));
    if first.expose_secret() != again.expose_secret() {
        return Err(CliError::Usage(
            "the two passwords differ; nothing was created".into(),
        ));
    }
    Ok(first)
}

pub async fn run(ctx: &Ctx, cmd: AdminCommand) -> CliResult {
    match cmd {
        AdminCommand::Create {
            user,
            password_file,
        } => {
            let password = match password_file {
                Some(path) => secret_input::from_file_or_env("password", Some(&path), None)?
                    .ok_or_else(|| CliError::Usage("the password file is empty".into()))?,
                None => prompt_password()?,
            };
            let store = ctx.store().await?;
            let admin = store.create_admin(&user, &password).await?;
            println!(
                "created admin `{}`. Log in at http://{}/admin",
                admin.username, ctx.settings.server.http_listen
            );
        }
        AdminCommand::List => {
            let store = ctx.store().await?;
            let admins = store.list_admins().await?;
            if admins.is_empty() {
                println!("No admins. Create one with `postern admin create USER`.");
            }
            for a in admins {
                println!("{}", a.username);
            }
        }
    }
    Ok(())
}
