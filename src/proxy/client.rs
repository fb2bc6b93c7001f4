//! The pooled upstream client of a route: hyper-util's pool over rustls (ring), HTTP/1.1 or
//! HTTP/2 by ALPN, public web PKI roots plus `ca_file`.
//!
//! With `connect` set, the TCP connection goes to that address and TLS verifies that name (SNI
//! and certificate), while the request URI, `Host`/`:authority` and the signature keep naming the
//! upstream. That is how a private API is reached through an interface VPC endpoint, whose
//! certificate names the endpoint, not the API. The pool still keys connections by the
//! upstream's scheme and authority, which is one key per route, so pooling is unchanged.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::ServerName;

use super::upstream_body::UpstreamBody;
use crate::config::{Connect, RouteConfig};

/// The pooled upstream client of one route.
pub type UpstreamClient = Client<HttpsConnector<ConnectTo>, UpstreamBody>;

/// A TCP connector that dials a fixed address instead of the request's host when the route has
/// `connect`, and the request's host otherwise.
#[derive(Clone)]
pub struct ConnectTo {
    inner: HttpConnector,
    /// `http://<connect host>:<port>`: only its host and port are used to dial.
    to: Option<Uri>,
}

impl tower_service::Service<Uri> for ConnectTo {
    type Response = <HttpConnector as tower_service::Service<Uri>>::Response;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let dst = self.to.clone().unwrap_or(dst);
        Box::pin(self.inner.call(dst))
    }
}

/// Builds the route's pooled client: public web PKI roots built in, plus `ca_file`; with
/// `connect`, dialing and TLS name that address instead of the upstream host.
pub(super) fn build_client(cfg: &RouteConfig) -> Result<UpstreamClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = &cfg.ca_file {
        for cert in &ca.certs {
            roots
                .add(cert.clone())
                .map_err(|e| format!("ca_file {}: {e}", ca.path.display()))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(cfg.connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let connect = cfg.reach.connect.as_ref();
    let dial = ConnectTo {
        inner: http,
        to: connect.map(dial_uri).transpose()?,
    };
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let builder = match connect {
        Some(c) => builder.with_server_name_resolver(FixedServerNameResolver::new(server_name(c)?)),
        None => builder,
    };
    let https = builder.enable_http1().enable_http2().wrap_connector(dial);
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        // Below API Gateway's and ALB's idle timeouts, so a pooled connection is not reused
        // just as the far end closes it.
        .pool_idle_timeout(Duration::from_secs(50))
        .build(https))
}

/// The address to dial, as the URI `HttpConnector` wants (it reads host and port only).
fn dial_uri(c: &Connect) -> Result<Uri, String> {
    let host = if c.host.contains(':') {
        format!("[{}]", c.host)
    } else {
        c.host.clone()
    };
    format!("http://{host}:{}", c.port)
        .parse()
        .map_err(|e| format!("connect {}: {e}", c.host))
}

/// The name TLS sends as SNI and verifies the certificate for: the `connect` host (an IP is
/// verified against the certificate's IP addresses, and sent without SNI, as rustls does).
fn server_name(c: &Connect) -> Result<ServerName<'static>, String> {
    ServerName::try_from(c.host.clone()).map_err(|e| format!("connect {}: {e}", c.host))
}
