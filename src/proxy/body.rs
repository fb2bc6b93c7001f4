//! Bodies: the request body read whole and hashed within the process-wide budget, and the
//! response body streamed back, carrying the exchange that records it when it ends.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sha2::{Digest, Sha256};

use super::exchange::Exchange;
use crate::error::ProxyError;
use crate::signing;

/// The process-wide budget of request-body bytes held in memory at once
/// (`max_inflight_body_bytes`), so many large uploads cannot exhaust the pod's memory.
#[derive(Clone)]
pub struct BodyBudget {
    bytes: Arc<tokio::sync::Semaphore>,
    limit: u64,
}

impl BodyBudget {
    pub fn new(limit: u64) -> Self {
        let permits = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        BodyBudget {
            bytes: Arc::new(tokio::sync::Semaphore::new(permits)),
            limit,
        }
    }

    /// Reserves `n` more bytes, or refuses at once: a full budget is an overload, answered
    /// with 503 rather than queued behind other uploads.
    pub(super) fn reserve(
        &self,
        held: &mut Option<tokio::sync::OwnedSemaphorePermit>,
        n: usize,
    ) -> Result<(), ProxyError> {
        if n == 0 {
            return Ok(());
        }
        let permit = u32::try_from(n)
            .ok()
            .and_then(|n| self.bytes.clone().try_acquire_many_owned(n).ok())
            .ok_or_else(|| {
                ProxyError::Overloaded(format!(
                    "request bodies in flight would exceed max_inflight_body_bytes ({} bytes)",
                    self.limit
                ))
            })?;
        match held {
            Some(p) => p.merge(permit),
            None => *held = Some(permit),
        }
        Ok(())
    }
}

/// Reads the whole body (at most `limit` bytes) and its SHA-256, hashed as it arrives. The
/// bytes are reserved in the process-wide budget (all at once when the length is declared) and
/// stay reserved while the returned permit lives.
pub(super) async fn read_body(
    mut body: Incoming,
    declared: Option<u64>,
    limit: u64,
    budget: &BodyBudget,
) -> Result<
    (
        Bytes,
        Cow<'static, str>,
        Option<tokio::sync::OwnedSemaphorePermit>,
    ),
    ProxyError,
> {
    if body.is_end_stream() {
        return Ok((Bytes::new(), Cow::Borrowed(signing::EMPTY_SHA256), None));
    }
    let mut held = None;
    let mut reserved = declared.map_or(0, |d| d.min(limit) as usize);
    budget.reserve(&mut held, reserved)?;
    let mut buf = BytesMut::with_capacity(reserved);
    let mut hasher = Sha256::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ProxyError::ClientBody(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            let len = buf.len() + data.len();
            if len as u64 > limit {
                return Err(ProxyError::PayloadTooLarge { limit });
            }
            if len > reserved {
                budget.reserve(&mut held, len - reserved)?;
                reserved = len;
            }
            hasher.update(&data);
            buf.extend_from_slice(&data);
        }
    }
    Ok((
        buf.freeze(),
        Cow::Owned(hex::encode(hasher.finalize())),
        held,
    ))
}

/// The response body the app receives: the upstream's, streamed, or the sidecar's own answer.
/// It carries the [`Exchange`] so the exchange is recorded exactly when the body is done.
pub struct ProxyBody {
    inner: Inner,
    exchange: Option<Exchange>,
}

enum Inner {
    Full(Option<Bytes>),
    Upstream(Incoming),
    /// An upstream body whose beginning was read (a 403 inspected for AWS's message).
    Prefixed(Option<Bytes>, Option<Incoming>),
}

impl ProxyBody {
    pub(super) fn upstream(body: Incoming, exchange: Exchange) -> Self {
        ProxyBody {
            inner: Inner::Upstream(body),
            exchange: Some(exchange),
        }
    }

    pub(super) fn prefixed(prefix: Bytes, rest: Option<Incoming>, exchange: Exchange) -> Self {
        ProxyBody {
            inner: Inner::Prefixed((!prefix.is_empty()).then_some(prefix), rest),
            exchange: Some(exchange),
        }
    }

    pub(super) fn full(bytes: Bytes, exchange: Exchange) -> Self {
        ProxyBody {
            inner: Inner::Full(Some(bytes)),
            exchange: Some(exchange),
        }
    }

    fn finish(&mut self, outcome: &'static str) {
        if let Some(mut x) = self.exchange.take() {
            x.outcome = outcome;
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Upstream(body) => Pin::new(body).poll_frame(cx),
            Inner::Prefixed(prefix, rest) => match (prefix.take(), rest) {
                (Some(b), _) => Poll::Ready(Some(Ok(Frame::data(b)))),
                (None, Some(body)) => Pin::new(body).poll_frame(cx),
                (None, None) => Poll::Ready(None),
            },
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(x)) = (frame.data_ref(), this.exchange.as_mut()) {
                    x.bytes_out += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(error = %e, "upstream response body failed mid-stream; the response is cut short");
                this.finish("upstream_truncated");
            }
            Poll::Ready(None) => this.finish("complete"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Prefixed(p, rest) => {
                p.is_none() && rest.as_ref().is_none_or(|b| b.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Upstream(body) => body.size_hint(),
            Inner::Prefixed(p, rest) => {
                let first = p.as_ref().map_or(0, |b| b.len() as u64);
                let rest = rest
                    .as_ref()
                    .map_or(SizeHint::with_exact(0), |b| b.size_hint());
                let mut hint = SizeHint::new();
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + first);
                }
                hint.set_lower(rest.lower() + first);
                hint
            }
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // A body that had nothing left to send (a HEAD answer, a 204) counts as delivered.
        let done = match &self.inner {
            Inner::Full(_) => true,
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Prefixed(p, rest) => {
                p.is_none() && rest.as_ref().is_none_or(|b| b.is_end_stream())
            }
        };
        if done {
            self.finish("complete");
        }
    }
}
