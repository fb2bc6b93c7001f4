//! The official AWS signing test suites (`shared/sigv4-test-suite/{v4,v4a}`) as data: one
//! [`Case`] per folder, its raw requests parsed byte for byte. Shared by `vectors.rs` (SigV4)
//! and `vectors_v4a.rs` (SigV4A).

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::Value;
use sigv4_testbed::sigv4::{self, Credentials, Expect, Payload, Request, Verified, VerifyError};

/// `sigv4::verify_payload` or `sigv4a::verify`: the two verifiers take the same inputs.
pub type Verifier = fn(
    &Request<'_>,
    &Expect,
    &dyn Fn(&str) -> Option<Credentials>,
) -> Result<Verified, VerifyError>;

pub fn suite_dir(kind: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/sigv4-test-suite")
        .join(kind);
    assert!(
        dir.is_dir(),
        "the SigV4 test suite is missing at {}: it must sit beside the checkout (shared/sigv4-test-suite)",
        dir.display()
    );
    dir
}

/// A raw HTTP request from a `.txt` file: target kept byte for byte, folded header lines joined.
#[derive(Clone)]
pub struct RawRequest {
    pub method: Method,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawRequest {
    pub fn parse(text: &str) -> RawRequest {
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

    pub fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in &self.headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        map
    }

    /// `verifier`'s verdict on this request, with the case's credentials and expectations.
    pub fn verify(&self, verifier: Verifier, case: &Case) -> Result<Verified, VerifyError> {
        let headers = self.header_map();
        let request = Request {
            method: &self.method,
            target: &self.target,
            headers: &headers,
            payload: Payload::Body(&self.body),
        };
        verifier(&request, &case.expect(), &case.lookup())
    }

    /// A copy with `change` made to it (for the "one byte changed is refused" checks).
    pub fn with(&self, change: impl FnOnce(&mut RawRequest)) -> RawRequest {
        let mut copy = self.clone();
        change(&mut copy);
        copy
    }

    /// A copy with one more byte at the end of the path (a change normalization cannot undo).
    pub fn with_longer_path(&self) -> RawRequest {
        self.with(|r| {
            r.target = match r.target.split_once('?') {
                Some((p, q)) => format!("{p}x?{q}"),
                None => format!("{}x", r.target),
            }
        })
    }

    /// A copy with one byte of the body changed (or one byte added to an empty body).
    pub fn with_changed_body(&self) -> RawRequest {
        self.with(|r| match r.body.first_mut() {
            Some(b) => *b ^= 0x01,
            None => r.body.push(b'x'),
        })
    }

    /// The value of header `name` (lower case).
    ///
    /// # Panics
    /// If the request has no such header.
    pub fn header_mut(&mut self, name: &str) -> &mut String {
        match self.headers.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => v,
            None => panic!("no {name} header"),
        }
    }
}

pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    pub ctx: Value,
}

impl Case {
    pub fn file(&self, name: &str) -> String {
        let p = self.dir.join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }
    pub fn creds(&self) -> Credentials {
        let c = &self.ctx["credentials"];
        Credentials::new(
            c["access_key_id"].as_str().expect("akid"),
            c["secret_access_key"].as_str().expect("secret"),
            c["token"].as_str().map(str::to_string),
        )
    }
    pub fn str(&self, key: &str) -> &str {
        self.ctx[key]
            .as_str()
            .unwrap_or_else(|| panic!("{}: {key}", self.name))
    }
    pub fn flag(&self, key: &str) -> bool {
        self.ctx[key].as_bool().unwrap_or(false)
    }
    pub fn now(&self) -> SystemTime {
        let ts = self.str("timestamp"); // 2015-08-30T12:36:00Z
        let compact: String = ts.chars().filter(|c| *c != '-' && *c != ':').collect();
        sigv4::parse_amz_date(&compact).unwrap_or_else(|| panic!("{}: timestamp {ts}", self.name))
    }
    /// A credential lookup that knows only this case's access key.
    pub fn lookup(&self) -> impl Fn(&str) -> Option<Credentials> {
        let creds = self.creds();
        move |akid: &str| (akid == creds.access_key_id).then(|| creds.clone())
    }

    pub fn expect(&self) -> Expect {
        Expect {
            region: self.str("region").to_string(),
            service: self.str("service").to_string(),
            now: self.now(),
            max_skew: Duration::from_secs(300),
            normalize: self.flag("normalize"),
        }
    }
}

/// Every folder of suite `kind` that has `marker` (e.g. `header-signed-request.txt`), sorted
/// by name; at least `min` of them.
pub fn cases(kind: &str, marker: &str, min: usize) -> Vec<Case> {
    let mut cases: Vec<Case> = std::fs::read_dir(suite_dir(kind))
        .expect("read suite")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join(marker).is_file())
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
        cases.len() >= min,
        "expected the whole {kind} suite, found {} cases",
        cases.len()
    );
    cases
}

/// Whether a verdict is a signature mismatch (not an earlier refusal).
pub fn is_mismatch(verdict: &Result<Verified, VerifyError>) -> bool {
    matches!(verdict, Err(VerifyError::SignatureMismatch { .. }))
}

/// The checks both algorithms make of a case's `header-signed-request.txt`: `verifier` accepts
/// it (as `AKIDEXAMPLE`), finds a signature mismatch once the path gains a byte (a change
/// normalization cannot undo) and refuses it once a byte of the body changes. Returns the
/// request and the verdict, for the algorithm's own checks.
pub fn check_signed_request(case: &Case, verifier: Verifier) -> (RawRequest, Verified) {
    let signed = RawRequest::parse(&case.file("header-signed-request.txt"));
    let verified = signed
        .verify(verifier, case)
        .unwrap_or_else(|e| panic!("{}: signed request rejected: {e}", case.name));
    assert_eq!(verified.access_key_id, "AKIDEXAMPLE", "{}", case.name);
    assert!(
        is_mismatch(&signed.with_longer_path().verify(verifier, case)),
        "{}: changed path accepted",
        case.name
    );
    assert!(
        signed.with_changed_body().verify(verifier, case).is_err(),
        "{}: changed body accepted",
        case.name
    );
    (signed, verified)
}

/// The case `name` of `cases`.
pub fn find(cases: Vec<Case>, name: &str) -> Case {
    cases
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

/// The canonical request a signer makes of `request.txt` with header signing: it adds
/// `x-amz-date`, the `extra` headers (SigV4A's `x-amz-region-set`), the session token (unless
/// `omit_session_token`) and, with `sign_body`, `x-amz-content-sha256`, then signs every header.
/// Returns the request and its canonical request.
pub fn header_canonical_request(case: &Case, extra: &[(&str, &str)]) -> (RawRequest, String) {
    let req = RawRequest::parse(&case.file("request.txt"));
    let creds = case.creds();
    let amz_date = sigv4::format_amz_date(case.now());
    let mut headers = req.header_map();
    headers.insert(
        "x-amz-date",
        HeaderValue::from_str(&amz_date).expect("date"),
    );
    for (k, v) in extra {
        headers.insert(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
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
    (req, creq)
}
