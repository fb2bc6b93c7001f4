//! Per-request signing work on its own, as the proxy does it on every request.
//!
//! - `sign/get_no_body`: SigV4 signing of a GET with the headers an app typically sends
//!   (host, accept, user-agent, content-type) and the empty-body hash constant;
//! - `sign/post_4k`: SHA-256 of a 4 KiB body (`sha256_hex`) plus signing the POST;
//! - `parts/sha256_4k`: the body hash alone, to split the POST cost;
//! - `aws_sigv4/get_no_body`, `aws_sigv4/post_4k`: the same requests through aws-sigv4's full
//!   `sign()` with the same settings (`signing::reference`, how the sidecar signed before it had
//!   its own writer), for a before/after in one run.
//!
//! Each iteration is one request, so criterion's time per iteration is ns/request (and the
//! `thrpt` line is requests/s on one core). The request head is rebuilt outside the timed
//! section (`iter_batched`), because signing mutates it.
//!
//! Run: `cargo bench --bench signing` (add `-- --quick` for a fast pass; `--profile ci` skips
//! the fat-LTO build, numbers within a few percent).

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sigv4_sidecar::credentials::Credentials;
use sigv4_sidecar::signing::reference::sign_with_aws_sigv4;
use sigv4_sidecar::signing::{
    sha256_hex, sign_request, signable_headers, Payload, RequestToSign, Scope, EMPTY_SHA256,
};

const HOST: &str = "abc123def4.execute-api.us-east-1.amazonaws.com";

fn session_credentials() -> Credentials {
    // A session token of realistic size (STS tokens are several hundred bytes).
    let token = "IQoJb3JpZ2luX2VjEXAMPLE".repeat(30);
    Credentials::new(aws_credential_types::Credentials::new(
        "ASIAEXAMPLEEXAMPLE00",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        Some(token),
        Some(SystemTime::now() + Duration::from_secs(3600)),
        "bench",
    ))
}

/// A request head as an app typically sends it; with a body length, a JSON POST.
fn request_parts(body_len: Option<usize>) -> http::request::Parts {
    let (method, path) = match body_len {
        Some(_) => ("POST", "/Prod/orders"),
        None => ("GET", "/Prod/hello-world?b=2&a=1"),
    };
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("https://{HOST}{path}"))
        .header("host", HOST)
        .header("accept", "application/json")
        .header("user-agent", "bench-client/1.0 (linux; x86_64)")
        .header("content-type", "application/json");
    if let Some(len) = body_len {
        req = req.header("content-length", len);
    }
    req.body(()).expect("request").into_parts().0
}

fn bench_signing(c: &mut Criterion) {
    let creds = session_credentials();
    let scope = Scope::new("us-east-1", "execute-api");
    let body = vec![b'a'; 4096];

    // The sidecar's signer and the aws-sigv4 path it replaced, on the same heads.
    type Signer = fn(&mut http::request::Parts, &str, &Credentials, &Scope);
    let signers: [(&str, Signer); 2] =
        [("sign", new_sign_request), ("aws_sigv4", old_sign_request)];
    for (group, sign) in signers {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(1));
        g.bench_function("get_no_body", |b| {
            b.iter_batched_ref(
                || request_parts(None),
                |parts| sign(parts, EMPTY_SHA256, &creds, &scope),
                BatchSize::SmallInput,
            )
        });
        g.bench_function("post_4k", |b| {
            b.iter_batched_ref(
                || request_parts(Some(body.len())),
                |parts| {
                    let hash = sha256_hex(black_box(&body));
                    sign(parts, &hash, &creds, &scope);
                },
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }

    let mut g = c.benchmark_group("parts");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("sha256_4k", |b| b.iter(|| sha256_hex(black_box(&body))));
    g.finish();
}

/// The sidecar's signer: `Scope::sign` over the signable headers, the work `RouteSigner::sign`
/// does for a SigV4 route.
fn new_sign_request(
    parts: &mut http::request::Parts,
    hash: &str,
    creds: &Credentials,
    scope: &Scope,
) {
    sign_request(parts, hash, creds, scope, SystemTime::now()).expect("signs");
}

/// What `sign_request` did before: aws-sigv4's `sign()`, its headers inserted into the head.
fn old_sign_request(
    parts: &mut http::request::Parts,
    hash: &str,
    creds: &Credentials,
    scope: &Scope,
) {
    let added = {
        let headers = signable_headers(&parts.headers, |n| {
            [
                "authorization",
                "user-agent",
                "x-amzn-trace-id",
                "transfer-encoding",
            ]
            .contains(&n)
        });
        let req = RequestToSign::new(&parts.method, &parts.uri, &headers, Payload::Sha256(hash));
        sign_with_aws_sigv4(scope, creds, SystemTime::now(), &req).expect("signs")
    };
    for (name, value) in added {
        let mut v = http::HeaderValue::from_str(&value).expect("valid");
        v.set_sensitive(true);
        parts.headers.insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("valid"),
            v,
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_signing
}
criterion_main!(benches);
