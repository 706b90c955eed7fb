//! `postern serve`: the long-running service.

use clap::Args;

use super::{CliError, CliResult, Ctx};
use crate::app::{Application, shutdown_signal};
use crate::settings::Loader;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Relay submission listener (STARTTLS), e.g. 127.0.0.1:2525.
    #[arg(long, value_name = "ADDR:PORT")]
    smtp_listen: Option<String>,
    /// Optional implicit-TLS relay listener, e.g. 127.0.0.1:4650.
    #[arg(long, value_name = "ADDR:PORT")]
    smtps_listen: Option<String>,
    /// HTTP API, admin UI, /healthz and /metrics, e.g. 127.0.0.1:8025.
    #[arg(long, value_name = "ADDR:PORT")]
    http_listen: Option<String>,
    /// PEM certificate chain for the relay's TLS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<String>,
    /// PEM private key for the relay's TLS.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<String>,
}

impl ServeArgs {
    pub fn apply(&self, loader: Loader) -> Loader {
        loader
            .flag(
                "server",
                "smtp_listen",
                self.smtp_listen.clone(),
                "--smtp-listen",
            )
            .flag(
                "server",
                "smtps_listen",
                self.smtps_listen.clone(),
                "--smtps-listen",
            )
            .flag(
                "server",
                "http_listen",
                self.http_listen.clone(),
                "--http-listen",
            )
            .flag("server", "tls_cert", self.tls_cert.clone(), "--tls-cert")
            .flag("server", "tls_key", self.tls_key.clone(), "--tls-key")
    }
}

pub async fn run(ctx: &Ctx, _args: ServeArgs) -> CliResult {
    let app = Application::build(ctx.settings.clone())
        .await
        .map_err(|e| CliError::Failed(e.into()))?
        .with_reload(ctx.source.clone(), ctx.log.clone())
        .with_notifier(crate::systemd::Notifier::from_env());
    // A restore must not replace the store under a running serve.
    let _lock = crate::store::backup::lock_for_serve(&ctx.settings.store.data_dir)
        .map_err(|e| CliError::Failed(anyhow::anyhow!("data directory lock: {e}")))?;
    // `postern reload` finds this serve by it.
    let _pid = super::reload::PidFile::write(&ctx.settings.store.data_dir)
        .map_err(|e| CliError::Failed(anyhow::anyhow!("PID file: {e}")))?;
    tracing::info!(data_dir = %ctx.settings.store.data_dir.display(), "store opened");
    println!(
        "postern: SMTP relay on {} (STARTTLS; AUTH PLAIN/LOGIN)",
        app.relay_addr()
    );
    if let Some(addr) = app.relay_tls_addr() {
        println!("postern: SMTP relay with implicit TLS on {addr}");
    }
    if let Some(addr) = app.relay_plain_addr() {
        println!(
            "postern: SMTP relay without TLS on {addr} (AUTH in clear only from server.plain_networks)"
        );
    }
    println!(
        "postern: HTTP on http://{} (health: /healthz, metrics: /metrics, admin: /admin)",
        app.http_addr()
    );
    app.run_until_stopped(shutdown_signal())
        .await
        .map_err(|e| CliError::Failed(e.into()))?;
    println!("postern: stopped.");
    Ok(())
}
