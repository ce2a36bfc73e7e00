//! `ferry diff release NAME` (the real binary) against the testenv: a Release applied by a real
//! agent (in-process), hand edits shown (Secret values never), `spec.drift.ignore` fields left
//! out, `--latest` diffs the GitSource's new commit, exit codes and output formats as
//! `ferry diff`. Hostile GitSources: `file://` and path URLs are refused without reading the
//! disk, credentials never follow a redirect to another host, and the user's own git
//! credentials are never sent.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{run, start_agent};
use ferry_api::{GitSource, Release};
use ferry_testsupport::TestEnv;
use ferry_testsupport::ferry::{
    create, git_source, hourly_release, release, request_sync, secret, service_account,
    service_account_token, setup, wait_release_applied, wait_source,
};
use ferry_testsupport::git::Repo;
use ferry_testsupport::http::{hostile_server, redirect, saw_credentials, unauthorized};
use kube::api::{Api, Patch, PatchParams};

const GIT_PASSWORD_VALUE: &str = "s3cret-from-git";
const HAND_PASSWORD_VALUE: &str = "hunter2-by-hand";

/// The ferry binary as a user runs it: the testenv kubeconfig, `home` as HOME (so no git
/// configuration or credentials of the machine's user are around), no SSH agent.
fn ferry(env: &TestEnv, home: &Path, args: &[&str]) -> (i32, String, String) {
    run(Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("KUBECONFIG", env.kubeconfig())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env_remove("SSH_AUTH_SOCK")
        .env("NO_COLOR", "1"))
}

fn deployment_yaml() -> &'static str {
    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels: {tier: web}\nspec:\n  replicas: 0\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: app, image: registry.invalid/app:1}]\n"
}

fn configmap_yaml(value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  value: {value}\n"
    )
}

fn secret_yaml() -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: {GIT_PASSWORD_VALUE}\n"
    )
}

/// (action, diff) per object name in `ferry diff -o json` output.
fn actions(json: &str) -> Vec<(String, String, String)> {
    let report: serde_json::Value = serde_json::from_str(json).expect("diff JSON");
    report["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap_or_default().to_string(),
                o["action"].as_str().unwrap_or_default().to_string(),
                o["diff"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn action_of(objects: &[(String, String, String)], name: &str) -> (String, String) {
    objects
        .iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, a, d)| (a.clone(), d.clone()))
        .unwrap_or_else(|| panic!("{name} not in {objects:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn diff_release_shows_hand_edits_and_the_next_revision_without_secret_values() {
    let (env, client, ns) = setup("diff-release").await;
    let home = tempfile::tempdir().expect("home");
    let repo = Repo::create(&env, &ns.name);
    let first = repo.commit(
        &[
            ("app/deploy.yaml", Some(deployment_yaml())),
            ("app/cm.yaml", Some(&configmap_yaml("desired"))),
            ("app/secret.yaml", Some(&secret_yaml())),
        ],
        "first",
    );
    let (agent, _cache) = start_agent(&env, &[&ns.name], |options| {
        // The agent's own identity: this test is about the CLI's diff, not tenancy.
        options.insecure_agent_identity_for_tenants = true;
    })
    .await;
    // detect: the agent leaves the hand edits for the CLI to see.
    hourly_release(
        &env,
        &client,
        &ns.name,
        &repo,
        "app",
        serde_json::json!({"drift": {"mode": "detect", "ignore": [
            {"target": {"kind": "Deployment"}, "paths": ["/spec/replicas"]}]}}),
    )
    .await;
    let releases: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    wait_release_applied(&client, &ns.name, "app", &first, Duration::from_secs(60)).await;

    // Nothing differs right after the apply.
    let (code, out, err) = ferry(
        &env,
        home.path(),
        &["diff", "release", "app", "-n", &ns.name],
    );
    assert_eq!(code, 0, "no changes expected: {out}{err}");

    // Hand edits: an ignored scale, a ConfigMap value, a Secret value.
    // Secret db's password as the API server stores it (base64).
    let encoded_password = || {
        env.kubectl(&[
            "-n",
            &ns.name,
            "get",
            "secret",
            "db",
            "-o",
            "jsonpath={.data.password}",
        ])
    };
    let encoded_git_value = encoded_password();
    env.kubectl(&["-n", &ns.name, "scale", "deployment/web", "--replicas=3"]);
    env.kubectl(&[
        "-n",
        &ns.name,
        "patch",
        "configmap/settings",
        "-p",
        r#"{"data":{"value":"hand"}}"#,
    ]);
    let patch = format!(r#"{{"stringData":{{"password":"{HAND_PASSWORD_VALUE}"}}}}"#);
    env.kubectl(&["-n", &ns.name, "patch", "secret/db", "-p", &patch]);
    let encoded_hand_value = encoded_password();

    let (code, out, err) = ferry(
        &env,
        home.path(),
        &["diff", "release", "app", "-n", &ns.name],
    );
    assert_eq!(code, 1, "changes expected: {out}{err}");
    assert!(
        out.contains("settings") && out.contains("-  value: hand"),
        "{out}"
    );
    assert!(out.contains("+  value: desired"), "{out}");
    assert!(
        out.contains("<redacted"),
        "the Secret's change shows redacted: {out}"
    );
    assert!(
        !out.contains("replicas: 3"),
        "an ignored field is not shown: {out}"
    );
    for value in [
        GIT_PASSWORD_VALUE,
        HAND_PASSWORD_VALUE,
        encoded_git_value.trim(),
        encoded_hand_value.trim(),
    ] {
        assert!(
            !out.contains(value) && !err.contains(value),
            "value shown: {out}{err}"
        );
    }
    let (code, json, err) = ferry(
        &env,
        home.path(),
        &["diff", "release", "app", "-n", &ns.name, "-o", "json"],
    );
    assert_eq!(code, 1, "{err}");
    let objects = actions(&json);
    assert_eq!(action_of(&objects, "settings").0, "change");
    assert_eq!(action_of(&objects, "db").0, "change");
    assert_eq!(
        action_of(&objects, "web").0,
        "unchanged",
        "the scale is left to others: {objects:?}"
    );
    assert!(!json.contains(HAND_PASSWORD_VALUE) && !json.contains(encoded_hand_value.trim()));
    let (code, markdown, err) = ferry(
        &env,
        home.path(),
        &["diff", "release", "app", "-n", &ns.name, "-o", "markdown"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        markdown.contains("settings") && markdown.contains("```"),
        "{markdown}"
    );

    // A new commit the suspended Release has not applied: only --latest shows it.
    releases
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"suspend": true}})),
        )
        .await
        .expect("suspend");
    let second = repo.commit(
        &[("app/cm.yaml", Some(&configmap_yaml("second")))],
        "second",
    );
    request_sync(&client, &ns.name, "repo", "diff-release").await;
    wait_source(&client, &ns.name, "repo", "at the second commit", |gs| {
        gs.status
            .as_ref()
            .and_then(|s| s.revision.as_deref())
            .is_some_and(|r| r.ends_with(&second))
    })
    .await;
    let (_, json, err) = ferry(
        &env,
        home.path(),
        &["diff", "release", "app", "-n", &ns.name, "-o", "json"],
    );
    assert!(
        !action_of(&actions(&json), "settings").1.contains("second"),
        "{err}"
    );
    let (code, json, err) = ferry(
        &env,
        home.path(),
        &[
            "diff", "release", "app", "-n", &ns.name, "--latest", "-o", "json",
        ],
    );
    assert_eq!(code, 1, "{err}");
    let (action, diff) = action_of(&actions(&json), "settings");
    assert_eq!(action, "change");
    assert!(diff.contains("+  value: second"), "{diff}");

    // Errors: exit 2, naming what is wrong.
    let (code, _, err) = ferry(
        &env,
        home.path(),
        &["diff", "release", "nope", "-n", &ns.name],
    );
    assert_eq!(code, 2);
    assert!(err.contains("nope") && err.contains("not found"), "{err}");
    agent.stop().await.expect("agent stops");
}

/// A Release (never applied by an agent here) whose status says it applied `commit` of
/// GitSource `source`, as the agent would have written it.
async fn applied_release(client: &kube::Client, ns: &str, name: &str, source: &str, commit: &str) {
    create::<Release>(
        client,
        ns,
        release(name, source, "app", serde_json::json!({"interval": "1h"})),
    )
    .await;
    let releases: Api<Release> = Api::namespaced(client.clone(), ns);
    releases
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"status": {
                "lastAppliedRevision": format!("main@sha1:{commit}")}})),
        )
        .await
        .expect("status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_git_sources_read_no_local_files_and_get_no_credentials() {
    let (env, client, ns) = setup("diff-release-atk").await;
    // The user's own git setup: a credential store with a password for every host this test
    // uses. ferry must never send it.
    let home = tempfile::tempdir().expect("home");
    let user_password = "users-own-password";
    // A real repository on this machine's disk, readable by the user.
    let repo = Repo::create(&env, &ns.name);
    let commit = repo.commit(&[("app/cm.yaml", Some(&configmap_yaml("local")))], "local");

    // 1. file:// to an existing repository, and a bare path: refused before any read.
    let local_url = repo.file_url(&env);
    let local_path = local_url.trim_start_matches("file://").to_string();
    for (name, url) in [
        ("file-url", local_url.as_str()),
        ("path", local_path.as_str()),
    ] {
        create::<GitSource>(&client, &ns.name, git_source(name, url, None, "1h")).await;
        applied_release(&client, &ns.name, name, name, &commit).await;
        let (code, out, err) = ferry(
            &env,
            home.path(),
            &["diff", "release", name, "-n", &ns.name],
        );
        assert_eq!(code, 2, "{name}: {out}{err}");
        assert!(
            err.contains("refused") && err.contains(url),
            "{name}: the error names the URL and the refusal: {err}"
        );
        assert!(
            !out.contains("local"),
            "nothing of the local repository rendered: {out}"
        );
    }

    // 2. Credentials asked for, then redirected to another host.
    let (other_host, other_host_seen) = hostile_server([127, 0, 0, 2], |_, _| unauthorized()).await;
    let (after_auth, after_auth_seen) = hostile_server([127, 0, 0, 1], move |path, auth| {
        if auth {
            redirect(&format!("http://127.0.0.2:{other_host}{path}"))
        } else {
            unauthorized()
        }
    })
    .await;
    // 3. No secretRef: asks for credentials the user's own setup has.
    let (asks, asks_seen) = hostile_server([127, 0, 0, 1], |_, _| unauthorized()).await;
    let store = format!(
        "http://bob:{user_password}@127.0.0.1:{asks}\nhttp://bob:{user_password}@127.0.0.1:{after_auth}\nhttp://bob:{user_password}@127.0.0.2:{other_host}\n"
    );
    std::fs::write(home.path().join(".git-credentials"), store).expect("credential store");
    std::fs::write(
        home.path().join(".gitconfig"),
        "[credential]\n\thelper = store\n",
    )
    .expect("gitconfig");

    let source_password = "diff-release-source-password";
    secret(
        &client,
        &ns.name,
        "basic",
        &[("username", "alice"), ("password", source_password)],
    )
    .await;
    for (name, port, secret_name) in [
        ("redirect", after_auth, Some("basic")),
        ("anonymous", asks, None),
    ] {
        let url = format!("http://127.0.0.1:{port}/repo.git");
        create::<GitSource>(&client, &ns.name, git_source(name, &url, secret_name, "1h")).await;
        applied_release(&client, &ns.name, name, name, &commit).await;
        let (code, out, err) = ferry(
            &env,
            home.path(),
            &["diff", "release", name, "-n", &ns.name],
        );
        assert_eq!(code, 2, "{name}: {out}{err}");
        assert!(err.contains(&url), "{name}: the error names the URL: {err}");
        for secret in [source_password, user_password] {
            assert!(
                !out.contains(secret) && !err.contains(secret),
                "{name}: {err}"
            );
        }
    }
    // The configured host got the GitSource's credentials (the attack was really tried)...
    assert!(
        saw_credentials(&after_auth_seen),
        "the configured host was asked and answered"
    );
    // ...another host never saw any, and the user's own were sent nowhere.
    let other = other_host_seen.lock().expect("lock").clone();
    assert!(
        other.iter().all(|(_, a)| a.is_none()),
        "127.0.0.2 received credentials: {other:?}"
    );
    let asked = asks_seen.lock().expect("lock").clone();
    assert!(!asked.is_empty(), "the anonymous fetch reached the server");
    assert!(
        asked.iter().all(|(_, a)| a.is_none()),
        "the user's own credentials were sent: {asked:?}"
    );
}

/// A kubeconfig for service account `sa` of `ns` (a fresh token from the TokenRequest API), on
/// the testenv's API server: a user with only the rights the test grants.
async fn kubeconfig_for(env: &TestEnv, client: &kube::Client, ns: &str, sa: &str) -> String {
    service_account(client, ns, sa).await;
    let token = service_account_token(client, ns, sa, &[]).await;
    let admin = std::fs::read_to_string(env.kubeconfig()).expect("testenv kubeconfig");
    let field = |name: &str| {
        admin
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(&format!("{name}: "))
                    .map(str::to_string)
            })
            .unwrap_or_else(|| panic!("{name} in the testenv kubeconfig"))
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: {sa}\n  user:\n    token: {token}\ncontexts:\n- name: t\n  context: {{cluster: t, user: {sa}, namespace: {ns}}}\ncurrent-context: t\n",
        field("server"),
        field("certificate-authority-data")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_who_may_not_read_the_sources_secret_is_told_so_and_nothing_is_fetched() {
    let (env, client, ns) = setup("diff-release-rbac").await;
    let home = tempfile::tempdir().expect("home");
    // The GitSource points at a server that records requests: nothing may reach it.
    let (port, seen) = hostile_server([127, 0, 0, 1], |_, _| unauthorized()).await;
    secret(
        &client,
        &ns.name,
        "git-auth",
        &[("username", "alice"), ("password", "tenant-only")],
    )
    .await;
    let url = format!("http://127.0.0.1:{port}/repo.git");
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &url, Some("git-auth"), "1h"),
    )
    .await;
    applied_release(&client, &ns.name, "app", "repo", &"a".repeat(40)).await;
    // A user who may read Releases and GitSources, but no Secret.
    let role = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "ferry-reader"},
        "rules": [{"apiGroups": ["ferry.dev"], "resources": ["releases", "gitsources"],
                   "verbs": ["get", "list", "watch"]}],
    });
    create::<k8s_openapi::api::rbac::v1::Role>(&client, &ns.name, role).await;
    let binding = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "ferry-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ferry-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns.name}],
    });
    create::<k8s_openapi::api::rbac::v1::RoleBinding>(&client, &ns.name, binding).await;
    let kubeconfig = home.path().join("reader.kubeconfig");
    std::fs::write(
        &kubeconfig,
        kubeconfig_for(&env, &client, &ns.name, "reader").await,
    )
    .expect("write kubeconfig");
    let kubeconfig = kubeconfig.to_string_lossy().to_string();

    let (code, out, err) = ferry(
        &env,
        home.path(),
        &[
            "--kubeconfig",
            &kubeconfig,
            "diff",
            "release",
            "app",
            "-n",
            &ns.name,
        ],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(&format!("Secret {}/git-auth", ns.name)) && err.contains("your kubeconfig"),
        "the error names the Secret and whose rights: {err}"
    );
    assert!(!err.contains("tenant-only"));
    assert!(
        seen.lock().expect("lock").is_empty(),
        "nothing was fetched without the user's own rights"
    );
}
