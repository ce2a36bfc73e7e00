//! Attacks on the local server's front door, with raw HTTP (every header chosen by the test)
//! against a dashboard connected to the real test environment: no token, a wrong token, DNS
//! rebinding (a foreign Host), cross-site and token-less action posts, names that try to walk
//! out of their API path. Each refused request changes nothing in the cluster; the same action
//! done properly does, which shows it was the check that refused.

mod common;

use std::time::Duration;

use common::*;
use ferry_api::Release;
use ferry_api::common::RECONCILE_REQUESTED_AT;
use ferry_testsupport::{TestEnv, TestNamespace};
use kube::api::{Api, PostParams};

const READ: Duration = Duration::from_secs(5);

/// Headers, form body, and what the attempt is.
type Attempt<'a> = (Vec<(&'a str, String)>, String, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_door_refuses_strangers_rebinding_and_cross_site_actions() {
    ferry_engine::install_crypto_provider();
    let env = TestEnv::get();
    let client = env.client().await;
    ferry_testsupport::install_crds(&client, &ferry_agent::crds::all(), "ferry-ui-tests").await;
    let ns = TestNamespace::create(&client, "ui-door").await;
    // A Release no agent serves: only the dashboard's actions can change it.
    let releases: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    let release = serde_json::json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "Release", "metadata": {"name": "web"},
        "spec": {"sourceRef": {"kind": "GitSource", "name": "repo"}},
    });
    releases
        .create(
            &PostParams::default(),
            &serde_json::from_value(release).expect("release"),
        )
        .await
        .expect("create Release");
    let ui = start_ui(env.kubeconfig(), &[&ns.name]).await;
    let (addr, port, token) = (ui.addr, ui.addr.port(), token_of(&ui));
    let cookie = ("Cookie", format!("ferry_ui_{port}={token}"));
    let origin = ("Origin", format!("http://{addr}"));
    let form = (
        "Content-Type",
        "application/x-www-form-urlencoded".to_string(),
    );
    let sync = format!("/apps/release/{}/web/sync", ns.name);

    // No token, a wrong one, another port's cookie: 401 and not a word about the cluster.
    for headers in [
        vec![],
        vec![("Cookie", format!("ferry_ui_{port}={}", "0".repeat(64)))],
        vec![(
            "Cookie",
            format!("ferry_ui_{}={token}", port.wrapping_add(1)),
        )],
    ] {
        let (status, _, body) = http(addr, "GET", "/", &headers, "", READ).await;
        assert_eq!(status, 401, "{headers:?}");
        assert!(!body.contains(&ns.name), "a refused page shows no apps");
    }
    let (status, _, _) = http(
        addr,
        "GET",
        &format!("/?token={}", "1".repeat(64)),
        &[],
        "",
        READ,
    )
    .await;
    assert_eq!(status, 401);

    // The first visit trades the token for an HttpOnly, SameSite=Strict cookie and drops it
    // from the URL.
    let (status, head, _) = http(
        addr,
        "GET",
        &format!("/?q=web&token={token}"),
        &[],
        "",
        READ,
    )
    .await;
    assert_eq!(status, 303);
    let head = head.to_ascii_lowercase();
    assert!(head.contains("location: /?q=web\r\n"), "{head}");
    assert!(
        head.contains(&format!(
            "set-cookie: ferry_ui_{port}={token}; httponly; samesite=strict; path=/"
        )),
        "{head}"
    );
    let (status, head, body) =
        http(addr, "GET", "/", std::slice::from_ref(&cookie), "", READ).await;
    assert_eq!(status, 200);
    assert!(
        body.contains(&format!("app--release--{}--web", ns.name)),
        "the app is listed"
    );
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );
    assert!(head.contains("x-frame-options: deny"), "{head}");

    // DNS rebinding: the right cookie, an attacker's name in Host.
    for host in ["evil.example", "127.0.0.1.evil.example", "localhost"] {
        let (status, _, _) = http(
            addr,
            "GET",
            "/",
            &[
                (
                    "Host",
                    format!(
                        "{host}:{}",
                        if host == "localhost" {
                            port.wrapping_add(1)
                        } else {
                            port
                        }
                    ),
                ),
                cookie.clone(),
            ],
            "",
            READ,
        )
        .await;
        assert_eq!(status, 403, "Host {host}");
    }

    // Cross-site and token-less action posts: all refused, the Release untouched.
    let csrf = format!("csrf={token}");
    let attempts: Vec<Attempt> = vec![
        (
            vec![cookie.clone(), form.clone()],
            csrf.clone(),
            "no Origin",
        ),
        (
            vec![
                cookie.clone(),
                form.clone(),
                ("Origin", "http://evil.example".into()),
            ],
            csrf.clone(),
            "foreign Origin",
        ),
        (
            vec![cookie.clone(), form.clone(), ("Origin", "null".into())],
            csrf.clone(),
            "opaque Origin",
        ),
        (
            vec![
                cookie.clone(),
                form.clone(),
                origin.clone(),
                ("Sec-Fetch-Site", "cross-site".into()),
            ],
            csrf.clone(),
            "cross-site fetch",
        ),
        (
            vec![cookie.clone(), form.clone(), origin.clone()],
            String::new(),
            "no form token",
        ),
        (
            vec![cookie.clone(), form.clone(), origin.clone()],
            "csrf=0".into(),
            "wrong form token",
        ),
        (
            vec![form.clone(), origin.clone()],
            csrf.clone(),
            "no cookie",
        ),
    ];
    for (headers, body, what) in &attempts {
        let (status, _, _) = http(addr, "POST", &sync, headers, body, READ).await;
        assert!(status == 403 || status == 401, "{what}: {status}");
    }
    // GET never acts.
    let (status, _, _) = http(addr, "GET", &sync, std::slice::from_ref(&cookie), "", READ).await;
    assert_eq!(status, 405);
    let r = releases.get("web").await.expect("release");
    assert!(
        !r.metadata
            .annotations
            .unwrap_or_default()
            .contains_key(RECONCILE_REQUESTED_AT),
        "a refused action changed the Release"
    );

    // Names that would walk out of their API path, and kinds that are not apps.
    for path in [
        format!("/apps/release/{}/..%2F..%2Fapi%2Fv1%2Fsecrets", ns.name),
        "/apps/release/kube-system/..".to_string(),
        format!("/apps/release/{}/web%3Fx=1", ns.name),
        format!("/apps/secret/{}/web", ns.name),
        format!("/apps/release/{}/Web", ns.name),
    ] {
        let (status, _, _) =
            http(addr, "GET", &path, std::slice::from_ref(&cookie), "", READ).await;
        assert!(status == 400 || status == 404, "{path}: {status}");
    }
    let (status, _, _) = http(
        addr,
        "POST",
        &format!("/apps/release/{}/web/delete", ns.name),
        &[cookie.clone(), form.clone(), origin.clone()],
        &csrf,
        READ,
    )
    .await;
    assert_eq!(status, 404, "unknown actions do nothing");

    // The same action done properly goes through: the checks above were what refused.
    let (status, head, _) = http(
        addr,
        "POST",
        &sync,
        &[
            cookie.clone(),
            form.clone(),
            origin.clone(),
            ("Sec-Fetch-Site", "same-origin".into()),
        ],
        &csrf,
        READ,
    )
    .await;
    assert_eq!(status, 303, "{head}");
    let r = releases.get("web").await.expect("release");
    assert!(
        r.metadata
            .annotations
            .unwrap_or_default()
            .contains_key(RECONCILE_REQUESTED_AT),
        "the proper action set the annotation"
    );

    ui.stop().await;
}
