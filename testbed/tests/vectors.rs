//! Every case of the official SigV4 test suite (`shared/sigv4-test-suite/v4`), header signing:
//! canonical request, string to sign and signature byte for byte, then `verify` on the signed
//! request, and its rejection once the path, a header value or the body changes by one byte.

mod suite;

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Method};
use sigv4_testbed::sigv4::{self, Credentials, Expect, VerifyError};
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

fn verify_raw(case: &Case, req: &RawRequest) -> Result<sigv4::Verified, VerifyError> {
    let creds = case.creds();
    let lookup = move |akid: &str| (akid == creds.access_key_id).then(|| creds.clone());
    sigv4::verify(
        &req.method,
        &req.target,
        &req.header_map(),
        &req.body,
        &case.expect(),
        &lookup,
    )
}

#[test]
fn verify_accepts_every_signed_vector_and_rejects_one_byte_changes() {
    for case in cases() {
        let signed = RawRequest::parse(&case.file("header-signed-request.txt"));
        let verified = verify_raw(&case, &signed)
            .unwrap_or_else(|e| panic!("{}: signed request rejected: {e}", case.name));
        assert_eq!(verified.access_key_id, "AKIDEXAMPLE", "{}", case.name);
        assert!(
            verified.signed_headers.iter().any(|h| h == "host"),
            "{}",
            case.name
        );

        // One more byte at the end of the path (a change normalization cannot undo).
        let mut tampered = RawRequest {
            headers: signed.headers.clone(),
            body: signed.body.clone(),
            method: signed.method.clone(),
            target: String::new(),
        };
        tampered.target = match signed.target.split_once('?') {
            Some((p, q)) => format!("{p}x?{q}"),
            None => format!("{}x", signed.target),
        };
        assert!(
            matches!(
                verify_raw(&case, &tampered),
                Err(VerifyError::SignatureMismatch { .. })
            ),
            "{}: changed path accepted",
            case.name
        );

        // One byte of the (signed) Host value.
        let mut tampered = RawRequest {
            headers: signed.headers.clone(),
            body: signed.body.clone(),
            method: signed.method.clone(),
            target: signed.target.clone(),
        };
        let host = tampered
            .headers
            .iter_mut()
            .find(|(k, _)| k == "host")
            .expect("host");
        host.1.pop();
        host.1.push('x');
        assert!(
            matches!(
                verify_raw(&case, &tampered),
                Err(VerifyError::SignatureMismatch { .. })
            ),
            "{}: changed header accepted",
            case.name
        );

        // One byte of the body (or one byte added to an empty body).
        let mut tampered = RawRequest {
            headers: signed.headers.clone(),
            body: signed.body.clone(),
            method: signed.method.clone(),
            target: signed.target.clone(),
        };
        match tampered.body.first_mut() {
            Some(b) => *b ^= 0x01,
            None => tampered.body.push(b'x'),
        }
        assert!(
            verify_raw(&case, &tampered).is_err(),
            "{}: changed body accepted",
            case.name
        );
    }
}

#[test]
fn verify_enforces_clock_scope_and_token() {
    let case = cases()
        .into_iter()
        .find(|c| c.name == "get-vanilla-with-session-token")
        .expect("case");
    let signed = RawRequest::parse(&case.file("header-signed-request.txt"));
    let creds = case.creds();
    let lookup = |akid: &str| (akid == creds.access_key_id).then(|| creds.clone());
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
    assert!(run(&case.expect(), &headers, &lookup).is_ok());

    let late = case.expect().at(case.now() + Duration::from_secs(301));
    assert_eq!(run(&late, &headers, &lookup), Err(VerifyError::Expired));
    let early = case.expect().at(case.now() - Duration::from_secs(301));
    assert_eq!(run(&early, &headers, &lookup), Err(VerifyError::Expired));

    let mut other_region = case.expect();
    other_region.region = "eu-west-1".into();
    assert!(matches!(
        run(&other_region, &headers, &lookup),
        Err(VerifyError::WrongScope(_))
    ));
    let mut any_region = case.expect();
    any_region.region = "*".into();
    assert!(run(&any_region, &headers, &lookup).is_ok());
    let mut other_service = case.expect();
    other_service.service = "execute-api".into();
    assert!(matches!(
        run(&other_service, &headers, &lookup),
        Err(VerifyError::WrongScope(_))
    ));

    assert_eq!(
        run(&case.expect(), &headers, &|_| None),
        Err(VerifyError::UnknownAccessKey)
    );

    let mut no_token = headers.clone();
    no_token.remove("x-amz-security-token");
    assert_eq!(
        run(&case.expect(), &no_token, &lookup),
        Err(VerifyError::TokenMismatch)
    );
    let other_creds = Credentials {
        session_token: Some("other".into()),
        ..creds.clone()
    };
    let other = |_: &str| Some(other_creds.clone());
    assert_eq!(
        run(&case.expect(), &headers, &other),
        Err(VerifyError::TokenMismatch)
    );

    let mut unsigned = headers.clone();
    unsigned.remove("authorization");
    assert_eq!(
        run(&case.expect(), &unsigned, &lookup),
        Err(VerifyError::MissingAuthentication)
    );
}

#[test]
fn host_must_be_signed() {
    let creds = Credentials::new("AKIDTEST", "secret", None);
    let now = SystemTime::now();
    let mut headers = HeaderMap::new();
    headers.insert("x-other", HeaderValue::from_static("1"));
    sigv4::sign_request(
        &Method::GET,
        "/p",
        &mut headers,
        b"",
        &creds,
        "us-east-1",
        "svc",
        now,
    )
    .expect("sign");
    headers.insert("host", HeaderValue::from_static("example.com"));
    let lookup = |_: &str| Some(creds.clone());
    let expect = Expect::new("us-east-1", "svc").at(now);
    assert_eq!(
        sigv4::verify(&Method::GET, "/p", &headers, b"", &expect, &lookup),
        Err(VerifyError::HostNotSigned)
    );
}

#[test]
fn own_signer_round_trips_through_verify() {
    let creds = Credentials::new("AKIDTEST", "secret", Some("token".into()));
    let now = SystemTime::now();
    let target = "/Prod/a%20b/../hello-world?b=2&a=1&a=+x";
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("127.0.0.1:1"));
    headers.append("x-multi", HeaderValue::from_static("  one  two "));
    headers.append("x-multi", HeaderValue::from_static("three"));
    sigv4::sign_request(
        &Method::POST,
        target,
        &mut headers,
        b"body",
        &creds,
        "us-east-1",
        "execute-api",
        now,
    )
    .expect("sign");
    let lookup = |_: &str| Some(creds.clone());
    let expect = Expect::new("us-east-1", "execute-api").at(now);
    let v =
        sigv4::verify(&Method::POST, target, &headers, b"body", &expect, &lookup).expect("verify");
    assert_eq!(v.session_token.as_deref(), Some("token"));
    assert!(sigv4::verify(&Method::PUT, target, &headers, b"body", &expect, &lookup).is_err());
}
