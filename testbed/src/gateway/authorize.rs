//! Deciding on a request: stage path, API host, signature (SigV4, or SigV4A when enabled),
//! credentials still valid, role allowed, and a forced refusal if a test set one.

use std::time::SystemTime;

use http::{HeaderMap, Method};

use super::refusal::Rejection;
use super::{execute_api_arn, resource_path, GwState, Refusal};
use crate::server::lock;
use crate::sigv4::{self, Expect, Payload, Verified};
use crate::sigv4a;

/// Who signed a request, once verified.
pub(super) struct Caller {
    pub(super) arn: String,
    pub(super) user_id: String,
    pub(super) account_id: String,
    pub(super) access_key_id: String,
    pub(super) session_token: Option<String>,
    /// `AWS4-HMAC-SHA256` or `AWS4-ECDSA-P256-SHA256`.
    pub(super) algorithm: &'static str,
    pub(super) signed_headers: Vec<String>,
}

/// The request's `Host` without a port (HTTP/2's `:authority` is already in `headers`).
fn host_name(headers: &HeaderMap) -> &str {
    let host = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

pub(super) fn authorize(
    state: &GwState,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    payload: Payload<'_>,
) -> Result<Caller, Rejection> {
    let config = &state.config;
    let sts = &config.sts;
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let Some(resource) = resource_path(&config.stage, path) else {
        return Err(Rejection::missing_token("path is not under the stage"));
    };
    if let Some(api_host) = &state.modes.api_host {
        let host = host_name(headers);
        if !host.eq_ignore_ascii_case(api_host) {
            return Err(Rejection::wrong_host(format!(
                "Host {host:?} is not the API host {api_host:?}"
            )));
        }
    }
    let base = sts.base();
    let lookup = |akid: &str| {
        if akid == base.access_key_id {
            Some(base.clone())
        } else {
            sts.lookup(akid).map(|i| i.credentials)
        }
    };
    let now = SystemTime::now();
    let expect = Expect::new(config.region.clone(), config.service.clone()).at(now);
    let v4a = state.modes.sigv4a
        && headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(sigv4a::ALGORITHM));
    let request = sigv4::Request {
        method,
        target,
        headers,
        payload,
    };
    let (verified, algorithm): (Verified, &'static str) = if v4a {
        sigv4a::verify(&request, &expect, &lookup).map(|v| (v, sigv4a::ALGORITHM))
    } else {
        sigv4::verify_payload(&request, &expect, &lookup).map(|v| (v, sigv4::ALGORITHM))
    }
    .map_err(|e| Rejection::from_verify(e, headers, now, expect.max_skew))?;

    let (arn, user_id, account_id, allowed) = if verified.access_key_id == base.access_key_id {
        let arn = sts.base_arn();
        let allowed = config
            .allowed_roles
            .as_ref()
            .is_none_or(|roles| roles.contains(&arn));
        (
            arn,
            "AIDATESTBEDBASEUSER".to_string(),
            sts.account_id(),
            allowed,
        )
    } else {
        let Some(issued) = sts.lookup(&verified.access_key_id) else {
            return Err(Rejection::invalid_token(
                "credential vanished from the emulator".into(),
            ));
        };
        if issued.expiration <= now {
            return Err(Rejection::expired_token(format!(
                "credentials {} expired",
                issued.credentials.access_key_id
            )));
        }
        let allowed = config
            .allowed_roles
            .as_ref()
            .is_none_or(|roles| roles.contains(&issued.role_arn));
        let account = issued
            .assumed_role_arn
            .split(':')
            .nth(4)
            .unwrap_or_default()
            .to_string();
        (
            issued.assumed_role_arn,
            issued.assumed_role_id,
            account,
            allowed,
        )
    };
    let resource_arn = execute_api_arn(config, method.as_str(), resource);
    if !allowed {
        return Err(Rejection::access_denied(
            &arn,
            &resource_arn,
            "not allowed".into(),
        ));
    }
    if let Some(refusal) = *lock(&state.forced) {
        let reason = format!("forced refusal {refusal:?}");
        return Err(match refusal {
            Refusal::SignatureMismatch => Rejection::signature_mismatch(
                &verified.canonical_request,
                &verified.string_to_sign,
                reason,
            ),
            Refusal::ExpiredToken => Rejection::expired_token(reason),
            Refusal::InvalidToken => Rejection::invalid_token(reason),
            Refusal::AccessDenied => Rejection::access_denied(&arn, &resource_arn, reason),
        });
    }
    Ok(Caller {
        arn,
        user_id,
        account_id,
        access_key_id: verified.access_key_id,
        session_token: verified.session_token,
        algorithm,
        signed_headers: verified.signed_headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_drop_the_port() {
        let mut h = HeaderMap::new();
        h.insert("host", http::HeaderValue::from_static("api.example:443"));
        assert_eq!(host_name(&h), "api.example");
        h.insert("host", http::HeaderValue::from_static("API.example"));
        assert_eq!(host_name(&h), "API.example");
        h.insert("host", http::HeaderValue::from_static("[::1]:8"));
        assert_eq!(host_name(&h), "[::1]");
    }
}
