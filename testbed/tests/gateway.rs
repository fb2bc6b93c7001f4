//! The API Gateway stand-in over real HTTP: requests signed by hand with the verifier's own
//! primitives and the emulator's credentials, and the answers API Gateway gives otherwise.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{host_headers, Answer};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use sigv4_testbed::sigv4::{self, Payload, SigV4, Signer};
use sigv4_testbed::{Backend, Credentials, Gateway, GatewayConfig, StsEmulator};

const ROLE: &str = "arn:aws:iam::111111111111:role/sigv4-sidecar-demo";

async fn stack(
    backend: Backend,
    allowed: Option<Vec<String>>,
    tls: bool,
) -> (StsEmulator, Gateway) {
    let sts = common::sts("AKIDTESTBASE", "base-secret").await;
    let mut config = GatewayConfig::new(sts.clone());
    config.backend = backend;
    config.allowed_roles = allowed;
    config.tls = tls;
    let gw = Gateway::start(config).await.expect("gateway");
    (sts, gw)
}

/// Credentials for `role` issued by the emulator, obtained with a hand-signed AssumeRole.
async fn assume(sts: &StsEmulator, role: &str) -> Credentials {
    let body =
        format!("Action=AssumeRole&Version=2011-06-15&RoleArn={role}&RoleSessionName=test-session");
    let host = sts.addr().to_string();
    let resp = send(
        &format!("{}/", sts.endpoint()),
        &host,
        Method::POST,
        "/",
        body.as_bytes(),
        Some(&sts.base()),
        "sts",
        &[("content-type", "application/x-www-form-urlencoded")],
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK, "{:?}", resp.body);
    let issued = sts.issued();
    issued.last().expect("issued").credentials.clone()
}

/// Sends `method target` to `url_base` (scheme://host:port), signed with `creds` if given.
#[allow(clippy::too_many_arguments)]
async fn send(
    url: &str,
    host: &str,
    method: Method,
    target: &str,
    body: &[u8],
    creds: Option<&Credentials>,
    service: &str,
    extra: &[(&str, &str)],
) -> Answer {
    let mut headers = host_headers(host);
    for (k, v) in extra {
        headers.append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    if let Some(creds) = creds {
        let signer = Signer::new(creds, "us-east-1", service);
        sigv4::sign_request(
            &SigV4,
            &method,
            target,
            &mut headers,
            Payload::Body(body),
            &signer,
        )
        .expect("sign");
    }
    let mut req = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("request");
    *req.headers_mut() = headers;
    let client = Client::builder(TokioExecutor::new()).build_http();
    Answer::collect(client.request(req).await.expect("response")).await
}

async fn call(
    gw: &Gateway,
    method: Method,
    target: &str,
    body: &[u8],
    creds: Option<&Credentials>,
    extra: &[(&str, &str)],
) -> Answer {
    let host = gw.addr().to_string();
    send(
        &format!("http://{host}{target}"),
        &host,
        method,
        target,
        body,
        creds,
        "execute-api",
        extra,
    )
    .await
}

/// [`call`] for a bodiless GET without extra headers.
async fn get(gw: &Gateway, target: &str, creds: Option<&Credentials>) -> Answer {
    call(gw, Method::GET, target, b"", creds, &[]).await
}

#[tokio::test]
async fn echo_describes_a_verified_request() {
    let (sts, gw) = stack(Backend::Echo, Some(vec![ROLE.into()]), false).await;
    assert_eq!(gw.url(), format!("http://{}/Prod", gw.addr()));
    let creds = assume(&sts, ROLE).await;
    let target = "/Prod/a%2Fb/hello-world?b=2&a=1&a=%20x";
    let resp = call(
        &gw,
        Method::POST,
        target,
        b"payload",
        Some(&creds),
        &[("x-custom", "one"), ("x-custom", "two")],
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK, "{:?}", resp.body);
    let echo = resp.json();
    assert_eq!(echo["method"], json!("POST"));
    assert_eq!(echo["target"], json!(target));
    assert_eq!(echo["body_len"], json!(7));
    assert_eq!(echo["body_sha256"], json!(sigv4::sha256_hex(b"payload")));
    assert_eq!(
        echo["caller_arn"],
        json!("arn:aws:sts::111111111111:assumed-role/sigv4-sidecar-demo/test-session")
    );
    assert_eq!(echo["access_key_id"], json!(creds.access_key_id));
    assert_eq!(echo["session_token"], json!(creds.session_token));
    let customs: Vec<&Value> = echo["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|h| h[0] == "x-custom")
        .collect();
    assert_eq!(
        customs,
        vec![&json!(["x-custom", "one"]), &json!(["x-custom", "two"])]
    );

    assert!(gw.wait_for_requests(1, Duration::from_secs(1)).await);
    let rec = &gw.requests()[0];
    assert_eq!(rec.target, target);
    assert_eq!(rec.body_len, 7);
    assert_eq!(rec.header("x-custom").as_deref(), Some("one"));
    assert!(rec
        .outcome
        .as_ref()
        .is_ok_and(|arn| arn.ends_with("/test-session")));
    assert_eq!(gw.rejected(), 0);
}

#[tokio::test]
async fn api_gateway_refusals() {
    let (sts, gw) = stack(Backend::Echo, Some(vec![ROLE.into()]), false).await;
    let creds = assume(&sts, ROLE).await;

    let hello = "/Prod/hello-world";
    let missing_token = json!({"message": "Missing Authentication Token"});

    let unsigned = get(&gw, hello, None).await;
    assert_eq!(unsigned.status, StatusCode::FORBIDDEN);
    assert_eq!(unsigned.json(), missing_token);
    assert_eq!(unsigned.error_type(), "MissingAuthenticationTokenException");

    let outside = get(&gw, "/Other/hello-world", Some(&creds)).await;
    assert_eq!(outside.json(), missing_token);

    let wrong = Credentials {
        secret_access_key: "wrong".into(),
        ..creds.clone()
    };
    let bad = get(&gw, hello, Some(&wrong)).await;
    assert_eq!(bad.status, StatusCode::FORBIDDEN);
    assert_eq!(bad.error_type(), "InvalidSignatureException");
    assert!(bad.json()["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("The request signature we calculated does not match")));

    let unknown = Credentials::new("ASIAUNKNOWN", "x", Some("t".into()));
    let resp = get(&gw, hello, Some(&unknown)).await;
    assert_eq!(
        resp.json(),
        json!({"message": "The security token included in the request is invalid."})
    );
    assert_eq!(resp.error_type(), "UnrecognizedClientException");

    let other = assume(&sts, "arn:aws:iam::111111111111:role/someone-else").await;
    let denied = get(&gw, hello, Some(&other)).await;
    assert_eq!(denied.error_type(), "AccessDeniedException");
    assert_eq!(
        denied.json(),
        json!({"Message": format!("User: arn:aws:sts::111111111111:assumed-role/someone-else/test-session is not authorized to perform: execute-api:Invoke on resource: arn:aws:execute-api:us-east-1:111111111111:{}/Prod/GET/hello-world", sigv4_testbed::gateway::API_ID)})
    );

    // Base credentials are not a listed role.
    let base = get(&gw, hello, Some(&sts.base())).await;
    assert_eq!(base.error_type(), "AccessDeniedException");

    sts.set_lifetime(Duration::ZERO);
    let expired = assume(&sts, ROLE).await;
    let resp = get(&gw, hello, Some(&expired)).await;
    assert_eq!(
        resp.json(),
        json!({"message": "The security token included in the request is expired"})
    );
    assert_eq!(resp.error_type(), "ExpiredTokenException");

    common::assert_refusals(&gw, 7, |reasons| {
        reasons.iter().any(|r| r.contains("canonical request"))
    });
}

#[tokio::test]
async fn base_credentials_allowed_without_role_list() {
    let (sts, gw) = stack(Backend::Echo, None, false).await;
    let resp = get(&gw, "/Prod/x", Some(&sts.base())).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(
        resp.json()["caller_arn"],
        json!("arn:aws:iam::111111111111:user/base")
    );
    assert_eq!(resp.json()["session_token"], json!(null));
}

#[tokio::test]
async fn control_headers() {
    let (sts, gw) = stack(Backend::Echo, None, false).await;
    let creds = assume(&sts, ROLE).await;
    let resp = call(
        &gw,
        Method::GET,
        "/Prod/big",
        b"",
        Some(&creds),
        &[
            ("x-testbed-response-bytes", "100000"),
            ("x-testbed-status", "201"),
        ],
    )
    .await;
    assert_eq!(resp.status, StatusCode::CREATED);
    assert_eq!(resp.body.len(), 100_000);
    assert_eq!(
        resp.header("x-testbed-body-sha256"),
        Some(sigv4::sha256_hex(&resp.body).as_str())
    );

    let started = std::time::Instant::now();
    let resp = call(
        &gw,
        Method::GET,
        "/Prod/slow",
        b"",
        Some(&creds),
        &[("x-testbed-delay-ms", "300")],
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn lambda_backend_names_the_assumed_role() {
    let (sts, gw) = stack(Backend::Lambda, Some(vec![ROLE.into()]), false).await;
    let creds = assume(&sts, ROLE).await;
    let resp = get(&gw, "/Prod/hello-world", Some(&creds)).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(
        resp.json(),
        json!({"message": "Hello World", "caller": "arn:aws:sts::111111111111:assumed-role/sigv4-sidecar-demo/test-session"})
    );
    let missing = get(&gw, "/Prod/nope", Some(&creds)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let post = call(
        &gw,
        Method::POST,
        "/Prod/hello-world",
        b"{}",
        Some(&creds),
        &[],
    )
    .await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.header("allow"), Some("GET"));
}

#[tokio::test]
async fn tls_with_generated_ca_and_h2() {
    let (sts, gw) = stack(Backend::Echo, None, true).await;
    assert!(gw.url().starts_with("https://127.0.0.1:"));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = gw.write_ca_pem(dir.path());
    let pem = std::fs::read(&path).expect("ca file");
    assert!(gw.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));

    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(common::trusting(&pem))
        .https_only()
        .enable_http2()
        .build();
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(https);

    let creds = assume(&sts, ROLE).await;
    let host = gw.addr().to_string();
    for url_host in [host.clone(), format!("localhost:{}", gw.addr().port())] {
        let target = "/Prod/secure";
        let mut headers = host_headers(&url_host);
        let signer = Signer::new(&creds, "us-east-1", "execute-api");
        sigv4::sign_request(
            &SigV4,
            &Method::GET,
            target,
            &mut headers,
            Payload::Body(b""),
            &signer,
        )
        .expect("sign");
        // HTTP/2 sends the host as :authority; the gateway verifies it as `host`.
        headers.remove("host");
        let mut req = Request::builder()
            .uri(format!("https://{url_host}{target}"))
            .body(Full::new(Bytes::new()))
            .expect("req");
        *req.headers_mut() = headers;
        let resp = client.request(req).await.expect("https response");
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn local_stack_binary_prints_ready() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_local-stack"))
        .args(["--sts-port", "0", "--gateway-port", "0", "--lifetime", "2m"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn local-stack");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("READY in time")
        .expect("read")
        .expect("a line");
    assert!(
        line.starts_with("READY sts=http://127.0.0.1:")
            && line.contains(" gateway=http://127.0.0.1:")
            && line.ends_with("/Prod"),
        "{line}"
    );
    let gateway = line.split(" gateway=").nth(1).expect("gateway url");
    let host = gateway
        .trim_start_matches("http://")
        .trim_end_matches("/Prod");
    let unsigned = send(
        &format!("{gateway}/hello-world"),
        host,
        Method::GET,
        "/Prod/hello-world",
        b"",
        None,
        "execute-api",
        &[],
    )
    .await;
    assert_eq!(unsigned.status, StatusCode::FORBIDDEN);
    assert_eq!(
        unsigned.json(),
        json!({"message": "Missing Authentication Token"})
    );
    child.kill().await.expect("kill local-stack");
}
