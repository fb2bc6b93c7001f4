//! The canonical request and string-to-sign behind an aws-sigv4 signature (the SigV4A routes;
//! SigV4 has the sidecar's own signer, whose `Scope::diagnostics` gives them directly), for the
//! rejected-signature warning and the debug log.
//!
//! aws-sigv4 keeps its canonical request private, but traces it (redacted: sensitive values
//! replaced by their length) on every signature. Rather than canonicalize a second time, the
//! diagnostics sign the request again with the same inputs under a scoped tracing dispatcher
//! that only listens to aws-sigv4, and read the text from that event. The string-to-sign is
//! `algorithm \n date \n scope \n hex(SHA-256(canonical request))`; its hash is of the
//! *unredacted* canonical request, which is the traced one with the redacted values put back
//! from the signed head (aws-sigv4's header value rules: trimmed, inner runs of spaces
//! collapsed, repeated headers joined by `,`).
//!
//! Nothing here runs on the hot path: the dispatcher is created the first time diagnostics are
//! needed, and only diagnostics sign under it.

use std::cell::RefCell;
use std::fmt;
use std::sync::LazyLock;

use http::HeaderMap;
use sha2::Digest;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{span, Dispatch, Event, Metadata, Subscriber};

thread_local! {
    static SEEN: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A subscriber that keeps the last `canonical_request` aws-sigv4 traced on this thread.
struct Capture;

fn is_sigv4(m: &Metadata<'_>) -> bool {
    m.is_event() && m.target().starts_with("aws_sigv4")
}

impl Subscriber for Capture {
    fn register_callsite(&self, m: &'static Metadata<'static>) -> Interest {
        if is_sigv4(m) {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        is_sigv4(m)
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        struct Find(Option<String>);
        impl Visit for Find {
            fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
                if field.name() == "canonical_request" {
                    self.0 = Some(format!("{value:?}"));
                }
            }
        }
        let mut find = Find(None);
        event.record(&mut find);
        if let Some(text) = find.0 {
            SEEN.with(|s| *s.borrow_mut() = Some(text));
        }
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

static CAPTURE: LazyLock<Dispatch> = LazyLock::new(|| Dispatch::new(Capture));

/// Runs `sign` (an aws-sigv4 signature) and returns the redacted canonical request it traced.
pub fn canonical_request_of(sign: impl FnOnce()) -> Option<String> {
    SEEN.with(|s| s.borrow_mut().take());
    tracing::dispatcher::with_default(&CAPTURE, sign);
    SEEN.with(|s| s.borrow_mut().take())
}

/// aws-sigv4's placeholder for a sensitive value.
fn is_redacted(value: &str) -> bool {
    value.starts_with("** redacted (length=") && value.ends_with(") **")
}

/// A header's canonical value as aws-sigv4 writes it.
fn canonical_value(headers: &HeaderMap, name: &str) -> String {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(",")
}

/// The string-to-sign for `canonical` (redacted as traced): the redacted values restored from
/// `signed_head` (the request head as signed, signature headers included), then hashed.
pub fn string_to_sign(
    algorithm: &str,
    amz_date: &str,
    scope: &str,
    canonical: &str,
    signed_head: &HeaderMap,
) -> String {
    let plain: Vec<String> = canonical
        .split('\n')
        .map(|line| match line.split_once(':') {
            Some((name, value)) if is_redacted(value) => {
                format!("{name}:{}", canonical_value(signed_head, name))
            }
            _ => line.to_string(),
        })
        .collect();
    let hash = hex::encode(sha2::Sha256::digest(plain.join("\n").as_bytes()));
    format!("{algorithm}\n{amz_date}\n{scope}\n{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restores_redacted_values_before_hashing() {
        let mut head = HeaderMap::new();
        head.insert("x-amz-security-token", "tok  en".parse().expect("value"));
        let redacted = "GET\n/\n\nhost:a\nx-amz-security-token:** redacted (length=7) **\n\nhost;x-amz-security-token\nUNSIGNED-PAYLOAD";
        let plain = "GET\n/\n\nhost:a\nx-amz-security-token:tok en\n\nhost;x-amz-security-token\nUNSIGNED-PAYLOAD";
        let sts = string_to_sign("A", "D", "S", redacted, &head);
        let want = hex::encode(sha2::Sha256::digest(plain.as_bytes()));
        assert_eq!(sts, format!("A\nD\nS\n{want}"));
    }
}
