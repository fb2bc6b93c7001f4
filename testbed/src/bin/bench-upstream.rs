//! A minimal, fast fixed-response HTTP/1.1 server: the upstream of the load benchmark
//! (`bench/run.sh`). It verifies nothing, so that the benchmark measures the proxy in front of it.
//!
//! - any path: `{"message":"Hello World","caller":"bench"}` (`application/json`);
//! - a path ending in `/16k`: a 16 KiB JSON body;
//! - request bodies are read and discarded.
//!
//! One thread (tokio current-thread runtime), keep-alive, `TCP_NODELAY`, so it can be pinned to a
//! core with `taskset`. Prints `READY <addr>` on stdout once listening.
//!
//! Usage: `bench-upstream [--port N (18081; 0 = any free port)]`

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const SMALL: &[u8] = br#"{"message":"Hello World","caller":"bench"}"#;
const LARGE_LEN: usize = 16 * 1024;

fn large_body() -> Bytes {
    let head = br#"{"message":"Hello World","caller":"bench","pad":""#;
    let tail = br#""}"#;
    let mut v = Vec::with_capacity(LARGE_LEN);
    v.extend_from_slice(head);
    v.resize(LARGE_LEN - tail.len(), b'x');
    v.extend_from_slice(tail);
    debug_assert_eq!(v.len(), LARGE_LEN);
    Bytes::from(v)
}

async fn handle(req: Request<Incoming>, large: Bytes) -> Result<Response<Full<Bytes>>, Infallible> {
    let is_large = req.uri().path().ends_with("/16k");
    // Drain the request body without keeping it.
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
    let bytes = if is_large {
        large
    } else {
        Bytes::from_static(SMALL)
    };
    let mut res = Response::new(Full::new(bytes));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(res)
}

fn parse_port() -> Result<u16, String> {
    let usage = "usage: bench-upstream [--port N (18081; 0 = any free port)]";
    let mut port = 18081;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--port" => {
                let v = it
                    .next()
                    .ok_or_else(|| format!("--port needs a value\n{usage}"))?;
                port = v
                    .parse()
                    .map_err(|_| format!("bad value {v:?} for --port\n{usage}"))?;
            }
            "-h" | "--help" => return Err(usage.to_string()),
            other => return Err(format!("unknown argument {other}\n{usage}")),
        }
    }
    Ok(port)
}

fn main() -> std::process::ExitCode {
    let port = match parse_port() {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("{msg}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-upstream: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("bench-upstream: cannot listen on {addr}: {e}");
                return std::process::ExitCode::from(1);
            }
        };
        let local = listener.local_addr().unwrap_or(addr);
        println!("READY {local}");
        let _ = std::io::stdout().flush();
        let large = large_body();
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("bench-upstream: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let large = large.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(req, large.clone()));
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}
