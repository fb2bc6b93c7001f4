//! Hand-made upstreams on 127.0.0.1 for the fault tests: raw TCP, so a test decides every byte
//! (or reset) the sidecar gets back.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use sigv4_testbed::sts::StsEmulator;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{ready_sidecar, sts, Launch, Sidecar};

/// A hand-made upstream on 127.0.0.1: `serve` runs for every accepted connection (with its
/// index). Lives until the test's runtime ends.
pub async fn raw_upstream<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, n));
            n += 1;
        }
    });
    addr
}

/// A hand-made upstream that reads each connection's first request (head and body), then runs
/// `answer` with the stream and the request head; what `answer` returns is reported on the
/// receiver. A connection closed before a whole request is dropped without an answer.
pub async fn scripted_upstream<T, F, Fut>(answer: F) -> (SocketAddr, mpsc::UnboundedReceiver<T>)
where
    T: Send + 'static,
    F: Fn(TcpStream, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let answer = std::sync::Arc::new(answer);
    let addr = raw_upstream(move |mut s, _| {
        let (tx, answer) = (tx.clone(), answer.clone());
        async move {
            if let Some(head) = read_request(&mut s).await {
                let _ = tx.send(answer(s, head).await);
            }
        }
    })
    .await;
    (addr, rx)
}

/// Reads an HTTP/1.1 request head (and a `Content-Length` body) from a raw stream; `None` if
/// the peer closed first.
pub async fn read_request<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < len {
        let n = s.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        have += n;
    }
    Some(head)
}

/// A ready sidecar in front of a hand-made upstream at `addr` (`extra`: settings), with an STS
/// emulator of its own (hour-long credentials) that must live as long.
pub async fn raw_sidecar(addr: SocketAddr, extra: &[(&str, &str)]) -> (StsEmulator, Sidecar) {
    let sts = sts(Duration::from_secs(3600)).await;
    let mut launch = Launch::new(&format!("http://{addr}/Prod"), &sts);
    for (k, v) in extra {
        launch = launch.set(k, v);
    }
    let sidecar = ready_sidecar(launch).await;
    (sts, sidecar)
}

/// An app connection to `addr` that has written `request` (raw bytes: the test reads the answer
/// byte by byte, or walks away).
pub async fn app_connection(addr: SocketAddr, request: &[u8]) -> TcpStream {
    let mut app = TcpStream::connect(addr).await.expect("connect");
    app.write_all(request).await.expect("write the request");
    app
}

/// An app connection to `addr` that has sent `GET path` (raw, `Host: app`).
pub async fn app_get(addr: SocketAddr, path: &str) -> TcpStream {
    app_connection(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: app\r\n\r\n").as_bytes(),
    )
    .await
}

/// Reads from `app` until the response head and more than `body_bytes` of the body arrived
/// (10 s for each read); returns everything read and where the body starts.
pub async fn read_past_head(app: &mut TcpStream, body_bytes: usize) -> (Vec<u8>, usize) {
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), app.read(&mut buf))
            .await
            .expect("the first body bytes in time")
            .expect("read");
        assert!(n > 0, "closed before the first body bytes");
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            if got.len() > i + 4 + body_bytes {
                return (got, i + 4);
            }
        }
    }
}
