//! The STS emulator driven by the real `aws-sdk-sts` client: what the SDK sends, the emulator
//! accepts; what the emulator answers (credentials and each fault mode), the SDK parses.

use std::time::{Duration, SystemTime};

use aws_sdk_sts::config::{retry::RetryConfig, timeout::TimeoutConfig, BehaviorVersion, Region};
use aws_sdk_sts::error::ProvideErrorMetadata;
use sigv4_testbed::{Credentials, StsConfig, StsEmulator, StsMode};

const ROLE: &str = "arn:aws:iam::111111111111:role/sigv4-sidecar-demo";

fn base() -> Credentials {
    Credentials::new("AKIDTESTBASE", "test-base-secret", None)
}

async fn emulator() -> StsEmulator {
    StsEmulator::start(StsConfig::new(base()))
        .await
        .expect("start sts")
}

/// An SDK client signing with `creds`, no retries (so call counts are exact), short timeouts.
fn client(sts: &StsEmulator, creds: &Credentials) -> aws_sdk_sts::Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_sdk_sts::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .endpoint_url(sts.endpoint())
        .credentials_provider(aws_sdk_sts::config::Credentials::new(
            creds.access_key_id.clone(),
            creds.secret_access_key.clone(),
            creds.session_token.clone(),
            None,
            "test",
        ))
        .http_client(http)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_millis(1500))
                .build(),
        )
        .build();
    aws_sdk_sts::Client::from_conf(config)
}

async fn assume(
    client: &aws_sdk_sts::Client,
) -> Result<aws_sdk_sts::operation::assume_role::AssumeRoleOutput, String> {
    client
        .assume_role()
        .role_arn(ROLE)
        .role_session_name("pod-1")
        .external_id("ext-42")
        .duration_seconds(3600)
        .send()
        .await
        .map_err(|e| match e.as_service_error() {
            Some(s) => format!(
                "{}: {}",
                s.code().unwrap_or("?"),
                s.message().unwrap_or("?")
            ),
            None => format!("{e:?}"),
        })
}

#[tokio::test]
async fn sdk_assume_role_round_trip() {
    let sts = emulator().await;
    let out = assume(&client(&sts, &base())).await.expect("assume role");
    let creds = out.credentials().expect("credentials");
    let user = out.assumed_role_user().expect("assumed role user");
    assert_eq!(
        user.arn(),
        "arn:aws:sts::111111111111:assumed-role/sigv4-sidecar-demo/pod-1"
    );
    assert!(user.assumed_role_id().ends_with(":pod-1"));

    let issued = sts.issued();
    assert_eq!(issued.len(), 1);
    let i = &issued[0];
    assert_eq!(creds.access_key_id(), i.credentials.access_key_id);
    assert_eq!(creds.secret_access_key(), i.credentials.secret_access_key);
    assert_eq!(
        Some(creds.session_token()),
        i.credentials.session_token.as_deref()
    );
    assert_eq!(i.role_arn, ROLE);
    assert_eq!(i.session_name, "pod-1");
    assert_eq!(i.external_id.as_deref(), Some("ext-42"));
    assert_eq!(i.duration_seconds, Some(3600));
    assert_eq!(i.via, "AssumeRole");
    assert_eq!(i.signed_with.as_deref(), Some("AKIDTESTBASE"));
    let expiry = SystemTime::try_from(*creds.expiration()).expect("expiration");
    let delta = match expiry.duration_since(i.expiration) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    assert!(
        delta < Duration::from_secs(1),
        "expiration off by {delta:?}"
    );
    assert_eq!(
        sts.lookup(&i.credentials.access_key_id)
            .map(|x| x.session_name),
        Some("pod-1".into())
    );

    // Every credential is new.
    assume(&client(&sts, &base())).await.expect("second");
    let ids: Vec<String> = sts
        .issued()
        .iter()
        .map(|i| i.credentials.access_key_id.clone())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
    assert_eq!(sts.calls(), 2);
}

#[tokio::test]
async fn bad_signatures_get_sts_errors() {
    let sts = emulator().await;
    let wrong_secret = Credentials::new("AKIDTESTBASE", "not-the-secret", None);
    let err = assume(&client(&sts, &wrong_secret))
        .await
        .expect_err("wrong secret");
    assert!(err.starts_with("SignatureDoesNotMatch"), "{err}");
    let unknown = Credentials::new("AKIDUNKNOWN", "x", None);
    let err = assume(&client(&sts, &unknown))
        .await
        .expect_err("unknown key");
    assert!(err.starts_with("InvalidClientTokenId"), "{err}");
    assert!(sts.issued().is_empty());
    assert_eq!(sts.calls(), 2);
}

#[tokio::test]
async fn web_identity_then_assume_role() {
    let sts = emulator().await;
    let anonymous = client(&sts, &Credentials::new("unused", "unused", None));
    let out = anonymous
        .assume_role_with_web_identity()
        .role_arn("arn:aws:iam::111111111111:role/pod-irsa")
        .role_session_name("irsa-session")
        .web_identity_token("eyJhbGciOi.test-token.sig")
        .send()
        .await
        .expect("web identity");
    let web = out.credentials().expect("credentials");
    let issued = sts.lookup(web.access_key_id()).expect("recorded");
    assert_eq!(issued.via, "AssumeRoleWithWebIdentity");
    assert_eq!(
        issued.web_identity_token.as_deref(),
        Some("eyJhbGciOi.test-token.sig")
    );
    assert_eq!(issued.signed_with, None);

    // The web-identity credentials are accepted as base credentials for AssumeRole.
    let chained = assume(&client(&sts, &issued.credentials))
        .await
        .expect("chained assume role");
    let akid = chained
        .credentials()
        .expect("creds")
        .access_key_id()
        .to_string();
    assert_eq!(
        sts.lookup(&akid).and_then(|i| i.signed_with),
        Some(issued.credentials.access_key_id.clone())
    );
}

#[tokio::test]
async fn fault_modes() {
    let sts = emulator().await;
    let c = client(&sts, &base());

    sts.set_mode(StsMode::Throttling);
    let err = assume(&c).await.expect_err("throttled");
    assert_eq!(err, "Throttling: Rate exceeded");
    sts.set_mode(StsMode::InternalError);
    assert!(assume(&c)
        .await
        .expect_err("500")
        .starts_with("InternalError"));
    sts.set_mode(StsMode::AccessDenied);
    assert!(assume(&c)
        .await
        .expect_err("403")
        .starts_with("AccessDenied"));
    sts.set_mode(StsMode::MalformedXml);
    assert!(assume(&c).await.is_err());
    sts.set_mode(StsMode::CloseConnection);
    assert!(assume(&c).await.is_err());
    assert_eq!(sts.calls(), 5);
    assert!(sts.issued().is_empty());

    // Hang: the client times out; no sleeping on our side, the call count tells us it arrived.
    sts.set_mode(StsMode::Hang);
    assert!(assume(&c).await.is_err());
    assert_eq!(sts.calls(), 6);

    // A hanging request is answered once the mode changes.
    let pending = tokio::spawn({
        let c = c.clone();
        async move { assume(&c).await }
    });
    assert!(sts.wait_for_calls(7, Duration::from_secs(5)).await);
    sts.set_mode(StsMode::Ok);
    pending
        .await
        .expect("join")
        .expect("answered after the hang");
    assert_eq!(sts.issued().len(), 1);
    assert!(!sts.wait_for_calls(100, Duration::from_millis(50)).await);
}

#[tokio::test]
async fn lifetime_applies_to_new_credentials() {
    let sts = emulator().await;
    sts.set_lifetime(Duration::from_secs(5));
    let before = SystemTime::now();
    assume(&client(&sts, &base())).await.expect("assume");
    let i = &sts.issued()[0];
    let left = i.expiration.duration_since(before).expect("future");
    assert!(
        left <= Duration::from_secs(6) && left >= Duration::from_secs(4),
        "{left:?}"
    );
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let sts = emulator().await;
    let c = client(&sts, &base());
    assume(&c).await.expect("serving");
    sts.shutdown();
    assert!(assume(&c).await.is_err());
}
