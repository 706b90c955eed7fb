//! `postern relay-user ...`: the logins legacy apps use with the relay.

use std::path::PathBuf;

use clap::Subcommand;
use secrecy::{ExposeSecret, SecretString};

use super::output::{print_json, print_table};
use super::secret_input;
use super::{CliError, CliResult, Ctx};
use crate::domain::{DisplayName, FromPolicy};
use crate::smtp::server::{AllowedFrom, IpNetwork};
use crate::store::relay_users::{NewPassword, PasswordShape, RelayUserError};

#[derive(Debug, Subcommand)]
pub enum RelayUserCommand {
    /// Create a relay user bound to a connection; prints a generated password once.
    #[command(
        after_help = "Examples:\n  postern relay-user add erp --connection contoso --allow-from @contoso.com\n  postern relay-user add scanner --connection contoso --password-length 24 --alphanumeric\n  postern relay-user add mfp --connection contoso --network 192.168.1.50/32\n\nThe app then logs in to the relay (AUTH PLAIN or LOGIN) as `erp` with the printed password. A device that caps passwords or refuses symbols gets a shorter, letters-and-digits one: still checked with one keyed hash, never a slow hash per login. A device bound to --network needs no password at all: the relay knows it by its address (which must not be shared with any other relay user)."
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
        #[command(flatten)]
        from: FromPolicyArgs,
        /// A device identified by its address: clients in this network (an address or CIDR
        /// block; repeatable) are this user without AUTH, and may end lines with bare LF.
        /// No password is made.
        #[arg(
            long = "network",
            value_name = "CIDR",
            conflicts_with_all = ["password_file", "password_length", "alphanumeric"]
        )]
        networks: Vec<String>,
    },
    /// List relay users.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Change what the relay does with senders the user may not use.
    #[command(
        after_help = "Examples:\n  postern relay-user edit scanner --from-policy rewrite --display-name \"Scanner 2nd floor\"\n  postern relay-user edit erp --from-policy refuse\n\nWith `rewrite`, mail from any sender is sent as the connection's mailbox; the original address goes to Reply-To."
    )]
    Edit {
        name: String,
        #[command(flatten)]
        from: FromPolicyArgs,
        /// Forget the configured display name (a rewritten From keeps the message's own).
        #[arg(long, conflicts_with = "display_name")]
        clear_display_name: bool,
        /// Bind the user to these networks instead of its current ones (repeatable); its
        /// password, if any, stops working.
        #[arg(long = "network", value_name = "CIDR")]
        networks: Vec<String>,
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

/// What the relay does with a sender the user may not use.
#[derive(Debug, clap::Args)]
pub struct FromPolicyArgs {
    /// `refuse` (default): 550 for a sender other than the mailbox and --allow-from;
    /// `allow-listed`: the same, said explicitly; `rewrite`: any sender is accepted and the
    /// message goes out as the connection's mailbox, the original address in Reply-To.
    #[arg(long, value_name = "POLICY")]
    from_policy: Option<FromPolicy>,
    /// The name in a rewritten From (`"Scanner" <mailbox>`); without it the message's own is
    /// kept. At most 64 characters. Only with --from-policy rewrite.
    #[arg(long, value_name = "TEXT")]
    display_name: Option<DisplayName>,
}

/// Stores the From policy and display name when asked; `current` is the user's as it stands.
async fn apply_from_policy(
    store: &crate::store::Store,
    name: &str,
    args: FromPolicyArgs,
    current: (FromPolicy, Option<DisplayName>),
    clear_display_name: bool,
) -> CliResult {
    if args.from_policy.is_none() && args.display_name.is_none() && !clear_display_name {
        return Ok(());
    }
    let policy = args.from_policy.unwrap_or(current.0);
    if args.display_name.is_some() && policy != FromPolicy::Rewrite {
        return Err(CliError::Usage(
            "--display-name is the name of a rewritten From: use it with --from-policy rewrite"
                .into(),
        ));
    }
    let display_name = match (args.display_name, clear_display_name) {
        (Some(n), _) => Some(n),
        (None, true) => None,
        (None, false) => current.1,
    };
    let user = store
        .set_relay_from_policy(name, policy, display_name.as_ref())
        .await?;
    match (user.from_policy, &user.display_name) {
        (FromPolicy::Rewrite, Some(n)) => println!(
            "`{name}`: From policy rewrite: other senders go out as \"{n}\" <mailbox>, the original address in Reply-To."
        ),
        (FromPolicy::Rewrite, None) => println!(
            "`{name}`: From policy rewrite: other senders go out as the mailbox (their display name kept), the original address in Reply-To."
        ),
        (p, _) => println!("`{name}`: From policy {p}: other senders get 550 5.7.1."),
    }
    Ok(())
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
            from,
            networks,
        } => {
            AllowedFrom::parse(&allow_from).map_err(|e| CliError::Usage(e.to_string()))?;
            if from.display_name.is_some() && from.from_policy != Some(FromPolicy::Rewrite) {
                return Err(CliError::Usage(
                    "--display-name is the name of a rewritten From: use it with --from-policy rewrite"
                        .into(),
                ));
            }
            let networks = parse_networks(&networks)?;
            let conn = store.connection(&connection).await?;
            // Checked first, so a refused network leaves no user behind.
            store.check_relay_networks(&name, &networks).await?;
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
            if let Err(e) =
                apply_from_policy(&store, &user.name, from, (FromPolicy::Refuse, None), false).await
            {
                // Never leave a user with a password nobody was shown behind.
                let _ = store.remove_relay_user(&user.name).await;
                return Err(e);
            }
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
            if !networks.is_empty() {
                if let Err(e) = store.set_relay_networks(&user.name, &networks).await {
                    // Never leave a user with a password nobody was shown behind.
                    let _ = store.remove_relay_user(&user.name).await;
                    return Err(e.into());
                }
                let list: Vec<String> = networks.iter().map(ToString::to_string).collect();
                println!(
                    "Clients in {} are `{}` without AUTH (no password; bare LF line endings accepted).",
                    list.join(", "),
                    user.name
                );
            } else if let Some(pw) = generated {
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
                        u.networks.join(" "),
                        match &u.display_name {
                            Some(n) if u.from_policy == FromPolicy::Rewrite => {
                                format!("rewrite as \"{n}\"")
                            }
                            _ => u.from_policy.to_string(),
                        },
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
                    "NETWORKS",
                    "FROM POLICY",
                    "CREATED",
                ],
                &rows,
            );
            Ok(())
        }
        RelayUserCommand::Edit {
            name,
            from,
            clear_display_name,
            networks,
        } => {
            let policy = from.from_policy.is_some() || from.display_name.is_some();
            if !policy && !clear_display_name && networks.is_empty() {
                return Err(CliError::Usage(
                    "nothing to change: give --from-policy, --display-name, --clear-display-name \
                     or --network"
                        .into(),
                ));
            }
            let user = store.relay_user(&name).await?;
            if !networks.is_empty() {
                let networks = parse_networks(&networks)?;
                let user = store.set_relay_networks(&name, &networks).await?;
                println!(
                    "relay user `{name}` is now the clients of {} (no password).",
                    user.networks.join(", ")
                );
            }
            if !policy && !clear_display_name {
                return Ok(());
            }
            let current = (user.from_policy, user.display_name);
            apply_from_policy(&store, &name, from, current, clear_display_name).await
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

/// `--network` values, each checked (an address or CIDR block, never every address).
fn parse_networks(networks: &[String]) -> Result<Vec<IpNetwork>, CliError> {
    networks
        .iter()
        .map(|n| IpNetwork::parse(n))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::Usage(format!("--network {e}")))
}
