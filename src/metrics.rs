//! Counters and histograms for `/metrics`, in the Prometheus text format.
//!
//! Queue depths are read from the store at scrape time (the store is the truth); events that
//! leave no row (an upstream latency, a token refresh) are counted here.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::smtp::server::StatsSnapshot;

/// Upper bounds of the upstream latency histogram, in seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Debug, Default)]
struct Inner {
    /// (connection, outcome) → count of delivery attempts.
    outcomes: Mutex<BTreeMap<(String, String), u64>>,
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
    pub fn delivery(&self, connection: &str, outcome: &str, upstream: Duration) {
        let mut map = self.0.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((connection.to_string(), outcome.to_string()))
            .or_default() += 1;
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

    /// Renders everything; `queue` is (connection, status, count) from the store.
    pub fn render(
        &self,
        queue: &[(String, String, i64)],
        relay: &StatsSnapshot,
        tokens: &[(&str, u64)],
    ) -> String {
        let mut out = String::new();
        out.push_str("# HELP postern_messages Messages in the store by connection and status.\n# TYPE postern_messages gauge\n");
        for (conn, status, n) in queue {
            let _ = writeln!(
                out,
                "postern_messages{{connection=\"{}\",status=\"{}\"}} {n}",
                escape(conn),
                escape(status)
            );
        }
        out.push_str("# HELP postern_delivery_attempts_total Delivery attempts by connection and outcome.\n# TYPE postern_delivery_attempts_total counter\n");
        for ((conn, outcome), n) in self
            .0
            .outcomes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "postern_delivery_attempts_total{{connection=\"{}\",outcome=\"{}\"}} {n}",
                escape(conn),
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

fn escape(s: &str) -> String {
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
        m.delivery("contoso", "sent", Duration::from_millis(20));
        m.delivery("contoso", "sent", Duration::from_millis(300));
        m.delivery("contoso", "deferred", Duration::from_secs(20));
        let text = m.render(
            &[("contoso".into(), "queued".into(), 4)],
            &StatsSnapshot::default(),
            &[("token_refreshes_total", 2)],
        );
        assert!(text.contains("postern_messages{connection=\"contoso\",status=\"queued\"} 4"));
        assert!(text.contains(
            "postern_delivery_attempts_total{connection=\"contoso\",outcome=\"sent\"} 2"
        ));
        assert!(text.contains("postern_upstream_seconds_bucket{le=\"0.025\"} 1"));
        assert!(text.contains("postern_upstream_seconds_bucket{le=\"0.5\"} 2"));
        assert!(text.contains("postern_upstream_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("postern_token_refreshes_total 2"));
    }
}
