//! The handler against real API Gateway event JSON (REST API payload 1.0 and HTTP API payload
//! 2.0, with and without an IAM identity), run through the same conversion as the runtime.

use hello_lambda::{handler, invoke_json};
use serde_json::{json, Value};

const ASSUMED: &str = "arn:aws:sts::111111111111:assumed-role/sigv4-sidecar-demo/sigv4-sidecar-pod";

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The answer's body parsed as JSON, plus its headers merged from `headers` and
/// `multiValueHeaders` (REST answers use the latter, HTTP API answers the former).
fn parse(answer: &Value) -> (u64, Value, Vec<(String, String)>) {
    let status = answer["statusCode"].as_u64().expect("statusCode");
    assert_eq!(answer["isBase64Encoded"], json!(false), "{answer}");
    let body: Value =
        serde_json::from_str(answer["body"].as_str().expect("text body")).expect("json body");
    let mut headers = Vec::new();
    if let Some(map) = answer["headers"].as_object() {
        for (k, v) in map {
            headers.push((
                k.to_ascii_lowercase(),
                v.as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    if let Some(map) = answer["multiValueHeaders"].as_object() {
        for (k, vs) in map {
            for v in vs.as_array().into_iter().flatten() {
                headers.push((
                    k.to_ascii_lowercase(),
                    v.as_str().unwrap_or_default().to_string(),
                ));
            }
        }
    }
    (status, body, headers)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The event through the runtime's conversion and the handler, parsed.
async fn answer(event: Value) -> (u64, Value, Vec<(String, String)>) {
    parse(&invoke_json(event).await.expect("invoke"))
}

#[tokio::test]
async fn the_caller_is_the_iam_identity_or_null() {
    for (name, caller) in [
        ("rest-v1-iam.json", json!(ASSUMED)),
        ("rest-v1-no-identity.json", Value::Null),
        ("http-v2-iam.json", json!(ASSUMED)),
        ("http-v2-no-authorizer.json", Value::Null),
    ] {
        let (status, body, headers) = answer(fixture(name)).await;
        assert_eq!(status, 200, "{name}");
        let expected = json!({"message": "Hello World", "caller": caller});
        assert_eq!(body, expected, "{name}");
        let content_type = header(&headers, "content-type");
        assert_eq!(content_type, Some("application/json"), "{name}");
    }
}

#[tokio::test]
async fn rest_v1_answers_carry_multi_value_headers() {
    let answer = invoke_json(fixture("rest-v1-iam.json"))
        .await
        .expect("invoke");
    // REST answers carry headers only in multiValueHeaders (lambda_http leaves `headers` empty).
    assert!(answer.get("multiValueHeaders").is_some(), "{answer}");
}

#[tokio::test]
async fn a_stage_prefix_in_the_path_is_routed() {
    let mut rest = fixture("rest-v1-iam.json");
    rest["path"] = json!("/Prod/hello-world");
    let mut http = fixture("http-v2-iam.json");
    http["rawPath"] = json!("/Prod/hello-world");
    http["requestContext"]["stage"] = json!("Prod");
    for event in [rest, http] {
        let (status, body, _) = answer(event).await;
        assert_eq!(status, 200);
        assert_eq!(body["caller"], json!(ASSUMED));
    }
}

#[tokio::test]
async fn unknown_path_is_json_404() {
    for (name, field) in [
        ("rest-v1-iam.json", "path"),
        ("http-v2-iam.json", "rawPath"),
    ] {
        let mut event = fixture(name);
        event[field] = json!("/nope");
        let (status, body, headers) = answer(event).await;
        assert_eq!(status, 404, "{name}");
        assert_eq!(body["message"], json!("Not Found"), "{name}");
        assert_eq!(header(&headers, "content-type"), Some("application/json"));
    }
}

#[tokio::test]
async fn wrong_method_is_json_405_with_allow() {
    let mut rest = fixture("rest-v1-iam.json");
    rest["httpMethod"] = json!("POST");
    let mut http = fixture("http-v2-iam.json");
    http["requestContext"]["http"]["method"] = json!("DELETE");
    for event in [rest, http] {
        let (status, body, headers) = answer(event).await;
        assert_eq!(status, 405);
        assert_eq!(body["message"], json!("Method Not Allowed"));
        assert_eq!(header(&headers, "allow"), Some("GET"));
    }
}

#[tokio::test]
async fn handler_is_a_plain_function() {
    let req =
        lambda_http::request::from_str(&fixture("rest-v1-iam.json").to_string()).expect("event");
    let resp = handler(req).await.expect("handler");
    assert_eq!(resp.status(), 200);
    let body: Value = serde_json::from_slice(resp.body().as_ref()).expect("json");
    assert_eq!(body["caller"], json!(ASSUMED));

    // A request built by hand has no request context: the caller is null, routing still works.
    let req = lambda_http::http::Request::builder()
        .uri("https://example.com/hello-world")
        .body(lambda_http::Body::Empty)
        .expect("request");
    let resp = handler(req).await.expect("handler");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn garbage_event_is_an_error() {
    assert!(invoke_json(json!({"not": "an event"})).await.is_err());
}
