//! The data path: one request in, one signed request upstream, the answer streamed back.
//!
//! [`Route::handle`] is the whole per-request pipeline. It refuses what the sidecar must not
//! forward (CONNECT, absolute-form targets, oversized bodies), appends the request target to the
//! upstream base URL byte for byte, drops hop-by-hop and client signing headers, reads and hashes
//! the body, signs with the credentials held right now, and streams the upstream's answer back
//! through a [`ProxyBody`] that records metrics and the access log line when the exchange ends,
//! however it ends.

mod body;
mod client;
mod exchange;
mod target;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use prometheus::{Histogram, IntGauge};

pub use body::{BodyBudget, ProxyBody};
pub use client::UpstreamClient;
pub use exchange::Exchange;
pub use target::Target;

use crate::config::{RouteConfig, Upstream};
use crate::credentials::CredentialCell;
use crate::error::{error_chain, ProxyError, StartupError};
use crate::metrics::{Metrics, RouteMetrics};
use crate::signing::{self, Scope};
use body::read_body;
use client::build_client;
use target::strip_hop_by_hop;

/// Everything one route needs per request, built once at start.
pub struct Route {
    pub name: Arc<str>,
    pub upstream: Upstream,
    target: Target,
    scope: Scope,
    creds: CredentialCell,
    client: UpstreamClient,
    bodies: BodyBudget,
    request_timeout: Duration,
    counters: RouteMetrics,
    inflight: IntGauge,
    upstream_duration: Histogram,
}

impl Route {
    pub fn new(
        cfg: &RouteConfig,
        creds: CredentialCell,
        bodies: BodyBudget,
        metrics: Metrics,
    ) -> Result<Self, StartupError> {
        let client = build_client(cfg).map_err(|problem| StartupError::Route {
            route: cfg.name.clone(),
            problem,
        })?;
        metrics.init_route(&cfg.name);
        Ok(Route {
            name: cfg.name.as_str().into(),
            target: Target::new(&cfg.upstream, cfg.max_body_bytes),
            upstream: cfg.upstream.clone(),
            scope: Scope::new(&cfg.region, &cfg.service),
            creds,
            client,
            bodies,
            request_timeout: cfg.request_timeout,
            inflight: metrics.inflight.with_label_values(&[&cfg.name]),
            upstream_duration: metrics.upstream_duration.with_label_values(&[&cfg.name]),
            counters: RouteMetrics::new(&metrics, &cfg.name),
        })
    }

    /// The credential cell this route signs with.
    pub fn credentials(&self) -> &CredentialCell {
        &self.creds
    }

    /// Handles one request. Never fails: every error becomes one of SPEC's JSON answers.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<ProxyBody> {
        let mut log = Exchange::start(self.clone(), &req);
        match self.forward(req, &mut log).await {
            Ok(res) => {
                let (mut parts, body) = res.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                log.status = parts.status.as_u16();
                Response::from_parts(parts, ProxyBody::upstream(body, log))
            }
            Err(e) => {
                log.status = e.status().as_u16();
                log.error = Some(e.code());
                e.log(Some(&self.name));
                e.into_response::<Bytes>().map(|b| ProxyBody::full(b, log))
            }
        }
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        log: &mut Exchange,
    ) -> Result<Response<Incoming>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        let declared = self.target.prepare(&mut parts)?;
        let (body, hash, _budget) =
            read_body(body, declared, self.target.max_body_bytes, &self.bodies).await?;
        log.bytes_in = body.len() as u64;
        if !body.is_empty() || declared.is_some() {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }

        let now = SystemTime::now();
        let creds = self.creds.current(now)?;
        signing::sign_request(&mut parts, &hash, &creds, &self.scope, now)?;
        drop(creds);

        let sent = Instant::now();
        let res = tokio::time::timeout(
            self.request_timeout,
            self.client
                .request(Request::from_parts(parts, Full::new(body))),
        )
        .await;
        let upstream_time = sent.elapsed();
        log.upstream = Some(upstream_time);
        self.upstream_duration.observe(upstream_time.as_secs_f64());
        match res {
            Err(_elapsed) => Err(ProxyError::UpstreamTimeout(self.request_timeout)),
            Ok(Err(e)) => Err(ProxyError::UpstreamUnreachable(error_chain(&e))),
            Ok(Ok(res)) => Ok(res),
        }
    }
}
