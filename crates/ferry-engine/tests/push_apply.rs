//! Push-mode happy paths against the real testenv: apply → Available, no-write re-apply, diff,
//! prune with opt-out, delete, status, CRD ordering, image overrides, revision tracking.

mod push_common;

use ferry_engine::health::HealthState;
use ferry_engine::pipeline;
use ferry_engine::progress::NoProgress;
use ferry_engine::render::{RenderRequest, render, set_image};
use ferry_engine::report::{Action, DiffAction};
use ferry_testsupport::{TestEnv, TestNamespace};
use push_common::*;

#[tokio::test]
async fn apply_makes_a_deployment_available_and_reapply_writes_nothing() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "push-apply").await;
    let yaml = format!(
        "{}{}apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {{app: web}}\n  ports: [{{port: 80}}]\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: web\n",
        deployment("web", "registry.k8s.io/pause:3.10"),
        configmap("web-config", "1")
    );
    let mut o = opts("web", &ns.name);
    o.wait = true;
    o.revision = Some("0123456789abcdef".into());
    let report = pipeline::apply(&client, manifests(&yaml), &o, &NoProgress)
        .await
        .expect("apply");
    assert!(report.succeeded(), "{:#?}", report);
    assert_eq!(report.count(Action::Created), 4, "{:#?}", report);
    let dep = report
        .objects
        .iter()
        .find(|r| r.key.kind == "Deployment")
        .expect("deployment result");
    assert_eq!(
        dep.health.as_ref().map(|h| h.state),
        Some(HealthState::Current)
    );
    let live = get(
        &client,
        "apps/v1",
        "Deployment",
        "deployments",
        Some(&ns.name),
        "web",
    )
    .await
    .expect("deployment");
    assert_eq!(live.data["status"]["availableReplicas"], 2);
    let annotations = live.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations.get("ferry.dev/revision").map(String::as_str),
        Some("0123456789abcdef")
    );
    assert_eq!(
        annotations.get("ferry.dev/owner").map(String::as_str),
        Some(format!("{}/web", ns.name).as_str())
    );
    // Field manager is ferry.
    let managers: Vec<String> = live
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.contains(&"ferry".to_string()), "{managers:?}");

    // Same input again: nothing written at all.
    o.wait = false;
    let again = pipeline::apply(&client, manifests(&yaml), &o, &NoProgress)
        .await
        .expect("re-apply");
    assert_eq!(again.count(Action::Unchanged), 4, "{:#?}", again);
    assert_eq!(
        again.requests.writes, 0,
        "a no-change re-apply must not write: {:?}",
        again.requests
    );

    // Status shows the inventory, revision and health.
    let status = pipeline::status(&client, "web", Some(&ns.name), 4)
        .await
        .expect("status");
    assert_eq!(status.revision.as_deref(), Some("0123456789abcdef"));
    assert_eq!(status.objects.len(), 4);
    assert!(status.healthy(), "{:#?}", status);
}

#[tokio::test]
async fn drift_by_another_writer_is_reapplied() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "push-drift").await;
    let yaml = configmap("settings", "a");
    let o = opts("drift", &ns.name);
    pipeline::apply(&client, manifests(&yaml), &o, &NoProgress)
        .await
        .expect("apply");
    // Someone edits the ConfigMap behind ferry's back (a different field manager, force).
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), &ns.name);
    let edit = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"value": "edited"}});
    api.patch(
        "settings",
        &kube::api::PatchParams::apply("someone").force(),
        &kube::api::Patch::Apply(&edit),
    )
    .await
    .expect("edit");
    // The hash still matches but the fingerprint moved: ferry must not skip it as unchanged.
    // SSA then reports that "someone" owns the field now.
    let report = pipeline::apply(&client, manifests(&yaml), &o, &NoProgress)
        .await
        .expect("re-apply");
    let result = &report.objects[0];
    assert_eq!(result.action, Action::Failed, "{:#?}", report);
    assert_eq!(
        result.conflicts.first().map(|c| c.manager.as_str()),
        Some("someone"),
        "{result:?}"
    );
    let mut forced = o.clone();
    forced.force_conflicts = true;
    let report = pipeline::apply(&client, manifests(&yaml), &forced, &NoProgress)
        .await
        .expect("force");
    assert_eq!(report.count(Action::Configured), 1, "{:#?}", report);
    let live = api.get("settings").await.expect("get");
    assert_eq!(
        live.data
            .unwrap_or_default()
            .get("value")
            .map(String::as_str),
        Some("a")
    );
    // And now it is recorded again: a further apply writes nothing.
    let report = pipeline::apply(&client, manifests(&yaml), &o, &NoProgress)
        .await
        .expect("again");
    assert_eq!(report.requests.writes, 0, "{:#?}", report);
}

#[tokio::test]
async fn conflicts_name_the_other_manager_and_force_takes_over() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "push-conflict").await;
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), &ns.name);
    let theirs = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}, "data": {"value": "theirs"}});
    api.patch(
        "shared",
        &kube::api::PatchParams::apply("helm-like"),
        &kube::api::Patch::Apply(&theirs),
    )
    .await
    .expect("seed");
    let yaml = configmap("shared", "ours");
    let mut o = opts("conflict", &ns.name);
    let report = pipeline::apply(&client, manifests(&yaml), &o, &NoProgress)
        .await
        .expect("apply");
    let result = &report.objects[0];
    assert_eq!(result.action, Action::Failed, "{:#?}", report);
    assert_eq!(
        result.conflicts.first().map(|c| c.manager.as_str()),
        Some("helm-like"),
        "{result:?}"
    );
    assert!(
        result
            .message
            .as_deref()
            .unwrap_or("")
            .contains("--force-conflicts")
    );
    o.force_conflicts = true;
    let report = pipeline::apply(&client, manifests(&yaml), &o, &NoProgress)
        .await
        .expect("apply --force-conflicts");
    assert!(report.succeeded(), "{:#?}", report);
    let live = api.get("shared").await.expect("get");
    assert_eq!(
        live.data
            .unwrap_or_default()
            .get("value")
            .map(String::as_str),
        Some("ours")
    );
}

#[tokio::test]
async fn diff_reports_changes_creations_and_prunes_with_secrets_redacted() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "push-diff").await;
    let secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  password: hunter2-old\n---\n";
    let v1 = format!("{}{}{secret}", configmap("a", "1"), configmap("gone", "x"));
    let mut o = opts("diffapp", &ns.name);
    o.prune = true;
    pipeline::apply(&client, manifests(&v1), &o, &NoProgress)
        .await
        .expect("apply v1");
    let unchanged = pipeline::diff(&client, manifests(&v1), &o, &NoProgress)
        .await
        .expect("diff v1");
    assert!(!unchanged.has_changes(), "{:#?}", unchanged);

    let v2 = format!(
        "{}{}{}",
        configmap("a", "2"),
        configmap("new", "n"),
        secret.replace("hunter2-old", "hunter2-new")
    );
    let diff = pipeline::diff(&client, manifests(&v2), &o, &NoProgress)
        .await
        .expect("diff v2");
    assert!(diff.has_changes());
    let action = |name: &str| {
        diff.objects
            .iter()
            .find(|d| d.key.name == name)
            .map(|d| d.action)
    };
    assert_eq!(action("a"), Some(DiffAction::Change));
    assert_eq!(action("new"), Some(DiffAction::Create));
    assert_eq!(action("gone"), Some(DiffAction::Prune));
    assert_eq!(action("creds"), Some(DiffAction::Change));
    let a = diff.objects.iter().find(|d| d.key.name == "a").expect("a");
    assert!(
        a.diff.contains("-  value: '1'")
            || a.diff.contains("-  value: \"1\"")
            || a.diff.contains("-  value: 1"),
        "{}",
        a.diff
    );
    assert!(!a.diff.contains("managedFields"), "{}", a.diff);
    let all = format!("{diff:#?}{}", serde_json::to_string(&diff).expect("json"));
    assert!(
        !all.contains("hunter2"),
        "secret value leaked into the diff: {all}"
    );
    assert!(
        !all.contains("aHVudGVyMi"),
        "base64 secret value leaked into the diff"
    );
    assert!(all.contains("<redacted, changed>"), "{all}");
    // The dry run changed nothing.
    let live = get(
        &client,
        "v1",
        "ConfigMap",
        "configmaps",
        Some(&ns.name),
        "a",
    )
    .await
    .expect("a");
    assert_eq!(live.data["data"]["value"], "1");
    assert!(!configmap_exists(&client, &ns.name, "new").await);
}

#[tokio::test]
async fn prune_deletes_what_left_the_source_but_respects_opt_out() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "push-prune").await;
    let keep = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: keep-me\n  annotations:\n    ferry.dev/prune: disabled\ndata: {v: '1'}\n---\n";
    let v1 = format!(
        "{}{}{keep}",
        configmap("stays", "1"),
        configmap("removed", "1")
    );
    let mut o = opts("prune", &ns.name);
    pipeline::apply(&client, manifests(&v1), &o, &NoProgress)
        .await
        .expect("apply v1");
    let v2 = configmap("stays", "1");

    // Without --prune nothing is deleted; the objects stay in the inventory.
    let report = pipeline::apply(&client, manifests(&v2), &o, &NoProgress)
        .await
        .expect("apply v2");
    assert_eq!(report.count(Action::Kept), 2, "{:#?}", report);
    assert!(configmap_exists(&client, &ns.name, "removed").await);

    o.prune = true;
    let report = pipeline::apply(&client, manifests(&v2), &o, &NoProgress)
        .await
        .expect("apply v2 --prune");
    assert!(report.succeeded(), "{:#?}", report);
    let pruned: Vec<_> = report
        .objects
        .iter()
        .filter(|r| r.action == Action::Pruned)
        .map(|r| r.key.name.as_str())
        .collect();
    assert_eq!(pruned, vec!["removed"]);
    let kept = report
        .objects
        .iter()
        .find(|r| r.key.name == "keep-me")
        .expect("keep-me reported");
    assert_eq!(kept.action, Action::Kept);
    ferry_testsupport::wait_for(
        "ConfigMap removed to be deleted",
        std::time::Duration::from_secs(30),
        || {
            let client = client.clone();
            let ns = ns.name.clone();
            async move { Ok((!configmap_exists(&client, &ns, "removed").await).then_some(())) }
        },
    )
    .await
    .expect("pruned");
    assert!(configmap_exists(&client, &ns.name, "keep-me").await);
    assert!(configmap_exists(&client, &ns.name, "stays").await);
}

#[tokio::test]
async fn delete_app_removes_objects_then_inventory() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "push-delete").await;
    let yaml = format!("{}{}", configmap("one", "1"), configmap("two", "2"));
    pipeline::apply(
        &client,
        manifests(&yaml),
        &opts("gone", &ns.name),
        &NoProgress,
    )
    .await
    .expect("apply");
    // An unrelated ConfigMap in the same namespace is never touched.
    pipeline::apply(
        &client,
        manifests(&configmap("other", "1")),
        &opts("other", &ns.name),
        &NoProgress,
    )
    .await
    .expect("apply other");
    let report = pipeline::delete_app(&client, "gone", Some(&ns.name), false, 4)
        .await
        .expect("delete");
    assert_eq!(report.count(Action::Deleted), 2, "{:#?}", report);
    ferry_testsupport::wait_for(
        "app objects deleted",
        std::time::Duration::from_secs(30),
        || {
            let client = client.clone();
            let ns = ns.name.clone();
            async move {
                let gone = !configmap_exists(&client, &ns, "one").await
                    && !configmap_exists(&client, &ns, "two").await;
                Ok(gone.then_some(()))
            }
        },
    )
    .await
    .expect("deleted");
    assert!(!configmap_exists(&client, &ns.name, "ferry-inventory-gone").await);
    assert!(configmap_exists(&client, &ns.name, "other").await);
    let err = pipeline::status(&client, "gone", Some(&ns.name), 4)
        .await
        .expect_err("no inventory any more");
    assert!(
        err.to_string().contains("no inventory for app gone"),
        "{err}"
    );
    // Callers (`ferry uninstall`, the agent's finalizer) match the variant, not the text.
    assert!(
        matches!(&err, ferry_engine::Error::NoInventory { app, namespace, .. } if app == "gone" && *namespace == ns.name),
        "{err:?}"
    );
}

#[tokio::test]
async fn crds_and_namespaces_are_applied_before_what_needs_them() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "push-order").await;
    let suffix = &ns.name[ns.name.len() - 6..];
    let group = format!("{suffix}.ferry.test");
    let new_ns = format!("{}-extra", ns.name);
    // Deliberately listed in the wrong order.
    let yaml = format!(
        r#"apiVersion: {group}/v1
kind: Widget
metadata:
  name: w1
  namespace: {new_ns}
spec:
  size: 3
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: in-new-ns
  namespace: {new_ns}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.{group}
spec:
  group: {group}
  scope: Namespaced
  names: {{kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
---
apiVersion: v1
kind: Namespace
metadata:
  name: {new_ns}
"#
    );
    let mut o = opts("ordered", &ns.name);
    o.wait = true;
    let report = pipeline::apply(&client, manifests(&yaml), &o, &NoProgress)
        .await
        .expect("apply");
    assert!(report.succeeded(), "{:#?}", report);
    assert_eq!(report.count(Action::Created), 4);
    let widget = get(
        &client,
        &format!("{group}/v1"),
        "Widget",
        "widgets",
        Some(&new_ns),
        "w1",
    )
    .await
    .expect("widget");
    assert_eq!(widget.data["spec"]["size"], 3);
    // Clean up the cluster-scoped objects through ferry itself.
    let deleted = pipeline::delete_app(&client, "ordered", Some(&ns.name), false, 4)
        .await
        .expect("delete");
    assert!(deleted.succeeded(), "{:#?}", deleted);
}

#[tokio::test]
async fn set_image_rewrites_pod_templates_before_apply() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "push-image").await;
    let yaml = deployment("img", "registry.k8s.io/pause:3.9");
    let req = RenderRequest::new(".", "-")
        .with_stdin(yaml.into_bytes())
        .with_set_images(
            set_image::parse_all(&["registry.k8s.io/pause=registry.k8s.io/pause:3.10".into()])
                .expect("parse"),
        );
    let manifests = render(&req).expect("render");
    pipeline::apply(&client, manifests, &opts("img", &ns.name), &NoProgress)
        .await
        .expect("apply");
    let live = get(
        &client,
        "apps/v1",
        "Deployment",
        "deployments",
        Some(&ns.name),
        "img",
    )
    .await
    .expect("deployment");
    assert_eq!(
        live.data["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.k8s.io/pause:3.10"
    );
}
