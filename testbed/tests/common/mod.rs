//! What the testbed's own HTTP tests (`gateway.rs`, `gateway_modes.rs`) share.

#![allow(dead_code)] // each test binary uses a different part

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use sigv4_testbed::{Credentials, Gateway, StsConfig, StsEmulator};

/// A collected response.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// Reads the whole body of `resp`.
    pub async fn collect<B>(resp: Response<B>) -> Answer
    where
        B: http_body::Body,
        B::Error: std::fmt::Debug,
    {
        let (parts, body) = resp.into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.expect("body").to_bytes(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }

    /// `x-amzn-ErrorType`, or `""`.
    pub fn error_type(&self) -> &str {
        self.header("x-amzn-errortype").unwrap_or("")
    }

    /// A header's value as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An STS emulator whose base credentials (no session token) are `access_key_id`/`secret`.
pub async fn sts(access_key_id: &str, secret: &str) -> StsEmulator {
    StsEmulator::start(StsConfig::new(Credentials::new(
        access_key_id,
        secret,
        None,
    )))
    .await
    .expect("sts")
}

/// Headers holding only `host`, ready to be signed.
pub fn host_headers(host: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_str(host).expect("host"));
    h
}

/// A rustls client configuration that trusts only the certificates in `ca_pem`.
pub fn trusting(ca_pem: &[u8]) -> rustls::ClientConfig {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.expect("pem")).expect("root");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Asserts that the gateway answered exactly `rejected` requests with a 403 and that `check`
/// holds for the `Recorded::outcome` reasons of the refused requests (printed if it does not).
pub fn assert_refusals(gw: &Gateway, rejected: usize, check: impl Fn(&[String]) -> bool) {
    assert_eq!(gw.rejected(), rejected, "403 answers");
    let reasons: Vec<String> = gw
        .requests()
        .into_iter()
        .filter_map(|r| r.outcome.err())
        .collect();
    assert!(check(&reasons), "{reasons:?}");
}
