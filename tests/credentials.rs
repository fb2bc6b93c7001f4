//! Background credentials: refreshed before expiry without a failed request, not ready (503)
//! until the first credentials arrive, base credentials without a role. (An STS outage, fail
//! closed at expiry and recovery are in tests/faults/credentials.rs.)

mod common;

use std::time::{Duration, Instant};

use common::*;
use sigv4_testbed::gateway::Gateway;
use sigv4_testbed::sts::StsMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_before_expiry_without_a_failed_request() {
    // 45 s credentials, refreshed 30-37.5 s before expiry: a new set every ~8-15 s.
    let (sts, gw, sidecar) = ready_stack(Duration::from_secs(45), |l| {
        l.set("REFRESH_BEFORE_EXPIRY", "30s")
    })
    .await;
    let mut keys = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut sent = 0;
    while sts.issued().len() < 2 || keys.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no refresh seen; logs:\n{}",
            sidecar.logs()
        );
        let res = get(&sidecar.url("/tick")).await;
        assert_eq!(res.status, 200, "request {sent} failed: {:?}", res.body);
        keys.insert(
            res.json()["access_key_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await; // a steady request rate, not a wait
    }
    assert_eq!(gw.rejected(), 0, "no request signed with stale credentials");
    let first = &sts.issued()[0];
    // The emulator issues credentials that live exactly 45 s.
    let refreshed_at = sts.issued()[1].expiration - Duration::from_secs(45);
    let left = first
        .expiration
        .duration_since(refreshed_at)
        .unwrap_or_default();
    assert!(
        left >= Duration::from_secs(29),
        "refreshed only {left:?} before expiry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_and_503_until_the_first_credentials_arrive() {
    let sts = sts(Duration::from_secs(3600)).await;
    sts.set_mode(StsMode::Throttling);
    let gw = gateway(&sts).await;
    let sidecar = Launch::new(&gw.url(), &sts).start();
    // Listening at once, before any credentials; the first fetch fails (after the SDK's own
    // retries) and the sidecar says so.
    sidecar.expect_log("credential refresh failed", Duration::from_secs(30));
    let ready = get(&sidecar.admin_url("/readyz")).await;
    assert_eq!(ready.status, 503);
    ready.assert_json_contains("/reason", "default");
    let res = get(&sidecar.url("/early")).await;
    res.assert_sidecar(503, "credentials_unavailable");
    res.assert_json_contains("/message", "Throttling");
    assert!(res.headers.contains_key("retry-after"));
    assert_eq!(
        get(&sidecar.admin_url("/healthz")).await.status,
        200,
        "alive while not ready"
    );
    assert!(gw.requests().is_empty(), "nothing forwarded unsigned");

    sts.set_mode(StsMode::Ok);
    sidecar.expect_refreshes(1, Duration::from_secs(30));
    assert_eq!(get(&sidecar.admin_url("/readyz")).await.status, 200);
    assert_eq!(get(&sidecar.url("/late")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_credentials_sign_when_no_role_is_configured() {
    let sts = sts(Duration::from_secs(3600)).await;
    // Any credential is allowed, the base ones too.
    let gw = start_gateway(Gateway::builder(sts.clone())).await;
    let sidecar = ready_sidecar(Launch::new(&gw.url(), &sts).unset("ROLE_ARN")).await;
    let echo = get(&sidecar.url("/base")).await.json();
    assert_eq!(echo["access_key_id"], BASE_AKID);
    assert_eq!(sts.calls(), 0, "no STS call without a role");
}
