//! Process-level behaviour: graceful SIGTERM, `--check`, the metrics exposition (checked by
//! Prometheus's own `promtool`), and secrets that never reach the logs.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const LIFETIME: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_in_flight_request_finish_and_exits_0() {
    let sts = sts(LIFETIME).await;
    let gw = gateway(&sts).await;
    let mut sidecar =
        ready_sidecar(Launch::new(&gw.url(), &sts).set("SHUTDOWN_GRACE", "10s")).await;
    let url = sidecar.url("/slow");
    let slow = tokio::spawn(async move { get_with(&url, &[("x-testbed-delay-ms", "1500")]).await });
    assert!(
        gw.wait_for_requests(1, Duration::from_secs(10)).await,
        "request never reached the upstream"
    );
    sidecar.signal(SIGTERM);
    assert!(
        sidecar
            .wait_for_log(
                |v| v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("shutting down")),
                Duration::from_secs(5)
            )
            .is_some(),
        "{}",
        sidecar.logs()
    );
    // New connections are refused once shutdown started.
    assert!(
        tokio::net::TcpStream::connect(sidecar.proxy).await.is_err(),
        "listener still open"
    );
    let res = slow.await.expect("task");
    assert_eq!(
        res.status, 200,
        "the in-flight request finished: {:?}",
        res.body
    );
    let status = sidecar.wait_exit(Duration::from_secs(10)).expect("exited");
    assert_eq!(status.code(), Some(0), "{}", sidecar.logs());
}

/// On one CPU (a pod limited to one core) the binary runs tokio's single-threaded runtime,
/// which is faster there; everything else must behave as on the multi-thread runtime: requests
/// are signed and verified, credentials refresh in the background, SIGTERM drains, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_cpu_the_single_threaded_runtime_signs_refreshes_and_drains() {
    // 40 s credentials, refreshed in their last 30 s: a refresh every few seconds.
    let sts = sts(Duration::from_secs(40)).await;
    let gw = gateway(&sts).await;
    let mut launch = Launch::new(&gw.url(), &sts)
        .set("REFRESH_BEFORE_EXPIRY", "30s")
        .set("SHUTDOWN_GRACE", "10s");
    launch.one_cpu = true;
    let mut sidecar = ready_sidecar(launch).await;
    let started = sidecar
        .wait_for_log(
            |v| v["message"] == "runtime started",
            Duration::from_secs(5),
        )
        .expect("runtime log line");
    assert_eq!(started["cpus"], 1, "{started}");
    assert_eq!(started["runtime"], "current_thread", "{started}");

    // Concurrent requests, round after round, until the credentials have rotated underneath.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut round = 0;
    while sidecar.count_logs(|v| v["message"] == "credentials refreshed") < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no background refresh within 20 s: {}",
            sidecar.logs()
        );
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let url = sidecar.url(&format!("/one-cpu/{round}/{i}"));
                tokio::spawn(async move { send("POST", &url, &[], "payload").await })
            })
            .collect();
        for t in tasks {
            let reply = t.await.expect("task");
            assert_eq!(reply.status, 200, "round {round}: {:?}", reply.body);
        }
        round += 1;
    }
    assert_eq!(
        gw.rejected(),
        0,
        "a request failed the independent verifier"
    );
    assert!(sts.issued().len() >= 2);

    // SIGTERM with a request in flight: it finishes, then exit 0.
    // Counted before the spawn: the slow request may reach the gateway before this line runs.
    let before = gw.requests().len();
    let url = sidecar.url("/slow");
    let slow = tokio::spawn(async move { get_with(&url, &[("x-testbed-delay-ms", "1000")]).await });
    assert!(
        gw.wait_for_requests(before + 1, Duration::from_secs(10))
            .await
    );
    sidecar.signal(SIGTERM);
    assert_eq!(slow.await.expect("task").status, 200);
    let status = sidecar.wait_exit(Duration::from_secs(10)).expect("exited");
    assert_eq!(status.code(), Some(0), "{}", sidecar.logs());
}

#[test]
fn check_validates_and_redacts() {
    let ok = run_once(
        &["--check"],
        &[
            (
                "SIGV4_SIDECAR_UPSTREAM",
                "https://abc123.execute-api.eu-west-1.amazonaws.com/Prod",
            ),
            ("SIGV4_SIDECAR_ROLE_ARN", ROLE),
            ("SIGV4_SIDECAR_EXTERNAL_ID", "very-secret-external-id"),
        ],
    );
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{out}");
    assert!(
        out.contains("region eu-west-1, service execute-api"),
        "{out}"
    );
    assert!(!out.contains("very-secret-external-id"), "{out}");

    let bad = run_once(
        &["--check"],
        &[("SIGV4_SIDECAR_UPSTREAM", "https://example.com/api")],
    );
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("`region`") && err.contains("example.com"),
        "{err}"
    );

    let version = run_once(&["--version"], &[]);
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_exits_1_before_listening() {
    let sts = sts(LIFETIME).await;
    let out = run_once(
        &[],
        &[
            (
                "SIGV4_SIDECAR_UPSTREAM",
                "https://abc123.execute-api.us-east-1.amazonaws.com/Prod",
            ),
            ("SIGV4_SIDECAR_REQUEST_TIMEOUT", "forever"),
            ("AWS_ENDPOINT_URL_STS", &sts.endpoint()),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("request_timeout") && err.contains("forever"),
        "{err}"
    );
    assert_eq!(sts.calls(), 0);
}

/// `promtool check metrics` must report nothing on a real scrape (with traffic of every kind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool() {
    let (_sts, _gw, sidecar) = ready_stack(LIFETIME, |l| l).await;
    get(&sidecar.url("/ok")).await;
    send("POST", &sidecar.url("/ok"), &[], "body").await;
    raw(
        sidecar.proxy,
        b"CONNECT x:1 HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    let scrape = get(&sidecar.admin_url("/metrics")).await;
    assert_eq!(scrape.status, 200);
    assert!(scrape.headers["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/plain"));
    let text = String::from_utf8_lossy(&scrape.body).into_owned();
    for name in [
        "sigv4_sidecar_requests_total{",
        "sigv4_sidecar_request_duration_seconds_bucket{",
        "sigv4_sidecar_upstream_duration_seconds_bucket{",
        "sigv4_sidecar_errors_total{",
        "sigv4_sidecar_inflight_requests{",
        "sigv4_sidecar_credentials_refresh_total{",
        "sigv4_sidecar_credentials_expiry_timestamp_seconds{",
        "sigv4_sidecar_build_info{",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    assert!(text.contains("sigv4_sidecar_inflight_requests{route=\"default\"} 0"));
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package `prometheus`; scripts/test installs it)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(&scrape.body)
        .expect("write");
    let out = promtool.wait_with_output().expect("promtool runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs_even_at_debug() {
    // The sidecar's own debug level, and every crate at trace through RUST_LOG.
    for extra in [("SIGV4_SIDECAR_LOG_LEVEL", "debug"), ("RUST_LOG", "trace")] {
        let sts = sts(LIFETIME).await;
        let gw = gateway(&sts).await;
        let mut sidecar = Launch::new(&gw.url(), &sts).start_with_env(&[extra]);
        sidecar.expect_refreshes(1, Duration::from_secs(20));
        let res = send(
            "POST",
            &sidecar.url("/secret?token=abc"),
            &[("authorization", "Bearer app-secret")],
            "payload",
        )
        .await;
        assert_eq!(res.status, 200);
        let signature = res.echoed_headers()["authorization"][0]
            .split("Signature=")
            .nth(1)
            .expect("signature")
            .to_string();
        // Stop the process so every line it wrote is in.
        sidecar.signal(SIGTERM);
        sidecar.wait_exit(Duration::from_secs(10)).expect("exits");
        let logs = sidecar.logs();
        assert!(
            logs.contains("\"path\":\"/secret\""),
            "access line written: {logs}"
        );
        let mut secrets = vec![BASE_SECRET.to_string(), "app-secret".to_string(), signature];
        for i in sts.issued() {
            secrets.push(i.credentials.secret_access_key.clone());
            secrets.push(i.credentials.session_token.clone().unwrap_or_default());
        }
        for s in secrets.iter().filter(|s| !s.is_empty()) {
            assert!(
                !logs.contains(s.as_str()),
                "{extra:?}: a secret leaked into the logs"
            );
        }
        if extra.0 != "RUST_LOG" {
            // The sidecar's own lines leave queries out; RUST_LOG=trace opens hyper's internals.
            assert!(!logs.contains("token=abc"), "query strings are not logged");
        }
    }
}
