//! The small hyper 1 server loop shared by the STS emulator and the gateway.
//!
//! Each stand-in's handle wraps a [`Running`]: its state, shared with the server task, and a
//! [`ShutdownGuard`] held only by the clone-able handles. When the last handle is dropped (or
//! `shutdown()` is called) the accept loop stops and every open connection is dropped, so a
//! test never leaks a server into the next one.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// Response body type of both stand-ins.
pub type RespBody = BoxBody<Bytes, Infallible>;

/// Error a handler returns to make hyper drop the connection without an answer.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// A complete body.
pub fn full(data: impl Into<Bytes>) -> RespBody {
    Full::new(data.into()).boxed()
}

/// What the server knows about the connection a request arrived on; inserted into every
/// request's extensions before the handler sees it.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The SNI name the TLS client sent (`None` over plain HTTP, or for a connection to an IP).
    pub server_name: Option<String>,
}

/// Request heads may carry this many header lines (hyper's HTTP/1 default is 100, which would
/// answer a bare 431 to the many-headers tests before the verifier saw anything).
const MAX_HEADERS: usize = 10_000;
/// HTTP/1 read buffer, which bounds a request head (hyper's default is ~400 KiB).
const MAX_BUF: usize = 4 * 1024 * 1024;
/// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE` (hyper's default is 16 KiB).
const MAX_HEADER_LIST: u32 = 4 * 1024 * 1024;

/// Signals shutdown to the accept loop and the connections when dropped.
pub struct ShutdownGuard {
    tx: watch::Sender<bool>,
}

impl ShutdownGuard {
    pub fn new() -> (Self, watch::Receiver<bool>) {
        let (tx, rx) = watch::channel(false);
        (ShutdownGuard { tx }, rx)
    }

    pub fn shutdown(&self) {
        self.tx.send_replace(true);
    }
}

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A running stand-in: its state, shared with the server task, and the guard that stops the
/// server. Clones share both; the server task holds the state but not the guard, so dropping
/// the last clone stops it.
pub struct Running<S> {
    addr: SocketAddr,
    state: Arc<S>,
    guard: Arc<ShutdownGuard>,
}

impl<S> Clone for Running<S> {
    fn clone(&self) -> Self {
        Running {
            addr: self.addr,
            state: self.state.clone(),
            guard: self.guard.clone(),
        }
    }
}

/// Where the server listens, and nothing of its state: that holds credentials, which must not
/// reach test output.
impl<S> fmt::Debug for Running<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl<S> Deref for Running<S> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.state
    }
}

impl<S> Running<S> {
    /// Stops the server now, before the last clone is dropped.
    pub fn shutdown(&self) {
        self.guard.shutdown();
    }
}

/// Serves `listener` (under TLS with `tls`) with `handler`, which gets the shared `state`
/// with every request; see [`spawn`].
pub fn serve<S, H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: S,
    handler: H,
) -> std::io::Result<Running<S>>
where
    S: Send + Sync + 'static,
    H: Fn(Arc<S>, Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<RespBody>, HandlerError>> + Send + 'static,
{
    let addr = listener.local_addr()?;
    let (guard, shutdown) = ShutdownGuard::new();
    let state = Arc::new(state);
    let served = state.clone();
    spawn(listener, tls, shutdown, move |req, peer| {
        handler(served.clone(), req, peer)
    });
    Ok(Running {
        addr,
        state,
        guard: Arc::new(guard),
    })
}

/// Waits until `count` reaches at least `n`; false on timeout. No polling or sleeps.
pub async fn wait_for_count(count: &watch::Sender<usize>, n: usize, timeout: Duration) -> bool {
    let mut rx = count.subscribe();
    let reached = tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n))
        .await
        .is_ok_and(|r| r.is_ok());
    reached
}

/// Locks `m` even if a holder panicked: a panicking test thread must not take every later
/// assertion down with it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits until shutdown is signalled (or the guard is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone, which is a shutdown too.
    let _ = rx.wait_for(|s| *s).await;
}

/// Binds `127.0.0.1:port` (0 = any free port). Loopback only, always.
pub async fn bind_loopback(port: u16) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Spawns the accept loop: HTTP/1.1 and HTTP/2 (h2c, or by ALPN under TLS) via hyper-util auto.
pub fn spawn<H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
    handler: H,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<RespBody>, HandlerError>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stopped(shutdown.clone()) => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, peer)) = accepted else {
                // Transient accept errors (EMFILE, aborted handshakes) must not end the server.
                tokio::task::yield_now().await;
                continue;
            };
            let handler = handler.clone();
            let shutdown = shutdown.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let mut info = ConnInfo {
                    peer,
                    server_name: None,
                };
                match tls {
                    None => serve_connection(stream, info, handler, shutdown).await,
                    Some(acceptor) => {
                        let tls_stream = tokio::select! {
                            _ = stopped(shutdown.clone()) => return,
                            s = acceptor.accept(stream) => s,
                        };
                        if let Ok(tls_stream) = tls_stream {
                            info.server_name =
                                tls_stream.get_ref().1.server_name().map(str::to_string);
                            serve_connection(tls_stream, info, handler, shutdown).await;
                        }
                    }
                }
            });
        }
    });
}

async fn serve_connection<IO, H, F>(
    io: IO,
    info: ConnInfo,
    handler: H,
    shutdown: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<RespBody>, HandlerError>> + Send + 'static,
{
    let peer = info.peer;
    let service = service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        handler(req, peer)
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_BUF);
    builder.http2().max_header_list_size(MAX_HEADER_LIST);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::select! {
        _ = stopped(shutdown) => {}
        // Connection errors (a client that went away, a deliberate close) are expected here.
        _ = conn => {}
    }
}
