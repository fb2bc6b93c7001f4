//! The Rust Lambda behind the IAM-protected API Gateway that the sidecar reaches.
//!
//! `GET /hello-world` answers `{"message": "Hello World", "caller": "<IAM ARN>"}`, where the
//! caller is the IAM principal API Gateway verified (REST API payload 1.0:
//! `requestContext.identity.userArn`; HTTP API payload 2.0:
//! `requestContext.authorizer.iam.userArn`). Echoing the caller is the point of the demo: a user
//! sees which role the sidecar assumed to reach the function.
//!
//! [`handler`] is a plain async function so it can be unit-tested with real event JSON, and
//! [`invoke_json`] runs it exactly as the Lambda runtime would (same event deserialization, same
//! response conversion), which is what the local API Gateway stand-in in `sigv4-testbed` calls.

use lambda_http::http::{header, Method, StatusCode};
use lambda_http::request::{LambdaRequest, RequestContext};
use lambda_http::{Body, Context, Error, LambdaEvent, Request, RequestExt, Response, Service};

/// The one route this function serves, relative to the stage.
pub const HELLO_PATH: &str = "/hello-world";

/// Handles one API Gateway request (REST API payload 1.0 or HTTP API payload 2.0).
///
/// Routing looks at the path as API Gateway sent it (`raw_http_path`), not at `uri().path()`:
/// lambda_http prefixes the stage to the URI it builds for REST events (`/Prod/hello-world`),
/// while the event's own `path` usually has no stage. Both spellings are accepted, because a
/// custom domain or an HTTP API with a named stage does put the stage into the raw path.
pub async fn handler(req: Request) -> Result<Response<Body>, Error> {
    let path = route_path(&req);
    if path != HELLO_PATH {
        return json_response(
            StatusCode::NOT_FOUND,
            serde_json::json!({"message": "Not Found", "path": path}),
            None,
        );
    }
    if req.method() != Method::GET {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({"message": "Method Not Allowed", "method": req.method().as_str()}),
            Some("GET"),
        );
    }
    let caller = caller_arn(&req);
    json_response(
        StatusCode::OK,
        serde_json::json!({"message": "Hello World", "caller": caller}),
        None,
    )
}

/// Runs [`handler`] on a raw API Gateway event and returns the JSON the runtime would send back.
///
/// This goes through lambda_http's own runtime adapter (`lambda_http::Adapter`, the service that
/// `lambda_http::run` wraps around the handler): the event is deserialized as
/// `lambda_http::request::LambdaRequest` (REST 1.0 is tried before HTTP 2.0, as in the runtime)
/// and the response is converted into the `LambdaResponse` shape for the event's origin
/// (`statusCode`, `headers`, `multiValueHeaders`, `body`, `isBase64Encoded`). Both types are
/// `#[doc(hidden)]` in lambda_http but public; using them keeps the local stand-in byte-compatible
/// with the deployed function instead of re-implementing the conversion.
pub async fn invoke_json(event: serde_json::Value) -> Result<serde_json::Value, Error> {
    let request: LambdaRequest = serde_json::from_value(event)?;
    let mut adapter = lambda_http::Adapter::from(lambda_http::service_fn(handler));
    std::future::poll_fn(|cx| adapter.poll_ready(cx)).await?;
    let response = adapter
        .call(LambdaEvent::new(request, Context::default()))
        .await?;
    Ok(serde_json::to_value(response)?)
}

/// The request path relative to the stage.
///
/// Uses the path from the event (`raw_http_path`) and falls back to the URI for requests built
/// by hand (unit tests of [`handler`] without an event). A leading `/<stage>` is removed when the
/// request context names a stage other than `$default`.
fn route_path(req: &Request) -> String {
    let raw = req.raw_http_path();
    let path = if raw.is_empty() {
        req.uri().path()
    } else {
        raw
    };
    let stage = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.stage.clone(),
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.stage.clone(),
        _ => None,
    };
    if let Some(stage) = stage.filter(|s| !s.is_empty() && s != "$default") {
        let prefix = format!("/{stage}");
        if path == prefix {
            return "/".to_string();
        }
        if let Some(rest) = path.strip_prefix(&prefix) {
            if rest.starts_with('/') {
                return rest.to_string();
            }
        }
    }
    if path.is_empty() {
        "/".to_string()
    } else {
        path.to_string()
    }
}

/// The IAM ARN API Gateway verified for this request, if any.
///
/// REST APIs with `AWS_IAM` authorization put it in `identity.userArn`; HTTP APIs put it in
/// `authorizer.iam.userArn`. Anything else (no IAM auth, a hand-built request) gives `None`,
/// which the answer shows as `null` rather than guessing.
pub fn caller_arn(req: &Request) -> Option<String> {
    match req.request_context_ref()? {
        RequestContext::ApiGatewayV1(ctx) => ctx.identity.user_arn.clone(),
        RequestContext::ApiGatewayV2(ctx) => ctx
            .authorizer
            .as_ref()
            .and_then(|a| a.iam.as_ref())
            .and_then(|iam| iam.user_arn.clone()),
        _ => None,
    }
}

/// A JSON answer with `Content-Type: application/json` (which also makes lambda_http send the
/// body as text, not base64) and, for 405, the `Allow` header.
fn json_response(
    status: StatusCode,
    body: serde_json::Value,
    allow: Option<&str>,
) -> Result<Response<Body>, Error> {
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(allow) = allow {
        builder = builder.header(header::ALLOW, allow);
    }
    Ok(builder.body(Body::Text(serde_json::to_string(&body)?))?)
}
