//! The `postern` binary: parse the command line, set up logging, run the command.

use clap::Parser;
use postern::cli::{Cli, run};

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let settings = match cli.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error".to_string(),
        (false, 0) => settings.log.level.clone(),
        (false, 1) => "debug".to_string(),
        (false, _) => "trace".to_string(),
    };
    postern::telemetry::init(settings.log.format, &level);
    if let Err(e) = run(cli, settings).await {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}
