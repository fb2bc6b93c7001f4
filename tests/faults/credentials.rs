//! Credential faults: STS throttling, 500s, hangs, refusals, malformed or truncated answers and
//! an outage longer than the credential lifetime; base credentials rotating underneath (IRSA).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::common::*;
use sigv4_testbed::sts::StsMode;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
        res.assert_sidecar(503, "credentials_unavailable");
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
        res.assert_sidecar(503, "credentials_unavailable");
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
