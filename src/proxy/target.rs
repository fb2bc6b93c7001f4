//! The request head: how the app's request becomes the upstream request head. Pure (no I/O),
//! so the fuzz target drives it directly. It must never forward what a forward proxy would
//! (absolute-form, CONNECT), nor a hop-by-hop or client signing header.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri, Version};

use crate::config::Upstream;
use crate::error::ProxyError;

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
    pub fn new(upstream: &Upstream, max_body_bytes: u64) -> Self {
        Target {
            uri_prefix: format!(
                "{}://{}{}",
                upstream.scheme, upstream.authority, upstream.base_path
            ),
            host_header: upstream.host_header.clone(),
            max_body_bytes,
            client_authorization_to: None,
        }
    }

    /// Forwards the app's own `Authorization` under `to` instead of dropping it.
    pub fn with_client_authorization_to(mut self, to: Option<HeaderName>) -> Self {
        self.client_authorization_to = to;
        self
    }

    /// Rewrites `parts` (as received from the app) into the upstream request head: refuses
    /// CONNECT and absolute-form targets, appends the target to the upstream URL byte for byte,
    /// drops hop-by-hop and client signing headers, sets `Host`, and refuses a declared body
    /// over the limit before any of it is read. Returns the declared body length, if any.
    pub fn prepare(&self, parts: &mut http::request::Parts) -> Result<Option<u64>, ProxyError> {
        if parts.method == Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed);
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

pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
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

pub(super) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ProxyError> {
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
}
