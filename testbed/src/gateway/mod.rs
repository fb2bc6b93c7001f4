//! An API Gateway stand-in on 127.0.0.1: the sidecar's upstream in tests and in the local demo.
//!
//! Every request is checked with the independent SigV4 verifier ([`crate::sigv4`], and
//! [`crate::sigv4a`] when enabled) and answered the way API Gateway answers (same status codes,
//! `x-amzn-ErrorType` and JSON messages, see [`refusal`]), then passed to a backend:
//! [`Backend::Echo`] describes exactly what arrived (for byte-for-byte forwarding tests),
//! [`Backend::Lambda`] builds a real REST API proxy event (payload 1.0) with the verified caller
//! as `identity.userArn` and runs the `hello-lambda` handler through lambda_http's own
//! conversion.
//!
//! Credentials are resolved through the STS emulator: issued credentials map to their assumed
//! role, the emulator's base credentials to `arn:aws:iam::<acct>:user/base`.
//!
//! Start one with [`Gateway::start`] (a [`GatewayConfig`]) or [`Gateway::builder`], which also
//! sets the [`GatewayModes`]: SigV4A, a required API `Host`, a CloudFront-like hop, a forced
//! refusal, and (service `vpc-lattice-svcs`) VPC Lattice's unsigned, streamed payloads. Every
//! request, accepted or not, is kept as a [`Recorded`] ([`Gateway::requests`],
//! [`Gateway::wait_for_requests`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::sync::watch;

use crate::server::{self, full, lock, ConnInfo, HandlerError, RespBody, Running};
use crate::sigv4::{self, Payload};
use crate::sts::StsEmulator;

mod authorize;
mod builder;
mod echo;
mod lambda;
pub mod refusal;
mod stream;
mod tls;

use authorize::{authorize, Caller};
pub use builder::{GatewayBuilder, GatewayModes};
pub use echo::PatternBody;
pub use refusal::Refusal;
use refusal::Rejection;
use stream::BodyRead;

/// API id used in ARNs and events (API Gateway ids are 10 lower-case alphanumerics).
pub const API_ID: &str = "testbedapi";
/// VPC Lattice's signing service: requests are signed over `UNSIGNED-PAYLOAD` and streamed.
pub const LATTICE_SERVICE: &str = "vpc-lattice-svcs";
/// What the CloudFront-like hop appends to `X-Forwarded-For` (a documentation address).
pub const HOP_CLIENT_IP: &str = "203.0.113.7";
/// What the CloudFront-like hop appends to `Via`.
pub const HOP_VIA: &str = "1.1 abc.cloudfront.net (CloudFront)";
/// Buffered request bodies above this are refused (API Gateway's own limit is 10 MB).
/// Streamed (Lattice) bodies have no limit: they are never held.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// What answers verified requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// 200 JSON describing the request exactly as received (see `echo.rs` for its fields).
    Echo,
    /// The `hello-lambda` function behind a REST API proxy integration.
    Lambda,
}

/// How the gateway is set up (the options it always had; newer ones are [`GatewayModes`]).
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub region: String,
    /// Signing service, `execute-api` (`vpc-lattice-svcs`: see [`GatewayBuilder::lattice`]).
    pub service: String,
    /// Stage name, the first path segment (`Prod`); `""` for none.
    pub stage: String,
    /// Where credentials and caller ARNs come from.
    pub sts: StsEmulator,
    /// Role ARNs allowed `execute-api:Invoke`. `None`: every issued credential and the base
    /// credentials. `Some(list)`: only credentials issued for a listed role, plus the base
    /// credentials if the list contains `arn:aws:iam::<acct>:user/base`.
    pub allowed_roles: Option<Vec<String>>,
    pub backend: Backend,
    /// Serve HTTPS with a CA generated at start (see [`Gateway::ca_pem`]).
    pub tls: bool,
}

impl GatewayConfig {
    /// us-east-1, execute-api, stage `Prod`, any issued credential, echo backend, plain HTTP.
    pub fn new(sts: StsEmulator) -> Self {
        GatewayConfig {
            region: "us-east-1".to_string(),
            service: "execute-api".to_string(),
            stage: "Prod".to_string(),
            sts,
            allowed_roles: None,
            backend: Backend::Echo,
            tls: false,
        }
    }
}

/// Whether a request's body arrived whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyState {
    /// Read to its end (and, if one was declared, exactly `Content-Length` bytes).
    Complete,
    /// Cut off: the connection closed or the stream was reset mid-body, a chunked body ended
    /// without its last chunk, or fewer bytes than `Content-Length` arrived; or (buffered mode)
    /// it was over the limit. The text says which. The backend never ran for it.
    Incomplete(String),
    /// Not read at all: a streamed (Lattice) request refused from its head.
    NotRead,
}

/// One request as the gateway saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Request target as received (`/Prod/path?query`), byte for byte.
    pub target: String,
    /// Headers as hyper hands them over (after the CloudFront-like hop, if on): lower-case
    /// names, first-arrival order of names, repeated values in arrival order. HTTP/2's
    /// `:authority` is not among them.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Bytes of body that arrived (all of it unless `body_state` says otherwise).
    pub body_len: usize,
    /// Hex SHA-256 of those bytes.
    pub body_sha256: String,
    pub body_state: BodyState,
    /// `"HTTP/1.1"` or `"HTTP/2.0"`.
    pub version: String,
    /// The TLS SNI name the client sent (`None` over plain HTTP, or when it connected to an IP).
    pub server_name: Option<String>,
    /// `SignedHeaders` of an accepted request (empty when refused).
    pub signed_headers: Vec<String>,
    /// `Ok(caller ARN)` or `Err(reason)`, the reason including the canonical request and string
    /// to sign on a signature mismatch. A streamed request whose body was cut off keeps
    /// `Ok` (its signature was fine): check `body_state`.
    pub outcome: Result<String, String>,
}

impl Recorded {
    /// First value of a header (name in lower case), lossily as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// Whether the body arrived whole.
    pub fn body_complete(&self) -> bool {
        self.body_state == BodyState::Complete
    }
}

struct GwState {
    config: GatewayConfig,
    modes: GatewayModes,
    forced: Mutex<Option<Refusal>>,
    addr: SocketAddr,
    ca_pem: Option<String>,
    records: Mutex<Vec<Recorded>>,
    count: watch::Sender<usize>,
    rejected: AtomicUsize,
    counter: AtomicU64,
}

impl GwState {
    /// Lattice: verified from the head, body streamed.
    fn streams(&self) -> bool {
        self.config.service == LATTICE_SERVICE
    }
}

/// Handle to a running gateway; clones share it, the last drop (or `shutdown()`) stops it.
#[derive(Clone, Debug)]
pub struct Gateway {
    state: Running<GwState>,
}

impl Gateway {
    /// Starts the gateway on `127.0.0.1:0` with default [`GatewayModes`].
    pub async fn start(config: GatewayConfig) -> std::io::Result<Gateway> {
        Self::start_with(config, GatewayModes::default(), 0).await
    }

    /// Starts the gateway on `127.0.0.1:port` (0 = any free port) with default modes.
    pub async fn start_on(config: GatewayConfig, port: u16) -> std::io::Result<Gateway> {
        Self::start_with(config, GatewayModes::default(), port).await
    }

    /// A [`GatewayBuilder`] with [`GatewayConfig::new`]'s defaults.
    pub fn builder(sts: StsEmulator) -> GatewayBuilder {
        GatewayBuilder::new(sts)
    }

    /// Starts the gateway on `127.0.0.1:port` (0 = any free port).
    pub async fn start_with(
        config: GatewayConfig,
        modes: GatewayModes,
        port: u16,
    ) -> std::io::Result<Gateway> {
        let (acceptor, ca_pem) = if config.tls {
            let (a, pem) = tls::make_tls()?;
            (Some(a), Some(pem))
        } else {
            (None, None)
        };
        let (listener, addr) = server::bind_loopback(port).await?;
        let state = GwState {
            config,
            forced: Mutex::new(modes.forced_refusal),
            modes,
            addr,
            ca_pem,
            records: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            rejected: AtomicUsize::new(0),
            counter: AtomicU64::new(0),
        };
        let state = server::serve(listener, acceptor, state, handle)?;
        Ok(Gateway { state })
    }

    /// `http(s)://127.0.0.1:PORT/<stage>` (no trailing slash; no stage segment if the stage is
    /// empty): the sidecar's `upstream`.
    pub fn url(&self) -> String {
        let scheme = if self.state.config.tls {
            "https"
        } else {
            "http"
        };
        let stage = &self.state.config.stage;
        if stage.is_empty() {
            format!("{scheme}://{}", self.state.addr)
        } else {
            format!("{scheme}://{}/{stage}", self.state.addr)
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.state.addr
    }

    /// The PEM of the CA that signed the TLS certificate; empty when `tls` is false.
    pub fn ca_pem(&self) -> String {
        self.state.ca_pem.clone().unwrap_or_default()
    }

    /// Writes [`Gateway::ca_pem`] to `dir/testbed-ca.pem` and returns the path (for `ca_file`).
    ///
    /// # Panics
    /// If the file cannot be written: this is test scaffolding and the test cannot go on.
    pub fn write_ca_pem(&self, dir: impl AsRef<Path>) -> PathBuf {
        let path = dir.as_ref().join("testbed-ca.pem");
        if let Err(e) = std::fs::write(&path, self.ca_pem()) {
            panic!("writing {}: {e}", path.display());
        }
        path
    }

    /// Every request received so far (accepted or not), oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.records).clone()
    }

    /// Waits until at least `n` requests have been recorded; false on timeout.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        server::wait_for_count(&self.state.count, n, timeout).await
    }

    /// How many requests were refused (any 403).
    pub fn rejected(&self) -> usize {
        self.state.rejected.load(Ordering::Relaxed)
    }

    /// The emulator the gateway resolves credentials with.
    pub fn sts(&self) -> &StsEmulator {
        &self.state.config.sts
    }

    /// From now on answer every verified request with `refusal` (`None`: real verdicts again).
    pub fn set_forced_refusal(&self, refusal: Option<Refusal>) {
        *lock(&self.state.forced) = refusal;
    }

    pub fn shutdown(&self) {
        self.state.shutdown();
    }
}

/// `arn:aws:execute-api:<region>:<acct>:<api>/<stage>/<METHOD>/<path>` for a request.
fn execute_api_arn(config: &GatewayConfig, method: &str, resource_path: &str) -> String {
    let stage = if config.stage.is_empty() {
        "$default"
    } else {
        &config.stage
    };
    format!(
        "arn:aws:execute-api:{}:{}:{API_ID}/{stage}/{method}/{}",
        config.region,
        config.sts.account_id(),
        resource_path.trim_start_matches('/')
    )
}

/// The stage-relative resource path, or `None` when the path is not under the stage.
fn resource_path<'a>(stage: &str, path: &'a str) -> Option<&'a str> {
    if stage.is_empty() {
        return Some(if path.is_empty() { "/" } else { path });
    }
    let rest = path.strip_prefix('/')?.strip_prefix(stage)?;
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

/// What CloudFront does to a request on its way to the origin: appends the viewer's address to
/// `X-Forwarded-For` and itself to `Via` (setting each when absent).
fn cloudfront_hop(headers: &mut HeaderMap) {
    for (name, add) in [("x-forwarded-for", HOP_CLIENT_IP), ("via", HOP_VIA)] {
        let joined: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .chain(std::iter::once(add.to_string()))
            .collect();
        if let Ok(v) = HeaderValue::from_str(&joined.join(", ")) {
            headers.insert(name, v);
        }
    }
}

fn json_response(
    status: StatusCode,
    body: &serde_json::Value,
    request_id: &str,
) -> Response<RespBody> {
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

/// The record of a request before its verdict and body are known.
fn record_of(parts: &http::request::Parts, target: &str) -> Recorded {
    Recorded {
        method: parts.method.as_str().to_string(),
        target: target.to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
            .collect(),
        body_len: 0,
        body_sha256: sigv4::sha256_hex(b""),
        body_state: BodyState::NotRead,
        version: format!("{:?}", parts.version),
        server_name: parts
            .extensions
            .get::<ConnInfo>()
            .and_then(|c| c.server_name.clone()),
        signed_headers: Vec::new(),
        outcome: Err("not decided".into()),
    }
}

fn with_body(mut record: Recorded, read: &BodyRead) -> Recorded {
    record.body_len = read.len;
    record.body_sha256 = read.sha256.clone();
    record.body_state = read.state.clone();
    record
}

/// Records a refusal and answers it.
fn refuse(
    state: &GwState,
    mut record: Recorded,
    rejection: Rejection,
    request_id: &str,
) -> Response<RespBody> {
    state.rejected.fetch_add(1, Ordering::Relaxed);
    record.outcome = Err(rejection.reason.clone());
    push_record(state, record);
    let mut resp = json_response(rejection.status, &rejection.body, request_id);
    resp.headers_mut().insert(
        "x-amzn-errortype",
        HeaderValue::from_static(rejection.error_type),
    );
    resp
}

fn accepted(mut record: Recorded, caller: &Caller) -> Recorded {
    record.outcome = Ok(caller.arn.clone());
    record.signed_headers = caller.signed_headers.clone();
    record
}

async fn handle(
    state: Arc<GwState>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<RespBody>, HandlerError> {
    let n = state.counter.fetch_add(1, Ordering::Relaxed);
    let request_id = format!("7e57bed0-1111-4000-8000-{n:012x}");
    let (mut parts, body) = req.into_parts();
    if state.modes.cloudfront_hop {
        cloudfront_hop(&mut parts.headers);
    }
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    let mut headers = parts.headers.clone();
    // HTTP/2 carries the host as :authority; the signature covers it as `host`.
    if !headers.contains_key(http::header::HOST) {
        if let Some(v) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            headers.insert(http::header::HOST, v);
        }
    }
    let record = record_of(&parts, &target);

    if state.streams() {
        let caller = match authorize(&state, &parts.method, &target, &headers, Payload::Unsigned) {
            Ok(c) => c,
            Err(rejection) => return Ok(refuse(&state, record, rejection, &request_id)),
        };
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        // Its own task, so that the record is written even when the client goes away and
        // hyper drops this handler mid-body.
        let record = accepted(record, &caller);
        let recorder = state.clone();
        let read = tokio::spawn(async move {
            let read = stream::consume(body, declared).await;
            push_record(&recorder, with_body(record, &read));
            read
        })
        .await?;
        if let BodyState::Incomplete(why) = read.state {
            // The client is gone or broke the framing: there is nobody to answer.
            return Err(why.into());
        }
        let summary = echo::BodySummary {
            len: read.len,
            sha256: &read.sha256,
        };
        return Ok(echo::echo(&parts, &target, summary, &caller, &request_id).await);
    }

    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let why = format!("Request body unreadable or too large: {e}");
            let read = BodyRead {
                len: 0,
                sha256: sigv4::sha256_hex(b""),
                state: BodyState::Incomplete(why.clone()),
            };
            let mut record = with_body(record, &read);
            record.outcome = Err(why.clone());
            push_record(&state, record);
            // A body that cannot be read completely is a broken client; answer like API Gateway
            // does to an oversized payload.
            return Ok(json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &serde_json::json!({ "message": why }),
                &request_id,
            ));
        }
    };
    let read = BodyRead {
        len: body.len(),
        sha256: sigv4::sha256_hex(&body),
        state: BodyState::Complete,
    };
    let record = with_body(record, &read);
    let caller = match authorize(
        &state,
        &parts.method,
        &target,
        &headers,
        Payload::Body(&body),
    ) {
        Ok(c) => c,
        Err(rejection) => return Ok(refuse(&state, record, rejection, &request_id)),
    };
    push_record(&state, accepted(record, &caller));

    match state.config.backend {
        Backend::Echo => {
            let summary = echo::BodySummary {
                len: read.len,
                sha256: &read.sha256,
            };
            Ok(echo::echo(&parts, &target, summary, &caller, &request_id).await)
        }
        Backend::Lambda => {
            let invocation = lambda::Invocation {
                parts: &parts,
                target: &target,
                body: &body,
                caller: &caller,
                peer,
                request_id: &request_id,
            };
            Ok(lambda::lambda(&state, &invocation).await)
        }
    }
}

fn push_record(state: &GwState, record: Recorded) {
    lock(&state.records).push(record);
    state.count.send_modify(|c| *c += 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_paths() {
        assert_eq!(
            resource_path("Prod", "/Prod/hello-world"),
            Some("/hello-world")
        );
        assert_eq!(resource_path("Prod", "/Prod"), Some("/"));
        assert_eq!(resource_path("Prod", "/Production/x"), None);
        assert_eq!(resource_path("Prod", "/hello-world"), None);
        assert_eq!(resource_path("", "/hello-world"), Some("/hello-world"));
    }

    #[test]
    fn cloudfront_hop_appends_or_sets() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        cloudfront_hop(&mut h);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 203.0.113.7");
        assert_eq!(h["via"], "1.1 abc.cloudfront.net (CloudFront)");
        cloudfront_hop(&mut h);
        assert_eq!(
            h["via"],
            "1.1 abc.cloudfront.net (CloudFront), 1.1 abc.cloudfront.net (CloudFront)"
        );
    }

    #[test]
    fn pattern_hash_is_framing_independent() {
        let all: Vec<u8> = (0..40_000u64).map(|i| (i % 251) as u8).collect();
        assert_eq!(echo::PatternBody::sha256(40_000), sigv4::sha256_hex(&all));
    }
}
