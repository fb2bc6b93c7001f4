//! Replays the fuzz corpus (`fuzz/corpus/prepare/`) through the same
//! checks the fuzz target runs (`fuzz/check.rs`), so a plain `cargo test` on stable re-checks every input the fuzzer
//! kept, without nightly or cargo-fuzz.

include!("../fuzz/check.rs");

/// Every file of `fuzz/corpus/<target>/` passes `check`.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 20, "corpus has only {} files", files.len());
    for path in &files {
        let data = std::fs::read(path).expect("read corpus file");
        let run = std::panic::catch_unwind(|| check(&data));
        assert!(
            run.is_ok(),
            "{} fails the checks: {:?}",
            path.display(),
            String::from_utf8_lossy(&data)
        );
    }
}

#[test]
fn fuzz_corpus_replays_clean() {
    replay("prepare", check_prepare);
}

#[test]
fn seed_heads_take_the_paths_they_were_written_for() {
    // A few properties the corpus must keep exercising, so the replay cannot pass vacuously.
    let fx = fuzz_fixture();
    let prepared = |head: &[u8]| {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(head).expect("parses");
        let mut b = http::Request::builder()
            .method(req.method.expect("method"))
            .uri(req.path.expect("path"));
        for h in req.headers.iter() {
            b = b.header(h.name, h.value);
        }
        let (mut parts, ()) = b.body(()).expect("request").into_parts();
        fx.target.prepare(&mut parts).map(|_| parts)
    };
    let ok = prepared(b"GET /a%2Fb/../c?b=2&a=1&a=%20 HTTP/1.1\r\nHost: evil\r\n\r\n").expect("ok");
    assert_eq!(
        ok.uri.to_string(),
        "https://abc123.execute-api.us-east-1.amazonaws.com/Prod/a%2Fb/../c?b=2&a=1&a=%20"
    );
    for refused in [
        &b"GET http://evil/ HTTP/1.1\r\n\r\n"[..],
        b"CONNECT evil:443 HTTP/1.1\r\n\r\n",
        b"GET * HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
    ] {
        assert!(
            prepared(refused).is_err(),
            "{}",
            String::from_utf8_lossy(refused)
        );
    }
    check_prepare(b"GET /a%2Fb/../c?b=2&a=1&a=%20 HTTP/1.1\r\nHost: evil\r\n\r\n");
}
