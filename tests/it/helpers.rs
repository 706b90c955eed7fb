//! Shared test helpers: a temporary Postern home and a way to run the real binary in it.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const CLIENT_ID: &str = "1b2c3d4e-0000-1111-2222-333344445555";

/// A temporary directory with its own data dir; every command runs the real binary there.
/// With `POSTERN_TEST_STORE_URL` set, its store is a fresh database on that PostgreSQL server
/// (every command gets it as `POSTERN_STORE__URL`); the key file stays in the data dir.
pub struct TestHome {
    pub dir: tempfile::TempDir,
    pub store_url: Option<String>,
}

/// A fresh database on the PostgreSQL test server, from sync code too (the tests' own runtime
/// may be running on this thread, so the work goes to a thread of its own).
pub fn fresh_store_url() -> Option<String> {
    std::env::var_os(postern::store::TEST_STORE_URL)?;
    std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(postern::store::fresh_test_database())
    })
    .join()
    .unwrap()
}

/// What a finished command printed, with its exit code.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "command failed\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl TestHome {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            store_url: fresh_store_url(),
        }
    }

    /// This home's store, opened in the test process.
    pub async fn store(&self) -> postern::store::Store {
        postern::store::Store::open_url(self.store_url.as_deref(), &self.data_dir(), None)
            .await
            .unwrap()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("postern-data")
    }

    /// A `postern` command in this home, with no key or settings from the outer environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_postern"));
        c.current_dir(self.path()).args(args).stdin(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("POSTERN_") || k == "RUST_LOG" {
                c.env_remove(k);
            }
        }
        if let Some(url) = &self.store_url {
            c.env("POSTERN_STORE__URL", url);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.cmd(args).output().expect("run postern").into()
    }

    pub fn run_with_stdin(&self, args: &[&str], input: &str) -> Run {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn postern");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().expect("wait postern").into()
    }

    /// Writes `content` to a file in the home and returns its path as a string.
    pub fn file(&self, name: &str, content: &str) -> String {
        let p = self.path().join(name);
        std::fs::write(&p, content).unwrap();
        p.display().to_string()
    }

    /// Adds a Microsoft connection `name` with the given client secret.
    pub fn add_connection(&self, name: &str, secret: &str, extra: &[&str]) -> Run {
        let secret_file = self.file(&format!("{name}.secret"), secret);
        let mut args = vec![
            "connection",
            "add",
            name,
            "--provider",
            "microsoft",
            "--user",
            "ops@contoso.com",
            "--tenant",
            "contoso.onmicrosoft.com",
            "--client-id",
            CLIENT_ID,
            "--client-secret-file",
            &secret_file,
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// Every file of the data directory, read as raw bytes.
    pub fn data_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(self.data_dir()).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() {
                all.extend(std::fs::read(&p).unwrap());
            }
        }
        // A PostgreSQL store: everything it holds, as pg_dump writes it.
        if let Some(url) = &self.store_url {
            let pg_dump = std::fs::read_dir("/usr/lib/postgresql")
                .expect("PostgreSQL's programs in /usr/lib/postgresql")
                .map(|e| e.unwrap().path().join("bin/pg_dump"))
                .find(|p| p.exists())
                .expect("pg_dump");
            let out = Command::new(pg_dump)
                .arg(format!("--dbname={url}"))
                .output()
                .expect("run pg_dump");
            assert!(
                out.status.success(),
                "pg_dump: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            all.extend(out.stdout);
        }
        all
    }
}

pub fn contains_bytes(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}
