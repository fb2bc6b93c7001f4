//! The sidecar's own SigV4 writer (`Scope::sign`) against `aws-sigv4`'s full `sign()` with the
//! same settings (`signing::reference`): generated requests with odd paths (dots, double
//! slashes, percent-encodings, reserved characters), queries (repeated, unsorted, empty keys
//! and values, `+`, invalid UTF-8 escapes), repeated headers, odd whitespace, bodies or
//! `UNSIGNED-PAYLOAD`, with and without session tokens, over many dates, regions and services,
//! must get the same signature headers byte for byte. A fixed seed keeps failures reproducible.
//!
//! Independently of aws-sigv4, the diagnostics texts are checked against the testbed's
//! hand-written canonicalizer, and a signature against its verifier.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use sigv4_sidecar::credentials::Credentials;
use sigv4_sidecar::signing::reference::sign_with_aws_sigv4;
use sigv4_sidecar::signing::{sha256_hex, Payload, RequestToSign, Scope, Signature};

/// Requests signed both ways and compared (refusals not counted).
const CASES: usize = 20_000;

const SEGMENTS: &[&str] = &[
    "",
    "a",
    "Prod",
    ".",
    "..",
    "...",
    ".a",
    "a.",
    "%2F",
    "%2f",
    "%20",
    "%25",
    "%2e",
    "%2E%2E",
    "~user",
    "b:c",
    "@",
    "!$&'()*+,;=",
    "%E2%82%AC",
    "%FF",
    "a%00b",
    "-_.",
    "x y",
    "{}",
    "|",
];
const QUERY_PARTS: &[&str] = &[
    "a",
    "b",
    "A",
    "",
    "a=",
    "=b",
    "a=1",
    "a=2",
    "b=2",
    "a=b=c",
    "+",
    "%2B",
    "a+b=c+d",
    "%FF",
    "%20=%20",
    "key=%2F%3F",
    "x=~",
    "c=%E2%82%AC",
    "&",
    ";",
    "k=v;w",
    "%zz",
    "é=1",
];
const NAMES: &[&str] = &[
    "accept",
    "content-type",
    "x-custom",
    "x-custom",
    "x-amz-target",
    "x-amz-meta-a",
    "cache-control",
    "a",
    "zz-last",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "content-length",
    "x-forwarded-for",
];
const VALUES: &[&str] = &[
    "",
    "v",
    "application/json",
    "  leading",
    "trailing  ",
    "a  b   c",
    " a \t b ",
    "\ttab",
    "x,y",
    "\"quoted\"",
    "multi line-ish \\n value",
    "ümlaut",
    "   ",
    "20240101T000000Z",
    "ctl\u{1}char",
];
const REGIONS: &[&str] = &[
    "us-east-1",
    "eu-west-3",
    "ap-southeast-2",
    "cn-north-1",
    "x",
];
const SERVICES: &[&str] = &[
    "execute-api",
    "lambda",
    "s3",
    "s3-object-lambda",
    "sts",
    "es",
];
const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", "PROPFIND",
];

fn pick<'a>(rng: &mut fastrand::Rng, from: &[&'a str]) -> &'a str {
    from[rng.usize(..from.len())]
}

fn path_and_query(rng: &mut fastrand::Rng) -> String {
    let mut s = String::new();
    for _ in 0..rng.usize(0..6) {
        s.push('/');
        s.push_str(pick(rng, SEGMENTS));
    }
    if s.is_empty() || rng.u8(..) < 40 {
        s.push('/');
    }
    if rng.bool() {
        s.push('?');
        for i in 0..rng.usize(0..6) {
            if i > 0 {
                s.push('&');
            }
            s.push_str(pick(rng, QUERY_PARTS));
        }
    }
    s
}

fn credentials(rng: &mut fastrand::Rng) -> Credentials {
    let n = rng.u8(..4);
    let token = match n {
        0 => None,
        1 => Some("IQoJb3JpZ2luX2VjEXAMPLE".repeat(30)),
        _ => Some(format!("token-{n}/+=")),
    };
    Credentials::new(aws_credential_types::Credentials::new(
        format!("AKID{n}EXAMPLE"),
        format!("secret/{n}+KEY"),
        token,
        None,
        "test",
    ))
}

fn ours(sig: Signature) -> Vec<(String, String)> {
    let mut v = vec![
        ("authorization".to_string(), text(&sig.authorization)),
        ("x-amz-date".to_string(), text(&sig.x_amz_date)),
    ];
    if let Some(t) = &sig.security_token {
        assert!(t.is_sensitive());
        v.push(("x-amz-security-token".to_string(), text(t)));
    }
    if let Some(c) = &sig.content_sha256 {
        v.push(("x-amz-content-sha256".to_string(), text(c)));
    }
    assert!(sig.authorization.is_sensitive());
    v.sort();
    v
}

fn text(v: &HeaderValue) -> String {
    v.to_str().expect("ascii").to_string()
}

#[test]
fn generated_requests_sign_exactly_as_aws_sigv4_does() {
    let mut rng = fastrand::Rng::with_seed(0x5167_0004);
    // One scope per region and service for the whole run, so the key cache sees credentials
    // and days change under it.
    let scopes: Vec<Scope> = REGIONS
        .iter()
        .flat_map(|r| SERVICES.iter().map(move |s| Scope::new(r, s)))
        .collect();
    let creds: Vec<Credentials> = (0..8).map(|_| credentials(&mut rng)).collect();
    let mut compared = 0;
    let mut refused = 0;
    let mut case = 0;
    while compared < CASES {
        case += 1;
        assert!(
            case < 2 * CASES,
            "too few signable cases: {compared} of {case}"
        );
        let pq = path_and_query(&mut rng);
        // Only what the sidecar can receive: a valid request target.
        if http::uri::PathAndQuery::try_from(pq.as_str()).is_err() {
            continue;
        }
        let method = pick(&mut rng, METHODS);
        let mut headers: Vec<(&str, &str)> = vec![("host", "abc.execute-api.example.com")];
        for _ in 0..rng.usize(0..8) {
            headers.push((pick(&mut rng, NAMES), pick(&mut rng, VALUES)));
        }
        rng.shuffle(&mut headers);
        let body: Vec<u8> = (0..rng.usize(0..64)).map(|_| rng.u8(..)).collect();
        let hash = sha256_hex(&body);
        let payload = if rng.u8(..) < 32 {
            Payload::Unsigned
        } else {
            Payload::Sha256(&hash)
        };
        let scope = &scopes[rng.usize(..scopes.len())];
        let cred = &creds[rng.usize(..creds.len())];
        // Dates from 1970 to 2096, and often the same day again (cache hits).
        let secs = if rng.bool() {
            1_750_000_000 + rng.u64(..3 * 86_400)
        } else {
            rng.u64(..4_000_000_000)
        };
        let now =
            UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(rng.u64(..1_000_000_000));
        let req = RequestToSign {
            method,
            path_and_query: &pq,
            headers: &headers,
            payload,
        };
        let oracle = sign_with_aws_sigv4(scope, cred, now, &req);
        let mine = scope.sign(cred, now, &req);
        match (oracle, mine) {
            (Ok(mut expected), Ok(sig)) => {
                expected.sort();
                assert_eq!(
                    ours(sig),
                    expected,
                    "case {case}: {method} {pq} {headers:?} {payload:?} {scope:?} at {secs}"
                );
                compared += 1;
            }
            (Err(_), Err(_)) => refused += 1,
            (oracle, mine) => panic!(
                "case {case}: {method} {pq} {headers:?}: aws-sigv4 {:?}, ours {:?}",
                oracle.map(|_| "signed"),
                mine.map(|_| "signed")
            ),
        }
    }
    // The refusals (control characters in a value) were compared too: both sides refused.
    assert!(refused > 0, "no refusal compared");
}

#[test]
fn shared_scope_signs_the_same_under_concurrent_rotation() {
    let scope = Scope::new("us-east-1", "execute-api");
    let mut rng = fastrand::Rng::with_seed(7);
    let creds: Vec<Credentials> = (0..4).map(|_| credentials(&mut rng)).collect();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (scope, creds) = (&scope, &creds);
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t);
                for i in 0..2_000 {
                    let cred = &creds[rng.usize(..creds.len())];
                    // Across UTC midnight.
                    let now = UNIX_EPOCH + Duration::from_secs(1_750_032_000 - 50 + i % 100);
                    let headers = [("host", "h.example"), ("x-n", "1")];
                    let req = RequestToSign {
                        method: "GET",
                        path_and_query: "/a/../b?z=1&a=2",
                        headers: &headers,
                        payload: Payload::Sha256(sigv4_sidecar::signing::EMPTY_SHA256),
                    };
                    let mut expected = sign_with_aws_sigv4(scope, cred, now, &req).expect("oracle");
                    expected.sort();
                    assert_eq!(ours(scope.sign(cred, now, &req).expect("signs")), expected);
                }
            });
        }
    });
}

#[test]
fn diagnostics_match_the_testbeds_canonicalizer_and_redact_the_token() {
    let scope = Scope::new("eu-west-1", "execute-api");
    let token = "very-secret-session-token";
    let creds = Credentials::new(aws_credential_types::Credentials::new(
        "AKIDEXAMPLE",
        "secret",
        Some(token.into()),
        None,
        "test",
    ));
    let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let pq = "/Prod/a%20b/./c//d?b=2&a=%2F&a=1";
    let headers = [
        ("host", "api.example"),
        ("x-multi", " a   b "),
        ("accept", "*/*"),
        ("x-multi", "c"),
    ];
    let req = RequestToSign {
        method: "POST",
        path_and_query: pq,
        headers: &headers,
        payload: Payload::Sha256(sigv4_sidecar::signing::EMPTY_SHA256),
    };
    let d = scope.diagnostics(&creds, now, &req).expect("diagnostics");
    assert!(
        !d.canonical_request.contains(token),
        "{}",
        d.canonical_request
    );
    assert!(d.canonical_request.contains(&format!(
        "x-amz-security-token:** redacted (length={}) **",
        token.len()
    )));

    // The same text, unredacted, from the testbed's independent canonicalizer.
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    map.insert("x-amz-date", HeaderValue::from_static("20250615T150640Z"));
    map.insert("x-amz-security-token", HeaderValue::from_static(token));
    let signed = [
        "accept",
        "host",
        "x-amz-date",
        "x-amz-security-token",
        "x-multi",
    ];
    let (path, query) = pq.split_once('?').expect("query");
    let independent = sigv4_testbed::sigv4::canonical_request(
        "POST",
        path,
        query,
        &map,
        &signed,
        sigv4_sidecar::signing::EMPTY_SHA256,
        true,
    );
    assert_eq!(
        d.canonical_request,
        independent.replace(
            &format!("x-amz-security-token:{token}"),
            &format!(
                "x-amz-security-token:** redacted (length={}) **",
                token.len()
            )
        )
    );
    let scope_line = sigv4_testbed::sigv4::credential_scope("20250615", "eu-west-1", "execute-api");
    assert_eq!(
        d.string_to_sign,
        sigv4_testbed::sigv4::string_to_sign("20250615T150640Z", &scope_line, &independent)
    );

    // And the signature itself passes the testbed's verifier.
    scope
        .sign(&creds, now, &req)
        .expect("signs")
        .apply(&mut map);
    let expect = sigv4_testbed::sigv4::Expect::new("eu-west-1", "execute-api").at(now);
    let lookup = |id: &str| {
        (id == "AKIDEXAMPLE").then(|| {
            sigv4_testbed::sigv4::Credentials::new("AKIDEXAMPLE", "secret", Some(token.into()))
        })
    };
    sigv4_testbed::sigv4::verify(&http::Method::POST, pq, &map, b"", &expect, &lookup)
        .expect("the independent verifier accepts the signature");
}

#[test]
fn refuses_what_cannot_be_signed() {
    let scope = Scope::new("us-east-1", "execute-api");
    let creds = Credentials::new(aws_credential_types::Credentials::new(
        "AKID", "s", None, None, "test",
    ));
    let now = SystemTime::now();
    let sign = |headers: &[(&str, &str)]| {
        scope.sign(
            &creds,
            now,
            &RequestToSign {
                method: "GET",
                path_and_query: "/",
                headers,
                payload: Payload::Unsigned,
            },
        )
    };
    assert!(sign(&[("accept", "x")]).is_err(), "no host");
    assert!(
        sign(&[("host", "h"), ("Accept", "x")]).is_err(),
        "uppercase name"
    );
    assert!(
        sign(&[("host", "h"), ("x", "a\r\nb")]).is_err(),
        "control characters"
    );
    let ok = sign(&[("host", "h")]).expect("signs");
    assert_eq!(
        ok.content_sha256.as_ref().map(text).as_deref(),
        Some("UNSIGNED-PAYLOAD")
    );
    assert!(ok.security_token.is_none());
}
