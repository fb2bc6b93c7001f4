//! Faults, each injected on loopback and bounded in time:
//! - STS throttling, 500s, hangs (SDK timeouts), connection refused, malformed XML, and an outage
//!   longer than the credential lifetime: old credentials stay in use while usable, retries back
//!   off (no hot loop), then 503 `credentials_unavailable` and a failing `/readyz`, then full
//!   recovery on the first good answer; never a request signed with expired credentials, never
//!   one forwarded unsigned.
//! - Base credentials that rotate underneath (an IRSA web-identity token file replaced on disk).
//! - Upstreams that reset before or after the response headers, stall past `request_timeout`, or
//!   send HTTP/2 GOAWAY (gracefully or abruptly). Connection refused, the 504 of a slow echo
//!   answer and a bad certificate are in tests/errors.rs and tests/signing.rs.
//! - Clients that go away mid-upload and mid-download.
//! - SIGTERM with many requests in flight.
//!
//! One test binary, a module per side that fails: `credentials` (STS, base credentials),
//! `upstream`, `clients` (and SIGTERM).

#[path = "../common/mod.rs"]
mod common;

mod clients;
mod credentials;
mod upstream;
