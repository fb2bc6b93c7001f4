//! SigV4 signing of an outgoing request with `aws-sigv4`.
//!
//! The request line is never rewritten: the path and query go upstream byte for byte. Only the
//! *canonical* form used inside the signature is normalized and double-encoded, which is what
//! API Gateway (and every non-S3 service) computes on its side.

use std::time::SystemTime;

use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use http::{HeaderName, HeaderValue};

use crate::credentials::Credentials;
use crate::error::ProxyError;

/// Headers never signed: aws-sigv4's default exclusions, which proxies and CDNs may change on
/// the way (`user-agent`, `x-amzn-trace-id`), or which are hop-by-hop (`transfer-encoding`) or
/// the signature itself (`authorization`).
const UNSIGNED: &[&str] = &[
    "authorization",
    "user-agent",
    "x-amzn-trace-id",
    "transfer-encoding",
];

/// Region, service and the signing settings of one route, fixed at start.
#[derive(Debug, Clone)]
pub struct Scope {
    pub region: String,
    pub service: String,
    settings: SigningSettings,
}

impl Scope {
    pub fn new(region: &str, service: &str) -> Self {
        let mut settings = SigningSettings::default();
        // Excluded headers are filtered in `sign_request` instead: the settings are cloned per
        // request (aws-sigv4 takes them by value), and without the list the clone allocates
        // nothing.
        settings.excluded_headers = None;
        if service == "s3" || service == "s3-object-lambda" {
            // S3 signs the path as sent: single encoding, no normalization, and wants the body
            // hash in a header.
            settings.percent_encoding_mode = PercentEncodingMode::Single;
            settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        } else {
            settings.percent_encoding_mode = PercentEncodingMode::Double;
            settings.uri_path_normalization_mode = UriPathNormalizationMode::Enabled;
        }
        Scope {
            region: region.to_string(),
            service: service.to_string(),
            settings,
        }
    }
}

/// Signs `parts` in place: adds `Authorization`, `X-Amz-Date` and, for session credentials,
/// `X-Amz-Security-Token`. `payload_sha256` is the lowercase hex SHA-256 of the body.
///
/// `parts.uri` must be the full upstream URI and `parts.headers` must already hold `Host` and
/// no client-supplied `Authorization`/`X-Amz-*` signing headers. Headers whose values are not
/// visible ASCII cannot be canonicalized by SigV4; they are forwarded but left out of the
/// signature rather than failing the request.
pub fn sign_request(
    parts: &mut http::request::Parts,
    payload_sha256: &str,
    creds: &Credentials,
    scope: &Scope,
    now: SystemTime,
) -> Result<(), ProxyError> {
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| !UNSIGNED.contains(&name.as_str()))
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
    let signable = SignableRequest::new(
        parts.method.as_str(),
        target,
        headers,
        SignableBody::Precomputed(payload_sha256.to_string()),
    )
    .map_err(|e| ProxyError::Internal(format!("request cannot be signed: {e}")))?;
    let params = v4::SigningParams::builder()
        .identity(&creds.identity)
        .region(&scope.region)
        .name(&scope.service)
        .time(now)
        .settings(scope.settings.clone())
        .build()
        .map_err(|e| ProxyError::Internal(format!("request cannot be signed: {e}")))?
        .into();
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| ProxyError::Internal(format!("request cannot be signed: {e}")))?
        .into_parts();
    let (new_headers, _query) = instructions.into_parts();
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

/// Lowercase hex SHA-256, as SigV4 wants the payload hash.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// SHA-256 of the empty body, the common case for GET/HEAD/DELETE.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_hash_constant_is_right() {
        assert_eq!(sha256_hex(b""), EMPTY_SHA256);
    }

    #[test]
    fn adds_signature_headers_and_marks_them_sensitive() {
        let creds = Credentials::new(aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            Some("token".into()),
            None,
            "test",
        ));
        let (mut parts, ()) = http::Request::builder()
            .method("GET")
            .uri("https://abc.execute-api.us-east-1.amazonaws.com/Prod/a%20b?x=1")
            .header("host", "abc.execute-api.us-east-1.amazonaws.com")
            .header(
                "x-latin1",
                HeaderValue::from_bytes(b"caf\xe9").expect("obs-text is a valid value"),
            )
            .body(())
            .expect("request")
            .into_parts();
        sign_request(
            &mut parts,
            EMPTY_SHA256,
            &creds,
            &Scope::new("us-east-1", "execute-api"),
            SystemTime::now(),
        )
        .expect("signs");
        let auth = parts.headers["authorization"].to_str().expect("ascii");
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{auth}"
        );
        assert!(
            auth.contains("/us-east-1/execute-api/aws4_request"),
            "{auth}"
        );
        assert!(
            !auth.contains("x-latin1"),
            "unsignable header is left out: {auth}"
        );
        assert!(parts.headers["authorization"].is_sensitive());
        assert!(parts.headers["x-amz-security-token"].is_sensitive());
        assert!(parts.headers.contains_key("x-amz-date"));
        assert_eq!(
            parts.uri.path_and_query().map(|p| p.as_str()),
            Some("/Prod/a%20b?x=1"),
            "URI untouched"
        );
    }
}
