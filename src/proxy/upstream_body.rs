//! The body a route sends upstream: either read whole and hashed (`payload = "signed"`), or the
//! app's body streamed through frame by frame as it arrives (`payload = "unsigned"`).
//!
//! A streamed body is never held: each frame goes to the upstream connection as soon as hyper
//! can write it, so memory per request stays at hyper's buffers whatever the size.
//! `max_body_bytes` is still enforced while it flows: the frame that would cross the limit is
//! not forwarded; the body fails instead, which makes hyper abort the upstream request (an
//! HTTP/1 chunked body never gets its last chunk, an HTTP/2 stream is reset), so the upstream
//! never sees a complete request, and [`Streamed::outcome`] tells the proxy to answer 413.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;

/// Why a streamed body stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// More than `max_body_bytes` arrived.
    OverLimit,
    /// The app's connection failed mid-body.
    Client,
}

/// The error a streamed body fails with, so hyper aborts the upstream request.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("request body is larger than max_body_bytes ({0} bytes)")]
    OverLimit(u64),
    #[error("request body could not be read: {0}")]
    Client(hyper::Error),
}

/// What the proxy can learn about a streamed body while hyper owns it.
#[derive(Debug, Default)]
pub struct Streamed {
    bytes: AtomicU64,
    /// 0 = flowing or done, 1 = over the limit, 2 = the client failed.
    cut: AtomicU8,
    cut_notify: Notify,
}

impl Streamed {
    /// Bytes forwarded so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Why the body stopped early, if it did.
    pub fn outcome(&self) -> Option<Cut> {
        match self.cut.load(Ordering::Acquire) {
            1 => Some(Cut::OverLimit),
            2 => Some(Cut::Client),
            _ => None,
        }
    }

    /// Completes when the body is cut: the proxy stops waiting for a response that an aborted
    /// request may never get (an HTTP/2 upstream need not answer a reset stream).
    pub async fn cut(&self) -> Cut {
        loop {
            let notified = self.cut_notify.notified();
            if let Some(c) = self.outcome() {
                return c;
            }
            notified.await;
        }
    }

    fn set_cut(&self, c: Cut) {
        let v = match c {
            Cut::OverLimit => 1,
            Cut::Client => 2,
        };
        self.cut.store(v, Ordering::Release);
        self.cut_notify.notify_waiters();
    }
}

/// The request body the upstream client sends.
pub enum UpstreamBody {
    /// Read whole, already hashed; `None` once sent.
    Full(Option<Bytes>),
    Streaming(Streaming),
}

/// The app's body streamed through under a byte limit.
pub struct Streaming {
    inner: Incoming,
    limit: u64,
    seen: u64,
    state: Arc<Streamed>,
}

impl UpstreamBody {
    pub fn full(bytes: Bytes) -> Self {
        UpstreamBody::Full((!bytes.is_empty()).then_some(bytes))
    }

    /// Streams `body` through, failing it past `limit` bytes; the returned state tells how it
    /// went.
    pub fn streaming(body: Incoming, limit: u64) -> (Self, Arc<Streamed>) {
        let state = Arc::new(Streamed::default());
        let s = Streaming {
            inner: body,
            limit,
            seen: 0,
            state: state.clone(),
        };
        (UpstreamBody::Streaming(s), state)
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        match self.get_mut() {
            UpstreamBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            UpstreamBody::Streaming(s) => s.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Full(b) => b.is_none(),
            UpstreamBody::Streaming(s) => s.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            UpstreamBody::Full(None) => SizeHint::with_exact(0),
            UpstreamBody::Streaming(s) => s.inner.size_hint(),
        }
    }
}

impl Streaming {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        loop {
            let frame = match std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => {
                    self.state.set_cut(Cut::Client);
                    return Poll::Ready(Some(Err(StreamError::Client(e))));
                }
                Some(Ok(f)) => f,
            };
            // Trailers are hop-by-hop here (the app's `Trailer` header is dropped): skip them.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            self.seen += data.len() as u64;
            if self.seen > self.limit {
                self.state.set_cut(Cut::OverLimit);
                return Poll::Ready(Some(Err(StreamError::OverLimit(self.limit))));
            }
            self.state.bytes.store(self.seen, Ordering::Relaxed);
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
    }
}
