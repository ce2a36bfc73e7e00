//! What reaches `helm template` besides the chart, with the real `helm`: a Release's
//! `spec.render` values with their YAML types, the cluster's capabilities (`--api-versions`,
//! `--kube-version`), the chart cache (a version pulled once is not downloaded again), and
//! dependencies built from `Chart.yaml` when `charts/` is missing.

mod render_support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ferry_engine::render::helm::cache::ChartCache;
use ferry_engine::render::overrides::{DriverSettings, ObjectLayer, layer_onto};
use ferry_engine::render::request::Capabilities;
use render_support::{Tree, find, json};

/// Requests a test server saw (paths).
type Seen = Arc<Mutex<Vec<String>>>;

/// An anonymous Helm HTTP repository serving `dir`, recording request paths.
fn serve(dir: PathBuf) -> (String, Seen) {
    use axum::http::{StatusCode, Uri};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen: Seen = Arc::default();
    let record = seen.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let app = axum::Router::new().fallback(move |uri: Uri| {
                let dir = dir.clone();
                let record = record.clone();
                async move {
                    record.lock().expect("seen").push(uri.path().to_string());
                    let name = uri.path().trim_start_matches('/');
                    if name.contains("..") || name.contains('/') {
                        return (StatusCode::NOT_FOUND, Vec::new());
                    }
                    match tokio::fs::read(dir.join(name)).await {
                        Ok(bytes) => (StatusCode::OK, bytes),
                        Err(_) => (StatusCode::NOT_FOUND, Vec::new()),
                    }
                }
            });
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            axum::serve(listener, app).await.expect("serve");
        });
    });
    (url, seen)
}

fn count(seen: &Seen, suffix: &str) -> usize {
    seen.lock()
        .expect("seen")
        .iter()
        .filter(|p| p.ends_with(suffix))
        .count()
}

/// `helm package` the chart at `rel` into `out` (at `version`), then `helm repo index`.
fn publish(t: &Tree, rel: &str, version: &str, out: &Path, url: &str) {
    t.tool(
        "helm",
        &[
            "package",
            &t.path(rel).display().to_string(),
            "--version",
            version,
            "--destination",
            &out.display().to_string(),
        ],
    );
    t.tool(
        "helm",
        &["repo", "index", &out.display().to_string(), "--url", url],
    );
}

fn data(manifests: &[ferry_engine::Manifest], name: &str) -> serde_json::Value {
    json(find(manifests, "ConfigMap", name))["data"].clone()
}

#[test]
fn spec_render_values_keep_their_yaml_types() {
    let t = Tree::new();
    t.write(
        "app/Chart.yaml",
        "apiVersion: v2\nname: typed\nversion: 0.1.0\n",
    );
    t.write(
        "app/templates/cm.yaml",
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: typed
  annotations:
    {{- toYaml .Values.annotations | nindent 4 }}
data:
  scrape: {{ kindOf (index .Values.annotations "prometheus.io/scrape") | quote }}
  port: {{ kindOf .Values.port | quote }}
  ratio: {{ kindOf .Values.ratio | quote }}
  zip: {{ .Values.zip | quote }}
"#,
    );
    let mut req = t.request("app");
    layer_onto(
        &mut req,
        DriverSettings {
            object: Some(ObjectLayer {
                object: "Release team-a/typed spec.render".into(),
                value: serde_json::json!({"helm": {"values": {
                    "annotations": {"prometheus.io/scrape": "true"},
                    "port": "8080",
                    "ratio": 0.5,
                    "zip": "01234",
                }}}),
            }),
            ..DriverSettings::default()
        },
    )
    .expect("layer");
    let manifests = ferry_engine::render::render(&req).expect("render");
    let cm = json(find(&manifests, "ConfigMap", "typed"));
    assert_eq!(
        cm["metadata"]["annotations"]["prometheus.io/scrape"],
        serde_json::json!("true"),
        "a string, as the API server requires"
    );
    assert_eq!(cm["data"]["scrape"], "string");
    assert_eq!(cm["data"]["port"], "string");
    assert_eq!(cm["data"]["ratio"], "float64");
    assert_eq!(cm["data"]["zip"], "01234", "leading zeros kept");
}

#[test]
fn charts_branch_on_the_capabilities_they_are_given() {
    let t = Tree::new();
    t.write(
        "app/Chart.yaml",
        "apiVersion: v2\nname: caps\nversion: 0.1.0\n",
    );
    t.write(
        "app/templates/cm.yaml",
        r#"apiVersion: v1
kind: ConfigMap
metadata: {name: caps}
data:
  monitor: {{ .Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor" | quote }}
  kube: {{ .Capabilities.KubeVersion.Version | quote }}
"#,
    );
    // Offline (`helm template`'s defaults).
    let offline = data(&t.render("app"), "caps");
    assert_eq!(offline["monitor"], "false");

    let mut req = t.request("app");
    req.capabilities = Some(Capabilities {
        kube_version: Some("v1.29.7".into()),
        api_versions: vec![
            "monitoring.coreos.com/v1".into(),
            "monitoring.coreos.com/v1/ServiceMonitor".into(),
            // Not something a real API server returns: left out, not an error.
            "--post-renderer=/bin/sh".into(),
        ],
    });
    let with = data(&ferry_engine::render::render(&req).expect("render"), "caps");
    assert_eq!(with["monitor"], "true");
    assert_eq!(with["kube"], "v1.29.7");

    // ferry.yaml's explicit kubeVersion wins over the cluster's.
    t.write("app/ferry.yaml", "helm:\n  kubeVersion: \"1.31.0\"\n");
    let pinned = data(&ferry_engine::render::render(&req).expect("render"), "caps");
    assert_eq!(pinned["kube"], "v1.31.0");
}

#[test]
fn the_chart_cache_serves_a_version_pulled_before() {
    let t = Tree::new();
    t.write(
        "src/chart/Chart.yaml",
        "apiVersion: v2\nname: cached\nversion: 0.0.1\n",
    );
    t.write(
        "src/chart/templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cached}\ndata: {version: '{{ .Chart.Version }}'}\n",
    );
    let repo_dir = tempfile::tempdir().expect("tempdir");
    let (url, seen) = serve(repo_dir.path().to_path_buf());
    publish(&t, "src/chart", "1.0.0", repo_dir.path(), &url);
    publish(&t, "src/chart", "1.1.0", repo_dir.path(), &url);
    t.write(
        "app/ferry.yaml",
        &format!("helm:\n  chart: {{repo: \"{url}\", name: cached, version: \"^1\"}}\n"),
    );
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cache = Arc::new(ChartCache::new(cache_dir.path().join("charts"), 1 << 20).expect("cache"));
    let mut req = t.request("app");
    req.chart_cache = Some(cache.clone());

    let first = ferry_engine::render::render(&req).expect("render");
    assert_eq!(data(&first, "cached")["version"], "1.1.0");
    assert_eq!(count(&seen, ".tgz"), 1);
    let second = ferry_engine::render::render(&req).expect("render again");
    assert_eq!(data(&second, "cached")["version"], "1.1.0");
    assert_eq!(count(&seen, ".tgz"), 1, "served from the cache: {seen:?}");
    assert_eq!(
        count(&seen, "index.yaml"),
        2,
        "the index is read every time"
    );

    // A new version in the repository is picked up (and pulled).
    publish(&t, "src/chart", "1.2.0", repo_dir.path(), &url);
    let third = ferry_engine::render::render(&req).expect("render a new version");
    assert_eq!(data(&third, "cached")["version"], "1.2.0");
    assert_eq!(count(&seen, ".tgz"), 2);

    // The same version re-published with other content: the index's digest no longer matches
    // the cached archive, so it is pulled again.
    t.write(
        "src/chart/templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cached}\ndata: {version: 'changed'}\n",
    );
    publish(&t, "src/chart", "1.2.0", repo_dir.path(), &url);
    let fourth = ferry_engine::render::render(&req).expect("render re-published");
    assert_eq!(data(&fourth, "cached")["version"], "changed");
    assert_eq!(count(&seen, ".tgz"), 3);
}

#[test]
fn missing_dependencies_are_built_from_chart_yaml_without_touching_the_source() {
    let t = Tree::new();
    // A dependency in an HTTP repository and one in the source (file://).
    t.write(
        "deps/redis/Chart.yaml",
        "apiVersion: v2\nname: redis\nversion: 0.0.1\n",
    );
    t.write(
        "deps/redis/templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: redis}\ndata: {from: repository}\n",
    );
    let repo_dir = tempfile::tempdir().expect("tempdir");
    let (url, seen) = serve(repo_dir.path().to_path_buf());
    publish(&t, "deps/redis", "17.3.0", repo_dir.path(), &url);
    t.write(
        "app/common/Chart.yaml",
        "apiVersion: v2\nname: common\nversion: 1.0.0\n",
    );
    t.write(
        "app/common/templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: common}\ndata: {from: source}\n",
    );
    t.write(
        "app/chart/Chart.yaml",
        &format!(
            "apiVersion: v2\nname: web\nversion: 0.1.0\ndependencies:\n  - name: redis\n    version: \"~17.3\"\n    repository: \"{url}\"\n  - name: common\n    version: 1.0.0\n    repository: file://../common\n"
        ),
    );
    t.write(
        "app/chart/templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {from: chart}\n",
    );
    let manifests = t.render("app/chart");
    assert_eq!(data(&manifests, "redis")["from"], "repository");
    assert_eq!(data(&manifests, "common")["from"], "source");
    assert_eq!(data(&manifests, "web")["from"], "chart");
    assert!(count(&seen, ".tgz") >= 1, "{seen:?}");
    assert!(
        !t.path("app/chart/charts").exists(),
        "the source was not written to"
    );
}
