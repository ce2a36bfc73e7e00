//! Helpers shared by the CLI's integration tests: a repository on the testenv git server
//! holding one ConfigMap (built on ferry_testsupport::git::Repo), server-side apply of a
//! namespaced object, an in-process agent for the commands to talk to, and a finished command's
//! exit code and output. ferry's own fixtures (CRDs, GitSources, Releases, waits) are in
//! ferry_testsupport::ferry.
#![allow(dead_code)]

use std::process::Command;

use ferry_agent::{Agent, AgentOptions};
use ferry_testsupport::TestEnv;
use ferry_testsupport::git::Repo;

/// A repository on the testenv git server holding one ConfigMap under `app/`; returns its URL.
pub fn repo_with_configmap(env: &TestEnv, name: &str) -> String {
    let repo = Repo::create(env, name);
    repo.commit_files(
        &[(
            "app/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: narrow\ndata:\n  value: ok\n",
        )],
        "app",
    );
    repo.url
}

/// Server-side apply of a namespaced object (as ferry-tests, forcing conflicts).
pub async fn apply_json<K: ferry_testsupport::ferry::Object>(
    client: &kube::Client,
    ns: &str,
    value: serde_json::Value,
) {
    ferry_testsupport::ferry::apply::<K>(client, ns, value).await;
}

/// Start an in-process agent with the testenv's admin kubeconfig and a private cache, watching
/// only `namespaces` (so parallel tests do not see each other); `tweak` changes the rest of its
/// options. The cache lives as long as the returned directory.
pub async fn start_agent(
    env: &TestEnv,
    namespaces: &[&str],
    tweak: impl FnOnce(&mut AgentOptions),
) -> (Agent, tempfile::TempDir) {
    let cache = tempfile::tempdir().expect("cache dir");
    let mut options = AgentOptions::for_kubeconfig(env.kubeconfig(), cache.path().to_path_buf());
    options.watch_namespaces = namespaces.iter().map(|s| s.to_string()).collect();
    tweak(&mut options);
    let agent = Agent::start(options).await.expect("agent starts");
    (agent, cache)
}

/// Run `command` to the end: (exit code, -1 when killed by a signal; stdout; stderr).
pub fn run(command: &mut Command) -> (i32, String, String) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}
