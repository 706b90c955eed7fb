//! Counters and histograms for `/metrics`, in the Prometheus text format.
//!
//! Queue depths are read from the store at scrape time (the store is the truth); events that
//! leave no row (an upstream latency, a token refresh) are counted here.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::Connection;
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
