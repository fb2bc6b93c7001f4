//! Hostile input against the real binary: malformed request lines and header bytes, oversized
//! heads, absolute- and authority-form targets, `Host` spoofing, `CONNECT`, request-smuggling
//! shapes, the admin port, the listen address, and secrets in answers and logs.
//!
//! Every refusal is read off the wire (status line parsed from the raw answer) and checked
//! against what the API Gateway stand-in recorded: nothing refused may reach the upstream, and
//! nothing may ever be sent anywhere but the upstream (a second loopback listener, the "evil"
//! host, must never see a connection).
//!
//! Where hyper refuses a request before our code sees it, the answer is hyper's bare 400/431
//! (no JSON); where the sidecar refuses, the answer is SPEC's JSON with `x-sigv4-sidecar-error`.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use common::wire::{exchange, expect_sidecar_answer, Answer, Conn};
use common::*;

const LIFETIME: Duration = Duration::from_secs(3600);
const ANSWER: Duration = Duration::from_secs(5);

/// A loopback listener standing for any host other than the upstream. Nothing may connect.
struct Elsewhere(TcpListener);

impl Elsewhere {
    fn new() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        Elsewhere(l)
    }
    fn addr(&self) -> SocketAddr {
        self.0.local_addr().expect("addr")
    }
    /// Asserts no connection ever arrived. Checked after the answers: the sidecar forwards
    /// before it answers, so a connection it made would be in the backlog by now.
    fn assert_untouched(&self, what: &str) {
        match self.0.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("{what}: something connected to the other host from {peer}"),
            Err(e) => panic!("{what}: accept: {e}"),
        }
    }
}

/// hyper's own refusal of an unparseable head: the status, no body, connection closed.
fn assert_hyper_refusal(answer: Option<Answer>, closed: bool, status: u16, what: &str) {
    let a = answer.unwrap_or_else(|| panic!("{what}: no answer"));
    assert_eq!(a.status, status, "{what}: {a:?}");
    assert!(closed, "{what}: connection left open after a parse error");
}

/// Logs and answers never carry the base secret or any credential STS issued.
fn assert_no_secrets(text: &str, sts: &sigv4_testbed::sts::StsEmulator, what: &str) {
    let mut secrets = vec![BASE_SECRET.to_string()];
    for i in sts.issued() {
        secrets.push(i.credentials.secret_access_key.clone());
        secrets.extend(i.credentials.session_token.clone());
    }
    for s in &secrets {
        assert!(
            !text.contains(s.as_str()),
            "{what} contains a secret ({}...)",
            &s[..8]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_get_a_clean_4xx_and_reach_nothing() {
    let (sts, gw, sidecar) = ready_stack(LIFETIME, |l| l).await;

    let huge_value = "v".repeat(70 * 1024);
    // Over max_header_bytes in short lines: 17 000 of the shortest line are 68 000 bytes, over
    // the default 64 KiB (and over the 1024-line cap).
    let many_headers: String = "x:\r\n".repeat(17_000);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        // Request lines.
        ("no target", b"GET\r\n\r\n".to_vec(), 400),
        ("HTTP/0.9 line", b"GET /x\r\n\r\n".to_vec(), 400),
        (
            "unknown version",
            b"GET /x HTTP/9.9\r\nHost: a\r\n\r\n".to_vec(),
            400,
        ),
        (
            "HTTP/2.0 in an h1 line",
            b"GET /x HTTP/2.0\r\nHost: a\r\n\r\n".to_vec(),
            400,
        ),
        (
            "space in target",
            b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            400,
        ),
        (
            "double space",
            b"GET  /x HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            400,
        ),
        (
            "trailing junk",
            b"GET /x HTTP/1.1 junk\r\nHost: a\r\n\r\n".to_vec(),
            400,
        ),
        (
            "NUL in method",
            b"G\x00T /x HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            400,
        ),
        (
            "NUL in target",
            b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            400,
        ),
        (
            "DEL in target",
            b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            400,
        ),
        (
            "TLS hello on the plain port",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
            400,
        ),
        // Header bytes.
        (
            "\\x01 in a value",
            b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: a\x01b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "NUL in a value",
            b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "bare CR in a value",
            b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n".to_vec(),
            400,
        ),
        (
            "@ in a name",
            b"GET /x HTTP/1.1\r\nHost: a\r\nBad@Name: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "space in a name",
            b"GET /x HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "control byte in a name",
            b"GET /x HTTP/1.1\r\nHost: a\r\nBad\x01Name: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "empty name",
            b"GET /x HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "no colon",
            b"GET /x HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n".to_vec(),
            400,
        ),
        (
            "obs-fold",
            b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n\r\n".to_vec(),
            400,
        ),
        // Size.
        (
            "one header over the default max_header_bytes (64 KiB)",
            format!("GET /x HTTP/1.1\r\nHost: a\r\nX-Big: {huge_value}\r\n\r\n").into_bytes(),
            431,
        ),
        (
            "17 000 header lines, over max_header_bytes",
            format!("GET /x HTTP/1.1\r\nHost: a\r\n{many_headers}\r\n").into_bytes(),
            431,
        ),
    ];
    for (what, bytes, status) in &cases {
        let (answer, closed) = exchange(sidecar.proxy, bytes).await;
        assert_hyper_refusal(answer, closed, *status, what);
    }
    assert_eq!(
        gw.requests().len(),
        0,
        "a malformed head reached the upstream: {:?}",
        gw.requests()
    );
    // The sidecar is unharmed.
    assert_eq!(get(&sidecar.url("/after")).await.status, 200);
    assert_eq!(gw.requests().len(), 1);
    assert_no_secrets(&sidecar.logs(), &sts, "logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_authority_form_and_connect_never_leave_for_another_host() {
    let (_sts, gw, sidecar) = ready_stack(LIFETIME, |l| l).await;
    let other = Elsewhere::new();
    let evil = other.addr();

    // Ours: 400 bad_request (JSON), connection closed so nothing after it is parsed.
    for (what, target) in [
        ("absolute-form http", format!("http://{evil}/x")),
        ("absolute-form https", format!("https://{evil}/x")),
        (
            "absolute-form, upper-case scheme",
            format!("HTTP://{evil}/x"),
        ),
        (
            "absolute-form to the upstream itself",
            format!("{}/x", gw.url()),
        ),
        ("authority-form", evil.to_string()),
        ("authority-form :443", "example.com:443".to_string()),
        ("asterisk-form", "*".to_string()),
    ] {
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {evil}\r\n\r\nGET /pipelined-after-refusal HTTP/1.1\r\nHost: a\r\n\r\n"
        );
        let closed =
            expect_sidecar_answer(sidecar.proxy, request.as_bytes(), 400, "bad_request", what)
                .await;
        assert!(closed, "{what}: connection kept open after a 400");
    }
    expect_sidecar_answer(
        sidecar.proxy,
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        400,
        "bad_request",
        "OPTIONS *",
    )
    .await;

    // CONNECT to the other host: 405, and the connection never becomes a tunnel.
    for target in [evil.to_string(), format!("{}", gw.addr())] {
        let mut c = Conn::open(sidecar.proxy).await;
        c.send(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
            .await
            .expect("send");
        let a = c.answer(ANSWER).await.expect("answer to CONNECT");
        a.assert_sidecar(405, "method_not_allowed", "CONNECT");
        // What a tunnel client sends next: a TLS hello. It is not relayed anywhere; hyper
        // parses it as HTTP and refuses it.
        let _ = c
            .send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")
            .await;
        if let Some(a) = c.answer(ANSWER).await {
            assert_eq!(a.status, 400, "{a:?}");
        }
    }

    other.assert_untouched("absolute-form / CONNECT");
    assert_eq!(
        gw.requests().len(),
        0,
        "a refused request reached the upstream: {:?}",
        gw.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_spoofing_is_replaced_and_signed_for_the_upstream() {
    let (_sts, gw, sidecar) = ready_stack(LIFETIME, |l| l).await;
    let other = Elsewhere::new();
    let evil = other.addr();
    let upstream_host = gw.addr().to_string();

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "Host: evil.example",
            "GET /spoof-1 HTTP/1.1\r\nHost: evil.example\r\n\r\n".into(),
            "/Prod/spoof-1",
        ),
        (
            "Host: the other loopback host",
            format!("GET /spoof-2?q=1 HTTP/1.1\r\nHost: {evil}\r\n\r\n"),
            "/Prod/spoof-2?q=1",
        ),
        (
            "two Host headers",
            format!("GET /spoof-3 HTTP/1.1\r\nHost: {evil}\r\nHost: evil.example\r\n\r\n"),
            "/Prod/spoof-3",
        ),
        (
            "no Host at all",
            "GET /spoof-4 HTTP/1.1\r\n\r\n".into(),
            "/Prod/spoof-4",
        ),
        (
            "authority smuggled into the path",
            format!("GET //{evil}/spoof-5 HTTP/1.1\r\nHost: {evil}\r\n\r\n"),
            "/Prod//127.0.0.1:",
        ),
        (
            "userinfo-looking path",
            format!("GET /@{evil}/spoof-6 HTTP/1.1\r\nHost: {evil}\r\n\r\n"),
            "/Prod/@127.0.0.1:",
        ),
    ];
    for (i, (what, request, target)) in cases.iter().enumerate() {
        let (answer, _) = exchange(sidecar.proxy, request.as_bytes()).await;
        let a = answer.unwrap_or_else(|| panic!("{what}: no answer"));
        let recorded = gw.requests();
        assert_eq!(recorded.len(), i + 1, "{what}: one request upstream");
        let r = &recorded[i];
        assert!(
            r.target.starts_with(target),
            "{what}: upstream saw {:?}",
            r.target
        );
        let hosts: Vec<_> = r.headers.iter().filter(|(k, _)| k == "host").collect();
        assert_eq!(hosts.len(), 1, "{what}: {hosts:?}");
        assert_eq!(
            r.header("host").as_deref(),
            Some(upstream_host.as_str()),
            "{what}"
        );
        assert!(
            r.outcome.is_ok(),
            "{what}: the signature must be valid for the upstream's own Host: {:?}",
            r.outcome
        );
        assert_eq!(a.status, 200, "{what}: {a:?}");
        // The echo shows the same: the Host the upstream received.
        let echo: serde_json::Value = serde_json::from_slice(&a.body).expect("echo JSON");
        let echoed_host: Vec<_> = echo["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .filter(|h| h[0] == "host")
            .map(|h| h[1].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(echoed_host, vec![upstream_host.clone()], "{what}");
    }
    other.assert_untouched("Host spoofing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_are_refused_and_nothing_extra_reaches_the_upstream() {
    let (_sts, gw, sidecar) = ready_stack(LIFETIME, |l| l).await;
    const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

    // `POST /x` with these header lines and this body, and a request smuggled after it.
    let post = |headers: &str, body: &str| {
        format!("POST /x HTTP/1.1\r\nHost: a\r\n{headers}\r\n\r\n{body}{SMUGGLED}")
    };
    let chunked = "Transfer-Encoding: chunked";

    // hyper refuses these heads itself: bare 400, connection closed.
    let hyper_400: Vec<(&str, String)> = vec![
        (
            "duplicate differing Content-Length",
            post("Content-Length: 5\r\nContent-Length: 6", "hello!"),
        ),
        (
            "Content-Length list",
            post("Content-Length: 5, 6", "hello!"),
        ),
        ("signed Content-Length", post("Content-Length: +5", "hello")),
        ("negative Content-Length", post("Content-Length: -1", "")),
        ("hex Content-Length", post("Content-Length: 0x5", "hello")),
        (
            "Transfer-Encoding : chunked (space before colon)",
            post(
                "Content-Length: 5\r\nTransfer-Encoding : chunked",
                "0\r\n\r\n",
            ),
        ),
        (
            "Transfer-Encoding: xchunked",
            post("Transfer-Encoding: xchunked", "0\r\n\r\n"),
        ),
        (
            "chunked then identity",
            post(
                &format!("{chunked}\r\nTransfer-Encoding: identity"),
                "0\r\n\r\n",
            ),
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            format!("POST /x HTTP/1.0\r\nHost: a\r\n{chunked}\r\n\r\n0\r\n\r\n{SMUGGLED}"),
        ),
        (
            "Transfer-Encoding folded",
            post("Transfer-Encoding:\r\n chunked", "0\r\n\r\n"),
        ),
    ];
    for (what, request) in &hyper_400 {
        let (answer, closed) = exchange(sidecar.proxy, request.as_bytes()).await;
        assert_hyper_refusal(answer, closed, 400, what);
    }

    // The sidecar refuses these: 400 bad_request (JSON), connection closed.
    let hello = "5\r\nhello\r\n0\r\n\r\n";
    let ours_400: Vec<(&str, String)> = vec![
        (
            "Transfer-Encoding: gzip, chunked",
            post("Transfer-Encoding: gzip, chunked", hello),
        ),
        (
            "chunked twice",
            post(&format!("{chunked}\r\n{chunked}"), hello),
        ),
        (
            "invalid chunk size",
            post(chunked, "zz\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "chunk size overflow",
            post(chunked, "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        ),
    ];
    for (what, request) in &ours_400 {
        let closed =
            expect_sidecar_answer(sidecar.proxy, request.as_bytes(), 400, "bad_request", what)
                .await;
        assert!(closed, "{what}: connection kept open");
    }

    // A body refused by its declared length: the request inside it is never parsed.
    let closed = expect_sidecar_answer(
        sidecar.proxy,
        format!("POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 10485761\r\n\r\n{SMUGGLED}")
            .as_bytes(),
        413,
        "payload_too_large",
        "declared over max_body_bytes",
    )
    .await;
    assert!(
        closed,
        "413 must close: the unread body would be parsed next"
    );

    assert_eq!(
        gw.requests().len(),
        0,
        "a refused request reached the upstream: {:?}",
        gw.requests()
    );

    // Content-Length together with Transfer-Encoding (CL.TE and TE.CL, either order, any case):
    // RFC 9112 6.1 lets a server frame such a request by Transfer-Encoding alone if it closes the
    // connection after answering. hyper (>= 1.11) does exactly that, and the sidecar re-frames
    // the body with its own exact Content-Length: the upstream gets exactly one request with
    // the chunked body, the client connection closes after the answer, and the bytes after the
    // chunked body (a smuggled request) are never parsed, let alone forwarded.
    let clte = format!(
        "POST /clte HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"
    );
    let tecl = format!(
        "POST /tecl HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 60\r\n\r\n0\r\n\r\n{SMUGGLED}"
    );
    for (what, request, target, body) in [
        ("CL.TE", &clte, "/Prod/clte", &b"hello"[..]),
        ("TE.CL", &tecl, "/Prod/tecl", &b""[..]),
    ] {
        let before = gw.requests().len();
        let (answer, closed) = exchange(sidecar.proxy, request.as_bytes()).await;
        let a = answer.unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(a.status, 200, "{what}: {a:?}");
        assert!(
            closed,
            "{what}: connection must close after CL+TE (RFC 9112 6.1)"
        );
        let seen = gw.requests();
        assert_eq!(
            seen.len(),
            before + 1,
            "{what}: exactly one request upstream: {seen:?}"
        );
        let r = &seen[before];
        assert_eq!(r.target, target, "{what}");
        assert_eq!(r.body_len, body.len(), "{what}");
        assert_eq!(
            r.body_sha256,
            sigv4_sidecar::signing::sha256_hex(body),
            "{what}"
        );
        assert!(r.outcome.is_ok(), "{what}: {:?}", r.outcome);
        let header = |n: &str| -> Vec<String> {
            r.headers
                .iter()
                .filter(|(k, _)| k == n)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .collect()
        };
        // Re-framed by the sidecar: an exact Content-Length (none for an empty body, which for
        // a request means zero length), never Transfer-Encoding.
        let length: Vec<String> = (!body.is_empty())
            .then(|| body.len().to_string())
            .into_iter()
            .collect();
        assert_eq!(header("content-length"), length, "{what}: re-framed");
        assert!(
            header("transfer-encoding").is_empty(),
            "{what}: {:?}",
            r.headers
        );
    }
    let targets: Vec<String> = gw.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(targets, ["/Prod/clte", "/Prod/tecl"]);

    // Pipelining after a body: both requests go upstream, exactly as framed, in order, and a
    // body that looks like a request stays a body.
    let inner = "GET /not-a-request HTTP/1.1\r\nHost: a\r\n\r\n";
    let pipelined = format!(
        "POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
         GET /two?x=1 HTTP/1.1\r\nHost: a\r\n\r\n\
         POST /three HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{inner}\
         GET /four HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        inner.len()
    );
    let mut c = Conn::open(sidecar.proxy).await;
    c.send(pipelined.as_bytes()).await.expect("send");
    for n in 0..4 {
        let a = c
            .answer(ANSWER)
            .await
            .unwrap_or_else(|| panic!("answer {n}"));
        assert_eq!(a.status, 200, "pipelined answer {n}: {a:?}");
    }
    assert!(c.closed_within(Duration::from_secs(3)).await);
    let seen: Vec<(String, String, usize, String)> = gw.requests()[2..]
        .iter()
        .map(|r| {
            (
                r.method.clone(),
                r.target.clone(),
                r.body_len,
                r.body_sha256.clone(),
            )
        })
        .collect();
    let sha = |b: &[u8]| sigv4_sidecar::signing::sha256_hex(b);
    assert_eq!(
        seen,
        vec![
            ("POST".into(), "/Prod/one".into(), 5, sha(b"hello")),
            ("GET".into(), "/Prod/two?x=1".into(), 0, sha(b"")),
            (
                "POST".into(),
                "/Prod/three".into(),
                inner.len(),
                sha(inner.as_bytes())
            ),
            ("GET".into(), "/Prod/four".into(), 0, sha(b"")),
        ]
    );
    assert!(
        gw.requests().iter().all(|r| r.outcome.is_ok()),
        "every forwarded request verifies"
    );
    assert!(
        !gw.requests()
            .iter()
            .any(|r| r.target.contains("smuggled") || r.target.contains("not-a-request")),
        "{:?}",
        gw.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_port_exposes_nothing_that_signs() {
    let (_sts, gw, sidecar) = ready_stack(LIFETIME, |l| l).await;
    let upstream = gw.addr();

    for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"] {
        for path in [
            "/",
            "/Prod/x",
            "/x",
            "/healthz/../x",
            "/metrics/x",
            "/proxy",
        ] {
            let res = send(method, &sidecar.admin_url(path), &[], "").await;
            assert_eq!(res.status, 404, "{method} {path}");
            if method != "HEAD" {
                assert_eq!(res.json()["error"], "not_found", "{method} {path}");
            }
        }
        if !matches!(method, "GET" | "HEAD") {
            for path in ["/healthz", "/readyz", "/metrics"] {
                let res = send(method, &sidecar.admin_url(path), &[], "").await;
                assert_eq!(res.status, 405, "{method} {path}");
                assert_eq!(res.json()["error"], "method_not_allowed");
            }
        }
    }
    // Absolute-form and CONNECT aimed at the upstream through the admin port.
    for request in [
        format!("GET http://{upstream}/Prod/x HTTP/1.1\r\nHost: {upstream}\r\n\r\n"),
        format!("POST http://{upstream}/Prod/x HTTP/1.1\r\nHost: {upstream}\r\nContent-Length: 2\r\n\r\nhi"),
        format!("CONNECT {upstream} HTTP/1.1\r\nHost: {upstream}\r\n\r\n"),
    ] {
        let (answer, _) = exchange(sidecar.admin, request.as_bytes()).await;
        let a = answer.unwrap_or_else(|| panic!("no answer to {request:?}"));
        assert!(
            a.status == 404 || a.status == 405,
            "{request:?}: {a:?}"
        );
        let v: serde_json::Value = serde_json::from_slice(&a.body).expect("JSON");
        assert!(v["error"].is_string(), "{v}");
    }
    assert_eq!(
        gw.requests().len(),
        0,
        "the admin port sent something upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_listens_on_loopback_unless_told_otherwise() {
    // `--check` with no listen set: the default is loopback; and no secret is printed.
    let path = std::env::var("PATH").unwrap_or_default();
    let out = run_once(
        &["--check"],
        &[
            ("PATH", &path),
            ("AWS_ACCESS_KEY_ID", BASE_AKID),
            ("AWS_SECRET_ACCESS_KEY", BASE_SECRET),
            (
                "AWS_SESSION_TOKEN",
                "session-token-never-printed-0123456789",
            ),
            (
                "SIGV4_SIDECAR_UPSTREAM",
                "https://abc123.execute-api.us-east-1.amazonaws.com/Prod",
            ),
            ("SIGV4_SIDECAR_ROLE_ARN", ROLE),
            ("SIGV4_SIDECAR_EXTERNAL_ID", "external-id-never-printed-42"),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("route default: listen 127.0.0.1:8080 ->"),
        "{stdout}"
    );
    for secret in [
        BASE_SECRET,
        "session-token-never-printed-0123456789",
        "external-id-never-printed-42",
    ] {
        assert!(!all.contains(secret), "--check printed a secret:\n{all}");
    }

    // The loopback default logs no warning.
    let sts = sts(LIFETIME).await;
    let gw = gateway(&sts).await;
    let local = Launch::new(&gw.url(), &sts).start();
    let beyond = |v: &serde_json::Value| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("proxy listens beyond loopback"))
    };
    assert_eq!(local.count_logs(beyond), 0, "{}", local.logs());
    drop(local);

    // An explicit non-loopback address is allowed, and logged as a warning at start.
    let wide = Launch::new(&gw.url(), &sts)
        .set("LISTEN", "0.0.0.0:0")
        .start();
    let warning = wide
        .wait_for_log(beyond, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no warning; logs:\n{}", wide.logs()));
    assert_eq!(warning["level"], "WARN", "{warning}");
    assert_eq!(warning["route"], "default", "{warning}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_error_bodies_or_logs() {
    use sigv4_testbed::sts::StsMode;
    // Credentials that live 35 s are usable for 5 s (never in their last 30 s); refresh is
    // due at once. STS then refuses every refresh, so the sidecar runs out of credentials.
    let (sts, _gw, sidecar) = ready_stack(Duration::from_secs(35), |l| {
        l.set("REFRESH_BEFORE_EXPIRY", "30s")
            .set("LOG_LEVEL", "debug")
    })
    .await;
    // A signed request works while the credentials hold.
    let ok = get(&sidecar.url("/while-valid")).await;
    assert_eq!(ok.status, 200);
    sts.set_mode(StsMode::AccessDenied);
    assert!(
        wait_status(&sidecar.admin_url("/readyz"), 503, Duration::from_secs(20)).await,
        "credentials never ran out; logs:\n{}",
        sidecar.logs()
    );
    let res = get(&sidecar.url("/after-expiry")).await;
    assert_eq!(res.status, 503, "{:?}", res.body);
    assert_eq!(res.sidecar_error(), Some("credentials_unavailable"));
    let body = String::from_utf8_lossy(&res.body).into_owned();
    assert!(!sts.issued().is_empty());
    assert_no_secrets(&body, &sts, "503 body");
    assert_no_secrets(&format!("{:?}", res.headers), &sts, "503 headers");
    let ready = get(&sidecar.admin_url("/readyz")).await;
    assert_no_secrets(&String::from_utf8_lossy(&ready.body), &sts, "/readyz");
    let metrics = get(&sidecar.admin_url("/metrics")).await;
    assert_no_secrets(&String::from_utf8_lossy(&metrics.body), &sts, "/metrics");
    // Every other answer the sidecar produced in this file's scenarios goes through the same
    // error type; the echo of the good request is the upstream's, not the sidecar's.
    assert_no_secrets(&sidecar.logs(), &sts, "debug logs");
    assert!(
        !sidecar.logs().contains("Signature="),
        "a signature was logged"
    );
}

#[test]
fn secret_bearing_types_redact_themselves() {
    // What a panic message or a `{:?}` in a log would print.
    let secret_bearing = || {
        sigv4_sidecar::credentials::Credentials::new(aws_credential_types::Credentials::new(
            BASE_AKID,
            BASE_SECRET,
            Some("session-token-never-printed-0123456789".into()),
            None,
            "test",
        ))
    };
    let creds = secret_bearing();
    let cell = sigv4_sidecar::credentials::CredentialCell::new("base");
    cell.store(secret_bearing());
    for shown in [
        format!("{creds:?}"),
        format!("{:?}", creds.identity),
        format!("{:?}", cell.current(std::time::SystemTime::now())),
    ] {
        assert!(!shown.contains(BASE_SECRET), "{shown}");
        assert!(!shown.contains("session-token-never-printed"), "{shown}");
    }
}
