//! The SigV4 signing key, derived once and reused.
//!
//! The key is `HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`:
//! four HMACs (eight SHA-256 compressions plus key setup) that only change when the credentials,
//! the UTC date, the region or the service do. Deriving it per request was a third of the
//! signing time. Each [`Scope`](super::Scope) (one region and service) keeps the last key it
//! derived in an `ArcSwapOption`: a hit is one lock-free load and a few byte comparisons; a miss
//! (credential rotation, UTC midnight) derives the key with `aws-sigv4`'s
//! `generate_signing_key` and swaps it in. Concurrent misses each derive the same key and the
//! last store wins, which is harmless; no request ever waits on a lock.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use aws_sigv4::sign::v4;
use http::HeaderValue;

use crate::error::ProxyError;

/// A derived key and what it was derived for. The secret and token are kept to recognise the
/// same credentials (value comparison: an address could be reused by the next credential set).
pub(super) struct DerivedKey {
    date: [u8; 8],
    access_key_id: Box<str>,
    secret: Box<str>,
    token: Option<Box<str>>,
    pub key: [u8; 32],
    /// `AKID/YYYYMMDD/region/service/aws4_request`, the `Credential=` of `Authorization`.
    pub credential: Box<str>,
    /// `YYYYMMDD/region/service/aws4_request`, the scope line of the string to sign.
    pub scope: Box<str>,
    /// The session token as a header value (sensitive), built once per credential set.
    pub token_header: Option<HeaderValue>,
}

impl DerivedKey {
    fn matches(&self, date: &[u8], c: &aws_credential_types::Credentials) -> bool {
        self.date == date
            && *self.access_key_id == *c.access_key_id()
            && *self.secret == *c.secret_access_key()
            && self.token.as_deref() == c.session_token()
    }

    pub fn session_token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

impl fmt::Debug for DerivedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DerivedKey")
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

/// The last key a scope derived.
#[derive(Default)]
pub(super) struct KeyCache(ArcSwapOption<DerivedKey>);

impl KeyCache {
    /// The key for credentials `c` on `date` (`YYYYMMDD`), derived now if the cached one is
    /// for other credentials or another day.
    pub fn get(
        &self,
        c: &aws_credential_types::Credentials,
        date: &[u8; 8],
        time: std::time::SystemTime,
        region: &str,
        service: &str,
    ) -> Result<Arc<DerivedKey>, ProxyError> {
        if let Some(hit) = &*self.0.load() {
            if hit.matches(date, c) {
                return Ok(hit.clone());
            }
        }
        let derived = Arc::new(derive(c, date, time, region, service)?);
        self.0.store(Some(derived.clone()));
        Ok(derived)
    }
}

fn derive(
    c: &aws_credential_types::Credentials,
    date: &[u8; 8],
    time: std::time::SystemTime,
    region: &str,
    service: &str,
) -> Result<DerivedKey, ProxyError> {
    let day = std::str::from_utf8(date).unwrap_or_default();
    let derived = v4::generate_signing_key(c.secret_access_key(), time, region, service);
    let key: [u8; 32] = derived
        .as_ref()
        .try_into()
        .map_err(|_| ProxyError::Internal("request cannot be signed: bad key length".into()))?;
    let token_header = c
        .session_token()
        .map(|t| {
            HeaderValue::from_str(t).map(|mut v| {
                v.set_sensitive(true);
                v
            })
        })
        .transpose()
        .map_err(|_| {
            ProxyError::Internal(
                "request cannot be signed: the session token is not a valid header value".into(),
            )
        })?;
    let scope = format!("{day}/{region}/{service}/aws4_request");
    Ok(DerivedKey {
        date: *date,
        access_key_id: c.access_key_id().into(),
        secret: c.secret_access_key().into(),
        token: c.session_token().map(Into::into),
        key,
        credential: format!("{}/{scope}", c.access_key_id()).into(),
        scope: scope.into(),
        token_header,
    })
}
