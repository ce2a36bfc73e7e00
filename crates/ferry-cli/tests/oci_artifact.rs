//! OCI artifacts end to end (issue 15.2), on the testenv's real registry and control plane with
//! an in-process agent: `ferry push artifact` packs a directory in Flux's format (checked with
//! `crane manifest`), a Release deploys it through an OCISource, a new push under the same tag
//! is applied, a hostile artifact under that tag is refused with a status that names the entry
//! while the last good revision stays applied, and an artifact built with `crane` in Flux's
//! documented format (what `flux push artifact` makes; see testenv/README.md for why the
//! `flux` CLI itself is not built) deploys the same way.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferry_agent::{Agent, AgentOptions};
use ferry_api::common::{READY, find_condition};
use ferry_api::{OCISource, Release};
use ferry_engine::source::oci;
use ferry_engine::source::registry::artifacts::sha256_digest;
use ferry_engine::source::registry::{ConnectOptions, Credentials, Registries, Target};
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

fn ferry(env: &TestEnv, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("KUBECONFIG", env.kubeconfig())
        // No docker config of the machine's user: the testenv registry is anonymous.
        .env("DOCKER_CONFIG", "/nonexistent")
        .output()
        .expect("run ferry");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn crane(env: &TestEnv, args: &[&str], stdin: Option<&[u8]>) -> String {
    let mut child = Command::new(env.tool("crane"))
        .args(args)
        .env("DOCKER_CONFIG", "/nonexistent")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run crane");
    if let Some(input) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        pipe.write_all(input).expect("crane stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("crane");
    assert!(
        out.status.success(),
        "crane {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn write_app(dir: &Path, value: &str) {
    std::fs::write(
        dir.join("cm.yaml"),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  value: \"{value}\"\n"
        ),
    )
    .expect("write");
}

async fn install_crds(client: &Client) {
    ferry_testsupport::install_crds(client, &ferry_agent::crds::all(), "ferry-oci-tests").await;
}

async fn grant_admin(client: &Client, ns: &str) {
    let api: Api<k8s_openapi::api::rbac::v1::RoleBinding> = Api::namespaced(client.clone(), ns);
    let binding = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "default-admin", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}],
    });
    api.patch(
        "default-admin",
        &PatchParams::apply("ferry-oci-tests").force(),
        &Patch::Apply(&binding),
    )
    .await
    .expect("RoleBinding");
}

async fn start_agent(env: &TestEnv, ns: &str) -> (Agent, tempfile::TempDir) {
    let cache = tempfile::tempdir().expect("cache");
    let mut options = AgentOptions::for_kubeconfig(env.kubeconfig(), cache.path().to_path_buf());
    options.watch_namespaces = vec![ns.to_string()];
    options.min_interval = Duration::from_secs(1);
    let agent = Agent::start(options).await.expect("agent starts");
    (agent, cache)
}

async fn create_source_and_release(client: &Client, ns: &str, repository: &str, tag: &str) {
    let sources: Api<OCISource> = Api::namespaced(client.clone(), ns);
    let source: OCISource = serde_json::from_value(serde_json::json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "OCISource",
        "metadata": {"name": "app"},
        "spec": {"url": format!("oci://{repository}"), "ref": {"tag": tag}, "interval": "2s",
                 "timeout": "20s", "insecure": true},
    }))
    .expect("OCISource");
    sources
        .create(&PostParams::default(), &source)
        .await
        .expect("create OCISource");
    let releases: Api<Release> = Api::namespaced(client.clone(), ns);
    let release: Release = serde_json::from_value(serde_json::json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": "app"},
        "spec": {"sourceRef": {"kind": "OCISource", "name": "app"}, "path": ".",
                 "interval": "1m", "retryInterval": "2s", "prune": true},
    }))
    .expect("Release");
    releases
        .create(&PostParams::default(), &release)
        .await
        .expect("create Release");
}

/// Wait until the Release is Ready with `revision` applied and the ConfigMap holds `value`.
async fn wait_applied(client: &Client, ns: &str, revision: &str, value: &str) {
    let releases: Api<Release> = Api::namespaced(client.clone(), ns);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("Release {ns}/app at {revision} with value {value}"),
        Duration::from_secs(90),
        || {
            let (releases, configmaps) = (releases.clone(), configmaps.clone());
            async move {
                let r = releases.get("app").await?;
                let status = r.status.clone().unwrap_or_default();
                let ready = find_condition(&status.conditions, READY)
                    .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
                let cm = configmaps.get_opt("app").await?;
                let live = cm
                    .and_then(|c| c.data)
                    .and_then(|d| d.get("value").cloned());
                if status.last_applied_revision.as_deref() == Some(revision)
                    && ready.as_ref().is_some_and(|(s, _, _)| s == "True")
                    && live.as_deref() == Some(value)
                {
                    return Ok(Some(()));
                }
                anyhow::bail!(
                    "ready={ready:?} applied={:?} value={live:?}",
                    status.last_applied_revision
                )
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// `<digest>` from `ferry push artifact`'s stdout line `oci://…:tag@<digest>`.
fn pushed_digest(stdout: &str) -> String {
    stdout
        .trim()
        .rsplit_once('@')
        .map(|(_, d)| d.to_string())
        .unwrap_or_else(|| panic!("no digest in {stdout:?}"))
}

/// A gzip tarball with one `../` entry, written raw (an attacker's tarball).
fn dotdot_layer() -> Vec<u8> {
    let mut header = tar::Header::new_ustar();
    let name = b"../../escaped.yaml";
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    let data = b"kind: ConfigMap\n";
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    let mut tar = header.as_bytes().to_vec();
    tar.extend_from_slice(data);
    tar.resize(tar.len().div_ceil(512) * 512 + 1024, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    gz.finish().expect("gzip")
}

async fn push_hostile(repository: &str, tag: &str) {
    let registries = Registries::default();
    let target = Target::new(
        repository,
        Credentials::Anonymous,
        ConnectOptions {
            insecure: true,
            ca_pem: None,
        },
    );
    let t = Duration::from_secs(20);
    let layer = dotdot_layer();
    registries
        .push_blob(&target, &sha256_digest(&layer), &layer, t)
        .await
        .expect("layer");
    registries
        .push_blob(&target, &sha256_digest(b"{}"), b"{}", t)
        .await
        .expect("config");
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": oci::OCI_MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": oci::FLUX_CONFIG_MEDIA_TYPE, "digest": sha256_digest(b"{}"), "size": 2},
        "layers": [{"mediaType": oci::FLUX_CONTENT_MEDIA_TYPE, "digest": sha256_digest(&layer), "size": layer.len()}],
    });
    registries
        .push_manifest(
            &target,
            tag,
            oci::OCI_MANIFEST_MEDIA_TYPE,
            &serde_json::to_vec(&manifest).expect("json"),
            t,
        )
        .await
        .expect("manifest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ferry_push_artifact_deploys_through_an_ocisource_and_follows_the_tag() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "oci").await;
    grant_admin(&client, &ns.name).await;
    let repository = format!("{}/oci-e2e/{}", env.var("FERRY_REGISTRY"), ns.name);
    let dir = tempfile::tempdir().expect("dir");
    write_app(dir.path(), "one");
    let url = format!("oci://{repository}:stable");
    let (code, out, err) = ferry(
        &env,
        &[
            "push",
            "artifact",
            &url,
            "--path",
            &dir.path().display().to_string(),
            "--source",
            "https://git.example/team/app",
            "--revision",
            "main@sha1:1111111111111111111111111111111111111111",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let first = pushed_digest(&out);
    // Flux's format, as crane reads it back.
    let manifest: serde_json::Value = serde_json::from_str(&crane(
        &env,
        &["manifest", &format!("{repository}:stable")],
        None,
    ))
    .expect("manifest JSON");
    assert_eq!(manifest["config"]["mediaType"], oci::FLUX_CONFIG_MEDIA_TYPE);
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        oci::FLUX_CONTENT_MEDIA_TYPE
    );
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.source"],
        "https://git.example/team/app"
    );
    assert_eq!(
        crane(&env, &["digest", &format!("{repository}:stable")], None).trim(),
        first
    );
    // Reproducible: the same directory pushed again (new mtimes) gives the same digest.
    write_app(dir.path(), "one");
    let (code, again, err) = ferry(
        &env,
        &[
            "push",
            "artifact",
            &format!("oci://{repository}:again"),
            "--path",
            &dir.path().display().to_string(),
            "--source",
            "https://git.example/team/app",
            "--revision",
            "main@sha1:1111111111111111111111111111111111111111",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(pushed_digest(&again), first);

    let (agent, _cache) = start_agent(&env, &ns.name).await;
    create_source_and_release(&client, &ns.name, &repository, "stable").await;
    wait_applied(&client, &ns.name, &format!("stable@{first}"), "one").await;
    let sources: Api<OCISource> = Api::namespaced(client.clone(), &ns.name);
    let status = sources
        .get("app")
        .await
        .expect("source")
        .status
        .unwrap_or_default();
    assert_eq!(
        status.revision.as_deref(),
        Some(format!("stable@{first}").as_str())
    );
    assert_eq!(
        status.origin_revision.as_deref(),
        Some("main@sha1:1111111111111111111111111111111111111111")
    );

    // A new push under the same tag is pulled on the interval and applied.
    write_app(dir.path(), "two");
    let (code, out, err) = ferry(
        &env,
        &[
            "push",
            "artifact",
            &url,
            "--path",
            &dir.path().display().to_string(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let second = pushed_digest(&out);
    assert_ne!(second, first);
    wait_applied(&client, &ns.name, &format!("stable@{second}"), "two").await;

    // A hostile artifact under the tag: refused with a status naming the entry; the last good
    // revision stays applied, nothing of the hostile one is.
    push_hostile(&repository, "stable").await;
    let refused = wait_for(
        "OCISource refuses the hostile artifact",
        Duration::from_secs(60),
        || {
            let sources = sources.clone();
            async move {
                let s = sources.get("app").await?;
                let c = find_condition(&s.status.clone().unwrap_or_default().conditions, READY)
                    .cloned();
                match c {
                    Some(c) if c.status == "False" => Ok(Some(c)),
                    other => anyhow::bail!("ready: {other:?}"),
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(refused.reason, "UnsafeArtifact", "{}", refused.message);
    assert!(
        refused.message.contains("escaped.yaml")
            && refused.message.contains(&format!(
                "still serving the last good revision stable@{second}"
            )),
        "{}",
        refused.message
    );
    let releases: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    let release = releases.get("app").await.expect("release");
    assert_eq!(
        release
            .status
            .unwrap_or_default()
            .last_applied_revision
            .as_deref(),
        Some(format!("stable@{second}").as_str())
    );
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns.name)
        .get("app")
        .await
        .expect("cm");
    assert_eq!(cm.data.unwrap_or_default()["value"], "two");
    agent.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_artifact_built_with_crane_in_fluxs_format_deploys() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "oci-flux").await;
    grant_admin(&client, &ns.name).await;
    let repository = format!("{}/oci-flux/{}", env.var("FERRY_REGISTRY"), ns.name);
    // The layer as another tool makes it: the system `tar`, with `./` entries and real owners.
    let dir = tempfile::tempdir().expect("dir");
    let content = dir.path().join("content");
    std::fs::create_dir(&content).expect("mkdir");
    write_app(&content, "from-crane");
    let layer = dir.path().join("layer.tar.gz");
    let status = Command::new("tar")
        .arg("czf")
        .arg(&layer)
        .arg("-C")
        .arg(&content)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success());
    // crane uploads the layer (as an OCI image), then the manifest is rewritten to Flux's
    // documented media types and annotations and put under the tag `flux`.
    crane(
        &env,
        &[
            "append",
            "--oci-empty-base",
            "-f",
            &layer.display().to_string(),
            "-t",
            &format!("{repository}:base"),
        ],
        None,
    );
    let mut manifest: serde_json::Value = serde_json::from_str(&crane(
        &env,
        &["manifest", &format!("{repository}:base")],
        None,
    ))
    .expect("manifest");
    manifest["config"]["mediaType"] = oci::FLUX_CONFIG_MEDIA_TYPE.into();
    manifest["layers"][0]["mediaType"] = oci::FLUX_CONTENT_MEDIA_TYPE.into();
    manifest["annotations"] = serde_json::json!({
        "org.opencontainers.image.source": "https://git.example/team/flux-app",
        "org.opencontainers.image.revision": "main@sha1:2222222222222222222222222222222222222222",
    });
    crane(
        &env,
        &[
            "edit",
            "manifest",
            &format!("{repository}:base"),
            "-t",
            &format!("{repository}:flux"),
        ],
        Some(&serde_json::to_vec(&manifest).expect("json")),
    );
    let flux: serde_json::Value = serde_json::from_str(&crane(
        &env,
        &["manifest", &format!("{repository}:flux")],
        None,
    ))
    .expect("manifest");
    assert_eq!(flux["layers"][0]["mediaType"], oci::FLUX_CONTENT_MEDIA_TYPE);
    let digest = crane(&env, &["digest", &format!("{repository}:flux")], None)
        .trim()
        .to_string();

    let (agent, _cache) = start_agent(&env, &ns.name).await;
    create_source_and_release(&client, &ns.name, &repository, "flux").await;
    wait_applied(&client, &ns.name, &format!("flux@{digest}"), "from-crane").await;
    let source = Api::<OCISource>::namespaced(client.clone(), &ns.name)
        .get("app")
        .await
        .expect("source");
    assert_eq!(
        source.status.unwrap_or_default().origin_source.as_deref(),
        Some("https://git.example/team/flux-app")
    );
    agent.stop().await.expect("agent stops");
}

/// The htpasswd registry: `ferry push artifact --username` with the password from the
/// environment; the OCISource's dockerconfigjson Secret is read as the namespace's tenant
/// identity, so before that identity may read it the source fails naming the identity (and
/// never showing the password), without a Secret the registry's 401 is reported, and once the
/// tenant may read the Secret the artifact is pulled and applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registry_credentials_come_from_a_secret_the_tenant_may_read() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "oci-auth").await;
    let registry = env.var("FERRY_REGISTRY_AUTH");
    let password = env.var("FERRY_REGISTRY_AUTH_PASSWORD");
    let user = env.var("FERRY_REGISTRY_AUTH_USER");
    let repository = format!("{registry}/oci-auth/{}", ns.name);
    let dir = tempfile::tempdir().expect("dir");
    write_app(dir.path(), "private");
    let url = format!("oci://{repository}:v1");
    let path = dir.path().display().to_string();
    // Without credentials the push is refused by the registry.
    let (code, _, err) = ferry(&env, &["push", "artifact", &url, "--path", &path]);
    assert_ne!(code, 0, "an anonymous push must fail");
    assert!(err.contains("401") || err.contains("credentials"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "push",
            "artifact",
            &url,
            "--path",
            &path,
            "--username",
            &user,
        ])
        .env("DOCKER_CONFIG", "/nonexistent")
        .env("FERRY_REGISTRY_PASSWORD", &password)
        .output()
        .expect("run ferry");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digest = pushed_digest(&stdout);

    // The Secret in `kubectl create secret docker-registry`'s form (its `username` and
    // `password` fields; the client reads `auth` as well).
    let config =
        serde_json::json!({"auths": {registry.clone(): {"username": user, "password": password}}})
            .to_string();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &ns.name);
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": "regcred"},
        "stringData": {".dockerconfigjson": config},
    }))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    // The agent, and nothing granted yet: the namespace's default service account may not read
    // the Secret.
    let (agent, _cache) = start_agent(&env, &ns.name).await;
    let sources: Api<OCISource> = Api::namespaced(client.clone(), &ns.name);
    for (name, secret_ref) in [("with-secret", Some("regcred")), ("anonymous", None)] {
        let mut spec = serde_json::json!({"url": format!("oci://{repository}"), "ref": {"tag": "v1"},
            "interval": "2s", "timeout": "20s", "insecure": true});
        if let Some(s) = secret_ref {
            spec["secretRef"] = serde_json::json!({"name": s});
        }
        let source: OCISource = serde_json::from_value(serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "OCISource",
            "metadata": {"name": name}, "spec": spec,
        }))
        .expect("source");
        sources
            .create(&PostParams::default(), &source)
            .await
            .expect("create source");
    }
    let condition = |name: &'static str, want: &'static str| {
        let sources = sources.clone();
        async move {
            wait_for(
                &format!("OCISource {name} Ready={want}"),
                Duration::from_secs(60),
                || {
                    let sources = sources.clone();
                    async move {
                        let s = sources.get(name).await?;
                        let c =
                            find_condition(&s.status.clone().unwrap_or_default().conditions, READY)
                                .cloned();
                        match c {
                            Some(c) if c.status == want => Ok(Some(c)),
                            other => anyhow::bail!("ready: {other:?}"),
                        }
                    }
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
        }
    };
    let refused = condition("with-secret", "False").await;
    assert_eq!(refused.reason, "SecretUnreadable", "{}", refused.message);
    assert!(
        refused
            .message
            .contains(&format!("system:serviceaccount:{}:default", ns.name)),
        "names the identity: {}",
        refused.message
    );
    assert!(
        !refused.message.contains(&password),
        "no password in status"
    );
    let anonymous = condition("anonymous", "False").await;
    assert_eq!(
        anonymous.reason, "AuthenticationFailed",
        "{}",
        anonymous.message
    );
    // Once the tenant may read its Secret, the artifact is pulled with it.
    grant_admin(&client, &ns.name).await;
    let ready = condition("with-secret", "True").await;
    assert!(
        ready.message.contains(&format!("v1@{digest}")),
        "{}",
        ready.message
    );
    agent.stop().await.expect("agent stops");
}
