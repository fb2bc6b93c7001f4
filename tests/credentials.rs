//! Background credentials: refreshed before expiry without a failed request, old credentials
//! kept while STS fails, fail closed (503) once they expire, recovery when STS is back, and
//! readiness that follows all of it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sigv4_testbed::sts::StsMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_before_expiry_without_a_failed_request() {
    // 45 s credentials, refreshed 30-37.5 s before expiry: a new set every ~8-15 s.
    let sts = sts(Duration::from_secs(45)).await;
    let gw = gateway(&sts).await;
    let sidecar =
        ready_sidecar(Launch::new(&gw.url(), &sts).set("REFRESH_BEFORE_EXPIRY", "30s")).await;
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
async fn sts_outage_keeps_old_credentials_then_fails_closed_then_recovers() {
    // 40 s credentials: usable for 10 s (never in their last 30 s), refresh halfway (~5 s).
    let sts = sts(Duration::from_secs(40)).await;
    let gw = gateway(&sts).await;
    let sidecar =
        ready_sidecar(Launch::new(&gw.url(), &sts).set("REFRESH_BEFORE_EXPIRY", "30s")).await;
    sts.set_mode(StsMode::InternalError);
    let first = sts.issued()[0].clone();

    // While STS fails the old credentials stay in use ...
    assert!(
        sts.wait_for_calls(2, Duration::from_secs(15)).await,
        "no refresh attempt"
    );
    let res = get(&sidecar.url("/during-outage")).await;
    if std::time::SystemTime::now() + Duration::from_secs(31) < first.expiration {
        assert_eq!(
            res.status, 200,
            "old credentials still valid: {:?}",
            res.body
        );
        assert_eq!(
            res.json()["access_key_id"],
            first.credentials.access_key_id.as_str()
        );
    }

    // ... until they are within 30 s of expiry: then 503, never a request with expired ones.
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let res = get(&sidecar.url("/during-outage")).await;
        if res.status == 503 {
            break res;
        }
        assert_eq!(res.status, 200);
        assert!(Instant::now() < deadline, "never failed closed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // STS expirations travel with whole seconds, hence 31 s rather than 30 s.
    assert!(
        std::time::SystemTime::now() + Duration::from_secs(31) >= first.expiration,
        "503 only once credentials are near expiry"
    );
    assert_eq!(refused.sidecar_error(), Some("credentials_unavailable"));
    assert_eq!(refused.json()["error"], "credentials_unavailable");
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("Retry-After");
    assert!((1..=300).contains(&retry_after));
    let message = refused.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("expired") && message.contains(ROLE),
        "{message}"
    );
    let ready = get(&sidecar.admin_url("/readyz")).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["routes"]["default"]["ready"], false);
    let calls_during_outage = sts.calls();

    // Backoff, not a hot loop: a handful of attempts over the outage so far.
    assert!(
        calls_during_outage < 40,
        "{calls_during_outage} STS calls: hot loop?"
    );

    // Recovery on the first good answer.
    sts.set_mode(StsMode::Ok);
    assert!(
        sidecar.wait_for_refreshes(2, Duration::from_secs(30)),
        "no recovery; logs:\n{}",
        sidecar.logs()
    );
    let res = get(&sidecar.url("/after")).await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    assert_ne!(
        res.json()["access_key_id"],
        first.credentials.access_key_id.as_str()
    );
    assert_eq!(get(&sidecar.admin_url("/readyz")).await.status, 200);
    assert_eq!(
        gw.rejected(),
        0,
        "nothing reached the gateway with expired or bad credentials"
    );
    let metrics =
        String::from_utf8_lossy(&get(&sidecar.admin_url("/metrics")).await.body).into_owned();
    assert!(
        metrics.contains(&format!(
            "sigv4_sidecar_credentials_refresh_total{{result=\"failure\",role_arn=\"{ROLE}\"}}"
        )),
        "{metrics}"
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
    assert!(
        sidecar
            .wait_for_log(
                |v| v["message"] == "credential refresh failed",
                Duration::from_secs(30)
            )
            .is_some(),
        "{}",
        sidecar.logs()
    );
    let ready = get(&sidecar.admin_url("/readyz")).await;
    assert_eq!(ready.status, 503);
    assert!(
        ready.json()["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("default"),
        "{:?}",
        ready.json()
    );
    let res = get(&sidecar.url("/early")).await;
    assert_eq!(res.status, 503);
    assert_eq!(res.sidecar_error(), Some("credentials_unavailable"));
    assert!(
        res.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Throttling"),
        "{:?}",
        res.json()
    );
    assert!(res.headers.contains_key("retry-after"));
    assert_eq!(
        get(&sidecar.admin_url("/healthz")).await.status,
        200,
        "alive while not ready"
    );
    assert!(gw.requests().is_empty(), "nothing forwarded unsigned");

    sts.set_mode(StsMode::Ok);
    assert!(
        sidecar.wait_for_refreshes(1, Duration::from_secs(30)),
        "{}",
        sidecar.logs()
    );
    assert_eq!(get(&sidecar.admin_url("/readyz")).await.status, 200);
    assert_eq!(get(&sidecar.url("/late")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_credentials_sign_when_no_role_is_configured() {
    let sts = sts(Duration::from_secs(3600)).await;
    let gw = sigv4_testbed::gateway::Gateway::start(sigv4_testbed::gateway::GatewayConfig {
        region: REGION.into(),
        service: "execute-api".into(),
        stage: "Prod".into(),
        sts: sts.clone(),
        allowed_roles: None,
        backend: sigv4_testbed::gateway::Backend::Echo,
        tls: false,
    })
    .await
    .expect("gateway");
    let sidecar = ready_sidecar(Launch::new(&gw.url(), &sts).unset("ROLE_ARN")).await;
    let echo = get(&sidecar.url("/base")).await.json();
    assert_eq!(echo["access_key_id"], BASE_AKID);
    assert_eq!(sts.calls(), 0, "no STS call without a role");
}
