//! An independent AWS Signature Version 4 verifier.
//!
//! Written from the published algorithm with `sha2`/`hmac`/`percent-encoding` only, and checked
//! against the official test vectors (`tests/vectors.rs`). It deliberately shares no code with
//! `aws-sigv4`: the sidecar signs with aws-sigv4, and a verifier built on the same crate would
//! agree with any bug in it.
//!
//! Choices, where the specification leaves room:
//! - **Path**: the canonical URI is built from the path *as it travelled on the wire*, which is
//!   already percent-encoded; every byte outside `A-Za-z0-9-_.~/` is encoded again. That is the
//!   "double encoding" every AWS service except S3 uses (a `%20` on the wire becomes `%2520`).
//!   With `normalize`, `.`/`..` segments and repeated slashes are removed first (RFC 3986).
//! - **Query**: each name and value is percent-decoded, with `+` decoded as a space (as
//!   `application/x-www-form-urlencoded`, botocore's `parse_qsl` and aws-sigv4's
//!   `form_urlencoded::parse` all do), then encoded with the unreserved set and sorted by encoded
//!   name, then encoded value. Empty `&&` pieces are skipped. None of the official vectors
//!   contains a `+`; decoding it as a space matches what the signers in use produce.
//! - **Headers**: names lower-cased, values trimmed with inner whitespace runs collapsed to one
//!   space, repeated headers joined with `,` in arrival order. Non-UTF-8 header bytes are taken
//!   lossily (aws-sigv4 refuses to sign them at all).

use std::fmt;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method};

pub(crate) mod canonical;
mod sign;
mod time;

pub use canonical::{
    canonical_header_value, canonical_headers, canonical_query, canonical_request, canonical_uri,
    credential_scope, sha256_hex, signature, signing_key, string_to_sign, string_to_sign_with,
};
pub use sign::{sign_request, Algorithm, SigV4, Signer};
pub use time::{format_amz_date, format_iso8601, parse_amz_date};

/// The only algorithm SigV4 header signing uses.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The payload hash a streaming signer declares (and signs) instead of the body's SHA-256.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// What the canonical request's payload hash is made from.
#[derive(Clone, Copy, Debug)]
pub enum Payload<'a> {
    /// The complete body: its SHA-256 is signed, and a sent `x-amz-content-sha256` must equal it.
    Body(&'a [u8]),
    /// `UNSIGNED-PAYLOAD`: the request must carry `x-amz-content-sha256: UNSIGNED-PAYLOAD` among
    /// its signed headers (VPC Lattice; the body can then stream, it is not part of the
    /// signature).
    Unsigned,
}

/// Long-term or temporary AWS credentials known to a verifier or issued by the STS emulator.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl Credentials {
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token,
        }
    }
}

/// Redacts the secret and the token, so test failures and logs never print them.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "** redacted **"),
            )
            .finish()
    }
}

/// What a verifier expects of a request: where it is, and what time it is.
#[derive(Clone, Debug)]
pub struct Expect {
    /// Signing region; `"*"` accepts any region (STS's global endpoint is signed with whatever
    /// region the client is configured for).
    pub region: String,
    /// Signing service name, e.g. `execute-api` or `sts`.
    pub service: String,
    /// The verifier's clock (a fixed time for test vectors).
    pub now: SystemTime,
    /// How far `x-amz-date` may be from `now` either way; AWS allows 5 minutes.
    pub max_skew: Duration,
    /// Normalize the path (`.`/`..`, repeated slashes) before encoding; true for every AWS
    /// service except S3.
    pub normalize: bool,
}

impl Expect {
    /// `region`/`service` at the current time, 5 minutes of skew, normalized paths.
    pub fn new(region: impl Into<String>, service: impl Into<String>) -> Self {
        Expect {
            region: region.into(),
            service: service.into(),
            now: SystemTime::now(),
            max_skew: Duration::from_secs(300),
            normalize: true,
        }
    }

    /// The same expectation at another instant.
    pub fn at(mut self, now: SystemTime) -> Self {
        self.now = now;
        self
    }
}

/// What a successful verification established about the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub access_key_id: String,
    pub session_token: Option<String>,
    pub region: String,
    pub service: String,
    /// `YYYYMMDD` from the credential scope.
    pub date: String,
    /// The `SignedHeaders` list, lower-case, in the order given.
    pub signed_headers: Vec<String>,
    /// The canonical request the signature was checked over.
    pub canonical_request: String,
    /// The string to sign the signature was checked over.
    pub string_to_sign: String,
}

/// Why a request was not accepted. The variants follow the distinctions AWS front ends make in
/// their answers (missing token vs. bad signature vs. unknown key vs. expired).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// No `Authorization` header at all.
    MissingAuthentication,
    /// The `Authorization` header or `x-amz-date` cannot be parsed, a signed header is absent,
    /// or `x-amz-content-sha256` does not match the body.
    Malformed(String),
    /// The access key id is not known to the lookup.
    UnknownAccessKey,
    /// The credential scope names another region, service or day than expected.
    WrongScope(String),
    /// `x-amz-date` is further than `max_skew` from the verifier's clock.
    Expired,
    /// The credentials carry a session token and the request's `X-Amz-Security-Token` is
    /// missing or different (or the request has a token the credentials do not).
    TokenMismatch,
    /// `host` is not among the signed headers.
    HostNotSigned,
    /// The recomputed signature differs; carries what the verifier computed, for diagnosis.
    SignatureMismatch {
        canonical_request: String,
        string_to_sign: String,
    },
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::MissingAuthentication => f.write_str("missing authentication"),
            VerifyError::Malformed(m) => write!(f, "malformed authorization: {m}"),
            VerifyError::UnknownAccessKey => f.write_str("unknown access key id"),
            VerifyError::WrongScope(m) => write!(f, "wrong credential scope: {m}"),
            VerifyError::Expired => f.write_str("x-amz-date outside the allowed skew"),
            VerifyError::TokenMismatch => f.write_str("session token missing or different"),
            VerifyError::HostNotSigned => f.write_str("host is not a signed header"),
            VerifyError::SignatureMismatch {
                canonical_request,
                string_to_sign,
            } => write!(
                f,
                "signature mismatch; canonical request:\n{canonical_request}\nstring to sign:\n{string_to_sign}"
            ),
        }
    }
}

impl std::error::Error for VerifyError {}

/// What an `Authorization: <algorithm> Credential=..., SignedHeaders=..., Signature=...` value
/// says in either algorithm (SigV4's scope adds a region, see [`Authorization`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Components {
    pub access_key_id: String,
    /// `YYYYMMDD` from the credential scope.
    pub date: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    /// Lower-case hex (SigV4: the HMAC; SigV4A: the DER ECDSA signature).
    pub signature: String,
}

impl Components {
    /// These components as the shared verification steps take them.
    pub(crate) fn signed<'a>(
        &'a self,
        algorithm: &'a str,
        scope: &'a str,
        region: &'a str,
    ) -> Signed<'a> {
        Signed {
            components: self,
            algorithm,
            scope,
            region,
        }
    }
}

/// The parsed `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    /// The credential scope's region.
    pub region: String,
    pub components: Components,
}

/// `Credential`, `SignedHeaders` and `Signature` of an `Authorization: <algorithm> ...` value,
/// the signed header names checked to be non-empty and lower-case. Shared by SigV4 and SigV4A,
/// which differ only in the algorithm name, the credential scope and the signature encoding.
pub(crate) fn parse_components(
    value: &str,
    algorithm: &str,
) -> Result<(String, Vec<String>, String), VerifyError> {
    let malformed = |m: &str| VerifyError::Malformed(m.to_string());
    let rest = value.strip_prefix(algorithm).ok_or_else(|| {
        VerifyError::Malformed(format!("Authorization does not start with {algorithm}"))
    })?;
    if !rest.starts_with(' ') {
        return Err(malformed("no space after the algorithm"));
    }
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| VerifyError::Malformed(format!("component without '=': {part}")))?;
        let slot = match k {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            other => return Err(VerifyError::Malformed(format!("unknown component {other}"))),
        };
        if slot.replace(v.to_string()).is_some() {
            return Err(VerifyError::Malformed(format!("{k} given twice")));
        }
    }
    let credential = credential.ok_or_else(|| malformed("missing Credential"))?;
    let signed = signed.ok_or_else(|| malformed("missing SignedHeaders"))?;
    let signature = signature.ok_or_else(|| malformed("missing Signature"))?;
    let signed_headers: Vec<String> = signed.split(';').map(str::to_string).collect();
    if signed_headers
        .iter()
        .any(|h| h.is_empty() || *h != h.to_ascii_lowercase())
    {
        return Err(malformed(
            "SignedHeaders must be non-empty lower-case names",
        ));
    }
    Ok((credential, signed_headers, signature))
}

/// Checks the access key id and the `YYYYMMDD` date of a credential scope.
pub(crate) fn check_scope_start(akid: &str, date: &str) -> Result<(), VerifyError> {
    if akid.is_empty() || date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::Malformed(
            "bad access key id or scope date".into(),
        ));
    }
    Ok(())
}

/// Parses an `Authorization` header value.
pub fn parse_authorization(value: &str) -> Result<Authorization, VerifyError> {
    let malformed = |m: &str| VerifyError::Malformed(m.to_string());
    let (credential, signed_headers, signature) = parse_components(value, ALGORITHM)?;
    let parts: Vec<&str> = credential.split('/').collect();
    let [akid, date, region, service, terminator] = parts.as_slice() else {
        return Err(malformed(
            "Credential is not akid/date/region/service/aws4_request",
        ));
    };
    if *terminator != "aws4_request" {
        return Err(malformed("credential scope does not end in aws4_request"));
    }
    check_scope_start(akid, date)?;
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("Signature is not 64 hex digits"));
    }
    Ok(Authorization {
        region: region.to_string(),
        components: Components {
            access_key_id: akid.to_string(),
            date: date.to_string(),
            service: service.to_string(),
            signed_headers,
            signature: signature.to_ascii_lowercase(),
        },
    })
}

pub(crate) fn header_str<'a>(
    headers: &'a HeaderMap,
    name: &str,
) -> Result<Option<&'a str>, VerifyError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| VerifyError::Malformed(format!("{name} is not visible ASCII"))),
    }
}

/// Constant-time comparison, so a test stand-in does not teach anyone timing habits.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Verifies a header-signed SigV4 request.
///
/// `target` is the request target exactly as received (`/path?query`, still percent-encoded),
/// `headers` must include `host` (for HTTP/2, synthesize it from `:authority`), `body` is the
/// complete body. `lookup` maps an access key id to its credentials.
///
/// Checks, in order: Authorization present and well-formed, region, key known, `x-amz-date`
/// well-formed and matching the scope date, service, clock skew, session token, `host` signed,
/// signed headers present, `x-amz-content-sha256` (if sent) equal to the body's hash, and the
/// signature.
pub fn verify(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    body: &[u8],
    expect: &Expect,
    lookup: &dyn Fn(&str) -> Option<Credentials>,
) -> Result<Verified, VerifyError> {
    let request = Request {
        method,
        target,
        headers,
        payload: Payload::Body(body),
    };
    verify_payload(&request, expect, lookup)
}

/// [`verify`] with the payload given as a [`Payload`]: `Payload::Unsigned` checks a request
/// signed over `UNSIGNED-PAYLOAD` from its head alone, before (or without) reading the body.
pub fn verify_payload(
    request: &Request<'_>,
    expect: &Expect,
    lookup: &dyn Fn(&str) -> Option<Credentials>,
) -> Result<Verified, VerifyError> {
    let auth = parse_authorization(authorization_value(request.headers)?)?;
    if expect.region != "*" && auth.region != expect.region {
        return Err(VerifyError::WrongScope(format!(
            "Credential should be scoped to a valid region, not '{}' (expected '{}')",
            auth.region, expect.region
        )));
    }
    let (region, parts) = (&auth.region, &auth.components);
    let scope = credential_scope(&parts.date, region, &parts.service);
    let check = |creds: &Credentials, sts: &str| {
        let key = signing_key(
            &creds.secret_access_key,
            &parts.date,
            region,
            &parts.service,
        );
        ct_eq(signature(&key, sts).as_bytes(), parts.signature.as_bytes())
    };
    let signed = parts.signed(ALGORITHM, &scope, region);
    verify_signed(request, expect, lookup, &signed, &check)
}

/// A request as the verifiers ([`verify_payload`], [`crate::sigv4a::verify`]) take it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub method: &'a Method,
    /// The request target exactly as received (`/path?query`, still percent-encoded).
    pub target: &'a str,
    /// Must include `host` (for HTTP/2, synthesized from `:authority`).
    pub headers: &'a HeaderMap,
    pub payload: Payload<'a>,
}

/// What a parsed `Authorization` says, in the terms both algorithms share.
pub(crate) struct Signed<'a> {
    pub(crate) components: &'a Components,
    /// The string to sign's first line.
    pub(crate) algorithm: &'a str,
    /// The string to sign's credential scope line.
    pub(crate) scope: &'a str,
    /// What [`Verified::region`] reports (SigV4's scope region, SigV4A's region set).
    pub(crate) region: &'a str,
}

/// The steps SigV4 and SigV4A share after parsing: [`check_request`], the canonical request
/// and string to sign, and the algorithm's own signature check `signature_ok(creds, sts)`.
pub(crate) fn verify_signed(
    request: &Request<'_>,
    expect: &Expect,
    lookup: &dyn Fn(&str) -> Option<Credentials>,
    signed: &Signed<'_>,
    signature_ok: &dyn Fn(&Credentials, &str) -> bool,
) -> Result<Verified, VerifyError> {
    let checked = check_request(request.headers, expect, lookup, signed, request.payload)?;
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((request.target, ""));
    let creq = canonical_request(
        request.method.as_str(),
        path,
        query,
        request.headers,
        &checked.signed_headers,
        &checked.payload_hash,
        expect.normalize,
    );
    let sts = string_to_sign_with(signed.algorithm, checked.amz_date, signed.scope, &creq);
    if !signature_ok(&checked.creds, &sts) {
        return Err(VerifyError::SignatureMismatch {
            canonical_request: creq,
            string_to_sign: sts,
        });
    }
    Ok(Verified {
        access_key_id: signed.components.access_key_id.clone(),
        session_token: checked.creds.session_token,
        region: signed.region.to_string(),
        service: signed.components.service.clone(),
        date: signed.components.date.clone(),
        signed_headers: signed.components.signed_headers.clone(),
        canonical_request: creq,
        string_to_sign: sts,
    })
}

/// The one `Authorization` header of a request.
pub(crate) fn authorization_value(headers: &HeaderMap) -> Result<&str, VerifyError> {
    let value = header_str(headers, "authorization")?.ok_or(VerifyError::MissingAuthentication)?;
    if headers.get_all("authorization").iter().count() > 1 {
        return Err(VerifyError::Malformed(
            "more than one Authorization header".into(),
        ));
    }
    Ok(value)
}

/// What [`check_request`] established: the caller's credentials, the `x-amz-date` value and
/// the payload hash that goes into the canonical request.
struct Checked<'h> {
    creds: Credentials,
    amz_date: &'h str,
    payload_hash: String,
    signed_headers: Vec<&'h str>,
}

/// The checks SigV4 and SigV4A share, between parsing `Authorization` and comparing
/// signatures: key known, `x-amz-date`, scope date and service, skew, session token, `host`
/// signed, signed headers present, and the payload (see [`Payload`]).
fn check_request<'h>(
    headers: &'h HeaderMap,
    expect: &Expect,
    lookup: &dyn Fn(&str) -> Option<Credentials>,
    signed: &Signed<'h>,
    payload: Payload<'_>,
) -> Result<Checked<'h>, VerifyError> {
    let Components {
        access_key_id,
        date,
        service,
        signed_headers,
        ..
    } = signed.components;
    let creds = lookup(access_key_id).ok_or(VerifyError::UnknownAccessKey)?;
    let amz_date = header_str(headers, "x-amz-date")?
        .ok_or_else(|| VerifyError::Malformed("missing x-amz-date".into()))?;
    let signed_at = parse_amz_date(amz_date)
        .ok_or_else(|| VerifyError::Malformed(format!("bad x-amz-date {amz_date:?}")))?;
    if amz_date[..8] != *date {
        return Err(VerifyError::WrongScope(format!(
            "scope date {date} is not the day of x-amz-date {amz_date}"
        )));
    }
    if *service != expect.service {
        return Err(VerifyError::WrongScope(format!(
            "Credential should be scoped to correct service: '{}', not '{service}'",
            expect.service
        )));
    }
    let skew = match expect.now.duration_since(signed_at) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    if skew > expect.max_skew {
        return Err(VerifyError::Expired);
    }
    let sent_token = header_str(headers, "x-amz-security-token")?;
    if sent_token != creds.session_token.as_deref() {
        return Err(VerifyError::TokenMismatch);
    }
    if !signed_headers.iter().any(|h| h == "host") {
        return Err(VerifyError::HostNotSigned);
    }
    if let Some(missing) = signed_headers
        .iter()
        .find(|h| !headers.contains_key(h.as_str()))
    {
        return Err(VerifyError::Malformed(format!(
            "signed header {missing} is not in the request"
        )));
    }
    let declared = header_str(headers, "x-amz-content-sha256")?;
    let payload_hash = match payload {
        Payload::Body(body) => {
            let hash = sha256_hex(body);
            if let Some(declared) = declared {
                if !declared.eq_ignore_ascii_case(&hash) {
                    return Err(VerifyError::Malformed(format!(
                        "x-amz-content-sha256 {declared} does not match the body's {hash}"
                    )));
                }
            }
            hash
        }
        Payload::Unsigned => {
            if declared != Some(UNSIGNED_PAYLOAD)
                || !signed_headers.iter().any(|h| h == "x-amz-content-sha256")
            {
                return Err(VerifyError::Malformed(format!(
                    "this service requires a signed x-amz-content-sha256: {UNSIGNED_PAYLOAD}"
                )));
            }
            UNSIGNED_PAYLOAD.to_string()
        }
    };
    Ok(Checked {
        creds,
        amz_date,
        payload_hash,
        signed_headers: signed_headers.iter().map(String::as_str).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize_and_double_encode() {
        assert_eq!(canonical_uri("", true), "/");
        assert_eq!(canonical_uri("//example//", true), "/example/");
        assert_eq!(canonical_uri("/a/b/../c/./d", true), "/a/c/d");
        assert_eq!(canonical_uri("/a/b/..", true), "/a/");
        assert_eq!(canonical_uri("/a%20b", true), "/a%2520b");
        assert_eq!(canonical_uri("//example//", false), "//example//");
    }

    #[test]
    fn queries_sort_and_reencode() {
        assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
        assert_eq!(canonical_query("k=a+b&x"), "k=a%20b&x=");
        assert_eq!(canonical_query("k=%7e%2F&&"), "k=~%2F");
        assert_eq!(canonical_query(""), "");
    }

    #[test]
    fn authorization_parses_strictly() {
        let ok = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        )
        .expect("parse");
        assert_eq!(ok.components.signed_headers, vec!["host", "x-amz-date"]);
        for bad in [
            "Bearer x",
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/service/aws4_request",
            "AWS4-HMAC-SHA256 Credential=AKID/2015/us-east-1/service/aws4_request, SignedHeaders=host, Signature=00",
        ] {
            assert!(matches!(parse_authorization(bad), Err(VerifyError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = Credentials::new("AKID", "very-secret", Some("tok-secret".into()));
        let s = format!("{c:?}");
        assert!(s.contains("AKID") && !s.contains("very-secret") && !s.contains("tok-secret"));
    }
}
