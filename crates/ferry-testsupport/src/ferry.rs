//! ferry's own fixtures, shared by every crate's tests against an agent: the CRDs, a test's
//! starting point ([`setup`]), GitSource and Release objects, the Secrets and RBAC a tenant's
//! objects need, service-account tokens, and the waits on Release and GitSource status.
//! Before these lived here, the agent's tests/common and the CLI's tests each held a copy.

use std::sync::OnceLock;
use std::time::Duration;

use ferry_api::common::{READY, find_condition};
use ferry_api::{GitSource, Release};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::git::Repo;
use crate::{TestEnv, TestNamespace, wait_until};

/// The field manager of what the tests apply.
const MANAGER: &str = "ferry-tests";

/// A namespaced object kind that can be created from JSON.
pub trait Object:
    kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
{
}

impl<K> Object for K where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
{
}

/// Apply ferry's CRDs (once per test binary) and wait until they are Established.
pub async fn install_ferry_crds(client: &Client) {
    static DONE: OnceLock<()> = OnceLock::new();
    if DONE.get().is_some() {
        return;
    }
    crate::install_crds(client, &ferry_api::all_crd_values(), MANAGER).await;
    let _ = DONE.set(());
}

/// What a test against ferry starts with: logging, the testenv, an admin client, ferry's CRDs
/// and a namespace of the test's own, `ferry-test-<prefix>-…` (deleted when dropped).
pub async fn setup(prefix: &str) -> (TestEnv, Client, TestNamespace) {
    crate::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_ferry_crds(&client).await;
    let ns = TestNamespace::create(&client, prefix).await;
    (env, client, ns)
}

/// Create the object `value` (JSON) in `ns`.
pub async fn create<K: Object>(client: &Client, ns: &str, value: Value) -> K {
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let obj: K = serde_json::from_value(value).expect("valid object");
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("creating {}: {e}", obj.name_any()))
}

/// Server-side apply the object `value` (JSON, named in its metadata) in `ns`, forcing
/// conflicts.
pub async fn apply<K: Object>(client: &Client, ns: &str, value: Value) -> K {
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = value["metadata"]["name"]
        .as_str()
        .expect("metadata.name")
        .to_string();
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&value),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {ns}/{name}: {e}"))
}

/// A Secret `name` in `ns` with `data` as its string data.
pub async fn secret(client: &Client, ns: &str, name: &str, data: &[(&str, &str)]) {
    let string_data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    apply::<Secret>(
        client,
        ns,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": ns},
            "stringData": string_data,
        }),
    )
    .await;
}

/// A Secret with the testenv git server's credentials (basic auth).
pub async fn git_secret(env: &TestEnv, client: &Client, ns: &str, name: &str) {
    secret(
        client,
        ns,
        name,
        &[
            ("username", &env.var("FERRY_GIT_USER")),
            ("password", &env.var("FERRY_GIT_PASSWORD")),
        ],
    )
    .await;
}

/// Bind the `admin` ClusterRole to service account `sa` of `ns`, in `ns` only (idempotent).
pub async fn grant_admin(client: &Client, ns: &str, sa: &str) {
    let name = format!("{sa}-admin");
    apply::<RoleBinding>(
        client,
        ns,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
        }),
    )
    .await;
}

/// Create service account `sa` in `ns`.
pub async fn service_account(client: &Client, ns: &str, sa: &str) {
    create::<ServiceAccount>(client, ns, json!({"metadata": {"name": sa}})).await;
}

/// A fresh token of service account `sa` of `ns` (the TokenRequest API), valid for ten minutes,
/// for `audiences` (none: the API server's own).
pub async fn service_account_token(
    client: &Client,
    ns: &str,
    sa: &str,
    audiences: &[&str],
) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let mut spec = json!({"expirationSeconds": 600});
    if !audiences.is_empty() {
        spec["audiences"] = json!(audiences);
    }
    let request: TokenRequest = serde_json::from_value(json!({ "spec": spec })).expect("request");
    let answer: TokenRequest = sas
        .create_subresource("token", sa, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("token of {ns}/{sa}: {e}"));
    answer.status.expect("token status").token
}

/// A GitSource following `main` of `url`, polled every `interval`, with `secret` as its
/// secretRef.
pub fn git_source(name: &str, url: &str, secret: Option<&str>, interval: &str) -> Value {
    let mut spec =
        json!({"url": url, "ref": {"branch": "main"}, "interval": interval, "timeout": "20s"});
    if let Some(s) = secret {
        spec["secretRef"] = json!({"name": s});
    }
    json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "GitSource",
        "metadata": {"name": name}, "spec": spec,
    })
}

/// A Release of `path` of GitSource `source` (every minute, retried after 2s, pruning); the
/// fields of `extra` are added to (or replace those of) its spec.
pub fn release(name: &str, source: &str, path: &str, extra: Value) -> Value {
    let mut spec = json!({
        "sourceRef": {"kind": "GitSource", "name": source},
        "path": path, "interval": "1m", "retryInterval": "2s", "prune": true,
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": name}, "spec": spec,
    })
}

/// Secret `git-auth` with the git server's credentials and GitSource `repo` of `repo`'s
/// `main`, polled hourly (a test asks for syncs with [`request_sync`]).
pub async fn hourly_source(env: &TestEnv, client: &Client, ns: &str, repo: &Repo) {
    git_secret(env, client, ns, "git-auth").await;
    create::<GitSource>(
        client,
        ns,
        git_source("repo", &repo.url, Some("git-auth"), "1h"),
    )
    .await;
}

/// [`hourly_source`] and an hourly Release `name` of its `app/`, with `extra` spec fields.
pub async fn hourly_release(
    env: &TestEnv,
    client: &Client,
    ns: &str,
    repo: &Repo,
    name: &str,
    extra: Value,
) {
    hourly_source(env, client, ns, repo).await;
    let mut spec = json!({"interval": "1h"});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    create::<Release>(client, ns, release(name, "repo", "app", spec)).await;
}

/// Ask the agent to sync GitSource `name` now, as `ferry sync` does (`token` is the
/// annotation's value: a new one per request).
pub async fn request_sync(client: &Client, ns: &str, name: &str, token: &str) {
    let sources: Api<GitSource> = Api::namespaced(client.clone(), ns);
    let ask = json!({"metadata": {"annotations": {
        ferry_api::common::RECONCILE_REQUESTED_AT: token}}});
    sources
        .patch(name, &PatchParams::default(), &Patch::Merge(&ask))
        .await
        .unwrap_or_else(|e| panic!("request a sync of GitSource {ns}/{name}: {e}"));
}

/// A manifest of ConfigMap `name` with `data.value: value`.
pub fn configmap_yaml(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: \"{value}\"\n"
    )
}

/// `(status, reason, message)` of the Ready condition in `conditions`.
pub fn ready_state(conditions: &[Condition]) -> Option<(String, String, String)> {
    find_condition(conditions, READY)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Wait until the Release's `lastAppliedRevision` ends with `sha` and it is Ready.
pub async fn wait_release_applied(
    client: &Client,
    ns: &str,
    name: &str,
    sha: &str,
    timeout: Duration,
) -> Release {
    let api: Api<Release> = Api::namespaced(client.clone(), ns);
    wait_until(
        &format!("Release {ns}/{name} Ready at {sha}"),
        timeout,
        || {
            let api = api.clone();
            async move {
                let r = api.get(name).await?;
                let status = r.status.clone().unwrap_or_default();
                let ready = ready_state(&status.conditions);
                let applied = status
                    .last_applied_revision
                    .as_deref()
                    .is_some_and(|rev| rev.ends_with(sha));
                if applied && ready.as_ref().is_some_and(|(s, _, _)| s == "True") {
                    return Ok(Some(r));
                }
                anyhow::bail!(
                    "not yet: ready={ready:?} lastApplied={:?}",
                    status.last_applied_revision
                )
            }
        },
    )
    .await
}

/// Wait until the Release's Ready condition has `reason`.
pub async fn wait_release_reason(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
    timeout: Duration,
) -> Release {
    let api: Api<Release> = Api::namespaced(client.clone(), ns);
    wait_until(
        &format!("Release {ns}/{name} reason {reason}"),
        timeout,
        || {
            let api = api.clone();
            async move {
                let r = api.get(name).await?;
                let ready = ready_state(&r.status.clone().unwrap_or_default().conditions);
                if ready.as_ref().is_some_and(|(_, why, _)| why == reason) {
                    return Ok(Some(r));
                }
                anyhow::bail!("not yet: ready={ready:?}")
            }
        },
    )
    .await
}

/// Wait (up to a minute) until GitSource `name` passes `check`; `what` says what is awaited.
pub async fn wait_source<F>(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    check: F,
) -> GitSource
where
    F: Fn(&GitSource) -> bool,
{
    let api: Api<GitSource> = Api::namespaced(client.clone(), ns);
    let check = &check;
    wait_until(
        &format!("GitSource {ns}/{name}: {what}"),
        Duration::from_secs(60),
        || {
            let api = api.clone();
            async move {
                let gs = api.get(name).await?;
                if check(&gs) {
                    return Ok(Some(gs));
                }
                anyhow::bail!("status: {:?}", gs.status)
            }
        },
    )
    .await
}
