//! The answers the sidecar produces itself: 400, 405, 413, 502, 504, each a JSON body with
//! `x-sigv4-sidecar-error`, and nothing sent upstream for the ones refused up front.

mod common;

use std::time::Duration;

use common::*;
use sigv4_testbed::gateway::Gateway;

const LIFETIME: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_up_front_and_nothing_reaches_the_upstream() {
    let (_sts, gw, sidecar) = ready_stack(LIFETIME, |l| l.set("MAX_BODY_BYTES", "1024")).await;

    // 413 by Content-Length, before the body is read.
    send("POST", &sidecar.url("/big"), &[], vec![b'x'; 1025])
        .await
        .assert_sidecar(413, "payload_too_large");
    // Exactly the limit is fine.
    assert_eq!(
        send("POST", &sidecar.url("/fits"), &[], vec![b'x'; 1024])
            .await
            .status,
        200
    );

    // Read off the wire: a chunked body that grows past the limit, CONNECT, and an
    // absolute-form target (the sidecar is not an open forward proxy).
    let mut chunked =
        b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend_from_slice(&[b'y'; 0x200]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let connect = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
    let absolute = b"GET http://169.254.169.254/latest/meta-data HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n";
    for (what, request, status, code) in [
        (
            "chunked past the limit",
            &chunked[..],
            413,
            "payload_too_large",
        ),
        ("CONNECT", &connect[..], 405, "method_not_allowed"),
        ("absolute-form", &absolute[..], 400, "bad_request"),
    ] {
        wire::expect_sidecar_answer(sidecar.proxy, request, status, code, what).await;
    }

    assert_eq!(
        gw.requests().len(),
        1,
        "only the request that fit reached the upstream"
    );
    let metrics =
        String::from_utf8_lossy(&get(&sidecar.admin_url("/metrics")).await.body).into_owned();
    for code in ["payload_too_large", "method_not_allowed", "bad_request"] {
        assert!(
            metrics.contains(&format!(
                "sigv4_sidecar_errors_total{{error=\"{code}\",route=\"default\"}}"
            )),
            "{code} not counted:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502() {
    let sts = sts(LIFETIME).await;
    let port = closed_port();
    let sidecar = ready_sidecar(Launch::new(&format!("http://127.0.0.1:{port}/Prod"), &sts)).await;
    let res = get(&sidecar.url("/x")).await;
    res.assert_sidecar(502, "upstream_unreachable");
    res.assert_json_contains("/message", "upstream unreachable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_is_504_after_request_timeout() {
    let (_sts, _gw, sidecar) = ready_stack(LIFETIME, |l| l.set("REQUEST_TIMEOUT", "1s")).await;
    let started = std::time::Instant::now();
    let res = get_with(&sidecar.url("/slow"), &[("x-testbed-delay-ms", "5000")]).await;
    res.assert_sidecar(504, "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered at the timeout, not when the upstream did"
    );
    // A fast request on the same sidecar is unaffected.
    assert_eq!(get(&sidecar.url("/fast")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_are_relayed_not_rewritten() {
    let (sts, _gw, sidecar) = ready_stack(LIFETIME, |l| l).await;
    let res = get_with(&sidecar.url("/teapot"), &[("x-testbed-status", "503")]).await;
    assert_eq!(res.status, 503);
    assert_eq!(
        res.sidecar_error(),
        None,
        "the upstream's own 503 is not the sidecar's"
    );
    // The gateway's own 403 for a path outside the stage passes through too.
    let outside = start_gateway(Gateway::builder(sts.clone()).stage("Other")).await;
    let sidecar2 =
        ready_sidecar(Launch::new(&outside.url().replace("/Other", "/Prod"), &sts)).await;
    let res = get(&sidecar2.url("/x")).await;
    assert_eq!(res.status, 403);
    assert_eq!(res.sidecar_error(), None);
    assert_eq!(res.json()["message"], "Missing Authentication Token");
}
