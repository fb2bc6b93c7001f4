//! Request-smuggling shapes: malformed or conflicting framing headers, Content-Length with
//! Transfer-Encoding, a body refused by its length, pipelining after a body.

use std::time::Duration;

use crate::common::wire::{exchange, expect_sidecar_answer, Conn};
use crate::common::*;
use crate::{assert_hyper_refusal, ANSWER, LIFETIME};

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
