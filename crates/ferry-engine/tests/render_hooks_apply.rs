//! Helm hooks through the whole engine against the real testenv: a chart rendered with the real
//! `helm` by `render::render`, applied by `pipeline::apply`. Pre-install hooks run (and
//! complete) before the rest, post-install hooks after, `hook-succeeded` removes the hook, and a
//! pre-install hook that never completes stops the apply before anything else is written.
//! Install hooks run only on the first apply, upgrade hooks only on later ones (Helm's rule).

mod render_support;

use std::time::Duration;

use ferry_engine::pipeline::{self, ApplyOptions};
use ferry_engine::progress::NoProgress;
use ferry_engine::render::render;
use ferry_engine::report::Action;
use ferry_engine::report::HookTiming;
use ferry_testsupport::{TestNamespace, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use render_support::Tree;

fn job(name: &str, annotations: &str, suspend: bool) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  annotations:
{annotations}
spec:
  backoffLimit: 0
  suspend: {suspend}
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: main
          image: busybox:1.36
          command: ["true"]
"#
    )
}

/// A chart at `app/` with a pre-install Job (weight -5), a ConfigMap, a Deployment and a
/// post-install Job deleted on success.
fn write_chart(t: &Tree, pre_suspended: bool) {
    t.write(
        "app/Chart.yaml",
        "apiVersion: v2\nname: hooked\nversion: 0.1.0\n",
    );
    t.write(
        "app/templates/pre.yaml",
        &job(
            "migrate",
            "    helm.sh/hook: pre-install,pre-upgrade\n    helm.sh/hook-weight: \"-5\"",
            pre_suspended,
        ),
    );
    t.write(
        "app/templates/post.yaml",
        &job(
            "notify",
            "    helm.sh/hook: post-install,post-upgrade\n    helm.sh/hook-delete-policy: hook-succeeded",
            false,
        ),
    );
    t.write(
        "app/templates/configmap.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: \"{{ .Values.mode }}\"}\n",
    );
    t.write("app/values.yaml", "mode: one\n");
    t.write(
        "app/templates/deployment.yaml",
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: nginx:1.27
"#,
    );
}

fn options(ns: &str, timeout: Duration) -> ApplyOptions {
    ApplyOptions {
        app: "hooked".into(),
        namespace: Some(ns.to_string()),
        source: "test".into(),
        wait: true,
        timeout,
        ..Default::default()
    }
}

#[tokio::test]
async fn pre_hook_completes_before_main_and_post_hook_runs_after_and_is_deleted() {
    let t = Tree::new();
    let client = t.env.client().await;
    let ns = TestNamespace::create(&client, "hooks").await;
    write_chart(&t, false);
    let req = t
        .request("app")
        .with_default_namespace(Some(ns.name.clone()));
    let manifests = render(&req).expect("render chart");
    let report = pipeline::apply(
        &client,
        manifests,
        &options(&ns.name, Duration::from_secs(90)),
        &NoProgress,
    )
    .await
    .expect("apply");
    assert!(
        report.objects.iter().all(|o| o.action != Action::Failed),
        "{:#?}",
        report.objects
    );

    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let migrate = jobs.get("migrate").await.expect("pre-install Job is kept");
    let completed = migrate
        .status
        .as_ref()
        .and_then(|s| s.completion_time.clone())
        .expect("pre-install Job completed")
        .0;
    let web = deployments.get("web").await.expect("Deployment");
    let web_created = web
        .metadata
        .creation_timestamp
        .clone()
        .expect("creationTimestamp")
        .0;
    // Timestamps have second precision: "not before" is what can be asserted.
    assert!(
        completed <= web_created,
        "pre hook completed at {completed}, Deployment created at {web_created}"
    );

    // The post hook ran (reported as created, healthy) and hook-succeeded deleted it.
    let notify = report
        .objects
        .iter()
        .find(|o| o.key.name == "notify")
        .expect("post hook in the report");
    assert_eq!(notify.action, Action::Created);
    assert_eq!(
        notify.health.as_ref().map(|h| h.state),
        Some(ferry_engine::health::HealthState::Current)
    );
    let pos = |name: &str| {
        report
            .objects
            .iter()
            .position(|o| o.key.name == name)
            .expect("in report")
    };
    assert!(pos("web") < pos("notify"), "post hook reported after main");
    wait_for("post hook deleted", Duration::from_secs(30), || {
        let jobs = jobs.clone();
        async move { Ok(jobs.get_opt("notify").await?.is_none().then_some(())) }
    })
    .await
    .expect("hook-succeeded deletes the post hook");

    // Nothing changed: nothing runs, nothing is written.
    let manifests = render(&req).expect("render chart");
    let again = pipeline::apply(
        &client,
        manifests,
        &options(&ns.name, Duration::from_secs(90)),
        &NoProgress,
    )
    .await
    .expect("re-apply");
    assert_eq!(again.requests.writes, 0, "{:#?}", again.objects);
    assert!(jobs.get_opt("notify").await.expect("get").is_none());

    // A change elsewhere re-runs the hooks: the pre hook is re-created (before-hook-creation).
    t.write("app/values.yaml", "mode: two\n");
    // `diff` says so: the hooks are marked, and shown although their own diff is empty.
    let diff = pipeline::diff(
        &client,
        render(&req).expect("render chart"),
        &options(&ns.name, Duration::from_secs(90)),
        &NoProgress,
    )
    .await
    .expect("diff");
    let hook_of = |name: &str| {
        diff.objects
            .iter()
            .find(|o| o.key.name == name)
            .unwrap_or_else(|| panic!("{name} in the diff: {:#?}", diff.objects))
            .hook
    };
    assert_eq!(hook_of("migrate"), Some(HookTiming::PreDeploy));
    assert_eq!(hook_of("notify"), Some(HookTiming::PostDeploy));
    assert_eq!(hook_of("settings"), None);
    // The report carries the data; how a hook is shown to a user is the CLI's (ferry-cli
    // src/report.rs and its tests).
    let migrate_diff = diff
        .objects
        .iter()
        .find(|o| o.key.name == "migrate")
        .expect("migrate in the diff");
    assert_eq!(migrate_diff.key.kind, "Job");
    assert!(
        diff.objects.iter().any(|o| o.key.name == "settings"),
        "{:#?}",
        diff.objects
    );
    let manifests = render(&req).expect("render chart");
    pipeline::apply(
        &client,
        manifests,
        &options(&ns.name, Duration::from_secs(90)),
        &NoProgress,
    )
    .await
    .expect("upgrade");
    let rerun = jobs.get("migrate").await.expect("pre hook re-created");
    assert_ne!(rerun.metadata.uid, migrate.metadata.uid);
}

#[tokio::test]
async fn pre_hook_that_never_completes_stops_the_apply() {
    let t = Tree::new();
    let client = t.env.client().await;
    let ns = TestNamespace::create(&client, "hookfail").await;
    // kwok has no stage that fails a pod; a suspended Job never completes.
    write_chart(&t, true);
    let req = t
        .request("app")
        .with_default_namespace(Some(ns.name.clone()));
    let manifests = render(&req).expect("render chart");
    let err = pipeline::apply(
        &client,
        manifests,
        &options(&ns.name, Duration::from_secs(3)),
        &NoProgress,
    )
    .await
    .expect_err("a hook that never completes fails the apply");
    let text = err.to_string();
    assert!(text.contains("migrate"), "{text}");
    assert!(text.contains("pre-deploy hook failed"), "{text}");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(deployments.get_opt("web").await.expect("get").is_none());
    assert!(configmaps.get_opt("settings").await.expect("get").is_none());
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    assert!(jobs.get_opt("notify").await.expect("get").is_none());
}

/// Helm runs `pre-install`/`post-install` hooks only when the release is first installed and
/// `pre-upgrade`/`post-upgrade` hooks only on later upgrades. A chart with one of each: the
/// install runs the install hooks only; a re-apply with nothing changed runs nothing; a change
/// runs the upgrade hooks only, and the install hook stays as it was (not re-created).
#[tokio::test]
async fn install_hooks_run_on_the_first_apply_and_upgrade_hooks_on_later_ones() {
    let t = Tree::new();
    let client = t.env.client().await;
    let ns = TestNamespace::create(&client, "hookevents").await;
    t.write(
        "app/Chart.yaml",
        "apiVersion: v2\nname: events\nversion: 0.1.0\n",
    );
    t.write(
        "app/templates/hooks.yaml",
        &[
            job("init", "    helm.sh/hook: pre-install", false),
            job("migrate", "    helm.sh/hook: pre-upgrade", false),
            job(
                "welcome",
                "    helm.sh/hook: post-install\n    helm.sh/hook-delete-policy: hook-succeeded",
                false,
            ),
            job("announce", "    helm.sh/hook: post-upgrade", false),
        ]
        .join("---\n"),
    );
    t.write(
        "app/templates/configmap.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: \"{{ .Values.mode }}\"}\n",
    );
    t.write("app/values.yaml", "mode: one\n");
    let req = t
        .request("app")
        .with_default_namespace(Some(ns.name.clone()));
    let apply = |manifests| {
        let client = client.clone();
        let opts = ApplyOptions {
            prune: true,
            ..options(&ns.name, Duration::from_secs(90))
        };
        async move { pipeline::apply(&client, manifests, &opts, &NoProgress).await }
    };
    let reported = |report: &ferry_engine::report::ApplyReport| -> Vec<String> {
        let mut names: Vec<String> = report
            .objects
            .iter()
            .filter(|o| o.key.kind == "Job")
            .map(|o| o.key.name.clone())
            .collect();
        names.sort();
        names
    };

    // First install: the install hooks run, the upgrade hooks do not.
    let report = apply(render(&req).expect("render")).await.expect("install");
    assert!(
        report.objects.iter().all(|o| o.action != Action::Failed),
        "{:#?}",
        report.objects
    );
    assert_eq!(reported(&report), ["init", "welcome"]);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let init = jobs.get("init").await.expect("pre-install hook ran");
    assert!(jobs.get_opt("migrate").await.expect("get").is_none());
    assert!(jobs.get_opt("announce").await.expect("get").is_none());

    // Nothing changed: no hook runs (not even the upgrade hooks), nothing is written.
    let again = apply(render(&req).expect("render"))
        .await
        .expect("re-apply");
    assert_eq!(again.requests.writes, 0, "{:#?}", again.objects);
    assert!(jobs.get_opt("migrate").await.expect("get").is_none());

    // An upgrade: the upgrade hooks run, the install hooks do not.
    t.write("app/values.yaml", "mode: two\n");
    let upgrade = apply(render(&req).expect("render")).await.expect("upgrade");
    assert!(
        upgrade.objects.iter().all(|o| o.action != Action::Failed),
        "{:#?}",
        upgrade.objects
    );
    assert_eq!(reported(&upgrade), ["announce", "migrate"]);
    jobs.get("migrate").await.expect("pre-upgrade hook ran");
    jobs.get("announce").await.expect("post-upgrade hook ran");
    let init_after = jobs.get("init").await.expect("install hook left in place");
    assert_eq!(
        init_after.metadata.uid, init.metadata.uid,
        "the pre-install hook was not re-created on the upgrade"
    );
    assert!(
        jobs.get_opt("welcome").await.expect("get").is_none(),
        "the post-install hook did not run again"
    );

    // The install hook is still the app's: it is pruned once it leaves the chart.
    t.write(
        "app/templates/hooks.yaml",
        &job("migrate", "    helm.sh/hook: pre-upgrade", false),
    );
    let pruned = apply(render(&req).expect("render")).await.expect("prune");
    let init_line = pruned
        .objects
        .iter()
        .find(|o| o.key.name == "init")
        .unwrap_or_else(|| panic!("init pruned: {:#?}", pruned.objects));
    assert_eq!(init_line.action, Action::Pruned);
}
