//! Accept loops and graceful shutdown, shared by the proxy and admin listeners.
//!
//! Shutdown follows hyper-util's graceful pattern: when the shutdown signal (one
//! `watch::Receiver<bool>` turning true) fires, the listener is dropped (new connections are
//! refused by the kernel), idle keep-alive connections are closed, and in-flight requests may
//! finish until the caller's grace period runs out.
//!
//! The server knows nothing of what it serves: the handler and its body type come from the
//! caller (the proxy's [`ProxyBody`](crate::proxy::ProxyBody), the admin port's `Full`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Limits;
use crate::error::{ProxyError, StartupError};

/// Binds a TCP listener, naming the address in the error.
pub async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Listen {
            what: what.to_string(),
            addr,
            source,
        })
}

/// hyper's HTTP/1 server settings for `limits`: the one definition, which the tests' own
/// servers reuse so they parse exactly as the sidecar does.
///
/// `max_header_size` enforces `max_header_bytes` on every head (the read buffer limit alone
/// lets a head that arrives in one read grow to about twice the limit).
pub fn http1_builder(limits: &Limits) -> http1::Builder {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_headers(Limits::max_header_lines(limits.max_header_bytes))
        .max_buf_size(limits.max_header_bytes.max(8192));
    http1
}

/// Serves HTTP/1.1 (and h2c by prior knowledge) on `listener` with `handler` until `shutdown`
/// turns true, then returns the handle that tracks the connections still open.
pub async fn serve<H, Fut, B>(
    listener: TcpListener,
    handler: H,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) -> GracefulShutdown
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // hyper's own builders, not hyper-util's auto builder: the first bytes already tell the
    // protocol (`first_bytes_within`), and only the HTTP/1 builder can enforce
    // `max_header_bytes` on every head.
    let http1 = http1_builder(&limits);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let builders = std::sync::Arc::new((http1, http2));
    let graceful = GracefulShutdown::new();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let overloaded = ProxyError::TooManyConnections.to_http1();
    // A dropped sender (Err) means the same as `true`: nobody is left to keep serving for.
    let stopped = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tokio::spawn(refuse(stream, overloaded.clone()));
                    continue;
                };
                let handler = handler.clone();
                let builders = builders.clone();
                let watcher = graceful.watcher();
                let first_bytes_timeout = limits.header_read_timeout;
                tokio::spawn(async move {
                    let Some(protocol) = first_bytes_within(&stream, first_bytes_timeout).await
                    else {
                        return; // and the slot is released with the task
                    };
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let fut = handler(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let (http1, http2) = &*builders;
                    let ended = match protocol {
                        Protocol::Http1 => {
                            watcher
                                .watch(http1.serve_connection(TokioIo::new(stream), svc))
                                .await
                        }
                        Protocol::H2 => {
                            watcher
                                .watch(http2.serve_connection(TokioIo::new(stream), svc))
                                .await
                        }
                    };
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    graceful
}

/// A connection's first bytes tell HTTP/1 from the h2c preface. Waiting for them needs a
/// timeout of its own (hyper's `header_read_timeout` only starts once hyper serves), or a client
/// that connects and sends nothing, or trickles the preface, would hold its `max_connections`
/// slot forever. Waits, at most `limit`, until the first bytes decide the protocol; `None` when the
/// client sent nothing decisive in time or closed.
async fn first_bytes_within(stream: &tokio::net::TcpStream, limit: Duration) -> Option<Protocol> {
    const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let decided = async {
        let mut buf = [0u8; H2_PREFACE.len()];
        loop {
            let n = match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => n,
            };
            if buf[..n] != H2_PREFACE[..n] {
                return Some(Protocol::Http1);
            }
            if n == H2_PREFACE.len() {
                return Some(Protocol::H2);
            }
            // A strict prefix of the preface: `peek` would return the same bytes at once.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(limit, decided).await.ok().flatten()
}

/// What a connection's first bytes say it speaks.
enum Protocol {
    Http1,
    /// HTTP/2 with prior knowledge (h2c): no HTTP/1 framing to watch.
    H2,
}

/// Answers a connection over the limit with error.rs's 503 and closes it.
async fn refuse(mut stream: tokio::net::TcpStream, answer: Bytes) {
    use tokio::io::AsyncWriteExt;
    ProxyError::TooManyConnections.log(None);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&answer).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// hyper >= 1.11 with the sidecar's own settings frames a request carrying both
    /// `Content-Length` and `Transfer-Encoding` by the chunked coding alone, hands the handler
    /// no `Content-Length`, and closes the connection after the answer (RFC 9112 6.1), so the
    /// bytes after the chunked body are never parsed as a request.
    #[tokio::test]
    async fn cl_te_is_framed_by_chunked_and_the_connection_closes() {
        let limits = Limits {
            max_connections: 1,
            max_inflight_body_bytes: 1 << 20,
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(5),
        };
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
        let svc = service_fn(move |req: Request<Incoming>| {
            let seen = seen_tx.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await.map(|b| b.to_bytes());
                let _ = seen.send((parts.uri.path().to_string(), parts.headers, body.ok()));
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        });
        let conn = tokio::spawn(http1_builder(&limits).serve_connection(TokioIo::new(server), svc));
        client
            .write_all(
                b"POST /clte HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
            )
            .await
            .expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer))
            .await
            .expect("the connection closes after the answer")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert_eq!(
            answer.matches("HTTP/1.1").count(),
            1,
            "one answer: {answer}"
        );
        let (path, headers, body) = seen_rx.recv().await.expect("one request");
        assert_eq!(path, "/clte");
        assert!(
            !headers.contains_key(http::header::CONTENT_LENGTH),
            "{headers:?}"
        );
        assert_eq!(body.as_deref(), Some(&b"hello"[..]));
        assert!(
            seen_rx.try_recv().is_err(),
            "the smuggled request was parsed"
        );
        let _ = conn.await;
    }
}
