//! Structured logs: one JSON (or text) event per line on stdout.
//!
//! `log_level` sets the sidecar's own level; its dependencies stay at `warn` so that even at
//! `debug` no SDK or HTTP internals (which could carry credential material) are logged.
//! `RUST_LOG`, when set, replaces this filter entirely, as operators expect.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

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

/// Installs the global subscriber.
pub fn init(format: LogFormat, log_level: &str) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(log_level))
        .with_writer(std::io::stdout);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
}
