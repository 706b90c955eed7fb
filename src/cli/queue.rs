//! `postern queue ...`: the outbox, like `mailq`/`postqueue`. A running `serve` notices changes
//! within its workers' poll interval (2 s): no signal or restart needed.

use clap::Subcommand;

use super::output::{print_json, print_table};
use super::{CliError, CliResult, Ctx};
use crate::store::messages::MessageStatus;
use crate::store::queue_admin::{QueueAdminError, QueueEntry, RetryTarget};

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Messages waiting for delivery (queued, sending, deferred, held), oldest first.
    #[command(
        after_help = "Examples:\n  postern queue list\n  postern queue list --status failed --json"
    )]
    List {
        /// Only messages with this status (queued, sending, deferred, held, failed).
        #[arg(long, value_name = "STATUS")]
        status: Option<MessageStatus>,
        /// Only messages of this connection.
        #[arg(long, value_name = "NAME")]
        connection: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Try a deferred or failed message again now (or every deferred one with --all).
    #[command(after_help = "Examples:\n  postern queue retry 0197...\n  postern queue retry --all")]
    Retry {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every deferred message.
        #[arg(long)]
        all: bool,
        /// With --all: failed messages too (they failed permanently; retry only after fixing why).
        #[arg(long, requires = "all")]
        failed: bool,
    },
    /// Delete a message that is not being delivered right now.
    Delete { id: String },
    /// Keep a waiting message from being sent until `queue release`.
    Hold { id: String },
    /// Send a message held with `queue hold`.
    Release { id: String },
}

impl From<QueueAdminError> for CliError {
    fn from(e: QueueAdminError) -> Self {
        if e.is_usage() {
            CliError::Usage(e.to_string())
        } else {
            CliError::Failed(e.into())
        }
    }
}

pub async fn run(ctx: &Ctx, cmd: QueueCommand) -> CliResult {
    let store = ctx.store().await?;
    match cmd {
        QueueCommand::List {
            status,
            connection,
            json,
        } => {
            if let Some(c) = &connection {
                store.connection(c).await?;
            }
            let entries = store.queue_entries(status, connection.as_deref()).await?;
            if json {
                return Ok(print_json(&entries)?);
            }
            print_entries(&entries);
            Ok(())
        }
        QueueCommand::Retry { id, all, failed } => {
            let target = match id {
                Some(id) if !all => RetryTarget::One(id),
                _ => RetryTarget::All {
                    include_failed: failed,
                },
            };
            let n = store.retry_messages(&target).await?;
            match target {
                RetryTarget::One(id) => println!("message {id} is due now."),
                RetryTarget::All { .. } => println!("{n} message(s) due now."),
            }
            Ok(())
        }
        QueueCommand::Delete { id } => {
            store.delete_queued_message(&id).await?;
            println!("deleted message {id}.");
            Ok(())
        }
        QueueCommand::Hold { id } => {
            store.hold_message(&id).await?;
            println!("message {id} is held: release it with `postern queue release {id}`.");
            Ok(())
        }
        QueueCommand::Release { id } => {
            store.release_message(&id).await?;
            println!("message {id} is released and due now.");
            Ok(())
        }
    }
}

fn print_entries(entries: &[QueueEntry]) {
    if entries.is_empty() {
        println!("The queue is empty.");
        return;
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let status = match &e.held_by {
                Some(by) if e.status == "held" => format!("held ({by})"),
                _ => e.status.clone(),
            };
            let note = match (&e.next_attempt_at, &e.last_error) {
                (Some(next), Some(err)) => format!("next {next}: {err}"),
                (Some(next), None) => format!("next {next}"),
                (None, Some(err)) => err.clone(),
                (None, None) => String::new(),
            };
            vec![
                e.id.clone(),
                status,
                e.connection.clone(),
                e.queued_at.clone(),
                e.size.to_string(),
                e.from.clone(),
                e.recipients.join(" "),
                note,
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "STATUS",
            "CONNECTION",
            "QUEUED",
            "SIZE",
            "FROM",
            "TO",
            "NEXT / LAST ERROR",
        ],
        &rows,
    );
    println!("{} message(s).", entries.len());
}
