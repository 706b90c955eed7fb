//! `postern connection test NAME --to EMAIL`: a test message through the connection, step by step.

use clap::Args;

use super::send::SENT_MEANS;
use super::{CliError, CliResult, Ctx};
use crate::domain::EmailAddress;
use crate::oauth::TokenManager;
use crate::outbox::direct::{self, TestReport};
use crate::store::messages::Source;

#[derive(Debug, Args)]
#[command(after_help = "\
Example:
  postern connection test contoso --to me@example.org

Prints each step (DNS, TCP, TLS, EHLO, token, AUTH, the provider's reply) and, on failure, the
step that failed and its likely cause. The exit code is 1 if the test failed.")]
pub struct TestArgs {
    pub name: String,
    /// Where the test message goes (default: the connection's own mailbox).
    #[arg(long, value_name = "EMAIL")]
    pub to: Option<String>,
}

pub async fn run(ctx: &Ctx, args: TestArgs) -> CliResult {
    let store = ctx.store().await?;
    let conn = store.connection(&args.name).await?;
    let to = match &args.to {
        Some(t) => EmailAddress::parse(t).map_err(|e| CliError::Usage(format!("--to: {e}")))?,
        None => conn.settings.user.clone(),
    };
    let s = &conn.settings;
    println!(
        "Testing `{}`: {}:{} ({}), mailbox {}, test message to {to}",
        conn.name(),
        s.host,
        s.port,
        s.tls,
        s.user
    );
    let tokens = TokenManager::new(store.clone(), ctx.settings.tokens.clone())
        .map_err(|e| CliError::Failed(e.into()))?;
    let report = direct::test_connection(
        &store,
        &tokens,
        &ctx.settings.delivery,
        &conn,
        &to,
        Source::Cli,
    )
    .await
    .map_err(|e| CliError::Failed(e.into()))?;
    print_report(&report);
    match &report.failure {
        None => Ok(()),
        Some(f) => Err(CliError::Failed(anyhow::anyhow!(
            "the test of `{}` failed at {}",
            report.connection,
            f.stage
        ))),
    }
}

fn print_report(r: &TestReport) {
    for step in &r.steps {
        println!("{step}");
    }
    if let Some(m) = &r.message {
        println!("Subject: {}", r.subject);
        println!(
            "Recorded as message {} (postern messages show {}).",
            m.id, m.id
        );
    }
    match &r.failure {
        None => {
            let reply = r
                .message
                .as_ref()
                .and_then(|m| m.recipients.first())
                .and_then(|rc| rc.reply.clone())
                .unwrap_or_default();
            println!("PASSED: the provider accepted the test message: {reply}");
            println!("{SENT_MEANS}");
        }
        Some(f) => {
            println!("FAILED at {}: {}", f.stage, f.error);
            if let Some(cause) = &f.likely_cause {
                println!("likely cause: {cause}");
            }
        }
    }
}
