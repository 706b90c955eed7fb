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
mod secret_input;
mod secrets;
mod send;
mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::settings::{Loader, Settings, SettingsError};
use crate::store::{Store, StoreError};

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
    /// Write a consistent copy of the store to FILE, while serve runs (the data key is not in it).
    Backup {
        /// The new file (never overwritten).
        file: PathBuf,
    },
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
            StoreError::NoSuchConnection(_) | StoreError::DuplicateConnection(_) => {
                CliError::Usage(e.to_string())
            }
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
        let (path, required) = match &self.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from("postern.toml"), false),
        };
        let mut loader = Loader::new()
            .file(&path, required)?
            .env(std::env::vars())
            .flag(
                "store",
                "data_dir",
                self.data_dir.as_ref().map(|p| p.display().to_string()),
                "--data-dir",
            )
            .flag("log", "format", self.log_format.clone(), "--log-format");
        if let Command::Serve(args) = &self.command {
            loader = args.apply(loader);
        }
        loader.build()
    }
}

/// What every command handler gets.
#[derive(Debug)]
pub struct Ctx {
    pub settings: Settings,
}

impl Ctx {
    pub async fn store(&self) -> Result<Store, CliError> {
        Ok(Store::open(
            &self.settings.store.data_dir,
            self.settings.store.key_file.as_deref(),
        )
        .await?)
    }
}

pub async fn run(cli: Cli, settings: Settings) -> CliResult {
    let ctx = Ctx { settings };
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
        Command::Backup { file } => backup::backup(&ctx, &file).await,
        Command::Restore { file } => backup::restore(&ctx, &file).await,
        Command::Completions { shell } => completions(shell),
        Command::Man { dir } => man::write_pages(&dir),
    }
}
