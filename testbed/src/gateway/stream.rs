//! Reading a request body without holding it: VPC Lattice requests are signed over
//! `UNSIGNED-PAYLOAD`, so the gateway verifies the head and then only counts and hashes the body
//! as it arrives, one frame at a time. Memory per request stays one frame whatever the size.

use http_body_util::BodyExt;
use hyper::body::Incoming;
use sha2::{Digest, Sha256};

use super::BodyState;

/// What arrived of a body.
pub(super) struct BodyRead {
    pub(super) len: usize,
    pub(super) sha256: String,
    pub(super) state: BodyState,
}

/// Reads `body` to its end. Incomplete when hyper reports an error (the peer closed or reset
/// mid-body, a chunked body without its last chunk) or when fewer or more bytes than a declared
/// `Content-Length` arrived; `len`/`sha256` then cover what did arrive.
pub(super) async fn consume(mut body: Incoming, declared: Option<u64>) -> BodyRead {
    let mut hasher = Sha256::new();
    let mut len: usize = 0;
    let state = loop {
        match body.frame().await {
            None => break BodyState::Complete,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    hasher.update(&data);
                    len += data.len();
                }
            }
            Some(Err(e)) => break BodyState::Incomplete(format!("body cut off: {e}")),
        }
    };
    let state = match (state, declared) {
        (BodyState::Complete, Some(d)) if d != len as u64 => {
            BodyState::Incomplete(format!("Content-Length {d}, but {len} bytes arrived"))
        }
        (state, _) => state,
    };
    BodyRead {
        len,
        sha256: hex::encode(hasher.finalize()),
        state,
    }
}
