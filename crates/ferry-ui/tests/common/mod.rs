//! Shared by ferry-ui's tests against the real test environment: an app deployed from the
//! testenv git server by an in-process agent (GitSource + Release: a Deployment on the kwok
//! nodes, a ConfigMap and a Secret whose value must never reach the browser), a running
//! dashboard, raw HTTP requests (any Host/Origin header), and headless Chromium (Debian's
//! package) driven over the DevTools protocol by chromiumoxide.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::page::{Page, ScreenshotParams};
use ferry_agent::{Agent, AgentOptions};
use ferry_api::common::{READY, find_condition};
use ferry_api::{GitSource, Release};
use ferry_testsupport::git::Repo;
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use futures::StreamExt;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

/// The value planted in Secrets: it must appear in no page and no SSE payload.
pub fn planted_secret() -> String {
    "ui-planted-s3cret-value-7c1f".to_string()
}

pub const SECRET_B64_PLANTED: &str = "dWktcGxhbnRlZC1zM2NyZXQtdmFsdWUtN2MxZg==";

pub fn deployment_yaml(replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      tolerations:\n        - {{key: kwok.x-k8s.io/node, operator: Exists}}\n      containers:\n        - name: app\n          image: example.invalid/web:1\n"
    )
}

pub fn configmap_yaml(value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  value: \"{value}\"\n"
    )
}

pub fn secret_yaml() -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  password: \"{}\"\n",
        planted_secret()
    )
}

/// One deployed app: namespace, repository, agent, Release `web` at commit `first`.
pub struct Fixture {
    pub env: TestEnv,
    pub client: Client,
    pub ns: TestNamespace,
    pub repo: Repo,
    pub agent: Option<Agent>,
    pub first: String,
    _cache: tempfile::TempDir,
}

impl Fixture {
    pub async fn stop(mut self) {
        if let Some(agent) = self.agent.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), agent.stop()).await;
        }
    }
}

async fn grant_admin(client: &Client, ns: &str, sa: &str) {
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
        &PatchParams::apply("ferry-ui-tests").force(),
        &Patch::Apply(&binding),
    )
    .await
    .unwrap_or_else(|e| panic!("RoleBinding {ns}/{name}: {e}"));
}

/// Deploy the app through the real agent and wait until the Release is Ready at the commit.
pub async fn deploy(prefix: &str) -> Fixture {
    deploy_with(prefix, serde_json::json!({})).await
}

/// [`deploy`] with more fields in the Release's spec (`extra_spec`, e.g. a drift policy).
pub async fn deploy_with(prefix: &str, extra_spec: serde_json::Value) -> Fixture {
    ferry_testsupport::init_logging();
    ferry_engine::install_crypto_provider();
    let env = TestEnv::get();
    let client = env.client().await;
    ferry_testsupport::install_crds(&client, &ferry_agent::crds::all(), "ferry-ui-tests").await;
    let ns = TestNamespace::create(&client, prefix).await;
    let repo = Repo::create(&env, &ns.name);
    let first = repo.commit(
        &[
            ("app/deployment.yaml", Some(&deployment_yaml(2))),
            ("app/settings.yaml", Some(&configmap_yaml("one"))),
            ("app/secret.yaml", Some(&secret_yaml())),
        ],
        "first",
    );
    let cache = tempfile::tempdir().expect("cache dir");
    let mut options = AgentOptions::for_kubeconfig(env.kubeconfig(), cache.path().to_path_buf());
    options.watch_namespaces = vec![ns.name.clone()];
    grant_admin(&client, &ns.name, &options.default_service_account).await;
    let agent = Agent::start(options).await.expect("agent starts");
    // The git credentials: a Secret too (its values must not reach the browser either).
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &ns.name);
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "git-auth"},
        "stringData": {"username": env.var("FERRY_GIT_USER"), "password": env.var("FERRY_GIT_PASSWORD"), "planted": planted_secret()},
    });
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(secret).expect("secret"),
        )
        .await
        .expect("git secret");
    let sources: Api<GitSource> = Api::namespaced(client.clone(), &ns.name);
    let source = serde_json::json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "GitSource", "metadata": {"name": "repo"},
        "spec": {"url": repo.url, "ref": {"branch": "main"}, "interval": "2s", "timeout": "20s", "secretRef": {"name": "git-auth"}},
    });
    sources
        .create(
            &PostParams::default(),
            &serde_json::from_value(source).expect("gitsource"),
        )
        .await
        .expect("create GitSource");
    let releases: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    let mut spec = serde_json::json!({"sourceRef": {"kind": "GitSource", "name": "repo"}, "path": "./app", "interval": "1m", "retryInterval": "2s", "prune": true});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    let release = serde_json::json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "Release", "metadata": {"name": "web"},
        "spec": spec,
    });
    releases
        .create(
            &PostParams::default(),
            &serde_json::from_value(release).expect("release"),
        )
        .await
        .expect("create Release");
    wait_applied(&client, &ns.name, &first).await;
    Fixture {
        env,
        client,
        ns,
        repo,
        agent: Some(agent),
        first,
        _cache: cache,
    }
}

/// Wait until Release `web` is Ready with `sha` applied.
pub async fn wait_applied(client: &Client, ns: &str, sha: &str) -> Release {
    let api: Api<Release> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("Release {ns}/web Ready at {sha}"),
        Duration::from_secs(90),
        || {
            let api = api.clone();
            async move {
                let r = api.get("web").await?;
                let status = r.status.clone().unwrap_or_default();
                let ready =
                    find_condition(&status.conditions, READY).is_some_and(|c| c.status == "True");
                let applied = status
                    .last_applied_revision
                    .as_deref()
                    .is_some_and(|rev| rev.ends_with(sha));
                if ready && applied {
                    return Ok(Some(r));
                }
                anyhow::bail!("not yet: lastApplied={:?}", status.last_applied_revision)
            }
        },
    )
    .await
    .expect("Release applied")
}

/// Start a dashboard as the identity of `kubeconfig`, watching `namespaces`.
pub async fn start_ui(kubeconfig: PathBuf, namespaces: &[&str]) -> ferry_ui::RunningUi {
    ferry_ui::start(ferry_ui::UiOptions {
        cluster: ferry_engine::cluster::ClusterOptions {
            kubeconfig: Some(kubeconfig),
            context: None,
        },
        address: "127.0.0.1".to_string(),
        port: 0,
        namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
    })
    .await
    .expect("ferry ui starts")
}

/// The token of a running dashboard (from its printed URL).
pub fn token_of(ui: &ferry_ui::RunningUi) -> String {
    ui.url
        .split("token=")
        .nth(1)
        .expect("token in URL")
        .to_string()
}

/// A raw HTTP/1.1 request: every header is the test's choice (Host included). Returns status,
/// the response head and the body read until the server closes or `read_for` passes.
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
    read_for: Duration,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to ferry ui");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    let deadline = Instant::now() + read_for;
    let mut buf = [0u8; 16384];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => break,
        }
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// Where screenshots go: `target/ui-screenshots/` of the workspace (kept as CI artifacts).
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// Headless Chromium from the system (Debian's `chromium`; `FERRY_CHROMIUM` overrides).
pub struct Chrome {
    pub browser: Browser,
    handler: tokio::task::JoinHandle<()>,
    _profile: tempfile::TempDir,
}

impl Chrome {
    pub async fn launch() -> Chrome {
        let executable =
            std::env::var("FERRY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
        assert!(
            std::path::Path::new(&executable).exists(),
            "{executable} not found: install Debian's chromium (`apt-get install -y chromium`, .ci/run does) or set FERRY_CHROMIUM"
        );
        let profile = tempfile::tempdir().expect("profile dir");
        let config = BrowserConfig::builder()
            .chrome_executable(&executable)
            .no_sandbox()
            .new_headless_mode()
            .user_data_dir(profile.path())
            .window_size(1280, 900)
            .request_timeout(Duration::from_secs(30))
            .arg("--disable-gpu")
            .arg("--disable-dev-shm-usage")
            .build()
            .expect("browser config");
        let (browser, mut handler) = Browser::launch(config).await.expect("chromium starts");
        let handler = tokio::spawn(async move {
            while let Some(event) = handler.next().await {
                if event.is_err() {
                    break;
                }
            }
        });
        Chrome {
            browser,
            handler,
            _profile: profile,
        }
    }

    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.browser.close()).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.browser.wait()).await;
        self.handler.abort();
    }
}

/// Evaluate a JS expression returning JSON.
pub async fn js<T: serde::de::DeserializeOwned>(page: &Page, expression: &str) -> T {
    page.evaluate(expression)
        .await
        .unwrap_or_else(|e| panic!("evaluating {expression}: {e}"))
        .into_value()
        .unwrap_or_else(|e| panic!("result of {expression}: {e}"))
}

/// Run a JS statement for its effect (its value, often undefined, is ignored).
pub async fn run_js(page: &Page, expression: &str) {
    page.evaluate(expression)
        .await
        .unwrap_or_else(|e| panic!("evaluating {expression}: {e}"));
}

/// Wait (with a deadline) until a JS expression is true in the page.
pub async fn wait_js(page: &Page, expression: &str, what: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let ok: bool = page
            .evaluate(expression)
            .await
            .ok()
            .and_then(|r| r.into_value().ok())
            .unwrap_or(false);
        if ok {
            return;
        }
        if Instant::now() >= deadline {
            let body: String = js(page, "document.body ? document.body.innerText : ''").await;
            panic!(
                "timed out after {timeout:?} waiting for {what} ({expression}); page text:\n{body}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn screenshot(page: &Page, name: &str) -> PathBuf {
    let path = screenshot_dir().join(format!("{name}.png"));
    page.save_screenshot(ScreenshotParams::builder().full_page(true).build(), &path)
        .await
        .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
    path
}
