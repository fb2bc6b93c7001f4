//! What one route signs: which headers the signature covers, which payload line, which
//! algorithm (SPEC "Reaching private endpoints and other services").
//!
//! The route decides *what* is signed; the signers only sign what they are handed:
//! - headers that hops on the way append to or rewrite (`Forwarded`, `X-Forwarded-*`, `Via`)
//!   or that tracing and clients change (`User-Agent`, `X-Amzn-Trace-Id`), plus the route's
//!   `unsigned_headers`, are forwarded but left out, so CloudFront or a VPC endpoint appending
//!   to them does not break the signature;
//! - `payload = "unsigned"` signs `x-amz-content-sha256: UNSIGNED-PAYLOAD` (VPC Lattice refuses
//!   anything else), so the body can stream;
//! - `signing_algorithm = "sigv4a"` signs with ECDSA P-256 over `X-Amz-Region-Set` through
//!   aws-sigv4's `sigv4a` feature.
//!
//! SigV4 goes through the sidecar's own signer ([`crate::signing::Scope`], cached key, exactly
//! the headers it is handed); SigV4A through aws-sigv4's `sign()`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningParams, SigningSettings,
};
use aws_sigv4::sign::v4a;
use http::{HeaderName, HeaderValue};

use crate::config::reach::always_unsigned;
use crate::config::{Algorithm, Payload, RouteConfig};
use crate::credentials::Credentials;
use crate::error::ProxyError;
use crate::signing::{self, RequestToSign, Scope};

pub use crate::signing::Diagnostics;

/// The payload line of a request's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyHash<'a> {
    /// Lowercase hex SHA-256 of the whole body.
    Sha256(&'a str),
    /// `UNSIGNED-PAYLOAD`, also sent and signed as `x-amz-content-sha256`.
    Unsigned,
}

/// What is signed, kept until the upstream answers so that a refusal can be explained: the
/// request head as it was handed to the signer (before the signature's own headers), the
/// credentials and the time. Only cheap copies (header values are reference-counted; about
/// 0.3 µs for a typical head); the canonical text is computed from it only when asked for
/// ([`RouteSigner::diagnostics`]).
pub struct Signed {
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
    body_sha256: Option<Cow<'static, str>>,
    creds: Arc<Credentials>,
    now: SystemTime,
}

impl Signed {
    pub fn new(
        parts: &http::request::Parts,
        body_sha256: Option<Cow<'static, str>>,
        creds: Arc<Credentials>,
        now: SystemTime,
    ) -> Self {
        Signed {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            body_sha256,
            creds,
            now,
        }
    }

    /// The payload line the request is signed with.
    pub fn body_hash(&self) -> BodyHash<'_> {
        self.body_sha256
            .as_deref()
            .map_or(BodyHash::Unsigned, BodyHash::Sha256)
    }

    /// The session token the request is signed with, to redact it wherever it shows up.
    pub fn security_token(&self) -> Option<&str> {
        self.creds
            .identity
            .data::<aws_credential_types::Credentials>()
            .and_then(|c| c.session_token())
    }
}

/// The canonical request with its query values (third line) shown as their length: queries
/// stay out of the sidecar's logs (the access line leaves them out too), while names, order
/// and encoding lengths still show what was signed.
fn mask_query(canonical: &str) -> String {
    let mut lines: Vec<String> = canonical.split('\n').map(str::to_string).collect();
    if let Some(q) = lines.get_mut(2).filter(|q| !q.is_empty()) {
        *q = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) if !v.is_empty() => format!("{k}=<{} bytes>", v.len()),
                _ => pair.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&");
    }
    lines.join("\n")
}

impl<'a> From<BodyHash<'a>> for signing::Payload<'a> {
    fn from(b: BodyHash<'a>) -> Self {
        match b {
            BodyHash::Sha256(h) => signing::Payload::Sha256(h),
            BodyHash::Unsigned => signing::Payload::Unsigned,
        }
    }
}

/// How a route signs, fixed at start.
#[derive(Debug)]
pub struct RouteSigner {
    pub algorithm: Algorithm,
    pub payload: Payload,
    unsigned_headers: Vec<HeaderName>,
    /// `client_authorization_to`: it carries the app's bearer token, signed, so diagnostics
    /// redact it like the session token.
    client_authorization_to: Option<HeaderName>,
    /// The SigV4 signer (and its signing-key cache).
    scope: Scope,
    /// aws-sigv4's settings, for SigV4A: the scope's, plus the payload header when unsigned.
    settings: SigningSettings,
}

impl RouteSigner {
    pub fn new(cfg: &RouteConfig) -> Self {
        let scope = Scope::new(&cfg.region, &cfg.service);
        let mut settings = scope.settings().clone();
        if cfg.reach.payload == Payload::Unsigned {
            // Lattice requires `x-amz-content-sha256: UNSIGNED-PAYLOAD` (S3 scopes have it
            // already).
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        }
        RouteSigner {
            algorithm: cfg.reach.algorithm.clone(),
            payload: cfg.reach.payload,
            unsigned_headers: cfg.reach.unsigned_headers.clone(),
            client_authorization_to: cfg.reach.client_authorization_to.clone(),
            scope,
            settings,
        }
    }

    /// `text` (a canonical request, the upstream's message) with every secret of `signed` in
    /// it redacted: the session token and the app's own `Authorization`
    /// (`client_authorization_to`), by value and as canonical header lines.
    pub fn redact(&self, text: &str, signed: &Signed) -> String {
        let mut secrets: Vec<&str> = signed.security_token().into_iter().collect();
        let mut names = vec!["x-amz-security-token"];
        if let Some(h) = &self.client_authorization_to {
            names.push(h.as_str());
            secrets.extend(signed.headers.get(h).and_then(|v| v.to_str().ok()));
        }
        crate::auth_failures::redact(text, &secrets, &names)
    }

    /// The upstream's message as the warning shows it: redacted as [`Self::redact`], cut short.
    pub fn shown_message(&self, text: &str, signed: &Signed) -> String {
        crate::auth_failures::shown_message(self.redact(text, signed))
    }

    /// Whether header `name` (lowercase) is forwarded without being signed.
    pub fn excluded(&self, name: &str) -> bool {
        always_unsigned(name) || self.unsigned_headers.iter().any(|h| h.as_str() == name)
    }

    /// The canonical request and string-to-sign behind `signed`'s signature, for the
    /// rejected-signature warning and the debug log, secrets redacted. Not on the hot path: it
    /// signs the request again, with the same inputs, to read what aws-sigv4 computed.
    pub fn diagnostics(&self, signed: &Signed) -> Option<Diagnostics> {
        if self.algorithm == Algorithm::SigV4 {
            let headers = signing::signable_headers(&signed.headers, |n| self.excluded(n));
            let req = RequestToSign::new(
                &signed.method,
                &signed.uri,
                &headers,
                signed.body_hash().into(),
            );
            let d = self
                .scope
                .diagnostics(&signed.creds, signed.now, &req)
                .ok()?;
            return Some(Diagnostics {
                canonical_request: mask_query(&self.redact(&d.canonical_request, signed)),
                string_to_sign: d.string_to_sign,
            });
        }
        // SigV4A: what aws-sigv4 computed, read from its trace (src/sigv4_text.rs).
        let (mut parts, ()) = http::Request::builder()
            .method(signed.method.clone())
            .uri(signed.uri.clone())
            .body(())
            .ok()?
            .into_parts();
        parts.headers = signed.headers.clone();
        let mut result = Ok(());
        let canonical = crate::sigv4_text::canonical_request_of(|| {
            result = self.sign(&mut parts, signed.body_hash(), &signed.creds, signed.now);
        })?;
        result.ok()?;
        let amz_date = parts.headers.get("x-amz-date")?.to_str().ok()?;
        let day = amz_date.get(..8)?;
        // SigV4A's credential scope has no region (the region set is a signed header).
        let (algorithm, scope) = (
            "AWS4-ECDSA-P256-SHA256",
            format!("{day}/{}/aws4_request", self.scope.service),
        );
        let string_to_sign = crate::sigv4_text::string_to_sign(
            algorithm,
            amz_date,
            &scope,
            &canonical,
            &parts.headers,
        );
        Some(Diagnostics {
            canonical_request: mask_query(&self.redact(&canonical, signed)),
            string_to_sign,
        })
    }

    /// Signs `parts` in place: adds `Authorization`, `X-Amz-Date`, for session credentials
    /// `X-Amz-Security-Token`, for SigV4A `X-Amz-Region-Set`, and for unsigned payloads (and
    /// S3) `X-Amz-Content-Sha256`.
    ///
    /// `parts.uri` must be the full upstream URI and `parts.headers` must already hold `Host`
    /// and no client-supplied signing headers. Header values that are not visible ASCII cannot
    /// be canonicalized by SigV4; they are forwarded but left out of the signature.
    pub fn sign(
        &self,
        parts: &mut http::request::Parts,
        body: BodyHash<'_>,
        creds: &Credentials,
        now: SystemTime,
    ) -> Result<(), ProxyError> {
        let Algorithm::SigV4a { region_set } = &self.algorithm else {
            let signature = {
                let headers = signing::signable_headers(&parts.headers, |n| self.excluded(n));
                let req = RequestToSign::new(&parts.method, &parts.uri, &headers, body.into());
                self.scope.sign(creds, now, &req)?
            };
            signature.apply(&mut parts.headers);
            return Ok(());
        };
        // SigV4A: aws-sigv4's `sign()`, with the same header choice.
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let headers = signing::signable_headers(&parts.headers, |n| self.excluded(n));
        let body = match body {
            BodyHash::Sha256(h) => SignableBody::Precomputed(h.to_string()),
            BodyHash::Unsigned => SignableBody::UnsignedPayload,
        };
        let failed = |e: &dyn std::fmt::Display| {
            ProxyError::Internal(format!("request cannot be signed: {e}"))
        };
        let signable =
            SignableRequest::new(parts.method.as_str(), target, headers.iter().copied(), body)
                .map_err(|e| failed(&e))?;
        let params: SigningParams<'_> = v4a::SigningParams::builder()
            .identity(&creds.identity)
            .region_set(region_set)
            .name(&self.scope.service)
            .time(now)
            .settings(self.settings.clone())
            .build()
            .map_err(|e| failed(&e))?
            .into();
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| failed(&e))?
            .into_parts();
        let (new_headers, _query) = instructions.into_parts();
        drop(headers); // the signed names and values borrow `parts.headers`
        for h in new_headers {
            let mut value = HeaderValue::from_str(h.value())
                .map_err(|e| ProxyError::Internal(format!("signature header is invalid: {e}")))?;
            value.set_sensitive(h.sensitive() || h.name() == "authorization");
            parts
                .headers
                .insert(HeaderName::from_static(h.name()), value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Reach, Upstream};

    fn route(reach: Reach) -> RouteConfig {
        RouteConfig {
            name: "t".into(),
            listen: "127.0.0.1:0".parse().expect("addr"),
            upstream: Upstream::parse("upstream", "https://a.execute-api.us-east-1.amazonaws.com")
                .expect("url"),
            region: "us-east-1".into(),
            service: "execute-api".into(),
            role: crate::config::RoleKey {
                role_arn: None,
                session_name: "s".into(),
                external_id: None,
                duration: std::time::Duration::from_secs(3600),
            },
            refresh_before_expiry: std::time::Duration::from_secs(600),
            max_body_bytes: 1,
            ca_file: None,
            connect_timeout: std::time::Duration::from_secs(1),
            request_timeout: std::time::Duration::from_secs(1),
            reach,
        }
    }

    fn reach() -> Reach {
        Reach {
            connect: None,
            payload: Payload::Signed,
            algorithm: Algorithm::SigV4,
            unsigned_headers: vec![HeaderName::from_static("x-edge")],
            client_authorization_to: None,
        }
    }

    fn signed_headers(auth: &str) -> Vec<String> {
        auth.split("SignedHeaders=")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap_or_default()
            .split(';')
            .map(str::to_string)
            .collect()
    }

    fn sign_one(signer: &RouteSigner, body: BodyHash<'_>) -> http::HeaderMap {
        let creds = Credentials::example();
        let (mut parts, ()) = http::Request::builder()
            .uri("https://a.execute-api.us-east-1.amazonaws.com/Prod/x")
            .header("host", "a.execute-api.us-east-1.amazonaws.com")
            .header("x-forwarded-for", "10.0.0.1")
            .header("forwarded", "for=10.0.0.1")
            .header("via", "1.1 app")
            .header("user-agent", "app/1")
            .header("x-edge", "1")
            .header("x-kept", "1")
            .body(())
            .expect("request")
            .into_parts();
        signer
            .sign(&mut parts, body, &creds, SystemTime::now())
            .expect("signs");
        parts.headers
    }

    #[test]
    fn hop_appended_headers_are_forwarded_unsigned() {
        let h = sign_one(
            &RouteSigner::new(&route(reach())),
            BodyHash::Sha256(crate::signing::EMPTY_SHA256),
        );
        let auth = h["authorization"].to_str().expect("ascii");
        let signed = signed_headers(auth);
        assert!(
            signed.contains(&"host".to_string()) && signed.contains(&"x-kept".to_string()),
            "{auth}"
        );
        for n in [
            "x-forwarded-for",
            "forwarded",
            "via",
            "user-agent",
            "x-edge",
        ] {
            assert!(!signed.contains(&n.to_string()), "{n} signed: {auth}");
            assert!(h.contains_key(n), "{n} still forwarded");
        }
        assert!(!h.contains_key("x-amz-content-sha256"));
    }

    #[test]
    fn unsigned_payload_is_signed_as_a_header() {
        let mut r = reach();
        r.payload = Payload::Unsigned;
        let h = sign_one(&RouteSigner::new(&route(r)), BodyHash::Unsigned);
        assert_eq!(h["x-amz-content-sha256"], "UNSIGNED-PAYLOAD");
        let auth = h["authorization"].to_str().expect("ascii");
        assert!(
            signed_headers(auth).contains(&"x-amz-content-sha256".to_string()),
            "{auth}"
        );
    }

    #[test]
    fn sigv4a_names_the_region_set() {
        let mut r = reach();
        r.algorithm = Algorithm::SigV4a {
            region_set: "us-east-1,us-west-2".into(),
        };
        let h = sign_one(
            &RouteSigner::new(&route(r)),
            BodyHash::Sha256(crate::signing::EMPTY_SHA256),
        );
        let auth = h["authorization"].to_str().expect("ascii");
        assert!(
            auth.starts_with("AWS4-ECDSA-P256-SHA256 Credential=AKIDEXAMPLE/"),
            "{auth}"
        );
        assert!(auth.contains("/execute-api/aws4_request"), "{auth}");
        assert_eq!(h["x-amz-region-set"], "us-east-1,us-west-2");
        assert!(
            signed_headers(auth).contains(&"x-amz-region-set".to_string()),
            "{auth}"
        );
    }
}
