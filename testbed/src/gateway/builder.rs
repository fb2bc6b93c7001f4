//! Starting a gateway in one of issue 13's modes: [`GatewayBuilder`] over [`GatewayConfig`]
//! plus [`GatewayModes`].
//!
//! ```no_run
//! # async fn demo(sts: sigv4_testbed::StsEmulator) -> std::io::Result<()> {
//! use sigv4_testbed::gateway::{Gateway, Refusal};
//! // A private API behind a VPC endpoint: TLS for 127.0.0.1/localhost only, Host must name the API.
//! let gw = Gateway::builder(sts.clone())
//!     .allowed_roles(["arn:aws:iam::111111111111:role/app"])
//!     .tls()
//!     .api_host("abc123.execute-api.us-east-1.amazonaws.com")
//!     .start()
//!     .await?;
//! // VPC Lattice: service vpc-lattice-svcs, no stage, UNSIGNED-PAYLOAD required, body streamed.
//! let lattice = Gateway::builder(sts.clone()).lattice().start().await?;
//! // SigV4A accepted (region set must cover us-east-1), CloudFront-like hop in front.
//! let edge = Gateway::builder(sts.clone()).sigv4a().cloudfront_hop().start().await?;
//! // Every verified request answered with AWS's signature-mismatch 403.
//! let failing = Gateway::builder(sts)
//!     .forced_refusal(Refusal::SignatureMismatch)
//!     .start()
//!     .await?;
//! # Ok(()) }
//! ```

use super::{Backend, Gateway, GatewayConfig, Refusal, LATTICE_SERVICE};
use crate::sts::StsEmulator;

/// Behaviour beyond [`GatewayConfig`]; the default is the gateway as it always was (SigV4 only,
/// any `Host`, no hop, real verdicts). Build one with [`GatewayBuilder`], or start from
/// `GatewayModes::default()` and set fields.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct GatewayModes {
    /// Also accept SigV4A (`AWS4-ECDSA-P256-SHA256`), verified with [`crate::sigv4a`]; its
    /// `X-Amz-Region-Set` must cover the gateway's region. SigV4 stays accepted.
    pub sigv4a: bool,
    /// The API's own host name (`abc123.execute-api.us-east-1.amazonaws.com`): `Host` (or
    /// HTTP/2 `:authority`) must equal it, ASCII case aside and without a port, or the answer
    /// is API Gateway's 403 `ForbiddenException` `{"message":"Forbidden"}`. `None`: any host.
    /// (That `host` is signed is always required.)
    pub api_host: Option<String>,
    /// Before verifying, append to `X-Forwarded-For` (`, 203.0.113.7`) and `Via`
    /// (`, 1.1 abc.cloudfront.net (CloudFront)`), setting them when absent, as CloudFront in
    /// front of an edge-optimized API does. A signature over either header then fails.
    pub cloudfront_hop: bool,
    /// Answer every request that verified (and was allowed) with this refusal instead of the
    /// backend. Can be changed while running: [`Gateway::set_forced_refusal`].
    pub forced_refusal: Option<Refusal>,
}

/// Builder for a [`Gateway`]: [`GatewayConfig::new`]'s defaults (us-east-1, `execute-api`,
/// stage `Prod`, any issued credential, echo backend, plain HTTP, any free port) and
/// [`GatewayModes::default`], changed by the methods below.
#[derive(Clone, Debug)]
pub struct GatewayBuilder {
    config: GatewayConfig,
    modes: GatewayModes,
    port: u16,
}

impl GatewayBuilder {
    /// The defaults, credentials resolved through `sts`.
    pub fn new(sts: StsEmulator) -> Self {
        Self::from_config(GatewayConfig::new(sts))
    }

    /// An existing configuration, default modes.
    pub fn from_config(config: GatewayConfig) -> Self {
        GatewayBuilder {
            config,
            modes: GatewayModes::default(),
            port: 0,
        }
    }

    /// Signing region (`us-east-1`); for SigV4A, the region the region set must cover.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.config.region = region.into();
        self
    }

    /// Signing service (`execute-api`). `vpc-lattice-svcs` switches to Lattice behaviour, see
    /// [`GatewayBuilder::lattice`].
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.config.service = service.into();
        self
    }

    /// Stage, the first path segment (`Prod`); `""` for none.
    pub fn stage(mut self, stage: impl Into<String>) -> Self {
        self.config.stage = stage.into();
        self
    }

    /// Only credentials issued for these roles are allowed (see
    /// [`GatewayConfig::allowed_roles`]).
    pub fn allowed_roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.allowed_roles = Some(roles.into_iter().map(Into::into).collect());
        self
    }

    pub fn backend(mut self, backend: Backend) -> Self {
        self.config.backend = backend;
        self
    }

    /// HTTPS (HTTP/1.1 and h2 by ALPN) with a fresh CA; the certificate names only `localhost`
    /// and `127.0.0.1`. The CA's PEM: [`Gateway::ca_pem`] / [`Gateway::write_ca_pem`].
    pub fn tls(mut self) -> Self {
        self.config.tls = true;
        self
    }

    /// Listen on `127.0.0.1:port` instead of a free port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// A VPC Lattice service: signing service `vpc-lattice-svcs`, no stage. Requests must sign
    /// `x-amz-content-sha256: UNSIGNED-PAYLOAD`; they are verified from the head alone and the
    /// body is streamed (hashed frame by frame, never held), its length, SHA-256 and whether it
    /// arrived complete recorded ([`super::Recorded::body_state`]). The backend is always echo.
    pub fn lattice(self) -> Self {
        self.service(LATTICE_SERVICE).stage("")
    }

    /// See [`GatewayModes::sigv4a`].
    pub fn sigv4a(mut self) -> Self {
        self.modes.sigv4a = true;
        self
    }

    /// See [`GatewayModes::api_host`].
    pub fn api_host(mut self, host: impl Into<String>) -> Self {
        self.modes.api_host = Some(host.into());
        self
    }

    /// See [`GatewayModes::cloudfront_hop`].
    pub fn cloudfront_hop(mut self) -> Self {
        self.modes.cloudfront_hop = true;
        self
    }

    /// See [`GatewayModes::forced_refusal`].
    pub fn forced_refusal(mut self, refusal: Refusal) -> Self {
        self.modes.forced_refusal = Some(refusal);
        self
    }

    /// Binds and serves; the gateway answers as soon as this returns.
    pub async fn start(self) -> std::io::Result<Gateway> {
        Gateway::start_with(self.config, self.modes, self.port).await
    }
}
