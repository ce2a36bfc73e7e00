//! Issue 14 drift control through the real agent: `spec.drift.mode: detect` reports hand edits
//! (status.drift with JSON pointers, a `DriftDetected` Warning Event, the
//! `ferry_release_drift_objects` metric) and changes nothing; `correct` reverts and records
//! `DriftCorrected`; `spec.drift.ignore` leaves a field to another manager (neither reverted
//! nor reported); `ferry.dev/reconcile: disabled` keeps an object out of writes and prune; a
//! malformed ignore pointer stalls the Release naming the field; a Secret's drifted value
//! never reaches status or Events.

mod common;

use std::time::Duration;

use common::*;
use ferry_agent::Agent;
use ferry_api::Release;
use ferry_api::common::{STALLED, find_condition};
use ferry_testsupport::{TestEnv, TestNamespace, wait_until};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use kube::Client;
use kube::api::Api;

const GIT_PASSWORD_VALUE: &str = "s3cret-from-git";
const HAND_PASSWORD_VALUE: &str = "hunter2-by-hand";

fn deployment_yaml(name: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  labels: {{tier: web}}\nspec:\n  replicas: 0\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers: [{{name: app, image: registry.invalid/app:1}}]\n"
    )
}

fn secret_yaml(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\nstringData:\n  password: {GIT_PASSWORD_VALUE}\n"
    )
}

/// One test's world: its namespace, git repository and agent, and Release `app` of the
/// repository's `app/` (GitSource `repo`), applied at `sha`. Bind every field (no `..`): a
/// field left out of a pattern is dropped at once, and the agent's cache with it.
struct Applied {
    env: TestEnv,
    client: Client,
    ns: TestNamespace,
    repo: Repo,
    agent: Agent,
    _cache: tempfile::TempDir,
    sha: String,
}

/// Set up [`Applied`]: the first commit writes `files`, the Release has `extra` spec fields.
async fn applied_release(
    prefix: &str,
    files: &[(&str, Option<&str>)],
    extra: serde_json::Value,
) -> Applied {
    let (env, client, ns) = setup(prefix).await;
    let repo = Repo::create(&env, &ns.name);
    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    let sha = repo.commit(files, "first");
    hourly_release(&env, &client, &ns.name, &repo, "app", extra).await;
    wait_release_applied(&client, &ns.name, "app", &sha, Duration::from_secs(60)).await;
    Applied {
        env,
        client,
        ns,
        repo,
        agent,
        _cache,
        sha,
    }
}

/// `kubectl scale` of Deployment `web`, as a person (or an HPA) would.
fn scale_by_hand(env: &TestEnv, ns: &str, replicas: u32) {
    let replicas = format!("--replicas={replicas}");
    env.kubectl(&["-n", ns, "scale", "deployment/web", &replicas]);
}

/// `kubectl label` of Deployment `web`'s `tier` (ferry's value: `web`) to `hand`.
fn label_by_hand(env: &TestEnv, ns: &str) {
    env.kubectl(&[
        "-n",
        ns,
        "label",
        "deployment/web",
        "tier=hand",
        "--overwrite",
    ]);
}

/// Wait until ferry has put Deployment `web`'s `tier` label back to `web`.
async fn wait_label_reverted(deployments: &Api<Deployment>) {
    wait_until(
        "the label reverted",
        Duration::from_secs(30),
        move || async move {
            Ok((label(deployments, "web", "tier").await.as_deref() == Some("web")).then_some(()))
        },
    )
    .await;
}

/// The ignored field (Deployment `web`'s replicas, scaled to 3) and the disabled object
/// (ConfigMap `keep`, edited to `hand`) as they were left: nothing wrote them back.
async fn assert_left_alone(deployments: &Api<Deployment>, cms: &Api<ConfigMap>) {
    assert_eq!(
        replicas(deployments, "web").await,
        3,
        "an ignored field is not reverted"
    );
    let keep = cms.get("keep").await.expect("keep");
    assert_eq!(
        keep.data
            .unwrap_or_default()
            .get("value")
            .map(String::as_str),
        Some("hand"),
        "an object with reconcile: disabled is not written"
    );
}

/// The agent's `/metrics` line of `metric` for Release `app` of `ns` with `value`.
fn release_metric(metric: &str, ns: &str, value: u32) -> String {
    format!("{metric}{{namespace=\"{ns}\",name=\"app\"}} {value}")
}

/// The agent's `/metrics` text.
async fn metrics(agent: &Agent) -> String {
    http(agent.metrics_addr, "GET", "/metrics", &[], b"")
        .await
        .1
}

async fn replicas(api: &Api<Deployment>, name: &str) -> i32 {
    api.get(name)
        .await
        .expect("deployment")
        .spec
        .and_then(|s| s.replicas)
        .unwrap_or_default()
}

async fn label(api: &Api<Deployment>, name: &str, key: &str) -> Option<String> {
    api.get(name)
        .await
        .expect("deployment")
        .metadata
        .labels
        .unwrap_or_default()
        .get(key)
        .cloned()
}

/// The Events the agent wrote about Release `app` with `reason`: (type, message).
async fn events_with(client: &Client, ns: &str, reason: &str) -> Vec<(String, String)> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| (e.type_.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// Wait until the agent has written an Event with `reason` about Release `app`; returns them
/// all, as [`events_with`].
async fn wait_event(client: &Client, ns: &str, reason: &str) -> Vec<(String, String)> {
    let what = format!("a {reason} Event");
    wait_until(&what, Duration::from_secs(15), move || async move {
        let found = events_with(client, ns, reason).await;
        Ok((!found.is_empty()).then_some(found))
    })
    .await
}

/// Every way a password could show: as written and base64-encoded (Secret data).
fn assert_no_secret_value(what: &str, text: &str) {
    use base64::Engine;
    for value in [GIT_PASSWORD_VALUE, HAND_PASSWORD_VALUE] {
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        assert!(
            !text.contains(value) && !text.contains(&encoded),
            "{what} shows a Secret value: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn detect_mode_reports_hand_edits_with_paths_and_changes_nothing() {
    let Applied {
        env,
        client,
        ns,
        repo,
        agent,
        sha,
        _cache,
    } = applied_release(
        "drift-detect",
        &[
            ("app/deploy.yaml", Some(&deployment_yaml("web"))),
            ("app/secret.yaml", Some(&secret_yaml("db"))),
        ],
        serde_json::json!({"drift": {"mode": "detect"}}),
    )
    .await;

    // Hand edits: a scale (spec), a label (metadata only) and a Secret value.
    scale_by_hand(&env, &ns.name, 2);
    label_by_hand(&env, &ns.name);
    let patch = format!(r#"{{"stringData":{{"password":"{HAND_PASSWORD_VALUE}"}}}}"#);
    env.kubectl(&["-n", &ns.name, "patch", "secret/db", "-p", &patch]);

    let releases: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    let drift = wait_until(
        "status.drift lists the Deployment's and the Secret's drifted fields",
        Duration::from_secs(30),
        || {
            let releases = releases.clone();
            async move {
                let r = releases.get("app").await?;
                let Some(drift) = r.status.and_then(|s| s.drift) else {
                    anyhow::bail!("no status.drift yet");
                };
                let paths_of = |kind: &str| {
                    drift
                        .objects
                        .iter()
                        .find(|o| o.kind == kind)
                        .map(|o| o.paths.clone())
                        .unwrap_or_default()
                };
                let deployment = paths_of("Deployment");
                let complete = deployment.iter().any(|p| p == "/spec/replicas")
                    && deployment.iter().any(|p| p == "/metadata/labels/tier")
                    && paths_of("Secret").iter().any(|p| p == "/data/password");
                if complete {
                    return Ok(Some(drift));
                }
                anyhow::bail!("not complete yet: {drift:?}")
            }
        },
    )
    .await;
    assert_eq!(drift.mode, "detect");
    assert_eq!(drift.count, 2, "{drift:?}");
    assert!(
        drift.revision.as_deref().is_some_and(|r| r.ends_with(&sha)),
        "{drift:?}"
    );
    let web = drift
        .objects
        .iter()
        .find(|o| o.kind == "Deployment")
        .expect("Deployment listed");
    assert_eq!(
        (
            web.api_version.as_str(),
            web.name.as_str(),
            web.namespace.as_deref()
        ),
        ("apps/v1", "web", Some(ns.name.as_str()))
    );
    assert!(!web.missing);

    // The Warning Event names the objects and fields.
    let detected = wait_event(&client, &ns.name, "DriftDetected").await;
    let (type_, message) = &detected[0];
    assert_eq!(type_, "Warning");
    assert!(
        message.contains(&format!("Deployment {}/web", ns.name))
            && message.contains("/spec/replicas"),
        "{message}"
    );

    // The metric: two objects left drifted.
    let metric = release_metric("ferry_release_drift_objects", &ns.name, 2);
    let (status, metrics_text) = http(agent.metrics_addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200);
    assert!(
        metrics_text.contains(&metric),
        "{metric} in:\n{metrics_text}"
    );

    // Nothing was changed: the edits are still there. Deliberate wait: this asserts that
    // something does NOT happen (a revert takes well under a second after a signal).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    assert_eq!(replicas(&deployments, "web").await, 2);
    assert_eq!(
        label(&deployments, "web", "tier").await.as_deref(),
        Some("hand")
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let data = secrets
        .get("db")
        .await
        .expect("secret")
        .data
        .unwrap_or_default();
    assert_eq!(
        data.get("password").map(|v| v.0.as_slice()),
        Some(HAND_PASSWORD_VALUE.as_bytes())
    );

    // Only paths, never values: the whole status and every Event of the namespace.
    let status = serde_json::to_string(&releases.get("app").await.expect("release").status)
        .expect("status json");
    assert_no_secret_value("Release status", &status);
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    for event in events
        .list(&Default::default())
        .await
        .expect("events")
        .items
    {
        assert_no_secret_value("an Event", &event.message.unwrap_or_default());
    }

    // A new revision is still applied in detect mode: it writes every field ferry owns (the
    // hand edits go) and the finding is cleared.
    let second = repo.commit(
        &[(
            "app/deploy.yaml",
            Some(&deployment_yaml("web").replace("tier: web", "tier: web2")),
        )],
        "second",
    );
    request_sync(&client, &ns.name, "repo", "second").await;
    let applied =
        wait_release_applied(&client, &ns.name, "app", &second, Duration::from_secs(60)).await;
    assert_eq!(applied.status.and_then(|s| s.drift), None);
    assert_eq!(replicas(&deployments, "web").await, 0);
    assert_eq!(
        label(&deployments, "web", "tier").await.as_deref(),
        Some("web2")
    );
    let metrics_text = metrics(&agent).await;
    let cleared = release_metric("ferry_release_drift_objects", &ns.name, 0);
    assert!(
        metrics_text.contains(&cleared),
        "{cleared} in:\n{metrics_text}"
    );
    agent.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn correct_mode_reverts_hand_edits_and_records_drift_corrected() {
    let Applied {
        env,
        client,
        ns,
        agent,
        repo: _repo,
        _cache,
        sha: _,
    } = applied_release(
        "drift-correct",
        &[("app/deploy.yaml", Some(&deployment_yaml("web")))],
        serde_json::json!({"drift": {"mode": "correct"}}),
    )
    .await;
    label_by_hand(&env, &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    wait_label_reverted(&deployments).await;
    let releases: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    let drift = wait_until(
        "status.drift says what was corrected",
        Duration::from_secs(15),
        || {
            let releases = releases.clone();
            async move {
                let drift = releases.get("app").await?.status.and_then(|s| s.drift);
                Ok(drift.filter(|d| d.mode == "correct"))
            }
        },
    )
    .await;
    assert_eq!(drift.count, 1, "{drift:?}");
    assert_eq!(drift.objects[0].kind, "Deployment");
    assert_eq!(drift.objects[0].paths, ["/metadata/labels/tier"]);
    let corrected = wait_event(&client, &ns.name, "DriftCorrected").await;
    assert_eq!(corrected[0].0, "Normal");
    assert!(
        corrected[0].1.contains("/metadata/labels/tier"),
        "{}",
        corrected[0].1
    );
    assert!(
        events_with(&client, &ns.name, "DriftDetected")
            .await
            .is_empty()
    );
    // `kubectl scale` writes through the scale subresource: drift as well, reverted.
    scale_by_hand(&env, &ns.name, 2);
    wait_until("the scale reverted", Duration::from_secs(30), || {
        let deployments = deployments.clone();
        async move { Ok((replicas(&deployments, "web").await == 0).then_some(())) }
    })
    .await;
    let metrics_text = metrics(&agent).await;
    let counted = release_metric("ferry_release_drift_corrected_objects_total", &ns.name, 2);
    assert!(
        metrics_text.contains(&counted),
        "{counted} in:\n{metrics_text}"
    );
    let left = release_metric("ferry_release_drift_objects", &ns.name, 0);
    assert!(metrics_text.contains(&left), "{left} in:\n{metrics_text}");
    agent.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ignored_fields_and_disabled_objects_are_left_to_others() {
    let Applied {
        env,
        client,
        ns,
        repo,
        agent,
        _cache,
        sha: _,
    } = applied_release(
        "drift-ignore",
        &[
            ("app/deploy.yaml", Some(&deployment_yaml("web"))),
            ("app/keep.yaml", Some(&configmap_yaml("keep", "desired"))),
            ("app/gone.yaml", Some(&configmap_yaml("gone", "desired"))),
        ],
        serde_json::json!({"drift": {"ignore": [
            {"target": {"group": "apps", "kind": "Deployment"}, "paths": ["/spec/replicas"]}
        ]}}),
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let value = |cm: ConfigMap| cm.data.unwrap_or_default().get("value").cloned();
    // An HPA-style scale, a ConfigMap opted out by hand and then edited.
    scale_by_hand(&env, &ns.name, 3);
    env.kubectl(&[
        "-n",
        &ns.name,
        "annotate",
        "configmap/keep",
        "ferry.dev/reconcile=disabled",
    ]);
    env.kubectl(&[
        "-n",
        &ns.name,
        "patch",
        "configmap/keep",
        "-p",
        r#"{"data":{"value":"hand"}}"#,
    ]);
    // Deliberate wait: an absence check (neither edit is reverted nor reported; a revert takes
    // well under a second after the signal), and it keeps the agent's handling of these
    // signals apart from the next edit's.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_left_alone(&deployments, &cms).await;
    let releases: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    let status = releases
        .get("app")
        .await
        .expect("release")
        .status
        .expect("status");
    assert_eq!(
        status.drift, None,
        "ignored field and disabled object are not drift"
    );
    // Then a drift ferry does correct, reported alone.
    label_by_hand(&env, &ns.name);
    wait_label_reverted(&deployments).await;
    assert_left_alone(&deployments, &cms).await;
    let drift = wait_until(
        "the correction in status.drift",
        Duration::from_secs(15),
        || {
            let releases = releases.clone();
            async move { Ok(releases.get("app").await?.status.and_then(|s| s.drift)) }
        },
    )
    .await;
    assert_eq!(drift.count, 1, "only the Deployment's label: {drift:?}");
    assert_eq!(
        drift.objects[0].paths,
        ["/metadata/labels/tier"],
        "{drift:?}"
    );
    for (_, message) in events_with(&client, &ns.name, "DriftCorrected").await {
        assert!(
            !message.contains("/spec/replicas") && !message.contains("keep"),
            "ignored field or disabled object reported: {message}"
        );
    }

    // Both ConfigMaps leave git: `gone` is pruned, `keep` (disabled) is not, and stays in the
    // inventory.
    let second = repo.commit(
        &[("app/keep.yaml", None), ("app/gone.yaml", None)],
        "drop the ConfigMaps",
    );
    // The GitSource polls hourly: ask for a sync as `ferry sync` does.
    let now = format!("{:?}", std::time::SystemTime::now());
    request_sync(&client, &ns.name, "repo", &now).await;
    let applied =
        wait_release_applied(&client, &ns.name, "app", &second, Duration::from_secs(60)).await;
    assert!(
        cms.get_opt("gone").await.expect("read gone").is_none(),
        "gone was pruned"
    );
    assert_eq!(
        cms.get_opt("keep")
            .await
            .expect("read keep")
            .and_then(value)
            .as_deref(),
        Some("hand"),
        "a disabled object is not pruned"
    );
    let inventory = applied.status.expect("status").inventory;
    assert!(
        inventory
            .iter()
            .any(|e| e.kind == "ConfigMap" && e.name == "keep"),
        "kept in the inventory: {inventory:?}"
    );
    assert_eq!(replicas(&deployments, "web").await, 3);
    agent.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_ignore_rules_stall_the_release_naming_the_field() {
    let (env, client, ns) = setup("drift-invalid").await;
    let repo = Repo::create(&env, &ns.name);
    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    repo.commit(
        &[("app/a.yaml", Some(&configmap_yaml("a", "desired")))],
        "first",
    );
    hourly_source(&env, &client, &ns.name, &repo).await;
    let cases = [
        (
            "no-slash",
            serde_json::json!(["/spec/template", "spec/replicas"]),
            "spec.drift.ignore[0].paths[1]",
        ),
        (
            "bad-escape",
            serde_json::json!(["/metadata/labels/a~2b"]),
            "spec.drift.ignore[0].paths[0]",
        ),
        (
            "identity",
            serde_json::json!(["/metadata/name"]),
            "spec.drift.ignore[0].paths[0]",
        ),
        (
            "empty",
            serde_json::json!([]),
            "spec.drift.ignore[0].paths is empty",
        ),
    ];
    for (name, paths, _) in &cases {
        let r = release(
            name,
            "repo",
            "app",
            serde_json::json!({"drift": {"ignore": [{"paths": paths}]}}),
        );
        create::<Release>(&client, &ns.name, r).await;
    }
    for (name, _, field) in &cases {
        let stalled = wait_release_reason(
            &client,
            &ns.name,
            name,
            "InvalidSpec",
            Duration::from_secs(30),
        )
        .await;
        let status = stalled.status.expect("status");
        let (ready, _, message) = ready_state(&status.conditions).expect("Ready");
        assert_eq!(ready, "False");
        assert!(message.contains(field), "{name}: {message}");
        let condition = find_condition(&status.conditions, STALLED).expect("Stalled condition");
        assert_eq!(condition.status, "True", "{name}");
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        cms.get_opt("a").await.expect("read").is_none(),
        "nothing is applied by a Release with an invalid spec"
    );
    agent.stop().await.expect("agent stops");
}
