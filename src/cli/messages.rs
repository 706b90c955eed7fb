//! `postern messages list|show`: the sent-mail log.

use std::str::FromStr;

use clap::{Args, Subcommand};

use super::output::{print_json, print_table};
use super::send::SENT_MEANS;
use super::{CliError, CliResult, Ctx};
use crate::domain::EmailAddress;
use crate::store::messages::{MessageDetail, MessageFilter, MessageStatus, MessageSummary};

#[derive(Debug, Subcommand)]
pub enum MessagesCommand {
    /// Messages handed to a provider (or waiting), newest first.
    #[command(after_help = "\
Examples:
  postern messages list --status failed --since 24h
  postern messages list --connection contoso --to a@example.org --json

`sent` means the provider accepted the message; delivery to the final mailbox is not tracked.")]
    List(ListArgs),
    /// One message: envelope, subject, times, each recipient's provider reply, every attempt.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// queued, sending, sent, deferred, failed or held.
    #[arg(long)]
    status: Option<String>,
    /// Only messages of this connection.
    #[arg(long, value_name = "NAME")]
    connection: Option<String>,
    /// Only messages queued since then: RFC 3339 (2025-01-31T08:00:00Z), a date (2025-01-31, UTC)
    /// or a duration ago (90s, 15m, 2h, 7d, 2w).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only messages with this recipient.
    #[arg(long, value_name = "EMAIL")]
    to: Option<String>,
    /// At most this many messages (1 to 1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Ctx, cmd: MessagesCommand) -> CliResult {
    match cmd {
        MessagesCommand::List(args) => list(ctx, args).await,
        MessagesCommand::Show { id, json } => show(ctx, &id, json).await,
    }
}

/// `--since` as unix milliseconds.
fn parse_since(s: &str, now: chrono::DateTime<chrono::Utc>) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d
            .and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_millis());
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let secs: i64 = match unit.trim() {
        "s" | "sec" | "secs" => 1,
        "m" | "min" | "mins" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 7 * 86_400,
        _ => 0,
    };
    match number.parse::<i64>() {
        Ok(n) if secs > 0 => Ok(now.timestamp_millis() - n.saturating_mul(secs * 1000)),
        _ => Err(format!(
            "--since `{s}`: use RFC 3339 (2025-01-31T08:00:00Z), a date (2025-01-31) or a duration ago (15m, 2h, 7d)"
        )),
    }
}

async fn list(ctx: &Ctx, args: ListArgs) -> CliResult {
    let status = args
        .status
        .as_deref()
        .map(MessageStatus::from_str)
        .transpose()
        .map_err(|e| CliError::Usage(format!("--status: {e}")))?;
    let since = args
        .since
        .as_deref()
        .map(|s| parse_since(s, chrono::Utc::now()))
        .transpose()
        .map_err(CliError::Usage)?;
    let recipient = args
        .to
        .as_deref()
        .map(|t| EmailAddress::parse(t).map(|a| a.to_string()))
        .transpose()
        .map_err(|e| CliError::Usage(format!("--to: {e}")))?;
    if !(1..=1000).contains(&args.limit) {
        return Err(CliError::Usage("--limit must be between 1 and 1000".into()));
    }
    let filter = MessageFilter {
        status,
        connection: args.connection,
        since,
        recipient,
        limit: Some(args.limit),
        ..Default::default()
    };
    let store = ctx.store().await?;
    let messages = store.list_messages(&filter).await?;
    if args.json {
        return Ok(print_json(&messages)?);
    }
    if messages.is_empty() {
        println!("No messages match.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = messages.iter().map(row).collect();
    print_table(
        &[
            "ID",
            "QUEUED",
            "CONNECTION",
            "STATUS",
            "FROM",
            "TO",
            "SUBJECT",
        ],
        &rows,
    );
    if messages.len() as u32 == args.limit {
        println!(
            "(the newest {}; use --limit or filters for more)",
            args.limit
        );
    }
    println!("{SENT_MEANS}");
    Ok(())
}

/// Whether the message's content is still in the store, and why not.
fn content(status: &str, stored: bool) -> String {
    match (stored, status) {
        (true, "failed") => {
            "kept (`postern queue retry` sends it again) until the log retention deletes the message".into()
        }
        (true, _) => "kept until it is sent".into(),
        (false, "sent") => "not kept: dropped when the provider accepted the message".into(),
        (false, _) => "no longer stored".into(),
    }
}

/// `2025-01-31T08:00:00.123+00:00` → `2025-01-31 08:00:00`.
fn short_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| rfc3339.to_string())
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn row(m: &MessageSummary) -> Vec<String> {
    let to = match m.recipients.as_slice() {
        [] => "-".to_string(),
        [one] => one.clone(),
        [first, rest @ ..] => format!("{first} +{}", rest.len()),
    };
    vec![
        m.id.clone(),
        short_time(&m.queued_at),
        m.connection.clone(),
        m.status.clone(),
        m.from.clone(),
        to,
        clip(m.subject.as_deref().unwrap_or("-"), 40),
    ]
}

async fn show(ctx: &Ctx, id: &str, json: bool) -> CliResult {
    let store = ctx.store().await?;
    let Some(d) = store.message_detail(id.trim()).await? else {
        let retention = match ctx.settings.retention.log_days {
            0 => String::new(),
            days => format!(
                "; finished messages are deleted {days} days after they finish (retention.log_days)"
            ),
        };
        return Err(CliError::Usage(format!(
            "no message `{id}` in the sent-mail log (see `postern messages list`){retention}"
        )));
    };
    if json {
        return Ok(print_json(&d)?);
    }
    let stored = store.message_body_stored(&d.summary.id).await?;
    print_detail(&d, stored);
    Ok(())
}

fn print_detail(d: &MessageDetail, content_stored: bool) {
    let m = &d.summary;
    let none = || "-".to_string();
    let time = |t: &Option<String>| t.as_deref().map(short_time).unwrap_or_else(none);
    let status = match m.status.as_str() {
        "sent" => {
            "sent (the provider accepted it; delivery to the final mailbox is not tracked)".into()
        }
        "held" => format!("held (by {})", m.held_by.as_deref().unwrap_or("admin")),
        other => other.to_string(),
    };
    let submitter = m
        .submitter
        .as_deref()
        .map(|s| format!(" by {s}"))
        .unwrap_or_default();
    let fields = [
        ("Message", m.id.clone()),
        ("Connection", m.connection.clone()),
        ("Source", format!("{}{submitter}", m.source)),
        ("From", m.from.clone()),
        ("Recipients", m.recipients.join(", ")),
        ("Subject", m.subject.clone().unwrap_or_else(none)),
        ("Message-ID", m.message_id.clone().unwrap_or_else(none)),
        ("Size", format!("{} bytes", m.size)),
        ("Content", content(&m.status, content_stored)),
        ("Status", status),
        ("Attempts", m.attempts.to_string()),
        ("Queued", short_time(&m.queued_at)),
        ("Last attempt", time(&m.last_attempt_at)),
        ("Next attempt", time(&m.next_attempt_at)),
        ("Done", time(&m.done_at)),
        ("Last error", m.last_error.clone().unwrap_or_else(none)),
    ];
    for (k, v) in fields {
        println!("{k:<13} {v}");
    }
    println!("\nRecipients (the provider's last reply):");
    let width = d
        .recipient_results
        .iter()
        .map(|r| r.address.chars().count())
        .max()
        .unwrap_or(0);
    for r in &d.recipient_results {
        println!(
            "  {:<8} {:<width$}  {}",
            r.status,
            r.address,
            r.reply.as_deref().unwrap_or("-")
        );
    }
    println!("\nAttempts:");
    if d.attempt_log.is_empty() {
        println!("  none yet");
    }
    for a in &d.attempt_log {
        match &a.transport {
            Some(t) => println!("  {}  {}  via {t}", short_time(&a.at), a.outcome),
            None => println!("  {}  {}", short_time(&a.at), a.outcome),
        }
        for line in a.detail.as_deref().unwrap_or_default().lines() {
            println!("      {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_timestamps_dates_and_durations() {
        let now = chrono::DateTime::parse_from_rfc3339("2025-02-01T12:00:00Z")
            .unwrap()
            .to_utc();
        let ms = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_millis()
        };
        assert_eq!(parse_since("2h", now), Ok(ms("2025-02-01T10:00:00Z")));
        assert_eq!(parse_since("7d", now), Ok(ms("2025-01-25T12:00:00Z")));
        assert_eq!(parse_since("15m", now), Ok(ms("2025-02-01T11:45:00Z")));
        assert_eq!(parse_since("1w", now), Ok(ms("2025-01-25T12:00:00Z")));
        assert_eq!(
            parse_since("2025-01-31T08:00:00+01:00", now),
            Ok(ms("2025-01-31T07:00:00Z"))
        );
        assert_eq!(
            parse_since("2025-01-31", now),
            Ok(ms("2025-01-31T00:00:00Z"))
        );
        for bad in ["", "h", "2x", "yesterday", "-2h"] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn clipping_keeps_characters_whole() {
        assert_eq!(clip("Grüße aus Köln", 6), "Grüße…");
        assert_eq!(clip("short", 40), "short");
    }
}
