//! Prometheus text metrics: request counts and latency histograms by route and status, pool
//! state, outbox lag. Hand-rolled (a few counters need no registry crate).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), Histogram>>,
}

/// Gauges read at scrape time.
#[derive(Debug, Default)]
pub struct Gauges {
    pub pool_size: u32,
    pub pool_idle: u32,
    pub pool_max: u32,
    pub outbox_pending: i64,
    pub outbox_oldest_age_secs: f64,
    pub outbox_failing: i64,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn observe(&self, method: &str, route: &str, status: u16, secs: f64) {
        let mut m = match self.requests.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let h = m
            .entry((method.to_string(), route.to_string(), status))
            .or_default();
        h.count += 1;
        h.sum += secs;
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
    }

    pub fn render(&self, g: &Gauges) -> String {
        let snapshot = match self.requests.lock() {
            Ok(m) => m.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP http_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(out, "# TYPE http_requests_total counter");
        for ((method, route, status), h) in &snapshot {
            let _ = writeln!(
                out,
                "http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {}",
                escape(method),
                escape(route),
                h.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP http_request_duration_seconds Request latency by route and status."
        );
        let _ = writeln!(out, "# TYPE http_request_duration_seconds histogram");
        for ((method, route, status), h) in &snapshot {
            let labels = format!(
                "method=\"{}\",route=\"{}\",status=\"{status}\"",
                escape(method),
                escape(route)
            );
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "http_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "http_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        let gauges: [(&str, &str, String); 6] = [
            (
                "db_pool_connections",
                "Open database connections.",
                g.pool_size.to_string(),
            ),
            (
                "db_pool_idle_connections",
                "Idle database connections.",
                g.pool_idle.to_string(),
            ),
            (
                "db_pool_max_connections",
                "Pool size limit.",
                g.pool_max.to_string(),
            ),
            (
                "outbox_pending_events",
                "Domain events not yet dispatched.",
                g.outbox_pending.to_string(),
            ),
            (
                "outbox_lag_seconds",
                "Age of the oldest undispatched domain event.",
                g.outbox_oldest_age_secs.to_string(),
            ),
            (
                "outbox_failing_events",
                "Undispatched events whose last attempt failed.",
                g.outbox_failing.to_string(),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {v}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_cumulative_buckets() {
        let m = Metrics::default();
        m.observe("GET", "/api/v1/me", 200, 0.002);
        m.observe("GET", "/api/v1/me", 200, 0.02);
        let text = m.render(&Gauges::default());
        assert!(text
            .contains("http_requests_total{method=\"GET\",route=\"/api/v1/me\",status=\"200\"} 2"));
        assert!(text.contains("le=\"0.0025\"} 1"));
        assert!(text.contains("le=\"0.025\"} 2"));
        assert!(text.contains("outbox_lag_seconds 0"));
    }
}
