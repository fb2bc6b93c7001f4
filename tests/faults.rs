//! Faults, each injected on loopback and bounded in time:
//! - STS throttling, 500s, hangs (SDK timeouts), connection refused, malformed XML, and an outage
//!   longer than the credential lifetime: old credentials stay in use while usable, retries back
//!   off (no hot loop), then 503 `credentials_unavailable` and a failing `/readyz`, then full
//!   recovery on the first good answer; never a request signed with expired credentials, never
//!   one forwarded unsigned.
//! - Base credentials that rotate underneath (an IRSA web-identity token file replaced on disk).
//! - Upstreams that reset before or after the response headers, stall past `request_timeout`, or
//!   send HTTP/2 GOAWAY (gracefully or abruptly). Connection refused, the 504 of a slow echo
//!   answer and a bad certificate are in tests/errors.rs and tests/signing.rs.
//! - Clients that go away mid-upload and mid-download.
//! - SIGTERM with many requests in flight.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use sigv4_testbed::sts::{StsEmulator, StsMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------------
// STS faults
// ---------------------------------------------------------------------------------------------

/// A loopback TCP forwarder on a fixed port in front of the STS emulator. Closing it refuses new
/// connections and cuts the open ones; opening it again binds the same port: an STS endpoint
/// that goes away (connection refused) and comes back at the same address.
struct Gate {
    port: u16,
    target: SocketAddr,
    stop: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

impl Gate {
    async fn new(target: SocketAddr) -> Gate {
        let mut gate = Gate {
            port: closed_port(),
            target,
            stop: None,
        };
        gate.open().await;
        gate
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn open(&mut self) {
        assert!(self.stop.is_none(), "gate already open");
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("gate binds its port again");
        let (tx, rx) = watch::channel(false);
        let target = self.target;
        let task = tokio::spawn(async move {
            let mut stopped = rx.clone();
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { continue };
                        let mut cut = rx.clone();
                        tokio::spawn(async move {
                            let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                _ = cut.changed() => {}
                            }
                        });
                    }
                }
            }
            // The listener is dropped here: from now on connections are refused.
        });
        self.stop = Some((tx, task));
    }

    async fn close(&mut self) {
        let (tx, task) = self.stop.take().expect("gate open");
        let _ = tx.send(true);
        task.await.expect("gate task");
    }
}

/// How STS breaks in a scenario.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    Mode(StsMode),
    Refused,
}

/// Smallest wait the sidecar may take after its `n`-th failure in a row: half of 0.5 s doubling
/// up to 15 s (the jitter is drawn from the upper half).
fn min_backoff_ms(n: u64) -> u64 {
    (500u64 << (n.max(1) - 1).min(10)).min(15_000) / 2
}

/// The most refresh failures that fit in `elapsed` if the sidecar honours its backoff.
fn max_failures_within(elapsed: Duration) -> u64 {
    let budget = elapsed.as_millis() as u64;
    let (mut spent, mut n) = (0, 1);
    while spent + min_backoff_ms(n) <= budget {
        spent += min_backoff_ms(n);
        n += 1;
    }
    n
}

/// The refresh failures logged so far: `failures` counts up by one per line, each announced wait
/// lies in the documented window, the count fits in `elapsed` (no hot loop) and STS saw at most
/// the SDK's 3 attempts per refresh (plus one refresh in progress). Returns the lines.
fn check_backoff(sidecar: &Sidecar, elapsed: Duration, sts_calls: usize) -> Vec<serde_json::Value> {
    let lines = sidecar.collect_logs(|v| v["message"] == "credential refresh failed");
    for (i, v) in lines.iter().enumerate() {
        let n = v["failures"].as_u64().expect("failures");
        assert_eq!(n, i as u64 + 1, "failures count up: {v}");
        let wait = v["retry_in_ms"].as_u64().expect("retry_in_ms");
        let base = 2 * min_backoff_ms(n);
        assert!(
            wait + 1 >= base / 2 && wait <= base,
            "failure {n}: retry in {wait} ms, documented window {}..={base} ms",
            base / 2
        );
        assert_eq!(v["role_arn"], ROLE);
    }
    let failures = lines.len() as u64;
    let most = max_failures_within(elapsed);
    assert!(
        failures <= most,
        "{failures} refresh failures in {elapsed:?}: more than backoff allows ({most}), hot loop?"
    );
    assert!(
        sts_calls as u64 <= 3 * (failures + 1),
        "{sts_calls} STS calls for {failures} failed refreshes: more than the SDK's 3 attempts each"
    );
    lines
}

/// Every request that reached the gateway was signed, with credentials it accepted.
fn assert_all_forwarded_requests_signed(gw: &sigv4_testbed::gateway::Gateway) {
    assert_eq!(
        gw.rejected(),
        0,
        "a request reached the gateway with expired or bad credentials"
    );
    for r in gw.requests() {
        let auth = r.header("authorization").unwrap_or_default();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 "),
            "{} {} forwarded unsigned",
            r.method,
            r.target
        );
        assert!(r.header("x-amz-security-token").is_some());
        assert!(r.outcome.is_ok(), "{:?}", r.outcome);
    }
}

/// Sends requests at a steady pace while STS is broken: 200 signed with the old credentials
/// while they are usable (never in their last 30 s), then 503. Returns the first 503.
async fn until_fail_closed(
    sidecar: &Sidecar,
    old: &sigv4_testbed::sts::Issued,
    bound: Duration,
) -> (Reply, usize) {
    let started = Instant::now();
    let mut ok = 0;
    loop {
        let sent_at = SystemTime::now();
        let t = Instant::now();
        let res = get(&sidecar.url("/during-outage")).await;
        match res.status {
            200 => {
                assert_eq!(
                    res.json()["access_key_id"],
                    old.credentials.access_key_id.as_str(),
                    "no new credentials were issued during the outage"
                );
                assert!(
                    sent_at + Duration::from_secs(30) < old.expiration,
                    "signed with credentials in their last 30 s"
                );
                assert!(
                    t.elapsed() < Duration::from_secs(2),
                    "the hot path waited for STS ({:?})",
                    t.elapsed()
                );
                ok += 1;
            }
            503 => return (res, ok),
            other => panic!("unexpected {other} during the outage: {:?}", res.body),
        }
        assert!(
            started.elapsed() < bound,
            "never failed closed; logs:\n{}",
            sidecar.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await; // a steady request rate
    }
}

/// The 503 and `/readyz` while no usable credentials are held, and nothing forwarded.
async fn assert_failed_closed(
    sidecar: &Sidecar,
    gw: &sigv4_testbed::gateway::Gateway,
    refused: &Reply,
) {
    assert_eq!(refused.sidecar_error(), Some("credentials_unavailable"));
    assert_eq!(refused.json()["error"], "credentials_unavailable");
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("Retry-After");
    assert!((1..=16).contains(&retry_after), "Retry-After {retry_after}");
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
    // Fail closed: nothing more reaches the upstream.
    let forwarded = gw.requests().len();
    for _ in 0..3 {
        let res = send("POST", &sidecar.url("/refused"), &[], "payload").await;
        assert_eq!(res.status, 503);
        assert_eq!(res.sidecar_error(), Some("credentials_unavailable"));
    }
    assert_eq!(
        gw.requests().len(),
        forwarded,
        "forwarded while failing closed"
    );
}

/// One STS fault from a healthy start: old credentials in use while usable, backoff, fail
/// closed, then recovery on the first good answer. `hint` must appear in the logged error.
async fn sts_fault_scenario(fault: Fault, hint: &str) {
    // 40 s credentials: usable for ~10 s (never in their last 30 s), refreshed after 1.5-9 s.
    let sts = sts(Duration::from_secs(40)).await;
    let mut gate = Gate::new(sts.addr()).await;
    let gw = gateway(&sts).await;
    let mut launch = Launch::new(&gw.url(), &sts).set("REFRESH_BEFORE_EXPIRY", "30s");
    launch.sts_endpoint = Some(gate.endpoint());
    let sidecar = ready_sidecar(launch).await;
    let old = sts.issued()[0].clone();
    let calls_before = sts.calls();

    let outage = Instant::now();
    match fault {
        Fault::Mode(mode) => sts.set_mode(mode),
        Fault::Refused => gate.close().await,
    }

    let (refused, ok) = until_fail_closed(&sidecar, &old, Duration::from_secs(25)).await;
    assert!(ok > 0, "the old credentials were used during the outage");
    assert_failed_closed(&sidecar, &gw, &refused).await;

    if fault == Fault::Mode(StsMode::Hang) {
        // A hanging STS is cut off by the SDK's timeouts (5 s an attempt, 15 s in all): the
        // refresh fails instead of waiting forever.
        sidecar.expect_log("credential refresh failed", Duration::from_secs(30));
    } else {
        assert!(
            sidecar.wait_for_count(
                |v| v["message"] == "credential refresh failed",
                2,
                Duration::from_secs(20)
            ),
            "{}",
            sidecar.logs()
        );
    }
    let failures = check_backoff(&sidecar, outage.elapsed(), sts.calls() - calls_before);
    let error = failures[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(hint),
        "logged error {error:?} lacks {hint:?}"
    );
    let failed_before_fix = failures.len();

    // Full recovery on the first good answer.
    let calls_at_switch = sts.calls();
    match fault {
        Fault::Mode(_) => sts.set_mode(StsMode::Ok),
        Fault::Refused => gate.open().await,
    }
    sidecar.expect_refreshes(2, Duration::from_secs(30));
    // One good answer is enough: STS answered once. A hanging STS is the exception: at the
    // switch it also answers every call still hanging, including calls the SDK already gave up
    // on (their answers go nowhere), so it may have issued up to one credential per call made
    // during the outage.
    let issued = sts.issued().len();
    let bound = match fault {
        Fault::Mode(StsMode::Hang) => 1 + calls_at_switch - calls_before,
        _ => 2,
    };
    assert!(
        (2..=bound).contains(&issued),
        "{issued} credentials issued after recovery (at most {bound})"
    );
    // At most one attempt that was already failing when STS came back.
    assert!(
        sidecar.count_logs(|v| v["message"] == "credential refresh failed")
            <= failed_before_fix + 1
    );
    let res = get(&sidecar.url("/after")).await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    assert_eq!(
        res.json()["access_key_id"],
        sts.issued()[issued - 1].credentials.access_key_id.as_str()
    );
    assert_eq!(get(&sidecar.admin_url("/readyz")).await.status, 200);
    assert_all_forwarded_requests_signed(&gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_throttling_backs_off_fails_closed_and_recovers() {
    sts_fault_scenario(Fault::Mode(StsMode::Throttling), "Throttling").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_malformed_xml_backs_off_fails_closed_and_recovers() {
    sts_fault_scenario(Fault::Mode(StsMode::MalformedXml), "error parsing XML").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_dropping_connections_backs_off_fails_closed_and_recovers() {
    sts_fault_scenario(
        Fault::Mode(StsMode::CloseConnection),
        "connection closed before message completed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_connection_refused_backs_off_fails_closed_and_recovers() {
    sts_fault_scenario(Fault::Refused, "Connection refused").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_hang_is_cut_by_sdk_timeouts_without_blocking_requests() {
    sts_fault_scenario(Fault::Mode(StsMode::Hang), "timeout").await;
}

/// STS answers 500 for longer than the credentials live: 503 throughout once they are unusable,
/// even after they expired outright; never a request with expired credentials; the backoff
/// grows towards its cap; recovery when STS answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_outage_longer_than_the_credential_lifetime() {
    let lifetime = Duration::from_secs(35);
    let (sts, gw, sidecar) = ready_stack(lifetime, |l| l.set("REFRESH_BEFORE_EXPIRY", "30s")).await;
    let old = sts.issued()[0].clone();
    let calls_before = sts.calls();
    let outage = Instant::now();
    sts.set_mode(StsMode::InternalError);

    let (refused, _) = until_fail_closed(&sidecar, &old, Duration::from_secs(15)).await;
    assert_failed_closed(&sidecar, &gw, &refused).await;
    let forwarded = gw.requests().len();

    // Keep the traffic going until the credentials expired outright (and a little more).
    let mut refused_count = 0;
    while SystemTime::now() < old.expiration + Duration::from_secs(3) {
        let res = get(&sidecar.url("/long-outage")).await;
        assert_eq!(res.status, 503, "{:?}", res.body);
        assert_eq!(res.sidecar_error(), Some("credentials_unavailable"));
        refused_count += 1;
        assert_eq!(get(&sidecar.admin_url("/readyz")).await.status, 503);
        tokio::time::sleep(Duration::from_millis(500)).await; // a steady request rate
    }
    assert_eq!(
        gw.requests().len(),
        forwarded,
        "nothing forwarded with expired credentials"
    );
    let failures = check_backoff(&sidecar, outage.elapsed(), sts.calls() - calls_before);
    let longest = failures
        .iter()
        .filter_map(|v| v["retry_in_ms"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(
        failures.len() >= 4 && longest >= 2_000,
        "backoff should have grown over {:?}: {} failures, longest wait {longest} ms",
        outage.elapsed(),
        failures.len()
    );
    assert!(failures[0]["error"]
        .as_str()
        .unwrap_or_default()
        .contains("InternalError"));
    let failed = metric(
        &sidecar,
        &format!(
            "sigv4_sidecar_credentials_refresh_total{{result=\"failure\",role_arn=\"{ROLE}\"}}"
        ),
    )
    .await;
    assert!(
        failed.is_some_and(|f| f >= failures.len() as f64),
        "failures counted: {failed:?}"
    );
    println!(
        "outage of {:?}: {refused_count} requests refused after expiry, {} refresh failures, {} STS calls, longest backoff {longest} ms",
        outage.elapsed(),
        failures.len(),
        sts.calls() - calls_before
    );

    sts.set_mode(StsMode::Ok);
    sidecar.expect_refreshes(2, Duration::from_secs(30));
    let res = get(&sidecar.url("/after")).await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    assert_ne!(
        res.json()["access_key_id"],
        old.credentials.access_key_id.as_str()
    );
    assert_eq!(get(&sidecar.admin_url("/readyz")).await.status, 200);
    assert_all_forwarded_requests_signed(&gw);
}

/// STS (or something on the way) answers 200 with a body cut off in the middle of the
/// credentials, then with one whose `Expiration` is garbage. Both are failed refreshes: the good
/// credentials already held stay in use while usable (never replaced by incomplete ones), the
/// retries back off, and the secrets and session tokens in the broken bodies appear neither in
/// the logs nor in the 503 bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_truncated_or_garbled_answers_are_failures_and_leak_nothing() {
    const GOOD_AKID: &str = "ASIAGOODANSWER000001";
    const LEAKS: [&str; 4] = [
        "truncatedSecretKey0123456789abcdefABCDEF",
        "IQoJtruncatedSessionToken0123456789",
        "garbledSecretKey0123456789abcdefABCDEFGH",
        "IQoJgarbledSessionToken0123456789",
    ];
    let good_expiry = SystemTime::now() + Duration::from_secs(40);
    let answer = move |n: usize| -> String {
        let creds = |akid: &str, secret: &str, token: &str| {
            format!("<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <AssumeRoleResult>\n    <Credentials>\n      <AccessKeyId>{akid}</AccessKeyId>\n      <SecretAccessKey>{secret}</SecretAccessKey>\n      <SessionToken>{token}")
        };
        let tail = |expiration: &str| {
            format!("</SessionToken>\n      <Expiration>{expiration}</Expiration>\n    </Credentials>\n  </AssumeRoleResult>\n</AssumeRoleResponse>\n")
        };
        match n {
            0 => {
                creds(
                    GOOD_AKID,
                    "goodSecretKey0123456789abcdefABCDEFGHIJ",
                    "IQoJgood",
                ) + &tail(&sigv4_testbed::sigv4::format_iso8601(good_expiry))
            }
            // Cut off inside the session token.
            1 | 2 => creds("ASIATRUNCATED0000001", LEAKS[0], LEAKS[1]),
            _ => creds("ASIAGARBLED000000001", LEAKS[2], LEAKS[3]) + &tail("tomorrow-ish"),
        }
    };
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let raw_sts = raw_upstream(move |mut s, _| {
        let counted = counted.clone();
        async move {
            while read_request(&mut s).await.is_some() {
                let xml = answer(counted.fetch_add(1, Ordering::SeqCst));
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/xml\r\ncontent-length: {}\r\n\r\n",
                    xml.len()
                );
                if s.write_all((head + &xml).as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    // The upstream answers with the access key that signed the request.
    let upstream = raw_upstream(|mut s, _| async move {
        while let Some(head) = read_request(&mut s).await {
            let akid = head
                .split("Credential=")
                .nth(1)
                .and_then(|c| c.split('/').next())
                .unwrap_or("unsigned")
                .to_string();
            let res = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{akid}",
                akid.len()
            );
            if s.write_all(res.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await;
    let sts = sts(Duration::from_secs(3600)).await;
    let mut launch =
        Launch::new(&format!("http://{upstream}/Prod"), &sts).set("REFRESH_BEFORE_EXPIRY", "30s");
    launch.sts_endpoint = Some(format!("http://{raw_sts}"));
    let sidecar = ready_sidecar(launch).await;

    let started = Instant::now();
    let mut bodies = String::new();
    let mut ok = 0;
    while sidecar.count_logs(|v| v["message"] == "credential refresh failed") < 3 {
        let sent_at = SystemTime::now();
        let res = get(&sidecar.url("/x")).await;
        match res.status {
            200 => {
                assert_eq!(
                    &res.body[..],
                    GOOD_AKID.as_bytes(),
                    "signed with the good credentials"
                );
                assert!(sent_at + Duration::from_secs(30) < good_expiry);
                ok += 1;
            }
            503 => {
                assert_eq!(res.sidecar_error(), Some("credentials_unavailable"));
                bodies.push_str(&String::from_utf8_lossy(&res.body));
            }
            other => panic!("unexpected {other}: {:?}", res.body),
        }
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "broken answers not reported as failures; logs:\n{}",
            sidecar.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await; // a steady request rate
    }
    assert!(ok > 0);
    assert_eq!(
        sidecar.count_logs(|v| v["message"] == "credentials refreshed"),
        1,
        "a broken answer was taken for fresh credentials"
    );
    check_backoff(
        &sidecar,
        started.elapsed(),
        calls.load(Ordering::SeqCst) - 1,
    );
    // Once the good credentials are unusable: 503, with the last error and no secret.
    let res = loop {
        let res = get(&sidecar.url("/x")).await;
        if res.status == 503 {
            break res;
        }
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "never failed closed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await; // a steady request rate
    };
    bodies.push_str(&String::from_utf8_lossy(&res.body));
    let logs = sidecar.logs();
    for secret in LEAKS {
        assert!(!bodies.contains(secret), "secret in a 503 body: {bodies}");
        assert!(!logs.contains(secret), "secret in the logs:\n{logs}");
    }
}

// ---------------------------------------------------------------------------------------------
// Base credentials rotating underneath: IRSA
// ---------------------------------------------------------------------------------------------

const IRSA_ROLE: &str = "arn:aws:iam::111111111111:role/irsa-base";

/// Replaces `path` atomically, as the kubelet does with a projected token.
fn replace_file(path: &Path, contents: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).expect("write token");
    std::fs::rename(&tmp, path).expect("rename token");
}

/// No static keys: the default chain reads a web-identity token file, calls
/// AssumeRoleWithWebIdentity, and the sidecar chains `sts:AssumeRole` on top. The token file is
/// replaced on disk; the next AssumeRoleWithWebIdentity carries the new token, and signing goes
/// on without a failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irsa_token_file_rotated_on_disk_is_used_on_the_next_refresh() {
    // Short-lived web-identity credentials: the SDK refreshes them 10-15 s before expiry, so
    // the token file is read again ~21-26 s after the first call.
    let sts = sts(Duration::from_secs(36)).await;
    let gw = gateway(&sts).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    replace_file(&token, "eyJ.token-one.sig");
    let token_path = token.to_str().expect("utf-8 path").to_string();
    let sidecar = Launch::new(&gw.url(), &sts)
        .set("REFRESH_BEFORE_EXPIRY", "30s")
        .start_with_env(&[
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", &token_path),
            ("AWS_ROLE_ARN", IRSA_ROLE),
            ("AWS_ROLE_SESSION_NAME", "irsa-test"),
        ]);
    sidecar.expect_refreshes(1, Duration::from_secs(20));
    let issued = sts.issued();
    let web = issued
        .iter()
        .find(|i| i.via == "AssumeRoleWithWebIdentity")
        .expect("the default chain used the token file");
    assert_eq!(web.role_arn, IRSA_ROLE);
    assert_eq!(web.web_identity_token.as_deref(), Some("eyJ.token-one.sig"));
    let chained = issued
        .iter()
        .find(|i| i.via == "AssumeRole")
        .expect("chained AssumeRole");
    assert_eq!(chained.role_arn, ROLE);
    assert_eq!(
        chained.signed_with.as_deref(),
        Some(web.credentials.access_key_id.as_str()),
        "AssumeRole signed with the web-identity credentials"
    );

    // The kubelet rotates the projected token.
    replace_file(&token, "eyJ.token-two.sig");

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = 0;
    let new_web = loop {
        let res = get(&sidecar.url("/irsa")).await;
        assert_eq!(res.status, 200, "request {sent} failed: {:?}", res.body);
        sent += 1;
        let akid = res.json()["access_key_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let role_creds = sts.lookup(&akid).expect("issued by the emulator");
        assert_eq!(role_creds.role_arn, ROLE);
        let signer = role_creds.signed_with.clone().unwrap_or_default();
        let web = sts
            .lookup(&signer)
            .expect("signed with web-identity credentials");
        if web.web_identity_token.as_deref() == Some("eyJ.token-two.sig") {
            break web;
        }
        assert!(
            Instant::now() < deadline,
            "the new token was never used; issued: {:?}",
            sts.issued()
                .iter()
                .map(|i| (i.via, i.web_identity_token.clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await; // a steady request rate
    };
    assert_eq!(new_web.role_arn, IRSA_ROLE);
    // Once rotated, the old token is never sent again.
    let all = sts.issued();
    let first_new = all
        .iter()
        .position(|i| i.web_identity_token.as_deref() == Some("eyJ.token-two.sig"))
        .expect("new token");
    assert!(all[first_new..]
        .iter()
        .all(|i| i.web_identity_token.as_deref() != Some("eyJ.token-one.sig")));
    println!(
        "IRSA: {sent} requests, {} web-identity and {} AssumeRole calls",
        all.iter()
            .filter(|i| i.via == "AssumeRoleWithWebIdentity")
            .count(),
        all.iter().filter(|i| i.via == "AssumeRole").count()
    );
    assert_all_forwarded_requests_signed(&gw);
}

// ---------------------------------------------------------------------------------------------
// Upstream faults
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_before_the_response_headers_is_502() {
    let (addr, mut heads) = scripted_upstream(|s, head| async move {
        // SO_LINGER 0: close with RST.
        let _ = s.set_zero_linger();
        head
    })
    .await;
    let (_sts, sidecar) = raw_sidecar(addr, &[]).await;
    let res = get(&sidecar.url("/reset")).await;
    res.assert_sidecar(502, "upstream_unreachable");
    let head = heads
        .recv()
        .await
        .expect("the request reached the upstream");
    assert!(
        head.to_ascii_lowercase()
            .contains("authorization: aws4-hmac-sha256"),
        "{head}"
    );
    assert_inflight_returns_to_zero(&sidecar).await;
}

/// The upstream sends the headers and part of the body, then resets the connection. The client
/// must see an incomplete answer (fewer bytes than Content-Length, or no terminating chunk) and
/// a closed connection, never a clean short 200.
async fn truncated_body(chunked: bool) {
    let (reset_tx, reset_rx) = watch::channel(false);
    let (addr, _) = scripted_upstream(move |mut s, _| {
        let mut reset = reset_rx.clone();
        async move {
            let mut out = Vec::new();
            if chunked {
                out.extend_from_slice(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
                out.extend_from_slice(b"2710\r\n");
                out.extend_from_slice(&[b'a'; 10_000]);
                out.extend_from_slice(b"\r\n");
            } else {
                out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n");
                out.extend_from_slice(&[b'a'; 10_000]);
            }
            let _ = s.write_all(&out).await;
            let _ = s.flush().await;
            // Reset once the client has seen the first part.
            let _ = reset.wait_for(|r| *r).await;
            let _ = s.set_zero_linger();
        }
    })
    .await;
    let (_sts, sidecar) = raw_sidecar(addr, &[]).await;

    let mut app = app_get(sidecar.proxy, "/truncated").await;
    let (mut got, head_end) = read_past_head(&mut app, 100).await;
    reset_tx.send_replace(true);
    // The sidecar must close the connection: read to EOF (or a reset), not to a timeout.
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), app.read(&mut buf)).await {
            Err(_) => panic!(
                "connection left open after the upstream broke; got {} bytes",
                got.len()
            ),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    let body = &got[head_end..];
    assert!(head.starts_with("http/1.1 200"), "{head}");
    if chunked {
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        assert!(
            !body.ends_with(b"0\r\n\r\n"),
            "a terminating chunk made the truncated body look complete"
        );
    } else {
        assert!(head.contains("content-length: 100000"), "{head}");
        assert!(
            body.len() < 100_000,
            "{} bytes of a declared 100000",
            body.len()
        );
    }
    let line = sidecar.access_line("/truncated");
    assert_eq!(
        line["outcome"], "upstream_truncated",
        "access log records the truncation: {line}"
    );
    assert_inflight_returns_to_zero(&sidecar).await;
    // And hyper's client, as an app would use it, sees an error, not a complete body.
    let res = client()
        .get(sidecar.url("/truncated").parse().expect("uri"))
        .await;
    // The upstream resets at once this time (the watch is already true): a 502 if the reset
    // came before the headers were read, else a 200 whose body fails.
    if let Some(res) = res.ok().filter(|r| r.status() == 200) {
        use http_body_util::BodyExt;
        assert!(
            res.into_body().collect().await.is_err(),
            "a truncated body was delivered as complete"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_mid_body_with_content_length_is_an_honest_truncation() {
    truncated_body(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_mid_chunked_body_sends_no_terminating_chunk() {
    truncated_body(true).await;
}

/// An upstream that accepts the request and never answers: 504 at `request_timeout`, and the
/// sidecar closes that upstream connection rather than leaving the exchange open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_stalled_past_request_timeout_is_504_and_the_exchange_is_abandoned() {
    let (addr, mut closed) = scripted_upstream(|mut s, _| async move {
        // Answer nothing; report when the sidecar closes the connection.
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        Instant::now()
    })
    .await;
    let (_sts, sidecar) = raw_sidecar(addr, &[("REQUEST_TIMEOUT", "1s")]).await;
    let started = Instant::now();
    let res = get(&sidecar.url("/stall")).await;
    let answered = started.elapsed();
    res.assert_sidecar(504, "upstream_timeout");
    assert!(
        answered >= Duration::from_secs(1) && answered < Duration::from_secs(4),
        "answered after {answered:?}"
    );
    let closed_at = tokio::time::timeout(Duration::from_secs(5), closed.recv())
        .await
        .expect("the sidecar closed the stalled upstream connection")
        .expect("closed");
    assert!(closed_at.duration_since(started) < Duration::from_secs(5));
    assert_inflight_returns_to_zero(&sidecar).await;
}

// ---- HTTP/2 GOAWAY: a TLS upstream that speaks h2 (the sidecar uses h2 only by ALPN) ----

/// A TLS acceptor offering only h2, with a certificate for 127.0.0.1 from a fresh CA written to
/// `dir` (for `ca_file`).
fn h2_tls(dir: &Path) -> (tokio_rustls::TlsAcceptor, PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "faults test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().expect("ca key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let ca_path = dir.join("h2-ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).expect("write ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let mut leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("leaf params");
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).expect("leaf");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("tls versions")
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .expect("cert");
    config.alpn_protocols = vec![b"h2".to_vec()];
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca_path)
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum GoAway {
    /// GOAWAY on the first request, which is still answered (a server rolling its connections).
    Graceful,
    /// GOAWAY with INTERNAL_ERROR while the first request waits for its answer.
    Abrupt,
}

/// What the h2 upstream saw: (connection index, request path, signed?) per request, and a
/// connection index when that connection ended.
#[derive(Debug)]
enum H2Event {
    Request(usize, String, bool),
    Closed(usize),
}

async fn h2_upstream(
    kind: GoAway,
    dir: &Path,
) -> (SocketAddr, PathBuf, mpsc::UnboundedReceiver<H2Event>) {
    let (acceptor, ca) = h2_tls(dir);
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = raw_upstream(move |tcp, n| {
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let Ok(mut conn) = h2::server::handshake(tls).await else {
                return;
            };
            let mut held = Vec::new();
            while let Some(Ok((req, mut respond))) = conn.accept().await {
                let signed = req.headers().contains_key("authorization")
                    && req.version() == http::Version::HTTP_2;
                let _ = tx.send(H2Event::Request(n, req.uri().path().to_string(), signed));
                if n == 0 && held.is_empty() && kind == GoAway::Abrupt {
                    conn.abrupt_shutdown(h2::Reason::INTERNAL_ERROR);
                    held.push(respond); // never answered
                    continue;
                }
                if n == 0 && kind == GoAway::Graceful {
                    conn.graceful_shutdown();
                }
                let res = http::Response::builder()
                    .status(200)
                    .header("content-type", "text/plain")
                    .body(())
                    .expect("response");
                if let Ok(mut body) = respond.send_response(res, false) {
                    let _ = body.send_data(bytes::Bytes::from(format!("conn {n}")), true);
                }
            }
            drop(held);
            let _ = tx.send(H2Event::Closed(n));
        }
    })
    .await;
    (addr, ca, rx)
}

async fn next_request(rx: &mut mpsc::UnboundedReceiver<H2Event>) -> (usize, String, bool) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(H2Event::Request(n, path, signed))) => return (n, path, signed),
            Ok(Some(H2Event::Closed(_))) => continue,
            other => panic!("no request at the h2 upstream: {other:?}"),
        }
    }
}

async fn wait_closed(rx: &mut mpsc::UnboundedReceiver<H2Event>, conn: usize) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(H2Event::Closed(n))) if n == conn => return,
            Ok(Some(_)) => continue,
            other => panic!("h2 connection {conn} never closed: {other:?}"),
        }
    }
}

/// An h2 upstream sending `kind` of GOAWAY, and a ready sidecar trusting its CA.
struct H2Stack {
    sidecar: Sidecar,
    events: mpsc::UnboundedReceiver<H2Event>,
    _sts: StsEmulator,
    _dir: tempfile::TempDir,
}

async fn h2_stack(kind: GoAway) -> H2Stack {
    let sts = sts(Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, ca, events) = h2_upstream(kind, dir.path()).await;
    let sidecar = ready_sidecar(
        Launch::new(&format!("https://{addr}/Prod"), &sts)
            .set("CA_FILE", ca.to_str().expect("utf-8 path")),
    )
    .await;
    H2Stack {
        sidecar,
        events,
        _sts: sts,
        _dir: dir,
    }
}

impl H2Stack {
    /// Asserts the first request reached the upstream signed, over h2, on connection 0 (at
    /// `target`), and that connection 0 then closed.
    async fn assert_first_connection_served_and_closed(&mut self, target: &str) {
        let (conn, path, signed) = next_request(&mut self.events).await;
        assert_eq!((conn, path.as_str(), signed), (0, target, true));
        wait_closed(&mut self.events, 0).await;
    }

    /// GETs `path` and asserts the upstream answered it on its connection `conn`.
    async fn assert_served_on(&self, path: &str, conn: usize) {
        let res = get(&self.sidecar.url(path)).await;
        assert_eq!(res.status, 200, "{path}: {:?}", res.body);
        assert_eq!(
            &res.body[..],
            format!("conn {conn}").as_bytes(),
            "{path} on connection {conn}"
        );
    }
}

/// A graceful GOAWAY (the upstream rolls its connection): the request it came with is answered,
/// and later requests go over a new connection without a single failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_h2_graceful_goaway_loses_no_request() {
    let mut h2 = h2_stack(GoAway::Graceful).await;
    h2.assert_served_on("/first", 0).await;
    h2.assert_first_connection_served_and_closed("/Prod/first")
        .await;
    for i in 0..5 {
        // After the GOAWAY, on a new connection.
        h2.assert_served_on(&format!("/after-goaway/{i}"), 1).await;
    }
    assert_inflight_returns_to_zero(&h2.sidecar).await;
}

/// An abrupt GOAWAY (INTERNAL_ERROR) while a request waits for its answer: 502
/// `upstream_unreachable`, and the next request is served over a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_h2_abrupt_goaway_is_502_then_a_new_connection_serves() {
    let mut h2 = h2_stack(GoAway::Abrupt).await;
    let res = get(&h2.sidecar.url("/doomed")).await;
    res.assert_sidecar(502, "upstream_unreachable");
    h2.assert_first_connection_served_and_closed("/Prod/doomed")
        .await;
    h2.assert_served_on("/next", 1).await;
    assert_inflight_returns_to_zero(&h2.sidecar).await;
}

// ---------------------------------------------------------------------------------------------
// Clients that go away
// ---------------------------------------------------------------------------------------------

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
