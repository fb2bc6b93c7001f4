//! Configuration: built-in defaults < TOML file < `SIGV4_SIDECAR_*` environment, merged by
//! figment into one typed, validated [`Config`].
//!
//! Everything that can be wrong with the configuration is found here, before any socket is
//! bound, and reported as a [`ConfigError`] that names the key, the value and the problem. The
//! rest of the program only ever sees a valid `Config`.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use http::uri::{Authority, Scheme, Uri};
use serde::{Deserialize, Deserializer, Serialize};

pub mod reach;
pub use reach::{Algorithm, Connect, Payload, Reach};

/// Prefix of every environment variable the sidecar reads.
pub const ENV_PREFIX: &str = "SIGV4_SIDECAR_";

/// Credentials whose remaining lifetime is below this are never used to sign.
pub const MIN_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(30);

/// A configuration problem, naming the key, the offending value and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub value: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "config key `{}`: {}", self.key, self.problem)
        } else {
            write!(
                f,
                "config key `{}` = {:?}: {}",
                self.key, self.value, self.problem
            )
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(
    key: impl Into<String>,
    value: impl fmt::Display,
    problem: impl Into<String>,
) -> ConfigError {
    ConfigError {
        key: key.into(),
        value: value.to_string(),
        problem: problem.into(),
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

/// The file/environment layout before validation. The route keys at the top level form the
/// route `default`; a `[[routes]]` entry has the same shape (minus the process-wide keys) and
/// inherits every key it leaves unset from the top level's explicit settings.
///
/// Every field is optional here so that "unset" can be told apart from "set to the default",
/// which inheritance needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(
        default,
        deserialize_with = "lossy_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub listen: Option<String>,
    #[serde(
        default,
        deserialize_with = "lossy_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub upstream: Option<String>,
    #[serde(
        default,
        deserialize_with = "lossy_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub region: Option<String>,
    #[serde(
        default,
        deserialize_with = "lossy_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub service: Option<String>,
    #[serde(
        default,
        deserialize_with = "lossy_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub role_arn: Option<String>,
    #[serde(
        default,
        deserialize_with = "lossy_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub role_session_name: Option<String>,
    #[serde(
        default,
        deserialize_with = "lossy_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub external_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "lossy_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub role_duration: Option<String>,
    #[serde(
        default,
        deserialize_with = "lossy_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub refresh_before_expiry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    #[serde(
        default,
        deserialize_with = "lossy_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub ca_file: Option<String>,
    #[serde(
        default,
        deserialize_with = "lossy_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub connect_timeout: Option<String>,
    #[serde(
        default,
        deserialize_with = "lossy_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_timeout: Option<String>,
    // Reach keys (SPEC "Reaching private endpoints and other services"), validated in `reach`.
    #[serde(
        default,
        deserialize_with = "lossy_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub connect: Option<String>,
    #[serde(
        default,
        deserialize_with = "lossy_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub payload: Option<String>,
    #[serde(
        default,
        deserialize_with = "lossy_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub signing_algorithm: Option<String>,
    #[serde(
        default,
        deserialize_with = "lossy_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub region_set: Option<String>,
    #[serde(
        default,
        deserialize_with = "reach::string_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub unsigned_headers: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "lossy_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_authorization_to: Option<String>,
    // Process-wide keys: top level only.
    #[serde(
        default,
        deserialize_with = "lossy_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub admin_listen: Option<String>,
    #[serde(
        default,
        deserialize_with = "lossy_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub shutdown_grace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    #[serde(
        default,
        deserialize_with = "lossy_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub log_level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_inflight_body_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<u64>,
    #[serde(
        default,
        deserialize_with = "lossy_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub header_read_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RawConfig>,
}

/// Environment values are parsed by figment as TOML-like values, so `SIGV4_SIDECAR_EXTERNAL_ID=1234`
/// arrives as an integer. Every string key accepts numbers and booleans as their text.
fn lossy_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Lossy {
        S(String),
        I(i64),
        U(u64),
        F(f64),
        B(bool),
    }
    Ok(Option::<Lossy>::deserialize(d)?.map(|v| match v {
        Lossy::S(s) => s,
        Lossy::I(i) => i.to_string(),
        Lossy::U(u) => u.to_string(),
        Lossy::F(f) => f.to_string(),
        Lossy::B(b) => b.to_string(),
    }))
}

/// Built-in defaults, the lowest layer.
pub mod defaults {
    pub const LISTEN: &str = "127.0.0.1:8080";
    pub const ADMIN_LISTEN: &str = "0.0.0.0:9090";
    pub const ROLE_DURATION: &str = "1h";
    pub const REFRESH_BEFORE_EXPIRY: &str = "10m";
    pub const MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
    pub const CONNECT_TIMEOUT: &str = "3s";
    pub const REQUEST_TIMEOUT: &str = "30s";
    pub const SHUTDOWN_GRACE: &str = "20s";
    pub const LOG_LEVEL: &str = "info";
    pub const MAX_CONNECTIONS: u64 = 1024;
    pub const MAX_INFLIGHT_BODY_BYTES: u64 = 64 * 1024 * 1024;
    pub const MAX_HEADER_BYTES: u64 = 64 * 1024;
    pub const HEADER_READ_TIMEOUT: &str = "10s";
}

/// Limits that protect the pod from its own clients (slowloris, connection floods, many large
/// uploads at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections per proxy listener; more are answered 503 and closed.
    pub max_connections: usize,
    /// Request-body bytes held in memory across all requests; beyond it, 503.
    pub max_inflight_body_bytes: u64,
    /// Largest request head (request line + headers); beyond it, 431.
    pub max_header_bytes: usize,
    /// How long a client may take to send a request head; beyond it the connection is closed.
    pub header_read_timeout: Duration,
}

impl Limits {
    /// Header lines hyper accepts in one head: as many as fit in `max_header_bytes` (the
    /// shortest line, `a:` + CRLF, is 4 bytes), so the byte limit is the only one an app meets
    /// (hyper's own default of 100 lines would answer a bare 431 to a head well within it).
    pub const fn max_header_lines(max_header_bytes: usize) -> usize {
        max_header_bytes / 4
    }
}

/// The upstream a route forwards to, split once at start so the hot path only concatenates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The URL as configured.
    pub url: String,
    pub scheme: Scheme,
    pub authority: Authority,
    /// Host without port, for region/service inference and TLS server name.
    pub host: String,
    /// The configured path without a trailing slash ("" for none): a prefix of every request path.
    pub base_path: String,
}

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
        Ok(Upstream {
            url: url.to_string(),
            host: authority.host().trim_matches(['[', ']']).to_string(),
            scheme,
            authority,
            base_path,
        })
    }

    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// The port the upstream is reached on.
    pub fn port(&self) -> u16 {
        self.authority
            .port_u16()
            .unwrap_or(if self.is_https() { 443 } else { 80 })
    }
}

/// What a route signs as: the role to assume, or the base credentials when `role_arn` is unset.
/// Routes with equal `RoleKey`s share one credential refresher.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleKey {
    pub role_arn: Option<String>,
    pub session_name: String,
    pub external_id: Option<String>,
    pub duration: Duration,
}

impl RoleKey {
    /// The label credential metrics carry: the role ARN, or `base` for the base credentials.
    pub fn label(&self) -> &str {
        self.role_arn.as_deref().unwrap_or("base")
    }
}

/// One validated route: a listener, an upstream and how to sign for it.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub upstream: Upstream,
    pub region: String,
    pub service: String,
    pub role: RoleKey,
    pub refresh_before_expiry: Duration,
    pub max_body_bytes: u64,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// How the route reaches its upstream and what it signs.
    pub reach: Reach,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub routes: Vec<RouteConfig>,
    pub admin_listen: SocketAddr,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    pub log_level: String,
    pub limits: Limits,
    /// What was merged from defaults, file and environment, for `--check`.
    pub effective: RawConfig,
}

/// Where configuration comes from besides the environment of this process.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub file: Option<PathBuf>,
    /// `AWS_REGION` (or `AWS_DEFAULT_REGION`), the fallback signing region.
    pub aws_region: Option<String>,
    /// The host name, for the default session name.
    pub hostname: Option<String>,
}

impl Sources {
    /// Sources as seen by the running process.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        let nonempty = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Sources {
            file,
            aws_region: nonempty("AWS_REGION").or_else(|| nonempty("AWS_DEFAULT_REGION")),
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .or_else(|| nonempty("HOSTNAME")),
        }
    }
}

impl Config {
    /// Loads defaults < file < `SIGV4_SIDECAR_*` environment of this process and validates.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        Self::load_with_env(sources, Env::prefixed(ENV_PREFIX).ignore(&["CONFIG"]))
    }

    /// As [`Config::load`] with an explicit environment provider (tests use `Env::raw` with a
    /// map so they do not touch the process environment).
    pub fn load_with_env(sources: &Sources, env: Env) -> Result<Config, ConfigError> {
        let defaults = RawConfig {
            listen: Some(defaults::LISTEN.into()),
            role_duration: Some(defaults::ROLE_DURATION.into()),
            refresh_before_expiry: Some(defaults::REFRESH_BEFORE_EXPIRY.into()),
            max_body_bytes: Some(defaults::MAX_BODY_BYTES),
            connect_timeout: Some(defaults::CONNECT_TIMEOUT.into()),
            request_timeout: Some(defaults::REQUEST_TIMEOUT.into()),
            admin_listen: Some(defaults::ADMIN_LISTEN.into()),
            shutdown_grace: Some(defaults::SHUTDOWN_GRACE.into()),
            log_format: Some(LogFormat::Json),
            log_level: Some(defaults::LOG_LEVEL.into()),
            max_connections: Some(defaults::MAX_CONNECTIONS),
            max_inflight_body_bytes: Some(defaults::MAX_INFLIGHT_BODY_BYTES),
            max_header_bytes: Some(defaults::MAX_HEADER_BYTES),
            header_read_timeout: Some(defaults::HEADER_READ_TIMEOUT.into()),
            ..Default::default()
        };
        // Explicit settings (file + env) are extracted on their own too: `[[routes]]` inherit only
        // what the user set at the top level, never the built-in `listen` default.
        let mut explicit = Figment::new();
        if let Some(file) = &sources.file {
            if !file.is_file() {
                return Err(err(
                    "config",
                    file.display(),
                    "file does not exist or is not a regular file",
                ));
            }
            explicit = explicit.merge(Toml::file_exact(file));
        }
        let explicit = explicit.merge(env);
        let merged: RawConfig = Figment::from(Serialized::defaults(&defaults))
            .merge(explicit.clone())
            .extract()
            .map_err(figment_error)?;
        let explicit: RawConfig = explicit.extract().map_err(figment_error)?;
        validate(merged, &explicit, sources)
    }

    /// The effective configuration as JSON, for `--check`. It holds no credentials; the
    /// external id is redacted because it acts as a shared secret in a role's trust policy.
    pub fn effective_json(&self) -> String {
        let mut shown = self.effective.clone();
        let redact = |k: &mut RawConfig| {
            if k.external_id.is_some() {
                k.external_id = Some("<redacted>".into());
            }
        };
        redact(&mut shown);
        shown.routes.iter_mut().for_each(redact);
        serde_json::to_string_pretty(&shown).unwrap_or_default()
    }
}

/// Turns a figment error (type mismatch, unknown field, bad TOML) into a `ConfigError`.
fn figment_error(e: figment::Error) -> ConfigError {
    // serde reports unknown keys as a message when `flatten` is involved; pull the key out.
    let unknown = match &e.kind {
        figment::error::Kind::UnknownField(f, _) => Some(f.clone()),
        figment::error::Kind::Message(m) if m.starts_with("unknown field `") => {
            m.split('`').nth(1).map(str::to_string)
        }
        _ => None,
    };
    let origin = e
        .metadata
        .as_ref()
        .map(|m| format!(" (from {})", m.name))
        .unwrap_or_default();
    let mut path = e.path.join(".");
    if let Some(f) = unknown {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(&f);
        return err(path, "", format!("unknown key `{f}`{origin}"));
    }
    if path.is_empty() {
        path = "config".into();
    }
    err(path, "", format!("{}{origin}", e.kind))
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

fn validate(
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
        raw.shutdown_grace
            .as_deref()
            .unwrap_or(defaults::SHUTDOWN_GRACE),
    )?;
    let log_level = raw
        .log_level
        .clone()
        .unwrap_or_else(|| defaults::LOG_LEVEL.into());
    tracing_subscriber::EnvFilter::try_new(&log_level).map_err(|e| {
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
        let mut merged = merge_keys(r, explicit_top);
        merged.listen = r.listen.clone();
        if merged.listen.is_none() {
            return Err(err(
                key_of(&name, "listen"),
                "",
                "every route needs its own listen address",
            ));
        }
        fill_defaults(&mut merged);
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
    let max_connections = raw.max_connections.unwrap_or(defaults::MAX_CONNECTIONS);
    if !(1..=1_000_000).contains(&max_connections) {
        return Err(err(
            "max_connections",
            max_connections,
            "must be between 1 and 1000000",
        ));
    }
    let max_inflight_body_bytes = raw
        .max_inflight_body_bytes
        .unwrap_or(defaults::MAX_INFLIGHT_BODY_BYTES);
    // Streamed (unsigned) bodies are never held, so only signed routes count against it.
    if let Some(r) = routes
        .iter()
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
    let max_header_bytes = raw.max_header_bytes.unwrap_or(defaults::MAX_HEADER_BYTES);
    if !(8192..=1 << 20).contains(&max_header_bytes) {
        return Err(err(
            "max_header_bytes",
            max_header_bytes,
            "must be between 8192 and 1048576",
        ));
    }
    let header_read_timeout = parse_duration(
        "header_read_timeout",
        raw.header_read_timeout
            .as_deref()
            .unwrap_or(defaults::HEADER_READ_TIMEOUT),
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

fn merge_keys(own: &RawConfig, top: &RawConfig) -> RawConfig {
    macro_rules! pick {
        ($($f:ident),*) => { RawConfig { $($f: own.$f.clone().or_else(|| top.$f.clone()),)* ..Default::default() } };
    }
    RawConfig {
        ..pick!(
            name,
            listen,
            upstream,
            region,
            service,
            role_arn,
            role_session_name,
            external_id,
            role_duration,
            refresh_before_expiry,
            max_body_bytes,
            ca_file,
            connect_timeout,
            request_timeout,
            connect,
            payload,
            signing_algorithm,
            region_set,
            unsigned_headers,
            client_authorization_to
        )
    }
}

fn fill_defaults(k: &mut RawConfig) {
    k.role_duration
        .get_or_insert_with(|| defaults::ROLE_DURATION.into());
    k.refresh_before_expiry
        .get_or_insert_with(|| defaults::REFRESH_BEFORE_EXPIRY.into());
    k.max_body_bytes.get_or_insert(defaults::MAX_BODY_BYTES);
    k.connect_timeout
        .get_or_insert_with(|| defaults::CONNECT_TIMEOUT.into());
    k.request_timeout
        .get_or_insert_with(|| defaults::REQUEST_TIMEOUT.into());
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
        return Err(err(
            key("refresh_before_expiry"),
            k.refresh_before_expiry.as_deref().unwrap_or_default(),
            "must be at least 30s: credentials are never used in their last 30 seconds",
        ));
    }
    let reach = reach::validate(
        &reach::RawReach {
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
    let max_body_bytes = k.max_body_bytes.unwrap_or(defaults::MAX_BODY_BYTES);
    // Streamed bodies are never held, so only a signed payload needs the memory cap.
    if reach.payload == Payload::Signed && max_body_bytes > 1 << 30 {
        return Err(err(
            key("max_body_bytes"),
            max_body_bytes,
            "must be at most 1 GiB: bodies are held in memory to be hashed",
        ));
    }
    let ca_file = k
        .ca_file
        .clone()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    if let Some(p) = &ca_file {
        check_ca_file(&key("ca_file"), p)?;
    }
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

fn check_ca_file(key: &str, path: &Path) -> Result<(), ConfigError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(key, path.display(), format!("cannot be read: {e}")))?
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
    Ok(())
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

/// Region and service as far as the host name tells them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Inferred {
    pub region: Option<String>,
    pub service: Option<String>,
}

/// Infers region and service from an AWS host name:
/// `<id>.execute-api.<region>.amazonaws.com` (also `.amazonaws.com.cn`),
/// `<id>.lambda-url.<region>.on.aws`, `<domain>.<region>.es.amazonaws.com`,
/// `<id>.<region>.aoss.amazonaws.com`, `<svc>-<id>.<id>.vpc-lattice-svcs.<region>.on.aws`
/// (VPC Lattice, which also implies `payload = "unsigned"`). Anything else infers nothing.
pub fn infer_from_host(host: &str) -> Inferred {
    let host = host.to_ascii_lowercase();
    let labels: Vec<&str> = host.split('.').collect();
    let aws = host.ends_with(".amazonaws.com")
        || host.ends_with(".amazonaws.com.cn")
        || host.ends_with(".on.aws");
    if !aws {
        return Inferred::default();
    }
    let region = labels.iter().find(|l| is_region(l)).map(|s| s.to_string());
    let service = if labels.contains(&"execute-api") {
        Some("execute-api")
    } else if labels.contains(&"lambda-url") {
        Some("lambda")
    } else if labels.contains(&"es") {
        Some("es")
    } else if labels.contains(&"aoss") {
        Some("aoss")
    } else if reach::lattice_region(&host).is_some() {
        Some(reach::LATTICE_SERVICE)
    } else {
        None
    };
    Inferred {
        region,
        service: service.map(str::to_string),
    }
}

fn is_region(label: &str) -> bool {
    // us-east-1, eu-central-2, us-gov-west-1, cn-north-1, ap-southeast-5 ...
    let parts: Vec<&str> = label.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && parts
            .last()
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).expect("write");
        let sources = Sources {
            file: Some(path),
            aws_region: None,
            hostname: Some("pod-1".into()),
        };
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let provider = Env::prefixed(ENV_PREFIX).ignore(&["CONFIG"]);
        // Jail restores the environment when it returns, so load inside one.
        let mut out = None;
        #[allow(clippy::result_large_err)] // figment's own closure signature
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            for (k, v) in &env {
                jail.set_env(k, v);
            }
            out = Some(Config::load_with_env(&sources, provider.clone()));
            Ok(())
        });
        out.expect("ran")
    }

    const API: &str = "https://abc123.execute-api.us-east-1.amazonaws.com/Prod";

    #[test]
    fn defaults_and_inference() {
        let c = load(&format!("upstream = {API:?}"), &[]).expect("valid");
        let r = &c.routes[0];
        assert_eq!(r.name, "default");
        assert_eq!(r.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.admin_listen.to_string(), "0.0.0.0:9090");
        assert_eq!(r.region, "us-east-1");
        assert_eq!(r.service, "execute-api");
        assert_eq!(r.upstream.base_path, "/Prod");
        assert_eq!(r.max_body_bytes, 10_485_760);
        assert_eq!(r.request_timeout, Duration::from_secs(30));
        assert_eq!(r.role.session_name, "sigv4-sidecar-pod-1");
        assert_eq!(r.role.role_arn, None);
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn env_overrides_file() {
        let c = load(
            &format!("upstream = {API:?}\nrequest_timeout = \"5s\""),
            &[
                ("SIGV4_SIDECAR_REQUEST_TIMEOUT", "7s"),
                ("SIGV4_SIDECAR_EXTERNAL_ID", "123456"),
            ],
        )
        .expect("valid");
        assert_eq!(c.routes[0].request_timeout, Duration::from_secs(7));
        assert_eq!(c.routes[0].role.external_id.as_deref(), Some("123456"));
        assert!(
            !c.effective_json().contains("123456"),
            "external id is redacted"
        );
    }

    #[test]
    fn lambda_url_and_es_inference() {
        assert_eq!(
            infer_from_host("abcdefg.lambda-url.eu-west-1.on.aws"),
            Inferred {
                region: Some("eu-west-1".into()),
                service: Some("lambda".into())
            }
        );
        assert_eq!(
            infer_from_host("search-logs-xyz.eu-west-1.es.amazonaws.com"),
            Inferred {
                region: Some("eu-west-1".into()),
                service: Some("es".into())
            }
        );
        assert_eq!(infer_from_host("example.com"), Inferred::default());
        assert_eq!(infer_from_host("127.0.0.1"), Inferred::default());
    }

    #[test]
    fn errors_name_key_and_value() {
        let cases: &[(&str, &str)] = &[
            ("", "upstream"),
            ("upstream = \"ftp://x.example/\"", "scheme must be http or https"),
            ("upstream = \"https://x.example/p?a=1\"", "must not have a query"),
            ("upstream = \"https://x.example/p#f\"", "must not have a fragment"),
            ("upstream = \"https://x.example/\"", "cannot be inferred"),
            (&format!("upstream = {API:?}\nrole_duration = \"soon\""), "role_duration"),
            (&format!("upstream = {API:?}\nlisten = \"localhost\""), "listen"),
            (&format!("upstream = {API:?}\nrole_arn = \"nope\""), "role_arn"),
            (&format!("upstream = {API:?}\nroel_arn = \"x\""), "unknown key `roel_arn`"),
            (&format!("upstream = {API:?}\nmax_body_bytes = \"big\""), "max_body_bytes"),
            ("upstream = \"http://127.0.0.1:8080/\"\nregion=\"us-east-1\"\nservice=\"execute-api\"", "own listen address"),
            (&format!("upstream = {API:?}\nca_file = \"/nonexistent/ca.pem\""), "ca_file"),
            (&format!("upstream = {API:?}\nrefresh_before_expiry = \"5s\""), "at least 30s"),
        ];
        for (toml, needle) in cases {
            let e = load(toml, &[]).expect_err(toml).to_string();
            assert!(
                e.contains(needle),
                "{toml:?}: error {e:?} should mention {needle:?}"
            );
        }
    }

    #[test]
    fn routes_inherit_and_infer() {
        let c = load(
            &format!(
                r#"upstream = {API:?}
region = "us-east-1"
service = "execute-api"
role_arn = "arn:aws:iam::111111111111:role/orders-caller"
request_timeout = "9s"

[[routes]]
name = "search"
listen = "127.0.0.1:8081"
upstream = "https://search-logs-xyz.eu-west-1.es.amazonaws.com"
role_arn = "arn:aws:iam::222222222222:role/search-reader"

[[routes]]
name = "other"
listen = "127.0.0.1:8082"
upstream = "http://127.0.0.1:9999/x"
"#
            ),
            &[],
        )
        .expect("valid");
        assert_eq!(c.routes.len(), 3);
        let search = &c.routes[1];
        assert_eq!(
            (search.region.as_str(), search.service.as_str()),
            ("eu-west-1", "es")
        );
        assert_eq!(search.request_timeout, Duration::from_secs(9), "inherited");
        assert_eq!(
            search.role.role_arn.as_deref(),
            Some("arn:aws:iam::222222222222:role/search-reader")
        );
        let other = &c.routes[2];
        assert_eq!(
            (other.region.as_str(), other.service.as_str()),
            ("us-east-1", "execute-api"),
            "explicit top-level keys inherited when the host says nothing"
        );
        assert_eq!(other.role, c.routes[0].role, "same role, shared refresher");
    }

    #[test]
    fn duplicate_routes_are_errors() {
        let dup_name = format!(
            "upstream = {API:?}\n[[routes]]\nname=\"a\"\nlisten=\"127.0.0.1:8081\"\n[[routes]]\nname=\"a\"\nlisten=\"127.0.0.1:8082\"\n"
        );
        assert!(load(&dup_name, &[])
            .expect_err("dup")
            .to_string()
            .contains("routes[a].name"));
        let dup_port =
            format!("upstream = {API:?}\n[[routes]]\nname=\"a\"\nlisten=\"127.0.0.1:8080\"\n");
        assert!(load(&dup_port, &[])
            .expect_err("dup")
            .to_string()
            .contains("routes[a].listen"));
        let no_region = format!("upstream = {API:?}\n[[routes]]\nname=\"b\"\nlisten=\"127.0.0.1:8083\"\nupstream=\"https://example.com\"\nservice=\"x\"\n");
        // region inherits from the top level's explicit settings only; the top level inferred it,
        // so this route has none of its own.
        let e = load(&no_region, &[]).expect_err("no region").to_string();
        assert!(e.contains("routes[b].region"), "{e}");
    }

    #[test]
    fn routes_from_environment() {
        let c = load(
            &format!("upstream = {API:?}"),
            &[(
                "SIGV4_SIDECAR_ROUTES",
                r#"[{name="fn", listen="127.0.0.1:8085", upstream="https://abc.lambda-url.us-west-2.on.aws"}]"#,
            )],
        )
        .expect("valid");
        assert_eq!(c.routes[1].service, "lambda");
        assert_eq!(c.routes[1].region, "us-west-2");
    }

    #[test]
    fn reach_keys_inherit_and_lattice_infers() {
        let c = load(
            &format!(
                r#"upstream = {API:?}
connect = "vpce-0abc123-de4f5g6h.execute-api.us-east-1.vpce.amazonaws.com"
unsigned_headers = ["x-edge-hop"]
client_authorization_to = "x-original-authorization"

[[routes]]
name = "lattice"
listen = "127.0.0.1:8081"
upstream = "https://orders-0a1b2c3d4e5f60789.7d67968.vpc-lattice-svcs.us-west-2.on.aws"
connect = ""
max_body_bytes = 4294967296

[[routes]]
name = "mrap"
listen = "127.0.0.1:8082"
upstream = "https://mrap.example"
region = "us-east-1"
service = "s3"
signing_algorithm = "sigv4a"
region_set = "*"
"#
            ),
            &[("SIGV4_SIDECAR_UNSIGNED_HEADERS", "x-a, X-B")],
        )
        .expect("valid");
        let d = &c.routes[0];
        assert_eq!(
            d.reach.connect.as_ref().map(|c| (c.host.as_str(), c.port)),
            Some((
                "vpce-0abc123-de4f5g6h.execute-api.us-east-1.vpce.amazonaws.com",
                443
            ))
        );
        assert_eq!(d.reach.unsigned_headers, ["x-a", "x-b"], "env wins");
        let l = &c.routes[1];
        assert_eq!(
            (l.service.as_str(), l.region.as_str(), l.reach.payload),
            ("vpc-lattice-svcs", "us-west-2", Payload::Unsigned)
        );
        assert_eq!(
            l.reach.connect, None,
            "an empty connect clears the inherited one"
        );
        assert_eq!(
            l.reach.client_authorization_to.as_ref().map(|h| h.as_str()),
            Some("x-original-authorization"),
            "inherited"
        );
        assert_eq!(
            c.routes[2].reach.algorithm,
            Algorithm::SigV4a {
                region_set: "*".into()
            }
        );
        let shown = c.effective_json();
        for k in ["connect", "unsigned_headers", "client_authorization_to"] {
            assert!(shown.contains(k), "--check shows {k}: {shown}");
        }
    }

    #[test]
    fn signed_payload_keeps_its_memory_caps() {
        let e = load(
            &format!("upstream = {API:?}\nmax_body_bytes = 4294967296"),
            &[],
        )
        .expect_err("over 1 GiB held")
        .to_string();
        assert!(e.contains("max_body_bytes"), "{e}");
        let e = load(
            "upstream = \"https://vpce-1.execute-api.us-east-1.vpce.amazonaws.com/Prod\"",
            &[],
        )
        .expect_err("vpce upstream")
        .to_string();
        assert!(e.contains("connect"), "{e}");
    }
}
