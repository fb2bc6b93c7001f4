//! The one error type of the data path, and the one place where errors become responses.
//!
//! Every answer the sidecar produces itself (as opposed to relaying the upstream's) is built
//! here: a JSON body `{"error": code, "message": ...}` and the header `x-sigv4-sidecar-error`,
//! so an app can always tell the sidecar's answers from the upstream's.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

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
}

impl ProxyError {
    /// The machine-readable code, also used as the `error` label of `errors_total`.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::MethodNotAllowed => "method_not_allowed",
            ProxyError::PayloadTooLarge { .. } => "payload_too_large",
            ProxyError::CredentialsUnavailable { .. } => "credentials_unavailable",
            ProxyError::UpstreamUnreachable(_) => "upstream_unreachable",
            ProxyError::UpstreamTimeout(_) => "upstream_timeout",
            ProxyError::ClientBody(_) => "bad_request",
            ProxyError::Overloaded(_) => "overloaded",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::CredentialsUnavailable { .. } | ProxyError::Overloaded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::UpstreamUnreachable(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
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
            ProxyError::Overloaded(_) => "retry later",
        }
    }

    /// The response the app receives.
    pub fn into_response<B: From<Bytes>>(&self) -> Response<B> {
        let body = serde_json::json!({
            "error": self.code(),
            "message": format!("{}; {}", self, self.advice()),
        });
        let mut res = Response::new(B::from(Bytes::from(body.to_string())));
        *res.status_mut() = self.status();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(ERROR_HEADER, HeaderValue::from_static(self.code()));
        match self {
            ProxyError::CredentialsUnavailable { retry_after, .. } => {
                let secs = retry_after.as_secs().clamp(1, 300);
                h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            ProxyError::Overloaded(_) => {
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
        ];
        let expected = [
            (400, "bad_request"),
            (405, "method_not_allowed"),
            (413, "payload_too_large"),
            (503, "credentials_unavailable"),
            (502, "upstream_unreachable"),
            (504, "upstream_timeout"),
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
}
