//! `payload = "unsigned"` at the socket level (issue 13): the body streams to the upstream as it
//! arrives, and past `max_body_bytes` the upstream request is aborted so the upstream never sees
//! a complete request, while the app gets SPEC's 413.
//!
//! The upstream here is a raw TCP listener that records every byte it receives, so what "never
//! a complete request" means is checked on the wire: no terminating chunk ever arrives.

mod common;
#[path = "support/wire.rs"]
mod wire;

use std::time::Duration;

use common::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use wire::Conn;

const LIFETIME: Duration = Duration::from_secs(3600);

/// Accepts one connection and returns everything it received until the peer closed it.
async fn record_one(listener: TcpListener) -> Vec<u8> {
    let (mut s, _) = listener.accept().await.expect("accept");
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut all)).await;
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_the_limit_is_aborted_upstream_and_answered_413() {
    const LIMIT: usize = 1 << 20;
    let sts = sts(LIFETIME).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream = format!("http://{}", listener.local_addr().expect("addr"));
    let recorded = tokio::spawn(record_one(listener));
    let sidecar = ready_sidecar(
        Launch::new(&upstream, &sts)
            .set("SERVICE", "vpc-lattice-svcs")
            .set("PAYLOAD", "unsigned")
            .set("MAX_BODY_BYTES", &LIMIT.to_string()),
    )
    .await;

    let mut conn = Conn::open(sidecar.proxy).await;
    conn.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .expect("head");
    // 16 chunks of 64 KiB are exactly the limit; the 17th chunk (1 byte) crosses it.
    let chunk = vec![b'a'; 64 * 1024];
    for _ in 0..16 {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(&chunk);
        frame.extend_from_slice(b"\r\n");
        conn.send(&frame).await.expect("chunk within the limit");
    }
    // The sidecar may close as soon as it has answered: a failed write is fine here.
    let _ = conn.send(b"1\r\nb\r\n0\r\n\r\n").await;
    let answer = conn
        .answer(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no answer; logs:\n{}", sidecar.logs()));
    answer.assert_sidecar(413, "payload_too_large", "one byte over max_body_bytes");

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
    assert!(head.contains("authorization: aws4-hmac-sha256"), "{head}");
    let body = &wire[head_end..];
    assert!(
        !body.ends_with(b"0\r\n\r\n"),
        "the upstream saw the terminating chunk: a complete request"
    );
    let forwarded = body.iter().filter(|b| **b == b'a' || **b == b'b').count();
    assert!(
        forwarded <= LIMIT,
        "{forwarded} body bytes went upstream, more than max_body_bytes"
    );
    assert!(
        !body.contains(&b'b'),
        "the byte past the limit was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_length_over_the_limit_is_refused_before_connecting() {
    let sts = sts(LIFETIME).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let upstream = format!("http://{}", listener.local_addr().expect("addr"));
    let sidecar = ready_sidecar(
        Launch::new(&upstream, &sts)
            .set("SERVICE", "vpc-lattice-svcs")
            .set("PAYLOAD", "unsigned")
            .set("MAX_BODY_BYTES", "1024"),
    )
    .await;
    let (answer, _closed) = wire::exchange(
        sidecar.proxy,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n",
    )
    .await;
    answer
        .expect("answer")
        .assert_sidecar(413, "payload_too_large", "declared over the limit");
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the upstream was contacted: {other:?}"),
    }
}
