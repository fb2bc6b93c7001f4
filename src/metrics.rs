//! Prometheus metrics, all registered in one registry that the admin server renders.
//!
//! Every proxy metric carries a `route` label and every credential metric a `role_arn` label,
//! so several routes and roles in one sidecar stay apart.

use std::sync::OnceLock;

use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds: sub-millisecond for the sidecar's own work up to the default
/// 30 s request timeout.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// `metric`, registered. Names, help texts and labels are fixed in the source, so a failure
/// here is a bug the unit tests catch, never an input error.
fn registered<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("static metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

/// All metrics of the process.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests_total: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub errors_total: IntCounterVec,
    pub inflight: IntGaugeVec,
    pub refresh_total: IntCounterVec,
    pub expiry_timestamp: GaugeVec,
    pub upstream_auth_failures: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            registered(&registry, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(BUCKETS.to_vec());
            registered(&registry, HistogramVec::new(opts, labels))
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            registered(&registry, IntGaugeVec::new(Opts::new(name, help), labels))
        };
        let metrics = Metrics {
            requests_total: counter(
                "sigv4_sidecar_requests_total",
                "Requests answered, by route, method and status code.",
                &["route", "method", "code"],
            ),
            request_duration: histogram(
                "sigv4_sidecar_request_duration_seconds",
                "Time from request received to response fully sent, by route and method.",
                &["route", "method"],
            ),
            upstream_duration: histogram(
                "sigv4_sidecar_upstream_duration_seconds",
                "Time from request sent upstream to response headers received.",
                &["route"],
            ),
            errors_total: counter(
                "sigv4_sidecar_errors_total",
                "Answers the sidecar produced itself, by error code.",
                &["route", "error"],
            ),
            inflight: gauge(
                "sigv4_sidecar_inflight_requests",
                "Requests being processed or streamed right now.",
                &["route"],
            ),
            refresh_total: counter(
                "sigv4_sidecar_credentials_refresh_total",
                "Credential refresh attempts, by result.",
                &["role_arn", "result"],
            ),
            expiry_timestamp: registered(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "sigv4_sidecar_credentials_expiry_timestamp_seconds",
                        "Unix time at which the held credentials expire (0: none held).",
                    ),
                    &["role_arn"],
                ),
            ),
            upstream_auth_failures: counter(
                "sigv4_sidecar_upstream_auth_failures_total",
                "Upstream 403s carrying one of AWS's signature or token errors, by reason.",
                &["route", "reason"],
            ),
            registry: registry.clone(),
        };
        gauge(
            "sigv4_sidecar_build_info",
            "Always 1; the version label tells the build.",
            &["version"],
        )
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
        // process_* metrics (CPU, RSS, open fds), unprefixed as every exporter's are.
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process collector registers once");
        metrics
    }

    /// Declares a route so its series exist (at zero) before its first request.
    pub fn init_route(&self, route: &str) {
        self.inflight.with_label_values(&[route]).set(0);
        for reason in crate::auth_failures::Reason::ALL {
            self.upstream_auth_failures
                .with_label_values(&[route, reason.label()]);
        }
    }

    /// Declares a role so its refresh counters exist (at zero) before the first attempt.
    pub fn init_role(&self, role: &str) {
        for result in ["success", "failure"] {
            self.refresh_total.with_label_values(&[role, result]);
        }
        self.expiry_timestamp.with_label_values(&[role]).set(0.0);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        let families = self.registry.gather();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&families, &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Method labels with bounded cardinality (unknown methods count as `other`).
pub const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "other",
];

/// Status labels: the common codes by themselves, the rest by class.
const CODES: [&str; 26] = [
    "200", "201", "202", "204", "206", "301", "302", "304", "400", "401", "403", "404", "405",
    "409", "413", "429", "500", "502", "503", "504", "1xx", "2xx", "3xx", "4xx", "5xx", "0",
];

/// The index of a status code's label in [`CODES`].
fn code_index(status: u16) -> usize {
    const EXACT: [u16; 20] = [
        200, 201, 202, 204, 206, 301, 302, 304, 400, 401, 403, 404, 405, 409, 413, 429, 500, 502,
        503, 504,
    ];
    EXACT
        .iter()
        .position(|c| *c == status)
        .unwrap_or(match status / 100 {
            1 => 20,
            2 => 21,
            3 => 22,
            4 => 23,
            5 => 24,
            _ => 25,
        })
}

/// The status label of `status`.
#[cfg(test)]
fn code_label(status: u16) -> &'static str {
    CODES[code_index(status)]
}

/// One route's per-request series, resolved once: a label lookup (hashing the label values
/// under the metric's lock) per request and metric is what this avoids. A series is created
/// on its first use, not at start, so the exposition only lists method/status pairs that
/// happened, as before.
pub struct RouteMetrics {
    route: Box<str>,
    metrics: Metrics,
    /// `requests_total`, by method index then status index.
    requests: Box<[OnceLock<IntCounter>]>,
    /// `request_duration_seconds`, by method index.
    durations: [OnceLock<Histogram>; METHODS.len()],
}

impl RouteMetrics {
    pub fn new(metrics: &Metrics, route: &str) -> Self {
        RouteMetrics {
            route: route.into(),
            metrics: metrics.clone(),
            requests: (0..METHODS.len() * CODES.len())
                .map(|_| OnceLock::new())
                .collect(),
            durations: Default::default(),
        }
    }

    /// Counts one answered request: `method` is one of [`METHODS`] (anything else counts as
    /// `other`), `error` the sidecar's error code if it answered itself.
    pub fn record(&self, method: &str, status: u16, seconds: f64, error: Option<&str>) {
        let m = METHODS
            .iter()
            .position(|l| *l == method)
            .unwrap_or(METHODS.len() - 1);
        let c = code_index(status);
        self.requests[m * CODES.len() + c]
            .get_or_init(|| {
                self.metrics
                    .requests_total
                    .with_label_values(&[&self.route, METHODS[m], CODES[c]])
            })
            .inc();
        self.durations[m]
            .get_or_init(|| {
                self.metrics
                    .request_duration
                    .with_label_values(&[&self.route, METHODS[m]])
            })
            .observe(seconds);
        if let Some(e) = error {
            // Rare (the sidecar's own answers), so looked up when it happens.
            self.metrics
                .errors_total
                .with_label_values(&[&self.route, e])
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_metrics_count_into_the_labelled_series() {
        let m = Metrics::new();
        let r = RouteMetrics::new(&m, "api");
        r.record("GET", 200, 0.01, None);
        r.record("GET", 200, 0.01, None);
        r.record("BREW", 418, 0.01, Some("bad_request"));
        assert_eq!(
            m.requests_total
                .with_label_values(&["api", "GET", "200"])
                .get(),
            2
        );
        assert_eq!(
            m.requests_total
                .with_label_values(&["api", "other", "4xx"])
                .get(),
            1
        );
        assert_eq!(
            m.request_duration
                .with_label_values(&["api", "GET"])
                .get_sample_count(),
            2
        );
        assert_eq!(
            m.errors_total
                .with_label_values(&["api", "bad_request"])
                .get(),
            1
        );
        let text = String::from_utf8(m.render()).expect("utf8");
        assert!(
            !text.contains("code=\"201\""),
            "unused series are not created"
        );
    }

    #[test]
    fn status_labels() {
        assert_eq!(code_label(200), "200");
        assert_eq!(code_label(418), "4xx");
        assert_eq!(code_label(0), "0");
        assert_eq!(code_label(999), "0");
    }

    #[test]
    fn renders_every_spec_metric() {
        let m = Metrics::new();
        m.init_route("default");
        m.init_role("arn:aws:iam::111111111111:role/r");
        m.requests_total
            .with_label_values(&["default", "GET", "200"])
            .inc();
        m.request_duration
            .with_label_values(&["default", "GET"])
            .observe(0.01);
        m.upstream_duration
            .with_label_values(&["default"])
            .observe(0.01);
        m.errors_total
            .with_label_values(&["default", "upstream_timeout"])
            .inc();
        let text = String::from_utf8(m.render()).expect("utf8");
        for name in [
            "sigv4_sidecar_requests_total{",
            "sigv4_sidecar_request_duration_seconds_bucket{",
            "sigv4_sidecar_upstream_duration_seconds_bucket{",
            "sigv4_sidecar_errors_total{",
            "sigv4_sidecar_inflight_requests{route=\"default\"} 0",
            "sigv4_sidecar_credentials_refresh_total{",
            "sigv4_sidecar_credentials_expiry_timestamp_seconds{",
            "sigv4_sidecar_build_info{version=",
            "sigv4_sidecar_upstream_auth_failures_total{reason=\"signature_mismatch\",route=\"default\"} 0",
            "process_resident_memory_bytes",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
