//! Mail in through the HTTP API (one send key for every connection), and the arrival times the
//! fake SMTP reports through its hook, matched by Subject.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_provider::FakeSmtp;

/// `POST /api/v1/messages` as a client application does it.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Api {
    pub fn new(addr: SocketAddr, key: String) -> Self {
        Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("HTTP client"),
            url: format!("http://{addr}/api/v1/messages"),
            key,
        }
    }

    /// Queues a short text message through `connection`; Err with the answer when refused.
    pub async fn send(&self, connection: &str, subject: &str) -> Result<(), String> {
        let body = serde_json::json!({
            "connection": connection,
            "to": ["someone@example.org"],
            "subject": subject,
            "text": "A message from the connections benchmark.\r\n",
        });
        let answer = self
            .http
            .post(&self.url)
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if answer.status().is_success() {
            Ok(())
        } else {
            let status = answer.status();
            Err(format!(
                "{status}: {}",
                answer.text().await.unwrap_or_default()
            ))
        }
    }
}

/// What arrived at the fake SMTP: per Subject starting with `bench ` its arrival time, and per
/// mailbox the count and the last arrival.
#[derive(Default)]
pub struct Arrivals {
    by_subject: HashMap<String, Instant>,
    per_user: HashMap<String, (u64, Instant)>,
}

pub type Shared = Arc<Mutex<Arrivals>>;

fn subject(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&data[..data.len().min(4096)]);
    let found = text
        .lines()
        .take_while(|l| !l.is_empty())
        .find(|l| l.len() > 8 && l[..8].eq_ignore_ascii_case("subject:"))
        .map(|l| l[8..].trim().to_string());
    if found.is_none() && std::env::var_os("CONNECTIONS_BENCH_DEBUG").is_some() {
        eprintln!("no Subject in: {:?}", &text[..text.len().min(600)]);
    }
    found
}

/// Installs the hook on `smtp`; the returned record fills as mail arrives.
pub fn track(smtp: &FakeSmtp) -> Shared {
    let shared: Shared = Arc::default();
    let record = shared.clone();
    smtp.on_arrival(move |m| {
        let now = Instant::now();
        let s = subject(&m.data).filter(|s| s.starts_with("bench "));
        let mut a = record.lock().unwrap();
        if let Some(s) = s {
            a.by_subject.insert(s, now);
        }
        let user = m.auth_user.clone().unwrap_or_default().to_ascii_lowercase();
        let e = a.per_user.entry(user).or_insert((0, now));
        *e = (e.0 + 1, now);
    });
    shared
}

impl Arrivals {
    pub fn at(&self, subject: &str) -> Option<Instant> {
        self.by_subject.get(subject).copied()
    }

    /// Messages from `user` so far and when the last one came.
    pub fn of(&self, user: &str) -> (u64, Option<Instant>) {
        self.per_user
            .get(&user.to_ascii_lowercase())
            .map_or((0, None), |&(n, t)| (n, Some(t)))
    }

    /// Every arrival time of Subjects starting with `prefix`, sorted.
    pub fn times(&self, prefix: &str) -> Vec<Instant> {
        let mut t: Vec<Instant> = self
            .by_subject
            .iter()
            .filter(|(s, _)| s.starts_with(prefix))
            .map(|(_, &t)| t)
            .collect();
        t.sort_unstable();
        t
    }
}

/// Waits until `done` says so or `limit` passed; returns whether it did.
pub async fn wait_until(
    arrivals: &Shared,
    limit: Duration,
    done: impl Fn(&Arrivals) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done(&arrivals.lock().unwrap()) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}
