//! Attack (issue 11, item 13) through the real agent: a tenant's repository holds SOPS-encrypted
//! values in objects that are not Secrets (a Deployment's env value and imagePullPolicy, a
//! ConfigMap); the API server rejects the Deployment and its error message echoes the decrypted
//! value. The Release's status (readable by anyone who can `get` Releases) and its Events must
//! not contain any decrypted value, while the valid objects still receive their real values.
//!
//! Real parts: `age-keygen` and `sops` from the testenv, the testenv git server, the in-process
//! agent, the real API server's validation.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use ferry_api::{GitSource, Release};
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};

const TOKEN: &str = "agent-tok-4e5f6a7b8c";
const BAD_POLICY: &str = "Policy-Secret-3c4d5e";
const DB_PASSWORD: &str = "agent-db-pw-0a9b8c";

fn forbidden() -> [&'static str; 3] {
    [TOKEN, BAD_POLICY, DB_PASSWORD]
}

fn tool(env: &TestEnv, name: &str) -> Command {
    Command::new(env.tool(name))
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run tool");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

/// Encrypt `plain` with the real `sops` for `recipient`, only keys matching `regex`.
fn sops_encrypt(env: &TestEnv, dir: &Path, recipient: &str, plain: &str, regex: &str) -> String {
    let clear = dir.join("clear.yaml");
    std::fs::write(&clear, plain).expect("write");
    let encrypted = output(
        tool(env, "sops")
            .env_remove("SOPS_AGE_KEY")
            .env_remove("SOPS_AGE_KEY_FILE")
            .args(["--encrypt", "--age", recipient, "--encrypted-regex", regex])
            .args(["--input-type", "yaml", "--output-type", "yaml"])
            .arg(&clear),
    );
    std::fs::remove_file(&clear).expect("remove");
    for secret in forbidden() {
        assert!(!encrypted.contains(secret), "sops left {secret} in clear");
    }
    encrypted
}

fn deployment() -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: broken
spec:
  replicas: 1
  selector:
    matchLabels: {{app: broken}}
  template:
    metadata:
      labels: {{app: broken}}
    spec:
      containers:
      - name: main
        image: registry.invalid/web:1.0
        imagePullPolicy: {BAD_POLICY}
        env:
        - name: TOKEN
          value: {TOKEN}
"#
    )
}

fn configmap() -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: db\ndata:\n  password: {DB_PASSWORD}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_status_and_events_never_show_decrypted_values() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "redact-agent").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("age.key");
    output(tool(&env, "age-keygen").arg("-o").arg(&key_file));
    let recipient = output(tool(&env, "age-keygen").arg("-y").arg(&key_file))
        .trim()
        .to_string();
    let key_text = std::fs::read_to_string(&key_file).expect("key");

    let repo = Repo::create(&env, &ns.name);
    let deploy = sops_encrypt(
        &env,
        dir.path(),
        &recipient,
        &deployment(),
        "^(value|imagePullPolicy)$",
    );
    let cm = sops_encrypt(&env, dir.path(), &recipient, &configmap(), "^data$");
    let sha = repo.commit(
        &[
            ("app/deploy.yaml", Some(&deploy)),
            ("app/cm.yaml", Some(&cm)),
        ],
        "encrypted values in a Deployment and a ConfigMap",
    );

    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    secret(
        &client,
        &ns.name,
        "sops-age",
        &[("age.agekey", key_text.as_str())],
    )
    .await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1s"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release(
            "app",
            "repo",
            "./app",
            serde_json::json!({"decryption": {"provider": "sops", "secretRef": {"name": "sops-age"}}}),
        ),
    )
    .await;

    // The apply fails on the Deployment, and says why, without the value.
    let failed = wait_release_reason(
        &client,
        &ns.name,
        "app",
        "ApplyFailed",
        Duration::from_secs(120),
    )
    .await;
    let status = serde_json::to_string(&failed.status).expect("status json");
    for secret in forbidden() {
        assert!(
            !status.contains(secret),
            "Release status shows {secret}: {status}"
        );
    }
    assert!(
        status.contains("imagePullPolicy") && status.contains("[REDACTED]"),
        "the API server's reason is kept with the value hidden: {status}"
    );
    assert!(status.contains(&sha[..7]), "{status}");

    // The Events about the Release: at least one for the failure, none with a value.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), &ns.name);
    let notes = wait_for(
        "a Warning event for Release app",
        Duration::from_secs(60),
        || {
            let events = events.clone();
            async move {
                let list = events.list(&ListParams::default()).await?;
                let notes: Vec<String> = list
                    .items
                    .iter()
                    .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("app"))
                    .filter_map(|e| e.note.clone())
                    .collect();
                Ok(notes
                    .iter()
                    .any(|n| n.contains("[REDACTED]"))
                    .then_some(notes))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    for note in &notes {
        for secret in forbidden() {
            assert!(!note.contains(secret), "event shows {secret}: {note}");
        }
    }

    // The valid object still got its real value (redaction is only for what is shown).
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let db = cms.get("db").await.expect("ConfigMap db applied");
    assert_eq!(
        db.data
            .unwrap_or_default()
            .get("password")
            .map(String::as_str),
        Some(DB_PASSWORD)
    );
    drop(agent);
}
