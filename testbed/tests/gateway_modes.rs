//! The gateway's issue-13 modes over real sockets, with requests signed by the testbed's own
//! signers (the sidecar's signing is checked by the sidecar's tests against these modes):
//! VPC Lattice's streamed UNSIGNED-PAYLOAD bodies and cut-off bodies, SigV4A, TLS with a
//! required API `Host`, the CloudFront-like hop, forced refusals, and many headers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{host_headers, Answer};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use sigv4_testbed::gateway::refusal::{self, signature_mismatch_message};
use sigv4_testbed::gateway::{GatewayBuilder, PatternBody};
use sigv4_testbed::sigv4::{self, Payload, SigV4, Signer};
use sigv4_testbed::sigv4a::SigV4a;
use sigv4_testbed::{sigv4a, BodyState, Credentials, Gateway, Refusal, StsEmulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const API_HOST: &str = "abc123.execute-api.us-east-1.amazonaws.com";

/// An STS emulator and a gateway in front of it, set up by `modes` (e.g.
/// `GatewayBuilder::lattice`).
async fn stack(modes: impl FnOnce(GatewayBuilder) -> GatewayBuilder) -> (StsEmulator, Gateway) {
    let sts = common::sts("AKIDMODESBASE", "modes-secret").await;
    let gw = modes(Gateway::builder(sts.clone()))
        .start()
        .await
        .expect("gw");
    (sts, gw)
}

/// Sends one plain-HTTP request (HTTP/1.1, or h2c with `h2`) to the gateway.
async fn send(
    gw: &Gateway,
    method: Method,
    target: &str,
    headers: HeaderMap,
    body: Bytes,
    h2: bool,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{}{target}", gw.addr()))
        .body(Full::new(body))
        .expect("request");
    *req.headers_mut() = headers;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build_http();
    Answer::collect(client.request(req).await.expect("response")).await
}

/// [`send`] for a bodiless HTTP/1.1 GET.
async fn get(gw: &Gateway, target: &str, headers: HeaderMap) -> Answer {
    send(gw, Method::GET, target, headers, Bytes::new(), false).await
}

fn sign(
    headers: &mut HeaderMap,
    method: &Method,
    target: &str,
    payload: Payload<'_>,
    creds: &Credentials,
    service: &str,
) {
    let signer = Signer::new(creds, "us-east-1", service);
    sigv4::sign_request(&SigV4, method, target, headers, payload, &signer).expect("sign");
}

/// The headers of a bodiless `GET target` to `host`, signed for `execute-api`.
fn signed_get(host: &str, target: &str, creds: &Credentials) -> HeaderMap {
    let mut headers = host_headers(host);
    sign(
        &mut headers,
        &Method::GET,
        target,
        Payload::Body(b""),
        creds,
        "execute-api",
    );
    headers
}

#[tokio::test]
async fn lattice_streams_unsigned_payloads_and_records_cut_off_bodies() {
    let (sts, gw) = stack(GatewayBuilder::lattice).await;
    assert_eq!(gw.url(), format!("http://{}", gw.addr()));
    let host = gw.addr().to_string();
    // Every request below is a `PUT /upload` signed for Lattice.
    let sign_put = |headers: &mut HeaderMap, payload: Payload<'_>| {
        sign(
            headers,
            &Method::PUT,
            "/upload",
            payload,
            &sts.base(),
            "vpc-lattice-svcs",
        )
    };

    // 32 MiB chunked (no Content-Length), signed over UNSIGNED-PAYLOAD.
    let len: u64 = 32 * 1024 * 1024;
    let expected = PatternBody::sha256(len);
    let mut headers = host_headers(&host);
    sign_put(&mut headers, Payload::Unsigned);
    let mut req = Request::builder()
        .method(Method::PUT)
        .uri(format!("http://{host}/upload"))
        .body(Chunked(PatternBody::new(len)))
        .expect("req");
    *req.headers_mut() = headers;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let resp = Answer::collect(client.request(req).await.expect("response")).await;
    assert_eq!(resp.status, StatusCode::OK);
    let echo = resp.json();
    assert_eq!(echo["body_len"], json!(len));
    assert_eq!(echo["body_sha256"], json!(expected));
    assert_eq!(echo["algorithm"], json!(sigv4::ALGORITHM));
    let rec = gw.requests().pop().expect("record");
    assert_eq!(rec.body_state, BodyState::Complete);
    assert_eq!(rec.body_sha256, expected);
    assert!(rec
        .signed_headers
        .iter()
        .any(|h| h == "x-amz-content-sha256"));

    // A signed payload hash is refused by Lattice, before the body is read.
    let mut headers = host_headers(&host);
    sign_put(&mut headers, Payload::Body(b"abc"));
    let signed = send(
        &gw,
        Method::PUT,
        "/upload",
        headers,
        Bytes::from_static(b"abc"),
        false,
    )
    .await;
    assert_eq!(signed.status, StatusCode::FORBIDDEN);
    assert_eq!(
        gw.requests().pop().expect("record").body_state,
        BodyState::NotRead
    );

    // Cut off: Content-Length 1000, 10 bytes, then the connection closes.
    let before = gw.requests().len();
    let mut headers = host_headers(&host);
    headers.insert("content-length", HeaderValue::from_static("1000"));
    sign_put(&mut headers, Payload::Unsigned);
    let mut head = String::from("PUT /upload HTTP/1.1\r\n");
    for (k, v) in &headers {
        head.push_str(&format!("{k}: {}\r\n", v.to_str().expect("ascii")));
    }
    head.push_str("\r\n");
    let mut tcp = tokio::net::TcpStream::connect(gw.addr())
        .await
        .expect("connect");
    tcp.write_all(head.as_bytes()).await.expect("head");
    tcp.write_all(b"0123456789").await.expect("part");
    tcp.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest).await;
    assert!(
        gw.wait_for_requests(before + 1, Duration::from_secs(10))
            .await
    );
    let rec = gw.requests().pop().expect("record");
    assert!(rec.outcome.is_ok(), "{:?}", rec.outcome);
    assert!(!rec.body_complete());
    assert!(
        matches!(rec.body_state, BodyState::Incomplete(_)),
        "{:?}",
        rec.body_state
    );
    assert_eq!(rec.body_len, 10);
    assert!(!String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 200"));
}

/// A body of unknown length (so hyper sends it chunked), frames from `PatternBody`.
struct Chunked(PatternBody);

impl http_body::Body for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.0).poll_frame(cx)
    }
}

/// POSTs `body` to `/Prod/x`, SigV4A-signed for `regions` over the body `hi`.
async fn send_v4a(gw: &Gateway, creds: &Credentials, regions: &str, body: &'static [u8]) -> Answer {
    let mut headers = host_headers(&gw.addr().to_string());
    let signer = Signer::new(creds, regions, "execute-api");
    sigv4::sign_request(
        &SigV4a,
        &Method::POST,
        "/Prod/x",
        &mut headers,
        Payload::Body(b"hi"),
        &signer,
    )
    .expect("sign");
    send(
        gw,
        Method::POST,
        "/Prod/x",
        headers,
        Bytes::from_static(body),
        false,
    )
    .await
}

#[tokio::test]
async fn sigv4a_is_accepted_when_enabled_and_its_region_set_covers_the_region() {
    let (sts, gw) = stack(GatewayBuilder::sigv4a).await;
    let plain = Gateway::builder(sts.clone()).start().await.expect("gw");
    let base = sts.base();
    for regions in ["us-east-1", "eu-west-1,us-east-1", "*", "us-*"] {
        let ok = send_v4a(&gw, &base, regions, b"hi").await;
        assert_eq!(ok.status, StatusCode::OK, "{regions}: {:?}", ok.body);
        assert_eq!(ok.json()["algorithm"], json!(sigv4a::ALGORITHM));
    }
    let elsewhere = send_v4a(&gw, &base, "eu-west-1", b"hi").await;
    assert_eq!(elsewhere.status, StatusCode::FORBIDDEN);
    assert_eq!(elsewhere.error_type(), "InvalidSignatureException");
    let tampered = send_v4a(&gw, &base, "us-east-1", b"ho").await;
    assert_eq!(tampered.status, StatusCode::FORBIDDEN);
    // SigV4 still works there; SigV4A is refused where it is not enabled.
    let v4 = signed_get(&gw.addr().to_string(), "/Prod/x", &base);
    assert_eq!(get(&gw, "/Prod/x", v4).await.status, StatusCode::OK);
    let refused = send_v4a(&plain, &base, "us-east-1", b"hi").await;
    assert_eq!(refused.error_type(), "IncompleteSignatureException");
}

/// A rustls client trusting only the gateway's CA, offering `alpn`.
fn client_config(gw: &Gateway, alpn: &[u8]) -> rustls::ClientConfig {
    let mut config = common::trusting(gw.ca_pem().as_bytes());
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}

/// A TLS connection to the gateway; `server_name` is what SNI and the certificate check use.
async fn tls_connect(
    gw: &Gateway,
    server_name: &str,
    alpn: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await?;
    let name = rustls_pki_types::ServerName::try_from(server_name.to_string())
        .map_err(std::io::Error::other)?;
    tokio_rustls::TlsConnector::from(Arc::new(client_config(gw, alpn)))
        .connect(name, tcp)
        .await
}

/// One request over TLS to the gateway's address while `Host`/`:authority` is `host`: the
/// split that the sidecar's `connect` makes.
async fn send_tls(gw: &Gateway, sni: &str, host: &str, h2: bool, creds: &Credentials) -> Answer {
    let target = "/Prod/private";
    let mut headers = signed_get(host, target, creds);
    let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
    let io = TokioIo::new(tls_connect(gw, sni, alpn).await.expect("tls handshake"));
    let resp = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        headers.remove("host");
        let mut req = Request::builder()
            .uri(format!("https://{host}{target}"))
            .body(Full::new(Bytes::new()))
            .expect("req");
        *req.headers_mut() = headers;
        sender.send_request(req).await.expect("h2 response")
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.expect("h1");
        tokio::spawn(conn);
        let mut req = Request::builder()
            .uri(target)
            .body(Full::new(Bytes::new()))
            .expect("req");
        *req.headers_mut() = headers;
        sender.send_request(req).await.expect("h1 response")
    };
    Answer::collect(resp).await
}

#[tokio::test]
async fn tls_names_only_loopback_and_host_must_be_the_api() {
    let (sts, gw) = stack(|b| b.tls().api_host(API_HOST)).await;
    assert!(gw.url().starts_with("https://127.0.0.1:"));
    for (sni, h2) in [
        ("localhost", true),
        ("localhost", false),
        ("127.0.0.1", true),
    ] {
        let ok = send_tls(&gw, sni, API_HOST, h2, &sts.base()).await;
        assert_eq!(ok.status, StatusCode::OK, "{sni} h2={h2}: {:?}", ok.body);
        let echo = ok.json();
        assert_eq!(
            echo["version"],
            json!(if h2 { "HTTP/2.0" } else { "HTTP/1.1" })
        );
        let sent_sni = if sni == "localhost" {
            json!("localhost")
        } else {
            json!(null)
        };
        assert_eq!(echo["server_name"], sent_sni);
        assert!(gw
            .requests()
            .pop()
            .expect("rec")
            .signed_headers
            .iter()
            .any(|h| h == "host"));
    }
    let wrong = send_tls(&gw, "localhost", &gw.addr().to_string(), false, &sts.base()).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert_eq!(wrong.error_type(), "ForbiddenException");
    assert_eq!(wrong.json(), json!({"message": "Forbidden"}));

    // The certificate does not name the API: a client checking that name fails the handshake.
    assert!(tls_connect(&gw, API_HOST, b"h2").await.is_err());
}

#[tokio::test]
async fn cloudfront_hop_breaks_signatures_over_forwarding_headers_only() {
    let (sts, gw) = stack(GatewayBuilder::cloudfront_hop).await;
    let host = gw.addr().to_string();

    let mut covered = host_headers(&host);
    covered.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
    covered.insert("via", HeaderValue::from_static("1.1 app"));
    sign(
        &mut covered,
        &Method::GET,
        "/Prod/x",
        Payload::Body(b""),
        &sts.base(),
        "execute-api",
    );
    let bad = get(&gw, "/Prod/x", covered).await;
    assert_eq!(bad.status, StatusCode::FORBIDDEN);
    assert_eq!(bad.error_type(), "InvalidSignatureException");
    let message = bad.json()["message"].as_str().expect("message").to_string();
    assert!(message.starts_with(refusal::BAD_SIGNATURE), "{message}");
    assert!(
        message.contains("\nx-forwarded-for:10.0.0.1, 203.0.113.7\n"),
        "{message}"
    );

    let mut left_out = signed_get(&host, "/Prod/x", &sts.base());
    left_out.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
    let ok = get(&gw, "/Prod/x", left_out).await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    let rec = gw.requests().pop().expect("rec");
    assert_eq!(
        rec.header("x-forwarded-for").as_deref(),
        Some("10.0.0.1, 203.0.113.7")
    );
    assert_eq!(
        rec.header("via").as_deref(),
        Some("1.1 abc.cloudfront.net (CloudFront)")
    );
}

#[tokio::test]
async fn forced_refusals_have_aws_shapes() {
    let (sts, gw) = stack(|b| b.forced_refusal(Refusal::SignatureMismatch)).await;
    let host = gw.addr().to_string();
    let signed = || signed_get(&host, "/Prod/x", &sts.base());
    let headers = signed();
    // What the gateway will quote: the canonical request of this very request.
    let names: Vec<&str> = {
        let auth = headers["authorization"].to_str().expect("auth");
        let list = auth
            .split("SignedHeaders=")
            .nth(1)
            .expect("sh")
            .split(',')
            .next()
            .expect("sh");
        list.split(';').collect()
    };
    let creq = sigv4::canonical_request(
        "GET",
        "/Prod/x",
        "",
        &headers,
        &names,
        &sigv4::sha256_hex(b""),
        true,
    );
    let amz_date = headers["x-amz-date"].to_str().expect("date").to_string();
    let scope = sigv4::credential_scope(&amz_date[..8], "us-east-1", "execute-api");
    let sts_text = sigv4::string_to_sign(&amz_date, &scope, &creq);
    let mismatch = get(&gw, "/Prod/x", headers.clone()).await;
    assert_eq!(mismatch.status, StatusCode::FORBIDDEN);
    assert_eq!(mismatch.error_type(), "InvalidSignatureException");
    assert_eq!(
        mismatch.json(),
        json!({"message": signature_mismatch_message(&creq, &sts_text)})
    );

    gw.set_forced_refusal(Some(Refusal::ExpiredToken));
    let expired = get(&gw, "/Prod/x", signed()).await;
    assert_eq!(expired.error_type(), "ExpiredTokenException");
    assert_eq!(expired.json(), json!({"message": refusal::EXPIRED_TOKEN}));
    gw.set_forced_refusal(Some(Refusal::InvalidToken));
    let invalid = get(&gw, "/Prod/x", signed()).await;
    assert_eq!(invalid.error_type(), "UnrecognizedClientException");
    assert_eq!(invalid.json(), json!({"message": refusal::INVALID_TOKEN}));
    gw.set_forced_refusal(Some(Refusal::AccessDenied));
    let denied = get(&gw, "/Prod/x", signed()).await;
    assert_eq!(denied.error_type(), "AccessDeniedException");
    assert!(denied.json()["Message"]
        .as_str()
        .is_some_and(|m| m.contains("is not authorized")));
    gw.set_forced_refusal(None);
    let ok = get(&gw, "/Prod/x", signed()).await;
    assert_eq!(ok.status, StatusCode::OK);
    common::assert_refusals(&gw, 4, |reasons| {
        reasons.iter().all(|r| r.starts_with("forced refusal"))
    });
}

#[tokio::test]
async fn hundreds_of_signed_headers_over_http1_and_h2() {
    let (sts, gw) = stack(|b| b).await;
    for h2 in [false, true] {
        let mut headers = host_headers(&gw.addr().to_string());
        for i in 0..600 {
            headers.insert(
                HeaderName::from_bytes(format!("x-h-{i:04}").as_bytes()).expect("name"),
                HeaderValue::from_str(&format!("value {i}")).expect("value"),
            );
        }
        sign(
            &mut headers,
            &Method::GET,
            "/Prod/many",
            Payload::Body(b""),
            &sts.base(),
            "execute-api",
        );
        if h2 {
            headers.remove("host");
        }
        let ok = send(&gw, Method::GET, "/Prod/many", headers, Bytes::new(), h2).await;
        assert_eq!(ok.status, StatusCode::OK, "h2={h2}: {:?}", ok.body);
        let rec = gw.requests().pop().expect("rec");
        assert!(
            rec.signed_headers.len() > 600,
            "{}",
            rec.signed_headers.len()
        );
    }
}
