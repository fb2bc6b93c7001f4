//! Hostile input against the real binary: malformed request lines and header bytes, oversized
//! heads, absolute- and authority-form targets, `Host` spoofing, `CONNECT`, request-smuggling
//! shapes, the admin port, the listen address, and secrets in answers and logs.
//!
//! Every refusal is read off the wire (status line parsed from the raw answer) and checked
//! against what the API Gateway stand-in recorded: nothing refused may reach the upstream, and
//! nothing may ever be sent anywhere but the upstream (a second loopback listener, the "evil"
//! host, must never see a connection).
//!
//! Where hyper refuses a request before our code sees it, the answer is hyper's bare 400/431
//! (no JSON); where the sidecar refuses, the answer is SPEC's JSON with `x-sigv4-sidecar-error`.
//!
//! One test binary, a module per kind of input: `heads` (malformed heads, request targets,
//! `Host`), `smuggling`, `exposure` (admin port, listen address, secrets).

#[path = "../common/mod.rs"]
mod common;

mod exposure;
mod heads;
mod smuggling;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use common::wire::Answer;
use common::*;

const LIFETIME: Duration = Duration::from_secs(3600);
const ANSWER: Duration = Duration::from_secs(5);

/// A loopback listener standing for any host other than the upstream. Nothing may connect.
struct Elsewhere(TcpListener);

impl Elsewhere {
    fn new() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        Elsewhere(l)
    }
    fn addr(&self) -> SocketAddr {
        self.0.local_addr().expect("addr")
    }
    /// Asserts no connection ever arrived. Checked after the answers: the sidecar forwards
    /// before it answers, so a connection it made would be in the backlog by now.
    fn assert_untouched(&self, what: &str) {
        match self.0.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("{what}: something connected to the other host from {peer}"),
            Err(e) => panic!("{what}: accept: {e}"),
        }
    }
}

/// hyper's own refusal of an unparseable head: the status, no body, connection closed.
fn assert_hyper_refusal(answer: Option<Answer>, closed: bool, status: u16, what: &str) {
    let a = answer.unwrap_or_else(|| panic!("{what}: no answer"));
    assert_eq!(a.status, status, "{what}: {a:?}");
    assert!(closed, "{what}: connection left open after a parse error");
}

/// Logs and answers never carry the base secret or any credential STS issued.
fn assert_no_secrets(text: &str, sts: &sigv4_testbed::sts::StsEmulator, what: &str) {
    let mut secrets = vec![BASE_SECRET.to_string()];
    for i in sts.issued() {
        secrets.push(i.credentials.secret_access_key.clone());
        secrets.extend(i.credentials.session_token.clone());
    }
    for s in &secrets {
        assert!(
            !text.contains(s.as_str()),
            "{what} contains a secret ({}...)",
            &s[..8]
        );
    }
}
