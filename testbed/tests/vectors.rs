//! Every case of the official SigV4 test suite (`shared/sigv4-test-suite/v4`), header signing:
//! canonical request, string to sign and signature byte for byte, then `verify` on the signed
//! request, and its rejection once the path, a header value or the body changes by one byte.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::Value;
use sigv4_testbed::sigv4::{self, Credentials, Expect, VerifyError};

fn suite_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/sigv4-test-suite/v4");
    assert!(
        dir.is_dir(),
        "the SigV4 test suite is missing at {}: it must sit beside the checkout (shared/sigv4-test-suite)",
        dir.display()
    );
    dir
}

/// A raw HTTP request from a `.txt` file: target kept byte for byte, folded header lines joined.
struct RawRequest {
    method: Method,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawRequest {
    fn parse(text: &str) -> RawRequest {
        let (head, body) = match text.find("\n\n") {
            Some(i) => (&text[..i], text.as_bytes()[i + 2..].to_vec()),
            None => (text.trim_end_matches('\n'), Vec::new()),
        };
        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let request_line = lines.next().expect("request line");
        // The target may contain spaces (get-space-*), so split at the first and last space.
        let first = request_line.find(' ').expect("method");
        let last = request_line.rfind(' ').expect("version");
        let method = Method::from_bytes(&request_line.as_bytes()[..first]).expect("method");
        let target = request_line[first + 1..last].to_string();
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with(' ') || line.starts_with('\t') {
                // obs-fold: a continuation of the previous header's value.
                let last = headers.last_mut().expect("continuation without a header");
                last.1.push(' ');
                last.1.push_str(line.trim());
            } else {
                let (name, value) = line.split_once(':').expect("header line");
                headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        RawRequest {
            method,
            target,
            headers,
            body,
        }
    }

    fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in &self.headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        map
    }
}

struct Case {
    name: String,
    dir: PathBuf,
    ctx: Value,
}

impl Case {
    fn file(&self, name: &str) -> String {
        let p = self.dir.join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }
    fn creds(&self) -> Credentials {
        let c = &self.ctx["credentials"];
        Credentials::new(
            c["access_key_id"].as_str().expect("akid"),
            c["secret_access_key"].as_str().expect("secret"),
            c["token"].as_str().map(str::to_string),
        )
    }
    fn str(&self, key: &str) -> &str {
        self.ctx[key]
            .as_str()
            .unwrap_or_else(|| panic!("{}: {key}", self.name))
    }
    fn flag(&self, key: &str) -> bool {
        self.ctx[key].as_bool().unwrap_or(false)
    }
    fn now(&self) -> SystemTime {
        let ts = self.str("timestamp"); // 2015-08-30T12:36:00Z
        let compact: String = ts.chars().filter(|c| *c != '-' && *c != ':').collect();
        sigv4::parse_amz_date(&compact).unwrap_or_else(|| panic!("{}: timestamp {ts}", self.name))
    }
    fn expect(&self) -> Expect {
        Expect {
            region: self.str("region").to_string(),
            service: self.str("service").to_string(),
            now: self.now(),
            max_skew: Duration::from_secs(300),
            normalize: self.flag("normalize"),
        }
    }
}

fn cases() -> Vec<Case> {
    let mut cases: Vec<Case> = std::fs::read_dir(suite_dir())
        .expect("read suite")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("header-signed-request.txt").is_file())
        .map(|dir| {
            let ctx: Value = serde_json::from_str(
                &std::fs::read_to_string(dir.join("context.json")).expect("context.json"),
            )
            .expect("context json");
            let name = dir
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            Case { name, dir, ctx }
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(
        cases.len() >= 30,
        "expected the whole suite, found {} cases",
        cases.len()
    );
    cases
}

#[test]
fn canonical_request_string_to_sign_and_signature_match_every_vector() {
    let mut checked = 0;
    for case in cases() {
        let req = RawRequest::parse(&case.file("request.txt"));
        let creds = case.creds();
        let amz_date = sigv4::format_amz_date(case.now());
        // The headers a signer adds before computing the signature.
        let mut headers = req.header_map();
        headers.insert(
            "x-amz-date",
            HeaderValue::from_str(&amz_date).expect("date"),
        );
        if let (Some(token), false) = (&creds.session_token, case.flag("omit_session_token")) {
            headers.insert(
                "x-amz-security-token",
                HeaderValue::from_str(token).expect("token"),
            );
        }
        let payload_hash = sigv4::sha256_hex(&req.body);
        if case.flag("sign_body") {
            headers.insert(
                "x-amz-content-sha256",
                HeaderValue::from_str(&payload_hash).expect("hash"),
            );
        }
        let mut names: Vec<String> = headers.keys().map(|k| k.as_str().to_string()).collect();
        names.sort();
        let signed: Vec<&str> = names.iter().map(String::as_str).collect();
        let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));

        let creq = sigv4::canonical_request(
            req.method.as_str(),
            path,
            query,
            &headers,
            &signed,
            &payload_hash,
            case.flag("normalize"),
        );
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
