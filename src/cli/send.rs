//! `postern send`: one message through a connection, now, recorded in the sent-mail log.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Args;

use super::output::print_json;
use super::{CliError, CliResult, Ctx};
use crate::domain::{Connection, EmailAddress};
use crate::oauth::TokenManager;
use crate::outbox::direct::compose::{self, Attachment, Draft};
use crate::outbox::direct::{self, Outgoing, SendOutcome};
use crate::store::messages::Source;

pub(super) const SENT_MEANS: &str =
    "`sent` means the provider accepted the message; delivery to the final mailbox is not tracked.";

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  postern send --connection contoso --to a@example.org --subject Hello --text 'Hi there'
  postern send --connection contoso --to a@example.org,b@example.org --subject Report \\
      --html '<p>Attached.</p>' --attach report.pdf
  postern send --connection contoso --eml message.eml       # envelope from its headers
  cat message.eml | postern send --connection contoso --to a@example.org -

Each recipient's line shows the provider's reply (with its queue id). The exit code is 1 if any
recipient failed. `sent` means the provider accepted the message; delivery to the final mailbox
is not tracked.")]
pub struct SendArgs {
    /// The connection to send through.
    #[arg(long, value_name = "NAME")]
    pub connection: String,
    /// Envelope and header sender (default: the connection's mailbox; another address needs the
    /// mailbox to have the SendAs right on it).
    #[arg(long, value_name = "EMAIL")]
    pub from: Option<String>,
    /// Recipients (repeat the flag or separate with commas).
    #[arg(long, value_name = "EMAIL", value_delimiter = ',')]
    pub to: Vec<String>,
    #[arg(long, value_name = "EMAIL", value_delimiter = ',')]
    pub cc: Vec<String>,
    /// Recipients that get the message without appearing in it.
    #[arg(long, value_name = "EMAIL", value_delimiter = ',')]
    pub bcc: Vec<String>,
    #[arg(long)]
    pub subject: Option<String>,
    /// Plain-text body.
    #[arg(long, value_name = "TEXT")]
    pub text: Option<String>,
    /// HTML body (with --text: both, as alternatives).
    #[arg(long, value_name = "HTML")]
    pub html: Option<String>,
    /// Attach a file (repeatable).
    #[arg(long, value_name = "FILE")]
    pub attach: Vec<PathBuf>,
    /// Send this ready RFC 5322 message as it is (`-` reads standard input); without --to/--cc/--bcc
    /// the recipients come from its To, Cc and Bcc headers. A Bcc header is removed before sending.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["subject", "text", "html", "attach"])]
    pub eml: Option<PathBuf>,
    /// `-`: read a ready message from standard input (same as `--eml -`).
    #[arg(value_name = "-", conflicts_with_all = ["eml", "subject", "text", "html", "attach"])]
    pub stdin: Option<String>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

fn usage(msg: impl Into<String>) -> CliError {
    CliError::Usage(msg.into())
}

fn addresses(flag: &str, values: &[String]) -> Result<Vec<EmailAddress>, CliError> {
    values
        .iter()
        .filter(|v| !v.trim().is_empty())
        .map(|v| EmailAddress::parse(v).map_err(|e| usage(format!("{flag}: {e}"))))
        .collect()
}

fn read_message(path: &Path) -> Result<Vec<u8>, CliError> {
    let mut bytes = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .map_err(|e| usage(format!("cannot read the message from standard input: {e}")))?;
    } else {
        bytes = std::fs::read(path)
            .map_err(|e| usage(format!("cannot read the message {}: {e}", path.display())))?;
    }
    Ok(bytes)
}

/// The message and its envelope, from the flags.
fn outgoing(args: &SendArgs, conn: &Connection) -> Result<Outgoing, CliError> {
    let from = args
        .from
        .as_deref()
        .map(|f| EmailAddress::parse(f).map_err(|e| usage(format!("--from: {e}"))))
        .transpose()?;
    let (to, cc, bcc) = (
        addresses("--to", &args.to)?,
        addresses("--cc", &args.cc)?,
        addresses("--bcc", &args.bcc)?,
    );
    let raw_path = match (&args.eml, args.stdin.as_deref()) {
        (Some(p), _) => Some(p.clone()),
        (None, Some("-")) => Some(PathBuf::from("-")),
        (None, Some(other)) => {
            return Err(usage(format!(
                "unexpected argument `{other}`: use `-` to read a message from standard input"
            )));
        }
        (None, None) => None,
    };
    if let Some(path) = raw_path {
        let raw = read_message(&path)?;
        let headers = compose::header_addresses(&raw).map_err(|e| usage(e.to_string()))?;
        let recipients = if to.is_empty() && cc.is_empty() && bcc.is_empty() {
            headers.recipients()
        } else {
            [to, cc, bcc].concat()
        };
        if recipients.is_empty() {
            return Err(usage(
                "no recipient: give --to, or To/Cc/Bcc headers in the message",
            ));
        }
        return Ok(Outgoing {
            from: from
                .or(headers.from)
                .unwrap_or_else(|| conn.settings.user.clone()),
            recipients,
            bytes: compose::strip_bcc(&raw).into_owned(),
            source: Source::Cli,
            submitter: None,
        });
    }

    let subject = args.subject.clone().ok_or_else(|| {
        usage("--subject is required (or send a ready message with --eml FILE or -)")
    })?;
    let mut attachments = Vec::with_capacity(args.attach.len());
    for path in &args.attach {
        let data =
            std::fs::read(path).map_err(|e| usage(format!("--attach {}: {e}", path.display())))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "attachment".into());
        attachments.push(Attachment::new(name, data));
    }
    let from_is_mailbox = from.as_ref().is_none_or(|f| f == &conn.settings.user);
    let draft = Draft {
        from: from.unwrap_or_else(|| conn.settings.user.clone()),
        // The display name belongs to the mailbox, not to another address sent as.
        from_name: conn
            .settings
            .display_name
            .clone()
            .filter(|_| from_is_mailbox),
        to,
        cc,
        bcc,
        subject,
        text: args.text.clone(),
        html: args.html.clone(),
        attachments,
    };
    Ok(draft.compose().map_err(|e| usage(e.to_string()))?.into())
}

pub async fn run(ctx: &Ctx, args: SendArgs) -> CliResult {
    let store = ctx.store().await?;
    let conn = store.connection(&args.connection).await?;
    let message = outgoing(&args, &conn)?;
    if !message
        .from
        .as_str()
        .eq_ignore_ascii_case(conn.settings.user.as_str())
    {
        eprintln!(
            "note: sending as {} through the mailbox {}: the mailbox needs the SendAs right on that address.",
            message.from, conn.settings.user
        );
    }
    let tokens = TokenManager::new(store.clone(), ctx.settings.tokens.clone())
        .map_err(|e| CliError::Failed(e.into()))?;
    let outcome = direct::send_now(&store, &tokens, &ctx.settings.delivery, &conn, message)
        .await
        .map_err(|e| CliError::Failed(e.into()))?;
    if args.json {
        print_json(&outcome)?;
    } else {
        print_outcome(&outcome);
    }
    verdict(&outcome)
}

fn print_outcome(o: &SendOutcome) {
    let width = o
        .recipients
        .iter()
        .map(|r| r.address.chars().count())
        .max()
        .unwrap_or(0);
    for r in &o.recipients {
        // When the whole attempt failed, each recipient's stored reply is that failure: say it once.
        let reply = match (&o.failure, r.reply.as_deref()) {
            (Some(_), _) => "not sent (see below)",
            (None, Some(reply)) => reply,
            (None, None) => "-",
        };
        println!("{:<7} {:<width$}  {reply}", r.status, r.address);
    }
    if let Some(f) = &o.failure {
        println!("failed at {}: {}", f.stage, f.error);
        if let Some(cause) = &f.likely_cause {
            println!("likely cause: {cause}");
        }
        if f.transient {
            println!(
                "This looks temporary: nothing retries a direct send, so run the command again later."
            );
        }
    }
    println!(
        "Recorded as message {} (postern messages show {}).",
        o.id, o.id
    );
    println!("{SENT_MEANS}");
}

/// Exit 1 unless every recipient was accepted.
fn verdict(o: &SendOutcome) -> CliResult {
    if o.all_sent() {
        return Ok(());
    }
    let failed = o.recipients.iter().filter(|r| r.status != "sent").count();
    Err(CliError::Failed(anyhow::anyhow!(
        "{failed} of {} recipient(s) did not get the message",
        o.recipients.len()
    )))
}
