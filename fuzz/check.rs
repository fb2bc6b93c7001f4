// The property the fuzz target checks: `check_prepare` (the request-preparation path, on one raw
// HTTP/1.1 request head).
//
// Included (with `include!`) by the fuzz target in `fuzz/fuzz_targets/` and by the corpus replay
// test `tests/fuzz_replay.rs`, so both check exactly the same thing. Kept free of `use`
// items and inner attributes so it can be included anywhere.
//
// check_prepare: the input is parsed the way the sidecar's server parses it (httparse, then `http` types; an
// input hyper would refuse is skipped), then run through `Target::prepare` for a fixed upstream
// and signed with fixed credentials, by the sidecar's SigV4 writer and by aws-sigv4's own `sign()`
// (same signature headers, byte for byte). Checked: no panic; on success the upstream URI is the
// upstream's scheme and authority with path-and-query exactly `/Prod` + the request target as
// sent (byte for byte), `Host` is the upstream's, no hop-by-hop or client signing header survives
// and every other header passes through unchanged; on refusal, a 4xx/5xx JSON answer.

/// The upstream every input is prepared for.
const FUZZ_UPSTREAM: &str = "https://abc123.execute-api.us-east-1.amazonaws.com/Prod";
/// `max_body_bytes` for the checks (small, so the 413 path is reachable from a short input).
const FUZZ_MAX_BODY: u64 = 1 << 20;

struct FuzzFixture {
    target: sigv4_sidecar::proxy::Target,
    scope: sigv4_sidecar::signing::Scope,
    s3: sigv4_sidecar::signing::Scope,
    creds: sigv4_sidecar::credentials::Credentials,
    now: std::time::SystemTime,
}

fn fuzz_fixture() -> &'static FuzzFixture {
    static FIXTURE: std::sync::OnceLock<FuzzFixture> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| {
        let upstream = sigv4_sidecar::config::Upstream::parse("upstream", FUZZ_UPSTREAM)
            .expect("the fixed upstream is valid");
        FuzzFixture {
            target: sigv4_sidecar::proxy::Target::new(&upstream, FUZZ_MAX_BODY),
            scope: sigv4_sidecar::signing::Scope::new("us-east-1", "execute-api"),
            s3: sigv4_sidecar::signing::Scope::new("us-east-1", "s3"),
            creds: sigv4_sidecar::credentials::Credentials::new(
                aws_credential_types::Credentials::new(
                    "AKIDFUZZ000000000001",
                    "fuzz-secret-access-key",
                    Some("fuzz-session-token".to_string()),
                    None,
                    "fuzz",
                ),
            ),
            now: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_750_000_000),
        }
    })
}

/// Headers the upstream request must never carry from the client (besides every `proxy-*`
/// header, which the checks below refuse by prefix).
const FUZZ_DROPPED: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "expect",
];

#[allow(dead_code)] // used by check_prepare only
fn fuzz_text(v: &http::HeaderValue) -> String {
    String::from_utf8_lossy(v.as_bytes()).into_owned()
}

/// Checks one input; panics (a fuzz finding) when a property does not hold.
pub fn check_prepare(data: &[u8]) {
    let mut header_buf = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut header_buf);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else {
        return;
    };
    let (Some(method), Some(raw_target), Some(minor)) = (req.method, req.path, req.version) else {
        return;
    };
    // What hyper hands the service: `Method`, `Uri` and `HeaderMap` parsed from those bytes.
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let Ok(uri) =
        http::Uri::from_maybe_shared(bytes::Bytes::copy_from_slice(raw_target.as_bytes()))
    else {
        return;
    };
    let mut builder = http::Request::builder()
        .method(method)
        .uri(uri)
        .version(if minor == 1 {
            http::Version::HTTP_11
        } else {
            http::Version::HTTP_10
        });
    for h in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(h.name.as_bytes()),
            http::HeaderValue::from_bytes(h.value),
        ) else {
            return;
        };
        builder = builder.header(name, value);
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let (mut parts, ()) = request.into_parts();
    let original = parts.headers.clone();
    let fx = fuzz_fixture();

    let declared = match fx.target.prepare(&mut parts) {
        Ok(declared) => declared,
        Err(e) => {
            let status = e.status().as_u16();
            assert!(
                (400..600).contains(&status),
                "refusal with status {status}: {e}"
            );
            let res: http::Response<bytes::Bytes> = e.into_response();
            assert!(res.headers().contains_key("x-sigv4-sidecar-error"));
            return;
        }
    };

    // Path and query: `/Prod` + the target as sent. A fragment is not part of a request target
    // (clients never send one); `http::Uri` drops it before the sidecar sees the request.
    let sent = raw_target.split('#').next().unwrap_or_default();
    let pq = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or_default();
    assert_eq!(
        pq,
        format!("/Prod{sent}"),
        "path and query not byte for byte"
    );
    assert_eq!(parts.uri.scheme_str(), Some("https"));
    assert_eq!(
        parts.uri.authority().map(|a| a.as_str()),
        Some("abc123.execute-api.us-east-1.amazonaws.com"),
        "the request would go to another host"
    );
    assert_eq!(parts.version, http::Version::HTTP_11);

    // Host is the upstream's, exactly once.
    let hosts: Vec<_> = parts.headers.get_all(http::header::HOST).iter().collect();
    assert_eq!(
        hosts,
        [&http::HeaderValue::from_static(
            "abc123.execute-api.us-east-1.amazonaws.com"
        )]
    );

    // No hop-by-hop or client signing header survives, nor a header `Connection` named.
    let named: Vec<String> = original
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "host")
        .collect();
    for name in parts.headers.keys() {
        let n = name.as_str();
        assert!(!FUZZ_DROPPED.contains(&n), "{n} survived");
        assert!(!n.starts_with("proxy-"), "{n} survived");
        assert!(
            !named.iter().any(|t| t == n),
            "{n} (named by Connection) survived"
        );
    }
    // Every other header passes through unchanged, values in order.
    for name in original.keys() {
        let n = name.as_str();
        if n == "host"
            || FUZZ_DROPPED.contains(&n)
            || n.starts_with("proxy-")
            || named.iter().any(|t| t == n)
        {
            continue;
        }
        let before: Vec<_> = original.get_all(name).iter().collect();
        let after: Vec<_> = parts.headers.get_all(name).iter().collect();
        assert_eq!(before, after, "{n} changed on the way");
    }
    // The declared length is the one the client sent, within the limit.
    if let Some(len) = declared {
        assert!(len <= FUZZ_MAX_BODY);
    }

    // The sidecar's SigV4 writer and aws-sigv4's full `sign()` agree on the prepared request,
    // for a normalizing scope and S3's, with a body hash and with `UNSIGNED-PAYLOAD`.
    {
    let headers = sigv4_sidecar::signing::signable_headers(&parts.headers, |n| {
        ["authorization", "user-agent", "x-amzn-trace-id", "transfer-encoding"].contains(&n)
    });
    let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    for (scope, payload) in [
        (
            &fx.scope,
            sigv4_sidecar::signing::Payload::Sha256(sigv4_sidecar::signing::EMPTY_SHA256),
        ),
        (&fx.s3, sigv4_sidecar::signing::Payload::Unsigned),
    ] {
        let req = sigv4_sidecar::signing::RequestToSign {
            method: parts.method.as_str(),
            path_and_query: pq,
            headers: &headers,
            payload,
        };
        let oracle =
            sigv4_sidecar::signing::reference::sign_with_aws_sigv4(scope, &fx.creds, fx.now, &req);
        let ours = scope.sign(&fx.creds, fx.now, &req);
        match (oracle, ours) {
            (Ok(mut expected), Ok(sig)) => {
                let mut got = vec![
                    ("authorization".to_string(), fuzz_text(&sig.authorization)),
                    ("x-amz-date".to_string(), fuzz_text(&sig.x_amz_date)),
                ];
                got.extend(
                    sig.security_token
                        .iter()
                        .map(|v| ("x-amz-security-token".to_string(), fuzz_text(v))),
                );
                got.extend(
                    sig.content_sha256
                        .iter()
                        .map(|v| ("x-amz-content-sha256".to_string(), fuzz_text(v))),
                );
                got.sort();
                expected.sort();
                assert_eq!(got, expected, "signatures differ from aws-sigv4's");
            }
            (Err(_), Err(_)) => {}
            (oracle, ours) => panic!(
                "aws-sigv4 {:?}, ours {:?}",
                oracle.map(|_| "signed"),
                ours.map(|_| "signed")
            ),
        }
    }
    }

    // Signing never panics; when it succeeds the URI is untouched and the signature is there.
    let uri_before = parts.uri.clone();
    if sigv4_sidecar::signing::sign_request(
        &mut parts,
        sigv4_sidecar::signing::EMPTY_SHA256,
        &fx.creds,
        &fx.scope,
        fx.now,
    )
    .is_ok()
    {
        assert_eq!(parts.uri, uri_before, "signing changed the URI");
        let auth = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDFUZZ000000000001/"),
            "{auth}"
        );
        assert!(parts.headers.contains_key("x-amz-date"));
        assert!(parts.headers.contains_key("x-amz-security-token"));
    }
}
