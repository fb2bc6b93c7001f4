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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::{HeaderMap, Method};
use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

/// The only algorithm SigV4 header signing uses.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Everything except the unreserved characters of RFC 3986 (`A-Za-z0-9-_.~`).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// As [`UNRESERVED`], but `/` stays literal (path segments are encoded, separators are not).
const PATH_SET: &AsciiSet = &UNRESERVED.remove(b'/');

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

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The canonical URI of a raw (wire, already percent-encoded) path; see the module docs.
pub fn canonical_uri(raw_path: &str, normalize: bool) -> String {
    let path = if normalize {
        normalize_path(raw_path)
    } else if raw_path.is_empty() {
        "/".to_string()
    } else {
        raw_path.to_string()
    };
    utf8_percent_encode(&path, PATH_SET).to_string()
}

/// RFC 3986 dot-segment removal plus collapsing of empty segments (`//`).
fn normalize_path(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/') {
        match segment {
            "" | "." => trailing_slash = true,
            ".." => {
                out.pop();
                trailing_slash = true;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    if out.is_empty() {
        return "/".to_string();
    }
    let mut result = String::with_capacity(path.len());
    for s in &out {
        result.push('/');
        result.push_str(s);
    }
    if trailing_slash {
        result.push('/');
    }
    result
}

/// Decodes a query component like a form: `+` is a space, then percent escapes.
fn decode_query_component(s: &str) -> Vec<u8> {
    let plus_as_space = s.replace('+', " ");
    percent_decode(plus_as_space.as_bytes()).collect()
}

fn encode_unreserved(bytes: &[u8]) -> String {
    percent_encoding::percent_encode(bytes, UNRESERVED).to_string()
}

/// The canonical query string of a raw query (without the `?`); see the module docs.
pub fn canonical_query(raw_query: &str) -> String {
    let mut pairs: Vec<(String, String)> = raw_query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            (
                encode_unreserved(&decode_query_component(name)),
                encode_unreserved(&decode_query_component(value)),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Trims a header value and collapses every run of whitespace (including the line breaks of an
/// obs-folded value) into one space.
pub fn canonical_header_value(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .split_ascii_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `name:value\n` block for the given (lower-case) signed header names, in the given order.
/// A header that is absent canonicalizes with an empty value.
pub fn canonical_headers(headers: &HeaderMap, signed_headers: &[&str]) -> String {
    let mut out = String::new();
    for name in signed_headers {
        let values: Vec<String> = headers
            .get_all(*name)
            .iter()
            .map(|v| canonical_header_value(v.as_bytes()))
            .collect();
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out
}

/// The SigV4 canonical request.
///
/// `raw_path`/`raw_query` are as on the wire (query without `?`); `signed_headers` are the
/// lower-case names in `SignedHeaders` order (sorted, for a well-formed request).
pub fn canonical_request(
    method: &str,
    raw_path: &str,
    raw_query: &str,
    headers: &HeaderMap,
    signed_headers: &[&str],
    payload_hash_hex: &str,
    normalize: bool,
) -> String {
    format!(
        "{method}\n{}\n{}\n{}\n{}\n{payload_hash_hex}",
        canonical_uri(raw_path, normalize),
        canonical_query(raw_query),
        canonical_headers(headers, signed_headers),
        signed_headers.join(";"),
    )
}

/// `date/region/service/aws4_request`.
pub fn credential_scope(date: &str, region: &str, service: &str) -> String {
    format!("{date}/{region}/{service}/aws4_request")
}

/// The SigV4 string to sign for an `x-amz-date` value, a credential scope and a canonical request.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// The derived signing key: HMAC chain over date, region, service and `aws4_request`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// Hex signature of a string to sign.
pub fn signature(signing_key: &[u8; 32], string_to_sign: &str) -> String {
    hex::encode(hmac(signing_key, string_to_sign.as_bytes()))
}

/// Formats an instant as `YYYYMMDDTHHMMSSZ`.
pub fn format_amz_date(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// Formats an instant as ISO 8601 `YYYY-MM-DDTHH:MM:SSZ` (STS's `Expiration`).
pub fn format_iso8601(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Parses `YYYYMMDDTHHMMSSZ`; `None` for anything else (including impossible dates).
pub fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, sec) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo)
        || d == 0
        || d > days_in_month(y, mo)
        || h > 23
        || mi > 59
        || sec > 60
    {
        return None;
    }
    let days = days_from_civil(y as i64, mo as i64, d as i64);
    let secs = days.checked_mul(86_400)? + (h * 3600 + mi * 60 + sec) as i64;
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil(t: SystemTime) -> (i64, i64, i64, i64, i64, i64) {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// The parsed `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Parses an `Authorization` header value.
pub fn parse_authorization(value: &str) -> Result<Authorization, VerifyError> {
    let malformed = |m: &str| VerifyError::Malformed(m.to_string());
    let rest = value
        .strip_prefix(ALGORITHM)
        .ok_or_else(|| malformed("Authorization does not start with AWS4-HMAC-SHA256"))?;
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
    let parts: Vec<&str> = credential.split('/').collect();
    let [akid, date, region, service, terminator] = parts.as_slice() else {
        return Err(malformed(
            "Credential is not akid/date/region/service/aws4_request",
        ));
    };
    if *terminator != "aws4_request" {
        return Err(malformed("credential scope does not end in aws4_request"));
    }
    if akid.is_empty() || date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("bad access key id or scope date"));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("Signature is not 64 hex digits"));
    }
    let signed_headers: Vec<String> = signed.split(';').map(str::to_string).collect();
    if signed_headers
        .iter()
        .any(|h| h.is_empty() || *h != h.to_ascii_lowercase())
    {
        return Err(malformed(
            "SignedHeaders must be non-empty lower-case names",
        ));
    }
    Ok(Authorization {
        access_key_id: akid.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers,
        signature: signature.to_ascii_lowercase(),
    })
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, VerifyError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| VerifyError::Malformed(format!("{name} is not visible ASCII"))),
    }
}

/// Constant-time comparison, so a test stand-in does not teach anyone timing habits.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Verifies a header-signed SigV4 request.
///
/// `target` is the request target exactly as received (`/path?query`, still percent-encoded),
/// `headers` must include `host` (for HTTP/2, synthesize it from `:authority`), `body` is the
/// complete body. `lookup` maps an access key id to its credentials.
///
/// Checks, in order: Authorization present and well-formed, key known, `x-amz-date` well-formed
/// and matching the scope date, region/service, clock skew, session token, `host` signed, signed
/// headers present, `x-amz-content-sha256` (if sent) equal to the body's hash, and the signature.
pub fn verify(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    body: &[u8],
    expect: &Expect,
    lookup: &dyn Fn(&str) -> Option<Credentials>,
) -> Result<Verified, VerifyError> {
    let auth_value = match header_str(headers, "authorization")? {
        None => return Err(VerifyError::MissingAuthentication),
        Some(v) => v,
    };
    if headers.get_all("authorization").iter().count() > 1 {
        return Err(VerifyError::Malformed(
            "more than one Authorization header".into(),
        ));
    }
    let auth = parse_authorization(auth_value)?;
    let creds = lookup(&auth.access_key_id).ok_or(VerifyError::UnknownAccessKey)?;

    let amz_date = header_str(headers, "x-amz-date")?
        .ok_or_else(|| VerifyError::Malformed("missing x-amz-date".into()))?;
    let signed_at = parse_amz_date(amz_date)
        .ok_or_else(|| VerifyError::Malformed(format!("bad x-amz-date {amz_date:?}")))?;
    if amz_date[..8] != auth.date {
        return Err(VerifyError::WrongScope(format!(
            "scope date {} is not the day of x-amz-date {amz_date}",
            auth.date
        )));
    }
    if expect.region != "*" && auth.region != expect.region {
        return Err(VerifyError::WrongScope(format!(
            "Credential should be scoped to a valid region, not '{}' (expected '{}')",
            auth.region, expect.region
        )));
    }
    if auth.service != expect.service {
        return Err(VerifyError::WrongScope(format!(
            "Credential should be scoped to correct service: '{}', not '{}'",
            expect.service, auth.service
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
    if !auth.signed_headers.iter().any(|h| h == "host") {
        return Err(VerifyError::HostNotSigned);
    }
    if let Some(missing) = auth
        .signed_headers
        .iter()
        .find(|h| !headers.contains_key(h.as_str()))
    {
        return Err(VerifyError::Malformed(format!(
            "signed header {missing} is not in the request"
        )));
    }
    let payload_hash = sha256_hex(body);
    if let Some(declared) = header_str(headers, "x-amz-content-sha256")? {
        if !declared.eq_ignore_ascii_case(&payload_hash) {
            return Err(VerifyError::Malformed(format!(
                "x-amz-content-sha256 {declared} does not match the body's {payload_hash}"
            )));
        }
    }

    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let signed: Vec<&str> = auth.signed_headers.iter().map(String::as_str).collect();
    let creq = canonical_request(
        method.as_str(),
        path,
        query,
        headers,
        &signed,
        &payload_hash,
        expect.normalize,
    );
    let scope = credential_scope(&auth.date, &auth.region, &auth.service);
    let sts = string_to_sign(amz_date, &scope, &creq);
    let key = signing_key(
        &creds.secret_access_key,
        &auth.date,
        &auth.region,
        &auth.service,
    );
    if !ct_eq(signature(&key, &sts).as_bytes(), auth.signature.as_bytes()) {
        return Err(VerifyError::SignatureMismatch {
            canonical_request: creq,
            string_to_sign: sts,
        });
    }
    Ok(Verified {
        access_key_id: auth.access_key_id,
        session_token: creds.session_token,
        region: auth.region,
        service: auth.service,
        date: auth.date,
        signed_headers: auth.signed_headers,
    })
}

/// Signs a request the textbook way with this module's primitives: adds `x-amz-date`,
/// `x-amz-security-token` (if the credentials have one) and `authorization` to `headers`,
/// signing every header present (which must include `host`).
///
/// For tests of the stand-ins themselves (a request that reaches the gateway without the
/// sidecar); the sidecar's own signing is what [`verify`] exists to check.
#[allow(clippy::too_many_arguments)] // mirrors the inputs of SigV4 one to one
pub fn sign_request(
    method: &Method,
    target: &str,
    headers: &mut HeaderMap,
    body: &[u8],
    creds: &Credentials,
    region: &str,
    service: &str,
    now: SystemTime,
) -> Result<(), http::header::InvalidHeaderValue> {
    let amz_date = format_amz_date(now);
    headers.insert("x-amz-date", amz_date.parse()?);
    if let Some(token) = &creds.session_token {
        headers.insert("x-amz-security-token", token.parse()?);
    }
    let mut names: Vec<String> = headers.keys().map(|k| k.as_str().to_string()).collect();
    names.retain(|n| n != "authorization");
    names.sort();
    names.dedup();
    let signed: Vec<&str> = names.iter().map(String::as_str).collect();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let creq = canonical_request(
        method.as_str(),
        path,
        query,
        headers,
        &signed,
        &sha256_hex(body),
        true,
    );
    let date = &amz_date[..8];
    let scope = credential_scope(date, region, service);
    let sts = string_to_sign(&amz_date, &scope, &creq);
    let sig = signature(
        &signing_key(&creds.secret_access_key, date, region, service),
        &sts,
    );
    let auth = format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={}, Signature={sig}",
        creds.access_key_id,
        signed.join(";")
    );
    headers.insert("authorization", auth.parse()?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        let t = parse_amz_date("20150830T123600Z").expect("date");
        assert_eq!(format_amz_date(t), "20150830T123600Z");
        assert_eq!(format_iso8601(t), "2015-08-30T12:36:00Z");
        assert_eq!(
            t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).ok(),
            Some(1_440_938_160)
        );
        let leap = parse_amz_date("20240229T000000Z").expect("leap day");
        assert_eq!(format_amz_date(leap), "20240229T000000Z");
        for bad in [
            "20150230T000000Z",
            "20151301T000000Z",
            "2015083OT123600Z",
            "x",
            "",
        ] {
            assert!(parse_amz_date(bad).is_none(), "{bad}");
        }
    }

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
        assert_eq!(ok.signed_headers, vec!["host", "x-amz-date"]);
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
