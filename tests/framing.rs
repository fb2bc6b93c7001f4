//! The framing watch (`src/framing.rs`) against hyper itself. Random pipelined request streams
//! (every body framing hyper accepts: none, `Content-Length`, chunked with extensions, white
//! space and trailers, bodies that look like requests), written in random cuts, are served by
//! hyper's real HTTP/1 server through `Watched`, exactly as `server.rs` does it. The watch counts
//! requests on its own, so any disagreement with hyper about where a request starts shows up as
//! a missing or misplaced mark: it must mark exactly the request that carried both
//! `Content-Length` and `Transfer-Encoding`, and none before it.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sigv4_sidecar::framing::{Framing, Verdict, Watched};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// One generated request: its bytes, its path, and whether it carries both headers.
struct Generated {
    bytes: Vec<u8>,
    path: String,
    ambiguous: bool,
}

fn cased(rng: &mut fastrand::Rng, name: &str) -> String {
    name.chars()
        .map(|c| {
            if rng.bool() {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// A body whose bytes may themselves look like requests, or like chunk framing.
fn body(rng: &mut fastrand::Rng) -> Vec<u8> {
    let pieces: [&[u8]; 5] = [
        b"POST /inner HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"0\r\n\r\n",
        b"\r\n",
        b"hello",
        b"\x00\xff",
    ];
    let mut b = Vec::new();
    for _ in 0..rng.usize(0..4) {
        b.extend_from_slice(pieces[rng.usize(..pieces.len())]);
    }
    b
}

fn chunked(rng: &mut fastrand::Rng, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = rng.usize(1..=rest.len());
        let size = if rng.bool() {
            format!("{n:x}")
        } else {
            format!("{n:X}")
        };
        let pad = ["", " ", "\t "][rng.usize(..3)];
        let ext = ["", ";a=1", ";x", ";q=\"v\""][rng.usize(..4)];
        out.extend_from_slice(format!("{size}{pad}{ext}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(if rng.bool() { b"0\r\n" } else { b"000;end\r\n" });
    for i in 0..rng.usize(0..3) {
        out.extend_from_slice(format!("x-trailer-{i}: v{i}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn request(rng: &mut fastrand::Rng, i: usize, ambiguous: bool) -> Generated {
    let path = format!("/r{i}");
    let method = ["GET", "POST", "PUT", "DELETE", "PATCH"][rng.usize(..5)];
    let mut head = String::new();
    if rng.u8(..8) == 0 {
        head.push_str("\r\n");
    }
    head.push_str(&format!("{method} {path} HTTP/1.1\r\nHost: a\r\n"));
    if rng.u8(..4) == 0 {
        head.push_str("x-filler: 1234567890\r\n");
    }
    let data = body(rng);
    let te = cased(rng, "Transfer-Encoding");
    let cl = cased(rng, "Content-Length");
    let body = if ambiguous {
        let lines = [
            format!("{cl}: {}\r\n", rng.usize(0..100)),
            format!("{te}: chunked\r\n"),
        ];
        if rng.bool() {
            head.push_str(&lines[0]);
            head.push_str(&lines[1]);
        } else {
            head.push_str(&lines[1]);
            head.push_str(&lines[0]);
        }
        chunked(rng, &data)
    } else {
        match rng.u8(..4) {
            0 if data.is_empty() => Vec::new(),
            0 | 1 => {
                head.push_str(&format!("{cl}: {}\r\n", data.len()));
                if rng.u8(..4) == 0 {
                    head.push_str(&format!("{cl}: {}\r\n", data.len()));
                }
                data
            }
            2 => {
                head.push_str(&format!("{te}: chunked\r\n"));
                chunked(rng, &data)
            }
            _ => {
                head.push_str(&format!("{te}: gzip, chunked\r\n"));
                chunked(rng, &data)
            }
        }
    };
    if rng.u8(..6) == 0 {
        head.push_str("Expect: 100-continue\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&body);
    Generated {
        bytes,
        path,
        ambiguous,
    }
}

/// Serves `stream` with hyper through the watch; returns (path, marked) per dispatched request.
async fn serve(stream: Vec<u8>, expected: usize, rng: &mut fastrand::Rng) -> Vec<(String, bool)> {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let verdict = Verdict::new();
    let io = Watched::new(server, Framing::http1(64 * 1024), verdict.clone());
    let svc = service_fn(move |req: Request<Incoming>| {
        let marked = verdict.next_is_ambiguous();
        let _ = tx.send((req.uri().path().to_string(), marked));
        async move {
            let mut res = Response::new(Full::new(Bytes::new()));
            if marked {
                // As the proxy answers: refused unread, connection closed.
                *res.status_mut() = StatusCode::BAD_REQUEST;
                res.headers_mut()
                    .insert(http::header::CONNECTION, "close".parse().expect("value"));
            } else {
                req.into_body().collect().await.expect("body hyper framed");
            }
            Ok::<_, Infallible>(res)
        }
    });
    // Configured as server.rs configures it for the default limits.
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.max_header_size(64 * 1024).max_buf_size(64 * 1024);
    let conn = tokio::spawn(http1.serve_connection(TokioIo::new(io), svc));
    let cuts: Vec<usize> = (0..stream.len()).map(|_| rng.usize(1..=48)).collect();
    let writer = tokio::spawn(async move {
        let mut rest = &stream[..];
        for cut in cuts {
            if rest.is_empty() {
                break;
            }
            let n = cut.min(rest.len());
            if client.write_all(&rest[..n]).await.is_err() {
                break;
            }
            rest = &rest[n..];
            tokio::task::yield_now().await;
        }
        client
    });
    let mut seen = Vec::new();
    while seen.len() < expected {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(r)) => seen.push(r),
            Ok(None) | Err(_) => break,
        }
    }
    // Nothing more may be dispatched after the expected requests.
    let _client = writer.await.expect("writer");
    if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(20), rx.recv()).await {
        seen.push(extra);
    }
    conn.abort();
    seen
}

#[tokio::test]
async fn the_watch_marks_exactly_what_hyper_dispatches_with_both_headers() {
    let mut rng = fastrand::Rng::with_seed(0x5167_5eed);
    for round in 0..400 {
        let n = rng.usize(1..8);
        let ambiguous_at = if round % 4 == 0 {
            None
        } else {
            Some(rng.usize(..n))
        };
        let requests: Vec<Generated> = (0..n)
            .map(|i| request(&mut rng, i, Some(i) == ambiguous_at))
            .collect();
        let stream: Vec<u8> = requests.iter().flat_map(|r| r.bytes.clone()).collect();
        let dispatched = ambiguous_at.map_or(n, |a| a + 1);
        let expected: Vec<(String, bool)> = requests[..dispatched]
            .iter()
            .map(|r| (r.path.clone(), r.ambiguous))
            .collect();
        let seen = serve(stream.clone(), dispatched, &mut rng).await;
        assert_eq!(
            seen,
            expected,
            "round {round}: stream {:?}",
            String::from_utf8_lossy(&stream)
        );
    }
}
