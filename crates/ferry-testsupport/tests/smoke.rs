//! Smoke tests of the real testenv control plane through kube-rs: server-side apply works, and a
//! Deployment becomes Available through kube-controller-manager, kube-scheduler and kwok.

use std::time::Duration;

use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

#[tokio::test]
async fn server_side_apply_configmap_round_trips() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "smoke-cm").await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let desired = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": "settings" },
        "data": { "greeting": "hello" }
    });
    let applied = configmaps
        .patch(
            "settings",
            &PatchParams::apply("ferry-smoke"),
            &Patch::Apply(&desired),
        )
        .await
        .expect("server-side apply of a ConfigMap");
    assert_eq!(
        applied
            .data
            .unwrap_or_default()
            .get("greeting")
            .map(String::as_str),
        Some("hello")
    );
    let managers: Vec<String> = applied
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|entry| entry.manager)
        .collect();
    assert!(
        managers.iter().any(|m| m == "ferry-smoke"),
        "field manager recorded, got {managers:?}"
    );
}

#[tokio::test]
async fn deployment_becomes_available_through_real_controllers() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "smoke-deploy").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let desired = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [ { "name": "web", "image": "registry.k8s.io/pause:3.10" } ] }
            }
        }
    });
    deployments
        .patch(
            "web",
            &PatchParams::apply("ferry-smoke"),
            &Patch::Apply(&desired),
        )
        .await
        .expect("server-side apply of a Deployment");
    let available = wait_for("Deployment web Available", Duration::from_secs(90), || {
        let deployments = deployments.clone();
        async move {
            let live = deployments.get("web").await?;
            let status = live.status.unwrap_or_default();
            let is_available = status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Available" && c.status == "True");
            Ok((is_available && status.available_replicas == Some(2))
                .then_some(status.ready_replicas))
        }
    })
    .await
    .expect("Deployment rolls out");
    assert_eq!(available, Some(2));
}
