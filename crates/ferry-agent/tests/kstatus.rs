//! kstatus conditions on Releases, as kstatus readers (Flux, Argo CD, `kubectl wait`) judge
//! them: a revision that does not render is Stalled (only a change helps), a Release whose
//! target namespace does not exist yet is Reconciling (retried) and becomes Ready once it
//! does, an invalid `healthCheckExprs` is Stalled, and a CEL health check in the spec is used
//! by `wait`. observedGeneration is set throughout; Ready is the last condition. The other
//! kinds too: a GitSource and an OCISource whose server is unreachable are Reconciling (retried)
//! with Ready=False, an invalid spec of each is Stalled, an Alert with an unknown eventSources
//! kind is Stalled as soon as it is created, and a Provider with a non-http address is Stalled
//! at its first event.

mod common;

use std::time::Duration;

use common::*;
use ferry_api::common::{READY, RECONCILING, STALLED, find_condition};
use ferry_api::kstatus::{Reading, read};
use ferry_api::{Alert, GitSource, OCISource, Provider, Release};
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};

fn condition_status(release: &Release, type_: &str) -> Option<(String, String)> {
    let status = release.status.clone().unwrap_or_default();
    find_condition(&status.conditions, type_).map(|c| (c.status.clone(), c.reason.clone()))
}

async fn wait_reading(client: &kube::Client, ns: &str, name: &str, want: Reading) -> Release {
    let api: Api<Release> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("Release {ns}/{name} reads {want:?}"),
        Duration::from_secs(60),
        || {
            let api = api.clone();
            async move {
                let r = api.get(name).await?;
                let status = r.status.clone().unwrap_or_default();
                let current = status.observed_generation == r.metadata.generation;
                let reading = read(&status.conditions);
                if current && reading == want && !status.conditions.is_empty() {
                    return Ok(Some(r));
                }
                anyhow::bail!("not yet: {reading:?} {:?}", status.conditions)
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_for_bad_input_reconciling_while_retrying_ready_when_done() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "kstatus").await;
    // The target namespace of `late` does not exist yet; it gets a random name of its own.
    let target = ferry_testsupport::unique_name("kstatus-late");
    let repo = Repo::create(&env, &ns.name);
    let head = repo.commit(
        &[
            (
                "broken/bad.yaml",
                Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x\n"),
            ),
            ("good/cm.yaml", Some(&configmap_yaml("settings", "on"))),
        ],
        "fixture",
    );
    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1m"),
    )
    .await;

    // A revision that does not render: Stalled, not Reconciling.
    create::<Release>(
        &client,
        &ns.name,
        release("broken", "repo", "broken", serde_json::json!({})),
    )
    .await;
    let broken = wait_reading(&client, &ns.name, "broken", Reading::Failed).await;
    assert_eq!(
        condition_status(&broken, STALLED),
        Some(("True".into(), "RenderFailed".into()))
    );
    assert_eq!(condition_status(&broken, RECONCILING), None);
    assert_eq!(
        condition_status(&broken, READY),
        Some(("False".into(), "RenderFailed".into()))
    );
    let conditions = broken.status.clone().unwrap_or_default().conditions;
    assert_eq!(conditions.last().map(|c| c.type_.as_str()), Some(READY));
    assert!(
        conditions
            .iter()
            .all(|c| c.observed_generation == broken.metadata.generation)
    );

    // An invalid health check expression is the spec's fault: Stalled, naming it.
    create::<Release>(
        &client,
        &ns.name,
        release(
            "badcel",
            "repo",
            "good",
            serde_json::json!({"healthCheckExprs": [
                {"apiVersion": "v1", "kind": "ConfigMap", "current": "data.value == "}
            ]}),
        ),
    )
    .await;
    let badcel = wait_reading(&client, &ns.name, "badcel", Reading::Failed).await;
    let ready = find_condition(&badcel.status.clone().unwrap_or_default().conditions, READY)
        .cloned()
        .expect("Ready");
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(
        ready.message.contains("healthCheckExprs[0]") && ready.message.contains("data.value == "),
        "{}",
        ready.message
    );

    // A target that is not there yet: retried, Reconciling=True (kstatus: InProgress, not
    // Current), then Ready once it exists. `wait` with a CEL rule for ConfigMaps.
    create::<Release>(
        &client,
        &ns.name,
        release(
            "late",
            "repo",
            "good",
            serde_json::json!({
                "targetNamespace": target,
                "wait": true,
                "healthCheckExprs": [{"apiVersion": "v1", "kind": "ConfigMap",
                    "current": "has(data.value) && data.value == 'on'",
                    "failed": "has(data.value) && data.value == 'broken'"}],
            }),
        ),
    )
    .await;
    let late = wait_reading(&client, &ns.name, "late", Reading::InProgress).await;
    let (status, reason) = condition_status(&late, RECONCILING).expect("Reconciling");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "ProgressingWithRetry")
    );
    assert_eq!(condition_status(&late, STALLED), None);
    assert_eq!(
        condition_status(&late, READY).map(|r| r.0),
        Some("False".into())
    );

    // The target appears, and the Release's identity may write there: Ready, nothing else.
    let target_ns = create_namespace(&client, &target).await;
    grant_admin_to(&client, &target_ns.name, &ns.name, "default").await;
    let done =
        wait_release_applied(&client, &ns.name, "late", &head, Duration::from_secs(90)).await;
    assert_eq!(
        read(&done.status.clone().unwrap_or_default().conditions),
        Reading::Current
    );
    assert_eq!(condition_status(&done, RECONCILING), None);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &target_ns.name);
    assert!(cms.get_opt("settings").await.expect("get").is_some());

    // A new revision: announced as Reconciling (Ready=Unknown) before it is applied, Ready after.
    let releases: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    let next = repo.commit(
        &[("good/cm.yaml", Some(&configmap_yaml("settings", "broken")))],
        "break health",
    );
    let bump =
        serde_json::json!({"metadata": {"annotations": {"ferry.dev/reconcile-requested-at": "1"}}});
    let sources: Api<GitSource> = Api::namespaced(client.clone(), &ns.name);
    sources
        .patch("repo", &PatchParams::default(), &Patch::Merge(&bump))
        .await
        .expect("sync source");
    // The CEL `failed` rule now matches: a health failure is retried (Reconciling), not Stalled.
    let failing = wait_for(
        "late fails its CEL health check",
        Duration::from_secs(90),
        || {
            let releases = releases.clone();
            let next = next.clone();
            async move {
                let r = releases.get("late").await?;
                let status = r.status.clone().unwrap_or_default();
                let attempted = status
                    .last_attempted_revision
                    .as_deref()
                    .is_some_and(|rev| rev.ends_with(&next));
                let ready = find_condition(&status.conditions, READY).cloned();
                if attempted && ready.as_ref().is_some_and(|c| c.status == "False") {
                    return Ok(Some(r));
                }
                anyhow::bail!("not yet: {:?}", status.conditions)
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let ready = find_condition(
        &failing.status.clone().unwrap_or_default().conditions,
        READY,
    )
    .cloned()
    .expect("Ready");
    assert!(
        ready.message.contains("data.value == 'broken'"),
        "{}",
        ready.message
    );
    assert_eq!(
        read(&failing.status.clone().unwrap_or_default().conditions),
        Reading::InProgress
    );
    drop(agent);
}

/// The conditions of `kind/name` (any ferry kind) once `check` holds on them and they describe
/// the current generation.
async fn wait_conditions<K, F>(
    client: &kube::Client,
    ns: &str,
    name: &str,
    what: &str,
    check: F,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    F: Fn(&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> bool,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let check = &check;
    let kind = K::kind(&()).to_string();
    wait_for(
        &format!("{kind} {ns}/{name}: {what}"),
        Duration::from_secs(60),
        || {
            let api = api.clone();
            async move {
                let obj = api.get(name).await?;
                let generation = obj.meta().generation;
                let value = serde_json::to_value(&obj)?;
                let conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> =
                    serde_json::from_value(value["status"]["conditions"].clone())
                        .unwrap_or_default();
                let observed = value["status"]["observedGeneration"].as_i64();
                if observed == generation && check(&conditions) {
                    return Ok(Some(conditions));
                }
                anyhow::bail!("status: {}", value["status"])
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

fn has(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
    status: &str,
    reason: &str,
) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == status && c.reason == reason)
}

/// Retrying (Reconciling=True, Ready=False, no Stalled, Ready last): a retryable failure.
fn retrying(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    reason: &str,
) -> bool {
    has(conditions, RECONCILING, "True", "ProgressingWithRetry")
        && has(conditions, READY, "False", reason)
        && find_condition(conditions, STALLED).is_none()
        && conditions.last().is_some_and(|c| c.type_ == READY)
}

/// Stalled (Stalled=True, Ready=False, no Reconciling, Ready last): only a change helps.
fn stalled(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    reason: &str,
) -> bool {
    has(conditions, STALLED, "True", reason)
        && has(conditions, READY, "False", reason)
        && find_condition(conditions, RECONCILING).is_none()
        && conditions.last().is_some_and(|c| c.type_ == READY)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sources_alerts_and_providers_follow_kstatus() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "kstatus-sources").await;
    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    // A Provider that may not be used, an Alert sending it the failing GitSource's events, and
    // an Alert naming Flux's kind instead of ferry's. Created first: the GitSource's failure is
    // news once.
    create::<Provider>(
        &client,
        &ns.name,
        serde_json::json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Provider",
            "metadata": {"name": "file"}, "spec": {"type": "slack", "address": "file:///etc/passwd"}}),
    )
    .await;
    create::<Alert>(
        &client,
        &ns.name,
        serde_json::json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Alert",
            "metadata": {"name": "to-file"},
            "spec": {"providerRef": {"name": "file"},
                     "eventSources": [{"kind": "GitSource", "name": "down"}]}}),
    )
    .await;

    create::<Alert>(
        &client,
        &ns.name,
        serde_json::json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Alert",
            "metadata": {"name": "flux-kind"},
            "spec": {"providerRef": {"name": "file"},
                     "eventSources": [{"kind": "GitRepository", "name": "*"}]}}),
    )
    .await;
    // The Alert is refused when the watch sees it, before any event, naming ferry's kind (and
    // the watch has seen `to-file` too).
    let alert = wait_conditions::<Alert, _>(
        &client,
        &ns.name,
        "flux-kind",
        "Stalled=True (InvalidEventSource)",
        |c| stalled(c, "InvalidEventSource"),
    )
    .await;
    let message = &find_condition(&alert, READY).expect("Ready").message;
    assert!(
        message.contains("spec.eventSources[0]") && message.contains("GitSource"),
        "{message}"
    );
    // Nothing listens on port 1 of the loopback: every fetch is refused, and retried.
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("down", "http://127.0.0.1:1/nothing.git", None, "1m"),
    )
    .await;
    let mut bad = git_source("badspec", "http://127.0.0.1:1/nothing.git", None, "1m");
    bad["spec"]["timeout"] = serde_json::json!("forever");
    create::<GitSource>(&client, &ns.name, bad).await;
    let oci = |name: &str, insecure: bool| {
        serde_json::json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "OCISource",
            "metadata": {"name": name},
            "spec": {"url": "oci://127.0.0.1:1/app", "ref": {"tag": "v1"}, "interval": "1m",
                     "timeout": "10s", "insecure": insecure}})
    };
    create::<OCISource>(&client, &ns.name, oci("down", true)).await;
    // Plain HTTP to a loopback registry without `insecure: true`: the spec's fault.
    create::<OCISource>(&client, &ns.name, oci("badspec", false)).await;
    let git_down = wait_conditions::<GitSource, _>(
        &client,
        &ns.name,
        "down",
        "Reconciling=True, Ready=False (FetchFailed)",
        |c| retrying(c, "FetchFailed"),
    )
    .await;
    assert_eq!(read(&git_down), Reading::InProgress);
    let ready = find_condition(&git_down, READY).expect("Ready");
    assert!(ready.message.contains("127.0.0.1:1"), "{}", ready.message);
    let git_bad = wait_conditions::<GitSource, _>(
        &client,
        &ns.name,
        "badspec",
        "Stalled=True (InvalidSpec)",
        |c| stalled(c, "InvalidSpec"),
    )
    .await;
    assert_eq!(read(&git_bad), Reading::Failed);
    assert!(
        find_condition(&git_bad, READY).is_some_and(|c| c.message.contains("spec.timeout")),
        "{git_bad:?}"
    );

    // OCISource: before, a retried pull failure had only Ready=False (kstatus: Current).
    let oci_down = wait_conditions::<OCISource, _>(
        &client,
        &ns.name,
        "down",
        "Reconciling=True, Ready=False (FetchFailed)",
        |c| retrying(c, "FetchFailed"),
    )
    .await;
    assert_eq!(read(&oci_down), Reading::InProgress);
    let oci_bad = wait_conditions::<OCISource, _>(
        &client,
        &ns.name,
        "badspec",
        "Stalled=True (InvalidSpec)",
        |c| stalled(c, "InvalidSpec"),
    )
    .await;
    assert!(
        find_condition(&oci_bad, READY).is_some_and(|c| c.message.contains("spec.insecure")),
        "{oci_bad:?}"
    );

    // The failing GitSource's event went to `to-file`, whose Provider may not be used: both
    // Stalled (a change of the Provider is needed), nothing sent.
    let provider = wait_conditions::<Provider, _>(
        &client,
        &ns.name,
        "file",
        "Stalled=True (InvalidAddress)",
        |c| stalled(c, "InvalidAddress"),
    )
    .await;
    assert_eq!(read(&provider), Reading::Failed);
    wait_conditions::<Alert, _>(
        &client,
        &ns.name,
        "to-file",
        "Stalled=True (InvalidAddress)",
        |c| stalled(c, "InvalidAddress"),
    )
    .await;

    // Fixed, the Alert is accepted again (Ready=True, no Stalled) without waiting for an event.
    let alerts: Api<Alert> = Api::namespaced(client.clone(), &ns.name);
    alerts
        .patch(
            "flux-kind",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"spec": {"eventSources": [{"kind": "GitSource", "name": "*"}]}}),
            ),
        )
        .await
        .expect("fix the Alert");
    wait_conditions::<Alert, _>(
        &client,
        &ns.name,
        "flux-kind",
        "Ready=True (Accepted)",
        |c| has(c, READY, "True", "Accepted") && find_condition(c, STALLED).is_none(),
    )
    .await;
    drop(agent);
}

/// Create namespace `name`; deleted when the returned guard drops.
async fn create_namespace(client: &kube::Client, name: &str) -> TestNamespace {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"ferry.dev/test": "true"}}});
    api.patch(
        name,
        &PatchParams::apply("ferry-agent-tests").force(),
        &Patch::Apply(&ns),
    )
    .await
    .unwrap_or_else(|e| panic!("namespace {name}: {e}"));
    TestNamespace {
        name: name.to_string(),
    }
}

/// Bind `admin` in `ns` to service account `sa` of `sa_namespace`.
async fn grant_admin_to(client: &kube::Client, ns: &str, sa_namespace: &str, sa: &str) {
    let api: Api<k8s_openapi::api::rbac::v1::RoleBinding> = Api::namespaced(client.clone(), ns);
    let name = format!("{sa_namespace}-{sa}-admin");
    let binding = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": sa_namespace}],
    });
    api.patch(
        &name,
        &PatchParams::apply("ferry-agent-tests").force(),
        &Patch::Apply(&binding),
    )
    .await
    .unwrap_or_else(|e| panic!("RoleBinding {ns}/{name}: {e}"));
}
