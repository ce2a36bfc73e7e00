//! Helpers shared by the install tests (install_rbac, uninstall): a repository on the testenv
//! git server holding one ConfigMap (built on ferry_testsupport::git::Repo), and server-side
//! apply of a namespaced object.
#![allow(dead_code)]

use ferry_testsupport::TestEnv;
use ferry_testsupport::git::Repo;
use kube::Api;
use kube::api::{Patch, PatchParams};

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
