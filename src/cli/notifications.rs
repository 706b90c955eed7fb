//! `postern notifications list | test`: the events told to the admin and each delivery attempt,
//! and a sample through every configured channel.

use clap::Subcommand;

use super::output::{print_json, print_table};
use super::{CliError, CliResult, Ctx};
use crate::notify::Notifier;
use crate::oauth::TokenManager;

#[derive(Debug, Subcommand)]
pub enum NotificationsCommand {
    /// Recent events, newest first, with each delivery attempt.
    List {
        /// How many events.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Send a sample event through every configured channel and print each result.
    Test,
}

pub async fn run(ctx: &Ctx, cmd: NotificationsCommand) -> CliResult {
    match cmd {
        NotificationsCommand::List { limit, json } => list(ctx, limit, json).await,
        NotificationsCommand::Test => test(ctx).await,
    }
}

fn time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

async fn list(ctx: &Ctx, limit: i64, json: bool) -> CliResult {
    let store = ctx.store().await?;
    let events = store.recent_notifications(limit.clamp(1, 1000)).await?;
    let mut out = Vec::new();
    for e in events {
        let attempts = store.notification_attempts(e.id).await?;
        out.push((e, attempts));
    }
    if json {
        let v: Vec<serde_json::Value> = out
            .iter()
            .map(|(e, a)| {
                let mut j = crate::notify::event_json(e);
                j["done"] = e.done.into();
                j["attempts"] = serde_json::to_value(a).unwrap_or_default();
                j
            })
            .collect();
        return Ok(print_json(&v)?);
    }
    if out.is_empty() {
        println!("No notifications yet.");
        return Ok(());
    }
    for (e, attempts) in out {
        let rows = vec![vec![
            e.id.to_string(),
            time(e.at),
            e.event.clone(),
            e.connection.clone().unwrap_or_else(|| "-".into()),
        ]];
        print_table(&["ID", "AT (UTC)", "EVENT", "CONNECTION"], &rows);
        println!("  reason: {}\n  fix:    {}", e.reason, e.fix);
        if attempts.is_empty() {
            println!("  (no delivery attempt: no channel configured, or not sent yet)");
        }
        for a in attempts {
            let result = if a.ok { "ok" } else { "failed" };
            println!("  {} {:<8} {result}: {}", time(a.at), a.channel, a.detail);
        }
    }
    Ok(())
}

async fn test(ctx: &Ctx) -> CliResult {
    let n = &ctx.settings.notifications;
    if !n.any_channel() {
        return Err(CliError::Usage(
            "no notification channel is configured: set webhook_url (with webhook_secret_file), \
             email_connection and email_to, or command under [notifications]"
                .into(),
        ));
    }
    let store = ctx.store().await?;
    let tokens = TokenManager::new(store.clone(), ctx.settings.tokens.clone())
        .map_err(|e| CliError::Failed(e.into()))?;
    let notifier = Notifier::new(store, n.clone(), tokens, ctx.settings.delivery.clone())
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let results = notifier.test().await;
    let mut failed = false;
    for r in &results {
        failed |= !r.ok;
        println!(
            "{:<8} {}: {}",
            r.channel,
            if r.ok { "ok" } else { "FAILED" },
            r.detail
        );
    }
    if failed {
        return Err(CliError::Failed(anyhow::anyhow!(
            "a notification channel did not deliver the sample (see above)"
        )));
    }
    Ok(())
}
