//! Validation: from the merged raw layer to the typed [`Config`], every check naming the key,
//! the value and the problem. Nothing here applies a default (the raw layer did).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::uri::{Scheme, Uri};

use super::aws_host::infer_from_host;
use super::raw::RawConfig;
use super::{
    err, CaFile, Config, ConfigError, Limits, LogFormat, Payload, RoleKey, RouteConfig, Sources,
    Upstream,
};
use crate::credentials::MIN_CREDENTIAL_LIFETIME;

impl Upstream {
    /// Parses and checks an upstream URL: http(s), a host, no user info, query or fragment.
    pub fn parse(key: &str, url: &str) -> Result<Self, ConfigError> {
        if url.contains('#') {
            return Err(err(key, url, "must not have a fragment (`#...`)"));
        }
        let uri: Uri = url
            .parse()
            .map_err(|e| err(key, url, format!("is not a valid URL: {e}")))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| err(key, url, "must be an absolute http:// or https:// URL"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(err(key, url, "scheme must be http or https"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| err(key, url, "has no host"))?;
        if authority.as_str().contains('@') {
            return Err(err(key, url, "must not contain user info (`user@`)"));
        }
        if authority.host().is_empty() {
            return Err(err(key, url, "has no host"));
        }
        if uri.query().is_some() || url.contains('?') {
            return Err(err(
                key,
                url,
                "must not have a query (`?...`): the request's own query is appended",
            ));
        }
        let base_path = uri.path().trim_end_matches('/').to_string();
        let host_header = http::HeaderValue::from_str(authority.as_str())
            .map_err(|e| err(key, url, format!("host is not a valid Host header: {e}")))?;
        Ok(Upstream {
            host_header,
            url: url.to_string(),
            host: authority.host().trim_matches(['[', ']']).to_string(),
            scheme,
            authority,
            base_path,
        })
    }
}

fn parse_duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value).map_err(|e| {
        err(
            key,
            value,
            format!("is not a duration like \"30s\", \"10m\" or \"1h\": {e}"),
        )
    })
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        err(
            key,
            value,
            "must be an IP address and port, like \"127.0.0.1:8080\"",
        )
    })
}

/// A route key `k` of route `route` ("" for the top level), for error messages.
fn key_of(route: &str, k: &str) -> String {
    if route.is_empty() {
        k.to_string()
    } else {
        format!("routes[{route}].{k}")
    }
}

pub(super) fn validate(
    raw: RawConfig,
    explicit_top: &RawConfig,
    sources: &Sources,
) -> Result<Config, ConfigError> {
    let admin_listen = parse_addr(
        "admin_listen",
        raw.admin_listen.as_deref().unwrap_or_default(),
    )?;
    let shutdown_grace = parse_duration(
        "shutdown_grace",
        raw.shutdown_grace.as_deref().unwrap_or_default(),
    )?;
    let log_level = raw.log_level.clone().unwrap_or_default();
    log_level
        .parse::<tracing_subscriber::filter::Targets>()
        .map_err(|e| {
            err(
                "log_level",
                &log_level,
                format!("is not a log level or filter: {e}"),
            )
        })?;

    let mut routes = vec![route(&raw, "default", "", &raw, sources)?];
    for (i, r) in raw.routes.iter().enumerate() {
        let name = r.name.clone().ok_or_else(|| {
            err(
                format!("routes[{i}].name"),
                "",
                "every [[routes]] entry needs a name",
            )
        })?;
        let global = [
            ("admin_listen", r.admin_listen.is_some()),
            ("shutdown_grace", r.shutdown_grace.is_some()),
            ("log_format", r.log_format.is_some()),
            ("log_level", r.log_level.is_some()),
            ("max_connections", r.max_connections.is_some()),
            (
                "max_inflight_body_bytes",
                r.max_inflight_body_bytes.is_some(),
            ),
            ("max_header_bytes", r.max_header_bytes.is_some()),
            ("header_read_timeout", r.header_read_timeout.is_some()),
            ("routes", !r.routes.is_empty()),
        ];
        if let Some((k, _)) = global.iter().find(|(_, set)| *set) {
            return Err(err(
                key_of(&name, k),
                "",
                "is process-wide: set it at the top level, not in a route",
            ));
        }
        // Unset keys inherit the top level's explicit settings; defaults fill the rest.
        let mut merged = r.route_keys().over(&explicit_top.route_keys());
        merged.listen = r.listen.clone();
        if merged.listen.is_none() {
            return Err(err(
                key_of(&name, "listen"),
                "",
                "every route needs its own listen address",
            ));
        }
        let merged = merged.over(&RawConfig::builtin().route_keys());
        routes.push(route(&merged, &name, &name, r, sources)?);
    }

    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for r in &routes {
        if !names.insert(r.name.clone()) {
            return Err(err(
                key_of(&r.name, "name"),
                &r.name,
                "route names must be unique",
            ));
        }
        // Port 0 asks the kernel for a free port: never a clash.
        let clash = r.listen.port() != 0 && (!addrs.insert(r.listen) || r.listen == admin_listen);
        if clash {
            return Err(err(
                key_of(if r.name == "default" { "" } else { &r.name }, "listen"),
                r.listen,
                "listen addresses must be unique (and differ from admin_listen)",
            ));
        }
    }
    for r in &routes {
        let (host, port) = (r.upstream.host.as_str(), r.upstream.port());
        let own = routes.iter().map(|o| o.listen).chain([admin_listen]);
        if own.into_iter().any(|addr| addr_hits(host, port, addr)) {
            let k = if r.name == "default" {
                "upstream".to_string()
            } else {
                key_of(&r.name, "upstream")
            };
            return Err(err(
                k,
                &r.upstream.url,
                "points at the sidecar's own listen address: it would sign and forward to itself",
            ));
        }
    }

    let limits = limits(&raw, &routes)?;
    Ok(Config {
        limits,
        routes,
        admin_listen,
        shutdown_grace,
        log_format: raw.log_format.unwrap_or(LogFormat::Json),
        log_level,
        effective: raw,
    })
}

fn limits(raw: &RawConfig, routes: &[RouteConfig]) -> Result<Limits, ConfigError> {
    let max_connections = raw.max_connections.unwrap_or_default();
    if !(1..=1_000_000).contains(&max_connections) {
        return Err(err(
            "max_connections",
            max_connections,
            "must be between 1 and 1000000",
        ));
    }
    let max_inflight_body_bytes = raw.max_inflight_body_bytes.unwrap_or_default();
    if let Some(r) = routes
        .iter()
        // Streamed (unsigned) bodies are never held, so only signed routes count against it.
        .filter(|r| r.reach.payload == Payload::Signed)
        .find(|r| r.max_body_bytes > max_inflight_body_bytes)
    {
        return Err(err(
            "max_inflight_body_bytes",
            max_inflight_body_bytes,
            format!(
                "must be at least max_body_bytes of every route (route {} has {})",
                r.name, r.max_body_bytes
            ),
        ));
    }
    let max_header_bytes = raw.max_header_bytes.unwrap_or_default();
    if !(8192..=1 << 20).contains(&max_header_bytes) {
        return Err(err(
            "max_header_bytes",
            max_header_bytes,
            "must be between 8192 and 1048576",
        ));
    }
    let header_read_timeout = parse_duration(
        "header_read_timeout",
        raw.header_read_timeout.as_deref().unwrap_or_default(),
    )?;
    if header_read_timeout.is_zero() {
        return Err(err(
            "header_read_timeout",
            "0s",
            "must be greater than zero",
        ));
    }
    Ok(Limits {
        max_connections: max_connections as usize,
        max_inflight_body_bytes,
        max_header_bytes: max_header_bytes as usize,
        header_read_timeout,
    })
}

/// Whether `host:port` reaches the listener bound to `addr` (a loopback name or address, or the
/// listener's own address).
fn addr_hits(host: &str, port: u16, addr: SocketAddr) -> bool {
    if port != addr.port() {
        return false;
    }
    let local = addr.ip().is_loopback() || addr.ip().is_unspecified();
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip == addr.ip() || (local && (ip.is_loopback() || ip.is_unspecified())),
        Err(_) => local && host.eq_ignore_ascii_case("localhost"),
    }
}

/// Validates one route. `prefix` is "" for the top-level route (keys are named as in the file),
/// else the route name. `own` holds what the route itself set, for region/service inference.
fn route(
    k: &RawConfig,
    name: &str,
    prefix: &str,
    own: &RawConfig,
    sources: &Sources,
) -> Result<RouteConfig, ConfigError> {
    let key = |f: &str| key_of(prefix, f);
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(err(
            key("name"),
            name,
            "must be non-empty letters, digits, `-` or `_`",
        ));
    }
    let listen = parse_addr(&key("listen"), k.listen.as_deref().unwrap_or_default())?;
    let upstream_url = k.upstream.as_deref().filter(|u| !u.is_empty()).ok_or_else(|| {
        err(
            key("upstream"),
            "",
            "is required: the base URL to sign for, e.g. https://abc123.execute-api.us-east-1.amazonaws.com/Prod",
        )
    })?;
    let upstream = Upstream::parse(&key("upstream"), upstream_url)?;
    let inferred = infer_from_host(&upstream.host);
    // A route's region/service are first inferred from its own upstream, then inherited.
    let (region, service) = if own.upstream.is_some() {
        (
            own.region.clone().or(inferred.region).or(k.region.clone()),
            own.service
                .clone()
                .or(inferred.service)
                .or(k.service.clone()),
        )
    } else {
        (
            k.region.clone().or(inferred.region),
            k.service.clone().or(inferred.service),
        )
    };
    let region = region
        .or_else(|| sources.aws_region.clone())
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            err(
                key("region"),
                "",
                format!(
                    "cannot be inferred from the upstream host `{}`: set `region` (or AWS_REGION)",
                    upstream.host
                ),
            )
        })?;
    if !region
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(err(key("region"), &region, "must look like `us-east-1`"));
    }
    let service = service.filter(|s| !s.is_empty()).ok_or_else(|| {
        err(
            key("service"),
            "",
            format!(
                "cannot be inferred from the upstream host `{}`: set `service` (e.g. execute-api, lambda, es)",
                upstream.host
            ),
        )
    })?;
    if !service
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(err(
            key("service"),
            &service,
            "must be an AWS signing name like `execute-api`",
        ));
    }

    let role_arn = k.role_arn.clone().filter(|a| !a.is_empty());
    if let Some(arn) = &role_arn {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        if parts.len() != 6
            || parts[0] != "arn"
            || parts[2] != "iam"
            || !parts[5].starts_with("role/")
        {
            return Err(err(
                key("role_arn"),
                arn,
                "must be an IAM role ARN like arn:aws:iam::111111111111:role/name",
            ));
        }
    }
    let session_name = match k.role_session_name.clone().filter(|s| !s.is_empty()) {
        Some(s) => {
            if s.len() < 2 || s.len() > 64 || !s.chars().all(session_name_char) {
                return Err(err(
                    key("role_session_name"),
                    &s,
                    "must be 2 to 64 characters of letters, digits and =,.@_-",
                ));
            }
            s
        }
        None => default_session_name(sources.hostname.as_deref()),
    };
    let external_id = k.external_id.clone().filter(|s| !s.is_empty());
    if let Some(x) = &external_id {
        if x.len() < 2 || x.len() > 1224 {
            return Err(err(
                key("external_id"),
                "<redacted>",
                "must be 2 to 1224 characters",
            ));
        }
    }
    let duration = parse_duration(
        &key("role_duration"),
        k.role_duration.as_deref().unwrap_or_default(),
    )?;
    if role_arn.is_some() && !(900..=43_200).contains(&duration.as_secs()) {
        return Err(err(
            key("role_duration"),
            k.role_duration.as_deref().unwrap_or_default(),
            "must be between 15m and 12h (STS DurationSeconds limits)",
        ));
    }
    let refresh_before_expiry = parse_duration(
        &key("refresh_before_expiry"),
        k.refresh_before_expiry.as_deref().unwrap_or_default(),
    )?;
    if refresh_before_expiry < MIN_CREDENTIAL_LIFETIME {
        let min = MIN_CREDENTIAL_LIFETIME.as_secs();
        return Err(err(
            key("refresh_before_expiry"),
            k.refresh_before_expiry.as_deref().unwrap_or_default(),
            format!(
                "must be at least {min}s: credentials are never used in their last {min} seconds"
            ),
        ));
    }
    let reach = super::reach::validate(
        &super::reach::RawReach {
            connect: k.connect.as_deref(),
            payload: k.payload.as_deref(),
            signing_algorithm: k.signing_algorithm.as_deref(),
            region_set: k.region_set.as_deref(),
            unsigned_headers: k.unsigned_headers.as_deref(),
            client_authorization_to: k.client_authorization_to.as_deref(),
        },
        key,
        &upstream,
        &region,
    )?;
    let max_body_bytes = k.max_body_bytes.unwrap_or_default();
    // Streamed bodies are never held, so only a signed payload needs the memory cap.
    if reach.payload == Payload::Signed && max_body_bytes > 1 << 30 {
        return Err(err(
            key("max_body_bytes"),
            max_body_bytes,
            "must be at most 1 GiB: bodies are held in memory to be hashed",
        ));
    }
    let ca_file = match k.ca_file.as_deref().filter(|s| !s.is_empty()) {
        Some(p) => Some(load_ca_file(&key("ca_file"), PathBuf::from(p))?),
        None => None,
    };
    let connect_timeout = parse_duration(
        &key("connect_timeout"),
        k.connect_timeout.as_deref().unwrap_or_default(),
    )?;
    let request_timeout = parse_duration(
        &key("request_timeout"),
        k.request_timeout.as_deref().unwrap_or_default(),
    )?;
    for (f, d) in [
        ("connect_timeout", connect_timeout),
        ("request_timeout", request_timeout),
    ] {
        if d.is_zero() {
            return Err(err(key(f), "0s", "must be greater than zero"));
        }
    }
    Ok(RouteConfig {
        name: name.to_string(),
        listen,
        upstream,
        region,
        service,
        role: RoleKey {
            role_arn,
            session_name,
            external_id,
            duration,
        },
        refresh_before_expiry,
        max_body_bytes,
        ca_file,
        connect_timeout,
        request_timeout,
        reach,
    })
}

/// Reads and parses a `ca_file` once: every consumer gets the result, none reads the file.
fn load_ca_file(key: &str, path: PathBuf) -> Result<CaFile, ConfigError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let pem = std::fs::read(&path)
        .map_err(|e| err(key, path.display(), format!("cannot be read: {e}")))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            err(
                key,
                path.display(),
                format!("is not a PEM certificate file: {e}"),
            )
        })?;
    if certs.is_empty() {
        return Err(err(key, path.display(), "holds no PEM certificate"));
    }
    Ok(CaFile { path, pem, certs })
}

fn session_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "=,.@_-".contains(c)
}

/// `sigv4-sidecar-<hostname>`, cut to STS's 64 characters and its character set. In a pod the
/// host name is the pod name, so CloudTrail shows which pod assumed the role.
pub fn default_session_name(hostname: Option<&str>) -> String {
    let mut s: String = format!("sigv4-sidecar-{}", hostname.unwrap_or("unknown"))
        .chars()
        .map(|c| if session_name_char(c) { c } else { '-' })
        .collect();
    s.truncate(64);
    s
}
