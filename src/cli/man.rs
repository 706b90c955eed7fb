//! `postern man DIR` (hidden): writes the manual pages, generated from the command line's own
//! definitions so they never drift from `--help`. The Debian package build calls it.

use std::path::Path;

use clap::CommandFactory as _;

use super::{Cli, CliError, CliResult};

/// Writes `postern.1` and one page per visible subcommand, nested ones included
/// (`postern-connection.1`, `postern-connection-add.1`, …) into `dir`, creating it.
pub fn write_pages(dir: &Path) -> CliResult {
    std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
    // Building the command fills in each subcommand's display name (`postern-connection`),
    // which becomes its page's name and title.
    let mut cmd = Cli::command();
    cmd.build();
    let mut written = 0;
    write_tree(&cmd, dir, &mut written)?;
    println!("wrote {written} manual pages to {}", dir.display());
    Ok(())
}

fn write_tree(cmd: &clap::Command, dir: &Path, written: &mut usize) -> CliResult {
    let name = cmd
        .get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string();
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    // Subcommands carry no version of their own; every page's footer names the release.
    clap_mangen::Man::new(cmd.clone().version(env!("CARGO_PKG_VERSION")))
        .render(&mut page)
        .map_err(|e| failed(&path, e))?;
    std::fs::write(&path, page).map_err(|e| failed(&path, e))?;
    *written += 1;
    // `help` is clap's own and hidden commands (this one) are not for users.
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        write_tree(sub, dir, written)?;
    }
    Ok(())
}

fn failed(path: &Path, e: std::io::Error) -> CliError {
    CliError::Failed(anyhow::anyhow!("cannot write {}: {e}", path.display()))
}
