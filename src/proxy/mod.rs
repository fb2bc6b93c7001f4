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
mod upstream_body;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus::{Histogram, IntGauge};

pub use body::{BodyBudget, ProxyBody};
pub use client::UpstreamClient;
pub use exchange::Exchange;
pub use target::Target;

pub use upstream_body::{Cut, StreamError, Streamed, UpstreamBody};

use crate::auth_failures::{self, AuthFailures};
use crate::config::{Payload, RouteConfig, Upstream};
use crate::credentials::CredentialCell;
use crate::error::{error_chain, ProxyError, StartupError};
use crate::metrics::{Metrics, RouteMetrics};
use crate::route_signing::{RouteSigner, Signed};
use body::read_body;
use client::build_client;
use target::{content_length, strip_hop_by_hop};

/// Everything one route needs per request, built once at start.
pub struct Route {
    pub name: Arc<str>,
    pub upstream: Upstream,
    target: Target,
    signer: RouteSigner,
    creds: CredentialCell,
    client: UpstreamClient,
    bodies: BodyBudget,
    request_timeout: Duration,
    counters: RouteMetrics,
    inflight: IntGauge,
    upstream_duration: Histogram,
    auth_failures: AuthFailures,
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
            target: Target::new(&cfg.upstream, cfg.max_body_bytes)
                .with_client_authorization_to(cfg.reach.client_authorization_to.clone()),
            upstream: cfg.upstream.clone(),
            signer: RouteSigner::new(cfg),
            auth_failures: AuthFailures::new(&cfg.name, &metrics.upstream_auth_failures),
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
            Ok((res, signed)) => {
                let (mut parts, body) = res.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                log.status = parts.status.as_u16();
                let body = if parts.status == StatusCode::FORBIDDEN {
                    self.inspect_refusal(&parts.headers, body, &signed, log)
                        .await
                } else {
                    ProxyBody::upstream(body, log)
                };
                Response::from_parts(parts, body)
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
    ) -> Result<(Response<Incoming>, Signed), ProxyError> {
        let (mut parts, body) = req.into_parts();
        let declared = self.target.prepare(&mut parts)?;
        let limit = self.target.max_body_bytes;
        let (body, hash, streamed, _budget) = match self.signer.payload {
            Payload::Signed => {
                let (body, hash, budget) = read_body(body, declared, limit, &self.bodies).await?;
                log.bytes_in = body.len() as u64;
                if !body.is_empty() || declared.is_some() {
                    parts
                        .headers
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                }
                (UpstreamBody::full(body), Some(hash), None, budget)
            }
            // The body goes upstream as it arrives, framed as the app framed it (its
            // Content-Length, checked against the limit already, or chunked).
            Payload::Unsigned => {
                let (body, state) = UpstreamBody::streaming(body, limit);
                log.streamed = Some(state.clone());
                (body, None, Some(state), None)
            }
        };

        let now = SystemTime::now();
        let creds = self.creds.current(now)?;
        // Taken before signing: the diagnostics recompute the signature's own headers.
        let signed = Signed::new(&parts, hash, creds.clone(), now);
        self.signer
            .sign(&mut parts, signed.body_hash(), &creds, now)?;
        if tracing::enabled!(tracing::Level::DEBUG) {
            if let Some(d) = self.signer.diagnostics(&signed) {
                tracing::debug!(
                    route = %self.name,
                    canonical_request = %d.canonical_request,
                    string_to_sign = %d.string_to_sign,
                    "signed request"
                );
            }
        }

        let sent = Instant::now();
        let send = self.client.request(Request::from_parts(parts, body));
        let res = tokio::time::timeout(self.request_timeout, async {
            match &streamed {
                // A cut body aborts the upstream request; its answer is not waited for.
                Some(state) => tokio::select! {
                    res = send => Ok(res),
                    cut = state.cut() => Err(cut),
                },
                None => Ok(send.await),
            }
        })
        .await;
        let upstream_time = sent.elapsed();
        log.upstream = Some(upstream_time);
        self.upstream_duration.observe(upstream_time.as_secs_f64());
        let cut = streamed.as_ref().and_then(|s| s.outcome());
        match (res, cut) {
            (Ok(Err(Cut::OverLimit)), _) | (Ok(Ok(Err(_))), Some(Cut::OverLimit)) => {
                Err(ProxyError::PayloadTooLarge { limit })
            }
            (Ok(Err(Cut::Client)), _) | (Ok(Ok(Err(_))), Some(Cut::Client)) => Err(
                ProxyError::ClientBody("the app's connection failed mid-body".into()),
            ),
            (Err(_elapsed), _) => Err(ProxyError::UpstreamTimeout(self.request_timeout)),
            (Ok(Ok(Err(e))), None) => Err(ProxyError::UpstreamUnreachable(error_chain(&e))),
            (Ok(Ok(Ok(res))), _) => Ok((res, signed)),
        }
    }

    /// A 403 from the upstream: if it is one of AWS's signature or token errors, count it and
    /// (once per window) log the upstream's message next to the sidecar's canonical request.
    /// The body reaches the app unchanged either way.
    async fn inspect_refusal(
        &self,
        headers: &HeaderMap,
        body: Incoming,
        signed: &Signed,
        log: Exchange,
    ) -> ProxyBody {
        let declared = content_length(headers).ok().flatten();
        let peeked = auth_failures::peek(body, declared, self.request_timeout).await;
        if let Some(refusal) = auth_failures::classify(headers, &peeked.prefix) {
            if self.auth_failures.record(refusal.reason) {
                let d = self.signer.diagnostics(signed);
                tracing::warn!(
                    route = %self.name,
                    reason = refusal.reason.label(),
                    upstream_error_type = refusal.error_type.as_deref(),
                    upstream_message = %self.signer.shown_message(&refusal.message, signed),
                    canonical_request = d.as_ref().map(|d| d.canonical_request.as_str()),
                    string_to_sign = d.as_ref().map(|d| d.string_to_sign.as_str()),
                    "upstream refused the request's credentials or signature; compare its \
                     canonical request (in upstream_message) with the sidecar's"
                );
            }
        }
        ProxyBody::prefixed(peeked.prefix, peeked.rest, log)
    }
}
