//! The route keys that reach endpoints beyond a public API: `connect`, `payload`,
//! `signing_algorithm`, `region_set`, `unsigned_headers` and `client_authorization_to`
//! (SPEC "Reaching private endpoints and other services").
//!
//! Kept apart from the rest of the validation because these keys change *how* a request is
//! carried and signed, not *where* it goes: each one is checked here against the route's
//! upstream and region, so the data path can trust them without re-checking.

use http::HeaderName;
use serde::{Deserialize, Deserializer};

use super::{err, ConfigError, Upstream};

/// Whether the body's SHA-256 is part of the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// The body is read whole (up to `max_body_bytes`) and its hash signed.
    Signed,
    /// `x-amz-content-sha256: UNSIGNED-PAYLOAD` is signed and the body streams through.
    Unsigned,
}

impl Payload {
    fn parse(key: &str, value: &str) -> Result<Self, ConfigError> {
        match value {
            "signed" => Ok(Payload::Signed),
            "unsigned" => Ok(Payload::Unsigned),
            _ => Err(err(key, value, "must be \"signed\" or \"unsigned\"")),
        }
    }
}

/// The signature algorithm of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Algorithm {
    /// `AWS4-HMAC-SHA256`, scoped to one region.
    SigV4,
    /// `AWS4-ECDSA-P256-SHA256` over `X-Amz-Region-Set` (`*` or a comma-separated list).
    SigV4a { region_set: String },
}

/// Where the TCP/TLS connection goes when it is not the upstream's own host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Host name or IP (without brackets): the name TLS verifies and sends as SNI.
    pub host: String,
    pub port: u16,
}

/// The validated reach settings of one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    pub connect: Option<Connect>,
    pub payload: Payload,
    pub algorithm: Algorithm,
    /// Lower-case names left out of the signature on top of the built-in ones.
    pub unsigned_headers: Vec<HeaderName>,
    /// Where the app's own `Authorization` goes (forwarded and signed); `None`: dropped.
    pub client_authorization_to: Option<HeaderName>,
}

/// The inferred and inherited settings as `--check` shows them: what differs from a plain
/// public route, e.g. `, connect vpce-1.example:443, payload unsigned`.
impl std::fmt::Display for Reach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(c) = &self.connect {
            write!(f, ", connect {}:{}", c.host, c.port)?;
        }
        write!(
            f,
            ", payload {}",
            match self.payload {
                Payload::Signed => "signed",
                Payload::Unsigned => "unsigned",
            }
        )?;
        match &self.algorithm {
            Algorithm::SigV4 => write!(f, ", sigv4")?,
            Algorithm::SigV4a { region_set } => write!(f, ", sigv4a over {region_set}")?,
        }
        if !self.unsigned_headers.is_empty() {
            let names: Vec<&str> = self.unsigned_headers.iter().map(|h| h.as_str()).collect();
            write!(f, ", also unsigned: {}", names.join(" "))?;
        }
        if let Some(h) = &self.client_authorization_to {
            write!(f, ", app Authorization -> {h}")?;
        }
        Ok(())
    }
}

/// The raw keys as read from the file or environment (route-level, inherited like the others).
#[derive(Debug, Clone, Default)]
pub struct RawReach<'a> {
    pub connect: Option<&'a str>,
    pub payload: Option<&'a str>,
    pub signing_algorithm: Option<&'a str>,
    pub region_set: Option<&'a str>,
    pub unsigned_headers: Option<&'a [String]>,
    pub client_authorization_to: Option<&'a str>,
}

/// What a VPC Lattice service host tells: `<svc>-<id>.<id>.vpc-lattice-svcs.<region>.on.aws`.
/// Lattice signs with service `vpc-lattice-svcs` and refuses a signed payload.
pub fn lattice_region(host: &str) -> Option<&str> {
    let rest = host.strip_suffix(".on.aws")?;
    let (front, region) = rest.rsplit_once('.')?;
    let svc = front.rsplit('.').next()?;
    (svc == "vpc-lattice-svcs" && front.split('.').count() >= 3).then_some(region)
}

/// Lattice's signing name.
pub const LATTICE_SERVICE: &str = "vpc-lattice-svcs";

/// Names the signature never covers, whatever the route says: the signature itself, framing,
/// and what hops on the way (CloudFront, VPC endpoints, tracing proxies) append to or rewrite.
pub fn always_unsigned(name: &str) -> bool {
    matches!(
        name,
        "authorization"
            | "transfer-encoding"
            | "forwarded"
            | "via"
            | "user-agent"
            | "x-amzn-trace-id"
    ) || name.starts_with("x-forwarded-")
}

/// Headers the sidecar sets or removes itself: a route cannot move the app's `Authorization`
/// onto one of them.
fn reserved(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "authorization"
            | "content-length"
            | "expect"
            | "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "upgrade"
            | "x-amz-date"
            | "x-amz-security-token"
            | "x-amz-content-sha256"
            | "x-amz-region-set"
    ) || name.starts_with("proxy-")
}

fn header_name(key: &str, value: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(value.trim().as_bytes())
        .map_err(|_| err(key, value, "is not a valid HTTP header name"))
}

/// Validates the reach keys of a route whose upstream and signing region are already known.
/// `key` names a key as the user wrote it (`connect`, `routes[x].connect`).
pub fn validate(
    raw: &RawReach<'_>,
    key: impl Fn(&str) -> String,
    upstream: &Upstream,
    region: &str,
) -> Result<Reach, ConfigError> {
    let host = upstream.host.to_ascii_lowercase();
    if host.ends_with(".vpce.amazonaws.com") {
        return Err(err(
            key("upstream"),
            &upstream.url,
            "names a VPC endpoint: set `upstream` to the API's own URL (the name it is signed \
             for, e.g. https://abc123.execute-api.us-east-1.amazonaws.com/Prod) and \
             `connect` to the endpoint's DNS name",
        ));
    }
    let connect = match raw.connect.filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(parse_connect(&key("connect"), c, upstream.port())?),
    };
    let payload = match raw.payload.filter(|p| !p.is_empty()) {
        Some(p) => Payload::parse(&key("payload"), p)?,
        None if lattice_region(&host).is_some() => Payload::Unsigned,
        None => Payload::Signed,
    };
    let algorithm = match raw.signing_algorithm.filter(|a| !a.is_empty()) {
        // A region set inherited from a SigV4A top level means nothing to a SigV4 route.
        None | Some("sigv4") => Algorithm::SigV4,
        Some("sigv4a") => Algorithm::SigV4a {
            region_set: parse_region_set(&key("region_set"), raw.region_set, region)?,
        },
        Some(other) => {
            return Err(err(
                key("signing_algorithm"),
                other,
                "must be \"sigv4\" or \"sigv4a\"",
            ))
        }
    };
    let mut unsigned_headers = Vec::new();
    for name in raw.unsigned_headers.unwrap_or_default() {
        let h = header_name(&key("unsigned_headers"), name)?;
        if h == http::header::HOST {
            return Err(err(
                key("unsigned_headers"),
                name,
                "Host is always signed: the signature names the upstream",
            ));
        }
        if !always_unsigned(h.as_str()) && !unsigned_headers.contains(&h) {
            unsigned_headers.push(h);
        }
    }
    let client_authorization_to = match raw.client_authorization_to.filter(|s| !s.is_empty()) {
        None => None,
        Some(v) => {
            let k = key("client_authorization_to");
            let h = header_name(&k, v)?;
            if reserved(h.as_str()) {
                return Err(err(
                    k,
                    v,
                    "is a header the sidecar sets or drops itself; pick another name, e.g. \
                     x-original-authorization",
                ));
            }
            if always_unsigned(h.as_str()) || unsigned_headers.contains(&h) {
                return Err(err(
                    k,
                    v,
                    "is left out of the signature (built-in or unsigned_headers), but the \
                     forwarded Authorization must be signed; pick another name",
                ));
            }
            Some(h)
        }
    };
    Ok(Reach {
        connect,
        payload,
        algorithm,
        unsigned_headers,
        client_authorization_to,
    })
}

/// `host[:port]`, `[v6]:port`, or an IP. The port defaults to the upstream's.
fn parse_connect(key: &str, value: &str, default_port: u16) -> Result<Connect, ConfigError> {
    if value.contains("://") || value.contains('/') {
        return Err(err(
            key,
            value,
            "must be host[:port] (no scheme or path): where the TCP/TLS connection goes",
        ));
    }
    if let Ok(ip) = value.parse::<std::net::IpAddr>() {
        return Ok(Connect {
            host: ip.to_string(),
            port: default_port,
        });
    }
    let auth: http::uri::Authority = value
        .parse()
        .map_err(|e| err(key, value, format!("is not host[:port]: {e}")))?;
    if auth.as_str().contains('@') || auth.host().is_empty() {
        return Err(err(key, value, "must be host[:port]"));
    }
    let host = auth.host().trim_matches(['[', ']']).to_string();
    if rustls_pki_types::ServerName::try_from(host.as_str()).is_err() {
        return Err(err(
            key,
            value,
            "is not a DNS name or IP that TLS can verify",
        ));
    }
    Ok(Connect {
        host,
        port: auth.port_u16().unwrap_or(default_port),
    })
}

fn parse_region_set(key: &str, value: Option<&str>, region: &str) -> Result<String, ConfigError> {
    let Some(set) = value.filter(|s| !s.is_empty()) else {
        return Ok(region.to_string());
    };
    let set = set.trim();
    if set == "*" {
        return Ok(set.to_string());
    }
    let ok = set.split(',').all(|r| {
        let r = r.trim();
        !r.is_empty()
            && r.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '*')
    });
    if !ok {
        return Err(err(
            key,
            set,
            "must be \"*\" or regions separated by commas, like \"us-east-1,us-west-2\"",
        ));
    }
    Ok(set.split(',').map(str::trim).collect::<Vec<_>>().join(","))
}

/// `unsigned_headers` from a file is a list; from the environment it may also be one string of
/// comma-separated names (`SIGV4_SIDECAR_UNSIGNED_HEADERS=x-a,x-b`).
pub fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        One(String),
        Many(Vec<String>),
    }
    Ok(Option::<List>::deserialize(d)?.map(|l| match l {
        List::One(s) => s
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect(),
        List::Many(v) => v,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(url: &str) -> Upstream {
        Upstream::parse("upstream", url).expect("url")
    }

    /// `raw` validated as the top-level route of `url`, signing in `region`.
    fn top(raw: RawReach<'_>, url: &str, region: &str) -> Result<Reach, ConfigError> {
        validate(&raw, str::to_string, &upstream(url), region)
    }

    #[test]
    fn lattice_hosts() {
        assert_eq!(
            lattice_region("orders-0a1b2c3d4e5f60789.7d67968.vpc-lattice-svcs.us-west-2.on.aws"),
            Some("us-west-2")
        );
        assert_eq!(lattice_region("abc.lambda-url.us-west-2.on.aws"), None);
        assert_eq!(lattice_region("vpc-lattice-svcs.us-west-2.on.aws"), None);
    }

    #[test]
    fn defaults_and_lattice_payload() {
        let api = "https://a.execute-api.us-east-1.amazonaws.com/Prod";
        let r = top(RawReach::default(), api, "us-east-1").expect("valid");
        assert_eq!(r.payload, Payload::Signed);
        assert_eq!(r.algorithm, Algorithm::SigV4);
        assert_eq!(r.connect, None);
        let lattice = "https://svc-0123.0123.vpc-lattice-svcs.eu-west-1.on.aws";
        let l = top(RawReach::default(), lattice, "eu-west-1").expect("valid");
        assert_eq!(l.payload, Payload::Unsigned);
    }

    #[test]
    fn connect_forms() {
        let c = |v: &str| {
            let raw = RawReach {
                connect: Some(v),
                ..Default::default()
            };
            top(
                raw,
                "https://a.execute-api.us-east-1.amazonaws.com",
                "us-east-1",
            )
        };
        let ok = c("vpce-0abc-de4f.execute-api.us-east-1.vpce.amazonaws.com").expect("dns");
        assert_eq!(ok.connect.expect("set").port, 443);
        assert_eq!(
            c("127.0.0.1:8443").expect("ip").connect,
            Some(Connect {
                host: "127.0.0.1".into(),
                port: 8443
            })
        );
        assert_eq!(c("[::1]:9").expect("v6").connect.expect("set").host, "::1");
        assert!(c("https://x/").is_err());
        assert!(c("a b").is_err());
    }

    #[test]
    fn errors_name_key_value_problem() {
        let u = upstream("https://a.execute-api.us-east-1.amazonaws.com");
        let key = |k: &str| format!("routes[x].{k}");
        // Each case sets keys on an empty route and names what the error must mention.
        type Set = fn(&mut RawReach<'static>);
        let cases: [(Set, &str); 5] = [
            (|r| r.payload = Some("maybe"), "routes[x].payload"),
            (
                |r| r.signing_algorithm = Some("sigv5"),
                "routes[x].signing_algorithm",
            ),
            (
                |r| {
                    r.signing_algorithm = Some("sigv4a");
                    r.region_set = Some("us east");
                },
                "routes[x].region_set",
            ),
            (
                |r| r.client_authorization_to = Some("x-forwarded-auth"),
                "must be signed",
            ),
            (
                |r| r.client_authorization_to = Some("x-amz-date"),
                "sets or drops",
            ),
        ];
        for (set, needle) in cases {
            let mut raw = RawReach::default();
            set(&mut raw);
            let e = validate(&raw, key, &u, "us-east-1")
                .expect_err(needle)
                .to_string();
            assert!(e.contains(needle), "{e:?} should mention {needle:?}");
        }
        let vpce = "https://vpce-0abc-de4f.execute-api.us-east-1.vpce.amazonaws.com/Prod";
        let e = top(RawReach::default(), vpce, "us-east-1")
            .expect_err("vpce")
            .to_string();
        assert!(e.contains("`connect`") && e.contains("upstream"), "{e}");
    }

    #[test]
    fn region_set_defaults_to_region() {
        let raw = RawReach {
            signing_algorithm: Some("sigv4a"),
            ..Default::default()
        };
        let r = top(raw, "https://a.example", "eu-central-1").expect("valid");
        assert_eq!(
            r.algorithm,
            Algorithm::SigV4a {
                region_set: "eu-central-1".into()
            }
        );
    }
}
