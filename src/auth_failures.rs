//! Diagnosing a rejected signature (SPEC "Diagnosing a rejected signature").
//!
//! When the upstream answers 403 with one of AWS's signature or token errors, the route counts
//! it in `sigv4_sidecar_upstream_auth_failures_total{route, reason}` and, at most once per route
//! every [`WARN_EVERY`], logs a `warn` holding the upstream's message (AWS puts *its* canonical
//! request in it) next to the sidecar's canonical request and string-to-sign, so a user can diff
//! the two. Only 403s pay for this: their body is read up to [`PEEK_LIMIT`] bytes and then
//! forwarded to the app unchanged (the rest still streams); every other answer is untouched.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use prometheus::IntCounter;

/// How much of a 403's body is read to find AWS's message; AWS's error bodies are far smaller.
pub const PEEK_LIMIT: usize = 8 * 1024;
/// At most one `warn` per route in this window.
pub const WARN_EVERY: Duration = Duration::from_secs(10);
/// The upstream's message is cut to this in the log line.
const MESSAGE_LIMIT: usize = 4096;

/// Why AWS refused the request, the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    SignatureMismatch,
    ExpiredToken,
    InvalidToken,
    AccessDenied,
    Other,
}

impl Reason {
    pub const ALL: [Reason; 5] = [
        Reason::SignatureMismatch,
        Reason::ExpiredToken,
        Reason::InvalidToken,
        Reason::AccessDenied,
        Reason::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reason::SignatureMismatch => "signature_mismatch",
            Reason::ExpiredToken => "expired_token",
            Reason::InvalidToken => "invalid_token",
            Reason::AccessDenied => "access_denied",
            Reason::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// AWS's error as far as a 403 tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    /// `x-amzn-ErrorType`, up to its first `:`.
    pub error_type: Option<String>,
    /// The body's `message` / `Message` (JSON or XML), or the body text.
    pub message: String,
}

/// Classifies a 403 by `x-amzn-ErrorType` and the body's message. `None`: nothing in it says
/// AWS refused the credentials or the signature (an app's own 403 is not counted).
pub fn classify(headers: &HeaderMap, body: &[u8]) -> Option<Refusal> {
    let error_type = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(':').next().unwrap_or(v).trim().to_string())
        .filter(|v| !v.is_empty());
    let message = message_of(body);
    let by_type = error_type.as_deref().and_then(reason_of_type);
    let by_text = reason_of_text(&message);
    let reason = match (by_type, by_text, &error_type) {
        (Some(r), _, _) | (None, Some(r), _) => r,
        (None, None, Some(_)) => Reason::Other,
        (None, None, None) => return None,
    };
    Some(Refusal {
        reason,
        error_type,
        message,
    })
}

fn reason_of_type(t: &str) -> Option<Reason> {
    Some(match t {
        "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignatureException"
        | "IncompleteSignature" => Reason::SignatureMismatch,
        "ExpiredTokenException" | "ExpiredToken" | "TokenRefreshRequired" => Reason::ExpiredToken,
        "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidToken"
        | "InvalidTokenException" => Reason::InvalidToken,
        "AccessDeniedException" | "AccessDenied" => Reason::AccessDenied,
        _ => return None,
    })
}

fn reason_of_text(m: &str) -> Option<Reason> {
    let m = m.to_ascii_lowercase();
    if m.contains("signature we calculated does not match")
        || m.contains("does not match the signature")
    {
        Some(Reason::SignatureMismatch)
    } else if m.contains("token") && m.contains("expired") {
        Some(Reason::ExpiredToken)
    } else if m.contains("security token included in the request is invalid")
        || m.contains("token included in the request is invalid")
    {
        Some(Reason::InvalidToken)
    } else if m.contains("is not authorized to perform")
        || m.contains("explicit deny")
        || m.contains("access denied")
    {
        Some(Reason::AccessDenied)
    } else {
        None
    }
}

/// The message in an AWS error body: JSON `message`/`Message`, XML `<Message>`, else the text.
fn message_of(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        for k in ["message", "Message", "errorMessage"] {
            if let Some(m) = v.get(k).and_then(|m| m.as_str()) {
                return m.to_string();
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    if let Some(start) = text.find("<Message>") {
        let rest = &text[start + "<Message>".len()..];
        if let Some(end) = rest.find("</Message>") {
            return rest[..end].to_string();
        }
    }
    text.into_owned()
}

/// Replaces every secret in `secrets`, wherever it appears, and the value of every canonical
/// header line `<name>:<value>` for the names in `headers` (lowercase; AWS's own canonical
/// request in its message lists them) by `<redacted>`.
pub fn redact(text: &str, secrets: &[&str], headers: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(s, "<redacted>");
    }
    for name in headers {
        let needle = format!("{name}:");
        let mut from = 0;
        while let Some(i) = out[from..].to_ascii_lowercase().find(&needle) {
            let start = from + i + needle.len();
            let end = out[start..]
                .find(['\n', '\r', '"', '\\'])
                .map_or(out.len(), |e| start + e);
            out.replace_range(start..end, "<redacted>");
            from = start + "<redacted>".len();
        }
    }
    out
}

/// The upstream's message as logged, already redacted ([`redact`]): cut to a few KiB.
pub fn shown_message(mut out: String) -> String {
    if out.len() > MESSAGE_LIMIT {
        let mut cut = MESSAGE_LIMIT;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

/// A 403's body, read up to [`PEEK_LIMIT`]: what was read, and the rest if it did not end.
pub struct Peeked {
    pub prefix: Bytes,
    pub rest: Option<Incoming>,
}

/// Reads the beginning of `body` (at most [`PEEK_LIMIT`] plus one frame, within `timeout`).
/// A body that declares more than the limit is not read at all. Nothing read is lost: the app
/// gets `prefix` followed by `rest`.
pub async fn peek(mut body: Incoming, declared: Option<u64>, timeout: Duration) -> Peeked {
    if declared.is_some_and(|d| d > PEEK_LIMIT as u64) || body.is_end_stream() {
        return Peeked {
            prefix: Bytes::new(),
            rest: Some(body),
        };
    }
    let mut buf = BytesMut::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut ended = false;
    while buf.len() < PEEK_LIMIT {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            Ok(None) => {
                ended = true;
                break;
            }
            // A failing or stalled body: forward what arrived, then the same failure/stall.
            Ok(Some(Err(_))) | Err(_) => break,
        }
    }
    Peeked {
        prefix: buf.freeze(),
        rest: (!ended).then_some(body),
    }
}

/// A route's counters and its warn window.
pub struct AuthFailures {
    counters: Vec<IntCounter>,
    epoch: Instant,
    /// Milliseconds after `epoch` of the last warn, plus one (0: never warned).
    last_warn: AtomicU64,
}

impl AuthFailures {
    pub fn new(route: &str, metric: &prometheus::IntCounterVec) -> Self {
        AuthFailures {
            counters: Reason::ALL
                .iter()
                .map(|r| metric.with_label_values(&[route, r.label()]))
                .collect(),
            epoch: Instant::now(),
            last_warn: AtomicU64::new(0),
        }
    }

    /// Counts a refusal; true when this one should be logged (the first in its window).
    pub fn record(&self, reason: Reason) -> bool {
        self.counters[reason.index()].inc();
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.last_warn.load(Ordering::Relaxed);
        if last != 0 && now - last < WARN_EVERY.as_millis() as u64 {
            return false;
        }
        self.last_warn
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(t: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = t {
            h.insert("x-amzn-errortype", t.parse().expect("value"));
        }
        h
    }

    #[test]
    fn classifies_aws_refusals() {
        let mismatch = br#"{"message":"The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.\n\nThe Canonical String for this request should have been\n'GET\n/Prod/x\n\nhost:a\nx-amz-security-token:SECRETTOKEN\n'"}"#;
        let r = classify(
            &headers(Some("InvalidSignatureException:http://internal")),
            mismatch,
        )
        .expect("refusal");
        assert_eq!(r.reason, Reason::SignatureMismatch);
        assert_eq!(r.error_type.as_deref(), Some("InvalidSignatureException"));
        assert_eq!(
            classify(&headers(None), mismatch).map(|r| r.reason),
            Some(Reason::SignatureMismatch)
        );
        let cases: &[(Option<&str>, &[u8], Option<Reason>)] = &[
            (None, br#"{"message":"The security token included in the request is expired"}"#, Some(Reason::ExpiredToken)),
            (Some("UnrecognizedClientException"), br#"{"message":"The security token included in the request is invalid."}"#, Some(Reason::InvalidToken)),
            (Some("AccessDeniedException"), br#"{"Message":"User: arn:aws:sts::1:assumed-role/r/s is not authorized to perform: execute-api:Invoke"}"#, Some(Reason::AccessDenied)),
            (None, b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>", Some(Reason::AccessDenied)),
            (Some("ForbiddenException"), br#"{"message":"Forbidden"}"#, Some(Reason::Other)),
            (None, b"the app's own forbidden page", None),
        ];
        for (t, body, want) in cases {
            assert_eq!(
                classify(&headers(*t), body).map(|r| r.reason),
                *want,
                "{t:?} {:?}",
                String::from_utf8_lossy(body)
            );
        }
        let shown = shown_message(redact(&message_of(mismatch), &["SECRETTOKEN"], &[]));
        assert!(
            !shown.contains("SECRETTOKEN") && shown.contains("x-amz-security-token:<redacted>"),
            "{shown}"
        );
        let shown = redact(
            "a\nX-Amz-Security-Token:zzz\nx-original-authorization:Bearer t\nb",
            &[],
            &["x-amz-security-token", "x-original-authorization"],
        );
        assert_eq!(
            shown,
            "a\nX-Amz-Security-Token:<redacted>\nx-original-authorization:<redacted>\nb"
        );
    }

    #[test]
    fn one_warn_per_window() {
        let metric =
            prometheus::IntCounterVec::new(prometheus::Opts::new("t", "t"), &["route", "reason"])
                .expect("metric");
        let f = AuthFailures::new("r", &metric);
        assert!(f.record(Reason::SignatureMismatch));
        assert!(!f.record(Reason::SignatureMismatch));
        assert!(!f.record(Reason::ExpiredToken));
        assert_eq!(
            metric.with_label_values(&["r", "signature_mismatch"]).get(),
            2
        );
        assert_eq!(metric.with_label_values(&["r", "expired_token"]).get(), 1);
    }
}
