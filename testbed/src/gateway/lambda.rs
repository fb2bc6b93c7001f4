//! The Lambda backend: a REST API (payload 1.0) proxy event for a verified request, run through
//! the `hello-lambda` handler, and its answer turned into HTTP as API Gateway does.

use std::net::SocketAddr;
use std::time::SystemTime;

use base64::Engine as _;
use http::{HeaderName, HeaderValue, Response, StatusCode};

use super::{json_response, resource_path, Caller, GwState, API_ID};
use crate::server::{full, RespBody};

/// Form-style decoding for query parameters in the proxy event (API Gateway decodes them).
fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// A verified request, as the Lambda backend gets it.
pub(super) struct Invocation<'a> {
    pub(super) parts: &'a http::request::Parts,
    /// The request target as received (`/Prod/path?query`).
    pub(super) target: &'a str,
    pub(super) body: &'a [u8],
    pub(super) caller: &'a Caller,
    pub(super) peer: SocketAddr,
    pub(super) request_id: &'a str,
}

/// The REST API (payload 1.0) proxy integration event for a verified request.
fn proxy_event(state: &GwState, invocation: &Invocation<'_>) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let Invocation {
        parts,
        target,
        body,
        caller,
        peer,
        request_id,
    } = *invocation;
    let config = &state.config;
    let (raw_path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let resource = resource_path(&config.stage, raw_path).unwrap_or("/");
    let path = decode(resource);

    let mut headers = Map::new();
    let mut multi_headers: Map<String, Value> = Map::new();
    for (k, v) in &parts.headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        headers.insert(k.as_str().to_string(), json!(v));
        if let Some(Value::Array(list)) = multi_headers.get_mut(k.as_str()) {
            list.push(json!(v));
        } else {
            multi_headers.insert(k.as_str().to_string(), json!([v]));
        }
    }
    let mut query = Map::new();
    let mut multi_query: Map<String, Value> = Map::new();
    for piece in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
        let (k, v) = (decode(k), decode(v));
        query.insert(k.clone(), json!(v));
        if let Some(Value::Array(list)) = multi_query.get_mut(&k) {
            list.push(json!(v));
        } else {
            multi_query.insert(k, json!([v]));
        }
    }
    let or_null = |m: Map<String, Value>| {
        if m.is_empty() {
            Value::Null
        } else {
            Value::Object(m)
        }
    };
    let (body_value, is_base64) = if body.is_empty() {
        (Value::Null, false)
    } else {
        match std::str::from_utf8(body) {
            Ok(text) => (json!(text), false),
            Err(_) => (
                json!(base64::engine::general_purpose::STANDARD.encode(body)),
                true,
            ),
        }
    };
    let user_agent = parts
        .headers
        .get(http::header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let host = format!("{}", state.addr);
    let stage = if config.stage.is_empty() {
        "$default"
    } else {
        config.stage.as_str()
    };
    json!({
        "resource": path,
        "path": path,
        "httpMethod": parts.method.as_str(),
        "headers": or_null(headers),
        "multiValueHeaders": or_null(multi_headers),
        "queryStringParameters": or_null(query),
        "multiValueQueryStringParameters": or_null(multi_query),
        "pathParameters": null,
        "stageVariables": null,
        "requestContext": {
            "accountId": config.sts.account_id(),
            "apiId": API_ID,
            "resourceId": "testbd",
            "stage": stage,
            "requestId": request_id,
            "extendedRequestId": request_id,
            "resourcePath": path,
            "httpMethod": parts.method.as_str(),
            "path": decode(raw_path),
            "protocol": format!("{:?}", parts.version),
            "domainName": host,
            "requestTimeEpoch": now,
            "identity": {
                "cognitoIdentityPoolId": null,
                "cognitoIdentityId": null,
                "cognitoAuthenticationType": null,
                "cognitoAuthenticationProvider": null,
                "apiKey": null,
                "apiKeyId": null,
                "principalOrgId": null,
                "accountId": caller.account_id,
                "caller": caller.user_id,
                "user": caller.user_id,
                "userArn": caller.arn,
                "accessKey": caller.access_key_id,
                "sourceIp": peer.ip().to_string(),
                "userAgent": user_agent,
            },
        },
        "body": body_value,
        "isBase64Encoded": is_base64,
    })
}

/// Runs the Lambda and turns its proxy answer into HTTP, as API Gateway does; an invocation
/// failure or a malformed answer is API Gateway's 502 `Internal server error`.
pub(super) async fn lambda(state: &GwState, invocation: &Invocation<'_>) -> Response<RespBody> {
    let event = proxy_event(state, invocation);
    let request_id = invocation.request_id;
    let bad_gateway = || {
        let mut resp = json_response(
            StatusCode::BAD_GATEWAY,
            &serde_json::json!({"message": "Internal server error"}),
            request_id,
        );
        resp.headers_mut().insert(
            "x-amzn-errortype",
            HeaderValue::from_static("InternalServerErrorException"),
        );
        resp
    };
    let Ok(answer) = hello_lambda::invoke_json(event).await else {
        return bad_gateway();
    };
    let Some(status) = answer["statusCode"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
    else {
        return bad_gateway();
    };
    let text = answer["body"].as_str().unwrap_or_default();
    let bytes: Vec<u8> = if answer["isBase64Encoded"].as_bool().unwrap_or(false) {
        match base64::engine::general_purpose::STANDARD.decode(text) {
            Ok(b) => b,
            Err(_) => return bad_gateway(),
        }
    } else {
        text.as_bytes().to_vec()
    };
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    let mut add = |k: &str, v: &serde_json::Value| {
        if let (Ok(name), Some(Ok(value))) = (
            HeaderName::from_bytes(k.as_bytes()),
            v.as_str().map(HeaderValue::from_str),
        ) {
            h.append(name, value);
        }
    };
    if let Some(map) = answer["headers"].as_object() {
        for (k, v) in map {
            add(k, v);
        }
    }
    if let Some(map) = answer["multiValueHeaders"].as_object() {
        for (k, vs) in map {
            for v in vs.as_array().into_iter().flatten() {
                add(k, v);
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}
