//! Prometheus metrics: one registry with every `warbler_` family, handles the components
//! update, and the text exposition for `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabel {
    pub app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    pub transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Every metric of the process. Cheap to share (`Arc<Metrics>`); updates are atomic.
pub struct Metrics {
    registry: Registry,
    pub connections: Family<TransportLabel, Gauge>,
    pub pushes_accepted: Family<AppLabel, Counter>,
    pub delivered: Family<AppLabel, Counter>,
    pub acked: Family<AppLabel, Counter>,
    pub opened: Family<AppLabel, Counter>,
    pub expired: Family<AppLabel, Counter>,
    pub commit_seconds: Histogram,
    pub checkpoint_seconds: Histogram,
    pub commit_batch_size: Histogram,
    /// Journal records written, and those fdatasynced before their batch was answered.
    pub journal_records: Counter,
    pub journal_syncs: Counter,
    pub writer_queue_depth: Gauge,
    /// Live sessions that fell behind: their outbox was full, so they read the store.
    pub session_outbox_overflows: Counter,
    pub config_reloads: Family<ResultLabel, Counter>,
    pub rate_limited: Family<AppLabel, Counter>,
    pub tls_handshake_failures: Counter,
    pub tls_reloads: Family<ResultLabel, Counter>,
    /// 1 while the port serves TLS, 0 in `tls.mode = "off"` (plain HTTP).
    pub tls_enabled: Gauge,
    /// Bootstrapped server certificates re-issued, by reason.
    pub tls_renewals: Family<ReasonLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("warbler");
        let m = Self {
            connections: Family::default(),
            pushes_accepted: Family::default(),
            delivered: Family::default(),
            acked: Family::default(),
            opened: Family::default(),
            expired: Family::default(),
            commit_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            checkpoint_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            commit_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            journal_records: Counter::default(),
            journal_syncs: Counter::default(),
            writer_queue_depth: Gauge::default(),
            session_outbox_overflows: Counter::default(),
            config_reloads: Family::default(),
            rate_limited: Family::default(),
            tls_handshake_failures: Counter::default(),
            tls_reloads: Family::default(),
            tls_enabled: Gauge::default(),
            tls_renewals: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Live device sessions by transport",
            m.connections.clone(),
        );
        registry.register(
            "pushes_accepted",
            "Pushes accepted (stored or sent live) by app",
            m.pushes_accepted.clone(),
        );
        registry.register(
            "delivered",
            "Message copies delivered to devices by app",
            m.delivered.clone(),
        );
        registry.register(
            "acked",
            "Message copies acknowledged by devices by app",
            m.acked.clone(),
        );
        registry.register(
            "opened",
            "Messages reported opened by app",
            m.opened.clone(),
        );
        registry.register(
            "expired",
            "Message copies expired or dropped undelivered by app",
            m.expired.clone(),
        );
        registry.register(
            "store_commit_seconds",
            "Duration of store commits (fsync of the journal or the database included)",
            m.commit_seconds.clone(),
        );
        registry.register(
            "store_checkpoint_seconds",
            "Duration of store checkpoints: durable database commits that empty the journal",
            m.checkpoint_seconds.clone(),
        );
        registry.register(
            "store_commit_batch_size",
            "Requests per store commit",
            m.commit_batch_size.clone(),
        );
        registry.register(
            "store_journal_records",
            "Store journal records written (one per group commit)",
            m.journal_records.clone(),
        );
        registry.register(
            "store_journal_syncs",
            "Store journal records fdatasynced before their requests were answered (the rest held only acks and delivery marks, and reached the disk with the next)",
            m.journal_syncs.clone(),
        );
        registry.register(
            "store_queue_depth",
            "Requests waiting for the store writer",
            m.writer_queue_depth.clone(),
        );
        registry.register(
            "session_outbox_overflows",
            "Times a live session's outbox (gateway.outbox_capacity) was full, so that the session read the store to catch up",
            m.session_outbox_overflows.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads by result",
            m.config_reloads.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit by app",
            m.rate_limited.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            m.tls_handshake_failures.clone(),
        );
        registry.register(
            "tls_reloads",
            "Certificate file changes by result (files mode)",
            m.tls_reloads.clone(),
        );
        registry.register(
            "tls_enabled",
            "1 when the port serves TLS, 0 when tls.mode = \"off\" (plain HTTP)",
            m.tls_enabled.clone(),
        );
        registry.register(
            "tls_renewals",
            "Bootstrapped server certificates re-issued, by reason (expiry, hostnames)",
            m.tls_renewals.clone(),
        );
        Self { registry, ..m }
    }

    /// The Prometheus text exposition of every family.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counter of one app.
    #[must_use]
    pub fn app(family: &Family<AppLabel, Counter>, app: &str) -> Counter {
        family
            .get_or_create(&AppLabel {
                app: app.to_owned(),
            })
            .clone()
    }
}

/// Counts a live session while it exists.
pub struct ConnectionGuard {
    gauge: Gauge,
}

impl ConnectionGuard {
    #[must_use]
    pub fn new(metrics: &Metrics, transport: &'static str) -> Self {
        let gauge = metrics
            .connections
            .get_or_create(&TransportLabel { transport })
            .clone();
        gauge.inc();
        Self { gauge }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_the_warbler_prefix_and_move() {
        let m = Metrics::new();
        Metrics::app(&m.pushes_accepted, "demo").inc_by(3);
        let guard = ConnectionGuard::new(&m, "websocket");
        m.commit_seconds.observe(0.002);
        let text = m.render();
        assert!(
            text.contains("warbler_pushes_accepted_total{app=\"demo\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("warbler_connections{transport=\"websocket\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("warbler_store_commit_seconds_count 1"),
            "{text}"
        );
        drop(guard);
        assert!(m
            .render()
            .contains("warbler_connections{transport=\"websocket\"} 0"));
    }

    #[test]
    fn shipped_alerts_and_dashboard_use_only_metrics_that_exist() {
        let m = Metrics::new();
        for family in [
            &m.pushes_accepted,
            &m.delivered,
            &m.acked,
            &m.opened,
            &m.expired,
            &m.rate_limited,
        ] {
            Metrics::app(family, "x").inc();
        }
        m.config_reloads
            .get_or_create(&ResultLabel { result: "error" })
            .inc();
        m.tls_renewals
            .get_or_create(&ReasonLabel { reason: "error" })
            .inc();
        let _guard = ConnectionGuard::new(&m, "sse");
        let text = m.render();
        for (file, body) in [
            (
                "alerts.yml",
                include_str!("../packaging/prometheus/alerts.yml"),
            ),
            (
                "warbler-dashboard.json",
                include_str!("../packaging/grafana/warbler-dashboard.json"),
            ),
        ] {
            let mut rest = body;
            while let Some(i) = rest.find("warbler_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                let exported = text.lines().any(|l| {
                    l.strip_prefix(name.as_str())
                        .is_some_and(|after| after.starts_with('{') || after.starts_with(' '))
                });
                assert!(
                    exported,
                    "{file} uses {name}, which /metrics does not export"
                );
            }
        }
    }
}
