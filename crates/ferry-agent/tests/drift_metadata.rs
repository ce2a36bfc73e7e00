//! Issue 14 drift bug: a hand edit of a label or an annotation of a kind with a
//! `metadata.generation` (a Deployment, a custom resource) does not bump the generation, and was
//! never reverted: neither the drift watch nor the skip-if-unchanged fingerprint saw it. Here
//! `kubectl label` / `kubectl annotate` (their own field managers, Update operations, as a person
//! would do it) change what the Release applied, and the agent (interval 1h) must put it back.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use ferry_api::{GitSource, Release};
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;

/// A CRD of the test's own (its group carries the namespace name), deleted when dropped.
pub struct TestCrd {
    pub group: String,
    env: TestEnv,
}

impl TestCrd {
    pub async fn create(env: &TestEnv, ns: &str) -> Self {
        let group = format!("{ns}.drift.ferry.test");
        let crd = serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("widgets.{group}")},
            "spec": {
                "group": group, "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]
            }
        });
        let file = std::env::temp_dir().join(format!("{group}.json"));
        std::fs::write(&file, crd.to_string()).expect("write CRD");
        env.kubectl(&["apply", "-f", &file.to_string_lossy()]);
        env.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            &format!("crd/widgets.{group}"),
        ]);
        Self {
            group,
            env: TestEnv::get(),
        }
    }
}

impl Drop for TestCrd {
    fn drop(&mut self) {
        let _ = Command::new(self.env.tool("kubectl"))
            .args([
                "delete",
                "crd",
                &format!("widgets.{}", self.group),
                "--wait=false",
            ])
            .env("KUBECONFIG", self.env.kubeconfig())
            .output();
    }
}

pub fn deployment_yaml(name: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  labels: {{tier: web}}\n  annotations: {{team: payments}}\nspec:\n  replicas: 0\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers: [{{name: app, image: registry.invalid/app:1}}]\n"
    )
}

pub fn widget_yaml(group: &str, name: &str) -> String {
    format!(
        "apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: {name}\n  labels: {{tier: web}}\n  annotations: {{team: payments}}\nspec:\n  size: 1\n"
    )
}

/// (label tier, annotation team, generation) of an object.
async fn meta_of(api: &Api<DynamicObject>, name: &str) -> (String, String, i64) {
    let obj = api.get(name).await.expect("object exists");
    let label = obj.metadata.labels.unwrap_or_default().get("tier").cloned();
    let annotation = obj
        .metadata
        .annotations
        .unwrap_or_default()
        .get("team")
        .cloned();
    (
        label.unwrap_or_default(),
        annotation.unwrap_or_default(),
        obj.metadata.generation.unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hand_edited_labels_and_annotations_of_deployments_and_custom_resources_are_reverted() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "agent-drift-meta").await;
    let crd = TestCrd::create(&env, &ns.name).await;
    let repo = Repo::create(&env, &ns.name);
    let sha = repo.commit(
        &[
            ("app/deploy.yaml", Some(&deployment_yaml("web"))),
            ("app/widget.yaml", Some(&widget_yaml(&crd.group, "w1"))),
        ],
        "first",
    );
    // The agent's own identity: this test is about drift, not tenancy (the tenant's `admin`
    // role would not cover the test's CRD).
    let (agent, _cache) = start_agent(&env, &[&ns.name], |o| {
        o.insecure_agent_identity_for_tenants = true;
    })
    .await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1h"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release("app", "repo", "app", serde_json::json!({"interval": "1h"})),
    )
    .await;
    wait_release_applied(&client, &ns.name, "app", &sha, Duration::from_secs(60)).await;

    let deployments: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns.name,
        &ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment")),
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns.name,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(&crd.group, "v1", "Widget"),
            "widgets",
        ),
    );
    for (api, resource, name) in [
        (&deployments, "deployment".to_string(), "web"),
        (&widgets, format!("widgets.{}", crd.group), "w1"),
    ] {
        let (label, annotation, generation) = meta_of(api, name).await;
        assert_eq!((label.as_str(), annotation.as_str()), ("web", "payments"));
        let object = format!("{resource}/{name}");
        // The generation in kubectl's own answer to the edit: nothing else wrote in between.
        let after_label = env.kubectl(&[
            "-n",
            &ns.name,
            "label",
            &object,
            "tier=hand",
            "--overwrite",
            "-o",
            "jsonpath={.metadata.generation}",
        ]);
        assert_eq!(
            after_label.trim(),
            generation.to_string(),
            "{object}: a label edit must not bump the generation (the case under test)"
        );
        env.kubectl(&[
            "-n",
            &ns.name,
            "annotate",
            &object,
            "team=hand",
            "--overwrite",
        ]);
        wait_for(
            &format!("{object}: label and annotation reverted"),
            Duration::from_secs(30),
            || async move {
                let now = meta_of(api, name).await;
                Ok(((now.0.as_str(), now.1.as_str()) == ("web", "payments")).then_some(()))
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));

        // A label removed by hand comes back as well.
        env.kubectl(&["-n", &ns.name, "label", &object, "tier-"]);
        wait_for(
            &format!("{object}: removed label restored"),
            Duration::from_secs(30),
            || async move { Ok((meta_of(api, name).await.0 == "web").then_some(())) },
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
    // A label ferry does not apply is not drift: it stays.
    env.kubectl(&["-n", &ns.name, "label", "deployment/web", "extra=mine"]);
    // Deliberate: this asserts that something does NOT happen (the foreign label is not
    // reverted), so it waits longer than the drift watch takes to revert an owned field.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let obj = deployments.get("web").await.expect("deployment");
    assert_eq!(
        obj.metadata
            .labels
            .unwrap_or_default()
            .get("extra")
            .map(String::as_str),
        Some("mine")
    );
    agent.stop().await.expect("agent stops");
    drop(crd);
}
