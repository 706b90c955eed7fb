//! `postern doctor [NAME...] [--json] [--send-to EMAIL]`: one line per check, exit 0/1/2.

use clap::Args;

use super::output::print_json;
use super::{CliError, CliResult, Ctx};
use crate::doctor::{self, Options};
use crate::domain::EmailAddress;

#[derive(Debug, Args)]
#[command(after_help = "Exit codes: 0 every check ok, 1 a warning, 2 a failure.")]
pub struct DoctorArgs {
    /// Check only these connections (default: all).
    names: Vec<String>,
    /// Machine-readable output: {"verdict": "ok|warn|fail", "checks": [...]}.
    #[arg(long)]
    json: bool,
    /// Send a test message to this address through each connection (default: AUTH only, no mail).
    #[arg(long, value_name = "EMAIL")]
    send_to: Option<String>,
}

pub async fn run(ctx: &Ctx, args: DoctorArgs) -> CliResult {
    let send_to = args
        .send_to
        .as_deref()
        .map(|t| EmailAddress::parse(t).map_err(|e| CliError::Usage(format!("--send-to: {e}"))))
        .transpose()?;
    let opts = Options {
        connections: args.names,
        send_to,
    };
    let checks = doctor::run(&ctx.settings, &opts).await;
    let verdict = doctor::verdict(&checks);
    if args.json {
        print_json(&serde_json::json!({ "verdict": verdict, "checks": checks }))?;
    } else {
        for c in &checks {
            println!("{:<4}  {}: {}", c.level.as_str(), c.name, c.message);
            if let Some(fix) = &c.fix {
                println!("      fix: {fix}");
            }
        }
    }
    match verdict.exit_code() {
        0 => Ok(()),
        code => Err(CliError::Exit(code)),
    }
}
