//! The raw layer: the file/environment layout as figment reads it, every key optional, the
//! built-in defaults (the one place they are written down) and how layers merge.

use serde::{Deserialize, Deserializer, Serialize};

use super::{err, ConfigError, LogFormat};

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
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
        deserialize_with = "super::reach::string_list",
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
    #[serde(
        default,
        deserialize_with = "lossy_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub log_level: Option<String>,
    #[serde(
        default,
        deserialize_with = "lossy_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub header_read_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_inflight_body_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<u64>,
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

impl RawConfig {
    /// The built-in defaults as a layer: the only place they are applied.
    pub fn builtin() -> RawConfig {
        RawConfig {
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
        }
    }

    /// `self` layered over `under`: every key `self` leaves unset is taken from `under`
    /// (`routes` stay `self`'s).
    pub fn over(mut self, under: &RawConfig) -> RawConfig {
        macro_rules! fill {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = under.$f.clone(); } )* };
        }
        fill!(
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
            client_authorization_to,
            admin_listen,
            shutdown_grace,
            log_format,
            log_level,
            max_connections,
            max_inflight_body_bytes,
            max_header_bytes,
            header_read_timeout
        );
        self
    }

    /// Only the keys a `[[routes]]` entry may set and inherit: the process-wide ones cleared.
    pub fn route_keys(&self) -> RawConfig {
        RawConfig {
            admin_listen: None,
            shutdown_grace: None,
            log_format: None,
            log_level: None,
            max_connections: None,
            max_inflight_body_bytes: None,
            max_header_bytes: None,
            header_read_timeout: None,
            routes: Vec::new(),
            ..self.clone()
        }
    }
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

/// Turns a figment error (type mismatch, unknown field, bad TOML) into a `ConfigError`.
pub(super) fn figment_error(e: figment::Error) -> ConfigError {
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
