//! Shared helpers for the agent's integration tests: start an in-process agent scoped to the
//! test's namespaces, and sign webhook payloads. The fixtures every crate's tests share (CRDs,
//! git repositories, GitSources and Releases, waits on their status) live in
//! ferry-testsupport and are re-exported here.
#![allow(dead_code)]

use ferry_agent::{Agent, AgentOptions};
use ferry_testsupport::TestEnv;

/// ferry's fixtures (objects, Secrets, RBAC, waits on status), shared with the other crates'
/// tests; `install_crds` applies ferry's CRDs once per test binary.
#[allow(unused_imports)]
pub use ferry_testsupport::ferry::{
    configmap_yaml, create, git_secret, git_source, grant_admin, hourly_release, hourly_source,
    install_ferry_crds as install_crds, ready_state, release, request_sync, secret, setup,
    wait_release_applied, wait_release_reason, wait_source,
};
/// A repository on the testenv git server: the shared fixture.
#[allow(unused_imports)]
pub use ferry_testsupport::git::Repo;
/// A minimal HTTP/1.1 request (the agent's own server; no client crate needed).
#[allow(unused_imports)]
pub use ferry_testsupport::http::request as http;

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

/// `sha256=<hex hmac>` as GitHub signs payloads.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    format!(
        "sha256={}",
        hex::encode(aws_lc_rs::hmac::sign(&key, body).as_ref())
    )
}
