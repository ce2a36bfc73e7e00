//! Ordering and health through `pipeline::apply` against the real testenv:
//! - sync waves: a wave-1 Job that really runs (on the real node) completes before the wave-2
//!   Deployment is even created, and a failing wave-1 Job holds wave 2 back;
//! - custom CEL health checks decide when a custom resource is Current / InProgress / Failed;
//! - an immutable-field change (a Job's template, a Service's selector... here a Job) fails
//!   with the field and the annotation to add, and with `ferry.dev/force: enabled` the object is
//!   deleted and re-created.

mod push_common;

use std::sync::Arc;
use std::time::Duration;

use ferry_api::health::HealthCheckExpr;
use ferry_engine::health::{CustomHealth, HealthState};
use ferry_engine::pipeline;
use ferry_engine::progress::NoProgress;
use ferry_engine::report::Action;
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use push_common::{manifests, opts};

/// A Job whose pod runs on the real node (kwok would complete it at once, whatever it does):
/// `testbox say` prints and exits with `exit`.
fn real_job(name: &str, wave: i32, exit: i32, extra_annotations: &str) -> String {
    let image = TestEnv::get().var("FERRY_TESTBOX_IMAGE");
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  annotations:
    ferry.dev/wave: "{wave}"
{extra_annotations}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      nodeSelector: {{ferry.dev/real-node: "true"}}
      tolerations: [{{key: ferry.dev/real-node, operator: Exists, effect: NoSchedule}}]
      containers:
        - name: main
          image: {image}
          args: [say, -exit, "{exit}", migrated]
---
"#
    )
}

fn web(wave: i32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations:
    argocd.argoproj.io/sync-wave: "{wave}"
spec:
  replicas: 1
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
        - name: main
          image: example.invalid/web:1
---
"#
    )
}

#[tokio::test]
async fn a_wave_is_healthy_before_the_next_one_is_created() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "waves").await;
    let mut o = opts("waves", &ns.name);
    o.wait = true;
    o.timeout = Duration::from_secs(120);
    let yaml = format!("{}{}", web(2), real_job("migrate", 1, 0, ""));
    let report = pipeline::apply(&client, manifests(&yaml), &o, &NoProgress)
        .await
        .expect("apply");
    assert!(report.succeeded(), "{report:#?}");

    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let job = jobs.get("migrate").await.expect("job");
    let completed = job
        .status
        .as_ref()
        .and_then(|s| s.completion_time.clone())
        .expect("the wave-1 Job completed");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let deployment = deployments.get("web").await.expect("deployment");
    let created = deployment
        .metadata
        .creation_timestamp
        .clone()
        .expect("creationTimestamp");
    let job_created = job
        .metadata
        .creation_timestamp
        .clone()
        .expect("job created");
    assert!(
        completed.0 <= created.0,
        "the wave-2 Deployment was created at {:?}, before the wave-1 Job completed at {:?}",
        created.0,
        completed.0
    );
    assert!(
        job_created.0 < created.0,
        "the pod ran on the real node, so completion took time: job created {:?}, deployment {:?}",
        job_created.0,
        created.0
    );
}

#[tokio::test]
async fn a_failed_wave_holds_the_next_waves_back() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "wavefail").await;
    let mut o = opts("wavefail", &ns.name);
    o.wait = true;
    o.timeout = Duration::from_secs(120);
    let yaml = format!("{}{}", real_job("migrate", 1, 3, ""), web(2));
    let report = pipeline::apply(&client, manifests(&yaml), &o, &NoProgress)
        .await
        .expect("apply");
    assert!(!report.succeeded());
    let job = report
        .objects
        .iter()
        .find(|o| o.key.name == "migrate")
        .expect("job line");
    assert_eq!(
        job.health.as_ref().map(|h| h.state),
        Some(HealthState::Failed),
        "{job:?}"
    );
    let held = report
        .objects
        .iter()
        .find(|o| o.key.kind == "Deployment")
        .expect("deployment line");
    assert_eq!(held.action, Action::Failed);
    let message = held.message.as_deref().unwrap_or_default();
    assert!(
        message.contains("wave 1") && message.contains("migrate"),
        "{message}"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        deployments.get_opt("web").await.expect("get").is_none(),
        "wave 2 must not be created after wave 1 failed"
    );
}

#[tokio::test]
async fn an_invalid_wave_is_refused_before_anything_is_written() {
    let client = TestEnv::get().client().await;
    let ns = TestNamespace::create(&client, "wavebad").await;
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  annotations: {ferry.dev/wave: soon}\n";
    let err = pipeline::apply(
        &client,
        manifests(yaml),
        &opts("wavebad", &ns.name),
        &NoProgress,
    )
    .await
    .expect_err("refused")
    .to_string();
    assert!(
        err.contains("ferry.dev/wave") && err.contains("settings"),
        "{err}"
    );
}

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: databases.health.ferry.dev
spec:
  group: health.ferry.dev
  scope: Namespaced
  names: {plural: databases, singular: database, kind: Database, listKind: DatabaseList}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"#;

#[tokio::test]
async fn a_cel_health_check_decides_a_custom_resource() {
    let client = TestEnv::get().client().await;
    ferry_testsupport::install_crds(&client, &[serde_yaml_value(CRD)], "ferry-test-health").await;
    let ns = TestNamespace::create(&client, "celhealth").await;
    let health = CustomHealth::compile(&[HealthCheckExpr {
        api_version: "health.ferry.dev/v1".into(),
        kind: "Database".into(),
        current: "has(status.phase) && status.phase == 'Running'".into(),
        in_progress: Some("!has(status.phase) || status.phase == 'Provisioning'".into()),
        failed: Some("status.phase == 'Broken'".into()),
    }])
    .expect("compile");
    let db = "apiVersion: health.ferry.dev/v1\nkind: Database\nmetadata: {name: orders}\nspec: {size: 1}\n";
    let mut o = opts("celhealth", &ns.name);
    o.wait = true;
    o.timeout = Duration::from_secs(20);
    o.health_checks = Arc::new(health);

    // The "operator": sets status.phase Provisioning, then Running, a moment after the apply.
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("health.ferry.dev", "v1", "Database"),
        "databases",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &resource);
    let operator = {
        let api = api.clone();
        tokio::spawn(async move {
            wait_for("the Database exists", Duration::from_secs(20), || {
                let api = api.clone();
                async move { Ok(api.get_opt("orders").await?) }
            })
            .await
            .expect("created");
            for phase in ["Provisioning", "Running"] {
                // Deliberate: plays a slow operator moving the resource through its phases, so
                // ferry's CEL health check sees each phase while it waits.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let patch = serde_json::json!({"status": {"phase": phase}});
                api.patch_status("orders", &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .expect("status");
            }
        })
    };
    let started = std::time::Instant::now();
    let report = pipeline::apply(&client, manifests(db), &o, &NoProgress)
        .await
        .expect("apply");
    operator.await.expect("operator");
    assert!(report.succeeded(), "{report:#?}");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the wait lasted until the CEL `current` expression was true ({:?})",
        started.elapsed()
    );

    // Failed by the `failed` expression: the wait ends early with the expression named.
    let patch = serde_json::json!({"status": {"phase": "Broken"}});
    api.patch_status("orders", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("status");
    let changed = db.replace("size: 1", "size: 2");
    let started = std::time::Instant::now();
    let report = pipeline::apply(&client, manifests(&changed), &o, &NoProgress)
        .await
        .expect("apply");
    let line = report
        .objects
        .iter()
        .find(|o| o.key.kind == "Database")
        .expect("line");
    let health = line.health.as_ref().expect("health");
    assert_eq!(health.state, HealthState::Failed, "{health:?}");
    assert!(
        health.message.contains("status.phase == 'Broken'"),
        "{health:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "failed ends the wait"
    );

    // Without the rule the built-in generic rule sees no conditions: Current at once.
    o.health_checks = Arc::default();
    let report = pipeline::apply(&client, manifests(&changed), &o, &NoProgress)
        .await
        .expect("apply");
    assert!(report.succeeded(), "{report:#?}");
}

fn serde_yaml_value(yaml: &str) -> serde_json::Value {
    let manifest = manifests(yaml).remove(0);
    serde_json::to_value(&manifest.object).expect("json")
}

fn kwok_job(name: &str, command: &str, annotations: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  annotations: {{{annotations}}}
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: main
          image: example.invalid/tool:1
          command: [{command}]
"#
    )
}

#[tokio::test]
async fn an_immutable_change_needs_the_force_annotation_and_then_recreates() {
    let client = TestEnv::get().client().await;
    let ns = TestNamespace::create(&client, "force").await;
    let o = opts("force", &ns.name);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);

    let report = pipeline::apply(
        &client,
        manifests(&kwok_job("migrate", "one", "")),
        &o,
        &NoProgress,
    )
    .await
    .expect("first apply");
    assert!(report.succeeded(), "{report:#?}");
    let first_uid = jobs.get("migrate").await.expect("job").metadata.uid;

    // The template of a Job is immutable: refused, with the field and the way out.
    let report = pipeline::apply(
        &client,
        manifests(&kwok_job("migrate", "two", "")),
        &o,
        &NoProgress,
    )
    .await
    .expect("apply");
    let line = report
        .objects
        .iter()
        .find(|o| o.key.name == "migrate")
        .expect("line");
    assert_eq!(line.action, Action::Failed);
    let message = line.message.as_deref().unwrap_or_default();
    assert!(message.contains("spec.template"), "{message}");
    assert!(message.contains("ferry.dev/force: enabled"), "{message}");
    assert!(message.contains("migrate"), "{message}");
    assert_eq!(
        jobs.get("migrate").await.expect("job").metadata.uid,
        first_uid,
        "untouched"
    );

    // With the annotation (Flux's spelling here): deleted, awaited, created again.
    let forced = kwok_job(
        "migrate",
        "two",
        "kustomize.toolkit.fluxcd.io/force: enabled",
    );
    let report = pipeline::apply(&client, manifests(&forced), &o, &NoProgress)
        .await
        .expect("forced apply");
    assert!(report.succeeded(), "{report:#?}");
    let line = report
        .objects
        .iter()
        .find(|o| o.key.name == "migrate")
        .expect("line");
    assert!(
        line.message
            .as_deref()
            .is_some_and(|m| m.contains("re-created")),
        "{line:?}"
    );
    let job = jobs.get("migrate").await.expect("job");
    assert_ne!(job.metadata.uid, first_uid, "a new object");
    let command = job
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].command.clone().unwrap_or_default())
        .unwrap_or_default();
    assert_eq!(command, ["two"]);
}
