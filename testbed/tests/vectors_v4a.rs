//! Every case of the official SigV4A test suite (`shared/sigv4-test-suite/v4a`): for header and
//! query (presigned) signing, the canonical request and string to sign byte for byte; the public
//! key derived from the secret equal to `public-key.json`; the suite's signatures valid under
//! that key (ECDSA is randomized, so signatures are compared by verification); then
//! `sigv4a::verify` on each signed request, and its rejection once a byte changes.

mod suite;

use http::HeaderMap;
use p256::ecdsa::VerifyingKey;
use serde_json::Value;
use sigv4_testbed::sigv4::{self, Payload, VerifyError};
use sigv4_testbed::sigv4a;
use suite::{Case, RawRequest};

/// The cases with expected output. The suite also has two folders with only `context.json` and
/// `request.txt` (aws-c-auth keeps them for SigV4 only); `every_folder_is_a_case_or_input_only`
/// pins that down, so a case cannot silently drop out.
fn cases() -> Vec<Case> {
    suite::cases("v4a", "header-canonical-request.txt", 38)
}

#[test]
fn every_folder_is_a_case_or_input_only() {
    let all = suite::cases("v4a", "context.json", 40);
    let input_only: Vec<&str> = all
        .iter()
        .filter(|c| !c.dir.join("header-canonical-request.txt").is_file())
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        input_only,
        [
            "get-vanilla-query-order-key",
            "get-vanilla-query-order-value"
        ]
    );
    for case in cases() {
        for file in [
            "header-string-to-sign.txt",
            "header-signature.txt",
            "header-signed-request.txt",
            "query-canonical-request.txt",
            "query-string-to-sign.txt",
            "query-signature.txt",
            "query-signed-request.txt",
            "public-key.json",
        ] {
            assert!(case.dir.join(file).is_file(), "{}: no {file}", case.name);
        }
    }
}

/// The public key as `public-key.json` gives it (not derived), SEC1 uncompressed `04 || X || Y`.
fn published_key(case: &Case) -> (VerifyingKey, String, String) {
    let json: Value = serde_json::from_str(&case.file("public-key.json")).expect("public-key.json");
    let x = json["X"].as_str().expect("X").to_ascii_lowercase();
    let y = json["Y"].as_str().expect("Y").to_ascii_lowercase();
    let sec1 = hex::decode(format!("04{x}{y}")).expect("hex");
    let key = VerifyingKey::from_sec1_bytes(&sec1)
        .unwrap_or_else(|e| panic!("{}: public key not on the curve: {e}", case.name));
    (key, x, y)
}

fn date(case: &Case) -> (String, String) {
    let amz_date = sigv4::format_amz_date(case.now());
    let day = amz_date[..8].to_string();
    (amz_date, day)
}

#[test]
fn derived_public_key_equals_every_public_key_json() {
    for case in cases() {
        let (_, x, y) = published_key(&case);
        let derived = sigv4a::verifying_key(&case.creds());
        assert_eq!(
            sigv4a::public_key_xy(&derived),
            (x, y),
            "{}: derived public key",
            case.name
        );
    }
}

#[test]
fn header_canonical_request_string_to_sign_and_signatures_match_every_vector() {
    for case in cases() {
        let (_, creq) = suite::header_canonical_request(
            &case,
            &[(sigv4a::REGION_SET_HEADER, case.str("region"))],
        );
        let (amz_date, day) = date(&case);
        assert_eq!(
            creq,
            case.file("header-canonical-request.txt"),
            "{}: canonical request",
            case.name
        );
        let scope = sigv4a::credential_scope(&day, case.str("service"));
        let sts = sigv4a::string_to_sign(&amz_date, &scope, &creq);
        assert_eq!(
            sts,
            case.file("header-string-to-sign.txt"),
            "{}: string to sign",
            case.name
        );

        let (published, _, _) = published_key(&case);
        let signature = case.file("header-signature.txt");
        assert!(
            sigv4a::signature_valid(&published, &sts, signature.trim()),
            "{}: header-signature.txt does not verify",
            case.name
        );
        // Not vacuous: the same signature over another string, or one flipped bit, fails.
        assert!(
            !sigv4a::signature_valid(&published, &format!("{sts}x"), signature.trim()),
            "{}: signature verifies for another string",
            case.name
        );
        let mut flipped = hex::decode(signature.trim()).expect("hex");
        let last = flipped.len() - 1;
        flipped[last] ^= 0x01;
        assert!(
            !sigv4a::signature_valid(&published, &sts, &hex::encode(flipped)),
            "{}: flipped signature verifies",
            case.name
        );
    }
}

#[test]
fn verify_accepts_every_header_signed_vector_and_rejects_one_byte_changes() {
    for case in cases() {
        let (signed, verified) = suite::check_signed_request(&case, sigv4a::verify);
        assert_eq!(verified.region, case.str("region"), "{}", case.name);
        let mismatch =
            |changed: RawRequest| suite::is_mismatch(&changed.verify(sigv4a::verify, &case));
        let host = signed.with(|r| r.header_mut("host").push('x'));
        assert!(mismatch(host), "{}: host", case.name);
        // Widening the region set to `*` still covers the verifier's region: only the
        // signature can catch it.
        let regions = signed.with(|r| *r.header_mut(sigv4a::REGION_SET_HEADER) = "*".into());
        assert!(mismatch(regions), "{}: region set", case.name);
    }
}

#[test]
fn verify_refuses_a_region_set_without_the_verifiers_region() {
    let case = suite::find(cases(), "get-vanilla-with-session-token");
    let signed = RawRequest::parse(&case.file("header-signed-request.txt"));
    let lookup = case.lookup();
    let run = |expect: &sigv4::Expect, headers: &HeaderMap| {
        let request = sigv4::Request {
            method: &signed.method,
            target: &signed.target,
            headers,
            payload: Payload::Body(&signed.body),
        };
        sigv4a::verify(&request, expect, &lookup)
    };
    let headers = signed.header_map();
    assert!(run(&case.expect(), &headers).is_ok());
    let mut elsewhere = case.expect();
    elsewhere.region = "eu-west-1".into();
    assert!(matches!(
        run(&elsewhere, &headers),
        Err(VerifyError::WrongScope(_))
    ));
    let mut no_set = headers.clone();
    no_set.remove(sigv4a::REGION_SET_HEADER);
    assert!(matches!(
        run(&case.expect(), &no_set),
        Err(VerifyError::Malformed(_))
    ));
    let mut no_token = headers.clone();
    no_token.remove("x-amz-security-token");
    assert_eq!(
        run(&case.expect(), &no_token),
        Err(VerifyError::TokenMismatch)
    );
    // A SigV4 verifier does not take a SigV4A request, and the other way round.
    assert!(matches!(
        sigv4::verify(
            &signed.method,
            &signed.target,
            &headers,
            &signed.body,
            &case.expect(),
            &lookup
        ),
        Err(VerifyError::Malformed(_))
    ));
}

/// The query (presigned) form: the signed request's query without `X-Amz-Signature`, and the
/// headers named by `X-Amz-SignedHeaders`. With `omit_session_token` the signer added
/// `X-Amz-Security-Token` after signing (post-sts-header-after), so it is not signed either.
#[test]
fn query_canonical_request_string_to_sign_and_signatures_match_every_vector() {
    for case in cases() {
        let signed = RawRequest::parse(&case.file("query-signed-request.txt"));
        let (path, query) = signed.target.split_once('?').expect("presigned query");
        let mut signature = None;
        let mut signed_headers = None;
        let mut rest = Vec::new();
        for piece in query.split('&') {
            match piece.split_once('=') {
                Some(("X-Amz-Signature", v)) => signature = Some(v.to_string()),
                Some(("X-Amz-Security-Token", _)) if case.flag("omit_session_token") => {}
                Some(("X-Amz-SignedHeaders", v)) => {
                    signed_headers = Some(
                        percent_encoding::percent_decode_str(v)
                            .decode_utf8()
                            .expect("utf-8")
                            .into_owned(),
                    );
                    rest.push(piece);
                }
                _ => rest.push(piece),
            }
        }
        let signature = signature.unwrap_or_else(|| panic!("{}: no X-Amz-Signature", case.name));
        let signed_headers = signed_headers.expect("X-Amz-SignedHeaders");
        let names: Vec<&str> = signed_headers.split(';').collect();
        let creq = sigv4::canonical_request(
            signed.method.as_str(),
            path,
            &rest.join("&"),
            &signed.header_map(),
            &names,
            &sigv4::sha256_hex(&signed.body),
            case.flag("normalize"),
        );
        assert_eq!(
            creq,
            case.file("query-canonical-request.txt"),
            "{}: query canonical request",
            case.name
        );
        let (amz_date, day) = date(&case);
        let sts = sigv4a::string_to_sign(
            &amz_date,
            &sigv4a::credential_scope(&day, case.str("service")),
            &creq,
        );
        assert_eq!(
            sts,
            case.file("query-string-to-sign.txt"),
            "{}: query string to sign",
            case.name
        );
        let (published, _, _) = published_key(&case);
        let derived = sigv4a::verifying_key(&case.creds());
        for (what, sig) in [
            ("query-signature.txt", case.file("query-signature.txt")),
            ("X-Amz-Signature", signature),
        ] {
            assert!(
                sigv4a::signature_valid(&published, &sts, sig.trim()),
                "{}: {what} does not verify",
                case.name
            );
            assert!(
                sigv4a::signature_valid(&derived, &sts, sig.trim()),
                "{}: {what} does not verify under the derived key",
                case.name
            );
        }
    }
}
