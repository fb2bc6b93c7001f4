//! Clients that go away mid-upload and mid-download, and SIGTERM with requests in flight.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The client sends the headers of a 1 MiB upload and half the body, then disconnects: nothing
/// reaches the upstream (not even a connection), and the request is no longer in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gone_mid_upload_sends_nothing_upstream() {
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    let addr = raw_upstream(move |_s, _| {
        seen.fetch_add(1, Ordering::SeqCst);
        async {}
    })
    .await;
    let (_sts, sidecar) = raw_sidecar(addr, &[]).await;

    let head = b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 1048576\r\n\r\n";
    let mut client = app_connection(sidecar.proxy, head).await;
    client
        .write_all(&vec![b'u'; 512 * 1024])
        .await
        .expect("half the body");
    // The upload is in flight.
    assert_inflight_reaches(&sidecar, 1.0).await;
    drop(client);

    assert_inflight_returns_to_zero(&sidecar).await;
    let line = sidecar.access_line("/upload");
    assert!(line["upstream_ms"].is_null(), "never sent upstream: {line}");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the upstream saw a connection for an upload the client abandoned"
    );
}

/// The client asks for 50 MB and disconnects after the first chunk: the sidecar cancels the
/// upstream exchange (the upstream's writes fail long before 50 MB) and the request leaves the
/// in-flight gauge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gone_mid_download_cancels_the_upstream_exchange() {
    const DECLARED: usize = 50_000_000;
    // Reports how much it wrote once the connection broke (`None`: not even the head).
    let (addr, mut done) = scripted_upstream(|mut s, _| async move {
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {DECLARED}\r\n\r\n");
        s.write_all(head.as_bytes()).await.ok()?;
        let chunk = vec![b'd'; 64 * 1024];
        let mut written = 0;
        while written < DECLARED {
            let n = chunk.len().min(DECLARED - written);
            if s.write_all(&chunk[..n]).await.is_err() {
                break;
            }
            written += n;
        }
        Some(written)
    })
    .await;
    let (_sts, sidecar) = raw_sidecar(addr, &[]).await;

    let mut client = app_get(sidecar.proxy, "/download").await;
    // The first body bytes arrived.
    read_past_head(&mut client, 0).await;
    drop(client);

    let written = tokio::time::timeout(Duration::from_secs(10), done.recv())
        .await
        .expect("the upstream connection was closed after the client left")
        .flatten()
        .expect("written");
    assert!(
        written < DECLARED,
        "the upstream sent all {written} bytes to nobody"
    );
    assert_inflight_returns_to_zero(&sidecar).await;
    let line = sidecar.access_line("/download");
    assert_eq!(line["outcome"], "client_gone", "{line}");
    println!("mid-download disconnect: the upstream wrote {written} of {DECLARED} bytes");
}

// ---------------------------------------------------------------------------------------------
// SIGTERM under load
// ---------------------------------------------------------------------------------------------

/// 32 requests in flight (the upstream answers after 1.5 s) when SIGTERM arrives: new
/// connections are refused at once, every in-flight request completes 200 within
/// `shutdown_grace`, and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drops_no_in_flight_request() {
    const N: usize = 32;
    let grace = Duration::from_secs(10);
    let sts = sts(Duration::from_secs(3600)).await;
    let gw = gateway(&sts).await;
    let mut sidecar =
        ready_sidecar(Launch::new(&gw.url(), &sts).set("SHUTDOWN_GRACE", "10s")).await;
    let mut tasks = Vec::new();
    for i in 0..N {
        let url = sidecar.url(&format!("/inflight/{i}"));
        tasks.push(tokio::spawn(async move {
            let res = send(
                "POST",
                &url,
                &[("x-testbed-delay-ms", "1500")],
                format!("body {i}"),
            )
            .await;
            (res, Instant::now())
        }));
    }
    assert!(
        gw.wait_for_requests(N, Duration::from_secs(20)).await,
        "only {} of {N} requests reached the upstream",
        gw.requests().len()
    );
    let sigterm = Instant::now();
    sidecar.signal(SIGTERM);
    assert!(
        sidecar
            .wait_for_log(
                |v| v["message"]
                    == "shutting down: new connections refused, draining in-flight requests",
                Duration::from_secs(5)
            )
            .is_some(),
        "{}",
        sidecar.logs()
    );
    for _ in 0..3 {
        assert!(
            TcpStream::connect(sidecar.proxy).await.is_err(),
            "a new connection was accepted after shutdown started"
        );
    }
    let mut ok = 0;
    for t in tasks {
        let (res, finished) = t.await.expect("task");
        assert_eq!(
            res.status, 200,
            "an in-flight request was dropped: {:?}",
            res.body
        );
        assert!(finished.duration_since(sigterm) < grace);
        ok += 1;
    }
    assert_eq!(ok, N);
    let status = sidecar
        .wait_exit(Duration::from_secs(15))
        .expect("exited within the grace period");
    assert_eq!(status.code(), Some(0), "{}", sidecar.logs());
    assert!(sidecar.count_logs(|v| v["message"] == "all in-flight requests finished") == 1);
    let completed = sidecar.count_logs(|v| {
        v["message"] == "request"
            && v["status"] == 200
            && v["outcome"] == "complete"
            && v["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/inflight/"))
    });
    assert_eq!(completed, N, "every in-flight request logged complete");
}
