//! Issue 13 end to end: the real sidecar binary in front of the testbed gateway's issue-13 modes,
//! over real sockets. Every signature is checked by the testbed's independent verifiers (its own
//! SigV4 canonicalizer, and for SigV4A its own p256-based verifier), never by aws-sigv4.
//!
//! - `connect`: TLS to a gateway whose certificate names only 127.0.0.1/localhost, while Host and
//!   the signature name the API.
//! - VPC Lattice: a 256 MiB chunked upload arrives byte for byte while the sidecar's peak RSS
//!   stays far below it; one byte over the limit is 413 and the upstream never sees it complete.
//! - SigV4A, the CloudFront-like hop, many headers, `client_authorization_to`.
//! - Diagnostics: AWS's 403s are counted, one warn per window, the token never logged.

mod common;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::wire::{self, Conn};
use common::*;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sigv4_testbed::gateway::{refusal, BodyState, Gateway, PatternBody, Refusal};
use sigv4_testbed::gateway::{HOP_CLIENT_IP, HOP_VIA};
use sigv4_testbed::StsEmulator;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

const LIFETIME: Duration = Duration::from_secs(3600);
const API: &str = "abc123.execute-api.us-east-1.amazonaws.com";

/// The record of the gateway's last request.
fn last(gw: &Gateway) -> sigv4_testbed::gateway::Recorded {
    gw.requests().pop().expect("the gateway recorded a request")
}

/// Whether the gateway verified the request as signed by the sidecar's assumed `ROLE`.
fn assumed_role(rec: &sigv4_testbed::gateway::Recorded) -> bool {
    rec.outcome
        .as_ref()
        .is_ok_and(|arn| arn.contains(":assumed-role/sidecar-caller/"))
}

/// The gateway's last request, asserted verified as signed by the sidecar's assumed `ROLE`.
#[track_caller]
fn last_by_role(gw: &Gateway) -> sigv4_testbed::gateway::Recorded {
    let rec = last(gw);
    assert!(
        assumed_role(&rec),
        "not signed by the assumed role: {rec:?}"
    );
    rec
}

/// Asserts the upstream received `name: value` and the signature covers `name`.
#[track_caller]
fn assert_signed_header(rec: &sigv4_testbed::gateway::Recorded, name: &str, value: &str) {
    assert_eq!(rec.header(name).as_deref(), Some(value), "{name}: {rec:?}");
    assert!(
        rec.signed_headers.iter().any(|h| h == name),
        "{name} not signed: {rec:?}"
    );
}

/// The name `client_authorization_to` gives the app's own `Authorization` upstream.
const ORIGINAL_AUTHORIZATION: &str = "x-original-authorization";

/// A sidecar that forwards the app's `Authorization` as [`ORIGINAL_AUTHORIZATION`].
fn forward_client_authorization(launch: Launch) -> Launch {
    launch.set("CLIENT_AUTHORIZATION_TO", ORIGINAL_AUTHORIZATION)
}

/// Whether a log line is the rejected-signature warning.
fn refusal_warn(v: &serde_json::Value) -> bool {
    v["message"]
        .as_str()
        .is_some_and(|m| m.starts_with(REFUSED))
}

// ---- connect -----------------------------------------------------------------------------

async fn private_api(sts: &StsEmulator) -> (Gateway, tempfile::TempDir, String) {
    let gw = gateway_with(sts, |b| b.tls().api_host(API)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = gw.write_ca_pem(dir.path()).display().to_string();
    (gw, dir, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_reaches_a_private_api_whose_certificate_names_only_the_endpoint() {
    let sts = sts(LIFETIME).await;
    let (gw, _dir, ca) = private_api(&sts).await;
    let port = gw.addr().port();
    for (connect, sni) in [
        (format!("127.0.0.1:{port}"), None),
        (format!("localhost:{port}"), Some("localhost")),
    ] {
        let sidecar = ready_sidecar(
            Launch::new(&format!("https://{API}/Prod"), &sts)
                .set("CONNECT", &connect)
                .set("CA_FILE", &ca),
        )
        .await;
        for i in 0..3 {
            let r = get(&sidecar.url(&format!("/hello?i={i}"))).await;
            assert_eq!(r.status, 200, "{connect}: {:?}\n{}", r.body, sidecar.logs());
        }
        let rec = last(&gw);
        assert!(assumed_role(&rec), "{connect}: {rec:?}");
        assert_signed_header(&rec, "host", API);
        assert_eq!(
            rec.server_name.as_deref(),
            sni,
            "SNI names the connect host"
        );
        assert_eq!(rec.target, "/Prod/hello?i=2");
        assert_eq!(rec.version, "HTTP/2.0", "h2 by ALPN through connect");
    }

    // TLS really verifies: without the CA the same connect is refused, and nothing is signed
    // for the gateway.
    let before = gw.requests().len();
    let sidecar = ready_sidecar(
        Launch::new(&format!("https://{API}/Prod"), &sts)
            .set("CONNECT", &format!("127.0.0.1:{port}")),
    )
    .await;
    let r = get(&sidecar.url("/hello")).await;
    r.assert_sidecar(502, "upstream_unreachable");
    assert_eq!(gw.requests().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vpce_upstream_is_a_config_error_pointing_at_connect() {
    let out = run_once(
        &["--check"],
        &[(
            "SIGV4_SIDECAR_UPSTREAM",
            "https://vpce-0abc123-de4f5g6h.execute-api.us-east-1.vpce.amazonaws.com/Prod",
        )],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("upstream") && err.contains("`connect`"),
        "{err}"
    );
}

// ---- VPC Lattice ---------------------------------------------------------------------------

async fn lattice(sts: &StsEmulator) -> Gateway {
    gateway_with(sts, |b| b.lattice()).await
}

/// A sidecar signing for VPC Lattice at `upstream`, bodies up to `max_body`.
fn lattice_sidecar(upstream: &str, sts: &StsEmulator, max_body: u64) -> Launch {
    Launch::new(upstream, sts)
        .set("SERVICE", "vpc-lattice-svcs")
        .set("PAYLOAD", "unsigned")
        .set("MAX_BODY_BYTES", &max_body.to_string())
}

/// The testbed's pattern body generated on the fly, with no declared length: sent chunked, and
/// never held by the test either.
struct Chunked(PatternBody);

impl Body for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lattice_streams_a_256_mib_chunked_upload_in_constant_memory() {
    const SIZE: u64 = 256 << 20;
    let sts = sts(LIFETIME).await;
    let gw = lattice(&sts).await;
    let sidecar = ready_sidecar(lattice_sidecar(&gw.url(), &sts, 1 << 30)).await;
    let before = proc_status_kib(sidecar.pid(), "VmHWM");

    let client = Client::builder(TokioExecutor::new()).build_http::<Chunked>();
    let req = http::Request::post(sidecar.url("/upload"))
        .body(Chunked(PatternBody::new(SIZE)))
        .expect("request");
    let started = Instant::now();
    let res = client.request(req).await.expect("response");
    let status = res.status();
    let body = res.into_body().collect().await.expect("body").to_bytes();
    let took = started.elapsed();
    assert_eq!(status, 200, "{:?}\n{}", body, sidecar.logs());

    let rec = last_by_role(&gw);
    assert_eq!(rec.body_state, BodyState::Complete);
    assert_eq!(rec.body_len as u64, SIZE);
    assert_eq!(rec.body_sha256, PatternBody::sha256(SIZE), "byte for byte");
    assert_signed_header(&rec, "x-amz-content-sha256", "UNSIGNED-PAYLOAD");
    let peak = proc_status_kib(sidecar.pid(), "VmHWM");
    eprintln!(
        "256 MiB through the sidecar in {took:?}: peak RSS {before} KiB before, {peak} KiB after"
    );
    assert!(
        peak < 48 * 1024,
        "peak RSS {peak} KiB: the body was held (256 MiB sent)"
    );
    let access = sidecar.access_line("/upload");
    assert_eq!(access["bytes_in"], SIZE, "{access}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lattice_one_byte_over_the_limit_is_413_and_never_complete_upstream() {
    const LIMIT: usize = 1 << 20;
    let sts = sts(LIFETIME).await;
    let gw = lattice(&sts).await;
    let sidecar = ready_sidecar(lattice_sidecar(&gw.url(), &sts, LIMIT as u64)).await;

    // Exactly the limit passes, complete.
    let ok = send("POST", &sidecar.url("/up"), &[], vec![7u8; LIMIT]).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert!(last(&gw).body_complete());

    post_one_byte_over(&sidecar, LIMIT).await.assert_sidecar(
        413,
        "payload_too_large",
        "one byte over max_body_bytes",
    );
    assert!(gw.wait_for_requests(2, Duration::from_secs(10)).await);
    let rec = last(&gw);
    assert!(
        rec.outcome.is_ok(),
        "the head was signed and accepted: {rec:?}"
    );
    assert!(
        matches!(rec.body_state, BodyState::Incomplete(_)),
        "the upstream saw a complete request: {:?}",
        rec.body_state
    );
    assert!(rec.body_len <= LIMIT, "{} bytes upstream", rec.body_len);
}

/// Sends a chunked POST of `limit` bytes in 64 KiB chunks of `a`, then one byte `b` past the
/// limit and the terminating chunk, and returns the sidecar's answer.
async fn post_one_byte_over(sidecar: &Sidecar, limit: usize) -> wire::Answer {
    let mut conn = Conn::open(sidecar.proxy).await;
    conn.send(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .expect("head");
    let chunk = vec![b'a'; 64 * 1024];
    for _ in 0..limit / chunk.len() {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(&chunk);
        frame.extend_from_slice(b"\r\n");
        conn.send(&frame).await.expect("chunk within the limit");
    }
    // The sidecar may close as soon as it has answered: a failed write is fine here.
    let _ = conn.send(b"1\r\nb\r\n0\r\n\r\n").await;
    conn.answer(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no answer; logs:\n{}", sidecar.logs()))
}

/// Accepts one connection and returns everything it received until the peer closed it.
async fn record_one(listener: TcpListener) -> Vec<u8> {
    let (mut s, _) = listener.accept().await.expect("accept");
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut all)).await;
    all
}

/// The same at the socket level: a raw TCP upstream records every byte, so "never a complete
/// request" is checked on the wire: no terminating chunk, nothing past the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_on_the_wire_no_last_chunk_and_nothing_past_the_limit() {
    const LIMIT: usize = 1 << 20;
    let sts = sts(LIFETIME).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream = format!("http://{}", listener.local_addr().expect("addr"));
    let recorded = tokio::spawn(record_one(listener));
    let sidecar = ready_sidecar(lattice_sidecar(&upstream, &sts, LIMIT as u64)).await;
    post_one_byte_over(&sidecar, LIMIT).await.assert_sidecar(
        413,
        "payload_too_large",
        "one byte over max_body_bytes",
    );

    let wire = recorded.await.expect("recorder");
    let head_end = wire
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("the upstream got the request head before the body crossed the limit")
        + 4;
    let head = String::from_utf8_lossy(&wire[..head_end]).to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(
        head.contains("x-amz-content-sha256: unsigned-payload"),
        "{head}"
    );
    let (body, terminated) = wire::dechunk_prefix(&wire[head_end..]);
    assert_eq!(terminated, None, "the upstream saw the terminating chunk");
    // How much of what was within the limit reached the socket depends on what hyper still had
    // queued when the body failed (it drops its write queue, up to ~400 KiB, with the
    // connection); that the body streamed at all, and nothing past the limit, does not.
    assert!(!body.is_empty(), "the body was not streamed");
    assert!(body.len() <= LIMIT, "{} bytes forwarded", body.len());
    assert!(
        body.iter().all(|b| *b == b'a'),
        "the byte past the limit was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_length_over_the_limit_is_refused_before_connecting() {
    let sts = sts(LIFETIME).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let upstream = format!("http://{}", listener.local_addr().expect("addr"));
    let sidecar = ready_sidecar(lattice_sidecar(&upstream, &sts, 1024)).await;
    wire::expect_sidecar_answer(
        sidecar.proxy,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n",
        413,
        "payload_too_large",
        "declared over the limit",
    )
    .await;
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the upstream was contacted: {other:?}"),
    }
}

// ---- SigV4A ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigv4a_is_accepted_by_the_independent_verifier() {
    let sts = sts(LIFETIME).await;
    let gw = gateway_with(&sts, |b| b.sigv4a()).await;
    let sidecar = ready_sidecar(
        Launch::new(&gw.url(), &sts)
            .set("SIGNING_ALGORITHM", "sigv4a")
            .set("REGION_SET", "us-east-1,us-west-2"),
    )
    .await;
    let r = send("POST", &sidecar.url("/orders?b=2&a=1"), &[], "{}").await;
    assert_eq!(r.status, 200, "{:?}\n{}", r.body, sidecar.logs());
    assert_eq!(r.json()["algorithm"], "AWS4-ECDSA-P256-SHA256");
    let rec = last_by_role(&gw);
    assert_signed_header(&rec, "x-amz-region-set", "us-east-1,us-west-2");

    // The verifier does check the region set: one that leaves out the gateway's region fails.
    let elsewhere = ready_sidecar(
        Launch::new(&gw.url(), &sts)
            .set("SIGNING_ALGORITHM", "sigv4a")
            .set("REGION_SET", "eu-west-1"),
    )
    .await;
    let refused = get(&elsewhere.url("/orders")).await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    assert_eq!(refused.sidecar_error(), None, "the upstream's own answer");
}

// ---- headers -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_appended_forwarding_headers_do_not_break_the_signature() {
    let sts = sts(LIFETIME).await;
    let gw = gateway_with(&sts, |b| b.cloudfront_hop()).await;
    let sidecar = ready_sidecar(Launch::new(&gw.url(), &sts)).await;
    let forwarding = [
        ("x-forwarded-for", "10.1.2.3"),
        ("x-forwarded-proto", "https"),
        ("via", "1.1 app-mesh"),
        ("forwarded", "for=10.1.2.3"),
    ];
    let r = get_with(&sidecar.url("/hello"), &forwarding).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let rec = last(&gw);
    assert_eq!(
        rec.header("x-forwarded-for"),
        Some(format!("10.1.2.3, {HOP_CLIENT_IP}")),
        "the app's value arrived unchanged, then the hop appended"
    );
    assert_eq!(rec.header("via"), Some(format!("1.1 app-mesh, {HOP_VIA}")));
    assert_eq!(rec.header("forwarded").as_deref(), Some("for=10.1.2.3"));
    for (h, _) in forwarding {
        assert!(!rec.signed_headers.iter().any(|s| s == h), "{h} signed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_headers_are_forwarded_and_signed() {
    let (_sts, gw, sidecar) = ready_stack(LIFETIME, |l| l).await;
    let names: Vec<String> = (0..300).map(|i| format!("x-app-{i:03}")).collect();
    let values: Vec<String> = (0..300).map(|i| format!("value {i}")).collect();
    let headers: Vec<(&str, &str)> = names
        .iter()
        .zip(&values)
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let r = get_with(&sidecar.url("/many"), &headers).await;
    assert_eq!(r.status, 200, "{:?}\n{}", r.body, sidecar.logs());
    let rec = last_by_role(&gw);
    for (n, v) in names.iter().zip(&values) {
        assert_signed_header(&rec, n, v);
    }

    // More than 1024 lines, though well within max_header_bytes, is hyper's own 431 (README
    // says why there is a line cap at all).
    let lines: String = (0..1100).map(|i| format!("x-h{i}: v\r\n")).collect();
    let (answer, _) = wire::exchange(
        sidecar.proxy,
        format!("GET /x HTTP/1.1\r\nHost: a\r\n{lines}\r\n").as_bytes(),
    )
    .await;
    assert_eq!(answer.expect("answer").status, 431);

    // Over max_header_bytes is hyper's own 431 too.
    let big: String = (0..2000)
        .map(|i| format!("x-h{i}: {:040}\r\n", i))
        .collect();
    let (answer, _) = wire::exchange(
        sidecar.proxy,
        format!("GET /x HTTP/1.1\r\nHost: a\r\n{big}\r\n").as_bytes(),
    )
    .await;
    assert_eq!(answer.expect("answer").status, 431);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_authorization_is_forwarded_under_its_new_name_and_signed() {
    let (_sts, gw, sidecar) = ready_stack(LIFETIME, forward_client_authorization).await;
    let r = get_with(
        &sidecar.url("/me"),
        &[("authorization", "Bearer app-token-123")],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let rec = last_by_role(&gw);
    assert_signed_header(&rec, ORIGINAL_AUTHORIZATION, "Bearer app-token-123");
    assert!(rec
        .header("authorization")
        .is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 ")));
    assert!(
        !sidecar.logs().contains("app-token-123"),
        "the app's token is not logged"
    );
}

// ---- diagnostics ---------------------------------------------------------------------------

const REFUSED: &str = "upstream refused the request's credentials or signature";

async fn auth_failures(sidecar: &Sidecar, reason: &str) -> f64 {
    metric(
        sidecar,
        &format!(
            "sigv4_sidecar_upstream_auth_failures_total{{reason=\"{reason}\",route=\"default\"}}"
        ),
    )
    .await
    .unwrap_or_else(|| panic!("no {reason} series"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_refusals_are_counted_and_explained_once_per_window() {
    let sts = sts(LIFETIME).await;
    let gw = gateway_with(&sts, |b| b.forced_refusal(Refusal::SignatureMismatch)).await;
    let sidecar = ready_sidecar(Launch::new(&gw.url(), &sts)).await;
    let window = Instant::now();
    let mut last_refusal_body = None;
    for _ in 0..3 {
        let r = get(&sidecar.url("/hello")).await;
        assert_eq!(r.status, 403);
        assert_eq!(r.sidecar_error(), None);
        assert_eq!(r.headers["x-amzn-errortype"], "InvalidSignatureException");
        let msg = r.json()["message"].as_str().unwrap_or_default().to_string();
        assert!(
            msg.starts_with(refusal::BAD_SIGNATURE),
            "body unchanged: {msg}"
        );
        assert!(msg.contains("The Canonical String for this request should have been"));
        last_refusal_body = Some(r);
    }
    let last_refusal_body = last_refusal_body.expect("three refusals");
    assert_eq!(auth_failures(&sidecar, "signature_mismatch").await, 3.0);
    let warn = sidecar
        .wait_for_log(refusal_warn, Duration::from_secs(5))
        .expect("a warn");
    assert_eq!(warn["level"], "WARN");
    assert_eq!(warn["reason"], "signature_mismatch");
    assert_eq!(warn["upstream_error_type"], "InvalidSignatureException");
    assert!(warn["upstream_message"]
        .as_str()
        .is_some_and(|m| m.contains("should have been")));
    let creq = warn["canonical_request"].as_str().unwrap_or_default();
    assert!(
        creq.starts_with("GET\n/Prod/hello\n") && creq.contains("\nhost:"),
        "the sidecar's canonical request: {warn}"
    );
    // The gateway computed its own texts independently (AWS's message quotes them): the
    // sidecar's string-to-sign is the same, its canonical request the same but for the token.
    let body = last_refusal_body.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let quoted = |after: &str| {
        body.split_once(after)
            .and_then(|(_, rest)| rest.split_once("'\n"))
            .map(|(q, _)| q.to_string())
            .unwrap_or_else(|| panic!("no {after:?} in {body}"))
    };
    let gateway_sts = quoted("The String-to-Sign should have been\n'");
    let gateway_creq = quoted("The Canonical String for this request should have been\n'");
    assert_eq!(warn["string_to_sign"].as_str(), Some(gateway_sts.as_str()));
    let token_line = |c: &str| {
        c.lines()
            .filter(|l| !l.starts_with("x-amz-security-token:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(token_line(creq), token_line(&gateway_creq));

    // Other reasons are counted too, within the same window without another warn.
    gw.set_forced_refusal(Some(Refusal::ExpiredToken));
    assert_eq!(get(&sidecar.url("/hello")).await.status, 403);
    gw.set_forced_refusal(Some(Refusal::AccessDenied));
    assert_eq!(get(&sidecar.url("/hello")).await.status, 403);
    assert_eq!(auth_failures(&sidecar, "expired_token").await, 1.0);
    assert_eq!(auth_failures(&sidecar, "access_denied").await, 1.0);
    assert_eq!(sidecar.count_logs(refusal_warn), 1);

    // The next window gets its own warn (the window is a duration: nothing to wait on but it).
    gw.set_forced_refusal(Some(Refusal::InvalidToken));
    tokio::time::sleep(
        Duration::from_secs(10).saturating_sub(window.elapsed()) + Duration::from_millis(200),
    )
    .await;
    assert_eq!(get(&sidecar.url("/hello")).await.status, 403);
    assert!(sidecar.wait_for_count(refusal_warn, 2, Duration::from_secs(5)));
    assert_eq!(auth_failures(&sidecar, "invalid_token").await, 1.0);

    // The app's own 403 (no AWS marker) is not an auth failure.
    gw.set_forced_refusal(None);
    let own = get_with(&sidecar.url("/hello"), &[("x-testbed-status", "403")]).await;
    assert_eq!(own.status, 403);
    assert_eq!(auth_failures(&sidecar, "other").await, 0.0);

    let logs = sidecar.logs();
    for issued in sts.issued() {
        let token = issued.credentials.session_token.clone().unwrap_or_default();
        assert!(
            !token.is_empty() && !logs.contains(&token),
            "session token logged"
        );
        assert!(!logs.contains(&issued.credentials.secret_access_key));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logs_every_canonical_request_redacted() {
    let (sts, _gw, sidecar) = ready_stack(LIFETIME, |l| {
        forward_client_authorization(l).set("LOG_LEVEL", "debug")
    })
    .await;
    let r = get_with(
        &sidecar.url("/a?x=1"),
        &[("authorization", "Bearer app-token-456")],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let line = sidecar
        .wait_for_log(|v| v["message"] == "signed request", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no canonical request logged:\n{}", sidecar.logs()));
    let creq = line["canonical_request"].as_str().unwrap_or_default();
    assert!(creq.starts_with("GET\n/Prod/a\nx=<1 bytes>\n"), "{creq}");
    assert!(creq.contains("x-amz-security-token:"), "{creq}");
    assert!(
        creq.contains(&format!("\n{ORIGINAL_AUTHORIZATION}:")),
        "{creq}"
    );
    let logs = sidecar.logs();
    assert!(
        !logs.contains("app-token-456"),
        "the app's bearer token is logged"
    );
    for issued in sts.issued() {
        let token = issued.credentials.session_token.clone().unwrap_or_default();
        assert!(!logs.contains(&token), "session token logged at debug");
    }
}
