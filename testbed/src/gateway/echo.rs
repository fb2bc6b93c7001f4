//! The echo backend: a 200 JSON description of the request exactly as it arrived, and the
//! `x-testbed-*` control headers (status, delay, a streamed response of N pattern bytes).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

use super::{json_response, Caller};
use crate::server::{ConnInfo, RespBody};

/// Frame size of `x-testbed-response-bytes` bodies.
const FRAME: usize = 16 * 1024;

fn header_num<T: std::str::FromStr>(parts: &http::request::Parts, name: &str) -> Option<T> {
    parts.headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The echo backend, honouring the `x-testbed-*` control headers.
/// What the echo answer reports about the body: for a streamed (VPC Lattice) request it was
/// hashed frame by frame and never held.
pub(super) struct BodySummary<'a> {
    pub(super) len: usize,
    pub(super) sha256: &'a str,
}

/// The echo answer. Its JSON: `method`, `version`, `target`, `headers` (`[[name, value], ...]`
/// in arrival order, after a CloudFront-like hop if on), `body_len`, `body_sha256`,
/// `caller_arn`, `access_key_id`, `session_token`, `algorithm`, `signed_headers`,
/// `server_name` (TLS SNI, or null).
pub(super) async fn echo(
    parts: &http::request::Parts,
    target: &str,
    body: BodySummary<'_>,
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
        "body_len": body.len,
        "body_sha256": body.sha256,
        "caller_arn": caller.arn,
        "access_key_id": caller.access_key_id,
        "session_token": caller.session_token,
        "algorithm": caller.algorithm,
        "signed_headers": caller.signed_headers,
        "server_name": parts.extensions.get::<ConnInfo>().and_then(|c| c.server_name.clone()),
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
