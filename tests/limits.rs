//! The limits that protect the pod from its own clients (README, "Limits that protect the pod"), each hit on purpose
//! against the real binary: `max_connections`, `max_inflight_body_bytes`,
//! `header_read_timeout` (slowloris, idle and trickled-preface connections) and
//! `max_header_bytes`.

mod common;

use std::time::{Duration, Instant};

use common::wire::{exchange, Conn};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIFETIME: Duration = Duration::from_secs(3600);
const ANSWER: Duration = Duration::from_secs(5);
const MIB: usize = 1024 * 1024;

fn get_head(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_answers_503_overloaded_and_frees_slots_on_close() {
    let (_sts, gw, sidecar) = ready_stack(LIFETIME, |l| {
        l.set("MAX_CONNECTIONS", "4")
            // Long enough that the held keep-alive connections are not closed as idle.
            .set("HEADER_READ_TIMEOUT", "30s")
    })
    .await;

    // Four keep-alive connections, each proven open by a request on it.
    let mut held = Vec::new();
    for i in 0..4 {
        let mut c = Conn::open(sidecar.proxy).await;
        c.send(&get_head(&format!("/held-{i}")))
            .await
            .expect("send");
        let a = c.answer(ANSWER).await.expect("answer");
        assert_eq!(a.status, 200, "connection {i}: {a:?}");
        held.push(c);
    }

    // The fifth is answered 503 overloaded without being read, and closed.
    let mut fifth = Conn::open(sidecar.proxy).await;
    let a = fifth.answer(ANSWER).await.expect("an answer on the fifth");
    a.assert_sidecar(503, "overloaded", "fifth connection");
    assert_eq!(a.header("retry-after"), Some("1"));
    assert!(
        fifth.closed_within(Duration::from_secs(3)).await,
        "the refused connection is closed"
    );
    assert!(sidecar
        .wait_for_log(
            |v| v["message"] == "max_connections reached: refusing a connection",
            Duration::from_secs(5)
        )
        .is_some());

    // The held connections still work.
    held[1].send(&get_head("/held-again")).await.expect("send");
    assert_eq!(held[1].answer(ANSWER).await.expect("answer").status, 200);

    // Closing one frees its slot (released when the server sees the close; poll for it).
    drop(held.remove(0));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut refused_meanwhile = 0;
    loop {
        let (a, _) = exchange(sidecar.proxy, &get_head("/after-close")).await;
        let a = a.expect("answer");
        if a.status == 200 {
            break;
        }
        a.assert_sidecar(503, "overloaded", "before the slot is freed");
        refused_meanwhile += 1;
        assert!(
            Instant::now() < deadline,
            "slot never freed after a close ({refused_meanwhile} refusals)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let targets: Vec<String> = gw.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(
        targets,
        [
            "/Prod/held-0",
            "/Prod/held-1",
            "/Prod/held-2",
            "/Prod/held-3",
            "/Prod/held-again",
            "/Prod/after-close"
        ],
        "refused connections sent nothing upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflight_body_budget_refuses_uploads_that_would_exceed_it() {
    // Room for one 2 MiB body plus a little: two max-size uploads can never be held at once.
    let (_sts, gw, sidecar) = ready_stack(LIFETIME, |l| {
        l.set("MAX_BODY_BYTES", &(2 * MIB).to_string())
            .set("MAX_INFLIGHT_BODY_BYTES", &(3 * MIB).to_string())
    })
    .await;
    let upload_head = |path: &str, len: usize| {
        format!("POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n")
    };
    let body = vec![b'a'; 2 * MIB];

    // A: a slow 2 MiB upload, half sent and held. Its 2 MiB are reserved as soon as its head
    // is read (the in-flight gauge rises in the same step).
    let mut a = Conn::open(sidecar.proxy).await;
    a.send(upload_head("/upload-a", 2 * MIB).as_bytes())
        .await
        .expect("send");
    a.send(&body[..MIB]).await.expect("send");
    // Upload A started.
    assert_inflight_reaches(&sidecar, 1.0).await;

    // B: a second 2 MiB upload does not fit next to A: 503 overloaded at once.
    let mut b = Conn::open(sidecar.proxy).await;
    b.send(upload_head("/upload-b", 2 * MIB).as_bytes())
        .await
        .expect("send");
    let answer = b.answer(ANSWER).await.expect("answer to B");
    answer.assert_sidecar(503, "overloaded", "second upload");
    assert_eq!(answer.header("retry-after"), Some("1"));
    drop(b);

    // C: a chunked upload (no declared length) grows past the budget mid-stream: 503 too.
    let mut c = Conn::open(sidecar.proxy).await;
    let mut chunked =
        b"POST /upload-c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..32 {
        chunked.extend_from_slice(format!("{:x}\r\n", 64 * 1024).as_bytes());
        chunked.extend_from_slice(&body[..64 * 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let _ = c.send(&chunked).await;
    let answer = c.answer(ANSWER).await.expect("answer to C");
    answer.assert_sidecar(503, "overloaded", "chunked upload over the budget");
    drop(c);

    // D: a small upload still fits next to A.
    let small = send("POST", &sidecar.url("/small"), &[], vec![b's'; MIB / 2]).await;
    assert_eq!(small.status, 200, "{:?}", small.body);

    // A completes and reaches the upstream whole.
    a.send(&body[MIB..]).await.expect("send");
    let answer = a.answer(ANSWER).await.expect("answer to A");
    assert_eq!(answer.status, 200, "{answer:?}");
    drop(a);

    // The budget is free again: a full-size upload succeeds, twice in a row.
    for path in ["/upload-b-again", "/upload-b-again-2"] {
        let res = send("POST", &sidecar.url(path), &[], body.clone()).await;
        assert_eq!(res.status, 200, "{path}: {:?}", res.body);
    }

    let seen: Vec<(String, usize)> = gw
        .requests()
        .iter()
        .map(|r| (r.target.clone(), r.body_len))
        .collect();
    assert_eq!(
        seen,
        [
            ("/Prod/small".to_string(), MIB / 2),
            ("/Prod/upload-a".to_string(), 2 * MIB),
            ("/Prod/upload-b-again".to_string(), 2 * MIB),
            ("/Prod/upload-b-again-2".to_string(), 2 * MIB),
        ],
        "refused uploads sent nothing upstream"
    );
    let metrics =
        String::from_utf8_lossy(&get(&sidecar.admin_url("/metrics")).await.body).into_owned();
    assert!(
        metrics.contains("sigv4_sidecar_errors_total{error=\"overloaded\",route=\"default\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_read_timeout_disconnects_slow_and_silent_clients() {
    let (_sts, gw, sidecar) = ready_stack(LIFETIME, |l| l.set("HEADER_READ_TIMEOUT", "1s")).await;

    /// Connects, sends `first` then `trickle` one byte per 200 ms, and returns how long the
    /// server took to close the connection (None: still open after 6 s).
    async fn time_to_close(
        addr: std::net::SocketAddr,
        first: &'static [u8],
        trickle: &'static [u8],
    ) -> Option<Duration> {
        let started = Instant::now();
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut rd, mut wr) = stream.into_split();
        let writer = tokio::spawn(async move {
            if wr.write_all(first).await.is_err() {
                return;
            }
            for b in trickle {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if wr.write_all(&[*b]).await.is_err() {
                    return;
                }
            }
            // Then hold the connection open without finishing the head.
            std::future::pending::<()>().await;
        });
        let mut sink = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(6), rd.read_to_end(&mut sink)).await;
        writer.abort();
        closed.ok().map(|_| started.elapsed())
    }

    let slowloris = b"X-Slowloris: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let addr = sidecar.proxy;
    let slow = tokio::spawn(time_to_close(
        addr,
        b"GET /slowloris HTTP/1.1\r\n",
        slowloris,
    ));
    let silent = tokio::spawn(time_to_close(addr, b"", b""));
    // The h2c preface is what the server waits for before it picks HTTP/1 or HTTP/2.
    let preface = tokio::spawn(time_to_close(
        addr,
        b"P",
        b"RI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ));

    // Meanwhile a normal request on another connection is served at once.
    let started = Instant::now();
    let res = get(&sidecar.url("/normal")).await;
    assert_eq!(res.status, 200);
    assert!(started.elapsed() < Duration::from_secs(1));

    for (what, task) in [
        ("slowloris (one header byte per 200 ms)", slow),
        ("silent connection", silent),
        ("trickled h2c preface", preface),
    ] {
        let took = task
            .await
            .expect("task")
            .unwrap_or_else(|| panic!("{what}: still connected after 6 s"));
        assert!(
            took >= Duration::from_millis(800) && took <= Duration::from_millis(2500),
            "{what}: disconnected after {took:?}, want about 1 s"
        );
    }
    let targets: Vec<String> = gw.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(targets, ["/Prod/normal"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_header_bytes_answers_431() {
    let (_sts, gw, sidecar) = ready_stack(LIFETIME, |l| l.set("MAX_HEADER_BYTES", "16384")).await;

    // Under the limit: forwarded.
    let fits = "f".repeat(12 * 1024);
    let (a, _) = exchange(
        sidecar.proxy,
        format!("GET /fits HTTP/1.1\r\nHost: a\r\nX-Fits: {fits}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(a.expect("answer").status, 200);

    // The limit is exact, however the head arrives: a head of exactly 16384 bytes (request line
    // and headers through the empty line) is served, one byte more is 431, also when the whole
    // head arrives in one read (hyper's read-buffer limit alone let such heads grow to about
    // twice the limit).
    let head_of = |len: usize| {
        let frame = "GET /edge HTTP/1.1\r\nHost: a\r\nX-Pad: \r\n\r\n".len();
        format!(
            "GET /edge HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\n\r\n",
            "e".repeat(len - frame)
        )
    };
    for (len, status) in [
        (16384, 200),
        (16385, 431),
        (24 * 1024, 431),
        (31 * 1024, 431),
    ] {
        let head = head_of(len);
        assert_eq!(head.len(), len);
        let (a, _) = exchange(sidecar.proxy, head.as_bytes()).await;
        let a = a.unwrap_or_else(|| panic!("{len}-byte head: no answer"));
        assert_eq!(a.status, status, "{len}-byte head: {a:?}");
    }

    // Over it, in one header or spread over many: 431 from hyper, connection closed.
    let big = "b".repeat(20 * 1024);
    let spread: String = (0..40)
        .map(|i| format!("x-part-{i}: {}\r\n", "p".repeat(512)))
        .collect();
    for (what, request) in [
        (
            "one 20 KiB header",
            format!("GET /big HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n"),
        ),
        (
            "40 x 512 B headers",
            format!("GET /spread HTTP/1.1\r\nHost: a\r\n{spread}\r\n"),
        ),
        (
            "a 20 KiB request target",
            format!("GET /{big} HTTP/1.1\r\nHost: a\r\n\r\n"),
        ),
    ] {
        let (a, closed) = exchange(sidecar.proxy, request.as_bytes()).await;
        let a = a.unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(a.status, 431, "{what}: {a:?}");
        assert!(closed, "{what}: connection left open");
    }
    let targets: Vec<String> = gw.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(targets, ["/Prod/fits", "/Prod/edge"]);
}
