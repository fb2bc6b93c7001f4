//! The testbed's own signer, for tests of the stand-ins themselves (a request that reaches the
//! gateway without the sidecar); the sidecar's own signing is what the verifiers exist to check.
//!
//! SigV4 and SigV4A sign the same canonical request; they differ only in what an
//! [`Algorithm`] says: its name, its credential scope, its signature (and SigV4A's region-set
//! header). [`sign_request`] does the rest once for both.

use std::time::SystemTime;

use http::header::InvalidHeaderValue;
use http::{HeaderMap, HeaderValue, Method};

use super::{
    canonical_request, credential_scope, format_amz_date, sha256_hex, signature, signing_key,
    string_to_sign_with, Credentials, Payload, ALGORITHM, UNSIGNED_PAYLOAD,
};

/// Who signs, for which scope, at what time.
#[derive(Clone, Debug)]
pub struct Signer<'a> {
    pub(crate) creds: &'a Credentials,
    /// SigV4: the signing region. SigV4A: the region set (`us-east-1,us-west-2`, `*`).
    pub(crate) region: &'a str,
    pub(crate) service: &'a str,
    pub(crate) now: SystemTime,
}

impl<'a> Signer<'a> {
    /// `creds` signing for `region` (SigV4A: the region set) and `service`, at the current time.
    pub fn new(creds: &'a Credentials, region: &'a str, service: &'a str) -> Self {
        Signer {
            creds,
            region,
            service,
            now: SystemTime::now(),
        }
    }

    /// The same signer at another instant.
    pub fn at(mut self, now: SystemTime) -> Self {
        self.now = now;
        self
    }

    /// The instant the signature is made at.
    pub fn now(&self) -> SystemTime {
        self.now
    }
}

/// Where the signing algorithms differ.
pub trait Algorithm {
    /// The `Authorization` scheme, also the string to sign's first line.
    fn name(&self) -> &'static str;

    /// Adds the headers this algorithm signs on top of the shared ones.
    fn add_headers(
        &self,
        _headers: &mut HeaderMap,
        _signer: &Signer<'_>,
    ) -> Result<(), InvalidHeaderValue> {
        Ok(())
    }

    /// The credential scope for day `date` (`YYYYMMDD`).
    fn scope(&self, date: &str, signer: &Signer<'_>) -> String;

    /// The `Signature=` value of `string_to_sign`, made on day `date`.
    fn signature(&self, string_to_sign: &str, date: &str, signer: &Signer<'_>) -> String;
}

/// SigV4 (`AWS4-HMAC-SHA256`): region in the scope, HMAC chain key, hex HMAC signature.
#[derive(Clone, Copy, Debug)]
pub struct SigV4;

impl Algorithm for SigV4 {
    fn name(&self) -> &'static str {
        ALGORITHM
    }

    fn scope(&self, date: &str, signer: &Signer<'_>) -> String {
        credential_scope(date, signer.region, signer.service)
    }

    fn signature(&self, string_to_sign: &str, date: &str, signer: &Signer<'_>) -> String {
        let key = signing_key(
            &signer.creds.secret_access_key,
            date,
            signer.region,
            signer.service,
        );
        signature(&key, string_to_sign)
    }
}

/// Signs a request the textbook way: adds the algorithm's own headers, `x-amz-date`,
/// `x-amz-security-token` (if the credentials have one), for `Payload::Unsigned`
/// `x-amz-content-sha256: UNSIGNED-PAYLOAD` (as a VPC Lattice client does), and then
/// `authorization`, signing every header present (which must include `host`). A header added
/// to `headers` afterwards travels unsigned.
pub fn sign_request(
    algorithm: &impl Algorithm,
    method: &Method,
    target: &str,
    headers: &mut HeaderMap,
    payload: Payload<'_>,
    signer: &Signer<'_>,
) -> Result<(), InvalidHeaderValue> {
    algorithm.add_headers(headers, signer)?;
    let amz_date = format_amz_date(signer.now);
    headers.insert("x-amz-date", amz_date.parse()?);
    if let Some(token) = &signer.creds.session_token {
        headers.insert("x-amz-security-token", token.parse()?);
    }
    let payload_hash = match payload {
        Payload::Body(body) => sha256_hex(body),
        Payload::Unsigned => {
            headers.insert(
                "x-amz-content-sha256",
                HeaderValue::from_static(UNSIGNED_PAYLOAD),
            );
            UNSIGNED_PAYLOAD.to_string()
        }
    };
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
        &payload_hash,
        true,
    );
    let date = &amz_date[..8];
    let scope = algorithm.scope(date, signer);
    let sts = string_to_sign_with(algorithm.name(), &amz_date, &scope, &creq);
    let auth = format!(
        "{} Credential={}/{scope}, SignedHeaders={}, Signature={}",
        algorithm.name(),
        signer.creds.access_key_id,
        signed.join(";"),
        algorithm.signature(&sts, date, signer)
    );
    headers.insert("authorization", auth.parse()?);
    Ok(())
}
