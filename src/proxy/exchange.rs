//! One exchange in flight: metrics and the access log line, recorded exactly once, when the
//! response body ends, fails or is dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Uri};
use hyper::body::Incoming;

use super::Route;
use crate::telemetry;

/// Method label with bounded cardinality: unknown methods are counted as `other`.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// One request/response exchange in flight. Dropping it (when the response body ends, fails,
/// or the client goes away) records the metrics and writes the access log line.
pub struct Exchange {
    route: Arc<Route>,
    method: &'static str,
    /// The request URI (a cheap reference-counted copy); only its path is logged.
    uri: Uri,
    started: Instant,
    pub(super) status: u16,
    pub(super) error: Option<&'static str>,
    pub(super) upstream: Option<Duration>,
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
    pub(super) outcome: &'static str,
    /// A streamed request body: its byte count is final only when the exchange ends.
    pub(super) streamed: Option<Arc<super::upstream_body::Streamed>>,
}

impl Exchange {
    pub(super) fn start(route: Arc<Route>, req: &Request<Incoming>) -> Self {
        route.inflight.inc();
        Exchange {
            method: method_label(req.method()),
            // The query is left out of logs: it may carry things the app considers private.
            uri: req.uri().clone(),
            started: Instant::now(),
            status: 0,
            error: None,
            upstream: None,
            bytes_in: 0,
            bytes_out: 0,
            // Until the body ends, a drop means the client went away.
            outcome: "client_gone",
            streamed: None,
            route,
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let r = &self.route;
        r.inflight.dec();
        let elapsed = self.started.elapsed();
        if let Some(s) = &self.streamed {
            self.bytes_in = s.bytes();
        }
        r.counters
            .record(self.method, self.status, elapsed.as_secs_f64(), self.error);
        telemetry::access(&telemetry::AccessLine {
            route: &r.name,
            method: self.method,
            path: self.uri.path(),
            status: self.status,
            duration: elapsed,
            upstream: self.upstream,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            error: self.error,
            outcome: self.outcome,
        });
    }
}
