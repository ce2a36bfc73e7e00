//! Test harness for tests against the real testenv control plane (see `testenv/`).
//!
//! [`TestEnv::get`] reads `$FERRY_TESTENV_DIR/env` (default `/tmp/ferry-testenv/env`) written by
//! `testenv/up`, and fails loudly if the environment is not up: tests never silently skip.
//! [`TestNamespace`] gives each test its own namespace and deletes it on drop. [`git`] holds the
//! git server and registry fixtures (repositories, commits, images) every crate's tests share,
//! [`ferry`] ferry's own (CRDs, GitSources, Releases, waits on their status), [`http`] plain
//! HTTP/1.1 (a minimal client, a hostile server).
#![forbid(unsafe_code)]

pub mod ferry;
pub mod git;
pub mod http;
pub mod sshd;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// The running test environment, as described by the env file `testenv/up` writes.
#[derive(Debug, Clone)]
pub struct TestEnv {
    pub dir: PathBuf,
    pub vars: BTreeMap<String, String>,
}

impl TestEnv {
    /// Locate the running environment. Panics with instructions when it is not up, so that a
    /// missing environment is a failure, never a skipped test.
    pub fn get() -> Self {
        match Self::load() {
            Ok(env) => env,
            Err(err) => panic!(
                "the ferry testenv is not up: {err:#}\nstart it with `testenv/up` (CI: .ci/run does this)"
            ),
        }
    }

    fn load() -> Result<Self> {
        let dir = std::env::var_os("FERRY_TESTENV_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp/ferry-testenv"));
        let env_file = dir.join("env");
        let text = std::fs::read_to_string(&env_file)
            .with_context(|| format!("reading {}", env_file.display()))?;
        let mut vars = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            let line = line.strip_prefix("export ").unwrap_or(line);
            if let Some((key, value)) = line.split_once('=') {
                let value = value.trim_matches(|c| c == '"' || c == '\'');
                vars.insert(key.to_string(), value.to_string());
            }
        }
        Ok(Self { dir, vars })
    }

    pub fn var(&self, key: &str) -> String {
        self.vars
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("testenv env file has no {key}"))
    }

    pub fn kubeconfig(&self) -> PathBuf {
        PathBuf::from(self.var("KUBECONFIG"))
    }

    /// Directory holding the Go-built tools (helm, kustomize, sops, age, kubeseal, crane...).
    pub fn bin_dir(&self) -> PathBuf {
        PathBuf::from(self.var("FERRY_TESTENV_BIN"))
    }

    /// Path of a tool binary built by the testenv.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin_dir().join(name)
    }

    /// `PATH` with the testenv tools first, for spawning tools and the ferry binaries.
    pub fn path_env(&self) -> String {
        let current = std::env::var("PATH").unwrap_or_default();
        format!("{}:{current}", self.bin_dir().display())
    }

    /// `kubectl args...` against the testenv as its admin, as a person would run it; stdout.
    /// Panics with kubectl's stderr on failure.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(self.tool("kubectl"))
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// An admin client for the testenv cluster.
    pub async fn client(&self) -> Client {
        install_crypto();
        client_for_kubeconfig(&self.kubeconfig())
            .await
            .unwrap_or_else(|err| panic!("testenv client: {err:#}"))
    }
}

/// Build a client from a kubeconfig file (e.g. one minted for a tenant service account).
pub async fn client_for_kubeconfig(path: &Path) -> Result<Client> {
    install_crypto();
    let kubeconfig =
        Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading {}", path.display()))?;
    Client::try_from(config).context("building client")
}

fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Install a test log subscriber (respects RUST_LOG); harmless if called repeatedly.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_test_writer()
        .try_init();
}

/// A namespace that belongs to one test and is deleted when dropped.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    /// Create `ferry-test-<prefix>-<random>` and return it.
    pub async fn create(client: &Client, prefix: &str) -> Self {
        let name = unique_name(prefix);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": name, "labels": { "ferry.dev/test": "true" } }
        }))
        .unwrap_or_default();
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|err| panic!("creating test namespace {name}: {err}"));
        Self { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let name = self.name.clone();
        // The test's runtime may be about to stop (and a current-thread runtime cannot be
        // blocked on), so delete from a thread with its own runtime and client. The namespace
        // controller finishes the deletion asynchronously; we only wait for the API call.
        let deleted = std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let env = TestEnv::load()?;
                let client = client_for_kubeconfig(&env.kubeconfig()).await?;
                release_ferry_finalizers(&client, &name).await;
                let namespaces: Api<Namespace> = Api::all(client);
                match namespaces.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(response)) if response.code == 404 => Ok(()),
                    Err(err) => Err(err).with_context(|| format!("deleting namespace {name}")),
                }
            })
        })
        .join();
        if let Ok(Err(err)) = deleted {
            eprintln!("warning: test namespace cleanup failed: {err:#}");
        }
    }
}

/// Drop the agent's finalizer from the Releases left in `namespace`: the test's agent has
/// stopped by now, and nothing else would ever remove it, leaving the namespace stuck in
/// Terminating (and its objects loading the shared control plane) for the rest of the run.
async fn release_ferry_finalizers(client: &Client, namespace: &str) {
    use kube::api::{ApiResource, DynamicObject, ListParams};
    use kube::core::GroupVersionKind;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("ferry.dev", "v1alpha1", "Release"),
        "releases",
    );
    let releases: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    // No CRD or no Releases: nothing to release.
    let Ok(list) = releases.list_metadata(&ListParams::default()).await else {
        return;
    };
    for release in list.items {
        let (Some(name), Some(finalizers)) = (release.metadata.name, release.metadata.finalizers)
        else {
            continue;
        };
        let kept: Vec<&String> = finalizers
            .iter()
            .filter(|f| f.as_str() != "ferry.dev/finalizer")
            .collect();
        if kept.len() != finalizers.len() {
            let patch = serde_json::json!({"metadata": {"finalizers": kept}});
            let _ = releases
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
    }
}

/// `ferry-test-<prefix>-<6 random lowercase chars>`, a valid DNS label.
pub fn unique_name(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let suffix: String = (0..6)
        .map(|_| (b'a' + rng.random_range(0..26u8)) as char)
        .collect();
    format!("ferry-test-{prefix}-{suffix}")
}

/// Poll `check` every 250 ms until it returns `Ok(Some(value))` or `timeout` passes.
/// The error says what was awaited and the last observation.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(err) => last_error = Some(err),
        }
        if tokio::time::Instant::now() >= deadline {
            match last_error {
                Some(err) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {err:#}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// [`wait_for`], panicking with its error (what was awaited, the last observation) on timeout.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    wait_for(what, timeout, check)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Server-side apply CRDs (JSON objects, e.g. from `CustomResourceExt::crd`) as
/// `field_manager`, taking over conflicting fields, and wait until each is Established.
pub async fn install_crds(client: &Client, crds: &[serde_json::Value], field_manager: &str) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        let name = crd["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        api.patch(
            &name,
            &PatchParams::apply(field_manager).force(),
            &Patch::Apply(crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        wait_until(
            &format!("CRD {name} established"),
            Duration::from_secs(30),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let crd = api.get(&name).await?;
                    let established = crd
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    Ok(established.then_some(()))
                }
            },
        )
        .await;
    }
}
