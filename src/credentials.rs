//! Credentials held in memory and refreshed in the background.
//!
//! The hot path calls [`CredentialCell::current`], which is one lock-free `ArcSwap` load and one
//! comparison: no request ever waits for STS. A [`Refresher`] task per distinct role fetches new
//! credentials (base credentials from the AWS default chain, then `sts:AssumeRole` when a role is
//! configured) well before the held ones expire, and retries failures with capped exponential
//! backoff and jitter while the old credentials stay in use. Credentials in their last 30 seconds
//! are never handed out: the sidecar fails closed (503) rather than sign with them.
//!
//! aws-config's own assume-role provider is deliberately not used per request: it does not
//! cache, so it would call STS on every request.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_smithy_runtime_api::client::identity::Identity;

use crate::config::RoleKey;
use crate::error::error_chain;
use crate::metrics::Metrics;

/// Credentials are never handed out in their last 30 seconds: a request signed with them could
/// still be in flight, or queued at the upstream, when they expire. The one definition of the
/// rule; configuration (`refresh_before_expiry` must exceed it) and messages read it from here.
pub const MIN_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(30);

/// Credentials ready to sign with. `Debug` shows no secret (aws-credential-types redacts them).
pub struct Credentials {
    /// The identity aws-sigv4 signs with, built once per credential set rather than per request.
    pub identity: Identity,
    /// When they expire, if they do.
    pub expiry: Option<SystemTime>,
    /// After this instant they are not used any more (expiry minus [`MIN_CREDENTIAL_LIFETIME`]).
    usable_until: Option<SystemTime>,
}

impl Credentials {
    pub fn new(creds: aws_credential_types::Credentials) -> Self {
        let expiry = creds.expiry();
        Credentials {
            identity: Identity::new(creds, expiry),
            expiry,
            usable_until: expiry.map(|e| e - MIN_CREDENTIAL_LIFETIME),
        }
    }

    /// The example session credentials unit tests sign with, without an expiry.
    #[cfg(test)]
    pub(crate) fn example() -> Self {
        Self::example_until(None)
    }

    /// The example session credentials (`AKIDEXAMPLE`; secret key and token both start with
    /// `very-secret`, so a test can look for them in output), expiring at `expiry`.
    #[cfg(test)]
    pub(crate) fn example_until(expiry: Option<SystemTime>) -> Self {
        Credentials::new(aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "very-secret-key",
            Some("very-secret-token".into()),
            expiry,
            "test",
        ))
    }

    /// Whether they may still be used at `now`.
    pub fn usable_at(&self, now: SystemTime) -> bool {
        self.usable_until.is_none_or(|u| now < u)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}

/// Why there are no usable credentials, for the 503 answer and `/readyz`.
#[derive(Debug, Clone)]
pub struct Unavailable {
    pub reason: String,
    /// When the refresher tries next, for `Retry-After`.
    pub retry_after: Duration,
}

/// What the refresher last saw, read only when credentials are unavailable.
#[derive(Debug, Clone)]
struct Status {
    last_error: Option<String>,
    next_attempt: SystemTime,
}

/// The current credentials of one role, shared by the routes that sign as it.
#[derive(Clone)]
pub struct CredentialCell {
    label: Arc<str>,
    current: Arc<ArcSwapOption<Credentials>>,
    status: Arc<ArcSwap<Status>>,
}

impl CredentialCell {
    pub fn new(label: &str) -> Self {
        CredentialCell {
            label: label.into(),
            current: Arc::new(ArcSwapOption::empty()),
            status: Arc::new(ArcSwap::from_pointee(Status {
                last_error: None,
                next_attempt: SystemTime::now(),
            })),
        }
    }

    /// The role ARN (or `base`) these credentials belong to.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The credentials to sign with at `now`, or why there are none.
    pub fn current(&self, now: SystemTime) -> Result<Arc<Credentials>, Unavailable> {
        match self.current.load_full() {
            Some(c) if c.usable_at(now) => Ok(c),
            held => Err(self.unavailable(now, held.is_some())),
        }
    }

    /// Whether usable credentials are held now.
    pub fn is_valid(&self) -> bool {
        self.current(SystemTime::now()).is_ok()
    }

    fn unavailable(&self, now: SystemTime, expired: bool) -> Unavailable {
        let status = self.status.load();
        let what = if expired {
            format!("credentials for {} expired (or expire within {}s) and refreshing them has not succeeded", self.label, MIN_CREDENTIAL_LIFETIME.as_secs())
        } else {
            format!("no credentials for {} yet", self.label)
        };
        let reason = match &status.last_error {
            Some(e) => format!("{what}: last error: {e}"),
            None if expired => format!("{what}: a refresh is in progress"),
            None => format!("{what}: the first fetch is in progress"),
        };
        Unavailable {
            reason,
            retry_after: status
                .next_attempt
                .duration_since(now)
                .unwrap_or_default()
                .max(Duration::from_secs(1)),
        }
    }

    /// Stores freshly fetched credentials.
    pub fn store(&self, creds: Credentials) {
        self.current.store(Some(Arc::new(creds)));
        self.status.store(Arc::new(Status {
            last_error: None,
            next_attempt: SystemTime::now(),
        }));
    }

    fn record_failure(&self, error: String, next_attempt: SystemTime) {
        self.status.store(Arc::new(Status {
            last_error: Some(error),
            next_attempt,
        }));
    }
}

/// Where credentials come from.
#[derive(Clone)]
pub enum Source {
    /// The base credentials of the AWS default chain (env, profile, web identity, Pod Identity,
    /// container/instance metadata).
    Base(SharedCredentialsProvider),
    /// `sts:AssumeRole` on top of the base credentials (the STS client signs with them).
    AssumeRole {
        client: aws_sdk_sts::Client,
        role_arn: String,
        session_name: String,
        external_id: Option<String>,
        duration: Duration,
    },
}

impl Source {
    /// Fetches one set of credentials. Errors are rendered with their whole cause chain; they
    /// never contain secrets (the SDK redacts credentials in its types, and raw responses are
    /// left out, see [`error_chain`](crate::error::error_chain)).
    pub async fn fetch(&self) -> Result<aws_credential_types::Credentials, String> {
        match self {
            Source::Base(provider) => provider
                .provide_credentials()
                .await
                .map_err(|e| error_chain(&e)),
            Source::AssumeRole {
                client,
                role_arn,
                session_name,
                external_id,
                duration,
            } => {
                let out = client
                    .assume_role()
                    .role_arn(role_arn)
                    .role_session_name(session_name)
                    .set_external_id(external_id.clone())
                    .duration_seconds(i32::try_from(duration.as_secs()).unwrap_or(3600))
                    .send()
                    .await
                    .map_err(|e| format!("sts:AssumeRole {role_arn}: {}", error_chain(&e)))?;
                let c = out.credentials().ok_or_else(|| {
                    format!("sts:AssumeRole {role_arn}: answer holds no credentials")
                })?;
                let expiry = SystemTime::try_from(*c.expiration())
                    .map_err(|e| format!("sts:AssumeRole {role_arn}: bad expiration: {e}"))?;
                Ok(aws_credential_types::Credentials::new(
                    c.access_key_id(),
                    c.secret_access_key(),
                    Some(c.session_token().to_string()),
                    Some(expiry),
                    "AssumeRole",
                ))
            }
        }
    }
}

/// Backoff after the `failures`-th failure in a row: 0.5 s doubling up to 15 s, with jitter
/// drawn from the upper half so that many sidecars restarted together do not retry in step.
pub fn backoff(failures: u32) -> Duration {
    let base = Duration::from_millis(500);
    let cap = Duration::from_secs(15);
    let d = base
        .saturating_mul(1u32 << failures.saturating_sub(1).min(10))
        .min(cap);
    d.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// How long to wait before refreshing credentials of `lifetime` (time left until expiry):
/// `refresh_before` (plus up to a quarter of it as jitter) before expiry; credentials that live
/// shorter than that are refreshed halfway through their usable life. Credentials that never
/// expire (static keys) are re-read every 15 minutes so rotated files are picked up.
pub fn refresh_delay(lifetime: Option<Duration>, refresh_before: Duration) -> Duration {
    let Some(lifetime) = lifetime else {
        return Duration::from_secs(15 * 60);
    };
    let window = refresh_before + refresh_before.mul_f64(fastrand::f64() * 0.25);
    let usable = lifetime.saturating_sub(MIN_CREDENTIAL_LIFETIME);
    // Never later than 90 % of the usable life: an STS round trip must fit before the held
    // credentials stop being used, even when the jitter is zero.
    lifetime
        .checked_sub(window)
        .unwrap_or(usable / 2)
        .min(usable.mul_f64(0.9))
        .max(Duration::from_secs(1))
}

/// Refuses an answer that cannot be signed with: one missing its keys, or credentials that
/// expire within [`MIN_CREDENTIAL_LIFETIME`]. The SDK's lenient parser accepts an STS body cut
/// short and reads a missing `Expiration` as 1970, so such an answer must count as a failed
/// refresh: it is retried with backoff and never replaces credentials that are still usable.
fn usable(
    creds: aws_credential_types::Credentials,
) -> Result<aws_credential_types::Credentials, String> {
    if creds.access_key_id().is_empty() || creds.secret_access_key().is_empty() {
        return Err("the answer holds incomplete credentials (no access key id or secret)".into());
    }
    if let Some(expiry) = creds.expiry() {
        let left = expiry.duration_since(SystemTime::now()).unwrap_or_default();
        if left <= MIN_CREDENTIAL_LIFETIME {
            return Err(format!(
                "the fetched credentials expire in {}s, within the last {}s in which they are never used (a truncated answer, or a clock far off)",
                left.as_secs(),
                MIN_CREDENTIAL_LIFETIME.as_secs()
            ));
        }
    }
    Ok(creds)
}

/// The background task that keeps one [`CredentialCell`] fresh.
pub struct Refresher {
    pub source: Source,
    pub cell: CredentialCell,
    pub refresh_before: Duration,
    pub metrics: Metrics,
}

impl Refresher {
    /// Runs until the task is dropped (the process exits).
    pub async fn run(self) {
        let label = self.cell.label().to_string();
        let mut failures = 0u32;
        loop {
            let wait = match self.source.fetch().await.and_then(usable) {
                Ok(creds) => {
                    failures = 0;
                    let creds = Credentials::new(creds);
                    let now = SystemTime::now();
                    let lifetime = creds
                        .expiry
                        .map(|e| e.duration_since(now).unwrap_or_default());
                    let expiry_unix = creds
                        .expiry
                        .and_then(|e| e.duration_since(SystemTime::UNIX_EPOCH).ok())
                        .map_or(0.0, |d| d.as_secs_f64());
                    self.metrics
                        .refresh_total
                        .with_label_values(&[&label, "success"])
                        .inc();
                    self.metrics
                        .expiry_timestamp
                        .with_label_values(&[&label])
                        .set(expiry_unix);
                    self.cell.store(creds);
                    let wait = refresh_delay(lifetime, self.refresh_before);
                    tracing::info!(role_arn = %label, expires_in_secs = lifetime.map(|l| l.as_secs()), next_refresh_secs = wait.as_secs(), "credentials refreshed");
                    wait
                }
                Err(error) => {
                    failures += 1;
                    let wait = backoff(failures);
                    self.metrics
                        .refresh_total
                        .with_label_values(&[&label, "failure"])
                        .inc();
                    let still_valid = self.cell.is_valid();
                    tracing::warn!(role_arn = %label, %error, failures, retry_in_ms = wait.as_millis() as u64, still_valid, "credential refresh failed");
                    self.cell.record_failure(error, SystemTime::now() + wait);
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// The credential cells of every distinct role, and their refreshers (not yet started).
pub struct CredentialSet {
    pub cells: HashMap<RoleKey, CredentialCell>,
    pub refreshers: Vec<Refresher>,
}

/// Builds one refresher per distinct role among `roles`.
pub fn build(
    roles: impl IntoIterator<Item = (RoleKey, Duration)>,
    base: &SharedCredentialsProvider,
    sts: &aws_sdk_sts::Client,
    metrics: &Metrics,
) -> CredentialSet {
    let mut cells = HashMap::new();
    let mut refreshers = Vec::new();
    for (role, refresh_before) in roles {
        if cells.contains_key(&role) {
            continue;
        }
        let cell = CredentialCell::new(role.label());
        metrics.init_role(role.label());
        let source = match &role.role_arn {
            None => Source::Base(base.clone()),
            Some(arn) => Source::AssumeRole {
                client: sts.clone(),
                role_arn: arn.clone(),
                session_name: role.session_name.clone(),
                external_id: role.external_id.clone(),
                duration: role.duration,
            },
        };
        refreshers.push(Refresher {
            source,
            cell: cell.clone(),
            refresh_before,
            metrics: metrics.clone(),
        });
        cells.insert(role, cell);
    }
    CredentialSet { cells, refreshers }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_hands_out_credentials_in_their_last_30_seconds() {
        let now = SystemTime::now();
        let cell = CredentialCell::new("arn:aws:iam::1:role/r");
        let e = cell.current(now).expect_err("empty");
        assert!(e.reason.contains("no credentials"), "{}", e.reason);
        cell.store(Credentials::example_until(Some(
            now + Duration::from_secs(31),
        )));
        assert!(cell.current(now).is_ok());
        assert!(
            cell.current(now + Duration::from_secs(2)).is_err(),
            "29 s left: refused"
        );
        cell.record_failure("sts down".into(), now + Duration::from_secs(7));
        let e = cell
            .current(now + Duration::from_secs(2))
            .expect_err("expired");
        assert!(
            e.reason.contains("expired") && e.reason.contains("sts down"),
            "{}",
            e.reason
        );
        assert_eq!(e.retry_after.as_secs(), 5);
    }

    #[test]
    fn debug_shows_no_secret() {
        let shown = format!("{:?}", Credentials::example_until(None));
        assert!(!shown.contains("very-secret"), "{shown}");
    }

    #[test]
    fn refresh_delay_respects_window_and_short_lifetimes() {
        let m = Duration::from_secs(60);
        for _ in 0..100 {
            let d = refresh_delay(Some(Duration::from_secs(3600)), 10 * m);
            assert!(
                d >= Duration::from_secs(3600 - 750) && d <= Duration::from_secs(3000),
                "{d:?}"
            );
            // 60 s credentials with a 10 min window: refreshed halfway through the usable 30 s.
            assert_eq!(refresh_delay(Some(m), 10 * m), Duration::from_secs(15));
        }
        assert_eq!(refresh_delay(None, m), Duration::from_secs(900));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for _ in 0..100 {
            assert!(
                backoff(1) >= Duration::from_millis(250)
                    && backoff(1) <= Duration::from_millis(500)
            );
            assert!(backoff(3) >= Duration::from_secs(1) && backoff(3) <= Duration::from_secs(2));
            assert!(
                backoff(40) <= Duration::from_secs(15)
                    && backoff(40) >= Duration::from_millis(7500)
            );
        }
    }
}
