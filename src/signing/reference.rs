//! The oracle: `aws-sigv4`'s full `sign()` with a [`Scope`]'s settings, as the sidecar signed
//! before it had its own writer. Only the differential tests (`tests/signing_differential.rs`)
//! and the fuzz target call it; it is public (and hidden from the docs) so they can.

use std::time::SystemTime;

use aws_sigv4::http_request::{sign, PayloadChecksumKind, SignableBody, SignableRequest};
use aws_sigv4::sign::v4;

use super::{Payload, RequestToSign, Scope};
use crate::credentials::Credentials;

/// The headers `aws-sigv4` adds for `req` (name, value), or its error message.
pub fn sign_with_aws_sigv4(
    scope: &Scope,
    creds: &Credentials,
    now: SystemTime,
    req: &RequestToSign<'_>,
) -> Result<Vec<(String, String)>, String> {
    let mut settings = scope.settings().clone();
    let body = match req.payload {
        Payload::Sha256(h) => SignableBody::Precomputed(h.to_string()),
        Payload::Unsigned => {
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
            SignableBody::UnsignedPayload
        }
    };
    let signable = SignableRequest::new(
        req.method,
        req.path_and_query,
        req.headers.iter().copied(),
        body,
    )
    .map_err(|e| e.to_string())?;
    let params = v4::SigningParams::builder()
        .identity(&creds.identity)
        .region(&scope.region)
        .name(&scope.service)
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let (headers, _query) = instructions.into_parts();
    Ok(headers
        .into_iter()
        .map(|h| (h.name().to_string(), h.value().to_string()))
        .collect())
}
