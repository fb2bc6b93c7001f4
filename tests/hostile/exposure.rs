//! What the sidecar exposes: the admin port, the listen address, secrets in answers and logs.

use std::time::Duration;

use crate::common::wire::exchange;
use crate::common::*;
use crate::{assert_no_secrets, LIFETIME};

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
    res.assert_sidecar(503, "credentials_unavailable");
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
