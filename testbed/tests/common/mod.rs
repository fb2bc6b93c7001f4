//! What the testbed's own HTTP tests (`gateway.rs`, `gateway_modes.rs`) share.

#![allow(dead_code)] // each test binary uses a different part

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::Value;
use sigv4_testbed::Gateway;

/// A collected response.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }

    /// `x-amzn-ErrorType`, or `""`.
    pub fn error_type(&self) -> &str {
        self.headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// `Recorded::outcome` reasons of every refused request so far.
pub fn refusal_reasons(gw: &Gateway) -> Vec<String> {
    gw.requests()
        .into_iter()
        .filter_map(|r| r.outcome.err())
        .collect()
}
