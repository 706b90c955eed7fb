//! `postern reload`: asks the running `serve` of this data directory to re-read its settings
//! (SIGHUP). `serve` writes its PID to `<data_dir>/serve.pid` while it runs.

use std::path::{Path, PathBuf};

use super::{CliError, CliResult, Ctx};
use crate::store::backup::lock_for_restore;

pub const PID_FILE: &str = "serve.pid";

/// `serve.pid` while this process serves; removed when dropped if it still names us.
#[derive(Debug)]
pub struct PidFile(PathBuf);

impl PidFile {
    pub fn write(data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join(PID_FILE);
        // Through a rename, so that `reload` never reads half a number.
        let tmp = data_dir.join(format!("{PID_FILE}.{}", std::process::id()));
        std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
        std::fs::rename(&tmp, &path)?;
        Ok(Self(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if read_pid(&self.0).ok() == Some(std::process::id() as i32) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn read_pid(path: &Path) -> std::io::Result<i32> {
    std::fs::read_to_string(path)?
        .trim()
        .parse()
        .map_err(std::io::Error::other)
}

fn no_serve(data_dir: &Path, why: &str) -> CliError {
    CliError::Failed(anyhow::anyhow!(
        "no running `postern serve` uses {} ({why}): start it, or give this command the \
         --config or --data-dir of the one you mean",
        data_dir.display()
    ))
}

pub fn run(ctx: &Ctx) -> CliResult {
    let data_dir = &ctx.settings.store.data_dir;
    let pid = match read_pid(&data_dir.join(PID_FILE)) {
        Ok(pid) if pid > 1 => pid,
        Ok(_) => return Err(no_serve(data_dir, "serve.pid holds no usable PID")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(no_serve(data_dir, "no serve.pid"));
        }
        Err(e) => return Err(no_serve(data_dir, &format!("serve.pid: {e}"))),
    };
    // A serve holds the shared lock while it runs: if the exclusive one can be taken, the PID
    // file is stale (a crash) and the PID may belong to another program now. The probe is
    // released at once.
    if lock_for_restore(data_dir)
        .map_err(|e| CliError::Failed(anyhow::anyhow!("data directory lock: {e}")))?
        .is_some()
    {
        return Err(no_serve(
            data_dir,
            &format!("serve.pid names process {pid}, which no longer serves it"),
        ));
    }
    let target =
        rustix::process::Pid::from_raw(pid).ok_or_else(|| no_serve(data_dir, "bad PID"))?;
    rustix::process::kill_process(target, rustix::process::Signal::HUP).map_err(|e| {
        CliError::Failed(anyhow::anyhow!(
            "cannot signal serve (process {pid}): {e}; run reload as the user serve runs as"
        ))
    })?;
    println!(
        "asked serve (process {pid}) to reload its settings; its log says what changed, or why nothing did."
    );
    Ok(())
}
