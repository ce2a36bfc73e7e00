//! Helpers shared by the push integration tests (real testenv, one TestNamespace per test).

#![allow(dead_code)]

use std::path::Path;

use ferry_engine::Manifest;
use ferry_engine::pipeline::ApplyOptions;
use ferry_engine::render::{RenderRequest, render};
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};

/// Render a YAML string the way `ferry apply -` would.
pub fn manifests(yaml: &str) -> Vec<Manifest> {
    let req = RenderRequest::new(".", "-").with_stdin(yaml.as_bytes().to_vec());
    render(&req).unwrap_or_else(|err| panic!("rendering test YAML: {err}"))
}

/// Write files under a temp dir and render it as a directory source.
pub fn render_dir(
    files: &[(&str, &str)],
) -> (tempfile::TempDir, ferry_engine::Result<Vec<Manifest>>) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, text).expect("write");
    }
    let req = RenderRequest::new(dir.path(), dir.path());
    let result = render(&req);
    (dir, result)
}

pub fn opts(app: &str, ns: &str) -> ApplyOptions {
    ApplyOptions {
        app: app.to_string(),
        namespace: Some(ns.to_string()),
        source: "test".into(),
        timeout: std::time::Duration::from_secs(90),
        ..Default::default()
    }
}

pub fn configmap(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: \"{value}\"\n---\n"
    )
}

pub fn deployment(name: &str, image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: main
        image: {image}
---
"#
    )
}

/// Get any object (None if absent).
pub async fn get(
    client: &Client,
    api_version: &str,
    kind: &str,
    plural: &str,
    ns: Option<&str>,
    name: &str,
) -> Option<DynamicObject> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    api.get_opt(name).await.expect("GET")
}

pub async fn configmap_exists(client: &Client, ns: &str, name: &str) -> bool {
    get(client, "v1", "ConfigMap", "configmaps", Some(ns), name)
        .await
        .is_some()
}

pub fn testenv_script(env: &ferry_testsupport::TestEnv, name: &str) -> std::path::PathBuf {
    let _ = env;
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testenv")
        .join(name)
}
