//! Shared harness for the integration tests: the real `sigv4-sidecar` binary started as a child
//! process on loopback, next to the testbed's STS emulator and API Gateway stand-in.
//!
//! Readiness is never guessed with sleeps: the harness reads the sidecar's own log lines
//! ("proxy listening", "credentials refreshed") and the testbed's counters.
//!
//! - [`sidecar`]: launching the binary and reading its logs.
//! - [`client`]: the app's requests and the answers it gets.
//! - [`wire`]: raw HTTP/1.1 on a socket, answer by answer.
//! - [`upstream`]: hand-made raw TCP upstreams for the fault tests.
//! - [`probes`]: metrics and /proc, as seen from outside the process.

#![allow(dead_code)] // each test file uses a different part of the harness
#![allow(unused_imports)] // likewise for the re-exports below

pub mod client;
pub mod probes;
pub mod sidecar;
pub mod upstream;
pub mod wire;

use std::time::Duration;

use sigv4_testbed::gateway::{Gateway, GatewayBuilder};
use sigv4_testbed::sigv4::Credentials;
use sigv4_testbed::sts::{StsConfig, StsEmulator};

pub use client::*;
pub use probes::*;
pub use sidecar::*;
pub use upstream::*;

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

/// An echoing API Gateway stand-in (us-east-1, `execute-api`, stage `Prod`) that accepts only
/// `ROLE`.
pub async fn gateway(sts: &StsEmulator) -> Gateway {
    gateway_with(sts, |b| b).await
}

/// The same, with `modes` applied to it first (TLS, Lattice, SigV4A, another backend, ...).
pub async fn gateway_with(
    sts: &StsEmulator,
    modes: impl FnOnce(GatewayBuilder) -> GatewayBuilder,
) -> Gateway {
    start_gateway(modes(Gateway::builder(sts.clone()).allowed_roles([ROLE]))).await
}

/// Starts a gateway set up from scratch (for one that accepts more than `ROLE`).
pub async fn start_gateway(builder: GatewayBuilder) -> Gateway {
    builder.start().await.expect("gateway starts")
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

/// A loopback port nobody listens on (bound, noted, closed).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}
