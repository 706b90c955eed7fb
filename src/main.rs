//! The `postern` binary: parse the command line, set up logging, run the command.

use clap::Parser;
use postern::cli::{Cli, run};

fn main() {
    allocator::bound_retained_memory();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        });
    runtime.block_on(start());
}

async fn start() {
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
    let control = postern::telemetry::init(settings.log.format, &level);
    // A reload changes the level only when the settings chose it.
    let follows_settings = !cli.quiet && cli.verbose == 0 && std::env::var_os("RUST_LOG").is_none();
    if let Err(e) = run(cli, settings, control.filter(|_| follows_settings)).await {
        if !matches!(e, postern::cli::CliError::Exit(_)) {
            eprintln!("error: {e}");
        }
        std::process::exit(e.exit_code());
    }
}

mod allocator {
    /// Makes glibc's malloc give large freed blocks back to the system.
    ///
    /// By default glibc raises its mmap threshold to the size of any mmapped block that is
    /// freed (up to 32 MiB), so after one argon2id check (19 MiB) or one large message, later
    /// blocks of that size come from the per-thread arenas, which keep them once freed: 64
    /// password checks at once left `serve` at 2.1 GB. A fixed threshold keeps every block of
    /// 1 MiB or more in its own mapping, returned on free; fewer arenas bound what the small
    /// allocations of many threads keep. Measured by `tests/prove/storm.rs`.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    pub fn bound_retained_memory() {
        // SAFETY: mallopt only sets malloc tunables; it runs before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
            libc::mallopt(libc::M_ARENA_MAX, 4);
        }
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub fn bound_retained_memory() {}
}
