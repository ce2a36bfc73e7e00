//! Shared helpers for the agent's integration tests: install the CRDs, create bare repos on the
//! testenv git server and push commits with the git CLI, start an in-process agent scoped to the
//! test's namespaces, and read Release/GitSource status.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

use ferry_agent::{Agent, AgentOptions};
use ferry_api::common::{READY, find_condition};
use ferry_api::{GitSource, Release};
use ferry_testsupport::{TestEnv, wait_for};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

/// Apply the CRDs (once per test binary) and wait until they are Established.
pub async fn install_crds(client: &Client) {
    static DONE: OnceLock<()> = OnceLock::new();
    if DONE.get().is_some() {
        return;
    }
    ferry_testsupport::install_crds(client, &ferry_agent::crds::all(), "ferry-agent-tests").await;
    let _ = DONE.set(());
}

/// A repository on the testenv git server: the shared fixture.
#[allow(unused_imports)]
pub use ferry_testsupport::git::Repo;

/// Start an agent watching only `namespaces` (so parallel tests do not see each other).
/// Tenant work without `serviceAccountName` acts as the namespace's `default` service account
/// (in the agent's own namespace: `ferry-admin`), the agent's secure default, so this first
/// grants those accounts their namespace's `admin` role, as a cluster admin would for a tenant
/// (docs/agent.md). Attack tests use [`start_agent_bare`], which grants nothing.
pub async fn start_agent(
    env: &TestEnv,
    namespaces: &[&str],
    tweak: impl FnOnce(&mut AgentOptions),
) -> (Agent, tempfile::TempDir) {
    let (options, cache) = agent_options(env, namespaces, tweak);
    let client = env.client().await;
    for ns in namespaces {
        grant_admin(&client, ns, &options.default_service_account).await;
        if *ns == options.namespace {
            grant_admin(&client, ns, &options.system_service_account).await;
        }
    }
    let agent = Agent::start(options).await.expect("agent starts");
    (agent, cache)
}

/// Bind the `admin` ClusterRole to service account `sa` of `ns`, in `ns` only (idempotent).
pub async fn grant_admin(client: &Client, ns: &str, sa: &str) {
    let api: Api<k8s_openapi::api::rbac::v1::RoleBinding> = Api::namespaced(client.clone(), ns);
    let name = format!("{sa}-admin");
    let binding = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
    });
    api.patch(
        &name,
        &PatchParams::apply("ferry-agent-tests").force(),
        &Patch::Apply(&binding),
    )
    .await
    .unwrap_or_else(|e| panic!("RoleBinding {ns}/{name}: {e}"));
}

/// [`start_agent`] without granting anything: the tenants' service accounts have only what the
/// test gives them.
pub async fn start_agent_bare(
    env: &TestEnv,
    namespaces: &[&str],
    tweak: impl FnOnce(&mut AgentOptions),
) -> (Agent, tempfile::TempDir) {
    let (options, cache) = agent_options(env, namespaces, tweak);
    let agent = Agent::start(options).await.expect("agent starts");
    (agent, cache)
}

/// The in-process agent's options: the testenv's admin kubeconfig, a private cache, watching
/// only `namespaces`; `tweak` changes the rest.
pub fn agent_options(
    env: &TestEnv,
    namespaces: &[&str],
    tweak: impl FnOnce(&mut AgentOptions),
) -> (AgentOptions, tempfile::TempDir) {
    let cache = tempfile::tempdir().expect("cache dir");
    let mut options = AgentOptions::for_kubeconfig(env.kubeconfig(), cache.path().to_path_buf());
    options.watch_namespaces = namespaces.iter().map(|s| s.to_string()).collect();
    tweak(&mut options);
    (options, cache)
}

/// Create a Secret with the testenv git credentials (basic auth).
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

pub async fn secret(client: &Client, ns: &str, name: &str, data: &[(&str, &str)]) {
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), ns);
    let string_data: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "stringData": string_data,
    });
    api.patch(
        name,
        &PatchParams::apply("ferry-agent-tests").force(),
        &Patch::Apply(&secret),
    )
    .await
    .unwrap_or_else(|e| panic!("secret {ns}/{name}: {e}"));
}

pub async fn create<K>(client: &Client, ns: &str, value: serde_json::Value) -> K
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let obj: K = serde_json::from_value(value).expect("valid object");
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("creating {}: {e}", obj.name_any()))
}

pub fn git_source(
    name: &str,
    url: &str,
    secret: Option<&str>,
    interval: &str,
) -> serde_json::Value {
    let mut spec = serde_json::json!({"url": url, "ref": {"branch": "main"}, "interval": interval, "timeout": "20s"});
    if let Some(s) = secret {
        spec["secretRef"] = serde_json::json!({"name": s});
    }
    serde_json::json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "GitSource",
        "metadata": {"name": name}, "spec": spec,
    })
}

pub fn release(
    name: &str,
    source: &str,
    path: &str,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut spec = serde_json::json!({
        "sourceRef": {"kind": "GitSource", "name": source},
        "path": path, "interval": "1m", "retryInterval": "2s", "prune": true,
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    serde_json::json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": name}, "spec": spec,
    })
}

pub fn ready_state(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Option<(String, String, String)> {
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
    wait_for(
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
    .unwrap_or_else(|e| panic!("{e:#}"))
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
    wait_for(
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
    .unwrap_or_else(|e| panic!("{e:#}"))
}

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
    wait_for(
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
    .unwrap_or_else(|e| panic!("{e:#}"))
}

pub fn configmap_yaml(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: \"{value}\"\n"
    )
}

/// A minimal HTTP/1.1 request over TCP (the agent's own server; no client crate needed).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to agent");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    // The server may answer (413) before reading a large body; ignore write errors then.
    let _ = stream.write_all(body).await;
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `sha256=<hex hmac>` as GitHub signs payloads.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    format!(
        "sha256={}",
        hex::encode(aws_lc_rs::hmac::sign(&key, body).as_ref())
    )
}
