//! The `sigv4-sidecar` binary: command line, configuration, logging, runtime, signals.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sigv4_sidecar::config::{Config, Sources};
use sigv4_sidecar::error::StartupError;

/// Signs HTTP requests with AWS SigV4 and forwards them to an IAM-protected upstream.
#[derive(Parser, Debug)]
#[command(name = "sigv4-sidecar", version, about, long_about = None)]
struct Cli {
    /// TOML configuration file (settings from SIGV4_SIDECAR_* environment variables override it).
    #[arg(long, env = "SIGV4_SIDECAR_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Load and validate the configuration, print the effective configuration (secrets
    /// redacted), and exit 0 if it is valid or 1 if not.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let config = match Config::load(&Sources::from_process(cli.config.clone())) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sigv4-sidecar: {}", StartupError::from(e));
            return ExitCode::from(1);
        }
    };
    if cli.check {
        println!("{}", config.effective_json());
        for r in &config.routes {
            println!(
                "route {}: listen {} -> {} (region {}, service {}, role {}{})",
                r.name,
                r.listen,
                r.upstream.url,
                r.region,
                r.service,
                r.role.role_arn.as_deref().unwrap_or("<base credentials>"),
                r.reach
            );
        }
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    // Held until main returns: dropping it flushes every queued log line.
    let _logs = sigv4_sidecar::telemetry::init(config.log_format, &config.log_level);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = match runtime_for(cpus) {
        Ok(rt) => {
            let flavor = if cpus <= 1 {
                "current_thread"
            } else {
                "multi_thread"
            };
            tracing::info!(cpus, runtime = flavor, "runtime started");
            rt
        }
        Err(e) => {
            eprintln!("sigv4-sidecar: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(sigv4_sidecar::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "sigv4-sidecar cannot start");
            eprintln!("sigv4-sidecar: {e}");
            ExitCode::from(1)
        }
    }
}

/// The tokio runtime for `cpus` usable CPUs (CPU affinity and the cgroup CPU quota included, as
/// `available_parallelism` counts them). With one CPU, as in a pod whose CPU limit is one core
/// or less, the single-threaded scheduler: every task runs on the thread that polls the sockets,
/// without the cross-thread wake-ups a multi-thread runtime pays even with one worker (+30 %
/// requests/s on one core, bench/README.md). With more, tokio's default: one worker per CPU,
/// or `TOKIO_WORKER_THREADS`.
fn runtime_for(cpus: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if cpus <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    }
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "signal received"),
    }
}

/// glibc gives every thread that allocates its own malloc arena (up to 8 per core), each
/// holding freed memory of its own; for a sidecar whose few runtime threads allocate small,
/// short-lived buffers that only grows RSS. Two arenas keep the footprint down (measured in the
/// README's performance section). `MALLOC_ARENA_MAX` in the environment still wins, as glibc
/// reads it first.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_ARENA_MAX: i32 = -8;
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            // SAFETY: mallopt only sets a malloc tunable; called before any thread exists.
            unsafe {
                mallopt(M_ARENA_MAX, 2);
            }
        }
    }
}
