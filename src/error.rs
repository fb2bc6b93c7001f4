//! The sidecar's errors, and the one place where they become answers.
//!
//! Every answer the sidecar produces itself (as opposed to relaying the upstream's) is built
//! here: a JSON body `{"error": code, "message": ...}` and the header `x-sigv4-sidecar-error`,
//! so an app can always tell the sidecar's answers from the upstream's. That includes the 503
//! written to a connection over `max_connections` before its request is parsed
//! ([`ProxyError::to_http1`]) and the admin port's JSON ([`json_answer`]). Each error also
//! decides how loudly it is logged ([`ProxyError::log`]).
//!
//! [`StartupError`] is the other half: everything that stops the process before it serves.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::config::ConfigError;
use crate::credentials::Unavailable;

/// Header on every response the sidecar produced itself.
pub const ERROR_HEADER: &str = "x-sigv4-sidecar-error";

/// Why a request was not (fully) proxied.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    BadRequest(String),
    #[error(
        "CONNECT is not supported: the sidecar only forwards requests to its configured upstream"
    )]
    MethodNotAllowed,
    #[error("request body is larger than max_body_bytes ({limit} bytes)")]
    PayloadTooLarge { limit: u64 },
    #[error("{reason}")]
    CredentialsUnavailable {
        reason: String,
        retry_after: Duration,
    },
    #[error("upstream unreachable: {0}")]
    UpstreamUnreachable(String),
    #[error("no response from the upstream within request_timeout ({0:?})")]
    UpstreamTimeout(Duration),
    #[error("request body could not be read: {0}")]
    ClientBody(String),
    #[error("too many concurrent requests: {0}")]
    Overloaded(String),
    /// A connection over `max_connections`: answered before its request is read.
    #[error("too many open connections (max_connections)")]
    TooManyConnections,
    /// The sidecar's own failure (signing could not complete): not the client's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<Unavailable> for ProxyError {
    fn from(u: Unavailable) -> Self {
        ProxyError::CredentialsUnavailable {
            reason: u.reason,
            retry_after: u.retry_after,
        }
    }
}

impl ProxyError {
    /// The machine-readable code, also used as the `error` label of `errors_total`.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) | ProxyError::ClientBody(_) => "bad_request",
            ProxyError::MethodNotAllowed => "method_not_allowed",
            ProxyError::PayloadTooLarge { .. } => "payload_too_large",
            ProxyError::CredentialsUnavailable { .. } => "credentials_unavailable",
            ProxyError::UpstreamUnreachable(_) => "upstream_unreachable",
            ProxyError::UpstreamTimeout(_) => "upstream_timeout",
            ProxyError::Overloaded(_) | ProxyError::TooManyConnections => "overloaded",
            ProxyError::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::CredentialsUnavailable { .. }
            | ProxyError::Overloaded(_)
            | ProxyError::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamUnreachable(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the app should do about it, appended to the message.
    fn advice(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => {
                "the sidecar forwards origin-form requests (/path?query) with one plain framing"
            }
            ProxyError::MethodNotAllowed => "send plain HTTP requests to the sidecar, not a tunnel",
            ProxyError::PayloadTooLarge { .. } => "send a smaller body or raise max_body_bytes",
            ProxyError::CredentialsUnavailable { .. } => {
                "retry after Retry-After seconds; check the sidecar's logs and /readyz"
            }
            ProxyError::UpstreamUnreachable(_) => {
                "retry; check the upstream URL, DNS and network path"
            }
            ProxyError::UpstreamTimeout(_) => {
                "retry; raise request_timeout if the upstream is slow"
            }
            ProxyError::ClientBody(_) => "resend the request",
            ProxyError::Overloaded(_) | ProxyError::TooManyConnections => "retry later",
            ProxyError::Internal(_) => "this is a sidecar bug: report it with the sidecar's logs",
        }
    }

    /// Logs the error at the level it deserves: the sidecar's own failures are errors, what
    /// an operator must act on (credentials, upstream, connection flood) a warning, and what a
    /// client got wrong only debug (the access log line records it anyway).
    pub fn log(&self, route: Option<&str>) {
        let what = match self {
            ProxyError::TooManyConnections => "max_connections reached: refusing a connection",
            _ => "request failed",
        };
        match self {
            ProxyError::Internal(_) => tracing::error!(route, error = %self, "{what}"),
            ProxyError::UpstreamUnreachable(_)
            | ProxyError::CredentialsUnavailable { .. }
            | ProxyError::TooManyConnections => tracing::warn!(route, error = %self, "{what}"),
            _ => tracing::debug!(route, error = %self, "{what}"),
        }
    }

    /// The response the app receives.
    pub fn into_response<B: From<Bytes>>(&self) -> Response<B> {
        let body = serde_json::json!({
            "error": self.code(),
            "message": format!("{}; {}", self, self.advice()),
        });
        let mut res = json_answer(self.status(), &body);
        let h = res.headers_mut();
        h.insert(ERROR_HEADER, HeaderValue::from_static(self.code()));
        match self {
            ProxyError::CredentialsUnavailable { retry_after, .. } => {
                let secs = retry_after.as_secs().clamp(1, 300);
                h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            ProxyError::Overloaded(_) | ProxyError::TooManyConnections => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ProxyError::PayloadTooLarge { .. } | ProxyError::BadRequest(_) => {
                // The unread rest of the body would otherwise be parsed as the next request.
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        res
    }

    /// The same answer as raw HTTP/1.1 bytes with `connection: close`, for a connection that
    /// is answered without being handed to hyper (over `max_connections`). Built once per
    /// listener, so a connection flood costs one write per connection.
    pub fn to_http1(&self) -> Bytes {
        let res: Response<Bytes> = self.into_response();
        let status = res.status();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
        .into_bytes();
        for (name, value) in res.headers() {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let body = res.body();
        out.extend_from_slice(
            format!(
                "connection: close\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(body);
        Bytes::from(out)
    }
}

/// A JSON answer: the shape of every response the sidecar writes itself (errors here, and the
/// admin port's `/healthz`, `/readyz` and refusals).
pub fn json_answer<B: From<Bytes>>(status: StatusCode, body: &serde_json::Value) -> Response<B> {
    let mut res = Response::new(B::from(Bytes::from(body.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// Why the process cannot start: reported once, before anything is served, then exit 1.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("configuration error: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen {
        what: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("route {route}: {problem}")]
    Route { route: String, problem: String },
    #[error("AWS SDK setup: {0}")]
    Aws(String),
}

/// An error and its causes, each by its `Display`, joined with `: `, for logs and the
/// messages of 502 and 503 answers. Deliberately not aws-smithy's `DisplayErrorContext`: that
/// appends the error's `Debug`, which for an STS answer the SDK could not parse includes the raw
/// body, and the body may hold a secret access key and a session token.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn every_error_is_json_with_the_header() {
        let errors = [
            ProxyError::BadRequest("x".into()),
            ProxyError::MethodNotAllowed,
            ProxyError::PayloadTooLarge { limit: 1 },
            ProxyError::CredentialsUnavailable {
                reason: "none yet".into(),
                retry_after: Duration::from_secs(5),
            },
            ProxyError::UpstreamUnreachable("refused".into()),
            ProxyError::UpstreamTimeout(Duration::from_secs(1)),
            ProxyError::TooManyConnections,
            ProxyError::Internal("x".into()),
        ];
        let expected = [
            (400, "bad_request"),
            (405, "method_not_allowed"),
            (413, "payload_too_large"),
            (503, "credentials_unavailable"),
            (502, "upstream_unreachable"),
            (504, "upstream_timeout"),
            (503, "overloaded"),
            (500, "internal"),
        ];
        for (e, (status, code)) in errors.iter().zip(expected) {
            let res: Response<Full<Bytes>> = e.into_response();
            assert_eq!(res.status().as_u16(), status);
            assert_eq!(res.headers()[ERROR_HEADER], code);
            let body = res.into_body().collect().await.expect("body").to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(v["error"], code);
            assert!(v["message"].as_str().is_some_and(|m| m.len() > 10));
        }
        let res: Response<Full<Bytes>> = errors[3].into_response();
        assert_eq!(res.headers()[header::RETRY_AFTER], "5");
    }

    #[test]
    fn the_connection_limit_answer_is_well_formed_http1() {
        let wire = ProxyError::TooManyConnections.to_http1();
        let text = std::str::from_utf8(&wire).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        for line in [
            "x-sigv4-sidecar-error: overloaded",
            "retry-after: 1",
            "connection: close",
            "content-type: application/json",
        ] {
            assert!(head.lines().any(|l| l == line), "{line} missing in {head}");
        }
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.parse().ok())
            .expect("content-length");
        assert_eq!(len, body.len());
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["error"], "overloaded");
        assert_eq!(
            v["message"],
            "too many open connections (max_connections); retry later"
        );
    }
}
