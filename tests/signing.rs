//! Signatures made by the sidecar, checked by the testbed's independent SigV4 verifier (not
//! aws-sigv4) in the API Gateway stand-in, for every method, body shape, path and query shape,
//! with the assumed role's session credentials.

mod common;

use std::time::Duration;

use common::*;
use sigv4_testbed::sigv4::sha256_hex;

const LIFETIME: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_and_body_shape_is_signed_and_accepted() {
    let (_sts, gw, sidecar) = ready_stack(LIFETIME, |l| l).await;

    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let big: Vec<u8> = (0..9 * 1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let bodies: [(&str, Vec<u8>); 4] = [
        ("empty", vec![]),
        ("small", b"{\"hello\":\"world\"}".to_vec()),
        ("binary", binary),
        ("9MiB", big),
    ];
    for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] {
        for (what, body) in &bodies {
            if method == "HEAD" && !body.is_empty() {
                continue;
            }
            let res = send(
                method,
                &sidecar.url("/items/42?x=1"),
                &[("content-type", "application/octet-stream")],
                body.clone(),
            )
            .await;
            assert_eq!(
                res.status,
                200,
                "{method} {what}: {:?}",
                String::from_utf8_lossy(&res.body)
            );
            assert_eq!(res.sidecar_error(), None);
            if method == "HEAD" {
                continue;
            }
            let echo = res.json();
            assert_eq!(echo["method"], method);
            assert_eq!(echo["target"], "/Prod/items/42?x=1", "{method} {what}");
            assert_eq!(echo["body_len"], body.len(), "{method} {what}");
            assert_eq!(
                echo["body_sha256"],
                sha256_hex(body),
                "{method} {what}: body arrives unchanged"
            );
        }
    }
    let recorded = gw.requests();
    assert_eq!(recorded.len(), 6 * 4 - 3);
    assert!(
        recorded.iter().all(|r| r.outcome.is_ok()),
        "rejections: {:?}",
        recorded
            .iter()
            .filter(|r| r.outcome.is_err())
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_and_query_arrive_byte_for_byte() {
    let (_sts, gw, sidecar) = ready_stack(LIFETIME, |l| l).await;
    let targets = [
        "/hello-world",
        "/",
        "/with%20space/and+plus",
        "/utf8/%E2%82%AC/%F0%9F%98%80",
        "/reserved/!$&'()*+,;=:@/x",
        "/double//slash//",
        "/dots/./a/../b/.",
        "/a/%2F/encoded-slash",
        "/~tilde-_.",
        "/q?b=2&a=1&a=0",
        "/q?empty=&=novalue&flag&&x=",
        "/q?z=%20&y=a+b&x=%2B&w=%7E&v=~",
        "/q?utf=%E2%82%AC&list=1,2,3",
        "/q?key=value=with=equals",
    ];
    for target in targets {
        let res = get(&sidecar.url(target)).await;
        assert_eq!(
            res.status,
            200,
            "{target}: {:?}",
            String::from_utf8_lossy(&res.body)
        );
        assert_eq!(
            res.json()["target"],
            format!("/Prod{target}"),
            "byte for byte"
        );
    }
    assert_eq!(gw.rejected(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_headers_pass_and_hop_by_hop_and_client_signing_headers_do_not() {
    let (_sts, gw, sidecar) = ready_stack(LIFETIME, |l| l).await;
    let res = send(
        "POST",
        &sidecar.url("/h"),
        &[
            ("content-type", "application/json; charset=utf-8"),
            ("accept", "application/json"),
            ("x-custom", "  spaced   value  "),
            ("x-multi", "one"),
            ("x-multi", "two"),
            ("user-agent", "integration-test/1.0"),
            ("x-amz-target", "Service.Operation"),
            ("authorization", "Bearer app-token"),
            ("x-amz-date", "20000101T000000Z"),
            ("x-amz-security-token", "client-token"),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic eDp5"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
        ],
        "{}",
    )
    .await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    let h = res.echoed_headers();
    assert_eq!(h["content-type"], ["application/json; charset=utf-8"]);
    assert_eq!(h["accept"], ["application/json"]);
    assert_eq!(
        h["x-custom"],
        ["spaced   value"],
        "values pass unchanged (hyper trims outer whitespace)"
    );
    assert_eq!(h["x-multi"], ["one", "two"]);
    assert_eq!(h["user-agent"], ["integration-test/1.0"]);
    assert_eq!(h["x-amz-target"], ["Service.Operation"]);
    assert_eq!(
        h["host"],
        [gw.url()
            .trim_start_matches("http://")
            .trim_end_matches("/Prod")
            .to_string()]
    );
    for gone in [
        "connection",
        "x-hop",
        "keep-alive",
        "proxy-authorization",
        "te",
        "upgrade",
        "x-amz-content-sha256",
    ] {
        assert!(!h.contains_key(gone), "{gone} must not be forwarded: {h:?}");
    }
    assert_eq!(h["authorization"].len(), 1);
    assert!(
        h["authorization"][0].starts_with("AWS4-HMAC-SHA256 "),
        "the client's Authorization is replaced"
    );
    assert_ne!(h["x-amz-date"], ["20000101T000000Z"]);
    assert_ne!(h["x-amz-security-token"], ["client-token"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signs_with_the_assumed_role_session_credentials() {
    let (sts, _gw, sidecar) = ready_stack(LIFETIME, |l| {
        l.set("EXTERNAL_ID", "ext-id-1234")
            .set("ROLE_DURATION", "15m")
    })
    .await;
    let echo = get(&sidecar.url("/who")).await.json();
    let issued = sts.issued();
    assert_eq!(issued.len(), 1, "one AssumeRole, not one per request");
    let i = &issued[0];
    assert_eq!(i.role_arn, ROLE);
    assert_eq!(i.session_name, "integration-test");
    assert_eq!(i.external_id.as_deref(), Some("ext-id-1234"));
    assert_eq!(i.duration_seconds, Some(900));
    assert_eq!(
        i.signed_with.as_deref(),
        Some(BASE_AKID),
        "AssumeRole is signed with the base credentials"
    );
    assert_eq!(echo["access_key_id"], i.credentials.access_key_id.as_str());
    assert_eq!(
        echo["session_token"],
        i.credentials
            .session_token
            .clone()
            .unwrap_or_default()
            .as_str()
    );
    assert_eq!(echo["caller_arn"], i.assumed_role_arn.as_str());
    for _ in 0..20 {
        assert_eq!(get(&sidecar.url("/again")).await.status, 200);
    }
    assert_eq!(sts.calls(), 1, "requests never call STS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_request_bodies_are_hashed_whole() {
    let (_sts, gw, sidecar) = ready_stack(LIFETIME, |l| l).await;
    let req = b"POST /chunked?a=1 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let answer = raw(sidecar.proxy, req, Duration::from_secs(10)).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(body.contains(&sha256_hex(b"hello world")), "{answer}");
    assert!(body.contains("\"body_len\":11"), "{answer}");
    assert_eq!(gw.rejected(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_with_private_ca_and_http2() {
    let sts = sts(LIFETIME).await;
    let gw = gateway_with(&sts, |b| b.tls()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = gw.write_ca_pem(dir.path());
    let sidecar = ready_sidecar(
        Launch::new(&gw.url().replace("127.0.0.1", "localhost"), &sts)
            .set("CA_FILE", ca.to_str().expect("utf8")),
    )
    .await;
    let res = send("POST", &sidecar.url("/tls?x=1"), &[], "over tls").await;
    assert_eq!(res.status, 200, "{:?}\n{}", res.body, sidecar.logs());
    assert_eq!(res.json()["body_sha256"], sha256_hex(b"over tls"));
    assert_eq!(res.json()["version"], "HTTP/2.0", "ALPN picks h2");

    // Without the private CA the same upstream is refused: the TLS failure is a 502.
    let sts2 = common::sts(LIFETIME).await;
    let untrusted = ready_sidecar(Launch::new(
        &gw.url().replace("127.0.0.1", "localhost"),
        &sts2,
    ))
    .await;
    let res = get(&untrusted.url("/tls")).await;
    res.assert_sidecar(502, "upstream_unreachable");
}
