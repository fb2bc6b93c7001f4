//! Prometheus metrics, all registered in one registry that the admin server renders.
//!
//! Every proxy metric carries a `route` label and every credential metric a `role_arn` label,
//! so several routes and roles in one sidecar stay apart.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Latency buckets in seconds: sub-millisecond for the sidecar's own work up to the default
/// 30 s request timeout.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

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
        let requests_total = IntCounterVec::new(
            Opts::new(
                "sigv4_sidecar_requests_total",
                "Requests answered, by route, method and status code.",
            ),
            &["route", "method", "code"],
        )
        .expect("static metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "sigv4_sidecar_request_duration_seconds",
                "Time from request received to response fully sent, by route and method.",
            )
            .buckets(BUCKETS.to_vec()),
            &["route", "method"],
        )
        .expect("static metric");
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "sigv4_sidecar_upstream_duration_seconds",
                "Time from request sent upstream to response headers received.",
            )
            .buckets(BUCKETS.to_vec()),
            &["route"],
        )
        .expect("static metric");
        let errors_total = IntCounterVec::new(
            Opts::new(
                "sigv4_sidecar_errors_total",
                "Answers the sidecar produced itself, by error code.",
            ),
            &["route", "error"],
        )
        .expect("static metric");
        let inflight = IntGaugeVec::new(
            Opts::new(
                "sigv4_sidecar_inflight_requests",
                "Requests being processed or streamed right now.",
            ),
            &["route"],
        )
        .expect("static metric");
        let refresh_total = IntCounterVec::new(
            Opts::new(
                "sigv4_sidecar_credentials_refresh_total",
                "Credential refresh attempts, by result.",
            ),
            &["role_arn", "result"],
        )
        .expect("static metric");
        let expiry_timestamp = GaugeVec::new(
            Opts::new(
                "sigv4_sidecar_credentials_expiry_timestamp_seconds",
                "Unix time at which the held credentials expire (0: none held).",
            ),
            &["role_arn"],
        )
        .expect("static metric");
        let upstream_auth_failures = IntCounterVec::new(
            Opts::new(
                "sigv4_sidecar_upstream_auth_failures_total",
                "Upstream 403s carrying one of AWS's signature or token errors, by reason.",
            ),
            &["route", "reason"],
        )
        .expect("static metric");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "sigv4_sidecar_build_info",
                "Always 1; the version label tells the build.",
            ),
            &["version"],
        )
        .expect("static metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        for c in [
            Box::new(requests_total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(errors_total.clone()),
            Box::new(inflight.clone()),
            Box::new(refresh_total.clone()),
            Box::new(expiry_timestamp.clone()),
            Box::new(upstream_auth_failures.clone()),
            Box::new(build_info),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        // process_* metrics (CPU, RSS, open fds), unprefixed as every exporter's are.
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process collector registers once");
        Metrics {
            registry,
            requests_total,
            request_duration,
            upstream_duration,
            errors_total,
            inflight,
            refresh_total,
            expiry_timestamp,
            upstream_auth_failures,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
