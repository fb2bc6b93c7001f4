//! sigv4-sidecar: a reverse proxy that signs every request with AWS SigV4.
//!
//! An app sends plain HTTP to the sidecar on loopback; the sidecar appends the request to its
//! configured upstream (an API Gateway stage, a Lambda function URL, ...), signs it with
//! credentials it keeps fresh in the background, and streams the answer back.
//!
//! Reading order for newcomers (pictures and each module's rules: `docs/architecture.md`):
//! [`config`] (what can be configured: types and load, then its raw layer, validation and AWS
//! host inference), [`credentials`] (how credentials are held and refreshed), [`signing`]
//! (SigV4 with a cached key, `aws-sigv4` as the oracle), [`proxy`] (the per-request pipeline:
//! request head, bodies, exchange record, upstream client), [`error`] (every answer the sidecar produces itself, and startup
//! errors), [`admin`] and [`metrics`] (apart from the data path), and [`server`] (accept loops
//! and graceful shutdown). [`run`] wires them.

pub mod admin;
pub mod auth_failures;
pub mod config;
pub mod credentials;
pub mod error;
pub mod metrics;
pub mod proxy;
pub mod route_signing;
pub mod server;
pub mod signing;
pub mod sigv4_text;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use aws_smithy_types::timeout::TimeoutConfig;
use tokio::sync::watch;

use crate::admin::Admin;
use crate::config::Config;
use crate::error::StartupError;
use crate::metrics::Metrics;
use crate::proxy::BodyBudget;
use crate::proxy::Route;

/// Runs the sidecar until `shutdown` completes, then drains in-flight requests for up to
/// `shutdown_grace`. Returns an error (before serving anything) when a listener cannot be bound
/// or a route cannot be set up.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartupError> {
    let metrics = Metrics::new();
    let sdk = aws_sdk_config(&config).await?;
    let base = sdk.credentials_provider().ok_or_else(|| {
        StartupError::Aws("the AWS default credential chain is not available".into())
    })?;
    let sts = aws_sdk_sts::Client::new(&sdk);
    let creds = credentials::build(
        config
            .routes
            .iter()
            .map(|r| (r.role.clone(), r.refresh_before_expiry)),
        &base,
        &sts,
        &metrics,
    );

    // Bind everything first: a port clash must stop the process before it serves anything.
    let admin_listener = server::bind("admin", config.admin_listen).await?;
    let mut listeners = Vec::new();
    let mut routes = Vec::new();
    let bodies = BodyBudget::new(config.limits.max_inflight_body_bytes);
    for rc in &config.routes {
        let cell = creds
            .cells
            .get(&rc.role)
            .cloned()
            .ok_or_else(|| StartupError::Route {
                route: rc.name.clone(),
                problem: "credential cell missing".into(),
            })?;
        let route = Arc::new(Route::new(rc, cell, bodies.clone(), metrics.clone())?);
        listeners.push(server::bind(&format!("route {}", rc.name), rc.listen).await?);
        routes.push(route);
    }

    // Credentials are fetched in the background; until they arrive /readyz says 503.
    for refresher in creds.refreshers {
        tokio::spawn(refresher.run());
    }

    // Two shutdown signals: the proxies stop first; the admin port (whose /readyz reads the
    // proxies' signal as "draining") keeps answering until they have drained.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
    let admin = Arc::new(Admin {
        routes: routes
            .iter()
            .map(|r| (r.name.clone(), r.credentials().clone()))
            .collect(),
        metrics: metrics.clone(),
        draining: stop_rx.clone(),
    });
    let local_addr = |l: &tokio::net::TcpListener, what: &str, addr| {
        l.local_addr().map_err(|source| StartupError::Listen {
            what: what.to_string(),
            addr,
            source,
        })
    };
    tracing::info!(addr = %local_addr(&admin_listener, "admin", config.admin_listen)?, "admin listening");
    let admin_task = tokio::spawn(server::serve(
        admin_listener,
        move |req| admin.clone().handle(req),
        config.limits,
        admin_stop_rx,
    ));

    let mut proxies = Vec::new();
    for ((listener, route), rc) in listeners.into_iter().zip(routes).zip(&config.routes) {
        let addr = local_addr(&listener, &format!("route {}", rc.name), rc.listen)?;
        if !addr.ip().is_loopback() {
            tracing::warn!(route = %route.name, %addr, "proxy listens beyond loopback: anyone who can reach it can make signed requests as this pod's role");
        }
        tracing::info!(route = %route.name, %addr, upstream = %route.upstream.url, "proxy listening");
        proxies.push(tokio::spawn(server::serve(
            listener,
            move |req| route.clone().handle(req),
            config.limits,
            stop_rx.clone(),
        )));
    }

    shutdown.await;
    let _ = stop_tx.send(true);
    // The accept loops end at once and drop their listeners: from here on new connections
    // are refused by the kernel.
    let mut draining = Vec::new();
    for p in proxies {
        if let Ok(graceful) = p.await {
            draining.push(graceful);
        }
    }
    tracing::info!(
        grace_secs = config.shutdown_grace.as_secs_f64(),
        "shutting down: new connections refused, draining in-flight requests"
    );
    let drained = futures_join_all(draining.into_iter().map(|g| g.shutdown()));
    if tokio::time::timeout(config.shutdown_grace, drained)
        .await
        .is_err()
    {
        tracing::warn!("shutdown_grace elapsed with requests still in flight; closing them");
    } else {
        tracing::info!("all in-flight requests finished");
    }
    let _ = admin_stop_tx.send(true);
    if let Ok(graceful) = admin_task.await {
        let _ = tokio::time::timeout(Duration::from_secs(1), graceful.shutdown()).await;
    }
    Ok(())
}

/// Awaits every future, concurrently.
async fn futures_join_all<F: Future<Output = ()> + Send + 'static>(futs: impl Iterator<Item = F>) {
    let mut set = tokio::task::JoinSet::new();
    for f in futs {
        set.spawn(f);
    }
    while set.join_next().await.is_some() {}
}

/// The AWS SDK configuration the credential chain and the STS client use: the default chain,
/// one hyper 1 + rustls (ring) HTTP client, and the route's region when `AWS_REGION` is unset
/// (so the SDK never asks instance metadata for a region).
async fn aws_sdk_config(config: &Config) -> Result<aws_config::SdkConfig, StartupError> {
    let mut trust = TrustStore::default();
    for r in &config.routes {
        if let Some(ca) = &r.ca_file {
            trust = trust.with_pem_certificate(ca.pem.clone());
        }
    }
    let tls_context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| StartupError::Aws(format!("TLS setup for STS: {e}")))?;
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(tls_context)
        .build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(15))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .timeout_config(timeouts);
    let env_region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .any(|k| std::env::var(k).is_ok_and(|v| !v.is_empty()));
    if !env_region {
        if let Some(first) = config.routes.first() {
            loader = loader.region(aws_config::Region::new(first.region.clone()));
        }
    }
    Ok(loader.load().await)
}
