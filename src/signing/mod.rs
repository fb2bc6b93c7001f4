//! SigV4 signing of an outgoing request.
//!
//! The request line is never rewritten: the path and query go upstream byte for byte. Only the
//! *canonical* form used inside the signature is normalized and double-encoded, which is what
//! API Gateway (and every non-S3 service) computes on its side.
//!
//! The hot path is this module's own SigV4 writer ([`Scope::sign`]): the canonical request is
//! streamed into SHA-256 without being built in memory ([`canonical`]), and the signing key is
//! derived once per credentials, day, region and service ([`key`]). Key derivation and the
//! final HMAC are `aws-sigv4`'s public primitives (`generate_signing_key`,
//! `calculate_signature`). `aws-sigv4`'s full `sign()`, with the settings the sidecar used
//! before, stays as the differential oracle ([`reference`]): tests and the fuzz target sign
//! generated requests both ways and require the same `Authorization`, byte for byte.
//!
//! The caller decides what is signed: [`Scope::sign`] signs exactly the headers it is given
//! (it adds only `x-amz-date`, `x-amz-security-token` and, when needed, `x-amz-content-sha256`).

mod canonical;
mod key;
#[doc(hidden)]
pub mod reference;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SigningSettings, UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::Digest;
use smallvec::SmallVec;

use crate::credentials::Credentials;
use crate::error::ProxyError;
use canonical::{Entry, Values};

/// Headers never signed by [`sign_request`]: aws-sigv4's default exclusions, which proxies and
/// CDNs may change on the way (`user-agent`, `x-amzn-trace-id`), or which are hop-by-hop
/// (`transfer-encoding`) or the signature itself (`authorization`).
const UNSIGNED: &[&str] = &[
    "authorization",
    "user-agent",
    "x-amzn-trace-id",
    "transfer-encoding",
];

/// The payload line of the canonical request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    /// Lowercase hex SHA-256 of the body (for example [`EMPTY_SHA256`] or [`sha256_hex`]).
    Sha256(&'a str),
    /// The literal `UNSIGNED-PAYLOAD`; it is then also sent (and signed) as
    /// `x-amz-content-sha256`, as services require.
    Unsigned,
}

impl<'a> Payload<'a> {
    fn as_str(self) -> &'a str {
        match self {
            Payload::Sha256(h) => h,
            Payload::Unsigned => "UNSIGNED-PAYLOAD",
        }
    }
}

/// One request as it goes upstream, as far as SigV4 is concerned.
#[derive(Debug, Clone, Copy)]
pub struct RequestToSign<'a> {
    /// The method, as sent (`GET`).
    pub method: &'a str,
    /// Path and query exactly as forwarded (`/Prod/a%20b?x=1`).
    pub path_and_query: &'a str,
    /// Every header to sign, `Host` included, names lowercase (as [`HeaderName::as_str`]),
    /// values without control characters other than tab; repeated names in order.
    /// Nothing else is signed. [`signable_headers`] builds this list from a header map.
    pub headers: &'a [(&'a str, &'a str)],
    pub payload: Payload<'a>,
}

impl<'a> RequestToSign<'a> {
    /// The request `method uri` as forwarded, with `headers` (from [`signable_headers`]).
    pub fn new(
        method: &'a http::Method,
        uri: &'a http::Uri,
        headers: &'a [(&'a str, &'a str)],
        payload: Payload<'a>,
    ) -> Self {
        RequestToSign {
            method: method.as_str(),
            path_and_query: uri.path_and_query().map_or("/", |pq| pq.as_str()),
            headers,
            payload,
        }
    }
}

/// The headers a signature adds to the request.
#[derive(Debug, Clone)]
pub struct Signature {
    /// Marked sensitive.
    pub authorization: HeaderValue,
    pub x_amz_date: HeaderValue,
    /// `x-amz-security-token`, for session credentials; marked sensitive.
    pub security_token: Option<HeaderValue>,
    /// `x-amz-content-sha256`: for S3 scopes and for [`Payload::Unsigned`].
    pub content_sha256: Option<HeaderValue>,
}

impl Signature {
    /// Adds the signature headers to `headers`, replacing any of the same names.
    pub fn apply(self, headers: &mut HeaderMap) {
        const DATE: HeaderName = HeaderName::from_static("x-amz-date");
        const CONTENT: HeaderName = HeaderName::from_static("x-amz-content-sha256");
        const TOKEN: HeaderName = HeaderName::from_static("x-amz-security-token");
        headers.insert(DATE, self.x_amz_date);
        headers.insert(http::header::AUTHORIZATION, self.authorization);
        if let Some(v) = self.content_sha256 {
            headers.insert(CONTENT, v);
        }
        if let Some(v) = self.security_token {
            headers.insert(TOKEN, v);
        }
    }
}

/// The texts a signature was computed from, for diagnosing a signature mismatch. Sensitive
/// header values (the session token, cookies, ...) are replaced by their length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics {
    pub canonical_request: String,
    pub string_to_sign: String,
}

/// Region, service and the signing settings of one route, fixed at start, plus the signing key
/// last derived for them.
pub struct Scope {
    pub region: String,
    pub service: String,
    settings: SigningSettings,
    keys: key::KeyCache,
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// Fixed overhead of an `Authorization` value besides the credential scope and signed headers.
const AUTH_OVERHEAD: usize = "AWS4-HMAC-SHA256 Credential=, SignedHeaders=, Signature=".len() + 64;

impl Scope {
    pub fn new(region: &str, service: &str) -> Self {
        let mut settings = SigningSettings::default();
        // Which headers are signed is the caller's choice (see `RequestToSign::headers`).
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
            keys: key::KeyCache::default(),
        }
    }

    /// The `aws-sigv4` settings this scope's signatures correspond to (for the oracle).
    pub fn settings(&self) -> &SigningSettings {
        &self.settings
    }

    fn content_sha256_header(&self, payload: Payload<'_>) -> bool {
        payload == Payload::Unsigned
            || self.settings.payload_checksum_kind == PayloadChecksumKind::XAmzSha256
    }

    /// Signs `req` with `creds` at `now`: the headers to add.
    pub fn sign(
        &self,
        creds: &Credentials,
        now: SystemTime,
        req: &RequestToSign<'_>,
    ) -> Result<Signature, ProxyError> {
        let (date, key) = self.key(creds, now)?;
        let entries = self.entries(req, &date, &key)?;
        let sts = self.string_to_sign(req, &entries, &date, &key.scope);
        let signature = v4::calculate_signature(key.key, &sts);

        let mut auth = Vec::with_capacity(AUTH_OVERHEAD + key.credential.len() + 16 * 8);
        auth.extend_from_slice(b"AWS4-HMAC-SHA256 Credential=");
        auth.extend_from_slice(key.credential.as_bytes());
        auth.extend_from_slice(b", SignedHeaders=");
        canonical::write_signed_headers(&mut auth, &entries);
        auth.extend_from_slice(b", Signature=");
        auth.extend_from_slice(signature.as_bytes());
        let invalid = |_| ProxyError::Internal("signature header is invalid".into());
        let mut authorization =
            HeaderValue::from_maybe_shared(bytes::Bytes::from(auth)).map_err(invalid)?;
        authorization.set_sensitive(true);
        Ok(Signature {
            authorization,
            x_amz_date: HeaderValue::from_bytes(&date).map_err(invalid)?,
            security_token: key.token_header.clone(),
            content_sha256: self
                .content_sha256_header(req.payload)
                .then(|| HeaderValue::from_str(req.payload.as_str()))
                .transpose()
                .map_err(invalid)?,
        })
    }

    /// The canonical request and string to sign that [`Scope::sign`] computes for the same
    /// input, secrets redacted. Not for the hot path: it allocates both texts.
    pub fn diagnostics(
        &self,
        creds: &Credentials,
        now: SystemTime,
        req: &RequestToSign<'_>,
    ) -> Result<Diagnostics, ProxyError> {
        let (date, key) = self.key(creds, now)?;
        let entries = self.entries(req, &date, &key)?;
        let sts = self.string_to_sign(req, &entries, &date, &key.scope);
        let mut canonical_request = String::new();
        self.write_canonical_request(&mut canonical_request, req, &entries, Values::Redacted);
        Ok(Diagnostics {
            canonical_request,
            string_to_sign: String::from_utf8_lossy(&sts).into_owned(),
        })
    }

    /// `X-Amz-Date` for `now` and the signing key for its day.
    fn key(
        &self,
        creds: &Credentials,
        now: SystemTime,
    ) -> Result<([u8; 16], Arc<key::DerivedKey>), ProxyError> {
        let c = creds
            .identity
            .data::<aws_credential_types::Credentials>()
            .ok_or_else(|| {
                ProxyError::Internal("request cannot be signed: not AWS credentials".into())
            })?;
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let date = canonical::amz_date(secs);
        let mut day = [0u8; 8];
        day.copy_from_slice(&date[..8]);
        let key = self.keys.get(c, &day, now, &self.region, &self.service)?;
        Ok((date, key))
    }

    /// The headers to sign, sorted: the caller's (checked) and the signature's own.
    fn entries<'a>(
        &self,
        req: &RequestToSign<'a>,
        date: &'a [u8; 16],
        key: &'a key::DerivedKey,
    ) -> Result<SmallVec<[Entry<'a>; 24]>, ProxyError> {
        let token = key.session_token();
        let with_content = self.content_sha256_header(req.payload);
        let mut entries: SmallVec<[Entry<'a>; 24]> = SmallVec::new();
        let mut host = false;
        for (i, &(name, value)) in req.headers.iter().enumerate() {
            if !valid_name(name) || !valid_value(value) {
                return Err(ProxyError::Internal(format!(
                    "request cannot be signed: header {name:?} is not a lowercase token with a value \
                     free of control characters"
                )));
            }
            // The signer's own headers replace any the caller passed, as aws-sigv4 does.
            if name == "x-amz-date"
                || (token.is_some() && name == "x-amz-security-token")
                || (with_content && name == "x-amz-content-sha256")
            {
                continue;
            }
            host |= name == "host";
            entries.push(Entry {
                name,
                value,
                trim: true,
                order: u16::try_from(i).unwrap_or(u16::MAX),
            });
        }
        if !host {
            return Err(ProxyError::Internal(
                "request cannot be signed: no Host header".into(),
            ));
        }
        let own = |name: &'a str, value: &'a str| Entry {
            name,
            value,
            trim: false,
            order: 0,
        };
        // amz_date writes ASCII digits and letters only.
        entries.push(own("x-amz-date", std::str::from_utf8(date).unwrap_or("")));
        if let Some(t) = token {
            entries.push(own("x-amz-security-token", t));
        }
        if with_content {
            entries.push(own("x-amz-content-sha256", req.payload.as_str()));
        }
        canonical::sort(&mut entries);
        Ok(entries)
    }

    /// The string to sign: the canonical request is hashed as it is written, never built.
    fn string_to_sign(
        &self,
        req: &RequestToSign<'_>,
        entries: &[Entry<'_>],
        date: &[u8; 16],
        scope: &str,
    ) -> SmallVec<[u8; 256]> {
        let mut hasher = canonical::HashSink::new();
        self.write_canonical_request(&mut hasher, req, entries, Values::Plain);
        let mut hex = [0u8; 64];
        // 32 bytes always fit 64 hex digits.
        let _ = hex::encode_to_slice(hasher.finish(), &mut hex);
        // `AWS4-HMAC-SHA256\n<date>\n<scope>\n<hash>`.
        let mut sts = SmallVec::new();
        for part in [
            &b"AWS4-HMAC-SHA256\n"[..],
            date,
            b"\n",
            scope.as_bytes(),
            b"\n",
            &hex,
        ] {
            sts.extend_from_slice(part);
        }
        sts
    }

    fn write_canonical_request(
        &self,
        sink: &mut impl canonical::Sink,
        req: &RequestToSign<'_>,
        entries: &[Entry<'_>],
        values: Values,
    ) {
        let (path, query) = match req.path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (req.path_and_query, None),
        };
        sink.put(req.method.as_bytes());
        sink.put(b"\n");
        canonical::write_path(
            sink,
            path,
            self.settings.uri_path_normalization_mode == UriPathNormalizationMode::Enabled,
            self.settings.percent_encoding_mode == PercentEncodingMode::Double,
        );
        sink.put(b"\n");
        canonical::write_query(sink, query);
        sink.put(b"\n");
        canonical::write_headers(sink, entries, values);
        sink.put(b"\n");
        sink.put(req.payload.as_str().as_bytes());
    }
}

/// A header name as `HeaderName::as_str` gives it: a non-empty lowercase token.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

/// A header value as `HeaderValue::from_str` accepts it (and aws-sigv4 with it): no control
/// characters but tab.
fn valid_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// The headers of `map` to sign: all but those `skip` names, and values that are not visible
/// ASCII (SigV4 cannot canonicalize them; they are forwarded unsigned).
pub fn signable_headers(
    map: &HeaderMap,
    skip: impl Fn(&str) -> bool,
) -> SmallVec<[(&str, &str); 16]> {
    map.iter()
        .filter(|(name, _)| !skip(name.as_str()))
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .collect()
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
    let signature = {
        let headers = signable_headers(&parts.headers, |n| UNSIGNED.contains(&n));
        let req = RequestToSign::new(
            &parts.method,
            &parts.uri,
            &headers,
            Payload::Sha256(payload_sha256),
        );
        scope.sign(creds, now, &req)?
    };
    signature.apply(&mut parts.headers);
    Ok(())
}

/// Lowercase hex SHA-256, as SigV4 wants the payload hash.
pub fn sha256_hex(data: &[u8]) -> String {
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
        let creds = Credentials::example();
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
