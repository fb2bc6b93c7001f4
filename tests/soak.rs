//! A bounded soak: a steady request rate (mixed GET and POST with small bodies, several
//! keep-alive clients) for `SOAK_SECS` seconds (default 15, enough for two rotations; the README's numbers are
//! from `SOAK_SECS=60`) while credentials rotate every few
//! seconds (40 s lifetime, `refresh_before_expiry = 30s`).
//!
//! Expected: zero failed requests, zero signature rejections at the independent verifier, a
//! rotation every ~2.5-10 s, resident memory flat after warm-up (growth under `RSS_BOUND_KIB`
//! between 25 % of the run and its end) and no file-descriptor growth (at most `FD_SLACK` more
//! descriptors, for pooled connections). `cargo test --release --test soak -- --nocapture`
//! prints the measured numbers.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};

/// Allowed RSS growth of the sidecar between 25 % of the run and its end.
const RSS_BOUND_KIB: u64 = 4 * 1024;
/// Allowed growth in open file descriptors over the same span.
const FD_SLACK: usize = 8;
/// Concurrent clients and the rate of each: 4 x 50 = 200 requests a second.
const CLIENTS: usize = 4;
const PER_CLIENT_INTERVAL: Duration = Duration::from_millis(20);

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    get: AtomicU64,
    post: AtomicU64,
    max_latency_us: AtomicU64,
    first_failures: Mutex<Vec<String>>,
    keys: Mutex<BTreeSet<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_failures.lock().expect("lock");
        if first.len() < 10 {
            first.push(what);
        }
    }
}

async fn one_request(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    base: &str,
    c: usize,
    i: u64,
    tally: &Tally,
) {
    let post = fastrand::bool();
    let body: Bytes = if post {
        (0..fastrand::usize(0..2048))
            .map(|_| fastrand::alphanumeric() as u8)
            .collect::<Vec<u8>>()
            .into()
    } else {
        Bytes::new()
    };
    let want_sha = sigv4_testbed::sigv4::sha256_hex(&body);
    let req = http::Request::builder()
        .method(if post { "POST" } else { "GET" })
        .uri(format!("{base}/soak/{c}/{i}?n={i}&c={c}"))
        .header("content-type", "text/plain")
        .body(Full::new(body))
        .expect("request");
    let started = Instant::now();
    let res = match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
        Ok(Ok(res)) => res,
        Ok(Err(e)) => return tally.fail(format!("client {c} #{i}: {e:?}")),
        Err(_) => return tally.fail(format!("client {c} #{i}: no answer in 10 s")),
    };
    let status = res.status();
    let body = match res.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return tally.fail(format!("client {c} #{i}: body: {e:?}")),
    };
    let latency = started.elapsed().as_micros() as u64;
    tally.max_latency_us.fetch_max(latency, Ordering::Relaxed);
    if status != 200 {
        return tally.fail(format!(
            "client {c} #{i}: {status} {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let echo: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return tally.fail(format!("client {c} #{i}: not JSON: {e}")),
    };
    if echo["body_sha256"] != want_sha.as_str() {
        return tally.fail(format!("client {c} #{i}: body changed on the way"));
    }
    if let Some(k) = echo["access_key_id"].as_str() {
        let mut keys = tally.keys.lock().expect("lock");
        if !keys.contains(k) {
            keys.insert(k.to_string());
        }
    }
    tally.ok.fetch_add(1, Ordering::Relaxed);
    if post {
        tally.post.fetch_add(1, Ordering::Relaxed);
    } else {
        tally.get.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn steady_load_with_rotating_credentials() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15)
        .max(15);
    let run = Duration::from_secs(secs);
    let (sts, gw, sidecar) = ready_stack(Duration::from_secs(40), |l| {
        l.set("REFRESH_BEFORE_EXPIRY", "30s")
    })
    .await;
    let pid = sidecar.pid();
    let base = format!("http://{}", sidecar.proxy);
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let stop_at = started + run;

    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let tally = tally.clone();
        let base = base.clone();
        clients.push(tokio::spawn(async move {
            // One keep-alive client each, like an app's HTTP client.
            let client = client();
            let mut tick = tokio::time::interval(PER_CLIENT_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut i = 0;
            while Instant::now() < stop_at {
                tick.tick().await;
                one_request(&client, &base, c, i, &tally).await;
                i += 1;
            }
        }));
    }

    // Warm-up sample at 25 % of the run, final one at the end (a schedule, not a wait).
    tokio::time::sleep(run / 4).await;
    let (rss_warm, fds_warm) = (rss_kib(pid), fd_count(pid));
    let ok_warm = tally.ok.load(Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }
    let elapsed = started.elapsed();
    let (rss_end, fds_end) = (rss_kib(pid), fd_count(pid));

    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let keys = tally.keys.lock().expect("lock").len();
    let issued = sts.issued().len();
    let refreshes = sidecar.count_logs(|v| v["message"] == "credentials refreshed");
    let rate = ok as f64 / elapsed.as_secs_f64();
    println!(
        "soak {elapsed:.1?}: {} requests ok ({} GET, {} POST), {failed} failed, {rate:.0} req/s, max latency {:.1} ms",
        ok,
        tally.get.load(Ordering::Relaxed),
        tally.post.load(Ordering::Relaxed),
        tally.max_latency_us.load(Ordering::Relaxed) as f64 / 1000.0
    );
    println!(
        "soak rotations: {keys} distinct access keys in answers, {issued} credentials issued by STS, {refreshes} refreshes logged, {} rejected by the verifier",
        gw.rejected()
    );
    println!(
        "soak RSS: {rss_warm} KiB at 25 % ({ok_warm} requests), {rss_end} KiB at the end: {:+} KiB (bound {RSS_BOUND_KIB} KiB)",
        rss_end as i64 - rss_warm as i64
    );
    println!("soak fds: {fds_warm} at 25 %, {fds_end} at the end (slack {FD_SLACK})");

    assert_eq!(
        failed,
        0,
        "failed requests: {:?}",
        tally.first_failures.lock().expect("lock")
    );
    assert_eq!(gw.rejected(), 0, "signature rejections at the verifier");
    assert!(
        rate >= 150.0,
        "the soak did not hold its rate: {rate:.0} req/s"
    );
    // A new set at least every ~10 s (lifetime 40 s, refreshed 30-37.5 s before expiry).
    let want = (secs / 12).max(2) as usize;
    assert!(
        keys >= want && issued >= want,
        "{keys} access keys used, {issued} issued in {secs} s: want at least {want} rotations"
    );
    assert!(
        rss_end <= rss_warm + RSS_BOUND_KIB,
        "RSS grew from {rss_warm} KiB to {rss_end} KiB after warm-up (bound {RSS_BOUND_KIB} KiB)"
    );
    assert!(
        fds_end <= fds_warm + FD_SLACK,
        "open fds grew from {fds_warm} to {fds_end} (slack {FD_SLACK})"
    );
    assert_eq!(
        inflight(&sidecar).await,
        Some(0.0),
        "nothing left in flight"
    );
}
