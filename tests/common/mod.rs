//! Shared harness for the integration tests: the real `sigv4-sidecar` binary started as a child
//! process on loopback, next to the testbed's STS emulator and API Gateway stand-in.
//!
//! Readiness is never guessed with sleeps: the harness reads the sidecar's own log lines
//! ("proxy listening", "credentials refreshed") and the testbed's counters.

#![allow(dead_code)] // each test file uses a different part of the harness

pub mod wire;

use std::collections::HashMap;
use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sigv4_testbed::gateway::{Backend, Gateway, GatewayConfig};
use sigv4_testbed::sigv4::Credentials;
use sigv4_testbed::sts::{StsConfig, StsEmulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const REGION: &str = "us-east-1";
pub const ROLE: &str = "arn:aws:iam::111111111111:role/sidecar-caller";
pub const BASE_AKID: &str = "AKIDBASETEST00000001";
pub const BASE_SECRET: &str = "base-secret-key-never-logged-0123456789";

/// The base credentials the sidecar finds in its environment.
pub fn base_credentials() -> Credentials {
    Credentials {
        access_key_id: BASE_AKID.into(),
        secret_access_key: BASE_SECRET.into(),
        session_token: None,
    }
}

/// An STS emulator whose credentials live `lifetime`.
pub async fn sts(lifetime: Duration) -> StsEmulator {
    let mut cfg = StsConfig::new(base_credentials());
    cfg.lifetime = lifetime;
    StsEmulator::start(cfg).await.expect("sts emulator starts")
}

/// An echoing API Gateway stand-in that accepts only `ROLE`.
pub async fn gateway(sts: &StsEmulator) -> Gateway {
    gateway_with(sts, Backend::Echo, false).await
}

pub async fn gateway_with(sts: &StsEmulator, backend: Backend, tls: bool) -> Gateway {
    Gateway::start(GatewayConfig {
        region: REGION.into(),
        service: "execute-api".into(),
        stage: "Prod".into(),
        sts: sts.clone(),
        allowed_roles: Some(vec![ROLE.into()]),
        backend,
        tls,
    })
    .await
    .expect("gateway starts")
}

/// A running sidecar process.
pub struct Sidecar {
    child: Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    logs: Arc<(Mutex<Vec<String>>, Condvar)>,
}

/// Settings for one sidecar start; `env` are `SIGV4_SIDECAR_*` keys without the prefix.
pub struct Launch {
    pub env: Vec<(String, String)>,
    pub config_file: Option<String>,
    pub sts_endpoint: Option<String>,
    /// Run the process on CPU 0 only (`taskset`), as in a pod limited to one core.
    pub one_cpu: bool,
}

impl Launch {
    /// A sidecar for `upstream`, assuming `ROLE` through `sts`.
    pub fn new(upstream: &str, sts: &StsEmulator) -> Self {
        Launch {
            env: vec![
                ("UPSTREAM".into(), upstream.into()),
                ("REGION".into(), REGION.into()),
                ("SERVICE".into(), "execute-api".into()),
                ("ROLE_ARN".into(), ROLE.into()),
                ("ROLE_SESSION_NAME".into(), "integration-test".into()),
                ("LISTEN".into(), "127.0.0.1:0".into()),
                ("ADMIN_LISTEN".into(), "127.0.0.1:0".into()),
            ],
            config_file: None,
            sts_endpoint: Some(sts.endpoint()),
            one_cpu: false,
        }
    }

    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn unset(mut self, key: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self
    }

    pub fn start(self) -> Sidecar {
        Sidecar::start(self, &[])
    }

    pub fn start_with_env(self, extra: &[(&str, &str)]) -> Sidecar {
        Sidecar::start(self, extra)
    }
}

impl Sidecar {
    fn start(launch: Launch, extra: &[(&str, &str)]) -> Sidecar {
        let bin = env!("CARGO_BIN_EXE_sigv4-sidecar");
        let mut cmd = if launch.one_cpu {
            let mut c = Command::new("taskset");
            c.args(["--cpu-list", "0", bin]);
            c
        } else {
            Command::new(bin)
        };
        // A clean environment: nothing from the developer's AWS setup leaks into a test, and
        // nothing ever reaches instance metadata or a real AWS endpoint.
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_ACCESS_KEY_ID", BASE_AKID)
            .env("AWS_SECRET_ACCESS_KEY", BASE_SECRET)
            .env("AWS_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/aws-credentials",
            )
            .env("SIGV4_SIDECAR_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(ep) = &launch.sts_endpoint {
            cmd.env("AWS_ENDPOINT_URL_STS", ep);
        }
        for (k, v) in &launch.env {
            cmd.env(format!("SIGV4_SIDECAR_{k}"), v);
        }
        if let Some(path) = &launch.config_file {
            cmd.arg("--config").arg(path);
        }
        for (k, v) in extra {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let mut child = cmd.spawn().expect("sidecar binary starts");
        let logs: Arc<(Mutex<Vec<String>>, Condvar)> = Arc::default();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let (lock, cv) = &*logs;
                    lock.lock().expect("log lock").push(line);
                    cv.notify_all();
                }
            });
        }
        let mut sidecar = Sidecar {
            child,
            proxy: "0.0.0.0:0".parse().expect("addr"),
            admin: "0.0.0.0:0".parse().expect("addr"),
            logs,
        };
        let admin = sidecar
            .wait_for_log(
                |v| v["message"] == "admin listening",
                Duration::from_secs(20),
            )
            .unwrap_or_else(|| panic!("sidecar did not start; logs:\n{}", sidecar.logs()));
        sidecar.admin = admin["addr"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("admin addr");
        let proxy = sidecar
            .wait_for_log(
                |v| v["message"] == "proxy listening" && v["route"] == "default",
                Duration::from_secs(20),
            )
            .unwrap_or_else(|| panic!("proxy not listening; logs:\n{}", sidecar.logs()));
        sidecar.proxy = proxy["addr"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("proxy addr");
        sidecar
    }

    /// The listen address of a named route, from its log line.
    pub fn route_addr(&self, route: &str) -> SocketAddr {
        self.wait_for_log(
            |v| v["message"] == "proxy listening" && v["route"] == route,
            Duration::from_secs(10),
        )
        .and_then(|v| v["addr"].as_str().and_then(|a| a.parse().ok()))
        .unwrap_or_else(|| panic!("route {route} not listening; logs:\n{}", self.logs()))
    }

    /// Waits until a JSON log line matches `pred`; returns it.
    pub fn wait_for_log(
        &self,
        pred: impl Fn(&serde_json::Value) -> bool,
        timeout: Duration,
    ) -> Option<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.logs;
        let mut lines = lock.lock().expect("log lock");
        let mut seen = 0;
        loop {
            for line in &lines[seen..] {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                    if pred(&v) {
                        return Some(v);
                    }
                }
            }
            seen = lines.len();
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            lines = cv.wait_timeout(lines, deadline - now).expect("log lock").0;
        }
    }

    /// Counts log lines matching `pred`.
    pub fn count_logs(&self, pred: impl Fn(&serde_json::Value) -> bool) -> usize {
        let lines = self.logs.0.lock().expect("log lock");
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| pred(v))
            .count()
    }

    /// Waits until at least `n` JSON log lines match `pred`.
    pub fn wait_for_count(
        &self,
        pred: impl Fn(&serde_json::Value) -> bool,
        n: usize,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.logs;
        let mut lines = lock.lock().expect("log lock");
        let mut seen = 0;
        let mut count = 0;
        loop {
            count += lines[seen..]
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| pred(v))
                .count();
            seen = lines.len();
            if count >= n {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            lines = cv.wait_timeout(lines, deadline - now).expect("log lock").0;
        }
    }

    /// Waits for the `n`-th "credentials refreshed" line.
    pub fn wait_for_refreshes(&self, n: usize, timeout: Duration) -> bool {
        self.wait_for_count(|v| v["message"] == "credentials refreshed", n, timeout)
    }

    /// Asserts the `n`-th "credentials refreshed" line arrives within `timeout`.
    #[track_caller]
    pub fn expect_refreshes(&self, n: usize, timeout: Duration) {
        assert!(
            self.wait_for_refreshes(n, timeout),
            "fewer than {n} credential refreshes within {timeout:?}; logs:\n{}",
            self.logs()
        );
    }

    /// Asserts a log line with this `message` arrives within `timeout`; returns it.
    #[track_caller]
    pub fn expect_log(&self, message: &str, timeout: Duration) -> serde_json::Value {
        self.wait_for_log(|v| v["message"] == message, timeout)
            .unwrap_or_else(|| {
                panic!(
                    "no {message:?} log line within {timeout:?}; logs:\n{}",
                    self.logs()
                )
            })
    }

    /// Everything the process printed so far.
    pub fn logs(&self) -> String {
        self.logs.0.lock().expect("log lock").join("\n")
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.proxy, path_and_query)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc_kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
pub const SIGTERM: i32 = 15;

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A simple response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts this is one of the sidecar's own answers: status, code header, JSON body.
    #[track_caller]
    pub fn assert_sidecar(&self, status: u16, code: &str) {
        assert_eq!(
            self.status,
            status,
            "{:?}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.sidecar_error(), Some(code));
        assert_eq!(self.json()["error"], code);
        assert!(self.json()["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }

    /// The sidecar's own error code, if it produced this answer.
    pub fn sidecar_error(&self) -> Option<&str> {
        self.headers
            .get("x-sigv4-sidecar-error")
            .and_then(|v| v.to_str().ok())
    }

    /// For an echo answer: the headers the upstream received, lower-cased names.
    pub fn echoed_headers(&self) -> HashMap<String, Vec<String>> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for pair in self.json()["headers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let name = pair[0].as_str().unwrap_or_default().to_ascii_lowercase();
            out.entry(name)
                .or_default()
                .push(pair[1].as_str().unwrap_or_default().to_string());
        }
        out
    }
}

/// A plain HTTP/1.1 client (no pooling surprises between tests).
pub fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request and reads the whole answer.
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into())).expect("request");
    let res = client()
        .request(req)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e:?}"));
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

pub async fn get(url: &str) -> Reply {
    send("GET", url, &[], Bytes::new()).await
}

/// Writes raw bytes to `addr` and reads until the peer closes or `timeout` passes.
pub async fn raw(addr: SocketAddr, request: &[u8], timeout: Duration) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in a raw HTTP/1.1 answer.
pub fn raw_status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

/// Polls `url` until it answers `status` (a readiness endpoint is the signal here).
pub async fn wait_status(url: &str, status: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Ok(res)) = tokio::time::timeout(
            Duration::from_secs(2),
            client().get(url.parse().expect("uri")),
        )
        .await
        {
            if res.status().as_u16() == status {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The usual stack: an STS emulator whose credentials live `lifetime`, an echoing gateway, and
/// a sidecar for it (`configure` adjusts the launch), started and ready.
pub async fn ready_stack(
    lifetime: Duration,
    configure: impl FnOnce(Launch) -> Launch,
) -> (StsEmulator, Gateway, Sidecar) {
    let sts = sts(lifetime).await;
    let gw = gateway(&sts).await;
    let sidecar = ready_sidecar(configure(Launch::new(&gw.url(), &sts))).await;
    (sts, gw, sidecar)
}

/// Starts a sidecar and waits until its first credentials arrived and `/readyz` says so.
pub async fn ready_sidecar(launch: Launch) -> Sidecar {
    let s = launch.start();
    s.expect_refreshes(1, Duration::from_secs(20));
    let ready = get(&s.admin_url("/readyz")).await;
    assert_eq!(ready.status, 200, "{:?}", ready.body);
    s
}

// ---- Helpers for the fault and soak tests (tests/faults.rs, tests/soak.rs) ----

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
    metric(
        sidecar,
        "sigv4_sidecar_inflight_requests{route=\"default\"}",
    )
    .await
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

/// A loopback port nobody listens on (bound, noted, closed).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
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

/// Reads an HTTP/1.1 request head (and a `Content-Length` body) from a raw stream; `None` if
/// the peer closed first.
pub async fn read_request<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < len {
        let n = s.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        have += n;
    }
    Some(head)
}

impl Sidecar {
    /// Every JSON log line so far that matches `pred`.
    pub fn collect_logs(
        &self,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let lines = self.logs.0.lock().expect("log lock");
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| pred(v))
            .collect()
    }
}

/// A hand-made upstream on 127.0.0.1: `serve` runs for every accepted connection (with its
/// index). Lives until the test's runtime ends.
pub async fn raw_upstream<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, n));
            n += 1;
        }
    });
    addr
}

/// A ready sidecar in front of a hand-made upstream at `addr` (`extra`: settings).
pub async fn raw_sidecar(addr: SocketAddr, sts: &StsEmulator, extra: &[(&str, &str)]) -> Sidecar {
    let mut launch = Launch::new(&format!("http://{addr}/Prod"), sts);
    for (k, v) in extra {
        launch = launch.set(k, v);
    }
    ready_sidecar(launch).await
}

/// Waits until the request is no longer counted in flight.
pub async fn assert_inflight_returns_to_zero(sidecar: &Sidecar) {
    let r = wait_metric(
        sidecar,
        "sigv4_sidecar_inflight_requests{route=\"default\"}",
        |v| v == 0.0,
        Duration::from_secs(10),
    )
    .await;
    assert!(r.is_ok(), "inflight stuck at {r:?}");
}
