//! Test-only AWS stand-ins for the sigv4-sidecar, all on 127.0.0.1: an independent SigV4
//! verifier ([`sigv4`]) and its SigV4A counterpart ([`sigv4a`]), an STS emulator ([`sts`]) and
//! an API Gateway stand-in ([`gateway`]).
//!
//! The sidecar's integration tests and the `local-stack` demo use this one implementation. It
//! is a dev-dependency of the sidecar and never part of its binary.

pub mod gateway;
mod server;
pub mod sigv4;
pub mod sigv4a;
pub mod sts;

pub use gateway::{
    Backend, BodyState, Gateway, GatewayBuilder, GatewayConfig, GatewayModes, Recorded, Refusal,
};
pub use sigv4::{Credentials, Expect, Verified, VerifyError};
pub use sts::{Issued, StsConfig, StsEmulator, StsMode};
