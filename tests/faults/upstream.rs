//! Upstream faults: resets before and after the response headers, a stall past
//! `request_timeout`, HTTP/2 GOAWAY (graceful and abrupt).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use sigv4_testbed::sts::StsEmulator;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_before_the_response_headers_is_502() {
    let (addr, mut heads) = scripted_upstream(|s, head| async move {
        // SO_LINGER 0: close with RST.
        let _ = s.set_zero_linger();
        head
    })
    .await;
    let (_sts, sidecar) = raw_sidecar(addr, &[]).await;
    let res = get(&sidecar.url("/reset")).await;
    res.assert_sidecar(502, "upstream_unreachable");
    let head = heads
        .recv()
        .await
        .expect("the request reached the upstream");
    assert!(
        head.to_ascii_lowercase()
            .contains("authorization: aws4-hmac-sha256"),
        "{head}"
    );
    assert_inflight_returns_to_zero(&sidecar).await;
}

/// The upstream sends the headers and part of the body, then resets the connection. The client
/// must see an incomplete answer (fewer bytes than Content-Length, or no terminating chunk) and
/// a closed connection, never a clean short 200.
async fn truncated_body(chunked: bool) {
    let (reset_tx, reset_rx) = watch::channel(false);
    let (addr, _) = scripted_upstream(move |mut s, _| {
        let mut reset = reset_rx.clone();
        async move {
            let mut out = Vec::new();
            if chunked {
                out.extend_from_slice(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
                out.extend_from_slice(b"2710\r\n");
                out.extend_from_slice(&[b'a'; 10_000]);
                out.extend_from_slice(b"\r\n");
            } else {
                out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n");
                out.extend_from_slice(&[b'a'; 10_000]);
            }
            let _ = s.write_all(&out).await;
            let _ = s.flush().await;
            // Reset once the client has seen the first part.
            let _ = reset.wait_for(|r| *r).await;
            let _ = s.set_zero_linger();
        }
    })
    .await;
    let (_sts, sidecar) = raw_sidecar(addr, &[]).await;

    let mut app = app_get(sidecar.proxy, "/truncated").await;
    let (mut got, head_end) = read_past_head(&mut app, 100).await;
    reset_tx.send_replace(true);
    // The sidecar must close the connection: read to EOF (or a reset), not to a timeout.
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), app.read(&mut buf)).await {
            Err(_) => panic!(
                "connection left open after the upstream broke; got {} bytes",
                got.len()
            ),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    let body = &got[head_end..];
    assert!(head.starts_with("http/1.1 200"), "{head}");
    if chunked {
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        assert!(
            !body.ends_with(b"0\r\n\r\n"),
            "a terminating chunk made the truncated body look complete"
        );
    } else {
        assert!(head.contains("content-length: 100000"), "{head}");
        assert!(
            body.len() < 100_000,
            "{} bytes of a declared 100000",
            body.len()
        );
    }
    let line = sidecar.access_line("/truncated");
    assert_eq!(
        line["outcome"], "upstream_truncated",
        "access log records the truncation: {line}"
    );
    assert_inflight_returns_to_zero(&sidecar).await;
    // And hyper's client, as an app would use it, sees an error, not a complete body.
    let res = client()
        .get(sidecar.url("/truncated").parse().expect("uri"))
        .await;
    // The upstream resets at once this time (the watch is already true): a 502 from the
    // sidecar if the reset came before the headers were read, else a 200 whose body fails.
    // Both outcomes are checked; neither may look like a complete answer.
    let res = res.expect("the sidecar answers");
    if res.status() == 200 {
        use http_body_util::BodyExt;
        assert!(
            res.into_body().collect().await.is_err(),
            "a truncated body was delivered as complete"
        );
    } else {
        assert_eq!(res.status(), 502);
        let code = res.headers().get("x-sigv4-sidecar-error");
        assert_eq!(
            code.and_then(|v| v.to_str().ok()),
            Some("upstream_unreachable")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_mid_body_with_content_length_is_an_honest_truncation() {
    truncated_body(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_mid_chunked_body_sends_no_terminating_chunk() {
    truncated_body(true).await;
}

/// An upstream that accepts the request and never answers: 504 at `request_timeout`, and the
/// sidecar closes that upstream connection rather than leaving the exchange open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_stalled_past_request_timeout_is_504_and_the_exchange_is_abandoned() {
    let (addr, mut closed) = scripted_upstream(|mut s, _| async move {
        // Answer nothing; report when the sidecar closes the connection.
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        Instant::now()
    })
    .await;
    let (_sts, sidecar) = raw_sidecar(addr, &[("REQUEST_TIMEOUT", "1s")]).await;
    let started = Instant::now();
    let res = get(&sidecar.url("/stall")).await;
    let answered = started.elapsed();
    res.assert_sidecar(504, "upstream_timeout");
    assert!(
        answered >= Duration::from_secs(1) && answered < Duration::from_secs(4),
        "answered after {answered:?}"
    );
    let closed_at = tokio::time::timeout(Duration::from_secs(5), closed.recv())
        .await
        .expect("the sidecar closed the stalled upstream connection")
        .expect("closed");
    assert!(closed_at.duration_since(started) < Duration::from_secs(5));
    assert_inflight_returns_to_zero(&sidecar).await;
}

// ---- HTTP/2 GOAWAY: a TLS upstream that speaks h2 (the sidecar uses h2 only by ALPN) ----

/// A TLS acceptor offering only h2, with a certificate for 127.0.0.1 from a fresh CA written to
/// `dir` (for `ca_file`).
fn h2_tls(dir: &Path) -> (tokio_rustls::TlsAcceptor, PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "faults test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().expect("ca key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let ca_path = dir.join("h2-ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).expect("write ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let mut leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("leaf params");
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).expect("leaf");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("tls versions")
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .expect("cert");
    config.alpn_protocols = vec![b"h2".to_vec()];
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca_path)
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum GoAway {
    /// GOAWAY on the first request, which is still answered (a server rolling its connections).
    Graceful,
    /// GOAWAY with INTERNAL_ERROR while the first request waits for its answer.
    Abrupt,
}

/// What the h2 upstream saw: (connection index, request path, signed?) per request, and a
/// connection index when that connection ended.
#[derive(Debug)]
enum H2Event {
    Request(usize, String, bool),
    Closed(usize),
}

async fn h2_upstream(
    kind: GoAway,
    dir: &Path,
) -> (SocketAddr, PathBuf, mpsc::UnboundedReceiver<H2Event>) {
    let (acceptor, ca) = h2_tls(dir);
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = raw_upstream(move |tcp, n| {
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let Ok(mut conn) = h2::server::handshake(tls).await else {
                return;
            };
            let mut held = Vec::new();
            while let Some(Ok((req, mut respond))) = conn.accept().await {
                let signed = req.headers().contains_key("authorization")
                    && req.version() == http::Version::HTTP_2;
                let _ = tx.send(H2Event::Request(n, req.uri().path().to_string(), signed));
                if n == 0 && held.is_empty() && kind == GoAway::Abrupt {
                    conn.abrupt_shutdown(h2::Reason::INTERNAL_ERROR);
                    held.push(respond); // never answered
                    continue;
                }
                if n == 0 && kind == GoAway::Graceful {
                    conn.graceful_shutdown();
                }
                let res = http::Response::builder()
                    .status(200)
                    .header("content-type", "text/plain")
                    .body(())
                    .expect("response");
                if let Ok(mut body) = respond.send_response(res, false) {
                    let _ = body.send_data(bytes::Bytes::from(format!("conn {n}")), true);
                }
            }
            drop(held);
            let _ = tx.send(H2Event::Closed(n));
        }
    })
    .await;
    (addr, ca, rx)
}

async fn next_request(rx: &mut mpsc::UnboundedReceiver<H2Event>) -> (usize, String, bool) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(H2Event::Request(n, path, signed))) => return (n, path, signed),
            Ok(Some(H2Event::Closed(_))) => continue,
            other => panic!("no request at the h2 upstream: {other:?}"),
        }
    }
}

async fn wait_closed(rx: &mut mpsc::UnboundedReceiver<H2Event>, conn: usize) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(H2Event::Closed(n))) if n == conn => return,
            Ok(Some(_)) => continue,
            other => panic!("h2 connection {conn} never closed: {other:?}"),
        }
    }
}

/// An h2 upstream sending `kind` of GOAWAY, and a ready sidecar trusting its CA.
struct H2Stack {
    sidecar: Sidecar,
    events: mpsc::UnboundedReceiver<H2Event>,
    _sts: StsEmulator,
    _dir: tempfile::TempDir,
}

async fn h2_stack(kind: GoAway) -> H2Stack {
    let sts = sts(Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, ca, events) = h2_upstream(kind, dir.path()).await;
    let sidecar = ready_sidecar(
        Launch::new(&format!("https://{addr}/Prod"), &sts)
            .set("CA_FILE", ca.to_str().expect("utf-8 path")),
    )
    .await;
    H2Stack {
        sidecar,
        events,
        _sts: sts,
        _dir: dir,
    }
}

impl H2Stack {
    /// Asserts the first request reached the upstream signed, over h2, on connection 0 (at
    /// `target`), and that connection 0 then closed.
    async fn assert_first_connection_served_and_closed(&mut self, target: &str) {
        let (conn, path, signed) = next_request(&mut self.events).await;
        assert_eq!((conn, path.as_str(), signed), (0, target, true));
        wait_closed(&mut self.events, 0).await;
    }

    /// GETs `path` and asserts the upstream answered it on its connection `conn`.
    async fn assert_served_on(&self, path: &str, conn: usize) {
        let res = get(&self.sidecar.url(path)).await;
        assert_eq!(res.status, 200, "{path}: {:?}", res.body);
        assert_eq!(
            &res.body[..],
            format!("conn {conn}").as_bytes(),
            "{path} on connection {conn}"
        );
    }
}

/// A graceful GOAWAY (the upstream rolls its connection): the request it came with is answered,
/// and later requests go over a new connection without a single failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_h2_graceful_goaway_loses_no_request() {
    let mut h2 = h2_stack(GoAway::Graceful).await;
    h2.assert_served_on("/first", 0).await;
    h2.assert_first_connection_served_and_closed("/Prod/first")
        .await;
    for i in 0..5 {
        // After the GOAWAY, on a new connection.
        h2.assert_served_on(&format!("/after-goaway/{i}"), 1).await;
    }
    assert_inflight_returns_to_zero(&h2.sidecar).await;
}

/// An abrupt GOAWAY (INTERNAL_ERROR) while a request waits for its answer: 502
/// `upstream_unreachable`, and the next request is served over a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_h2_abrupt_goaway_is_502_then_a_new_connection_serves() {
    let mut h2 = h2_stack(GoAway::Abrupt).await;
    let res = get(&h2.sidecar.url("/doomed")).await;
    res.assert_sidecar(502, "upstream_unreachable");
    h2.assert_first_connection_served_and_closed("/Prod/doomed")
        .await;
    h2.assert_served_on("/next", 1).await;
    assert_inflight_returns_to_zero(&h2.sidecar).await;
}
