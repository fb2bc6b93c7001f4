//! The HTTP/1 framing watch (`src/framing.rs`) on its own: what following the request bytes
//! costs per request, on top of hyper's own parse.
//!
//! - `framing/get_head`: one typical GET head (about 200 bytes) in one read;
//! - `framing/post_4k`: a POST head plus a 4 KiB `Content-Length` body in one read;
//! - `framing/chunked_4k`: the same body sent as four 1 KiB chunks;
//! - `framing/trickled_8k_head`: an 8 KiB head arriving one byte per read (a slow client): the
//!   watch must stay linear in the head's length, not re-parse the buffered head on every read.
//!
//! Each iteration is one request, so the time per iteration is the added ns/request.
//!
//! Run: `cargo bench --bench framing` (add `-- --quick` for a fast pass).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sigv4_sidecar::framing::Framing;

const GET: &[u8] = b"GET /Prod/hello-world?b=2&a=1 HTTP/1.1\r\nhost: localhost:8080\r\n\
accept: application/json\r\nuser-agent: bench-client/1.0 (linux; x86_64)\r\n\
content-type: application/json\r\n\r\n";

fn post(len: usize) -> Vec<u8> {
    let mut r = format!(
        "POST /Prod/items HTTP/1.1\r\nhost: localhost:8080\r\ncontent-type: application/json\r\n\
         content-length: {len}\r\n\r\n"
    )
    .into_bytes();
    r.resize(r.len() + len, b'x');
    r
}

fn chunked(len: usize, chunk: usize) -> Vec<u8> {
    let mut r = b"POST /Prod/items HTTP/1.1\r\nhost: localhost:8080\r\n\
transfer-encoding: chunked\r\n\r\n"
        .to_vec();
    for _ in 0..len / chunk {
        r.extend_from_slice(format!("{chunk:x}\r\n").as_bytes());
        r.resize(r.len() + chunk, b'x');
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"0\r\n\r\n");
    r
}

fn framing(c: &mut Criterion) {
    let mut g = c.benchmark_group("framing");
    g.throughput(Throughput::Elements(1));
    let post = post(4096);
    let chunked = chunked(4096, 1024);
    for (name, bytes) in [
        ("get_head", GET),
        ("post_4k", &post[..]),
        ("chunked_4k", &chunked[..]),
    ] {
        let mut f = Framing::http1(64 * 1024);
        g.bench_function(name, |b| {
            b.iter(|| {
                // A connection's watch follows request after request.
                black_box(f.feed(black_box(bytes)));
            })
        });
        assert!(f.heads() > 1000, "the watch followed every request");
    }
    let trickled = format!(
        "GET / HTTP/1.1\r\nhost: localhost\r\nx-pad: {}\r\n\r\n",
        "p".repeat(8 * 1024)
    );
    g.bench_function("trickled_8k_head", |b| {
        b.iter(|| {
            let mut f = Framing::http1(64 * 1024);
            for byte in trickled.as_bytes().chunks(1) {
                black_box(f.feed(black_box(byte)));
            }
            assert_eq!(f.heads(), 1);
        })
    });
    g.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
