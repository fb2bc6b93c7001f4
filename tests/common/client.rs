//! The app's side: plain HTTP/1.1 requests to the sidecar (or the admin port), answers read
//! whole into a [`Reply`]; and raw bytes for what a well-behaved client would not send.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A simple response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The string at `pointer` (RFC 6901, `/routes/search/reason`) in the JSON body; `""` if
    /// there is none.
    pub fn json_str(&self, pointer: &str) -> String {
        self.json()
            .pointer(pointer)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    }

    /// Asserts the string at `pointer` in the JSON body contains `needle`.
    #[track_caller]
    pub fn assert_json_contains(&self, pointer: &str, needle: &str) {
        let text = self.json_str(pointer);
        assert!(
            text.contains(needle),
            "{pointer} {text:?} lacks {needle:?}: {}",
            String::from_utf8_lossy(&self.body)
        );
    }

    /// Asserts this is one of the sidecar's own answers: status, code header, JSON body.
    #[track_caller]
    pub fn assert_sidecar(&self, status: u16, code: &str) {
        assert_eq!(
            self.status,
            status,
            "{:?}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.sidecar_error(), Some(code));
        assert_eq!(self.json()["error"], code);
        assert!(!self.json_str("/message").is_empty());
    }

    /// The sidecar's own error code, if it produced this answer.
    pub fn sidecar_error(&self) -> Option<&str> {
        self.headers
            .get("x-sigv4-sidecar-error")
            .and_then(|v| v.to_str().ok())
    }

    /// For an echo answer: the headers the upstream received, lower-cased names.
    pub fn echoed_headers(&self) -> HashMap<String, Vec<String>> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for pair in self.json()["headers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let name = pair[0].as_str().unwrap_or_default().to_ascii_lowercase();
            out.entry(name)
                .or_default()
                .push(pair[1].as_str().unwrap_or_default().to_string());
        }
        out
    }
}

/// A plain HTTP/1.1 client (no pooling surprises between tests).
pub fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request and reads the whole answer.
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into())).expect("request");
    let res = client()
        .request(req)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e:?}"));
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

pub async fn get(url: &str) -> Reply {
    get_with(url, &[]).await
}

/// A GET with these request headers (the testbed's `x-testbed-*` controls, an app's own
/// `authorization`, ...).
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    send("GET", url, headers, Bytes::new()).await
}

/// Writes raw bytes to `addr` and reads until the peer closes or `timeout` passes.
pub async fn raw(addr: SocketAddr, request: &[u8], timeout: Duration) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in a raw HTTP/1.1 answer.
pub fn raw_status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

/// Polls `url` until it answers `status` (a readiness endpoint is the signal here).
pub async fn wait_status(url: &str, status: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Ok(res)) = tokio::time::timeout(
            Duration::from_secs(2),
            client().get(url.parse().expect("uri")),
        )
        .await
        {
            if res.status().as_u16() == status {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
