//! API Gateway's refusals, shaped as AWS sends them: status 403, `x-amzn-ErrorType`, and the
//! JSON `{"message": ...}` (`{"Message": ...}` for AccessDenied, as API Gateway spells it).
//!
//! The signature-mismatch message carries the gateway's canonical request and string to sign in
//! AWS's own words ("The Canonical String for this request should have been ..."), because that
//! text is what the sidecar's diagnostics put next to its own (SPEC "Diagnosing a rejected
//! signature").

use std::time::SystemTime;

use http::{HeaderMap, StatusCode};

use crate::sigv4::{self, VerifyError};

/// The first sentence of AWS's signature-mismatch message.
pub const BAD_SIGNATURE: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

/// AWS's message for an expired session token (`ExpiredTokenException`).
pub const EXPIRED_TOKEN: &str = "The security token included in the request is expired";

/// AWS's message for an unknown key or token (`UnrecognizedClientException`).
pub const INVALID_TOKEN: &str = "The security token included in the request is invalid.";

/// A refusal a test can make the gateway answer for requests that verified fine
/// ([`super::GatewayBuilder::forced_refusal`], [`super::Gateway::set_forced_refusal`]), to drive
/// the sidecar's handling of upstream auth failures without breaking its signing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `InvalidSignatureException` with the canonical request and string to sign of the
    /// request as the gateway computed them (see [`signature_mismatch_message`]).
    SignatureMismatch,
    /// `ExpiredTokenException`, "The security token included in the request is expired".
    ExpiredToken,
    /// `UnrecognizedClientException`, "The security token included in the request is invalid.".
    InvalidToken,
    /// `AccessDeniedException`, "User: <arn> is not authorized to perform: execute-api:Invoke on
    /// resource: <arn>".
    AccessDenied,
}

/// AWS's whole signature-mismatch message, byte for byte as API Gateway sends it.
pub fn signature_mismatch_message(canonical_request: &str, string_to_sign: &str) -> String {
    format!(
        "{BAD_SIGNATURE}\n\nThe Canonical String for this request should have been\n'{canonical_request}'\n\nThe String-to-Sign should have been\n'{string_to_sign}'\n"
    )
}

/// An API Gateway refusal.
pub(super) struct Rejection {
    pub(super) status: StatusCode,
    pub(super) error_type: &'static str,
    pub(super) body: serde_json::Value,
    /// For [`super::Recorded::outcome`].
    pub(super) reason: String,
}

impl Rejection {
    pub(super) fn forbidden(error_type: &'static str, message: String, reason: String) -> Self {
        Rejection {
            status: StatusCode::FORBIDDEN,
            error_type,
            body: serde_json::json!({ "message": message }),
            reason,
        }
    }

    pub(super) fn missing_token(reason: &str) -> Self {
        Self::forbidden(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token".into(),
            reason.into(),
        )
    }

    /// What API Gateway answers when `Host` names another API: 403 `ForbiddenException`.
    pub(super) fn wrong_host(reason: String) -> Self {
        Self::forbidden("ForbiddenException", "Forbidden".into(), reason)
    }

    pub(super) fn signature_mismatch(creq: &str, sts: &str, reason: String) -> Self {
        Self::forbidden(
            "InvalidSignatureException",
            signature_mismatch_message(creq, sts),
            reason,
        )
    }

    pub(super) fn expired_token(reason: String) -> Self {
        Self::forbidden("ExpiredTokenException", EXPIRED_TOKEN.into(), reason)
    }

    pub(super) fn invalid_token(reason: String) -> Self {
        Self::forbidden("UnrecognizedClientException", INVALID_TOKEN.into(), reason)
    }

    pub(super) fn access_denied(caller_arn: &str, resource_arn: &str, reason: String) -> Self {
        let message = format!(
            "User: {caller_arn} is not authorized to perform: execute-api:Invoke on resource: {resource_arn}"
        );
        Rejection {
            status: StatusCode::FORBIDDEN,
            error_type: "AccessDeniedException",
            body: serde_json::json!({ "Message": message }),
            reason: format!("{reason}: {message}"),
        }
    }

    /// The answer to a request the verifier refused.
    pub(super) fn from_verify(
        e: VerifyError,
        headers: &HeaderMap,
        now: SystemTime,
        max_skew: std::time::Duration,
    ) -> Self {
        let reason = e.to_string();
        match e {
            VerifyError::MissingAuthentication => Self::missing_token(&reason),
            VerifyError::Malformed(m) => Self::forbidden("IncompleteSignatureException", m, reason),
            VerifyError::UnknownAccessKey | VerifyError::TokenMismatch => {
                Self::invalid_token(reason)
            }
            VerifyError::Expired => {
                let sent = headers
                    .get("x-amz-date")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let earliest = sigv4::format_amz_date(now - max_skew);
                Self::forbidden(
                    "InvalidSignatureException",
                    format!(
                        "Signature expired: {sent} is now earlier than {earliest} ({} - 5 min.)",
                        sigv4::format_amz_date(now)
                    ),
                    reason,
                )
            }
            VerifyError::WrongScope(m) => Self::forbidden("InvalidSignatureException", m, reason),
            VerifyError::HostNotSigned => Self::forbidden(
                "InvalidSignatureException",
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into(),
                reason,
            ),
            VerifyError::SignatureMismatch {
                canonical_request,
                string_to_sign,
            } => Self::signature_mismatch(&canonical_request, &string_to_sign, reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatch_message_has_aws_shape() {
        let m = signature_mismatch_message("GET\n/\n", "AWS4-HMAC-SHA256\nx");
        assert_eq!(
            m,
            format!("{BAD_SIGNATURE}\n\nThe Canonical String for this request should have been\n'GET\n/\n'\n\nThe String-to-Sign should have been\n'AWS4-HMAC-SHA256\nx'\n")
        );
        // As JSON the line breaks are escaped, as in AWS's answer.
        let body = serde_json::json!({ "message": m }).to_string();
        assert!(body.contains("details.\\n\\nThe Canonical String"));
    }
}
