//! The whole path of the README's local run, in-process: app -> sidecar -> API Gateway
//! stand-in (independent SigV4 check, role allow-list) -> the real Lambda handler through a
//! REST API proxy event.

mod common;

use std::time::Duration;

use common::*;
use sigv4_testbed::gateway::Backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_world_names_the_assumed_role() {
    let sts = sts(Duration::from_secs(3600)).await;
    let gw = gateway_with(&sts, |b| b.backend(Backend::Lambda)).await;
    let sidecar = ready_sidecar(Launch::new(&gw.url(), &sts)).await;

    let res = get(&sidecar.url("/hello-world")).await;
    assert_eq!(res.status, 200, "{:?}", String::from_utf8_lossy(&res.body));
    assert_eq!(res.headers["content-type"], "application/json");
    let issued = &sts.issued()[0];
    assert_eq!(res.json()["message"], "Hello World");
    assert_eq!(res.json()["caller"], issued.assumed_role_arn.as_str());
    assert!(issued
        .assumed_role_arn
        .contains(":assumed-role/sidecar-caller/integration-test"));

    // The Lambda's own JSON 404 and 405 come back through the sidecar unmarked.
    let missing = get(&sidecar.url("/nope")).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.sidecar_error(), None);
    let wrong_method = send("POST", &sidecar.url("/hello-world"), &[], "x").await;
    assert_eq!(wrong_method.status, 405);

    // Straight to the gateway without the sidecar: API Gateway's own 403.
    let unsigned = get(&format!("{}/hello-world", gw.url())).await;
    assert_eq!(unsigned.status, 403);
    assert_eq!(unsigned.json()["message"], "Missing Authentication Token");
}
