//! An API Gateway stand-in on 127.0.0.1: the sidecar's upstream in tests and in the local demo.
//!
//! Every request is checked with the independent SigV4 verifier and answered the way API
//! Gateway answers (same status codes, `x-amzn-ErrorType` and JSON messages), then passed to a
//! backend: [`Backend::Echo`] describes exactly what arrived (for byte-for-byte forwarding tests),
//! [`Backend::Lambda`] builds a real REST API proxy event (payload 1.0) with the verified caller
//! as `identity.userArn` and runs the `hello-lambda` handler through lambda_http's own
//! conversion.
//!
//! Credentials are resolved through the STS emulator: issued credentials map to their assumed
//! role, the emulator's base credentials to `arn:aws:iam::<acct>:user/base`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::server::{self, full, HandlerError, RespBody, ShutdownGuard};
use crate::sigv4::{self, Expect, VerifyError};
use crate::sts::StsEmulator;

/// API id used in ARNs and events (API Gateway ids are 10 lower-case alphanumerics).
pub const API_ID: &str = "testbedapi";
/// Request bodies above this are refused (API Gateway's own limit is 10 MB).
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Frame size of `x-testbed-response-bytes` bodies.
const FRAME: usize = 16 * 1024;

/// What answers verified requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// 200 JSON describing the request exactly as received (see the module docs of the tests).
    Echo,
    /// The `hello-lambda` function behind a REST API proxy integration.
    Lambda,
}

/// How the gateway is set up.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub region: String,
    /// Signing service, `execute-api`.
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

/// One request as the gateway saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Request target as received (`/Prod/path?query`), byte for byte.
    pub target: String,
    /// Headers as hyper hands them over: lower-case names, first-arrival order of names,
    /// repeated values in arrival order.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body_len: usize,
    pub body_sha256: String,
    /// `Ok(caller ARN)` or `Err(reason)`, the reason including the canonical request and string
    /// to sign on a signature mismatch.
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
}

struct GwState {
    config: GatewayConfig,
    addr: SocketAddr,
    ca_pem: Option<String>,
    records: Mutex<Vec<Recorded>>,
    count: watch::Sender<usize>,
    rejected: AtomicUsize,
    counter: AtomicU64,
}

/// Handle to a running gateway; clones share it, the last drop (or `shutdown()`) stops it.
#[derive(Clone)]
pub struct Gateway {
    state: Arc<GwState>,
    guard: Arc<ShutdownGuard>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A private CA and a leaf for `localhost`/`127.0.0.1`, made fresh for each gateway so no key
/// material is ever checked in.
fn make_tls() -> std::io::Result<(TlsAcceptor, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let err = std::io::Error::other;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sigv4-testbed local CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(err)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(err)?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate().map_err(err)?;
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).map_err(err)?;

    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .map_err(std::io::Error::other)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), ca_pem))
}

impl Gateway {
    /// Starts the gateway on `127.0.0.1:0`.
    pub async fn start(config: GatewayConfig) -> std::io::Result<Gateway> {
        Self::start_on(config, 0).await
    }

    /// Starts the gateway on `127.0.0.1:port` (0 = any free port).
    pub async fn start_on(config: GatewayConfig, port: u16) -> std::io::Result<Gateway> {
        let (acceptor, ca_pem) = if config.tls {
            let (a, pem) = make_tls()?;
            (Some(a), Some(pem))
        } else {
            (None, None)
        };
        let (listener, addr) = server::bind_loopback(port).await?;
        let (guard, shutdown) = ShutdownGuard::new();
        let state = Arc::new(GwState {
            config,
            addr,
            ca_pem,
            records: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            rejected: AtomicUsize::new(0),
            counter: AtomicU64::new(0),
        });
        let served = state.clone();
        server::spawn(listener, acceptor, shutdown, move |req, peer| {
            let state = served.clone();
            async move { handle(state, req, peer).await }
        });
        Ok(Gateway {
            state,
            guard: Arc::new(guard),
        })
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
        let mut rx = self.state.count.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n))
            .await
            .is_ok_and(|r| r.is_ok());
        reached
    }

    /// How many requests were refused (any 403).
    pub fn rejected(&self) -> usize {
        self.state.rejected.load(Ordering::Relaxed)
    }

    /// The emulator the gateway resolves credentials with.
    pub fn sts(&self) -> &StsEmulator {
        &self.state.config.sts
    }

    /// `arn:aws:execute-api:<region>:<acct>:<api>/<stage>/<METHOD>/<path>` for a request.
    pub fn execute_api_arn(&self, method: &str, resource_path: &str) -> String {
        execute_api_arn(&self.state.config, method, resource_path)
    }

    pub fn shutdown(&self) {
        self.guard.shutdown();
    }
}

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

/// Who signed a request, once verified.
struct Caller {
    arn: String,
    user_id: String,
    account_id: String,
    access_key_id: String,
    session_token: Option<String>,
}

/// An API Gateway refusal.
struct Rejection {
    status: StatusCode,
    error_type: &'static str,
    body: serde_json::Value,
    reason: String,
}

impl Rejection {
    fn forbidden(error_type: &'static str, message: String, reason: String) -> Self {
        Rejection {
            status: StatusCode::FORBIDDEN,
            error_type,
            body: serde_json::json!({ "message": message }),
            reason,
        }
    }

    fn missing_token(reason: &str) -> Self {
        Self::forbidden(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token".into(),
            reason.into(),
        )
    }
}

const BAD_SIGNATURE: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

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

fn authorize(
    state: &GwState,
    method: &http::Method,
    target: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Caller, Rejection> {
    let config = &state.config;
    let sts = &config.sts;
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let Some(resource) = resource_path(&config.stage, path) else {
        return Err(Rejection::missing_token("path is not under the stage"));
    };
    let base = sts.base();
    let lookup = |akid: &str| {
        if akid == base.access_key_id {
            Some(base.clone())
        } else {
            sts.lookup(akid).map(|i| i.credentials)
        }
    };
    let now = SystemTime::now();
    let expect = Expect::new(config.region.clone(), config.service.clone()).at(now);
    let verified = sigv4::verify(method, target, headers, body, &expect, &lookup).map_err(|e| {
        let reason = e.to_string();
        match e {
            VerifyError::MissingAuthentication => Rejection::missing_token(&reason),
            VerifyError::Malformed(m) => {
                Rejection::forbidden("IncompleteSignatureException", m, reason)
            }
            VerifyError::UnknownAccessKey | VerifyError::TokenMismatch => Rejection::forbidden(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.".into(),
                reason,
            ),
            VerifyError::Expired => {
                let sent = headers
                    .get("x-amz-date")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let earliest = sigv4::format_amz_date(now - expect.max_skew);
                Rejection::forbidden(
                    "InvalidSignatureException",
                    format!(
                        "Signature expired: {sent} is now earlier than {earliest} ({} - 5 min.)",
                        sigv4::format_amz_date(now)
                    ),
                    reason,
                )
            }
            VerifyError::WrongScope(m) => {
                Rejection::forbidden("InvalidSignatureException", m, reason)
            }
            VerifyError::HostNotSigned => Rejection::forbidden(
                "InvalidSignatureException",
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into(),
                reason,
            ),
            VerifyError::SignatureMismatch { .. } => {
                Rejection::forbidden("InvalidSignatureException", BAD_SIGNATURE.into(), reason)
            }
        }
    })?;

    let caller = if verified.access_key_id == base.access_key_id {
        let arn = sts.base_arn();
        let allowed = config
            .allowed_roles
            .as_ref()
            .is_none_or(|roles| roles.contains(&arn));
        (
            arn,
            "AIDATESTBEDBASEUSER".to_string(),
            sts.account_id(),
            allowed,
        )
    } else {
        let Some(issued) = sts.lookup(&verified.access_key_id) else {
            return Err(Rejection::forbidden(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.".into(),
                "credential vanished from the emulator".into(),
            ));
        };
        if issued.expiration <= now {
            return Err(Rejection::forbidden(
                "ExpiredTokenException",
                "The security token included in the request is expired".into(),
                format!("credentials {} expired", issued.credentials.access_key_id),
            ));
        }
        let allowed = config
            .allowed_roles
            .as_ref()
            .is_none_or(|roles| roles.contains(&issued.role_arn));
        let account = issued
            .assumed_role_arn
            .split(':')
            .nth(4)
            .unwrap_or_default()
            .to_string();
        (
            issued.assumed_role_arn,
            issued.assumed_role_id,
            account,
            allowed,
        )
    };
    let (arn, user_id, account_id, allowed) = caller;
    if !allowed {
        let resource_arn = execute_api_arn(config, method.as_str(), resource);
        let message = format!(
            "User: {arn} is not authorized to perform: execute-api:Invoke on resource: {resource_arn}"
        );
        return Err(Rejection {
            status: StatusCode::FORBIDDEN,
            error_type: "AccessDeniedException",
            body: serde_json::json!({ "Message": message }),
            reason: format!("not allowed: {message}"),
        });
    }
    Ok(Caller {
        arn,
        user_id,
        account_id,
        access_key_id: verified.access_key_id,
        session_token: verified.session_token,
    })
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

async fn handle(
    state: Arc<GwState>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<RespBody>, HandlerError> {
    let n = state.counter.fetch_add(1, Ordering::Relaxed);
    let request_id = format!("7e57bed0-1111-4000-8000-{n:012x}");
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            // A body that cannot be read completely is a broken client; answer like API Gateway
            // does to an oversized payload.
            return Ok(json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &serde_json::json!({"message": format!("Request body unreadable or too large: {e}")}),
                &request_id,
            ));
        }
    };
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

    let outcome = authorize(&state, &parts.method, &target, &headers, &body);
    let body_sha256 = sigv4::sha256_hex(&body);
    let record = Recorded {
        method: parts.method.as_str().to_string(),
        target: target.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
            .collect(),
        body_len: body.len(),
        body_sha256: body_sha256.clone(),
        outcome: match &outcome {
            Ok(c) => Ok(c.arn.clone()),
            Err(r) => Err(r.reason.clone()),
        },
    };
    let caller = match outcome {
        Ok(c) => c,
        Err(rejection) => {
            state.rejected.fetch_add(1, Ordering::Relaxed);
            push_record(&state, record);
            let mut resp = json_response(rejection.status, &rejection.body, &request_id);
            resp.headers_mut().insert(
                "x-amzn-errortype",
                HeaderValue::from_static(rejection.error_type),
            );
            return Ok(resp);
        }
    };
    push_record(&state, record);

    match state.config.backend {
        Backend::Echo => Ok(echo(&parts, &target, &body, &body_sha256, &caller, &request_id).await),
        Backend::Lambda => {
            Ok(lambda(&state, &parts, &target, &body, &caller, peer, &request_id).await)
        }
    }
}

fn push_record(state: &GwState, record: Recorded) {
    lock(&state.records).push(record);
    state.count.send_modify(|c| *c += 1);
}

fn header_num<T: std::str::FromStr>(parts: &http::request::Parts, name: &str) -> Option<T> {
    parts.headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The echo backend, honouring the `x-testbed-*` control headers.
async fn echo(
    parts: &http::request::Parts,
    target: &str,
    body: &[u8],
    body_sha256: &str,
    caller: &Caller,
    request_id: &str,
) -> Response<RespBody> {
    if let Some(ms) = header_num::<u64>(parts, "x-testbed-delay-ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = header_num::<u16>(parts, "x-testbed-status")
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    if let Some(len) = header_num::<u64>(parts, "x-testbed-response-bytes") {
        let body = PatternBody::new(len);
        let mut resp = Response::new(BodyExt::boxed(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        if let Ok(v) = HeaderValue::from_str(&PatternBody::sha256(len)) {
            h.insert("x-testbed-body-sha256", v);
        }
        return resp;
    }
    let headers: Vec<serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| serde_json::json!([k.as_str(), String::from_utf8_lossy(v.as_bytes())]))
        .collect();
    let echo = serde_json::json!({
        "method": parts.method.as_str(),
        "version": format!("{:?}", parts.version),
        "target": target,
        "headers": headers,
        "body_len": body.len(),
        "body_sha256": body_sha256,
        "caller_arn": caller.arn,
        "access_key_id": caller.access_key_id,
        "session_token": caller.session_token,
    });
    json_response(status, &echo, request_id)
}

/// A deterministic body of `len` bytes (`byte[i] = i % 251`) sent in 16 KiB frames, so large
/// responses stream through the sidecar without either side holding them whole.
pub struct PatternBody {
    offset: u64,
    len: u64,
}

impl PatternBody {
    pub fn new(len: u64) -> Self {
        PatternBody { offset: 0, len }
    }

    fn chunk(offset: u64, n: usize) -> Bytes {
        (0..n as u64)
            .map(|i| ((offset + i) % 251) as u8)
            .collect::<Vec<u8>>()
            .into()
    }

    /// Hex SHA-256 of the `len`-byte pattern (what `x-testbed-body-sha256` carries).
    pub fn sha256(len: u64) -> String {
        let mut hasher = Sha256::new();
        let mut offset = 0;
        while offset < len {
            let n = (len - offset).min(FRAME as u64);
            hasher.update(Self::chunk(offset, n as usize));
            offset += n;
        }
        hex::encode(hasher.finalize())
    }
}

impl http_body::Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.offset >= self.len {
            return Poll::Ready(None);
        }
        let n = (self.len - self.offset).min(FRAME as u64);
        let chunk = Self::chunk(self.offset, n as usize);
        self.offset += n;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.offset >= self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.offset)
    }
}

/// Form-style decoding for query parameters in the proxy event (API Gateway decodes them).
fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// The REST API (payload 1.0) proxy integration event for a verified request.
fn proxy_event(
    state: &GwState,
    parts: &http::request::Parts,
    target: &str,
    body: &[u8],
    caller: &Caller,
    peer: SocketAddr,
    request_id: &str,
) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let config = &state.config;
    let (raw_path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let resource = resource_path(&config.stage, raw_path).unwrap_or("/");
    let path = decode(resource);

    let mut headers = Map::new();
    let mut multi_headers: Map<String, Value> = Map::new();
    for (k, v) in &parts.headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        headers.insert(k.as_str().to_string(), json!(v));
        if let Some(Value::Array(list)) = multi_headers.get_mut(k.as_str()) {
            list.push(json!(v));
        } else {
            multi_headers.insert(k.as_str().to_string(), json!([v]));
        }
    }
    let mut query = Map::new();
    let mut multi_query: Map<String, Value> = Map::new();
    for piece in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
        let (k, v) = (decode(k), decode(v));
        query.insert(k.clone(), json!(v));
        if let Some(Value::Array(list)) = multi_query.get_mut(&k) {
            list.push(json!(v));
        } else {
            multi_query.insert(k, json!([v]));
        }
    }
    let or_null = |m: Map<String, Value>| {
        if m.is_empty() {
            Value::Null
        } else {
            Value::Object(m)
        }
    };
    let (body_value, is_base64) = if body.is_empty() {
        (Value::Null, false)
    } else {
        match std::str::from_utf8(body) {
            Ok(text) => (json!(text), false),
            Err(_) => (
                json!(base64::engine::general_purpose::STANDARD.encode(body)),
                true,
            ),
        }
    };
    let user_agent = parts
        .headers
        .get(http::header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let host = format!("{}", state.addr);
    let stage = if config.stage.is_empty() {
        "$default"
    } else {
        config.stage.as_str()
    };
    json!({
        "resource": path,
        "path": path,
        "httpMethod": parts.method.as_str(),
        "headers": or_null(headers),
        "multiValueHeaders": or_null(multi_headers),
        "queryStringParameters": or_null(query),
        "multiValueQueryStringParameters": or_null(multi_query),
        "pathParameters": null,
        "stageVariables": null,
        "requestContext": {
            "accountId": config.sts.account_id(),
            "apiId": API_ID,
            "resourceId": "testbd",
            "stage": stage,
            "requestId": request_id,
            "extendedRequestId": request_id,
            "resourcePath": path,
            "httpMethod": parts.method.as_str(),
            "path": decode(raw_path),
            "protocol": format!("{:?}", parts.version),
            "domainName": host,
            "requestTimeEpoch": now,
            "identity": {
                "cognitoIdentityPoolId": null,
                "cognitoIdentityId": null,
                "cognitoAuthenticationType": null,
                "cognitoAuthenticationProvider": null,
                "apiKey": null,
                "apiKeyId": null,
                "principalOrgId": null,
                "accountId": caller.account_id,
                "caller": caller.user_id,
                "user": caller.user_id,
                "userArn": caller.arn,
                "accessKey": caller.access_key_id,
                "sourceIp": peer.ip().to_string(),
                "userAgent": user_agent,
            },
        },
        "body": body_value,
        "isBase64Encoded": is_base64,
    })
}

/// Runs the Lambda and turns its proxy answer into HTTP, as API Gateway does; an invocation
/// failure or a malformed answer is API Gateway's 502 `Internal server error`.
async fn lambda(
    state: &GwState,
    parts: &http::request::Parts,
    target: &str,
    body: &[u8],
    caller: &Caller,
    peer: SocketAddr,
    request_id: &str,
) -> Response<RespBody> {
    let event = proxy_event(state, parts, target, body, caller, peer, request_id);
    let bad_gateway = || {
        let mut resp = json_response(
            StatusCode::BAD_GATEWAY,
            &serde_json::json!({"message": "Internal server error"}),
            request_id,
        );
        resp.headers_mut().insert(
            "x-amzn-errortype",
            HeaderValue::from_static("InternalServerErrorException"),
        );
        resp
    };
    let Ok(answer) = hello_lambda::invoke_json(event).await else {
        return bad_gateway();
    };
    let Some(status) = answer["statusCode"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
    else {
        return bad_gateway();
    };
    let text = answer["body"].as_str().unwrap_or_default();
    let bytes: Vec<u8> = if answer["isBase64Encoded"].as_bool().unwrap_or(false) {
        match base64::engine::general_purpose::STANDARD.decode(text) {
            Ok(b) => b,
            Err(_) => return bad_gateway(),
        }
    } else {
        text.as_bytes().to_vec()
    };
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    let mut add = |k: &str, v: &serde_json::Value| {
        if let (Ok(name), Some(Ok(value))) = (
            HeaderName::from_bytes(k.as_bytes()),
            v.as_str().map(HeaderValue::from_str),
        ) {
            h.append(name, value);
        }
    };
    if let Some(map) = answer["headers"].as_object() {
        for (k, v) in map {
            add(k, v);
        }
    }
    if let Some(map) = answer["multiValueHeaders"].as_object() {
        for (k, vs) in map {
            for v in vs.as_array().into_iter().flatten() {
                add(k, v);
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    resp
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
    fn pattern_hash_is_framing_independent() {
        let all: Vec<u8> = (0..40_000u64).map(|i| (i % 251) as u8).collect();
        assert_eq!(PatternBody::sha256(40_000), sigv4::sha256_hex(&all));
    }
}
