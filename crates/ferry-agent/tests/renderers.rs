//! Every renderer through the agent, end to end: a real agent (in-process), the testenv git
//! server, the real `kustomize`, `helm`, `sops`, `age-keygen` and `kubeseal` binaries, and the
//! real API server. Each app is a repository path a Release deploys:
//! - a kustomize overlay (base + overlay with a name prefix, labels, a patch and a generator);
//! - a SOPS-encrypted (age) Secret manifest, encrypted by the real `sops`;
//! - a Helm chart whose ferry.yaml names a SOPS-encrypted values file;
//! - a SealedSecret sealed by the real `kubeseal` with the agent's certificate, unsealed by the
//!   agent's unsealer into the Secret.
//!
//! Decrypted values never reach the Releases' status.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use ferry_api::{GitSource, Release};
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams};

const SOPS_FILE_PASSWORD: &str = "s0ps-file-p4ss-71c2";
const SOPS_VALUES_TOKEN: &str = "s0ps-values-t0ken-93ab";
const SEALED_PASSWORD: &str = "s3aled-p4ss-5d6e";

fn run(cmd: &mut Command, input: Option<&[u8]>) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(input) = input {
        stdin.write_all(input).expect("write stdin");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A new age identity from the real `age-keygen`: (the key file's text, the recipient).
fn age_identity(env: &TestEnv) -> (String, String) {
    let text = run(&mut Command::new(env.tool("age-keygen")), None);
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("age-keygen prints the public key")
        .trim()
        .to_string();
    (text, recipient)
}

/// Encrypt YAML with the real `sops` for `recipient` (`regex`: which keys; `None`: all).
fn sops_encrypt(
    env: &TestEnv,
    dir: &Path,
    recipient: &str,
    plain: &str,
    regex: Option<&str>,
) -> String {
    let clear = dir.join("clear.yaml");
    std::fs::write(&clear, plain).expect("write");
    let mut cmd = Command::new(env.tool("sops"));
    cmd.env_remove("SOPS_AGE_KEY")
        .env_remove("SOPS_AGE_KEY_FILE")
        .args(["--encrypt", "--age", recipient])
        .args(["--input-type", "yaml", "--output-type", "yaml"]);
    if let Some(regex) = regex {
        cmd.args(["--encrypted-regex", regex]);
    }
    let encrypted = run(cmd.arg(&clear), None);
    std::fs::remove_file(&clear).expect("remove");
    assert!(encrypted.contains("ENC[AES256_GCM"), "{encrypted}");
    encrypted
}

fn decode(secret: &Secret, key: &str) -> String {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).to_string())
        .unwrap_or_default()
}

const BASE_KUSTOMIZATION: &str = "resources:\n  - config.yaml\n";
const BASE_CONFIG: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  env: base\n  shared: from-base\n";
const OVERLAY_KUSTOMIZATION: &str = r#"resources:
  - ../../base
namePrefix: prod-
labels:
  - pairs:
      tier: prod
    includeSelectors: false
patches:
  - path: env.yaml
configMapGenerator:
  - name: settings
    literals:
      - LOG_LEVEL=warn
"#;
const OVERLAY_PATCH: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  env: prod\n";

const CHART_YAML: &str = "apiVersion: v2\nname: vault-client\nversion: 0.1.0\n";
const CHART_VALUES: &str = "token: \"\"\nreplicas: 1\n";
const CHART_SECRET: &str = r#"apiVersion: v1
kind: Secret
metadata:
  name: vault-client
stringData:
  token: {{ .Values.token | quote }}
  replicas: {{ .Values.replicas | quote }}
"#;
const CHART_FERRY_YAML: &str = "renderer: helm\nhelm:\n  valuesFiles: [secrets.enc.yaml]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kustomize_overlay_sops_files_and_sops_helm_values_through_the_agent() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "renderers").await;
    let scratch = tempfile::tempdir().expect("scratch");
    let (age_key, recipient) = age_identity(&env);
    let sops_secret = sops_encrypt(
        &env,
        scratch.path(),
        &recipient,
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: {SOPS_FILE_PASSWORD}\n"
        ),
        Some("^(data|stringData)$"),
    );
    let sops_values = sops_encrypt(
        &env,
        scratch.path(),
        &recipient,
        &format!("token: {SOPS_VALUES_TOKEN}\nreplicas: 3\n"),
        None,
    );
    let repo = Repo::create(&env, &ns.name);
    let sha = repo.commit(
        &[
            ("base/kustomization.yaml", Some(BASE_KUSTOMIZATION)),
            ("base/config.yaml", Some(BASE_CONFIG)),
            (
                "overlays/prod/kustomization.yaml",
                Some(OVERLAY_KUSTOMIZATION),
            ),
            ("overlays/prod/env.yaml", Some(OVERLAY_PATCH)),
            ("sops/db.enc.yaml", Some(&sops_secret)),
            ("helm/Chart.yaml", Some(CHART_YAML)),
            ("helm/values.yaml", Some(CHART_VALUES)),
            ("helm/templates/secret.yaml", Some(CHART_SECRET)),
            ("helm/ferry.yaml", Some(CHART_FERRY_YAML)),
            ("helm/secrets.enc.yaml", Some(&sops_values)),
        ],
        "three renderers",
    );
    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    secret(&client, &ns.name, "sops-age", &[("age.agekey", &age_key)]).await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1m"),
    )
    .await;
    let decryption =
        serde_json::json!({"decryption": {"provider": "sops", "secretRef": {"name": "sops-age"}}});
    create::<Release>(
        &client,
        &ns.name,
        release("overlay", "repo", "./overlays/prod", serde_json::json!({})),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release("sops-file", "repo", "./sops", decryption.clone()),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release("sops-values", "repo", "./helm", decryption),
    )
    .await;
    let mut statuses = Vec::new();
    for name in ["overlay", "sops-file", "sops-values"] {
        let r = wait_release_applied(&client, &ns.name, name, &sha, Duration::from_secs(120)).await;
        statuses.push(serde_json::to_string(&r.status).expect("json"));
    }

    // kustomize: the base through the overlay, prefixed, labelled, patched, plus the generator.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let config = cms
        .get("prod-web-config")
        .await
        .expect("the overlay's ConfigMap");
    assert_eq!(
        config.labels().get("tier").map(String::as_str),
        Some("prod")
    );
    let data = config.data.clone().unwrap_or_default();
    assert_eq!(data.get("env").map(String::as_str), Some("prod"), "patched");
    assert_eq!(data.get("shared").map(String::as_str), Some("from-base"));
    assert!(
        cms.get_opt("web-config").await.expect("get").is_none(),
        "only the prefixed name"
    );
    let generated: Vec<ConfigMap> = cms
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter(|cm| cm.name_any().starts_with("prod-settings-"))
        .collect();
    assert_eq!(
        generated.len(),
        1,
        "the generated ConfigMap, with kustomize's hash suffix"
    );
    assert_eq!(
        generated[0]
            .data
            .clone()
            .unwrap_or_default()
            .get("LOG_LEVEL")
            .map(String::as_str),
        Some("warn")
    );

    // SOPS file: decrypted with the Release's own key.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let db = secrets.get("db").await.expect("the decrypted Secret");
    assert_eq!(decode(&db, "password"), SOPS_FILE_PASSWORD);
    assert!(
        !db.annotations().keys().any(|k| k.contains("sops")),
        "{:?}",
        db.annotations()
    );

    // SOPS Helm values: decrypted in memory and given to helm, typed (3 is a number there).
    let vault = secrets
        .get("vault-client")
        .await
        .expect("the chart's Secret");
    assert_eq!(decode(&vault, "token"), SOPS_VALUES_TOKEN);
    assert_eq!(decode(&vault, "replicas"), "3");

    for status in &statuses {
        for secret in [SOPS_FILE_PASSWORD, SOPS_VALUES_TOKEN] {
            assert!(!status.contains(secret), "status shows {secret}: {status}");
        }
    }
    agent.stop().await.expect("agent stops");
}

/// The agent's sealing certificate, once its unsealer has loaded (or made) a key.
async fn sealing_certificate(agent: &ferry_agent::Agent) -> String {
    let addr = agent.http_addr;
    wait_for(
        "the unsealer's certificate",
        Duration::from_secs(180),
        || async move {
            let (status, body) = http(addr, "GET", "/v1/cert.pem", &[], b"").await;
            Ok((status == 200 && body.contains("BEGIN CERTIFICATE")).then_some(body))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sealed_secret_from_kubeseal_is_applied_and_unsealed_by_the_agent() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let keys = TestNamespace::create(&client, "renderers-keys").await;
    let ns = TestNamespace::create(&client, "renderers-sealed").await;
    let (agent, _cache) = start_agent(&env, &[&keys.name, &ns.name], |o| {
        o.namespace = keys.name.clone();
        o.sealed_secrets = true;
        // Other test binaries create a decoy bitnami Deployment at times (attack_tenancy); this
        // test is about the format, not that refusal.
        o.sealed_secrets_despite_bitnami = true;
    })
    .await;
    // `admin` does not cover bitnami's kind: the tenant needs a Role for it (docs/agent.md).
    let role: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(client.clone(), &ns.name);
    role.create(
        &Default::default(),
        &serde_json::from_value(serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "sealedsecrets"},
            "rules": [{"apiGroups": ["bitnami.com"], "resources": ["sealedsecrets"], "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]}],
        }))
        .expect("role"),
    )
    .await
    .expect("create role");
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(client.clone(), &ns.name);
    bindings
        .create(
            &Default::default(),
            &serde_json::from_value(serde_json::json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "sealedsecrets"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "sealedsecrets"},
                "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns.name}],
            }))
            .expect("binding"),
        )
        .await
        .expect("create binding");

    // Sealed offline by the real kubeseal with the certificate the agent serves.
    let cert = sealing_certificate(&agent).await;
    let scratch = tempfile::tempdir().expect("scratch");
    let cert_file = scratch.path().join("cert.pem");
    std::fs::write(&cert_file, &cert).expect("cert");
    let plain = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db-credentials\n  namespace: {}\ntype: Opaque\nstringData:\n  password: {SEALED_PASSWORD}\n",
        ns.name
    );
    let sealed = run(
        Command::new(env.tool("kubeseal"))
            .env("KUBECONFIG", scratch.path().join("no-kubeconfig"))
            .arg("--cert")
            .arg(&cert_file)
            .args(["--format", "yaml"]),
        Some(plain.as_bytes()),
    );
    assert!(
        sealed.contains("kind: SealedSecret") && !sealed.contains(SEALED_PASSWORD),
        "{sealed}"
    );
    let repo = Repo::create(&env, &ns.name);
    let sha = repo.commit(&[("sealed/db.yaml", Some(&sealed))], "a sealed secret");
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
        release("sealed", "repo", "./sealed", serde_json::json!({})),
    )
    .await;
    let applied =
        wait_release_applied(&client, &ns.name, "sealed", &sha, Duration::from_secs(120)).await;
    let inventory = applied.status.clone().unwrap_or_default().inventory;
    assert!(
        inventory
            .iter()
            .any(|e| e.kind == "SealedSecret" && e.name == "db-credentials"),
        "{inventory:?}"
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let unsealed = wait_for("the unsealed Secret", Duration::from_secs(60), || {
        let secrets = secrets.clone();
        async move { Ok(secrets.get_opt("db-credentials").await?) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(decode(&unsealed, "password"), SEALED_PASSWORD);
    // Owned by the SealedSecret (garbage-collected with it), as bitnami's controller does it.
    let owners = unsealed
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default();
    assert!(
        owners
            .iter()
            .any(|o| o.kind == "SealedSecret" && o.name == "db-credentials"),
        "{owners:?}"
    );
    let status = serde_json::to_string(&applied.status).expect("json");
    assert!(!status.contains(SEALED_PASSWORD), "{status}");
    agent.stop().await.expect("agent stops");
}
