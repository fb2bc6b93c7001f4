//! SigV4's canonical request and string to sign, and the HMAC signing-key chain (see the
//! choices in the [module docs](super)). SigV4A reuses all of it except the key.

use hmac::{Hmac, Mac};
use http::HeaderMap;
use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

use super::ALGORITHM;

/// Everything except the unreserved characters of RFC 3986 (`A-Za-z0-9-_.~`).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// As [`UNRESERVED`], but `/` stays literal (path segments are encoded, separators are not).
const PATH_SET: &AsciiSet = &UNRESERVED.remove(b'/');

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub(crate) fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
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
    string_to_sign_with(ALGORITHM, amz_date, scope, canonical_request)
}

/// `algorithm\namz_date\nscope\nhex(sha256(canonical_request))`: the shape of SigV4's and
/// SigV4A's string to sign alike.
pub fn string_to_sign_with(
    algorithm: &str,
    amz_date: &str,
    scope: &str,
    canonical_request: &str,
) -> String {
    format!(
        "{algorithm}\n{amz_date}\n{scope}\n{}",
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
