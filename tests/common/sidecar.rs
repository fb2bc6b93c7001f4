//! The `sigv4-sidecar` binary as a child process: how it is launched ([`Launch`]), and what the
//! tests read from it ([`Sidecar`]): its JSON log lines, its listen addresses, its exit.
//!
//! Readiness is never guessed with sleeps: every wait here ends on a log line the sidecar
//! writes ("admin listening", "proxy listening", "credentials refreshed", ...).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sigv4_testbed::sts::StsEmulator;

use super::{BASE_AKID, BASE_SECRET, REGION, ROLE};

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

/// The lines of `lines` that are JSON (the sidecar logs JSON; anything else is skipped).
fn json_lines(lines: &[String]) -> impl Iterator<Item = serde_json::Value> + '_ {
    lines.iter().filter_map(|l| serde_json::from_str(l).ok())
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
        let unknown: SocketAddr = "0.0.0.0:0".parse().expect("addr");
        let mut sidecar = Sidecar {
            child,
            proxy: unknown,
            admin: unknown,
            logs,
        };
        let start = Duration::from_secs(20);
        sidecar.admin = sidecar.logged_addr(|v| v["message"] == "admin listening", "admin", start);
        sidecar.proxy = sidecar.listen_addr("default", start);
        sidecar
    }

    /// The `addr` field of the first log line matching `pred`: where a listener bound (the
    /// tests always ask for port 0).
    fn logged_addr(
        &self,
        pred: impl Fn(&serde_json::Value) -> bool,
        what: &str,
        timeout: Duration,
    ) -> SocketAddr {
        self.wait_for_log(pred, timeout)
            .and_then(|v| v["addr"].as_str().and_then(|a| a.parse().ok()))
            .unwrap_or_else(|| panic!("{what} not listening; logs:\n{}", self.logs()))
    }

    fn listen_addr(&self, route: &str, timeout: Duration) -> SocketAddr {
        self.logged_addr(
            |v| v["message"] == "proxy listening" && v["route"] == route,
            &format!("route {route}"),
            timeout,
        )
    }

    /// The listen address of a named route, from its log line.
    pub fn route_addr(&self, route: &str) -> SocketAddr {
        self.listen_addr(route, Duration::from_secs(10))
    }

    /// Runs `check` on the log lines that arrived since its last call (all of them the first
    /// time) until it returns `Some`, or `None` once `timeout` passed. Woken by each new line.
    fn watch_logs<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&[String]) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.logs;
        let mut lines = lock.lock().expect("log lock");
        let mut seen = 0;
        loop {
            if let Some(found) = check(&lines[seen..]) {
                return Some(found);
            }
            seen = lines.len();
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            lines = cv.wait_timeout(lines, deadline - now).expect("log lock").0;
        }
    }

    /// Waits until a JSON log line matches `pred`; returns it.
    pub fn wait_for_log(
        &self,
        pred: impl Fn(&serde_json::Value) -> bool,
        timeout: Duration,
    ) -> Option<serde_json::Value> {
        self.watch_logs(timeout, |new| json_lines(new).find(|v| pred(v)))
    }

    /// Waits until at least `n` JSON log lines match `pred`.
    pub fn wait_for_count(
        &self,
        pred: impl Fn(&serde_json::Value) -> bool,
        n: usize,
        timeout: Duration,
    ) -> bool {
        let mut count = 0;
        self.watch_logs(timeout, |new| {
            count += json_lines(new).filter(|v| pred(v)).count();
            (count >= n).then_some(())
        })
        .is_some()
    }

    /// Every JSON log line so far that matches `pred`.
    pub fn collect_logs(
        &self,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let lines = self.logs.0.lock().expect("log lock");
        json_lines(&lines).filter(|v| pred(v)).collect()
    }

    /// Counts log lines matching `pred`.
    pub fn count_logs(&self, pred: impl Fn(&serde_json::Value) -> bool) -> usize {
        self.collect_logs(pred).len()
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

    /// The access-log line of the request for `path` (written when the request ended).
    #[track_caller]
    pub fn access_line(&self, path: &str) -> serde_json::Value {
        self.wait_for_log(
            |v| v["message"] == "request" && v["path"] == path,
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("no access line for {path}; logs:\n{}", self.logs()))
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

/// Runs the binary to completion (`--check`, `--version`, a configuration it refuses) in an
/// environment holding only `env`; what it printed and how it exited.
pub fn run_once(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sigv4-sidecar"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("the sidecar binary runs")
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
