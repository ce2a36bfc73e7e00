//! Helm rendering with the real `helm`: charts from a directory (values files, SOPS values,
//! inline values, --set), from the testenv OCI registry (plain and authenticated, version
//! ranges) and from a Helm HTTP repository behind basic auth; hooks, CRDs, post-render.

mod render_support;

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use ferry_engine::render::helm::hooks::{self, HookDeletePolicy, HookPhase};
use render_support::{Age, Tree, find, json, run};

/// Write a chart named `name` at `dir` (relative to the tree) with version `version`.
fn write_chart(t: &Tree, dir: &str, name: &str, version: &str) {
    t.write(
        &format!("{dir}/Chart.yaml"),
        &format!("apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: \"1.0\"\n"),
    );
    t.write(
        &format!("{dir}/values.yaml"),
        "replicas: 1\nimage: {repository: nginx, tag: \"1.0\"}\ndb: {password: changeme}\nenv: default\n",
    );
    t.write(
        &format!("{dir}/templates/deployment.yaml"),
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
  namespace: {{ .Release.Namespace }}
  labels:
    helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
spec:
  replicas: {{ .Values.replicas }}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
"#,
    );
    t.write(
        &format!("{dir}/templates/secret.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: '{{ .Release.Name }}-db'}\ndata:\n  password: {{ .Values.db.password | b64enc }}\n",
    );
    t.write(
        &format!("{dir}/templates/configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: '{{ .Release.Name }}-env'}\ndata:\n  env: {{ .Values.env | quote }}\n",
    );
}

fn b64decode(value: &serde_json::Value) -> String {
    let text = value.as_str().expect("string");
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .expect("base64"),
    )
    .expect("utf8")
}

#[test]
fn chart_directory_with_values_sops_values_inline_values_and_set() {
    let t = Tree::new();
    let age = Age::new(&t.env);
    write_chart(&t, "app/chart", "web", "1.4.0");
    t.write("app/env.yaml", "env: staging\nimage: {tag: \"2.0\"}\n");
    let secrets = t.write(
        "app/secrets.enc.yaml",
        "db:\n  password: s3cr3t-from-sops\n",
    );
    age.encrypt(&t.env, &secrets, None);
    assert!(
        !std::fs::read_to_string(&secrets)
            .unwrap()
            .contains("s3cr3t-from-sops")
    );
    t.write(
        "app/ferry.yaml",
        r#"renderer: helm
namespace: shop
helm:
  chart: {path: chart, version: "^1.2"}
  releaseName: shop
  valuesFiles: [env.yaml, secrets.enc.yaml]
  values: {image: {repository: ghcr.io/acme/web}}
  set: [replicas=3]
"#,
    );
    let mut req = t.request("app");
    req.age_keys = Some(age.keys());
    let manifests = ferry_engine::render::render(&req).expect("render");

    let deployment = json(find(&manifests, "Deployment", "shop-web"));
    assert_eq!(deployment["spec"]["replicas"], 3, "--set wins");
    assert_eq!(deployment["metadata"]["namespace"], "shop");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"], "ghcr.io/acme/web:2.0",
        "values file + inline values merged in order"
    );
    let secret = json(find(&manifests, "Secret", "shop-db"));
    assert_eq!(b64decode(&secret["data"]["password"]), "s3cr3t-from-sops");
    let cm = json(find(&manifests, "ConfigMap", "shop-env"));
    assert_eq!(cm["data"]["env"], "staging");
    // Origins name the chart template.
    let origin = find(&manifests, "Secret", "shop-db").origin.to_string();
    assert!(origin.contains("templates/secret.yaml"), "{origin}");

    // A version range the local chart does not satisfy is an error.
    t.write(
        "app/ferry.yaml",
        "helm:\n  chart: {path: chart, version: \">=2.0.0\"}\n",
    );
    let err = t.render_err("app");
    assert!(err.contains("1.4.0") && err.contains(">=2.0.0"), "{err}");
}

#[test]
fn chart_detected_from_chart_yaml_with_cli_values_and_release() {
    let t = Tree::new();
    write_chart(&t, "chart", "api", "0.1.0");
    let values = t.write("override.yaml", "env: from-cli\n");
    let mut req = t.request("chart");
    req.overrides.values_files.push(values);
    req.overrides.release_name = Some("rel".into());
    req.overrides.set_string.push("image.tag=007".into());
    req.default_namespace = Some("team".into());
    let manifests = ferry_engine::render::render(&req).expect("render");
    let cm = json(find(&manifests, "ConfigMap", "rel-env"));
    assert_eq!(cm["data"]["env"], "from-cli");
    let deployment = json(find(&manifests, "Deployment", "rel-web"));
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:007"
    );
    assert_eq!(deployment["metadata"]["namespace"], "team");
}

/// Package the chart at `dir` as `version` into `out`; the archive path.
fn package(t: &Tree, dir: &str, version: &str, out: &Path) -> std::path::PathBuf {
    let stdout = t.tool(
        "helm",
        &[
            "package",
            &t.path(dir).display().to_string(),
            "--version",
            version,
            "--destination",
            &out.display().to_string(),
        ],
    );
    let text = String::from_utf8_lossy(&stdout);
    let path = text
        .trim()
        .rsplit(": ")
        .next()
        .expect("helm package output")
        .to_string();
    std::path::PathBuf::from(path)
}

fn helm_with_home(t: &Tree, home: &Path) -> Command {
    let mut cmd = Command::new(t.env.tool("helm"));
    cmd.env("HELM_REGISTRY_CONFIG", home.join("registry.json"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"));
    cmd
}

#[test]
fn oci_chart_with_version_range() {
    let t = Tree::new();
    let registry = t.env.var("FERRY_REGISTRY");
    write_chart(&t, "src/chart", "ocichart", "0.0.1");
    let out = tempfile::tempdir().expect("tempdir");
    let home = tempfile::tempdir().expect("tempdir");
    let repo = format!(
        "oci://{registry}/{}",
        ferry_testsupport::unique_name("charts")
    );
    for version in ["1.2.0", "1.3.0", "2.0.0"] {
        let archive = package(&t, "src/chart", version, out.path());
        run(helm_with_home(&t, home.path())
            .arg("push")
            .arg(&archive)
            .arg(&repo)
            .arg("--plain-http"));
    }
    t.write(
        "app/ferry.yaml",
        &format!(
            "helm:\n  chart: {{oci: \"{repo}/ocichart\", version: \">=1.0.0 <2.0.0\", plainHttp: true}}\n  releaseName: o\n"
        ),
    );
    let manifests = t.render("app");
    let deployment = json(find(&manifests, "Deployment", "o-web"));
    assert_eq!(
        deployment["metadata"]["labels"]["helm.sh/chart"], "ocichart-1.3.0",
        "highest version in range"
    );

    // The same through flags, exact version.
    let mut req = t.request("src");
    req.overrides.chart = Some(format!("{repo}/ocichart"));
    req.overrides.chart_version = Some("2.0.0".into());
    req.overrides.plain_http = Some(true);
    let manifests = ferry_engine::render::render(&req).expect("render");
    let deployment = json(find(&manifests, "Deployment", "ocichart-web"));
    assert_eq!(
        deployment["metadata"]["labels"]["helm.sh/chart"],
        "ocichart-2.0.0"
    );

    // No version satisfies the range: helm's error is shown.
    let mut req = t.request("src");
    req.overrides.chart = Some(format!("{repo}/ocichart"));
    req.overrides.chart_version = Some(">=3.0.0".into());
    req.overrides.plain_http = Some(true);
    let err = ferry_engine::render::render(&req).unwrap_err().to_string();
    assert!(err.contains("pulling chart"), "{err}");
}

#[test]
fn oci_chart_from_an_authenticated_registry() {
    let t = Tree::new();
    let registry = t.env.var("FERRY_REGISTRY_AUTH");
    let user = t.env.var("FERRY_REGISTRY_AUTH_USER");
    let password = t.env.var("FERRY_REGISTRY_AUTH_PASSWORD");
    write_chart(&t, "src/chart", "private", "0.0.1");
    let out = tempfile::tempdir().expect("tempdir");
    let home = tempfile::tempdir().expect("tempdir");
    let repo = format!(
        "oci://{registry}/{}",
        ferry_testsupport::unique_name("charts")
    );
    let archive = package(&t, "src/chart", "0.5.0", out.path());
    let mut login = helm_with_home(&t, home.path());
    login
        .args([
            "registry",
            "login",
            &registry,
            "--plain-http",
            "--username",
            &user,
        ])
        .arg("--password-stdin")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = login.spawn().expect("helm login");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(password.as_bytes())
            .expect("write password");
    }
    let status = child.wait_with_output().expect("login");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    run(helm_with_home(&t, home.path())
        .arg("push")
        .arg(&archive)
        .arg(&repo)
        .arg("--plain-http"));

    let mut req = t.request("src");
    req.overrides.chart = Some(format!("{repo}/private"));
    req.overrides.plain_http = Some(true);
    // Without credentials the pull is refused.
    let err = ferry_engine::render::render(&req).unwrap_err().to_string();
    assert!(err.contains("pulling chart"), "{err}");

    req.overrides.chart_username = Some(user.clone());
    req.overrides.chart_password = Some(password.clone());
    let manifests = ferry_engine::render::render(&req).expect("render with credentials");
    find(&manifests, "Deployment", "private-web");

    req.overrides.chart_password = Some(format!("{password}-wrong"));
    let err = ferry_engine::render::render(&req).unwrap_err().to_string();
    assert!(!err.contains(&password), "password leaked: {err}");
}

/// A Helm HTTP repository: files from `dir`, behind basic auth.
fn serve_repo(
    dir: std::path::PathBuf,
    user: &str,
    password: &str,
) -> (String, std::thread::JoinHandle<()>) {
    use axum::http::{HeaderMap, StatusCode, Uri};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    let handle = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
                let dir = dir.clone();
                let expected = expected.clone();
                async move {
                    let authorized = headers.get("authorization").and_then(|v| v.to_str().ok())
                        == Some(expected.as_str());
                    if !authorized {
                        return (StatusCode::UNAUTHORIZED, Vec::new());
                    }
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
    (url, handle)
}

#[test]
fn chart_from_an_http_repository_with_basic_auth() {
    let t = Tree::new();
    write_chart(&t, "src/chart", "repochart", "0.0.1");
    let repo_dir = tempfile::tempdir().expect("tempdir");
    for version in ["1.2.0", "1.2.7", "1.3.0"] {
        package(&t, "src/chart", version, repo_dir.path());
    }
    let (url, _server) = serve_repo(repo_dir.path().to_path_buf(), "chartuser", "chart-pass-123");
    t.tool(
        "helm",
        &[
            "repo",
            "index",
            &repo_dir.path().display().to_string(),
            "--url",
            &url,
        ],
    );
    t.write(
        "app/ferry.yaml",
        &format!("helm:\n  chart: {{repo: \"{url}\", name: repochart, version: \"~1.2\"}}\n"),
    );
    let mut req = t.request("app");
    req.overrides.chart_username = Some("chartuser".into());
    req.overrides.chart_password = Some("chart-pass-123".into());
    let manifests = ferry_engine::render::render(&req).expect("render");
    let deployment = json(find(&manifests, "Deployment", "repochart-web"));
    assert_eq!(
        deployment["metadata"]["labels"]["helm.sh/chart"], "repochart-1.2.7",
        "highest 1.2.x"
    );

    // Wrong password: helm's 401 is reported, the password is not.
    req.overrides.chart_password = Some("wrong-pass-456".into());
    let err = ferry_engine::render::render(&req).unwrap_err().to_string();
    assert!(err.contains("chart repository"), "{err}");
    assert!(!err.contains("wrong-pass-456"), "{err}");

    // Anonymous access to the same repo is refused by the server.
    req.overrides.chart_username = None;
    req.overrides.chart_password = None;
    let err = ferry_engine::render::render(&req).unwrap_err().to_string();
    assert!(err.contains("401") || err.contains("Unauthorized"), "{err}");
}

#[test]
fn hooks_get_phases_and_unsupported_hooks_are_dropped() {
    let t = Tree::new();
    t.write(
        "chart/Chart.yaml",
        "apiVersion: v2\nname: hooked\nversion: 0.1.0\n",
    );
    t.write(
        "chart/templates/all.yaml",
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "-5"
    helm.sh/hook-delete-policy: hook-succeeded
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: m, image: busybox}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: notify
  annotations:
    helm.sh/hook: post-install
data: {a: b}
---
apiVersion: v1
kind: Pod
metadata:
  name: smoke-test
  annotations:
    helm.sh/hook: test
spec:
  containers: [{name: t, image: busybox}]
---
apiVersion: batch/v1
kind: Job
metadata:
  name: cleanup
  annotations:
    helm.sh/hook: pre-delete
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: main}
data: {a: b}
"#,
    );
    let manifests = t.render("chart");
    let names: Vec<&str> = manifests.iter().map(|m| m.name()).collect();
    assert!(
        !names.contains(&"smoke-test"),
        "test hook dropped: {names:?}"
    );
    assert!(
        !names.contains(&"cleanup"),
        "pre-delete hook dropped: {names:?}"
    );
    let migrate = find(&manifests, "Job", "migrate");
    assert_eq!(hooks::phase(migrate), HookPhase::PreDeploy);
    assert_eq!(hooks::weight(migrate), -5);
    assert_eq!(
        hooks::delete_policies(migrate),
        vec![HookDeletePolicy::HookSucceeded]
    );
    let notify = find(&manifests, "ConfigMap", "notify");
    assert_eq!(hooks::phase(notify), HookPhase::PostDeploy);
    assert_eq!(
        hooks::delete_policies(notify),
        vec![HookDeletePolicy::BeforeHookCreation]
    );
    assert_eq!(
        hooks::phase(find(&manifests, "ConfigMap", "main")),
        HookPhase::Main
    );
    let mut ordered: Vec<_> = manifests.iter().collect();
    ordered.sort_by_key(|m| (hooks::phase(m), hooks::weight(m)));
    assert_eq!(ordered.first().map(|m| m.name()), Some("migrate"));
    assert_eq!(ordered.last().map(|m| m.name()), Some("notify"));
}

#[test]
fn crds_are_included_unless_disabled() {
    let t = Tree::new();
    write_chart(&t, "app/chart", "withcrd", "0.1.0");
    t.write(
        "app/chart/crds/widget.yaml",
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  names: {kind: Widget, plural: widgets}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object}}
"#,
    );
    let manifests = t.render("app/chart");
    find(
        &manifests,
        "CustomResourceDefinition",
        "widgets.example.com",
    );
    t.write(
        "app/ferry.yaml",
        "helm:\n  chart: {path: chart}\n  includeCrds: false\n",
    );
    let manifests = t.render("app");
    assert!(
        !manifests
            .iter()
            .any(|m| m.kind() == "CustomResourceDefinition")
    );
}

#[test]
fn post_render_kustomization_patches_chart_output() {
    let t = Tree::new();
    let age = Age::new(&t.env);
    write_chart(&t, "app/chart", "web", "1.0.0");
    let secrets = t.write(
        "app/secrets.enc.yaml",
        "db:\n  password: post-render-secret\n",
    );
    age.encrypt(&t.env, &secrets, None);
    t.write(
        "app/post/kustomization.yaml",
        "labels:\n  - pairs: {team: payments}\npatches:\n  - path: replicas.yaml\n",
    );
    t.write(
        "app/post/replicas.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web-web}\nspec: {replicas: 5}\n",
    );
    t.write(
        "app/ferry.yaml",
        "helm:\n  chart: {path: chart}\n  releaseName: web\n  valuesFiles: [secrets.enc.yaml]\n  postRender: {kustomization: post}\n",
    );
    let mut req = t.request("app");
    req.age_keys = Some(age.keys());
    let manifests = ferry_engine::render::render(&req).expect("render");
    let deployment = json(find(&manifests, "Deployment", "web-web"));
    assert_eq!(deployment["spec"]["replicas"], 5);
    assert_eq!(deployment["metadata"]["labels"]["team"], "payments");
    let secret = json(find(&manifests, "Secret", "web-db"));
    assert_eq!(secret["metadata"]["labels"]["team"], "payments");
    assert_eq!(
        b64decode(&secret["data"]["password"]),
        "post-render-secret",
        "masked while on disk, restored after"
    );
}
