//! The access log goes through a non-blocking writer thread: a line queued just before SIGTERM
//! must still reach stdout before the process exits, in the JSON shape log pipelines parse.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lines_queued_just_before_sigterm_are_written() {
    const N: usize = 20;
    let sts = sts(Duration::from_secs(3600)).await;
    let gw = gateway(&sts).await;
    let mut sidecar = ready_sidecar(Launch::new(&gw.url(), &sts)).await;
    for i in 0..N {
        let res = send(
            "GET",
            &sidecar.url(&format!("/last/{i}?q=secret")),
            &[],
            vec![],
        )
        .await;
        assert_eq!(res.status, 200);
    }
    // No waiting for the lines: SIGTERM right after the last answer.
    sidecar.signal(SIGTERM);
    let status = sidecar
        .wait_exit(Duration::from_secs(15))
        .expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", sidecar.logs());
    let lines = sidecar.count_logs(|v| {
        v["message"] == "request"
            && v["target"] == "sigv4_sidecar::access"
            && v["level"] == "INFO"
            && v["route"] == "default"
            && v["method"] == "GET"
            && v["status"] == 200
            && v["outcome"] == "complete"
            && v["duration_ms"].as_f64().is_some()
            && v["upstream_ms"].as_f64().is_some()
            && v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z'))
            && v["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/last/") && !p.contains('?'))
    });
    assert_eq!(lines, N, "{}", sidecar.logs());
    // The shutdown completed normally after them.
    assert!(sidecar.count_logs(|v| v["message"] == "all in-flight requests finished") == 1);
}
