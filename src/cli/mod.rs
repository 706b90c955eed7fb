//! The command line: one file per command group. Handlers parse, call the library, print.

mod admin;
mod api_key;
mod authorize;
mod backup;
mod connection;
mod connection_import;
mod connection_list;
mod connection_test;
mod doctor;
mod man;
mod messages;
mod notifications;
mod output;
mod queue;
mod relay_user;
mod reload;
mod secret_input;
mod secrets;
mod send;
mod serve;
mod store;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::reload::SettingsSource;
use crate::settings::{Loader, Settings, SettingsError};
use crate::store::{Store, StoreError};
use crate::telemetry::LogControl;

pub use output::print_json;

const EXAMPLES: &str = "\
Examples:
  postern connection add contoso --provider microsoft --user ops@contoso.com \\
      --tenant contoso.onmicrosoft.com --client-id 1b2c3d4e-0000-1111-2222-333344445555 \\
      --client-secret-file ./client-secret.txt
  postern connection list
  postern serve

Exit codes: 0 success, 2 usage or validation error, 1 any other failure.";

/// Postern: SMTP with OAuth 2.0 for Microsoft 365 and Gmail, done properly.
#[derive(Debug, Parser)]
#[command(name = "postern", version, about, after_help = EXAMPLES)]
pub struct Cli {
    /// Settings file (default: ./postern.toml when it exists).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the database and key file live (default ./postern-data).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The PostgreSQL store shared by several instances (`postgres://user@host/db`); without it,
    /// SQLite in the data directory.
    #[arg(long, global = true, value_name = "URL")]
    pub store_url: Option<String>,
    /// Log format.
    #[arg(long, global = true, value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors in the log.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay, delivery workers and HTTP endpoints.
    Serve(serve::ServeArgs),
    /// Create and manage SMTP OAuth connections.
    #[command(subcommand)]
    Connection(connection::ConnectionCommand),
    /// Manage the key that seals secrets at rest.
    #[command(subcommand)]
    Secrets(secrets::SecretsCommand),
    /// Keys for the HTTP API (each shown once, at creation).
    #[command(subcommand)]
    ApiKey(api_key::ApiKeyCommand),
    /// Admin accounts for the web UI.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Logins for legacy apps that submit to the relay.
    #[command(subcommand)]
    RelayUser(relay_user::RelayUserCommand),
    /// Send one message now through a connection (recorded in the sent-mail log).
    Send(send::SendArgs),
    /// The sent-mail log: what was handed to the provider, and each recipient's reply.
    #[command(subcommand)]
    Messages(messages::MessagesCommand),
    /// The outbox: list, retry, delete, hold and release waiting mail (like mailq/postqueue).
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// Check the whole installation: one line per check with ok/warn/fail and the fix.
    Doctor(doctor::DoctorArgs),
    /// What Postern told the admin (events and delivery attempts); `test` tries every channel.
    #[command(subcommand)]
    Notifications(notifications::NotificationsCommand),
    /// Move the store between SQLite and PostgreSQL (`store copy --to URL`).
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Write a consistent copy of the store to FILE, while serve runs (the data key is not in it).
    Backup {
        /// The new file (never overwritten).
        file: PathBuf,
    },
    /// Make a running serve re-read its settings (same as SIGHUP): certificate, limits, networks.
    #[command(after_help = "\
Examples:
  postern reload
  postern --data-dir /var/lib/postern reload

Applies the relay's TLS certificate and key (new handshakes), max_message_size, max_recipients,
the networks and log.level to new sessions; other changed keys are logged as needing a restart.
The result is in serve's log.")]
    Reload,
    /// Replace the store with a backup (serve must be stopped; the old store is kept aside).
    Restore {
        /// A file made by `postern backup`.
        file: PathBuf,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  postern completions bash > /etc/bash_completion.d/postern\n  postern completions zsh > \"${fpath[1]}/_postern\"\n  postern completions fish > ~/.config/fish/completions/postern.fish"
    )]
    Completions {
        /// bash, zsh or fish.
        shell: Shell,
    },
    /// Write the manual pages (postern.1, postern-connection.1, …) into DIR (for packagers).
    #[command(hide = true)]
    Man {
        /// Created when missing; existing pages are replaced.
        dir: PathBuf,
    },
}

/// The shells `completions` writes for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Writes the completion script for `shell` to standard output.
fn completions(shell: Shell) -> CliResult {
    use clap::CommandFactory as _;
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "postern", &mut script);
    use std::io::Write as _;
    match std::io::stdout().write_all(&script) {
        // `postern completions bash | head` closes the pipe early: not a failure.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::Failed(
            anyhow::anyhow!("cannot write the script: {e}"),
        )),
        _ => Ok(()),
    }
}

/// A failure with its exit code: 2 for the caller's mistakes, 1 for everything else.
#[derive(Debug)]
pub enum CliError {
    Usage(String),
    Failed(anyhow::Error),
    /// Exit with this code; the command has printed everything already (`doctor`).
    Exit(i32),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
            CliError::Exit(code) => *code,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) => f.write_str(m),
            CliError::Failed(e) => write!(f, "{e:#}"),
            CliError::Exit(code) => write!(f, "exit status {code}"),
        }
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoSuchConnection(_)
            | StoreError::DuplicateConnection(_)
            | StoreError::ManagedByFile(_) => CliError::Usage(e.to_string()),
            other => CliError::Failed(other.into()),
        }
    }
}

impl From<SettingsError> for CliError {
    fn from(e: SettingsError) -> Self {
        CliError::Usage(e.to_string())
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        CliError::Failed(e)
    }
}

impl From<crate::domain::ValidationErrors> for CliError {
    fn from(e: crate::domain::ValidationErrors) -> Self {
        CliError::Usage(e.to_string())
    }
}

pub type CliResult = Result<(), CliError>;

impl Cli {
    /// Defaults < settings file < `POSTERN_*` environment < flags.
    pub fn settings(&self) -> Result<Settings, SettingsError> {
        (self.settings_source())()
    }

    /// Reads the settings as [`Cli::settings`] does, again at each call (a reload).
    pub fn settings_source(&self) -> SettingsSource {
        let (path, required) = match &self.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from("postern.toml"), false),
        };
        let data_dir = self.data_dir.as_ref().map(|p| p.display().to_string());
        let store_url = self.store_url.clone();
        let log_format = self.log_format.clone();
        let serve = match &self.command {
            Command::Serve(args) => Some(args.clone()),
            _ => None,
        };
        Arc::new(move || {
            let mut loader = Loader::new()
                .file(&path, required)?
                .env(std::env::vars())
                .flag("store", "data_dir", data_dir.clone(), "--data-dir")
                .flag("store", "url", store_url.clone(), "--store-url")
                .flag("log", "format", log_format.clone(), "--log-format");
            if let Some(args) = &serve {
                loader = args.apply(loader);
            }
            loader.build()
        })
    }
}

/// What every command handler gets.
pub struct Ctx {
    pub settings: Settings,
    /// Reads the settings again (serve's reloads).
    pub(crate) source: SettingsSource,
    /// Changes the log level (None when `-v`, `-q` or `RUST_LOG` chose it).
    pub(crate) log: Option<LogControl>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Ctx {
    pub async fn store(&self) -> Result<Store, CliError> {
        Ok(Store::open_settings(&self.settings.store)
            .await?
            .with_lease_secs(self.settings.delivery.lease_secs))
    }
}

/// Runs the command; `log` changes the log level on serve's reloads (pass None when the level
/// did not come from the settings).
pub async fn run(cli: Cli, settings: Settings, log: Option<LogControl>) -> CliResult {
    let ctx = Ctx {
        settings,
        source: cli.settings_source(),
        log,
    };
    match cli.command {
        Command::Serve(args) => serve::run(&ctx, args).await,
        Command::Connection(cmd) => connection::run(&ctx, cmd).await,
        Command::Secrets(cmd) => secrets::run(&ctx, cmd).await,
        Command::ApiKey(cmd) => api_key::run(&ctx, cmd).await,
        Command::Admin(cmd) => admin::run(&ctx, cmd).await,
        Command::RelayUser(cmd) => relay_user::run(&ctx, cmd).await,
        Command::Send(args) => send::run(&ctx, args).await,
        Command::Messages(cmd) => messages::run(&ctx, cmd).await,
        Command::Queue(cmd) => queue::run(&ctx, cmd).await,
        Command::Doctor(args) => doctor::run(&ctx, args).await,
        Command::Notifications(cmd) => notifications::run(&ctx, cmd).await,
        Command::Store(cmd) => store::run(&ctx, cmd).await,
        Command::Backup { file } => backup::backup(&ctx, &file).await,
        Command::Restore { file } => backup::restore(&ctx, &file).await,
        Command::Reload => reload::run(&ctx),
        Command::Completions { shell } => completions(shell),
        Command::Man { dir } => man::write_pages(&dir),
    }
}
