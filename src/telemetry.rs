//! Structured logs: one JSON (or text) event per line on stdout, and the access log.
//!
//! `log_level` sets the sidecar's own level; its dependencies stay at `warn` so that even at
//! `debug` no SDK or HTTP internals (which could carry credential material) are logged.
//! `RUST_LOG`, when set, replaces this filter entirely, as operators expect.
//!
//! # Writing without blocking the data path
//!
//! Every line goes through tracing-appender's non-blocking writer: the request's task copies
//! the finished line into a bounded channel and a dedicated thread writes batches to stdout
//! through a 64 KiB buffer (one `write` per batch instead of one per line). The trade-off of a
//! bounded channel is what happens when stdout cannot keep up for long (a stalled log shipper):
//! a *lossy* writer drops lines, a *lossless* one makes the sender wait. Access lines are audit
//! records, so the writer is lossless (`lossy(false)`), with room for [`BUFFERED_LINES`] lines
//! (a few MiB, held only while stdout is stalled) before a request's task would wait. On exit
//! the [`LogGuard`] (kept by `main` until it returns) flushes every queued line; lines are never
//! lost on shutdown, only bounded by the guard's one-second drain limit if stdout is blocked.
//!
//! # The access line
//!
//! In JSON format the access line is written by [`access`] directly: the same shape
//! tracing-subscriber's JSON formatter produces (timestamp, level, message, fields, target),
//! formatted into a reused per-thread buffer with serde_json's escaping and number formatting,
//! without the per-field dispatch and temporary strings of a tracing event. Whether it is
//! written is still decided by the tracing filter (`tracing::enabled!` on the access target),
//! so `log_level=warn` and `RUST_LOG` switch it off as before. Text format uses a tracing event.

use std::cell::RefCell;
use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Lines the writer holds while stdout is slower than the sidecar (about 300 bytes each).
pub const BUFFERED_LINES: usize = 16 * 1024;

/// The tracing target of access lines.
pub const ACCESS_TARGET: &str = "sigv4_sidecar::access";

/// The JSON writer for access lines, set by [`init`] in JSON format.
static ACCESS: OnceLock<NonBlocking> = OnceLock::new();

/// Flushes every queued log line when dropped; `main` keeps it until it returns.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(#[allow(dead_code)] WorkerGuard);

/// The filter for `log_level`: a bare level applies to the sidecar, a full directive
/// (`info,hyper=debug`) is used as written.
pub fn filter(log_level: &str) -> EnvFilter {
    if let Ok(from_env) = std::env::var("RUST_LOG") {
        if let Ok(f) = EnvFilter::try_new(&from_env) {
            return f;
        }
    }
    let directive = if log_level.contains('=') || log_level.contains(',') {
        log_level.to_string()
    } else {
        format!("warn,sigv4_sidecar={log_level}")
    };
    EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// The non-blocking, lossless, batching writer over `out` (stdout; see the module docs).
pub fn non_blocking(out: impl Write + Send + 'static) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("log-writer")
        .finish(std::io::BufWriter::with_capacity(64 * 1024, out))
}

/// Installs the global subscriber writing to stdout.
pub fn init(format: LogFormat, log_level: &str) -> LogGuard {
    let (writer, guard) = non_blocking(std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(log_level))
        .with_writer(writer.clone());
    match format {
        LogFormat::Json => {
            let _ = ACCESS.set(writer);
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .init()
        }
        LogFormat::Text => builder.with_ansi(false).init(),
    }
    LogGuard(guard)
}

/// One exchange, as the access log records it.
#[derive(Debug, Clone, Copy)]
pub struct AccessLine<'a> {
    pub route: &'a str,
    pub method: &'a str,
    /// The path only: the query may carry what the app considers private.
    pub path: &'a str,
    pub status: u16,
    pub duration: Duration,
    pub upstream: Option<Duration>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub error: Option<&'a str>,
    pub outcome: &'a str,
}

/// Writes the access line, if the filter lets access lines through.
pub fn access(line: &AccessLine<'_>) {
    if !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
        return;
    }
    match ACCESS.get() {
        Some(writer) => {
            thread_local! {
                static BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
            }
            BUF.with(|buf| {
                let mut buf = buf.borrow_mut();
                buf.clear();
                format_json(&mut buf, line);
                // The lossless writer only fails once its thread is gone (process exit).
                let _ = writer.clone().write_all(&buf);
            });
        }
        None => access_event(line),
    }
}

/// The access line as a tracing event (text format, or before [`init`]).
pub fn access_event(line: &AccessLine<'_>) {
    tracing::info!(
        target: ACCESS_TARGET,
        route = line.route,
        method = line.method,
        path = line.path,
        status = line.status,
        duration_ms = millis(line.duration),
        upstream_ms = line.upstream.map(millis),
        bytes_in = line.bytes_in,
        bytes_out = line.bytes_out,
        error = line.error,
        outcome = line.outcome,
        "request"
    )
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The access line as tracing-subscriber's flattened JSON event would print it, newline
/// included, appended to `out`.
pub fn format_json(out: &mut Vec<u8>, l: &AccessLine<'_>) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    // tracing-subscriber's own clock format, so every line of the log has the same timestamps.
    let _ =
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut Ascii(out)));
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"route\":");
    string(out, l.route);
    out.extend_from_slice(b",\"method\":");
    string(out, l.method);
    out.extend_from_slice(b",\"path\":");
    string(out, l.path);
    out.extend_from_slice(b",\"status\":");
    number(out, l.status);
    out.extend_from_slice(b",\"duration_ms\":");
    number(out, millis(l.duration));
    if let Some(u) = l.upstream {
        out.extend_from_slice(b",\"upstream_ms\":");
        number(out, millis(u));
    }
    out.extend_from_slice(b",\"bytes_in\":");
    number(out, l.bytes_in);
    out.extend_from_slice(b",\"bytes_out\":");
    number(out, l.bytes_out);
    if let Some(e) = l.error {
        out.extend_from_slice(b",\"error\":");
        string(out, e);
    }
    out.extend_from_slice(b",\"outcome\":");
    string(out, l.outcome);
    out.extend_from_slice(b",\"target\":\"");
    out.extend_from_slice(ACCESS_TARGET.as_bytes());
    out.extend_from_slice(b"\"}\n");
}

/// A JSON string, escaped by serde_json (writing into a `Vec` cannot fail).
fn string(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A JSON number as serde_json writes it (floats through ryu, as tracing's JSON does).
fn number(out: &mut Vec<u8>, n: impl serde::Serialize) {
    let _ = serde_json::to_writer(&mut *out, &n);
}

/// `fmt::Write` into a byte buffer (the timestamp is ASCII).
struct Ascii<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Ascii<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written line has the keys, order and values of tracing-subscriber's JSON
    /// event with the same fields.
    #[test]
    fn access_line_is_what_tracings_json_formatter_writes() {
        #[derive(Clone, Default)]
        struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("lock").extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Sink::default();
        let subscriber = || {
            let sink = captured.clone();
            tracing_subscriber::fmt()
                .with_writer(move || sink.clone())
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .finish()
        };
        for (upstream, error, path) in [
            (Some(Duration::from_micros(1234)), None, "/a\"b\\c\u{1}é"),
            (None, Some("upstream_timeout"), "/"),
        ] {
            let line = AccessLine {
                route: "default",
                method: "GET",
                path,
                status: 504,
                duration: Duration::from_nanos(30_000_123_456),
                upstream,
                bytes_in: 7,
                bytes_out: u64::MAX,
                error,
                outcome: "complete",
            };
            captured.0.lock().expect("lock").clear();
            tracing::subscriber::with_default(subscriber(), || access_event(&line));
            let theirs = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf8");
            let mut ours = Vec::new();
            format_json(&mut ours, &line);
            let ours = String::from_utf8(ours).expect("utf8");
            // Everything but the timestamp's digits is identical, byte for byte.
            let strip = |s: &str| s.split_once("\",\"level\"").map(|(_, r)| r.to_string());
            assert_eq!(strip(&ours), strip(&theirs), "\n{ours}{theirs}");
            assert!(ours.ends_with('\n'));
            let ts = |s: &str| s[14..].split_once('"').map(|(t, _)| t.len());
            assert_eq!(ts(&ours), ts(&theirs), "timestamps of the same form");
        }
    }
}
