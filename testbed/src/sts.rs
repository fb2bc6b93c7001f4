//! An STS emulator on 127.0.0.1 speaking the awsQuery protocol exactly as `aws-sdk-sts` does:
//! a form-encoded `POST /` (`Action=AssumeRole&Version=2011-06-15&RoleArn=...`) answered with
//! `<AssumeRoleResponse><AssumeRoleResult>...` XML, errors as
//! `<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/></ErrorResponse>`.
//!
//! `AssumeRole` must be SigV4-signed (service `sts`, any region) with the configured base
//! credentials or with credentials issued by `AssumeRoleWithWebIdentity`, which is unsigned
//! (like the real one) so the default chain's IRSA path can be exercised end to end.
//! Every issued credential is unique and recorded, so the gateway can map an access key back to
//! its role and tests can assert what the sidecar asked for. Faults are injected with
//! [`StsEmulator::set_mode`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::server::{self, full, lock, HandlerError, RespBody, Running};
use crate::sigv4::{self, Credentials, Expect, VerifyError};

const XMLNS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
/// STS request bodies are small forms; anything bigger is a client bug.
const MAX_BODY: usize = 64 * 1024;

/// How the emulator is set up.
#[derive(Clone, Debug)]
pub struct StsConfig {
    /// The base credentials a caller must sign `AssumeRole` with.
    pub base: Credentials,
    /// Account id used for the base user's ARN.
    pub account_id: String,
    /// How long issued credentials live. `DurationSeconds` is recorded but ignored, so tests can
    /// use lifetimes of seconds (real STS refuses less than 900 s).
    pub lifetime: Duration,
}

impl StsConfig {
    /// `base` credentials, account `111111111111`, one-hour credentials.
    pub fn new(base: Credentials) -> Self {
        StsConfig {
            base,
            account_id: "111111111111".to_string(),
            lifetime: Duration::from_secs(3600),
        }
    }
}

/// Fault injection: what the emulator answers to every request (all actions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StsMode {
    /// Normal behaviour.
    Ok,
    /// 400 `Throttling` / `Rate exceeded` (the SDK treats it as retryable).
    Throttling,
    /// 500 `InternalError`.
    InternalError,
    /// Accept the request and answer nothing until the mode changes (then answer per the new
    /// mode) or the client gives up.
    Hang,
    /// Drop the TCP connection without an answer.
    CloseConnection,
    /// 200 with a body that is not XML.
    MalformedXml,
    /// 403 `AccessDenied` (not authorized to perform sts:AssumeRole).
    AccessDenied,
}

/// One credential the emulator issued.
#[derive(Clone, Debug)]
pub struct Issued {
    pub role_arn: String,
    pub session_name: String,
    pub external_id: Option<String>,
    pub duration_seconds: Option<u64>,
    pub credentials: Credentials,
    pub expiration: SystemTime,
    /// `arn:aws:sts::<acct>:assumed-role/<role-name>/<session-name>`.
    pub assumed_role_arn: String,
    /// `AROA...:<session-name>`, API Gateway's `identity.caller`/`user`.
    pub assumed_role_id: String,
    /// `"AssumeRole"` or `"AssumeRoleWithWebIdentity"`.
    pub via: &'static str,
    pub web_identity_token: Option<String>,
    /// The access key id that signed the `AssumeRole` call (`None` for web identity).
    pub signed_with: Option<String>,
}

struct StsState {
    addr: SocketAddr,
    base: Credentials,
    account_id: String,
    lifetime: Mutex<Duration>,
    mode: watch::Sender<StsMode>,
    calls: watch::Sender<usize>,
    issued: Mutex<Vec<Issued>>,
    counter: AtomicU64,
    /// Mixed into generated secrets so two emulators never issue the same secret.
    seed: u128,
}

/// Handle to a running STS emulator. Clones share the server; the server stops when the last
/// handle is dropped or [`StsEmulator::shutdown`] is called.
#[derive(Clone, Debug)]
pub struct StsEmulator {
    state: Running<StsState>,
}

impl StsEmulator {
    /// Starts the emulator on `127.0.0.1:0`.
    pub async fn start(config: StsConfig) -> std::io::Result<StsEmulator> {
        Self::start_on(config, 0).await
    }

    /// Starts the emulator on `127.0.0.1:port` (0 = any free port).
    pub async fn start_on(config: StsConfig, port: u16) -> std::io::Result<StsEmulator> {
        let (listener, addr) = server::bind_loopback(port).await?;
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ u128::from(addr.port());
        let state = StsState {
            addr,
            base: config.base,
            account_id: config.account_id,
            lifetime: Mutex::new(config.lifetime),
            mode: watch::channel(StsMode::Ok).0,
            calls: watch::channel(0).0,
            issued: Mutex::new(Vec::new()),
            counter: AtomicU64::new(0),
            seed,
        };
        let state = server::serve(listener, None, state, |state, req, _peer| {
            handle(state, req)
        })?;
        Ok(StsEmulator { state })
    }

    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL_STS` or an SDK `endpoint_url`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.state.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.state.addr
    }

    /// The configured base credentials.
    pub fn base(&self) -> Credentials {
        self.state.base.clone()
    }

    pub fn account_id(&self) -> String {
        self.state.account_id.clone()
    }

    /// ARN the gateway reports for callers signing with the base credentials.
    pub fn base_arn(&self) -> String {
        format!("arn:aws:iam::{}:user/base", self.state.account_id)
    }

    pub fn set_mode(&self, mode: StsMode) {
        self.state.mode.send_replace(mode);
    }

    pub fn mode(&self) -> StsMode {
        *self.state.mode.borrow()
    }

    /// Lifetime of credentials issued from now on.
    pub fn set_lifetime(&self, lifetime: Duration) {
        *lock(&self.state.lifetime) = lifetime;
    }

    /// Requests received so far, failed ones included.
    pub fn calls(&self) -> usize {
        *self.state.calls.borrow()
    }

    /// Waits until at least `n` requests have arrived; false on timeout. No polling or sleeps.
    pub async fn wait_for_calls(&self, n: usize, timeout: Duration) -> bool {
        server::wait_for_count(&self.state.calls, n, timeout).await
    }

    /// Every credential issued so far, oldest first.
    pub fn issued(&self) -> Vec<Issued> {
        lock(&self.state.issued).clone()
    }

    /// The issued credential with this access key id.
    pub fn lookup(&self, access_key_id: &str) -> Option<Issued> {
        lock(&self.state.issued)
            .iter()
            .find(|i| i.credentials.access_key_id == access_key_id)
            .cloned()
    }

    /// Stops the server (all handles).
    pub fn shutdown(&self) {
        self.state.shutdown();
    }
}

fn request_id(state: &StsState) -> String {
    let n = state.counter.fetch_add(1, Ordering::Relaxed);
    format!("7e57bed0-0000-4000-8000-{n:012x}")
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn xml_response(status: StatusCode, request_id: &str, body: String) -> Response<RespBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/xml"),
    );
    if let Ok(v) = http::HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

/// STS's awsQuery error document.
fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
) -> Response<RespBody> {
    let kind = if status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    let body = format!(
        "<ErrorResponse xmlns=\"{XMLNS}\">\n  <Error>\n    <Type>{kind}</Type>\n    <Code>{}</Code>\n    <Message>{}</Message>\n  </Error>\n  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n",
        xml_escape(code),
        xml_escape(message)
    );
    xml_response(status, request_id, body)
}

/// Parses `application/x-www-form-urlencoded` (`+` is a space).
fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |x: &str| {
                percent_encoding::percent_decode_str(&x.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

async fn handle(
    state: Arc<StsState>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, HandlerError> {
    state.calls.send_modify(|c| *c += 1);
    let rid = request_id(&state);
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(error_response(
                StatusCode::BAD_REQUEST,
                "ValidationError",
                "request body too large or unreadable",
                &rid,
            ));
        }
    };

    // Hang until the mode changes; the wait ends with the connection if the client gives up.
    let mut mode_rx = state.mode.subscribe();
    let mode = loop {
        let m = *mode_rx.borrow_and_update();
        if m != StsMode::Hang {
            break m;
        }
        if mode_rx.changed().await.is_err() {
            return Err("emulator stopped".into());
        }
    };
    match mode {
        StsMode::Ok | StsMode::Hang => {}
        StsMode::Throttling => {
            return Ok(error_response(
                StatusCode::BAD_REQUEST,
                "Throttling",
                "Rate exceeded",
                &rid,
            ))
        }
        StsMode::InternalError => {
            return Ok(error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "An internal error occurred.",
                &rid,
            ))
        }
        StsMode::CloseConnection => {
            return Err("closing the connection on purpose (StsMode::CloseConnection)".into())
        }
        StsMode::MalformedXml => {
            return Ok(xml_response(
                StatusCode::OK,
                &rid,
                "<AssumeRoleResponse><this is not xml".to_string(),
            ))
        }
        StsMode::AccessDenied => {
            return Ok(error_response(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "User is not authorized to perform: sts:AssumeRole (StsMode::AccessDenied)",
                &rid,
            ))
        }
    }

    let mut params = parse_form(parts.uri.query().unwrap_or(""));
    params.extend(parse_form(&String::from_utf8_lossy(&body)));
    let param = |name: &str| last_param(&params, name);

    match param("Action").as_deref() {
        Some("AssumeRole") => {
            let target = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let mut headers = parts.headers.clone();
            if !headers.contains_key(http::header::HOST) {
                if let Some(v) = parts
                    .uri
                    .authority()
                    .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
                {
                    headers.insert(http::header::HOST, v);
                }
            }
            let now = SystemTime::now();
            let lookup = |akid: &str| -> Option<Credentials> {
                if akid == state.base.access_key_id {
                    return Some(state.base.clone());
                }
                lock(&state.issued)
                    .iter()
                    .find(|i| {
                        i.via == "AssumeRoleWithWebIdentity" && i.credentials.access_key_id == akid
                    })
                    .map(|i| i.credentials.clone())
            };
            let verified = sigv4::verify(
                &parts.method,
                target,
                &headers,
                &body,
                &Expect::new("*", "sts").at(now),
                &lookup,
            );
            let verified = match verified {
                Ok(v) => v,
                Err(e) => return Ok(signature_error(&e, &rid)),
            };
            let expired = lock(&state.issued).iter().any(|i| {
                i.credentials.access_key_id == verified.access_key_id && i.expiration <= now
            });
            if expired {
                return Ok(error_response(
                    StatusCode::FORBIDDEN,
                    "ExpiredToken",
                    "The security token included in the request is expired",
                    &rid,
                ));
            }
            issue(
                &state,
                &params,
                "AssumeRole",
                Some(verified.access_key_id),
                &rid,
            )
        }
        Some("AssumeRoleWithWebIdentity") => {
            issue(&state, &params, "AssumeRoleWithWebIdentity", None, &rid)
        }
        Some(other) => Ok(error_response(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            &format!("Could not find operation {other} for version 2011-06-15"),
            &rid,
        )),
        None => Ok(error_response(
            StatusCode::BAD_REQUEST,
            "MissingAction",
            "Missing Action",
            &rid,
        )),
    }
}

/// STS's answers to signature problems.
fn signature_error(e: &VerifyError, rid: &str) -> Response<RespBody> {
    let (status, code, message) = match e {
        VerifyError::MissingAuthentication => {
            (StatusCode::FORBIDDEN, "MissingAuthenticationToken", "Request is missing Authentication Token".to_string())
        }
        VerifyError::Malformed(m) => (StatusCode::BAD_REQUEST, "IncompleteSignature", m.clone()),
        VerifyError::UnknownAccessKey | VerifyError::TokenMismatch => (
            StatusCode::FORBIDDEN,
            "InvalidClientTokenId",
            "The security token included in the request is invalid.".to_string(),
        ),
        VerifyError::Expired => (StatusCode::FORBIDDEN, "SignatureDoesNotMatch", "Signature expired".to_string()),
        VerifyError::WrongScope(m) => (StatusCode::FORBIDDEN, "SignatureDoesNotMatch", m.clone()),
        VerifyError::HostNotSigned | VerifyError::SignatureMismatch { .. } => (
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.".to_string(),
        ),
    };
    error_response(status, code, &message, rid)
}

/// `arn:aws:iam::<12 digits>:role/[path/]<name>` -> (account, role name).
fn parse_role_arn(arn: &str) -> Option<(String, String)> {
    let rest = arn.strip_prefix("arn:aws:iam::")?;
    let (account, resource) = rest.split_once(':')?;
    let role_path = resource.strip_prefix("role/")?;
    let name = role_path.rsplit('/').next()?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) || name.is_empty() {
        return None;
    }
    Some((account.to_string(), name.to_string()))
}

fn issue(
    state: &StsState,
    params: &[(String, String)],
    via: &'static str,
    signed_with: Option<String>,
    rid: &str,
) -> Result<Response<RespBody>, HandlerError> {
    let param = |name: &str| last_param(params, name);
    let validation = |m: &str| {
        Ok(error_response(
            StatusCode::BAD_REQUEST,
            "ValidationError",
            m,
            rid,
        ))
    };
    let Some(role_arn) = param("RoleArn") else {
        return validation("1 validation error detected: Value null at 'roleArn' failed to satisfy constraint: Member must not be null");
    };
    let Some((account, role_name)) = parse_role_arn(&role_arn) else {
        return validation(&format!("{role_arn} is invalid"));
    };
    let Some(session_name) = param("RoleSessionName").filter(|s| !s.is_empty()) else {
        return validation("1 validation error detected: Value null at 'roleSessionName' failed to satisfy constraint: Member must not be null");
    };
    let web_identity_token = param("WebIdentityToken");
    if via == "AssumeRoleWithWebIdentity" && web_identity_token.as_deref().is_none_or(str::is_empty)
    {
        return validation("1 validation error detected: Value null at 'webIdentityToken' failed to satisfy constraint: Member must not be null");
    }
    let duration_seconds = match param("DurationSeconds") {
        None => None,
        Some(d) => match d.parse::<u64>() {
            Ok(d) => Some(d),
            Err(_) => return validation(&format!("DurationSeconds {d:?} is not a number")),
        },
    };

    let n = state.counter.fetch_add(1, Ordering::Relaxed) + 1;
    let material = |label: &str| hex::encode(Sha256::digest(format!("{label}/{n}/{}", state.seed)));
    let credentials = Credentials {
        access_key_id: format!("ASIATESTBED{n:06}"),
        secret_access_key: material("secret")[..40].to_string(),
        session_token: Some(format!(
            "IQoJtestbed{}{}",
            material("token-a"),
            material("token-b")
        )),
    };
    let expiration = SystemTime::now() + *lock(&state.lifetime);
    let assumed_role_id = format!("AROATESTBED{n:06}:{session_name}");
    let assumed_role_arn =
        format!("arn:aws:sts::{account}:assumed-role/{role_name}/{session_name}");
    let issued = Issued {
        role_arn,
        session_name,
        external_id: param("ExternalId"),
        duration_seconds,
        credentials: credentials.clone(),
        expiration,
        assumed_role_arn: assumed_role_arn.clone(),
        assumed_role_id: assumed_role_id.clone(),
        via,
        web_identity_token,
        signed_with,
    };
    lock(&state.issued).push(issued);

    let creds_xml = format!(
        "<Credentials>\n      <AccessKeyId>{}</AccessKeyId>\n      <SecretAccessKey>{}</SecretAccessKey>\n      <SessionToken>{}</SessionToken>\n      <Expiration>{}</Expiration>\n    </Credentials>",
        credentials.access_key_id,
        credentials.secret_access_key,
        credentials.session_token.as_deref().unwrap_or_default(),
        sigv4::format_iso8601(expiration),
    );
    let user_xml = format!(
        "<AssumedRoleUser>\n      <AssumedRoleId>{}</AssumedRoleId>\n      <Arn>{}</Arn>\n    </AssumedRoleUser>",
        xml_escape(&assumed_role_id),
        xml_escape(&assumed_role_arn)
    );
    let extra = if via == "AssumeRoleWithWebIdentity" {
        "\n    <SubjectFromWebIdentityToken>system:serviceaccount:testbed:sigv4-sidecar</SubjectFromWebIdentityToken>\n    <Audience>sts.amazonaws.com</Audience>\n    <Provider>testbed</Provider>"
    } else {
        ""
    };
    let body = format!(
        "<{via}Response xmlns=\"{XMLNS}\">\n  <{via}Result>\n    {creds_xml}\n    {user_xml}{extra}\n  </{via}Result>\n  <ResponseMetadata>\n    <RequestId>{rid}</RequestId>\n  </ResponseMetadata>\n</{via}Response>\n"
    );
    Ok(xml_response(StatusCode::OK, rid, body))
}

/// The last value given for `name` (a later query or form value overrides an earlier one).
fn last_param(params: &[(String, String)], name: &str) -> Option<String> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns() {
        assert_eq!(
            parse_role_arn("arn:aws:iam::111111111111:role/path/demo"),
            Some(("111111111111".into(), "demo".into()))
        );
        assert_eq!(parse_role_arn("arn:aws:iam::1111:role/demo"), None);
        assert_eq!(parse_role_arn("arn:aws:iam::111111111111:user/demo"), None);
    }

    #[test]
    fn forms_decode_plus_and_escapes() {
        assert_eq!(
            parse_form("Action=AssumeRole&RoleSessionName=a+b%2Fc&x"),
            vec![
                ("Action".into(), "AssumeRole".into()),
                ("RoleSessionName".into(), "a b/c".into()),
                ("x".into(), "".into())
            ]
        );
    }
}
