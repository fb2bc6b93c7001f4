//! The admin listener: `/healthz`, `/readyz`, `/metrics`, and nothing that signs.
//!
//! Kept apart from the data path (its own port, its own accept loop, and no dependency on
//! [`proxy`](crate::proxy)): it reads the credential cells and the metrics registry, nothing
//! else, so scraping metrics or probing health never competes with, or reaches, the signing
//! proxy.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;
use tokio::sync::watch;

use crate::credentials::CredentialCell;
use crate::error::json_answer;
use crate::metrics::Metrics;

/// What the admin handlers read.
pub struct Admin {
    /// Each route's name and the credential cell it signs with.
    pub routes: Vec<(Arc<str>, CredentialCell)>,
    pub metrics: Metrics,
    /// The process's readiness: the proxies' shutdown signal. Once it reads true the process
    /// is draining and `/readyz` says 503.
    pub draining: watch::Receiver<bool>,
}

impl Admin {
    pub async fn handle<B>(self: Arc<Self>, req: Request<B>) -> Response<Full<Bytes>> {
        let get = req.method() == Method::GET || req.method() == Method::HEAD;
        match (get, req.uri().path()) {
            (true, "/healthz") => json_answer(StatusCode::OK, &json!({"status": "ok"})),
            (true, "/readyz") => self.readyz(),
            (true, "/metrics") => {
                let mut res = Response::new(Full::new(Bytes::from(self.metrics.render())));
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                res
            }
            (false, "/healthz" | "/readyz" | "/metrics") => json_answer(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "method_not_allowed", "message": "use GET"}),
            ),
            _ => json_answer(
                StatusCode::NOT_FOUND,
                &json!({"error": "not_found", "message": "admin endpoints: /healthz, /readyz, /metrics"}),
            ),
        }
    }

    /// Ready when the process is not draining and every route holds credentials it may sign
    /// with; otherwise 503 naming what is missing. (The admin port answers only after every
    /// listener is bound, so "bound" needs no flag of its own.)
    fn readyz(&self) -> Response<Full<Bytes>> {
        let now = std::time::SystemTime::now();
        let mut routes = serde_json::Map::new();
        let mut not_ready = Vec::new();
        for (name, cell) in &self.routes {
            match cell.current(now) {
                Ok(_) => {
                    routes.insert(name.to_string(), json!({"ready": true}));
                }
                Err(u) => {
                    not_ready.push(name.to_string());
                    routes.insert(
                        name.to_string(),
                        json!({"ready": false, "reason": u.reason}),
                    );
                }
            }
        }
        let reason = if *self.draining.borrow() {
            Some("shutting down".to_string())
        } else if !not_ready.is_empty() {
            Some(format!(
                "no valid credentials for route(s): {}",
                not_ready.join(", ")
            ))
        } else {
            None
        };
        match reason {
            None => json_answer(
                StatusCode::OK,
                &json!({"status": "ready", "routes": routes}),
            ),
            Some(reason) => json_answer(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "not_ready", "reason": reason, "routes": routes}),
            ),
        }
    }
}
