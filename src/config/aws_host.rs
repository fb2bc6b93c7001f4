//! Region and service inferred from an AWS host name, so the common upstreams need neither.

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
/// (VPC Lattice, which also implies `payload = "unsigned"`, see `reach`). Anything else
/// infers nothing.
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
    } else if super::reach::lattice_region(&host).is_some() {
        Some(super::reach::LATTICE_SERVICE)
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
}
