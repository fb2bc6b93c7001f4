//! Malformed request lines and header bytes, oversized heads, absolute- and authority-form
//! targets, `CONNECT`, and `Host` spoofing.

use crate::common::wire::{exchange, expect_sidecar_answer, Conn};
use crate::common::*;
use crate::{assert_hyper_refusal, assert_no_secrets, Elsewhere, ANSWER, LIFETIME};

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
