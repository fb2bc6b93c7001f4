//! The small hyper 1 server loop shared by the STS emulator and the gateway.
//!
//! Each stand-in owns a [`ShutdownGuard`] inside an `Arc` held by its clone-able handles: when
//! the last handle is dropped (or `shutdown()` is called) the accept loop stops and every open
//! connection is dropped, so a test never leaks a server into the next one.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

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
