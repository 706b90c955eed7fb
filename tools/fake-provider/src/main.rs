//! `fake-provider`: run the fake IdP and the fake SMTP server for manual tries.
//!
//! Prints one machine-readable line per service (`idp URL`, `smtp ADDR`, `ca-file PATH`, ...)
//! and runs until SIGTERM or Ctrl-C.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use fake_provider::idp::{ClientRegistration, IdpConfig};
use fake_provider::smtp::{SmtpConfig, SmtpTls, TokenValidator};
use fake_provider::{FakeIdp, FakeSmtp};

/// Fake OAuth identity provider and provider SMTP server, for tests and manual tries.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address of the identity provider (HTTP).
    #[arg(long, default_value = "127.0.0.1:0")]
    idp_listen: SocketAddr,
    /// Address of the SMTP server.
    #[arg(long, default_value = "127.0.0.1:0")]
    smtp_listen: SocketAddr,
    /// Imitate Gmail instead of Exchange Online.
    #[arg(long)]
    gmail: bool,
    /// Implicit TLS (port 465 style) instead of STARTTLS.
    #[arg(long)]
    implicit_tls: bool,
    /// Benchmark mode: no per-command logging, no message bodies kept.
    #[arg(long)]
    fast: bool,
    /// Access token lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    expires_in: u64,
    /// Register a client (repeatable); without any, the default client is registered.
    #[arg(long = "client", value_name = "ID[:SECRET]")]
    clients: Vec<String>,
    /// Device flow: approve automatically after this many polls.
    #[arg(long, value_name = "POLLS")]
    auto_approve_after: Option<u32>,
    /// Where to write the CA certificate (PEM); default: a file in the temp directory.
    #[arg(long, value_name = "FILE")]
    ca_out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut idp_config = IdpConfig {
        listen: args.idp_listen,
        expires_in: args.expires_in,
        auto_approve_after_polls: args.auto_approve_after,
        ..IdpConfig::default()
    };
    if !args.clients.is_empty() {
        idp_config.clients = args
            .clients
            .iter()
            .map(|c| match c.split_once(':') {
                Some((id, secret)) => ClientRegistration::confidential(id, secret),
                None => ClientRegistration::public(c.as_str()),
            })
            .collect();
    }
    let clients: Vec<String> = idp_config
        .clients
        .iter()
        .map(|c| c.client_id.clone())
        .collect();
    let user = idp_config.default_user.clone();
    let idp = FakeIdp::start(idp_config)
        .await
        .context("starting the identity provider")?;

    let mut smtp_config = if args.gmail {
        SmtpConfig::gmail()
    } else {
        SmtpConfig::office365()
    };
    smtp_config.listen = args.smtp_listen;
    if args.implicit_tls {
        smtp_config.tls = SmtpTls::Implicit;
    }
    if args.fast {
        smtp_config = smtp_config.fast();
    }
    let smtp = FakeSmtp::start(smtp_config, TokenValidator::Idp(idp.clone()))
        .await
        .context("starting the SMTP server")?;

    let (ca_path, temporary) = match args.ca_out {
        Some(p) => (p, false),
        None => {
            let name = format!("fake-provider-ca-{}.pem", std::process::id());
            (std::env::temp_dir().join(name), true)
        }
    };
    std::fs::write(&ca_path, smtp.ca_pem())
        .with_context(|| format!("writing the CA certificate to {}", ca_path.display()))?;

    let signals = Signals::install()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "idp {}", idp.base_url())?;
    writeln!(out, "smtp {}", smtp.addr())?;
    writeln!(out, "ca-file {}", ca_path.display())?;
    for c in &clients {
        writeln!(out, "client {c}")?;
    }
    writeln!(out, "user {user}")?;
    out.flush()?;
    drop(out);

    signals.wait().await?;
    smtp.shutdown();
    idp.shutdown().await;
    if temporary {
        let _ = std::fs::remove_file(&ca_path);
    }
    Ok(())
}

/// SIGTERM and Ctrl-C handlers, installed before the service lines are printed so that a
/// supervisor reacting to those lines cannot kill the process with the default action.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
                int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn wait(mut self) -> anyhow::Result<()> {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        Ok(())
    }
}
