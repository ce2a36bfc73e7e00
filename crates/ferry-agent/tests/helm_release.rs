//! Helm charts through the real agent (issue 14, Helm parity with Flux's helm-controller):
//! typed values, install vs upgrade hooks, private HTTP chart repositories and OCI registries
//! with `secretRef` (and the chart cache), and `.Capabilities` from the cluster. Everything runs
//! against the testenv (real API server, git server, registries, `helm`); the chart repository
//! is a small HTTP server in the test serving `index.yaml` and archives made by `helm package`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use common::*;
use ferry_api::{GitSource, Release};
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};

/// One request the chart server saw.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
}

/// A Helm HTTP repository in the test: serves the files of `dir`, records every request, and
/// requires basic auth when `credentials` are given.
struct ChartServer {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    _thread: std::thread::JoinHandle<()>,
}

impl ChartServer {
    fn start(dir: PathBuf, credentials: Option<(&str, &str)>) -> Self {
        use axum::http::{HeaderMap, StatusCode, Uri};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let expected = credentials.map(|(user, password)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )
        });
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
                    let dir = dir.clone();
                    let expected = expected.clone();
                    let record = record.clone();
                    async move {
                        let authorization = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        record.lock().expect("lock").push(Seen {
                            path: uri.path().to_string(),
                            authorization: authorization.clone(),
                        });
                        if expected.is_some() && authorization != expected {
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
        Self {
            url,
            seen,
            _thread: thread,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    fn downloads(&self, suffix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.path.ends_with(suffix))
            .count()
    }
}

fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A chart directory `name` at `version` in `dir` whose one template is `template`.
fn write_chart(dir: &Path, name: &str, version: &str, template: &str) -> PathBuf {
    let chart = dir.join(name);
    std::fs::create_dir_all(chart.join("templates")).expect("mkdir");
    std::fs::write(
        chart.join("Chart.yaml"),
        format!("apiVersion: v2\nname: {name}\nversion: {version}\n"),
    )
    .expect("Chart.yaml");
    std::fs::write(chart.join("templates/objects.yaml"), template).expect("template");
    chart
}

/// `helm package` the chart into `out`; returns the archive.
fn package(env: &TestEnv, chart: &Path, out: &Path) -> PathBuf {
    let text = run(std::process::Command::new(env.tool("helm"))
        .arg("package")
        .arg(chart)
        .arg("--destination")
        .arg(out));
    PathBuf::from(
        text.trim()
            .rsplit(": ")
            .next()
            .expect("helm package prints the path"),
    )
}

/// `helm repo index` over `dir` with chart URLs under `url`.
fn index(env: &TestEnv, dir: &Path, url: &str) {
    run(std::process::Command::new(env.tool("helm"))
        .args(["repo", "index"])
        .arg(dir)
        .args(["--url", url]));
}

const CONFIGMAP_TEMPLATE: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
data:
  chart: {{ .Chart.Name }}-{{ .Chart.Version }}
"#;

async fn configmap(client: &kube::Client, ns: &str, name: &str) -> ConfigMap {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    api.get(name)
        .await
        .unwrap_or_else(|e| panic!("ConfigMap {ns}/{name}: {e}"))
}

fn data(cm: &ConfigMap) -> BTreeMap<String, String> {
    cm.data.clone().unwrap_or_default()
}

/// Ask for a reconcile now (what `ferry sync` does).
async fn request_sync(client: &kube::Client, ns: &str, name: &str, value: &str) {
    let api: Api<Release> = Api::namespaced(client.clone(), ns);
    let patch = serde_json::json!({"metadata": {"annotations": {
        ferry_api::common::RECONCILE_REQUESTED_AT: value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate");
    wait_for(
        &format!("Release {ns}/{name} handled {value}"),
        Duration::from_secs(60),
        || {
            let api = api.clone();
            async move {
                let r = api.get(name).await?;
                let handled = r.status.and_then(|s| s.last_handled_reconcile_at);
                Ok((handled.as_deref() == Some(value)).then_some(()))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Values in `spec.render.helm.values` reach the chart with their YAML types: the string
/// "true" stays a string (a quoted annotation the API server accepts), "8080" a string, 0.5 a
/// number.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_values_keep_their_types() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "helm-types").await;
    let repo = Repo::create(&env, &ns.name);
    let head = repo.commit(
        &[
            (
                "chart/Chart.yaml",
                Some("apiVersion: v2\nname: typed\nversion: 0.1.0\n"),
            ),
            (
                "chart/templates/cm.yaml",
                Some(
                    r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: typed
  annotations:
    {{- toYaml .Values.annotations | nindent 4 }}
data:
  scrape: {{ kindOf (index .Values.annotations "prometheus.io/scrape") | quote }}
  port: {{ kindOf .Values.port | quote }}
  portValue: {{ .Values.port | quote }}
  ratio: {{ kindOf .Values.ratio | quote }}
  enabled: {{ kindOf .Values.enabled | quote }}
"#,
                ),
            ),
        ],
        "chart",
    );
    let (_agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1m"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release(
            "typed",
            "repo",
            "./chart",
            serde_json::json!({"render": {"helm": {"values": {
                "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"},
                "port": "8080",
                "ratio": 0.5,
                "enabled": true,
            }}}}),
        ),
    )
    .await;
    wait_release_applied(&client, &ns.name, "typed", &head, Duration::from_secs(90)).await;
    let cm = configmap(&client, &ns.name, "typed").await;
    let annotations = cm.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.get("prometheus.io/scrape").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        annotations.get("prometheus.io/port").map(String::as_str),
        Some("8080")
    );
    let d = data(&cm);
    assert_eq!(d["scrape"], "string");
    assert_eq!(d["port"], "string");
    assert_eq!(d["portValue"], "8080");
    assert_eq!(d["ratio"], "float64");
    assert_eq!(d["enabled"], "bool");
}

/// Helm's hook events through the agent: `pre-install` runs on the Release's first apply only,
/// `pre-upgrade` on later revisions only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn install_hooks_run_once_and_upgrade_hooks_on_later_revisions() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "helm-hooks").await;
    let repo = Repo::create(&env, &ns.name);
    let hook = |name: &str, event: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  annotations:\n    helm.sh/hook: {event}\ndata:\n  mode: {{{{ .Values.mode | quote }}}}\n"
        )
    };
    let hooks = [
        hook("on-install", "pre-install"),
        hook("on-upgrade", "pre-upgrade"),
        hook("after-install", "post-install"),
    ]
    .join("---\n");
    let first = repo.commit(
        &[
            (
                "chart/Chart.yaml",
                Some("apiVersion: v2\nname: hooked\nversion: 0.1.0\n"),
            ),
            ("chart/values.yaml", Some("mode: one\n")),
            ("chart/templates/hooks.yaml", Some(&hooks)),
            (
                "chart/templates/main.yaml",
                Some(&configmap_yaml("main", "{{ .Values.mode }}")),
            ),
        ],
        "install",
    );
    let (_agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1s"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release("hooked", "repo", "./chart", serde_json::json!({})),
    )
    .await;
    wait_release_applied(&client, &ns.name, "hooked", &first, Duration::from_secs(90)).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let installed = cms.get("on-install").await.expect("pre-install hook ran");
    cms.get("after-install")
        .await
        .expect("post-install hook ran");
    assert!(
        cms.get_opt("on-upgrade").await.expect("get").is_none(),
        "no pre-upgrade hook on the first install"
    );

    let second = repo.commit(&[("chart/values.yaml", Some("mode: two\n"))], "upgrade");
    wait_release_applied(
        &client,
        &ns.name,
        "hooked",
        &second,
        Duration::from_secs(90),
    )
    .await;
    let upgraded = cms.get("on-upgrade").await.expect("pre-upgrade hook ran");
    assert_eq!(data(&upgraded)["mode"], "two");
    let still = cms.get("on-install").await.expect("install hook kept");
    assert_eq!(
        still.metadata.uid, installed.metadata.uid,
        "the pre-install hook did not run again"
    );
    assert_eq!(
        data(&still)["mode"],
        "one",
        "and kept its install-time content"
    );
    assert_eq!(data(&cms.get("main").await.expect("main"))["value"], "two");
}

/// A private Helm HTTP repository with `secretRef`: the agent reads the Secret as the Release's
/// service account, helm authenticates, the chart renders; a second reconcile takes the chart
/// from the cache (the index is read again, the archive is not downloaded again).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn private_http_chart_repository_with_secret_ref_and_the_chart_cache() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "helm-private").await;
    let work = tempfile::tempdir().expect("tempdir");
    let served = tempfile::tempdir().expect("tempdir");
    let chart = write_chart(work.path(), "private-web", "1.2.3", CONFIGMAP_TEMPLATE);
    package(&env, &chart, served.path());
    let server = ChartServer::start(
        served.path().to_path_buf(),
        Some(("chart-reader", "chart-pass-7431")),
    );
    index(&env, served.path(), &server.url);

    let repo = Repo::create(&env, &ns.name);
    let head = repo.commit(
        &[("apps/web/README", Some("chart from a repository\n"))],
        "app",
    );
    let (_agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    secret(
        &client,
        &ns.name,
        "chart-auth",
        &[
            ("username", "chart-reader"),
            ("password", "chart-pass-7431"),
        ],
    )
    .await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1m"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release(
            "web",
            "repo",
            "./apps/web",
            serde_json::json!({"render": {"helm": {
                "releaseName": "web",
                "chart": {"repo": server.url, "name": "private-web", "version": "~1.2",
                          "secretRef": {"name": "chart-auth"}}}}}),
        ),
    )
    .await;
    wait_release_applied(&client, &ns.name, "web", &head, Duration::from_secs(90)).await;
    assert_eq!(
        data(&configmap(&client, &ns.name, "web-settings").await)["chart"],
        "private-web-1.2.3"
    );
    assert_eq!(server.downloads(".tgz"), 1, "{:?}", server.seen());
    let indexes = server.downloads("index.yaml");

    request_sync(&client, &ns.name, "web", "2026-12-02T12:00:00Z").await;
    assert!(
        server.downloads("index.yaml") > indexes,
        "the index is read again"
    );
    assert_eq!(
        server.downloads(".tgz"),
        1,
        "the archive came from the cache: {:?}",
        server.seen()
    );
    // The password never shows in the Release's status.
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    let status =
        serde_json::to_string(&api.get("web").await.expect("release").status).expect("json");
    assert!(!status.contains("chart-pass-7431"), "{status}");
}

/// Attack: the repository's `index.yaml` points the chart's URL at another host. helm fetches
/// the archive from there (as it would for any user), but the Secret's credentials are sent only
/// to the repository's own host: the other host sees no Authorization header.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_chart_urls_on_another_host_never_get_the_credentials() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "helm-hostile").await;
    let work = tempfile::tempdir().expect("tempdir");
    let index_dir = tempfile::tempdir().expect("tempdir");
    let archive_dir = tempfile::tempdir().expect("tempdir");
    let chart = write_chart(work.path(), "lure", "0.1.0", CONFIGMAP_TEMPLATE);
    package(&env, &chart, archive_dir.path());
    // The other host serves the archive to anyone and records what it is sent.
    let elsewhere = ChartServer::start(archive_dir.path().to_path_buf(), None);
    index(&env, archive_dir.path(), &elsewhere.url);
    std::fs::copy(
        archive_dir.path().join("index.yaml"),
        index_dir.path().join("index.yaml"),
    )
    .expect("copy index");
    let repository = ChartServer::start(
        index_dir.path().to_path_buf(),
        Some(("victim", "victim-pass-5520")),
    );

    let repo = Repo::create(&env, &ns.name);
    let head = repo.commit(&[("apps/web/README", Some("lure\n"))], "app");
    let (_agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    secret(
        &client,
        &ns.name,
        "chart-auth",
        &[("username", "victim"), ("password", "victim-pass-5520")],
    )
    .await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1m"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release(
            "web",
            "repo",
            "./apps/web",
            serde_json::json!({"render": {"helm": {
                "chart": {"repo": repository.url, "name": "lure",
                          "secretRef": {"name": "chart-auth"}}}}}),
        ),
    )
    .await;
    wait_release_applied(&client, &ns.name, "web", &head, Duration::from_secs(90)).await;
    assert!(
        repository
            .seen()
            .iter()
            .any(|s| s.path.ends_with("index.yaml") && s.authorization.is_some()),
        "the repository itself got the credentials: {:?}",
        repository.seen()
    );
    let seen = elsewhere.seen();
    assert!(
        seen.iter().any(|s| s.path.ends_with(".tgz")),
        "the archive was fetched from the other host: {seen:?}"
    );
    assert!(
        seen.iter().all(|s| s.authorization.is_none()),
        "credentials sent to another host: {seen:?}"
    );
}

/// Attack: a repository's ferry.yaml may not name a Secret (it would choose which of the
/// tenant's credentials go to which host); and a Release whose service account may not read the
/// Secret gets no credentials (read as the tenant, never as the agent).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_secret_ref_only_from_the_release_and_read_as_the_tenant() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "helm-secretref").await;
    let repo = Repo::create(&env, &ns.name);
    repo.commit(
        &[(
            "apps/web/ferry.yaml",
            Some(
                "helm:\n  chart:\n    repo: http://127.0.0.1:9/charts\n    name: web\n    secretRef: {name: chart-auth}\n",
            ),
        ), ("apps/other/README", Some("an app whose chart comes from spec.render\n"))],
        "hostile ferry.yaml",
    );
    let (_agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    secret(
        &client,
        &ns.name,
        "chart-auth",
        &[("username", "u"), ("password", "tenant-secret-991")],
    )
    .await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1m"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release("from-file", "repo", "./apps/web", serde_json::json!({})),
    )
    .await;
    let r = wait_release_reason(
        &client,
        &ns.name,
        "from-file",
        "RenderFailed",
        Duration::from_secs(60),
    )
    .await;
    let (_, _, message) = ready_state(&r.status.unwrap_or_default().conditions).expect("Ready");
    assert!(
        message.contains("secretRef is only allowed in a Release's spec.render"),
        "{message}"
    );

    // The Release names the Secret itself, but its service account (granted nothing) may not
    // read it.
    create::<Release>(
        &client,
        &ns.name,
        release(
            "no-rights",
            "repo",
            "./apps/other",
            serde_json::json!({"serviceAccountName": "no-rights", "render": {"helm": {"chart": {
                "repo": "http://127.0.0.1:9/charts", "name": "web",
                "secretRef": {"name": "chart-auth"}}}}}),
        ),
    )
    .await;
    let r = wait_release_reason(
        &client,
        &ns.name,
        "no-rights",
        "RenderFailed",
        Duration::from_secs(60),
    )
    .await;
    let (_, _, message) = ready_state(&r.status.unwrap_or_default().conditions).expect("Ready");
    assert!(
        message.contains("cannot read chart credentials Secret") && message.contains("chart-auth"),
        "{message}"
    );
    assert!(!message.contains("tenant-secret-991"), "{message}");
}

/// An OCI registry behind htpasswd (the testenv's second registry): `secretRef` to a
/// `kubernetes.io/dockerconfigjson` Secret, used only for that registry's host.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn private_oci_chart_with_a_docker_config_secret() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "helm-oci").await;
    let registry = env.var("FERRY_REGISTRY_AUTH");
    let user = env.var("FERRY_REGISTRY_AUTH_USER");
    let password = env.var("FERRY_REGISTRY_AUTH_PASSWORD");
    let work = tempfile::tempdir().expect("tempdir");
    let out = tempfile::tempdir().expect("tempdir");
    let home = tempfile::tempdir().expect("tempdir");
    let chart = write_chart(work.path(), "oci-web", "2.0.1", CONFIGMAP_TEMPLATE);
    let archive = package(&env, &chart, out.path());
    let helm = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env.tool("helm"));
        cmd.args(args)
            .env("HELM_CONFIG_HOME", home.path().join("config"))
            .env("HELM_CACHE_HOME", home.path().join("cache"))
            .env("HELM_REGISTRY_CONFIG", home.path().join("registry.json"));
        cmd
    };
    let mut login = helm(&[
        "registry",
        "login",
        &registry,
        "--plain-http",
        "--username",
        &user,
        "--password-stdin",
    ]);
    login
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = login.spawn().expect("helm registry login");
    {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(password.as_bytes())
            .expect("password");
    }
    let done = child.wait_with_output().expect("login");
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let path = ferry_testsupport::unique_name("charts");
    let repository = format!("oci://{registry}/{path}");
    run(&mut helm(&[
        "push",
        &archive.display().to_string(),
        &repository,
        "--plain-http",
    ]));

    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let docker_config = serde_json::json!({"auths": {
        registry.clone(): {"auth": auth},
        "elsewhere.example": {"username": "x", "password": "y"},
    }})
    .to_string();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &ns.name);
    secrets
        .create(
            &Default::default(),
            &serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "registry-auth"},
                "type": "kubernetes.io/dockerconfigjson",
                "stringData": {".dockerconfigjson": docker_config},
            }))
            .expect("secret"),
        )
        .await
        .expect("create secret");

    let repo = Repo::create(&env, &ns.name);
    let head = repo.commit(&[("apps/web/README", Some("oci\n"))], "app");
    let (_agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1m"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release(
            "web",
            "repo",
            "./apps/web",
            serde_json::json!({"render": {"helm": {
                "releaseName": "web",
                "chart": {"oci": format!("{repository}/oci-web"), "version": "2.0.1",
                          "plainHttp": true, "secretRef": {"name": "registry-auth"}}}}}),
        ),
    )
    .await;
    wait_release_applied(&client, &ns.name, "web", &head, Duration::from_secs(90)).await;
    assert_eq!(
        data(&configmap(&client, &ns.name, "web-settings").await)["chart"],
        "oci-web-2.0.1"
    );
}

/// `.Capabilities` as `helm install` would see them: a chart that renders a Widget only when the
/// cluster serves its CRD, and branches on the Kubernetes version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn charts_see_the_clusters_api_versions_and_kube_version() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "helm-caps").await;
    let group = format!("{}.caps.ferry.dev", ns.name);
    let crd = widget_crd(&group);
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    crds.patch(
        &format!("widgets.{group}"),
        &PatchParams::apply("helm-caps-test").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("CRD");
    wait_for("CRD established", Duration::from_secs(30), || {
        let crds = crds.clone();
        let name = format!("widgets.{group}");
        async move {
            let crd = crds.get(&name).await?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            Ok(established.then_some(()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let version = client.apiserver_version().await.expect("version");
    let template = format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: caps
data:
  widgets: {{{{ .Capabilities.APIVersions.Has "{group}/v1/Widget" | quote }}}}
  widgetsGroup: {{{{ .Capabilities.APIVersions.Has "{group}/v1" | quote }}}}
  absent: {{{{ .Capabilities.APIVersions.Has "nothing.example.com/v1" | quote }}}}
  kubeVersion: {{{{ .Capabilities.KubeVersion.Version | quote }}}}
  modern: {{{{ semverCompare ">=1.30-0" .Capabilities.KubeVersion.Version | quote }}}}
"#
    );
    let repo = Repo::create(&env, &ns.name);
    let head = repo.commit(
        &[
            (
                "chart/Chart.yaml",
                Some("apiVersion: v2\nname: caps\nversion: 0.1.0\n"),
            ),
            ("chart/templates/cm.yaml", Some(&template)),
        ],
        "chart",
    );
    let (_agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1m"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release("caps", "repo", "./chart", serde_json::json!({})),
    )
    .await;
    wait_release_applied(&client, &ns.name, "caps", &head, Duration::from_secs(90)).await;
    let d = data(&configmap(&client, &ns.name, "caps").await);
    let _ = crds
        .delete(&format!("widgets.{group}"), &Default::default())
        .await;
    assert_eq!(d["widgets"], "true", "{d:?}");
    assert_eq!(d["widgetsGroup"], "true", "{d:?}");
    assert_eq!(d["absent"], "false", "{d:?}");
    assert_eq!(d["kubeVersion"], version.git_version, "{d:?}");
    assert_eq!(d["modern"], "true", "{d:?}");
}

fn widget_crd(group: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    })
}
