//! Several upstreams and roles in one sidecar (SPEC "Several upstreams"): each route on its own
//! listener signs only with its own role's credentials, for its own service and region, and
//! routes with the same role share one refresher.

mod common;

use std::time::Duration;

use common::*;
use sigv4_testbed::gateway::Gateway;
use sigv4_testbed::sigv4::sha256_hex;
use sigv4_testbed::sts::{StsEmulator, StsMode};

const SEARCH_ROLE: &str = "arn:aws:iam::222222222222:role/search-reader";

async fn upstream(
    sts: &StsEmulator,
    region: &str,
    service: &str,
    stage: &str,
    role: &str,
) -> Gateway {
    start_gateway(
        Gateway::builder(sts.clone())
            .region(region)
            .service(service)
            .stage(stage)
            .allowed_roles([role]),
    )
    .await
}

/// Three routes: `default` (execute-api, us-east-1, ROLE), `search` (es, eu-west-1,
/// SEARCH_ROLE) and `fn` (lambda, us-west-2, ROLE again: shares the default's refresher).
struct Three {
    sts: StsEmulator,
    api: Gateway,
    search: Gateway,
    func: Gateway,
    _dir: tempfile::TempDir,
    sidecar: Sidecar,
}

async fn three_routes(sts_mode: StsMode) -> Three {
    let sts = sts(Duration::from_secs(3600)).await;
    sts.set_mode(sts_mode);
    let api = upstream(&sts, "us-east-1", "execute-api", "Prod", ROLE).await;
    let search = upstream(&sts, "eu-west-1", "es", "", SEARCH_ROLE).await;
    let func = upstream(&sts, "us-west-2", "lambda", "", ROLE).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sidecar.toml");
    std::fs::write(
        &path,
        format!(
            r#"
upstream = "{api}"
region = "us-east-1"
service = "execute-api"
role_arn = "{ROLE}"
role_session_name = "routes-test"
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
request_timeout = "7s"

[[routes]]
name = "search"
listen = "127.0.0.1:0"
upstream = "{search}"
region = "eu-west-1"
service = "es"
role_arn = "{SEARCH_ROLE}"

[[routes]]
name = "fn"
listen = "127.0.0.1:0"
upstream = "{func}"
region = "us-west-2"
service = "lambda"
"#,
            api = api.url(),
            search = search.url(),
            func = func.url(),
        ),
    )
    .expect("write config");
    let mut launch = Launch::new(&api.url(), &sts);
    // Everything comes from the file this time.
    launch.env.clear();
    launch.config_file = Some(path.to_str().expect("utf8").to_string());
    let sidecar = launch.start();
    Three {
        sts,
        api,
        search,
        func,
        _dir: dir,
        sidecar,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_signs_with_its_own_role_service_and_region() {
    let t = three_routes(StsMode::Ok).await;
    t.sidecar.expect_refreshes(2, Duration::from_secs(20));
    let search_addr = t.sidecar.route_addr("search");
    let fn_addr = t.sidecar.route_addr("fn");
    assert_eq!(get(&t.sidecar.admin_url("/readyz")).await.status, 200);

    let json: &[(&str, &str)] = &[("content-type", "application/json")];
    // (route, its listener, method, headers, path sent, path the upstream sees, its role)
    let routes = [
        (
            "default",
            t.sidecar.proxy,
            "POST",
            json,
            "/orders",
            "/Prod/orders",
            ROLE,
        ),
        (
            "search",
            search_addr,
            "POST",
            json,
            "/logs/_search",
            "/logs/_search",
            SEARCH_ROLE,
        ),
        ("fn", fn_addr, "PUT", &[][..], "/invoke", "/invoke", ROLE),
    ];
    for i in 0..5 {
        let body = format!("{{\"query\":{{\"match\":{{\"n\":{i}}}}}}}");
        for (name, addr, method, headers, path, upstream_path, role) in routes {
            let url = format!("http://{addr}{path}?n={i}");
            let res = send(method, &url, headers, body.clone()).await;
            assert_eq!(
                res.status,
                200,
                "route {name}: {:?}",
                String::from_utf8_lossy(&res.body)
            );
            let echo = res.json();
            assert_eq!(
                echo["target"],
                format!("{upstream_path}?n={i}"),
                "route {name}"
            );
            assert_eq!(
                echo["body_sha256"],
                sha256_hex(body.as_bytes()),
                "route {name}"
            );
            let akid = echo["access_key_id"].as_str().expect("akid");
            let issued = t.sts.lookup(akid).expect("issued by the emulator");
            assert_eq!(issued.role_arn, role, "route {name} signs as its own role");
        }
    }
    // Every gateway verified its own scope (service + region) and role: nothing rejected, and
    // each saw exactly its own requests.
    for (name, gw) in [("default", &t.api), ("search", &t.search), ("fn", &t.func)] {
        assert_eq!(
            gw.rejected(),
            0,
            "{name}: {:?}",
            gw.requests().iter().map(|r| &r.outcome).collect::<Vec<_>>()
        );
        assert_eq!(gw.requests().len(), 5, "{name}");
    }
    // One refresher per distinct role: two AssumeRole calls for three routes.
    let mut roles: Vec<String> = t.sts.issued().iter().map(|i| i.role_arn.clone()).collect();
    roles.sort();
    assert_eq!(roles, [ROLE, SEARCH_ROLE]);

    let metrics =
        String::from_utf8_lossy(&get(&t.sidecar.admin_url("/metrics")).await.body).into_owned();
    for (route, _, method, ..) in routes {
        assert!(
            metrics.contains(&format!("sigv4_sidecar_requests_total{{code=\"200\",method=\"{method}\",route=\"{route}\"}} 5")),
            "route {route} counted:\n{metrics}"
        );
        assert!(metrics.contains(&format!(
            "sigv4_sidecar_inflight_requests{{route=\"{route}\"}} 0"
        )));
    }
    for role in [ROLE, SEARCH_ROLE] {
        assert!(metrics.contains(&format!("sigv4_sidecar_credentials_refresh_total{{result=\"success\",role_arn=\"{role}\"}} 1")), "{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_never_signs_with_another_routes_role() {
    // Cross-wire on purpose: the search gateway accepts only SEARCH_ROLE; if the default
    // route's credentials were ever used for it, the gateway would refuse them.
    let t = three_routes(StsMode::Ok).await;
    assert!(t.sidecar.wait_for_refreshes(2, Duration::from_secs(20)));
    let search_addr = t.sidecar.route_addr("search");
    // The default route pointed at the search gateway's URL would be refused: prove the
    // gateway really tells roles apart.
    let wrong = Launch::new(&t.search.url(), &t.sts)
        .set("SERVICE", "es")
        .set("REGION", "eu-west-1");
    let wrong = ready_sidecar(wrong).await;
    let refused = get(&wrong.url("/logs")).await;
    assert_eq!(
        refused.status, 403,
        "the search gateway refuses the default role"
    );
    refused.assert_json_contains("/Message", "not authorized");
    let before = t.search.rejected();
    for _ in 0..10 {
        assert_eq!(get(&format!("http://{search_addr}/logs")).await.status, 200);
    }
    assert_eq!(
        t.search.rejected(),
        before,
        "the search route only ever used its own role"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_every_route() {
    let t = three_routes(StsMode::AccessDenied).await;
    t.sidecar
        .expect_log("credential refresh failed", Duration::from_secs(30));
    let ready = get(&t.sidecar.admin_url("/readyz")).await;
    assert_eq!(ready.status, 503);
    let v = ready.json();
    for route in ["default", "search", "fn"] {
        assert_eq!(v["routes"][route]["ready"], false, "{v}");
        assert!(
            v["reason"].as_str().unwrap_or_default().contains(route),
            "{v}"
        );
    }
    assert!(
        v["routes"]["search"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains(SEARCH_ROLE),
        "{v}"
    );
    let res = get(&format!("http://{}/logs", t.sidecar.route_addr("search"))).await;
    res.assert_sidecar(503, "credentials_unavailable");

    t.sts.set_mode(StsMode::Ok);
    t.sidecar.expect_refreshes(2, Duration::from_secs(40));
    let ready = get(&t.sidecar.admin_url("/readyz")).await;
    assert_eq!(ready.status, 200, "{}", ready.json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_from_the_environment() {
    let sts = sts(Duration::from_secs(3600)).await;
    let api = upstream(&sts, "us-east-1", "execute-api", "Prod", ROLE).await;
    let func = upstream(&sts, "us-west-2", "lambda", "", ROLE).await;
    let routes = format!(
        r#"[{{name="fn", listen="127.0.0.1:0", upstream="{}", region="us-west-2", service="lambda"}}]"#,
        func.url()
    );
    let sidecar = Launch::new(&api.url(), &sts).set("ROUTES", &routes).start();
    assert!(sidecar.wait_for_refreshes(1, Duration::from_secs(20)));
    let res = send(
        "POST",
        &format!("http://{}/x", sidecar.route_addr("fn")),
        &[],
        "hi",
    )
    .await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    assert_eq!(get(&sidecar.url("/y")).await.status, 200);
    assert_eq!(func.rejected() + api.rejected(), 0);
}
