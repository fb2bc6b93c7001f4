//! What the fault and soak tests observe from outside the process: series of the Prometheus
//! scrape on the admin port, and the process's memory and file descriptors in /proc.

use std::time::{Duration, Instant};

use super::{get, Sidecar};

/// The in-flight gauge of the default route.
const INFLIGHT: &str = "sigv4_sidecar_inflight_requests{route=\"default\"}";

/// The value of one exact series (`name{labels}`) in a Prometheus scrape of the admin port.
pub async fn metric(sidecar: &Sidecar, series: &str) -> Option<f64> {
    let scrape = get(&sidecar.admin_url("/metrics")).await;
    let text = String::from_utf8_lossy(&scrape.body).into_owned();
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// `sigv4_sidecar_inflight_requests{route="default"}`.
pub async fn inflight(sidecar: &Sidecar) -> Option<f64> {
    metric(sidecar, INFLIGHT).await
}

/// Polls a metric (an observable, not a blind wait) until `pred` holds; returns the last value.
pub async fn wait_metric(
    sidecar: &Sidecar,
    series: &str,
    pred: impl Fn(f64) -> bool,
    timeout: Duration,
) -> Result<f64, Option<f64>> {
    let deadline = Instant::now() + timeout;
    loop {
        let v = metric(sidecar, series).await;
        if v.is_some_and(&pred) {
            return Ok(v.unwrap_or_default());
        }
        if Instant::now() >= deadline {
            return Err(v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts the default route's in-flight gauge reaches `n` within 10 s.
pub async fn assert_inflight_reaches(sidecar: &Sidecar, n: f64) {
    let r = wait_metric(sidecar, INFLIGHT, |v| v == n, Duration::from_secs(10)).await;
    assert!(r.is_ok(), "inflight never {n}, last {r:?}");
}

/// Waits until the request is no longer counted in flight.
pub async fn assert_inflight_returns_to_zero(sidecar: &Sidecar) {
    assert_inflight_reaches(sidecar, 0.0).await;
}

/// Resident set size of a process, in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: i32) -> u64 {
    proc_status_kib(pid, "VmRSS")
}

/// A KiB field of /proc/PID/status: `VmRSS` (resident now), `VmHWM` (peak resident), ...
pub fn proc_status_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// Open file descriptors of a process (entries of /proc/PID/fd).
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("proc fd")
        .count()
}
