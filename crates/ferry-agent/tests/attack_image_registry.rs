//! The registry attack of `ferry-images/tests/attack_registry.rs` through the real
//! ImageRepository controller, started as users start it (an in-process agent with
//! `--image-automation`), against the real API server. Every server here is a HOSTILE PEER
//! written by the test: the "registry" on 127.0.0.1 pages to "another host" on 127.0.0.2.

mod common;
// The hostile peers of ferry-images' registry attack tests.
#[path = "../../ferry-images/tests/hostile/mod.rs"]
mod hostile;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use hostile::{Peer, basic_challenge, basic_ok, other_host, respond};

/// A tenant's ImageRepository (with a Secret) points at the hostile registry, which pages to
/// another host. The scan fails with a condition that names the URL; the other host never gets
/// the tenant's credentials; the Secret's password appears nowhere in the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_repository_against_a_hostile_registry_fails_safely() {
    use ferry_api::common::{READY, find_condition};
    use ferry_api::images::ImageRepository;
    use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
    use kube::api::{Api, PostParams};

    let env = TestEnv::get();
    let client = env.client().await;
    common::install_crds(&client).await;
    let ns = TestNamespace::create(&client, "attack-registry").await;
    let other = other_host().await;
    let next = format!("http://{}/v2/team/app/tags/list?last=1.0.0", other.addr);
    let registry = Peer::start(
        [127, 0, 0, 1],
        Arc::new(move |request, _| {
            if !basic_ok(request) {
                return basic_challenge();
            }
            respond(
                StatusCode::OK,
                &[
                    ("content-type", "application/json".into()),
                    ("link", format!("<{next}>; rel=\"next\"")),
                ],
                r#"{"name":"team/app","tags":["1.0.0"]}"#,
            )
        }),
    )
    .await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &ns.name);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "reg-auth"},
                "stringData": {"username": "robot", "password": "hunter2-secret"},
            }))
            .expect("secret"),
        )
        .await
        .expect("create secret");
    let repos: Api<ImageRepository> = Api::namespaced(client.clone(), &ns.name);
    repos
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "apiVersion": "ferry.dev/v1alpha1", "kind": "ImageRepository",
                "metadata": {"name": "app"},
                "spec": {"image": format!("{}/team/app", registry.addr), "interval": "10m",
                         "secretRef": {"name": "reg-auth"}},
            }))
            .expect("ImageRepository"),
        )
        .await
        .expect("create ImageRepository");
    // The tenant's Secret is read as the namespace's `default` service account, which
    // `start_agent` grants the namespace's admin role (as a cluster admin would a tenant).
    let (agent, _cache) =
        common::start_agent(&env, &[&ns.name], |o| o.image_automation = true).await;
    let condition = wait_for(
        "ImageRepository reports the refused Link",
        Duration::from_secs(60),
        || {
            let repos = repos.clone();
            async move {
                let repo = repos.get("app").await?;
                let status = repo.status.unwrap_or_default();
                Ok(find_condition(&status.conditions, READY)
                    .filter(|c| c.status == "False" && c.reason == "OtherHost")
                    .cloned())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    agent.stop().await.expect("agent stops");
    assert!(
        condition.message.contains(&other.addr.to_string()),
        "{}",
        condition.message
    );
    let status =
        serde_json::to_string(&repos.get("app").await.expect("get").status).expect("status json");
    assert!(!status.contains("hunter2"), "no secret in status: {status}");
    assert!(other.seen().is_empty(), "the other host was never asked");
    other.assert_no_credentials();
    assert!(
        registry.seen().iter().any(|s| s.authorization.is_some()),
        "the tenant's credentials did reach its own registry"
    );
}
