//! Counters and histograms for `/metrics`, in the Prometheus text format.
//!
//! Queue depths are read from the store at scrape time (the store is the truth); events that
//! leave no row (an upstream latency, a token refresh) are counted here.
//!
//! Cardinality: with N connections, the series are N `postern_connection_status`, one
//! `postern_connection_waiting` per connection that has waiting mail, four
//! `postern_connection_limit` at most per connection that overrides its preset, and about 70
//! that do not grow with N (totals by status and outcome, the latency histogram, the relay,
//! the scheduler). 10,000 connections make about 10,100 series on a quiet day.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::{Connection, LIMIT_NAMES, LimitOverrides, Limits};
use crate::smtp::server::StatsSnapshot;

/// Upper bounds of the upstream latency histogram, in seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Debug, Default)]
struct Inner {
    /// outcome → count of delivery attempts (all connections: per-connection counters would
    /// be 4 series per connection).
    outcomes: Mutex<BTreeMap<String, u64>>,
    /// Upstream sessions handed out by the scheduler, and connections waiting for one.
    sessions: AtomicU64,
    waiting: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    /// Messages the retention passes deleted, and the passes run.
    retention_deleted: AtomicU64,
    retention_passes: AtomicU64,
}

/// Shared, cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Metrics(Arc<Inner>);

impl Metrics {
    pub fn delivery(&self, outcome: &str, upstream: Duration) {
        let mut map = self.0.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(outcome.to_string()).or_default() += 1;
        drop(map);
        let secs = upstream.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.0.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.0.latency_count.fetch_add(1, Ordering::Relaxed);
        self.0
            .latency_sum_micros
            .fetch_add(upstream.as_micros() as u64, Ordering::Relaxed);
    }

    /// The scheduler's state, as of its last plan.
    pub fn scheduler(&self, sessions: u32, waiting: usize) {
        self.0
            .sessions
            .store(u64::from(sessions), Ordering::Relaxed);
        self.0.waiting.store(waiting as u64, Ordering::Relaxed);
    }

    /// A retention pass finished, having deleted `deleted` messages.
    pub fn retention_pass(&self, deleted: u64) {
        self.0
            .retention_deleted
            .fetch_add(deleted, Ordering::Relaxed);
        self.0.retention_passes.fetch_add(1, Ordering::Relaxed);
    }

    /// The store's size and the retention counters.
    pub fn render_store(&self, store_bytes: u64) -> String {
        format!(
            "# HELP postern_store_bytes Bytes the store takes on disk (database pages and write-ahead log).\n\
             # TYPE postern_store_bytes gauge\npostern_store_bytes {store_bytes}\n\
             # HELP postern_retention_deleted_messages_total Finished messages deleted by retention.log_days.\n\
             # TYPE postern_retention_deleted_messages_total counter\npostern_retention_deleted_messages_total {}\n\
             # TYPE postern_retention_passes_total counter\npostern_retention_passes_total {}\n",
            self.0.retention_deleted.load(Ordering::Relaxed),
            self.0.retention_passes.load(Ordering::Relaxed),
        )
    }

    /// Renders everything; `store` is read from the store at scrape time.
    pub fn render(
        &self,
        store: &StoreGauges,
        relay: &StatsSnapshot,
        tokens: &[(&str, u64)],
    ) -> String {
        let mut out = String::new();
        out.push_str("# HELP postern_messages Messages in the store by status (all connections).\n# TYPE postern_messages gauge\n");
        for (status, n) in &store.by_status {
            let _ = writeln!(out, "postern_messages{{status=\"{}\"}} {n}", escape(status));
        }
        out.push_str("# HELP postern_connection_status 1 for each connection, labelled with its status.\n# TYPE postern_connection_status gauge\n");
        for c in &store.connections {
            let _ = writeln!(
                out,
                "postern_connection_status{{connection=\"{}\",status=\"{}\"}} 1",
                escape(&c.name),
                c.status
            );
        }
        out.push_str("# HELP postern_connection_waiting Messages waiting to be sent (queued, deferred, held), for connections that have some.\n# TYPE postern_connection_waiting gauge\n");
        for c in store.connections.iter().filter(|c| c.waiting > 0) {
            let _ = writeln!(
                out,
                "postern_connection_waiting{{connection=\"{}\"}} {}",
                escape(&c.name),
                c.waiting
            );
        }
        out.push_str("# HELP postern_provider_limit A provider preset's sending limit (0: none).\n# TYPE postern_provider_limit gauge\n");
        for (provider, limits) in &store.presets {
            for (name, v) in limit_values(limits) {
                let _ = writeln!(
                    out,
                    "postern_provider_limit{{provider=\"{provider}\",limit=\"{name}\"}} {v}"
                );
            }
        }
        out.push_str("# HELP postern_connection_limit A sending limit a connection sets instead of its provider's preset (0: none).\n# TYPE postern_connection_limit gauge\n");
        for c in &store.connections {
            for (name, v) in overridden(&c.overrides) {
                let _ = writeln!(
                    out,
                    "postern_connection_limit{{connection=\"{}\",limit=\"{name}\"}} {v}",
                    escape(&c.name)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP postern_delivery_sessions Upstream sessions open or being opened.\n# TYPE postern_delivery_sessions gauge\npostern_delivery_sessions {}",
            self.0.sessions.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP postern_delivery_connections_waiting Connections with due mail waiting for a session (delivery.max_sessions reached).\n# TYPE postern_delivery_connections_waiting gauge\npostern_delivery_connections_waiting {}",
            self.0.waiting.load(Ordering::Relaxed)
        );
        out.push_str("# HELP postern_delivery_attempts_total Delivery attempts by outcome.\n# TYPE postern_delivery_attempts_total counter\n");
        for (outcome, n) in self
            .0
            .outcomes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "postern_delivery_attempts_total{{outcome=\"{}\"}} {n}",
                escape(outcome)
            );
        }
        out.push_str("# HELP postern_upstream_seconds Time to hand one message to the provider.\n# TYPE postern_upstream_seconds histogram\n");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "postern_upstream_seconds_bucket{{le=\"{bound}\"}} {}",
                self.0.latency_buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.0.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "postern_upstream_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "postern_upstream_seconds_sum {}",
            self.0.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "postern_upstream_seconds_count {count}");
        for (name, value) in tokens {
            let _ = writeln!(out, "# TYPE postern_{name} counter\npostern_{name} {value}");
        }
        let gauges = [
            ("relay_open_sessions", "gauge", relay.open_sessions),
            ("relay_sessions_total", "counter", relay.sessions_total),
            (
                "relay_connections_refused_total",
                "counter",
                relay.connections_refused,
            ),
            ("relay_tls_failures_total", "counter", relay.tls_failures),
            (
                "relay_auth_successes_total",
                "counter",
                relay.auth_successes,
            ),
            ("relay_auth_failures_total", "counter", relay.auth_failures),
            (
                "relay_messages_accepted_total",
                "counter",
                relay.messages_accepted,
            ),
            (
                "relay_messages_failed_total",
                "counter",
                relay.messages_failed,
            ),
        ];
        for (name, kind, value) in gauges {
            let _ = writeln!(out, "# TYPE postern_{name} {kind}\npostern_{name} {value}");
        }
        out
    }
}

/// What `/metrics` reads from the store at scrape time.
#[derive(Debug, Default)]
pub struct StoreGauges {
    /// (status, messages) over all connections.
    pub by_status: Vec<(String, i64)>,
    pub connections: Vec<ConnectionGauge>,
    /// (provider, its preset limits).
    pub presets: Vec<(&'static str, Limits)>,
}

#[derive(Debug)]
pub struct ConnectionGauge {
    pub name: String,
    pub status: &'static str,
    /// Queued, deferred and held messages.
    pub waiting: i64,
    pub overrides: LimitOverrides,
}

fn limit_values(l: &Limits) -> [(&'static str, u32); 4] {
    [
        (LIMIT_NAMES[0], l.messages_per_minute),
        (LIMIT_NAMES[1], l.messages_per_day),
        (LIMIT_NAMES[2], l.recipients_per_day),
        (LIMIT_NAMES[3], l.recipients_per_message),
    ]
}

fn overridden(o: &LimitOverrides) -> Vec<(&'static str, u32)> {
    [
        (LIMIT_NAMES[0], o.messages_per_minute),
        (LIMIT_NAMES[1], o.messages_per_day),
        (LIMIT_NAMES[2], o.recipients_per_day),
        (LIMIT_NAMES[3], o.recipients_per_message),
    ]
    .into_iter()
    .filter_map(|(n, v)| Some((n, v?)))
    .collect()
}

/// The expiry timestamps (unix seconds) of each connection and of the relay's certificate, so
/// alerting rules can compute what is left (`... - time() < 7 * 86400`).
pub fn render_expiry(conns: &[Connection], relay_cert_not_after: Option<i64>) -> String {
    let mut out = String::new();
    type Family = (&'static str, &'static str, fn(&Connection) -> Option<i64>);
    let families: [Family; 4] = [
        (
            "connection_secret_expiry_timestamp_seconds",
            "When the connection's client secret expires (as entered with --secret-expires).",
            |c| {
                c.expiry
                    .secret_expires
                    .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc().timestamp())
            },
        ),
        (
            "connection_refresh_token_obtained_timestamp_seconds",
            "When the connection's current refresh token was obtained.",
            |c| c.expiry.refresh_obtained_at.map(|t| t.timestamp()),
        ),
        (
            "connection_access_token_expiry_timestamp_seconds",
            "When the connection's cached access token expires.",
            |c| c.expiry.access_expires_at.map(|t| t.timestamp()),
        ),
        (
            "connection_last_used_timestamp_seconds",
            "The last time a token was obtained for the connection.",
            |c| c.expiry.last_used_at.map(|t| t.timestamp()),
        ),
    ];
    for (name, help, value) in families {
        let _ = writeln!(
            out,
            "# HELP postern_{name} {help}\n# TYPE postern_{name} gauge"
        );
        for c in conns {
            if let Some(v) = value(c) {
                let _ = writeln!(
                    out,
                    "postern_{name}{{connection=\"{}\"}} {v}",
                    escape(c.name().as_str())
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP postern_connection_needs_reauthorization 1 when the connection needs an admin to sign in again.\n# TYPE postern_connection_needs_reauthorization gauge"
    );
    for c in conns {
        let v = u8::from(c.status.as_str() == "needs-reauthorization");
        let _ = writeln!(
            out,
            "postern_connection_needs_reauthorization{{connection=\"{}\"}} {v}",
            escape(c.name().as_str())
        );
    }
    if let Some(t) = relay_cert_not_after {
        let _ = writeln!(
            out,
            "# HELP postern_relay_certificate_expiry_timestamp_seconds When the relay's TLS certificate expires.\n# TYPE postern_relay_certificate_expiry_timestamp_seconds gauge\npostern_relay_certificate_expiry_timestamp_seconds {t}"
        );
    }
    out
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.delivery("sent", Duration::from_millis(20));
        m.delivery("sent", Duration::from_millis(300));
        m.delivery("deferred", Duration::from_secs(20));
        let store = StoreGauges {
            by_status: vec![("queued".into(), 4)],
            connections: vec![
                ConnectionGauge {
                    name: "contoso".into(),
                    status: "authorized",
                    waiting: 4,
                    overrides: LimitOverrides::parse("messages-per-minute=10").unwrap(),
                },
                ConnectionGauge {
                    name: "idle".into(),
                    status: "needs-reauthorization",
                    waiting: 0,
                    overrides: LimitOverrides::default(),
                },
            ],
            presets: vec![(
                "microsoft",
                crate::domain::Provider::Microsoft.preset().limits,
            )],
        };
        let text = m.render(
            &store,
            &StatsSnapshot::default(),
            &[("token_refreshes_total", 2)],
        );
        for line in [
            "postern_messages{status=\"queued\"} 4",
            "postern_connection_status{connection=\"contoso\",status=\"authorized\"} 1",
            "postern_connection_status{connection=\"idle\",status=\"needs-reauthorization\"} 1",
            "postern_connection_waiting{connection=\"contoso\"} 4",
            "postern_connection_limit{connection=\"contoso\",limit=\"messages-per-minute\"} 10",
            "postern_provider_limit{provider=\"microsoft\",limit=\"recipients-per-day\"} 10000",
            "postern_delivery_attempts_total{outcome=\"sent\"} 2",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(
            !text.contains("postern_connection_waiting{connection=\"idle\"}"),
            "a connection with nothing waiting adds no queue series"
        );
        assert_eq!(
            text.lines()
                .filter(|l| l.contains("connection=\"idle\""))
                .count(),
            1,
            "an idle connection costs one series"
        );
        assert!(text.contains("postern_upstream_seconds_bucket{le=\"0.025\"} 1"));
        assert!(text.contains("postern_upstream_seconds_bucket{le=\"0.5\"} 2"));
        assert!(text.contains("postern_upstream_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("postern_token_refreshes_total 2"));
    }
}
