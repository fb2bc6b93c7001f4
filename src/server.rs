//! Accept loops and graceful shutdown, shared by the proxy and admin listeners.
//!
//! Shutdown follows hyper-util's graceful pattern: when the shutdown signal fires, the listener
//! is dropped (new connections are refused by the kernel), idle keep-alive connections are
//! closed, and in-flight requests may finish until the caller's grace period runs out.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Limits;
use crate::framing::{AmbiguousFraming, Framing, Verdict, Watched};
use crate::proxy::ProxyBody;

/// The answer to a connection over `max_connections`, written without parsing its request.
const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
x-sigv4-sidecar-error: overloaded\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 91\r\n\r\n\
{\"error\":\"overloaded\",\"message\":\"too many open connections (max_connections); retry later\"}";

/// Binds a TCP listener, naming the address in the error.
pub async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))
}

/// Serves HTTP/1.1 (and h2c by prior knowledge) on `listener` with `handler` until `shutdown`
/// turns true, then returns the handle that tracks the connections still open.
pub async fn serve<H, Fut>(
    listener: TcpListener,
    handler: H,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) -> GracefulShutdown
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    // hyper's own builders, not hyper-util's auto builder: the first bytes already tell the
    // protocol (`first_bytes_within`), and only the HTTP/1 builder can enforce
    // `max_header_bytes` on every head (`max_header_size`; the read buffer limit alone lets a
    // head that arrives in one read grow to about twice the limit).
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_headers(Limits::max_header_lines(limits.max_header_bytes))
        .max_buf_size(limits.max_header_bytes.max(8192));
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let builders = std::sync::Arc::new((http1, http2));
    let graceful = GracefulShutdown::new();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let stopped = async move {
        loop {
            let stop = *shutdown.borrow_and_update();
            if stop || shutdown.changed().await.is_err() {
                return;
            }
        }
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
                    tokio::spawn(refuse(stream));
                    continue;
                };
                let handler = handler.clone();
                let builders = builders.clone();
                let watcher = graceful.watcher();
                let first_bytes_timeout = limits.header_read_timeout;
                let max_head = limits.max_header_bytes;
                tokio::spawn(async move {
                    let Some(protocol) = first_bytes_within(&stream, first_bytes_timeout).await
                    else {
                        return; // and the slot is released with the task
                    };
                    let verdict = Verdict::new();
                    let svc = {
                        let verdict = verdict.clone();
                        service_fn(move |mut req: Request<Incoming>| {
                            if verdict.next_is_ambiguous() {
                                req.extensions_mut().insert(AmbiguousFraming);
                            }
                            let fut = handler(req);
                            async move { Ok::<_, Infallible>(fut.await) }
                        })
                    };
                    let (http1, http2) = &*builders;
                    let ended = match protocol {
                        Protocol::Http1 => {
                            let io = Watched::new(stream, Framing::http1(max_head), verdict);
                            watcher
                                .watch(http1.serve_connection(TokioIo::new(io), svc))
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

/// Answers a connection over the limit with a 503 and closes it.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    tracing::warn!("max_connections reached: refusing a connection");
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(OVERLOADED).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn overloaded_answer_is_well_formed() {
        let text = std::str::from_utf8(super::OVERLOADED).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.parse().ok())
            .expect("content-length");
        assert_eq!(len, body.len());
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["error"], "overloaded");
    }
}
