//! The admin listener: `/healthz`, `/readyz`, `/metrics`, and nothing that signs.
//!
//! Kept apart from the data path (its own port, its own accept loop) so that scraping metrics
//! or probing health never competes with, or reaches, the signing proxy.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::metrics::Metrics;
use crate::proxy::{ProxyBody, Route};

/// Process-wide readiness flags, set by the server as it starts and stops.
#[derive(Default)]
pub struct Readiness {
    listening: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::Release);
    }
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

/// What the admin handlers read.
pub struct Admin {
    pub routes: Vec<Arc<Route>>,
    pub metrics: Metrics,
    pub readiness: Arc<Readiness>,
}

impl Admin {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<ProxyBody> {
        let get = req.method() == Method::GET || req.method() == Method::HEAD;
        match (get, req.uri().path()) {
            (true, "/healthz") => json_response(StatusCode::OK, json!({"status": "ok"})),
            (true, "/readyz") => self.readyz(),
            (true, "/metrics") => {
                let mut res = Response::new(ProxyBody::plain(Bytes::from(self.metrics.render())));
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                res
            }
            (false, "/healthz" | "/readyz" | "/metrics") => json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "method_not_allowed", "message": "use GET"}),
            ),
            _ => json_response(
                StatusCode::NOT_FOUND,
                json!({"error": "not_found", "message": "admin endpoints: /healthz, /readyz, /metrics"}),
            ),
        }
    }

    /// Ready when the proxy listeners are bound, the process is not draining, and every route
    /// holds credentials it may sign with; otherwise 503 naming what is missing.
    fn readyz(&self) -> Response<ProxyBody> {
        let now = std::time::SystemTime::now();
        let mut routes = serde_json::Map::new();
        let mut not_ready = Vec::new();
        for r in &self.routes {
            match r.credentials().current(now) {
                Ok(_) => {
                    routes.insert(r.name.to_string(), json!({"ready": true}));
                }
                Err(u) => {
                    not_ready.push(r.name.to_string());
                    routes.insert(
                        r.name.to_string(),
                        json!({"ready": false, "reason": u.reason}),
                    );
                }
            }
        }
        let listening = self.readiness.listening.load(Ordering::Acquire);
        let draining = self.readiness.draining.load(Ordering::Acquire);
        let reason = if draining {
            Some("shutting down".to_string())
        } else if !listening {
            Some("proxy listeners not bound yet".to_string())
        } else if !not_ready.is_empty() {
            Some(format!(
                "no valid credentials for route(s): {}",
                not_ready.join(", ")
            ))
        } else {
            None
        };
        match reason {
            None => json_response(StatusCode::OK, json!({"status": "ready", "routes": routes})),
            Some(reason) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "not_ready", "reason": reason, "routes": routes}),
            ),
        }
    }
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<ProxyBody> {
    let mut res = Response::new(ProxyBody::plain(Bytes::from(body.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
