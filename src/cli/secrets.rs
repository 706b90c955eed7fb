//! `postern secrets rotate-key`.

use std::path::PathBuf;

use clap::Subcommand;

use super::{CliResult, Ctx};

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Re-seal every stored secret under a new key and replace the key file.
    RotateKey {
        /// Where to write the new key (required when the key comes from POSTERN_SECRET_KEY).
        #[arg(long, value_name = "FILE")]
        new_key_file: Option<PathBuf>,
    },
}

pub async fn run(ctx: &Ctx, cmd: SecretsCommand) -> CliResult {
    match cmd {
        SecretsCommand::RotateKey { new_key_file } => {
            let mut store = ctx.store().await?;
            let r = store.rotate_key(new_key_file.as_deref()).await?;
            println!(
                "re-sealed {} secret(s): key {} replaced by {} in {}.",
                r.resealed,
                r.old_key_id,
                r.new_key_id,
                r.key_file.display()
            );
            if matches!(store.key_source(), crate::store::KeySource::Env) {
                println!(
                    "Put the new key in POSTERN_SECRET_KEY before the next start (the old one no longer opens the secrets)."
                );
            }
            Ok(())
        }
    }
}
