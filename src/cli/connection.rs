//! `postern connection ...`: create, list, show, edit, enable, disable and remove connections.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::output::print_json;
use super::secret_input;
use super::{CliError, CliResult, Ctx};
use secrecy::{ExposeSecret, SecretString};

use crate::domain::{ConnectionInput, ConnectionView, OAuthFlow, parse_expiry_date};
use crate::oauth::service_account::ServiceAccountKey;
use crate::store::SecretKind;

#[derive(Debug, Subcommand)]
pub enum ConnectionCommand {
    /// Create a connection.
    #[command(
        after_help = "Example:\n  postern connection add contoso --provider microsoft --user ops@contoso.com \\\n      --tenant contoso.onmicrosoft.com --client-id 1b2c3d4e-0000-1111-2222-333344445555 \\\n      --client-secret-file ./secret.txt\n\nThe client secret is read from a file, an environment variable or a hidden prompt, never from the command line."
    )]
    Add {
        name: String,
        #[command(flatten)]
        fields: FieldArgs,
    },
    /// List connections with their status; filter and page through many.
    #[command(
        after_help = "Examples:\n  postern connection list --status needs-reauthorization\n  postern connection list --search contoso --limit 50\n  postern connection list --limit 50 --cursor <the cursor printed after the previous page>"
    )]
    List(super::connection_list::ListArgs),
    /// Create or update many connections from a JSON, CSV or TOML file, in one transaction.
    #[command(
        after_help = "Example:\n  postern connection import customers.csv --dry-run\n  postern connection import customers.csv\n\nOne row per connection with the fields of `connection add` (see `connection export --format csv`).\nSecrets are never in the file: client_secret_file / client_secret_env (and refresh_token_file /\nrefresh_token_env) name where to read them; a relative file is read beside the import file.\nAn existing name is updated (blank fields keep their value); every row is checked first and\nnothing is written unless all pass."
    )]
    Import(super::connection_import::ImportArgs),
    /// Write every connection (without secrets) as JSON, CSV or TOML that `import` takes back.
    Export(super::connection_import::ExportArgs),
    /// Show one connection (secrets appear as set / not set).
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Change fields of a connection; only the flags given change.
    #[command(after_help = "Example:\n  postern connection edit contoso --port 465 --tls implicit")]
    Edit {
        name: String,
        /// Give the connection a new name.
        #[arg(long, value_name = "NEW_NAME")]
        rename: Option<String>,
        #[command(flatten)]
        fields: FieldArgs,
    },
    /// Allow the connection to send again.
    Enable { name: String },
    /// Stop sending through the connection (its queued mail is held, not lost).
    Disable { name: String },
    /// Delete the connection and its stored secrets.
    Remove {
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Sign in once so Postern can keep tokens (browser, --paste or --device); app-only
    /// connections just check their credentials.
    Authorize(super::authorize::AuthorizeArgs),
    /// Diagnostic: obtain a token and show its expiry, scopes and audience (never the token).
    Token { name: String },
    /// Send a test message and show each step: DNS, TCP, TLS, EHLO, token, AUTH, the reply.
    Test(super::connection_test::TestArgs),
}

/// The connection form's fields, as flags.
#[derive(Debug, Args, Default)]
pub struct FieldArgs {
    /// microsoft (Microsoft 365, also GCC), microsoft-us-gov (Microsoft 365 GCC High or DoD:
    /// smtp.office365.us, login.microsoftonline.us), microsoft-china (Microsoft 365 operated by
    /// 21Vianet: smtp.partner.outlook.cn, login.chinacloudapi.cn), outlook (Outlook.com
    /// personal), google or custom.
    #[arg(long)]
    provider: Option<String>,
    /// The mailbox that sends (the form's "User Name").
    #[arg(long, value_name = "EMAIL")]
    user: Option<String>,
    #[arg(long)]
    display_name: Option<String>,
    /// SMTP server (preset: smtp.office365.com, smtp-mail.outlook.com, smtp.gmail.com).
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    port: Option<String>,
    /// starttls (587) or implicit (465).
    #[arg(long)]
    tls: Option<String>,
    /// The domain named in EHLO (default: the mailbox's domain).
    #[arg(long)]
    domain: Option<String>,
    /// organizations, common, consumers, the Directory (tenant) ID or a verified domain.
    #[arg(long)]
    tenant: Option<String>,
    /// The Application (client) ID.
    #[arg(long)]
    client_id: Option<String>,
    /// Read the client secret from this file.
    #[arg(long, value_name = "FILE")]
    client_secret_file: Option<PathBuf>,
    /// Read the client secret from this environment variable.
    #[arg(long, value_name = "VAR")]
    client_secret_env: Option<String>,
    /// Google Workspace app-only: the service account's JSON key file (Google Cloud console >
    /// IAM & Admin > Service accounts > Keys). Stored sealed; implies --flow service-account and
    /// the key's client id.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["client_secret_file", "client_secret_env"])]
    service_account_key: Option<PathBuf>,
    /// Scopes, space separated (preset: https://outlook.office.com/SMTP.Send offline_access;
    /// each national cloud has its own, see --provider).
    #[arg(long)]
    scope: Option<String>,
    /// The redirect URI registered on the app (default http://localhost).
    #[arg(long)]
    redirect_uri: Option<String>,
    /// authorization-code (delegated, default), client-credentials (app-only, Microsoft) or
    /// service-account (app-only, Google Workspace: domain-wide delegation).
    #[arg(long)]
    flow: Option<String>,
    /// Override the authorize endpoint (sovereign clouds, tests).
    #[arg(long, value_name = "URL")]
    authorize_url: Option<String>,
    /// Override the token endpoint.
    #[arg(long, value_name = "URL")]
    token_url: Option<String>,
    /// Override the device-code endpoint.
    #[arg(long, value_name = "URL")]
    device_url: Option<String>,
    /// Extra CA certificate (PEM) to trust for this SMTP server.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<String>,
    /// Most upstream SMTP connections at once (Microsoft allows 3 per mailbox).
    #[arg(long, value_name = "N")]
    max_concurrent: Option<String>,
    /// Override a sending limit of the provider's preset: messages-per-minute, messages-per-day,
    /// recipients-per-day or recipients-per-message; N=0 for none, `preset` to undo (repeatable).
    #[arg(long = "limit", value_name = "NAME=N")]
    limits: Vec<String>,
    /// How mail leaves: smtp (SMTP AUTH with XOAUTH2, default) or graph (Microsoft Graph
    /// sendMail, for tenants where SMTP AUTH is off: `535 5.7.139`).
    #[arg(long, value_name = "smtp|graph")]
    transport: Option<String>,
    /// The Microsoft Graph base URL (default: the provider cloud's, https://graph.microsoft.com).
    #[arg(long, value_name = "URL")]
    graph_url: Option<String>,
    /// SMTP connections to Microsoft 365: deliver through Microsoft Graph when SMTP AUTH answers
    /// `535 5.7.139` (SMTP AUTH off for the mailbox or tenant), with a Graph token from the same
    /// grant (needs the Graph Mail.Send permission too); `none` removes it.
    #[arg(long, value_name = "graph|none")]
    fallback: Option<String>,
    /// Graph (transport graph or --fallback graph): what a message over Graph's 4 MB request
    /// limit does: fail (default: fails with the reason) or draft (a draft plus attachment
    /// upload sessions, then send; needs the Graph Mail.ReadWrite permission).
    #[arg(long, value_name = "fail|draft")]
    graph_large: Option<String>,
    /// Read an existing refresh token from this file (normally `authorize` obtains it).
    #[arg(long, value_name = "FILE")]
    refresh_token_file: Option<PathBuf>,
    /// Read an existing refresh token from this environment variable.
    #[arg(long, value_name = "VAR")]
    refresh_token_env: Option<String>,
    /// The client secret's expiry date, YYYY-MM-DD (Azure portal: Certificates & secrets,
    /// "Expires"), or `none` to clear it: Postern warns 30, 7 and 1 days before.
    #[arg(long, value_name = "YYYY-MM-DD")]
    secret_expires: Option<String>,
    /// Create the connection disabled.
    #[arg(long)]
    disabled: bool,
}

impl FieldArgs {
    /// `Some(date or None)` when `--secret-expires` was given.
    fn secret_expiry(&self) -> Result<Option<Option<chrono::NaiveDate>>, CliError> {
        self.secret_expires
            .as_deref()
            .map(|t| {
                parse_expiry_date(t).map_err(|m| CliError::Usage(format!("--secret-expires: {m}")))
            })
            .transpose()
    }

    /// The key file of `--service-account-key`, checked: Google's JSON key of a service account.
    fn service_account_key(&self) -> Result<Option<(ServiceAccountKey, SecretString)>, CliError> {
        let Some(path) = &self.service_account_key else {
            return Ok(None);
        };
        let json = secret_input::from_file_or_env("service account key", Some(path), None)?
            .ok_or_else(|| CliError::Usage("the service account key is empty".into()))?;
        let key = ServiceAccountKey::parse(json.expose_secret())
            .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
        Ok(Some((key, json)))
    }

    /// The input, with what a service account key implies (flow, client id) unless given.
    fn input_with_key(
        &self,
        name: Option<String>,
        key: Option<&ServiceAccountKey>,
    ) -> ConnectionInput {
        let mut input = self.input(name);
        if let Some(k) = key {
            input
                .flow
                .get_or_insert_with(|| OAuthFlow::ServiceAccount.to_string());
            input.client_id.get_or_insert_with(|| k.client_id.clone());
        }
        input
    }

    fn input(&self, name: Option<String>) -> ConnectionInput {
        ConnectionInput {
            name,
            display_name: self.display_name.clone(),
            provider: self.provider.clone(),
            flow: self.flow.clone(),
            host: self.host.clone(),
            port: self.port.clone(),
            tls: self.tls.clone(),
            domain: self.domain.clone(),
            user: self.user.clone(),
            tenant: self.tenant.clone(),
            client_id: self.client_id.clone(),
            scope: self.scope.clone(),
            redirect_uri: self.redirect_uri.clone(),
            authorize_url: self.authorize_url.clone(),
            token_url: self.token_url.clone(),
            device_url: self.device_url.clone(),
            ca_file: self.ca_file.clone(),
            enabled: self.disabled.then_some(false),
            max_concurrent: self.max_concurrent.clone(),
            limits: (!self.limits.is_empty()).then(|| self.limits.join(",")),
            transport: self.transport.clone(),
            graph_url: self.graph_url.clone(),
            fallback: self.fallback.clone(),
            graph_large: self.graph_large.clone(),
        }
    }
}

pub async fn run(ctx: &Ctx, cmd: ConnectionCommand) -> CliResult {
    match cmd {
        ConnectionCommand::Add { name, fields } => add(ctx, name, fields).await,
        ConnectionCommand::List(args) => super::connection_list::list(ctx, args).await,
        ConnectionCommand::Import(args) => super::connection_import::import(ctx, args).await,
        ConnectionCommand::Export(args) => super::connection_import::export(ctx, args).await,
        ConnectionCommand::Show { name, json } => show(ctx, &name, json).await,
        ConnectionCommand::Edit {
            name,
            rename,
            fields,
        } => edit(ctx, &name, rename, fields).await,
        ConnectionCommand::Enable { name } => set_enabled(ctx, &name, true).await,
        ConnectionCommand::Disable { name } => set_enabled(ctx, &name, false).await,
        ConnectionCommand::Remove { name, yes } => remove(ctx, &name, yes).await,
        ConnectionCommand::Authorize(args) => super::authorize::authorize(ctx, args).await,
        ConnectionCommand::Token { name } => super::authorize::token(ctx, &name).await,
        ConnectionCommand::Test(args) => super::connection_test::run(ctx, args).await,
    }
}

async fn add(ctx: &Ctx, name: String, fields: FieldArgs) -> CliResult {
    let key = fields.service_account_key()?;
    let (settings, notices) = fields
        .input_with_key(Some(name), key.as_ref().map(|(k, _)| k))
        .validate()?;
    let expires = fields.secret_expiry()?;
    let mut secret = match key {
        Some((_, json)) => Some(json),
        None => secret_input::from_file_or_env(
            "client secret",
            fields.client_secret_file.as_deref(),
            fields.client_secret_env.as_deref(),
        )?,
    };
    if settings.flow == OAuthFlow::ServiceAccount {
        check_service_account_secret(settings.name.as_str(), secret.as_ref(), true)?;
    } else if secret.is_none() {
        secret = secret_input::prompt(
            "Client secret (Value column in Certificates & secrets; empty for none): ",
        )?;
    }
    let refresh = secret_input::from_file_or_env(
        "refresh token",
        fields.refresh_token_file.as_deref(),
        fields.refresh_token_env.as_deref(),
    )?;
    let store = ctx.store().await?;
    let conn = store.insert_connection(&settings).await?;
    if let Some(date) = expires {
        store.set_secret_expiry(conn.id, date).await?;
    }
    if let Some(s) = &secret {
        store
            .put_secret(conn.id, SecretKind::ClientSecret, s, None)
            .await?;
    }
    if let Some(r) = &refresh {
        store
            .put_secret(conn.id, SecretKind::RefreshToken, r, None)
            .await?;
    }
    for n in notices {
        eprintln!("note: {}", n.0);
    }
    println!(
        "created connection `{}` ({} {}).",
        conn.name(),
        settings.provider,
        settings.user
    );
    if let Some(r) = &settings.redirect_uri {
        println!("Register this redirect URI on the app, exactly: {r}");
    }
    println!("Next: postern connection authorize {}", conn.name());
    Ok(())
}

async fn show(ctx: &Ctx, name: &str, json: bool) -> CliResult {
    let store = ctx.store().await?;
    let v = ConnectionView::from(&store.connection(name).await?);
    if json {
        return Ok(print_json(&v)?);
    }
    let none = || "-".to_string();
    let rows = [
        ("Name", v.name.clone()),
        ("Display name", v.display_name.clone().unwrap_or_else(none)),
        ("Provider", v.provider.clone()),
        ("Flow", v.flow.clone()),
        ("Address", v.host.clone()),
        ("Port", format!("{} ({})", v.port, v.tls)),
        ("Domain", v.domain.clone()),
        ("User name", v.user.clone()),
        ("Tenant", v.tenant.clone().unwrap_or_else(none)),
        ("Client id", v.client_id.clone()),
        ("Client secret", v.client_secret.to_string()),
        ("Scope", v.scope.clone()),
        ("Redirect URI", v.redirect_uri.clone().unwrap_or_else(none)),
        ("Refresh token", v.refresh_token.to_string()),
        ("Enabled", v.enabled.to_string()),
        ("Status", v.status.clone()),
        ("Reason", v.status_reason.clone().unwrap_or_else(none)),
        (
            "Authorize URL",
            v.authorize_url.clone().unwrap_or_else(none),
        ),
        ("Token URL", v.token_url.clone().unwrap_or_else(none)),
        ("Device URL", v.device_url.clone().unwrap_or_else(none)),
        ("CA file", v.ca_file.clone().unwrap_or_else(none)),
        ("Transport", v.transport.clone()),
        ("Graph URL", v.graph_url.clone().unwrap_or_else(none)),
        ("Fallback", v.fallback.clone().unwrap_or_else(none)),
        ("Graph large", v.graph_large.clone()),
        ("Max concurrent", v.max_concurrent.to_string()),
        (
            "Limits",
            if v.limit_overrides.is_empty() {
                format!("{} (provider preset)", v.limits)
            } else {
                format!("{} (set here: {})", v.limits, v.limit_overrides)
            },
        ),
        (
            "Secret expires",
            v.secret_expires.clone().unwrap_or_else(none),
        ),
        (
            "Refresh token obtained",
            v.refresh_token_obtained_at.clone().unwrap_or_else(none),
        ),
        (
            "Access token expires",
            v.access_token_expires_at.clone().unwrap_or_else(none),
        ),
        ("Last used", v.last_used_at.clone().unwrap_or_else(none)),
        ("Created", v.created_at.clone()),
        ("Updated", v.updated_at.clone()),
    ];
    for (k, val) in rows {
        println!("{k:<22} {val}");
    }
    Ok(())
}

async fn edit(ctx: &Ctx, name: &str, rename: Option<String>, fields: FieldArgs) -> CliResult {
    let store = ctx.store().await?;
    let current = store.connection(name).await?;
    let key = fields.service_account_key()?;
    let mut changes = fields.input_with_key(rename, key.as_ref().map(|(k, _)| k));
    // `--disabled` is for add; on edit use `connection disable`.
    changes.enabled = None;
    // `--limit` changes the limits it names; the other overrides stay.
    if let Some(more) = changes.limits.take() {
        let before = current.settings.limits.to_string();
        changes.limits = Some(if before.is_empty() {
            more
        } else {
            format!("{before},{more}")
        });
    }
    let (settings, notices) = ConnectionInput::from_settings(&current.settings)
        .overlay(changes)
        .validate()?;
    let expires = fields.secret_expiry()?;
    let secret = match key {
        Some((_, json)) => Some(json),
        None => secret_input::from_file_or_env(
            "client secret",
            fields.client_secret_file.as_deref(),
            fields.client_secret_env.as_deref(),
        )?,
    };
    if settings.flow == OAuthFlow::ServiceAccount {
        let stored = store
            .secret(current.id, SecretKind::ClientSecret)
            .await?
            .is_some();
        check_service_account_secret(name, secret.as_ref(), !stored)?;
    }
    let refresh = secret_input::from_file_or_env(
        "refresh token",
        fields.refresh_token_file.as_deref(),
        fields.refresh_token_env.as_deref(),
    )?;
    let conn = store.update_connection(current.id, &settings).await?;
    if let Some(date) = expires {
        store.set_secret_expiry(conn.id, date).await?;
    }
    let reauthorized = store
        .put_credentials(conn.id, secret.as_ref(), refresh.as_ref())
        .await?;
    for n in notices {
        eprintln!("note: {}", n.0);
    }
    println!("updated connection `{}`.", conn.name());
    if reauthorized {
        println!(
            "Its new credentials will be tried at the next delivery; held mail is then released."
        );
    }
    Ok(())
}

/// A service-account connection's "client secret" is its JSON key: refuse anything else before
/// it is stored, and a connection without one.
fn check_service_account_secret(
    name: &str,
    secret: Option<&SecretString>,
    required: bool,
) -> Result<(), CliError> {
    match secret {
        Some(s) => ServiceAccountKey::parse(s.expose_secret())
            .map(|_| ())
            .map_err(|e| CliError::Usage(format!("the service account key of `{name}`: {e}"))),
        None if required => Err(CliError::Usage(format!(
            "a service-account connection needs the service account's JSON key: add \
             --service-account-key FILE (Google Cloud console > IAM & Admin > Service accounts > \
             your account > Keys > Add key > JSON) to `{name}`"
        ))),
        None => Ok(()),
    }
}

async fn set_enabled(ctx: &Ctx, name: &str, enabled: bool) -> CliResult {
    let store = ctx.store().await?;
    let conn = store.set_enabled(name, enabled).await?;
    if enabled {
        println!("connection `{}` is enabled.", conn.name());
    } else {
        println!(
            "connection `{}` is disabled: mail for it is held until it is enabled again.",
            conn.name()
        );
    }
    Ok(())
}

async fn remove(ctx: &Ctx, name: &str, yes: bool) -> CliResult {
    let store = ctx.store().await?;
    store.connection(name).await?;
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::Usage(format!(
                "removing `{name}` needs confirmation: add --yes"
            )));
        }
        print!("Remove connection `{name}` and its stored secrets? [y/N] ");
        std::io::stdout().flush().ok();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|e| CliError::Failed(e.into()))?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("kept `{name}`.");
            return Ok(());
        }
    }
    store.remove_connection(name).await?;
    println!("removed connection `{name}`.");
    Ok(())
}
