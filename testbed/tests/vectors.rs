//! Every case of the official SigV4 test suite (`shared/sigv4-test-suite/v4`), header signing:
//! canonical request, string to sign and signature byte for byte, then `verify` on the signed
//! request, and its rejection once the path, a header value or the body changes by one byte.

mod suite;

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method};
use sigv4_testbed::sigv4::{self, Credentials, Expect, Payload, SigV4, Signer, VerifyError};
use suite::{Case, RawRequest};

fn cases() -> Vec<Case> {
    suite::cases("v4", "header-signed-request.txt", 30)
}

#[test]
fn canonical_request_string_to_sign_and_signature_match_every_vector() {
    let mut checked = 0;
    for case in cases() {
        let (_, creq) = suite::header_canonical_request(&case, &[]);
        let creds = case.creds();
        let amz_date = sigv4::format_amz_date(case.now());
        assert_eq!(
            creq,
            case.file("header-canonical-request.txt"),
            "{}: canonical request",
            case.name
        );

        let date = &amz_date[..8];
        let scope = sigv4::credential_scope(date, case.str("region"), case.str("service"));
        let sts = sigv4::string_to_sign(&amz_date, &scope, &creq);
        assert_eq!(
            sts,
            case.file("header-string-to-sign.txt"),
            "{}: string to sign",
            case.name
        );

        let key = sigv4::signing_key(
            &creds.secret_access_key,
            date,
            case.str("region"),
            case.str("service"),
        );
        assert_eq!(
            sigv4::signature(&key, &sts),
            case.file("header-signature.txt").trim(),
            "{}: signature",
            case.name
        );
        checked += 1;
    }
    println!("{checked} vectors checked");
}

#[test]
fn verify_accepts_every_signed_vector_and_rejects_one_byte_changes() {
    for case in cases() {
        let (signed, verified) = suite::check_signed_request(&case, sigv4::verify_payload);
        assert!(
            verified.signed_headers.iter().any(|h| h == "host"),
            "{}",
            case.name
        );
        // One byte of the (signed) Host value.
        let host = signed.with(|r| {
            let host = r.header_mut("host");
            host.pop();
            host.push('x');
        });
        assert!(
            suite::is_mismatch(&host.verify(sigv4::verify_payload, &case)),
            "{}: changed header accepted",
            case.name
        );
    }
}

#[test]
fn verify_enforces_clock_scope_and_token() {
    let case = suite::find(cases(), "get-vanilla-with-session-token");
    let signed = RawRequest::parse(&case.file("header-signed-request.txt"));
    let lookup = case.lookup();
    let run =
        |expect: &Expect, headers: &HeaderMap, lookup: &dyn Fn(&str) -> Option<Credentials>| {
            sigv4::verify(
                &signed.method,
                &signed.target,
                headers,
                &signed.body,
                expect,
                lookup,
            )
        };
    let headers = signed.header_map();
    let expect = case.expect();
    assert!(run(&expect, &headers, &lookup).is_ok());
    let mut any_region = case.expect();
    any_region.region = "*".into();
    assert!(run(&any_region, &headers, &lookup).is_ok());

    let mut other_region = case.expect();
    other_region.region = "eu-west-1".into();
    let mut other_service = case.expect();
    other_service.service = "execute-api".into();
    for wrong in [other_region, other_service] {
        assert!(
            matches!(
                run(&wrong, &headers, &lookup),
                Err(VerifyError::WrongScope(_))
            ),
            "{wrong:?}"
        );
    }

    let late = case.expect().at(case.now() + Duration::from_secs(301));
    let early = case.expect().at(case.now() - Duration::from_secs(301));
    let mut no_token = headers.clone();
    no_token.remove("x-amz-security-token");
    let mut unsigned = headers.clone();
    unsigned.remove("authorization");
    let other_creds = Credentials {
        session_token: Some("other".into()),
        ..case.creds()
    };
    let other_token = |_: &str| Some(other_creds.clone());
    let nobody = |_: &str| None;
    type Lookup<'a> = &'a dyn Fn(&str) -> Option<Credentials>;
    let refusals: [(&str, &Expect, &HeaderMap, Lookup, VerifyError); 6] = [
        ("late", &late, &headers, &lookup, VerifyError::Expired),
        ("early", &early, &headers, &lookup, VerifyError::Expired),
        (
            "unknown key",
            &expect,
            &headers,
            &nobody,
            VerifyError::UnknownAccessKey,
        ),
        (
            "no token",
            &expect,
            &no_token,
            &lookup,
            VerifyError::TokenMismatch,
        ),
        (
            "other token",
            &expect,
            &headers,
            &other_token,
            VerifyError::TokenMismatch,
        ),
        (
            "unsigned",
            &expect,
            &unsigned,
            &lookup,
            VerifyError::MissingAuthentication,
        ),
    ];
    for (what, expect, headers, lookup, refusal) in refusals {
        assert_eq!(run(expect, headers, lookup), Err(refusal), "{what}");
    }
}

/// Signs with the testbed's own SigV4 signer, for `service` in us-east-1, now; returns what a
/// verifier expects at that moment.
fn sign_now(
    method: &Method,
    target: &str,
    headers: &mut HeaderMap,
    body: &[u8],
    creds: &Credentials,
    service: &str,
) -> Expect {
    let signer = Signer::new(creds, "us-east-1", service);
    sigv4::sign_request(
        &SigV4,
        method,
        target,
        headers,
        Payload::Body(body),
        &signer,
    )
    .expect("sign");
    Expect::new("us-east-1", service).at(signer.now())
}

#[test]
fn host_must_be_signed() {
    let creds = Credentials::new("AKIDTEST", "secret", None);
    let mut headers = HeaderMap::new();
    headers.insert("x-other", HeaderValue::from_static("1"));
    let expect = sign_now(&Method::GET, "/p", &mut headers, b"", &creds, "svc");
    headers.insert("host", HeaderValue::from_static("example.com"));
    let lookup = |_: &str| Some(creds.clone());
    assert_eq!(
        sigv4::verify(&Method::GET, "/p", &headers, b"", &expect, &lookup),
        Err(VerifyError::HostNotSigned)
    );
}

#[test]
fn own_signer_round_trips_through_verify() {
    let creds = Credentials::new("AKIDTEST", "secret", Some("token".into()));
    let target = "/Prod/a%20b/../hello-world?b=2&a=1&a=+x";
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("127.0.0.1:1"));
    headers.append("x-multi", HeaderValue::from_static("  one  two "));
    headers.append("x-multi", HeaderValue::from_static("three"));
    let expect = sign_now(
        &Method::POST,
        target,
        &mut headers,
        b"body",
        &creds,
        "execute-api",
    );
    let lookup = |_: &str| Some(creds.clone());
    let v =
        sigv4::verify(&Method::POST, target, &headers, b"body", &expect, &lookup).expect("verify");
    assert_eq!(v.session_token.as_deref(), Some("token"));
    assert!(sigv4::verify(&Method::PUT, target, &headers, b"body", &expect, &lookup).is_err());
}
