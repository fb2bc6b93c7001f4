//! An independent AWS SigV4A verifier (`AWS4-ECDSA-P256-SHA256`, multi-region signing).
//!
//! SigV4A differs from SigV4 in three places only, and this module holds exactly those; the
//! canonical request is [`crate::sigv4`]'s hand-written canonicalizer unchanged:
//! - **Scope and region set**: the credential scope has no region
//!   (`date/service/aws4_request`); the regions the signature is valid in travel in the signed
//!   header `X-Amz-Region-Set` (`us-east-1,us-west-2`, or `*`).
//! - **Key**: an ECDSA P-256 key pair derived from the secret access key with NIST SP 800-108's
//!   HMAC-SHA256 counter-mode KDF ([`derive_private_key`]), not the HMAC chain.
//! - **Signature**: ECDSA P-256 over SHA-256 of the string to sign, DER-encoded, hex. ECDSA is
//!   randomized, so a signature is checked by verification, never by recomputation.
//!
//! Checked against the official vectors (`tests/vectors_v4a.rs`: canonical request and string
//! to sign byte for byte, derived public key equal to `public-key.json`, signatures valid). The
//! public key is computed with RustCrypto's `p256` (checked against `public-key.json`); the
//! signatures are verified with ring's ECDSA, since aws-sigv4 signs with `p256`. The KDF,
//! canonicalization and the checks around them are written here from the published algorithm and share no code with
//! `aws-sigv4`, whose signing this verifier exists to check.

use http::HeaderMap;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};

use crate::sigv4::{self, Credentials, Expect, Verified, VerifyError};

/// The algorithm name in `Authorization` and the string to sign; also the KDF's label.
pub const ALGORITHM: &str = "AWS4-ECDSA-P256-SHA256";

/// The signed header that carries the region set.
pub const REGION_SET_HEADER: &str = "x-amz-region-set";

/// n - 2, n the order of P-256, big-endian: the KDF accepts a candidate `c <= n - 2`, so that
/// the private key `c + 1` lies in `[1, n - 1]`.
const N_MINUS_2: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x4f,
];

/// `date/service/aws4_request`: SigV4A's credential scope, without a region.
pub fn credential_scope(date: &str, service: &str) -> String {
    format!("{date}/{service}/aws4_request")
}

/// The SigV4A string to sign: SigV4's shape with [`ALGORITHM`] and the region-less scope.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    sigv4::string_to_sign_with(ALGORITHM, amz_date, scope, canonical_request)
}

/// The SigV4A private key (big-endian scalar) of a credential pair.
///
/// NIST SP 800-108 counter mode with HMAC-SHA256 and one 256-bit block: for
/// `counter = 1, 2, ...` the candidate is
/// `HMAC("AWS4A" + secret, be32(1) || "AWS4-ECDSA-P256-SHA256" || 0x00 || access_key_id || counter || be32(256))`,
/// read as a big-endian integer; the first candidate `<= n - 2` plus one is the key. (The chance
/// that even the first candidate is refused is about 2^-32.)
pub fn derive_private_key(access_key_id: &str, secret_access_key: &str) -> [u8; 32] {
    let input_key = format!("AWS4A{secret_access_key}");
    let mut counter: u8 = 1;
    loop {
        let mut fixed = Vec::with_capacity(ALGORITHM.len() + access_key_id.len() + 10);
        fixed.extend_from_slice(&1u32.to_be_bytes());
        fixed.extend_from_slice(ALGORITHM.as_bytes());
        fixed.push(0);
        fixed.extend_from_slice(access_key_id.as_bytes());
        fixed.push(counter);
        fixed.extend_from_slice(&256u32.to_be_bytes());
        let candidate = crate::sigv4::canonical::hmac(input_key.as_bytes(), &fixed);
        // Big-endian byte arrays of equal length compare like the integers they encode.
        if candidate <= N_MINUS_2 {
            return add_one(candidate);
        }
        // 254 refusals in a row have probability ~2^-8000; AWS's signers give up the same way.
        counter = match counter.checked_add(1) {
            Some(c) => c,
            None => unreachable!("SigV4A KDF exhausted its counter"),
        };
    }
}

/// `x + 1` for a big-endian 256-bit `x <= n - 2` (so it cannot overflow).
fn add_one(mut x: [u8; 32]) -> [u8; 32] {
    for byte in x.iter_mut().rev() {
        let (sum, carry) = byte.overflowing_add(1);
        *byte = sum;
        if !carry {
            break;
        }
    }
    x
}

/// The ECDSA signing key of a credential pair (for tests that sign without the sidecar).
pub fn signing_key(creds: &Credentials) -> SigningKey {
    let d = derive_private_key(&creds.access_key_id, &creds.secret_access_key);
    match SigningKey::from_slice(&d) {
        Ok(key) => key,
        // derive_private_key returns a scalar in [1, n - 1] by construction.
        Err(_) => unreachable!("derived SigV4A key out of range"),
    }
}

/// The public key of a credential pair.
pub fn verifying_key(creds: &Credentials) -> VerifyingKey {
    *signing_key(creds).verifying_key()
}

/// Lower-case hex X and Y of a public key (the form of the vectors' `public-key.json`).
pub fn public_key_xy(key: &VerifyingKey) -> (String, String) {
    let point = key.to_sec1_point(false);
    let coord = |c: Option<&p256::FieldBytes>| c.map(hex::encode).unwrap_or_default();
    (coord(point.x()), coord(point.y()))
}

/// Whether `signature_hex` (DER, hex) is a valid ECDSA P-256/SHA-256 signature of
/// `string_to_sign` under `key`. Malformed hex or DER is simply not valid.
///
/// Verified with **ring**, not `p256`: aws-sigv4 signs SigV4A with RustCrypto's `p256`, so a
/// check on the same ECDSA code would prove little. `p256` only holds the public point here
/// (derived from the secret and checked against the vectors' `public-key.json`).
pub fn signature_valid(key: &VerifyingKey, string_to_sign: &str, signature_hex: &str) -> bool {
    let Ok(der) = hex::decode(signature_hex) else {
        return false;
    };
    let point = key.to_sec1_point(false);
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_ASN1,
        point.as_bytes(),
    )
    .verify(string_to_sign.as_bytes(), &der)
    .is_ok()
}

/// Parses a SigV4A `Authorization` value
/// (`AWS4-ECDSA-P256-SHA256 Credential=akid/date/service/aws4_request, ...`). Its scope has no
/// region (the regions travel in [`REGION_SET_HEADER`]), so all it says are the
/// [`sigv4::Components`] both algorithms share.
pub fn parse_authorization(value: &str) -> Result<sigv4::Components, VerifyError> {
    let malformed = |m: &str| VerifyError::Malformed(m.to_string());
    let (credential, signed_headers, signature) = sigv4::parse_components(value, ALGORITHM)?;
    let parts: Vec<&str> = credential.split('/').collect();
    let [akid, date, service, terminator] = parts.as_slice() else {
        return Err(malformed(
            "Credential is not akid/date/service/aws4_request",
        ));
    };
    if *terminator != "aws4_request" {
        return Err(malformed("credential scope does not end in aws4_request"));
    }
    sigv4::check_scope_start(akid, date)?;
    // A DER P-256 signature is 8 to 72 bytes.
    if signature.len() % 2 != 0
        || !(16..=144).contains(&signature.len())
        || !signature.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(malformed("Signature is not a hex DER ECDSA signature"));
    }
    Ok(sigv4::Components {
        access_key_id: akid.to_string(),
        date: date.to_string(),
        service: service.to_string(),
        signed_headers,
        signature: signature.to_ascii_lowercase(),
    })
}

/// Whether a region set (`us-east-1,us-west-2`, `*`, `us-*`) covers `region`. Entries are
/// trimmed; `*` at the end of an entry matches any rest. `region == "*"` (a verifier that
/// accepts any region) is covered by every non-empty set.
pub fn region_set_covers(region_set: &str, region: &str) -> bool {
    region_set
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .any(|entry| {
            region == "*"
                || entry == region
                || entry
                    .strip_suffix('*')
                    .is_some_and(|prefix| region.starts_with(prefix))
        })
}

/// Verifies a header-signed SigV4A request; the counterpart of [`sigv4::verify_payload`].
///
/// On top of SigV4's checks (key known, date, service, skew, token, `host` signed, payload):
/// `X-Amz-Region-Set` present, signed, and covering `expect.region` (a request signed for other
/// regions is refused as `WrongScope`), and the ECDSA signature valid under the public key
/// derived from the looked-up secret. `Verified::region` is the region set as sent.
pub fn verify(
    request: &sigv4::Request<'_>,
    expect: &Expect,
    lookup: &dyn Fn(&str) -> Option<Credentials>,
) -> Result<Verified, VerifyError> {
    let auth = parse_authorization(sigv4::authorization_value(request.headers)?)?;
    let region_set = sigv4::header_str(request.headers, REGION_SET_HEADER)?
        .ok_or_else(|| VerifyError::Malformed("missing X-Amz-Region-Set".into()))?;
    if !auth.signed_headers.iter().any(|h| h == REGION_SET_HEADER) {
        return Err(VerifyError::Malformed(
            "X-Amz-Region-Set must be a signed header".into(),
        ));
    }
    if !region_set_covers(region_set, &expect.region) {
        return Err(VerifyError::WrongScope(format!(
            "The region set '{region_set}' does not include '{}'",
            expect.region
        )));
    }
    let scope = credential_scope(&auth.date, &auth.service);
    let check = |creds: &Credentials, sts: &str| {
        signature_valid(&verifying_key(creds), sts, &auth.signature)
    };
    let signed = auth.signed(ALGORITHM, &scope, region_set);
    sigv4::verify_signed(request, expect, lookup, &signed, &check)
}

/// SigV4A signing for [`sigv4::sign_request`], with [`sigv4::Signer::region`] as the region
/// set: adds (and signs) `x-amz-region-set`, and signs with the derived ECDSA key. The
/// signature is deterministic (RFC 6979).
#[derive(Clone, Copy, Debug)]
pub struct SigV4a;

impl sigv4::Algorithm for SigV4a {
    fn name(&self) -> &'static str {
        ALGORITHM
    }

    fn add_headers(
        &self,
        headers: &mut HeaderMap,
        signer: &sigv4::Signer<'_>,
    ) -> Result<(), http::header::InvalidHeaderValue> {
        headers.insert(REGION_SET_HEADER, signer.region.parse()?);
        Ok(())
    }

    fn scope(&self, date: &str, signer: &sigv4::Signer<'_>) -> String {
        credential_scope(date, signer.service)
    }

    fn signature(&self, string_to_sign: &str, _date: &str, signer: &sigv4::Signer<'_>) -> String {
        let sig: Signature = signing_key(signer.creds).sign(string_to_sign.as_bytes());
        hex::encode(sig.to_der().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use http::Method;

    use super::*;
    use crate::sigv4::Payload;

    #[test]
    fn add_one_carries() {
        let mut x = [0u8; 32];
        x[31] = 0xff;
        x[30] = 0xff;
        let y = add_one(x);
        assert_eq!(y[29..], [1, 0, 0]);
    }

    #[test]
    fn region_sets() {
        assert!(region_set_covers("us-east-1", "us-east-1"));
        assert!(region_set_covers("eu-west-1, us-east-1", "us-east-1"));
        assert!(region_set_covers("*", "ap-south-1"));
        assert!(region_set_covers("us-*", "us-west-2"));
        assert!(!region_set_covers("us-*", "eu-west-1"));
        assert!(!region_set_covers("us-east-2", "us-east-1"));
        assert!(!region_set_covers("", "us-east-1"));
        assert!(!region_set_covers("us-east-10", "us-east-1"));
    }

    #[test]
    fn authorization_parses_strictly() {
        let sig = "3045022018b4e277d0281864beb51d3600e23f88510ea5031d68ddfbb68614b82a5eb7d2022100effb9c5f22ed9ef3ae0ab243d21f06bce82365bbb79529a07b6888c343ae5f8c";
        let ok = parse_authorization(&format!(
            "{ALGORITHM} Credential=AKID/20150830/service/aws4_request, SignedHeaders=host;x-amz-date;x-amz-region-set, Signature={sig}"
        ))
        .expect("parse");
        assert_eq!(ok.service, "service");
        assert_eq!(ok.signed_headers.len(), 3);
        for bad in [
            format!("AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/service/aws4_request, SignedHeaders=host, Signature={sig}"),
            format!("{ALGORITHM} Credential=AKID/20150830/us-east-1/service/aws4_request, SignedHeaders=host, Signature={sig}"),
            format!("{ALGORITHM} Credential=AKID/20150830/service/aws4_request, SignedHeaders=host, Signature=zz"),
        ] {
            assert!(matches!(parse_authorization(&bad), Err(VerifyError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn sign_then_verify_and_tamper() {
        let creds = Credentials::new("AKIDV4A", "secret-v4a", Some("tok".into()));
        let now = SystemTime::now();
        let mut headers = HeaderMap::new();
        headers.insert("host", http::HeaderValue::from_static("example.com"));
        let signer = sigv4::Signer::new(&creds, "us-west-2,us-east-1", "svc").at(now);
        sigv4::sign_request(
            &SigV4a,
            &Method::PUT,
            "/a?b=c",
            &mut headers,
            Payload::Body(b"body"),
            &signer,
        )
        .expect("sign");
        /// The request signed above, with `headers` and `body` as they arrive.
        fn request<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> sigv4::Request<'a> {
            sigv4::Request {
                method: &Method::PUT,
                target: "/a?b=c",
                headers,
                payload: Payload::Body(body),
            }
        }
        let lookup = |_: &str| Some(creds.clone());
        let run = |h: &HeaderMap, body: &[u8], e: &Expect| verify(&request(h, body), e, &lookup);
        let expect = Expect::new("us-east-1", "svc").at(now);
        let ok = run(&headers, b"body", &expect).expect("verifies");
        assert_eq!(ok.region, "us-west-2,us-east-1");
        assert!(matches!(
            run(&headers, b"bodx", &expect),
            Err(VerifyError::SignatureMismatch { .. })
        ));
        let mut other = expect.clone();
        other.region = "eu-west-1".into();
        assert!(matches!(
            run(&headers, b"body", &other),
            Err(VerifyError::WrongScope(_))
        ));
        let mut widened = headers.clone();
        widened.insert(REGION_SET_HEADER, http::HeaderValue::from_static("*"));
        assert!(matches!(
            run(&widened, b"body", &expect),
            Err(VerifyError::SignatureMismatch { .. })
        ));
        let wrong_key = |_: &str| Some(Credentials::new("AKIDV4A", "other", Some("tok".into())));
        assert!(matches!(
            verify(&request(&headers, b"body"), &expect, &wrong_key),
            Err(VerifyError::SignatureMismatch { .. })
        ));
    }
}
