//! Configuration: built-in defaults < TOML file < `SIGV4_SIDECAR_*` environment, merged by
//! figment into one typed, validated [`Config`].
//!
//! Everything that can be wrong with the configuration is found here, before any socket is
//! bound, and reported as a [`ConfigError`] that names the key, the value and the problem. The
//! rest of the program only ever sees a valid `Config`.
//!
//! Rooms: this file holds the types and [`Config::load`]; [`raw`] the file/environment layer,
//! the built-in defaults and how layers merge; [`validate`] every check from raw to typed;
//! [`aws_host`] region and service inferred from an AWS host name.

mod aws_host;
mod raw;
pub mod reach;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use http::uri::{Authority, Scheme};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

pub use aws_host::{infer_from_host, Inferred};
pub use raw::{defaults, RawConfig};
pub use reach::{Algorithm, Connect, Payload, Reach};
pub use validate::default_session_name;

use raw::figment_error;
use validate::validate;

/// Prefix of every environment variable the sidecar reads.
pub const ENV_PREFIX: &str = "SIGV4_SIDECAR_";

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
    /// Header lines hyper accepts in one head. hyper's default of 100 answered a bare 431 to
    /// heads well within `max_header_bytes`; as many as could fit (`max_header_bytes / 4`, the
    /// shortest line being `a:` + CRLF) cost every request dearly, because hyper allocates room
    /// for that many lines per parse: 16 384 lines (the 64 KiB default) made glibc map and unmap
    /// ~0.8 MB per request and cut throughput 13x (bench/run.sh, get-small-c64), and the cliff
    /// is near 2 600 lines. 1 024 lines cost ~30 ns a parse; beyond them hyper answers 431.
    pub const MAX_HEADER_LINES: usize = 1024;

    /// [`Self::MAX_HEADER_LINES`], or fewer when fewer can fit in `max_header_bytes`.
    pub const fn max_header_lines(max_header_bytes: usize) -> usize {
        let fit = max_header_bytes / 4;
        if fit < Self::MAX_HEADER_LINES {
            fit
        } else {
            Self::MAX_HEADER_LINES
        }
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
    /// `Host` of every upstream request: the authority as configured.
    pub host_header: http::HeaderValue,
}

impl Upstream {
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

/// A `ca_file`, read and parsed once when the configuration loads: the upstream client's root
/// store takes the parsed certificates, the STS client's trust store the PEM text.
#[derive(Clone)]
pub struct CaFile {
    pub path: PathBuf,
    pub pem: Vec<u8>,
    pub certs: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for CaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaFile")
            .field("path", &self.path)
            .field("certs", &self.certs.len())
            .finish()
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
    pub ca_file: Option<CaFile>,
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
        // What the user set (file + env), kept apart from the built-in defaults: `[[routes]]`
        // inherit only explicit top-level settings, never the built-in `listen`.
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
        let explicit: RawConfig = explicit.merge(env).extract().map_err(figment_error)?;
        let top = explicit.clone().over(&RawConfig::builtin());
        validate(top, &explicit, sources)
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

    /// A config file whose first line sets `upstream` to [`API`], then `rest`.
    fn api(rest: &str) -> String {
        format!("upstream = {API:?}\n{rest}")
    }

    #[test]
    fn defaults_and_inference() {
        let c = load(&api(""), &[]).expect("valid");
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
            &api("request_timeout = \"5s\""),
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
    fn errors_name_key_and_value() {
        let cases: &[(&str, &str)] = &[
            ("", "upstream"),
            ("upstream = \"ftp://x.example/\"", "scheme must be http or https"),
            ("upstream = \"https://x.example/p?a=1\"", "must not have a query"),
            ("upstream = \"https://x.example/p#f\"", "must not have a fragment"),
            ("upstream = \"https://x.example/\"", "cannot be inferred"),
            (&api("role_duration = \"soon\""), "role_duration"),
            (&api("listen = \"localhost\""), "listen"),
            (&api("role_arn = \"nope\""), "role_arn"),
            (&api("roel_arn = \"x\""), "unknown key `roel_arn`"),
            (&api("max_body_bytes = \"big\""), "max_body_bytes"),
            ("upstream = \"http://127.0.0.1:8080/\"\nregion=\"us-east-1\"\nservice=\"execute-api\"", "own listen address"),
            (&api("ca_file = \"/nonexistent/ca.pem\""), "ca_file"),
            (&api("refresh_before_expiry = \"5s\""), "at least 30s"),
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
            &api(r#"region = "us-east-1"
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
"#),
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
        let dup_name = api("[[routes]]\nname=\"a\"\nlisten=\"127.0.0.1:8081\"\n[[routes]]\nname=\"a\"\nlisten=\"127.0.0.1:8082\"\n");
        assert!(load(&dup_name, &[])
            .expect_err("dup")
            .to_string()
            .contains("routes[a].name"));
        let dup_port = api("[[routes]]\nname=\"a\"\nlisten=\"127.0.0.1:8080\"\n");
        assert!(load(&dup_port, &[])
            .expect_err("dup")
            .to_string()
            .contains("routes[a].listen"));
        let no_region = api("[[routes]]\nname=\"b\"\nlisten=\"127.0.0.1:8083\"\nupstream=\"https://example.com\"\nservice=\"x\"\n");
        // region inherits from the top level's explicit settings only; the top level inferred it,
        // so this route has none of its own.
        let e = load(&no_region, &[]).expect_err("no region").to_string();
        assert!(e.contains("routes[b].region"), "{e}");
    }

    #[test]
    fn routes_from_environment() {
        let c = load(
            &api(""),
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
            &api(
                r#"connect = "vpce-0abc123-de4f5g6h.execute-api.us-east-1.vpce.amazonaws.com"
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
"#,
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
        let e = load(&api("max_body_bytes = 4294967296"), &[])
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
