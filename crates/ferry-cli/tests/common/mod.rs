//! Helpers shared by the install tests (install_rbac, uninstall): a repository on the testenv
//! git server, the git CLI with a fixed identity, and server-side apply of a namespaced object.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_testsupport::TestEnv;
use kube::Api;
use kube::api::{Patch, PatchParams};

pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@ferry.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@ferry.invalid")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A repository on the testenv git server holding one ConfigMap under `app/`; returns its URL.
pub fn repo_with_configmap(env: &TestEnv, name: &str) -> String {
    let bare = PathBuf::from(env.var("FERRY_GIT_ROOT")).join(format!("{name}.git"));
    git(
        Path::new("/"),
        &[
            "init",
            "--bare",
            "--initial-branch=main",
            bare.to_str().expect("path"),
        ],
    );
    git(&bare, &["config", "http.receivepack", "true"]);
    let work = tempfile::tempdir().expect("work");
    git(work.path(), &["init", "--initial-branch=main"]);
    std::fs::create_dir_all(work.path().join("app")).expect("mkdir");
    std::fs::write(
        work.path().join("app/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: narrow\ndata:\n  value: ok\n",
    )
    .expect("write");
    git(work.path(), &["add", "-A"]);
    git(work.path(), &["commit", "-q", "-m", "app"]);
    let base = env.var("FERRY_GIT_URL");
    let (scheme, rest) = base.split_once("://").expect("scheme");
    let push = format!(
        "{scheme}://{}:{}@{rest}/{name}.git",
        env.var("FERRY_GIT_USER"),
        env.var("FERRY_GIT_PASSWORD")
    );
    git(work.path(), &["push", "-q", &push, "HEAD:refs/heads/main"]);
    format!("{base}/{name}.git")
}

pub async fn apply_json<K>(client: &kube::Client, ns: &str, value: serde_json::Value)
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = value["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    api.patch(
        &name,
        &PatchParams::apply("ferry-tests").force(),
        &Patch::Apply(&value),
    )
    .await
    .unwrap_or_else(|e| panic!("{name}: {e}"));
}
