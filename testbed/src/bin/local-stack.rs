//! The whole AWS side of the demo on loopback: the STS emulator and the API Gateway stand-in
//! with the Lambda backend, wired as `sam/template.yaml` deploys them for real.
//!
//! Prints `READY sts=<url> gateway=<url>` once both listen (scripts wait for that line), then
//! serves until SIGINT/SIGTERM.
//!
//! Usage: `local-stack [--sts-port N] [--gateway-port N] [--lifetime 15m]`

use std::io::Write;
use std::time::Duration;

use sigv4_testbed::{Backend, Credentials, Gateway, GatewayConfig, StsConfig, StsEmulator};

/// The role the sidecar is configured to assume in the local demo.
const DEMO_ROLE: &str = "arn:aws:iam::111111111111:role/sigv4-sidecar-demo";

struct Args {
    sts_port: u16,
    gateway_port: u16,
    lifetime: Duration,
}

const USAGE: &str = "usage: local-stack [--sts-port N (4566)] [--gateway-port N (4567)] [--lifetime DURATION (15m; s/m/h)]";

/// `90s`, `15m`, `1h`, or plain seconds.
fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        sts_port: 4566,
        gateway_port: 4567,
        lifetime: Duration::from_secs(15 * 60),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_string());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = || format!("bad value {value:?} for {flag}\n{USAGE}");
        match flag.as_str() {
            "--sts-port" => args.sts_port = value.parse().map_err(|_| bad())?,
            "--gateway-port" => args.gateway_port = value.parse().map_err(|_| bad())?,
            "--lifetime" => args.lifetime = parse_duration(&value).ok_or_else(bad)?,
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    Ok(args)
}

async fn wait_for_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("local-stack: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> std::io::Result<()> {
    let sts = StsEmulator::start_on(
        StsConfig {
            base: Credentials::new("AKIDLOCALBASE", "local-base-secret-not-a-real-key", None),
            account_id: "111111111111".to_string(),
            lifetime: args.lifetime,
        },
        args.sts_port,
    )
    .await?;
    let gateway = Gateway::start_on(
        GatewayConfig {
            region: "us-east-1".to_string(),
            service: "execute-api".to_string(),
            stage: "Prod".to_string(),
            sts: sts.clone(),
            allowed_roles: Some(vec![DEMO_ROLE.to_string()]),
            backend: Backend::Lambda,
            tls: false,
        },
        args.gateway_port,
    )
    .await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "READY sts={} gateway={}",
        sts.endpoint(),
        gateway.url()
    )?;
    out.flush()?;
    drop(out);
    wait_for_signal().await?;
    gateway.shutdown();
    sts.shutdown();
    Ok(())
}
