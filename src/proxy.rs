//! The data path: one request in, one signed request upstream, the answer streamed back.
//!
//! [`Route::handle`] is the whole per-request pipeline. It refuses what the sidecar must not
//! forward (CONNECT, absolute-form targets, oversized bodies), appends the request target to the
//! upstream base URL byte for byte, drops hop-by-hop and client signing headers, reads and hashes
//! the body, signs with the credentials held right now, and streams the upstream's answer back
//! through a [`ProxyBody`] that records metrics and the access log line when the exchange ends,
//! however it ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use http::{Method, Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use prometheus::{Histogram, IntGauge};
use sha2::{Digest, Sha256};

use crate::auth_failures::{self, AuthFailures};
use crate::config::{Payload, RouteConfig, Upstream};
use crate::credentials::CredentialCell;
use crate::error::{error_chain, ProxyError};
use crate::framing::AmbiguousFraming;
use crate::metrics::Metrics;
use crate::request_body::{Cut, UpstreamBody};
use crate::route_signing::{RouteSigner, Signed};
use crate::signing;
pub use crate::upstream_client::UpstreamClient;

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
    metrics: Metrics,
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
    ) -> Result<Self, String> {
        let client = crate::upstream_client::build(cfg)?;
        metrics.init_route(&cfg.name);
        Ok(Route {
            name: cfg.name.as_str().into(),
            target: Target::new(&cfg.upstream, cfg.max_body_bytes)?
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
            metrics,
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
                if matches!(
                    e,
                    ProxyError::UpstreamUnreachable(_) | ProxyError::CredentialsUnavailable { .. }
                ) {
                    tracing::warn!(route = %self.name, error = %e, "request failed");
                }
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
        let creds = self
            .creds
            .current(now)
            .map_err(|u| ProxyError::CredentialsUnavailable {
                reason: u.reason,
                retry_after: u.retry_after,
            })?;
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
                let token = signed.security_token();
                let d = self.signer.diagnostics(signed);
                tracing::warn!(
                    route = %self.name,
                    reason = refusal.reason.label(),
                    upstream_error_type = refusal.error_type.as_deref(),
                    upstream_message = %auth_failures::redact(&refusal.message, token),
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

/// How a request head becomes the upstream request head. Pure (no I/O), so the fuzz target
/// drives it directly.
#[derive(Debug, Clone)]
pub struct Target {
    /// `scheme://authority` + base path: the fixed front of every upstream URI.
    uri_prefix: String,
    host_header: HeaderValue,
    pub max_body_bytes: u64,
    /// Where the app's `Authorization` is forwarded (`client_authorization_to`).
    client_authorization_to: Option<HeaderName>,
}

impl Target {
    pub fn new(upstream: &Upstream, max_body_bytes: u64) -> Result<Self, String> {
        Ok(Target {
            uri_prefix: format!(
                "{}://{}{}",
                upstream.scheme, upstream.authority, upstream.base_path
            ),
            host_header: HeaderValue::from_str(upstream.authority.as_str())
                .map_err(|e| format!("upstream host is not a valid Host header: {e}"))?,
            max_body_bytes,
            client_authorization_to: None,
        })
    }

    /// Forwards the app's own `Authorization` under `to` instead of dropping it.
    pub fn with_client_authorization_to(mut self, to: Option<HeaderName>) -> Self {
        self.client_authorization_to = to;
        self
    }

    /// Rewrites `parts` (as received from the app) into the upstream request head: refuses
    /// CONNECT, heads the server marked [`AmbiguousFraming`] and absolute-form targets, appends the target to the upstream URL byte for byte,
    /// drops hop-by-hop and client signing headers, sets `Host`, and refuses a declared body
    /// over the limit before any of it is read. Returns the declared body length, if any.
    pub fn prepare(&self, parts: &mut http::request::Parts) -> Result<Option<u64>, ProxyError> {
        if parts.method == Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed);
        }
        if parts.extensions.get::<AmbiguousFraming>().is_some() {
            return Err(ProxyError::BadRequest(
                "both Content-Length and Transfer-Encoding: the body's framing is ambiguous \
                 (a request-smuggling shape); send exactly one of them"
                    .into(),
            ));
        }
        let uri = self.upstream_uri(&parts.uri, parts.version)?;
        check_transfer_encoding(&parts.headers)?;
        let declared = content_length(&parts.headers)?;
        if declared.is_some_and(|len| len > self.max_body_bytes) {
            return Err(ProxyError::PayloadTooLarge {
                limit: self.max_body_bytes,
            });
        }
        if let Some(to) = &self.client_authorization_to {
            // A bearer token the service behind IAM still checks: kept, under another name.
            if let Some(mut app_auth) = parts.headers.remove(header::AUTHORIZATION) {
                app_auth.set_sensitive(true);
                parts.headers.insert(to.clone(), app_auth);
            }
        }
        prepare_headers(&mut parts.headers, &self.host_header);
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        parts.extensions = http::Extensions::new();
        Ok(declared)
    }

    /// The upstream URI: base URL + the request's path and query, byte for byte.
    fn upstream_uri(&self, target: &Uri, version: Version) -> Result<Uri, ProxyError> {
        // HTTP/2 requests always carry scheme and authority (pseudo-headers); in HTTP/1 they
        // only appear in absolute-form, which a forward proxy would honour and we refuse.
        if version < Version::HTTP_2 && (target.scheme().is_some() || target.authority().is_some())
        {
            return Err(ProxyError::BadRequest(
                "absolute-form request target: the sidecar only forwards to its configured upstream".into(),
            ));
        }
        let pq = target.path_and_query().map_or("/", |pq| pq.as_str());
        if !pq.starts_with('/') {
            return Err(ProxyError::BadRequest(format!(
                "request target {pq:?} is not an origin-form path"
            )));
        }
        let mut full = String::with_capacity(self.uri_prefix.len() + pq.len());
        full.push_str(&self.uri_prefix);
        full.push_str(pq);
        Uri::try_from(full)
            .map_err(|e| ProxyError::BadRequest(format!("request target cannot be forwarded: {e}")))
    }
}

/// The process-wide budget of request-body bytes held in memory at once
/// (`max_inflight_body_bytes`), so many large uploads cannot exhaust the pod's memory.
#[derive(Clone)]
pub struct BodyBudget {
    bytes: Arc<tokio::sync::Semaphore>,
    limit: u64,
}

impl BodyBudget {
    pub fn new(limit: u64) -> Self {
        let permits = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        BodyBudget {
            bytes: Arc::new(tokio::sync::Semaphore::new(permits)),
            limit,
        }
    }

    /// Reserves `n` more bytes, or refuses at once: a full budget is an overload, answered
    /// with 503 rather than queued behind other uploads.
    fn reserve(
        &self,
        held: &mut Option<tokio::sync::OwnedSemaphorePermit>,
        n: usize,
    ) -> Result<(), ProxyError> {
        if n == 0 {
            return Ok(());
        }
        let permit = u32::try_from(n)
            .ok()
            .and_then(|n| self.bytes.clone().try_acquire_many_owned(n).ok())
            .ok_or_else(|| {
                ProxyError::Overloaded(format!(
                    "request bodies in flight would exceed max_inflight_body_bytes ({} bytes)",
                    self.limit
                ))
            })?;
        match held {
            Some(p) => p.merge(permit),
            None => *held = Some(permit),
        }
        Ok(())
    }
}

/// Hop-by-hop headers (RFC 9110 7.6.1), never forwarded in either direction.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Client headers that would clash with the sidecar's signature.
const SIGNING_HEADERS: &[&str] = &[
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name) || name.starts_with("proxy-")
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, is_hop_by_hop);
}

/// Removes the headers `drop` selects and the ones `Connection` names. One pass over the
/// (few) header names finds them, so the common request with nothing to drop costs no hash
/// lookups.
fn strip(headers: &mut HeaderMap, drop: impl Fn(&str) -> bool) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if drop(name.as_str()) {
            doomed.push(name.clone());
        }
    }
    // Headers named by Connection are hop-by-hop too.
    if headers.contains_key(header::CONNECTION) {
        doomed.extend(
            headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok()),
        );
    }
    for name in doomed {
        headers.remove(name);
    }
}

/// The request headers as they go upstream (before signing adds its own).
fn prepare_headers(headers: &mut HeaderMap, host: &HeaderValue) {
    strip(headers, |name| {
        is_hop_by_hop(name)
            || SIGNING_HEADERS.contains(&name)
            // The body is read whole before it is sent, so the client's `Expect:
            // 100-continue` has been answered; the upstream must not wait for a go-ahead.
            || name == "expect"
            || name == "host"
    });
    headers.insert(header::HOST, host.clone());
}

/// hyper frames a request body by its last transfer-coding alone (`chunked`) and leaves any
/// coding before it (`gzip, chunked`, `chunked, chunked`) undecoded. Forwarding such a body as
/// if it were plain would change its meaning, and stacked codings are a request-smuggling
/// shape: only a single `chunked` is accepted.
fn check_transfer_encoding(headers: &HeaderMap) -> Result<(), ProxyError> {
    let mut codings = 0;
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        for coding in value.as_bytes().split(|b| *b == b',') {
            codings += 1;
            if codings > 1 || !coding.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(ProxyError::BadRequest(
                    "unsupported Transfer-Encoding: only a single `chunked` is accepted".into(),
                ));
            }
        }
    }
    Ok(())
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ProxyError> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| ProxyError::BadRequest("invalid Content-Length".into())),
    }
}

/// Reads the whole body (at most `limit` bytes) and its SHA-256, hashed as it arrives. The
/// bytes are reserved in the process-wide budget (all at once when the length is declared) and
/// stay reserved while the returned permit lives.
async fn read_body(
    mut body: Incoming,
    declared: Option<u64>,
    limit: u64,
    budget: &BodyBudget,
) -> Result<(Bytes, String, Option<tokio::sync::OwnedSemaphorePermit>), ProxyError> {
    if body.is_end_stream() {
        return Ok((Bytes::new(), signing::EMPTY_SHA256.to_string(), None));
    }
    let mut held = None;
    let mut reserved = declared.map_or(0, |d| d.min(limit) as usize);
    budget.reserve(&mut held, reserved)?;
    let mut buf = BytesMut::with_capacity(reserved);
    let mut hasher = Sha256::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ProxyError::ClientBody(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            let len = buf.len() + data.len();
            if len as u64 > limit {
                return Err(ProxyError::PayloadTooLarge { limit });
            }
            if len > reserved {
                budget.reserve(&mut held, len - reserved)?;
                reserved = len;
            }
            hasher.update(&data);
            buf.extend_from_slice(&data);
        }
    }
    Ok((buf.freeze(), hex::encode(hasher.finalize()), held))
}

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
    status: u16,
    error: Option<&'static str>,
    upstream: Option<Duration>,
    bytes_in: u64,
    bytes_out: u64,
    outcome: &'static str,
    /// A streamed request body: its byte count is final only when the exchange ends.
    streamed: Option<Arc<crate::request_body::Streamed>>,
}

impl Exchange {
    fn start(route: Arc<Route>, req: &Request<Incoming>) -> Self {
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
        let m = &r.metrics;
        let code = itoa_status(self.status);
        m.requests_total
            .with_label_values(&[&r.name, self.method, code])
            .inc();
        m.request_duration
            .with_label_values(&[&r.name, self.method])
            .observe(elapsed.as_secs_f64());
        if let Some(e) = self.error {
            m.errors_total.with_label_values(&[&r.name, e]).inc();
        }
        if let Some(s) = &self.streamed {
            self.bytes_in = s.bytes();
        }
        tracing::info!(
            target: "sigv4_sidecar::access",
            route = %r.name,
            method = self.method,
            path = %self.uri.path(),
            status = self.status,
            duration_ms = elapsed.as_secs_f64() * 1e3,
            upstream_ms = self.upstream.map(|d| d.as_secs_f64() * 1e3),
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            error = self.error,
            outcome = self.outcome,
            "request"
        );
    }
}

/// Status code as a label without allocating for the common codes.
fn itoa_status(status: u16) -> &'static str {
    const CODES: &[(u16, &str)] = &[
        (200, "200"),
        (201, "201"),
        (202, "202"),
        (204, "204"),
        (206, "206"),
        (301, "301"),
        (302, "302"),
        (304, "304"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (409, "409"),
        (413, "413"),
        (429, "429"),
        (500, "500"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
    ];
    CODES.iter().find(|(c, _)| *c == status).map_or(
        match status / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            5 => "5xx",
            _ => "0",
        },
        |(_, s)| s,
    )
}

/// The response body the app receives: the upstream's, streamed, or the sidecar's own answer.
/// It carries the [`Exchange`] so the exchange is recorded exactly when the body is done.
pub struct ProxyBody {
    inner: Inner,
    exchange: Option<Exchange>,
}

enum Inner {
    Full(Option<Bytes>),
    Upstream(Incoming),
    /// An upstream body whose beginning was read (a 403 inspected for AWS's message).
    Prefixed(Option<Bytes>, Option<Incoming>),
}

impl ProxyBody {
    fn upstream(body: Incoming, exchange: Exchange) -> Self {
        ProxyBody {
            inner: Inner::Upstream(body),
            exchange: Some(exchange),
        }
    }

    fn prefixed(prefix: Bytes, rest: Option<Incoming>, exchange: Exchange) -> Self {
        ProxyBody {
            inner: Inner::Prefixed((!prefix.is_empty()).then_some(prefix), rest),
            exchange: Some(exchange),
        }
    }

    fn full(bytes: Bytes, exchange: Exchange) -> Self {
        ProxyBody {
            inner: Inner::Full(Some(bytes)),
            exchange: Some(exchange),
        }
    }

    /// A body with no exchange attached (for the admin server).
    pub fn plain(bytes: Bytes) -> Self {
        ProxyBody {
            inner: Inner::Full(Some(bytes)),
            exchange: None,
        }
    }

    fn finish(&mut self, outcome: &'static str) {
        if let Some(mut x) = self.exchange.take() {
            x.outcome = outcome;
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Upstream(body) => Pin::new(body).poll_frame(cx),
            Inner::Prefixed(prefix, rest) => match (prefix.take(), rest) {
                (Some(b), _) => Poll::Ready(Some(Ok(Frame::data(b)))),
                (None, Some(body)) => Pin::new(body).poll_frame(cx),
                (None, None) => Poll::Ready(None),
            },
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(x)) = (frame.data_ref(), this.exchange.as_mut()) {
                    x.bytes_out += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(error = %e, "upstream response body failed mid-stream; the response is cut short");
                this.finish("upstream_truncated");
            }
            Poll::Ready(None) => this.finish("complete"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Prefixed(p, rest) => {
                p.is_none() && rest.as_ref().is_none_or(|b| b.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Upstream(body) => body.size_hint(),
            Inner::Prefixed(p, rest) => {
                let first = p.as_ref().map_or(0, |b| b.len() as u64);
                let rest = rest
                    .as_ref()
                    .map_or(SizeHint::with_exact(0), |b| b.size_hint());
                let mut hint = SizeHint::new();
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + first);
                }
                hint.set_lower(rest.lower() + first);
                hint
            }
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // A body that had nothing left to send (a HEAD answer, a 204) counts as delivered.
        let done = match &self.inner {
            Inner::Full(_) => true,
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Prefixed(p, rest) => {
                p.is_none() && rest.as_ref().is_none_or(|b| b.is_end_stream())
            }
        };
        if done {
            self.finish("complete");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_signing_headers_are_dropped() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-private-hop"),
            ("x-private-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic x"),
            ("proxy-foo", "1"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("authorization", "Bearer app"),
            ("x-amz-date", "20200101T000000Z"),
            ("x-amz-security-token", "t"),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
            ("host", "localhost:8080"),
            ("x-amz-target", "kept"),
            ("accept", "application/json"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        prepare_headers(&mut h, &HeaderValue::from_static("api.example"));
        let mut left: Vec<_> = h
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("")))
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "accept: application/json",
                "host: api.example",
                "x-amz-target: kept"
            ]
        );
    }

    #[test]
    fn status_labels() {
        assert_eq!(itoa_status(200), "200");
        assert_eq!(itoa_status(418), "4xx");
        assert_eq!(itoa_status(0), "0");
    }
}
