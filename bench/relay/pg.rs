//! The PostgreSQL server for `--store postgres`: a private cluster started with
//! `scripts/pg-cluster.sh` (stopped when dropped, also after a panic) or the one at
//! `POSTERN_BENCH_STORE_URL`; a fresh database per measurement; the server's CPU time.

use std::process::Command;
use std::time::Duration;

use sqlx::Connection;

use crate::postern::process_cpu;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg-cluster.sh");

pub struct Server {
    /// Where to connect to create databases (any database the user may connect to).
    url: url::Url,
    /// The private cluster's directory, stopped and removed on drop.
    private: Option<tempfile::TempDir>,
    next: usize,
}

impl Server {
    /// `POSTERN_BENCH_STORE_URL`, else a private cluster; `Err` says why there is none.
    pub fn open() -> Result<Self, String> {
        if let Ok(url) = std::env::var("POSTERN_BENCH_STORE_URL")
            && !url.trim().is_empty()
        {
            let url = url::Url::parse(url.trim())
                .map_err(|e| format!("POSTERN_BENCH_STORE_URL is not a URL: {e}"))?;
            return Ok(Server {
                url,
                private: None,
                next: 0,
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("postern-bench-pg")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let out = Command::new(SCRIPT)
            .arg("start")
            .arg(dir.path())
            .output()
            .map_err(|e| format!("{SCRIPT}: {e}"))?;
        if !out.status.success() {
            // Stop whatever half started (nothing, when PostgreSQL is not installed).
            let _ = Command::new(SCRIPT).arg("stop").arg(dir.path()).output();
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let url = url::Url::parse(&url).map_err(|e| format!("{SCRIPT} printed `{url}`: {e}"))?;
        Ok(Server {
            url,
            private: Some(dir),
            next: 0,
        })
    }

    pub fn describe(&self) -> String {
        match &self.private {
            Some(d) => format!(
                "private cluster in {} (scripts/pg-cluster.sh)",
                d.path().display()
            ),
            None => "POSTERN_BENCH_STORE_URL".into(),
        }
    }

    /// A new empty database; its URL.
    pub async fn fresh_database(&mut self) -> String {
        self.next += 1;
        let name = format!("postern_bench_{}_{}", std::process::id(), self.next);
        let mut admin = self.connect().await;
        // The name is ours (digits and underscores), never input.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = admin.close().await;
        let mut url = self.url.clone();
        url.set_path(&format!("/{name}"));
        url.to_string()
    }

    /// Drops a database made by [`Server::fresh_database`] (its instances have stopped).
    pub async fn drop_database(&self, url: &str) {
        let Some(name) = url::Url::parse(url)
            .ok()
            .map(|u| u.path().trim_start_matches('/').to_string())
        else {
            return;
        };
        let mut admin = self.connect().await;
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await
        {
            eprintln!("warning: DROP DATABASE {name}: {e}");
        }
        let _ = admin.close().await;
    }

    async fn connect(&self) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(self.url.as_str())
            .await
            .unwrap_or_else(|e| panic!("connect to PostgreSQL ({}): {e}", self.describe()))
    }

    /// The postmaster's process id, when the server runs on this machine (found through a
    /// backend's parent); `None` for a server elsewhere.
    pub async fn postmaster(&self) -> Option<u32> {
        let mut admin = self.connect().await;
        let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut admin)
            .await
            .ok()?;
        let parent = stat_fields(backend as u32).get(1).copied()? as u32;
        let _ = admin.close().await;
        let comm = std::fs::read_to_string(format!("/proc/{parent}/comm")).ok()?;
        (comm.trim() == "postgres").then_some(parent)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(dir) = &self.private {
            let out = Command::new(SCRIPT).arg("stop").arg(dir.path()).output();
            if !out.is_ok_and(|o| o.status.success()) {
                eprintln!(
                    "warning: could not stop the private PostgreSQL cluster in {}",
                    dir.path().display()
                );
            }
        }
    }
}

/// The fields of /proc/PID/stat after `(comm)` (state is 0, ppid 1, utime 11, cutime 13).
fn stat_fields(pid: u32) -> Vec<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect()
}

/// CPU time of the whole server: the postmaster, its live children (backends, checkpointer,
/// WAL writer, autovacuum…) and the children it has reaped (cutime + cstime).
pub fn server_cpu(postmaster: u32) -> Duration {
    let f = stat_fields(postmaster);
    let ticks = |i: usize| f.get(i).copied().unwrap_or(0);
    let mut total = ticks(11) + ticks(12) + ticks(13) + ticks(14);
    for pid in children(postmaster) {
        let (u, s) = process_cpu(pid);
        total += ((u + s).as_millis() / 10) as u64;
    }
    Duration::from_millis(total * 10)
}

fn children(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat_fields(*pid).get(1).copied() == Some(parent as u64))
        .collect()
}
