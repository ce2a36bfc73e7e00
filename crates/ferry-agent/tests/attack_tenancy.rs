//! Attacks by a tenant on the agent's defaults (issue 11 items 3, 7, 8, 15), against the real API
//! server's RBAC, the real git server and the real unsealer, with the agent started with its
//! DEFAULT options unless a test says otherwise:
//! - a Release without `serviceAccountName` that tries to make its namespace cluster-admin;
//! - a GitSource that names a Secret its namespace may not read, pointed at a hostile server;
//! - a Release that names a decryption Secret its service account may not read;
//! - a Release without `spec.decryption` in an agent process that holds an age key;
//! - an ImageRepository and a Receiver that name a Secret their namespace may not read;
//! - SealedSecrets outside the watched namespaces, and a second unsealer next to bitnami's.
//! - a tenant whose slow Releases would take every reconcile worker (item 15).

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ferry_api::{GitSource, Release};
use ferry_engine::decrypt::sealed::{self, Scope, SealedSecret};
use ferry_engine::decrypt::sops::{self, AgeKeys, EncryptOptions, Format, Selectors};
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, PostParams};

/// Serialises the tests that look at unsealers, so the bitnami decoy of one cannot be seen by
/// the other.
static UNSEALER_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn message_of(release: &Release) -> String {
    ready_state(&release.status.clone().unwrap_or_default().conditions)
        .map(|c| c.2)
        .unwrap_or_default()
}

/// A Role + RoleBinding in `ns` giving service account `sa` exactly `rules`.
async fn role(client: &kube::Client, ns: &str, sa: &str, name: &str, rules: serde_json::Value) {
    create::<k8s_openapi::api::rbac::v1::Role>(
        client,
        ns,
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name}, "rules": rules,
        }),
    )
    .await;
    create::<k8s_openapi::api::rbac::v1::RoleBinding>(
        client,
        ns,
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
        }),
    )
    .await;
}

/// SOPS-encrypt a manifest for `keys` (only `data`/`stringData`, as usual for Kubernetes files).
fn sops_encrypt(plain: &str, keys: &AgeKeys) -> String {
    let options = EncryptOptions::new(
        keys.recipients(),
        Selectors {
            encrypted_regex: Some("^(data|stringData)$".to_string()),
            ..Selectors::default()
        },
    )
    .expect("encrypt options");
    let out = sops::encrypt(
        plain.as_bytes(),
        Format::Yaml,
        Path::new("secret.enc.yaml"),
        &options,
    )
    .expect("encrypt");
    String::from_utf8(out).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_without_service_account_cannot_make_its_namespace_cluster_admin() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "atk-crb").await;
    // The tenant owns its namespace (admin there), and nothing else.
    grant_admin(&client, &ns.name, "default").await;
    let binding = format!("{}-pwn", ns.name);
    let repo = Repo::create(&env, &ns.name);
    let sha = repo.commit(
        &[(
            "app/crb.yaml",
            Some(&format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: {binding}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects:\n- kind: ServiceAccount\n  name: default\n  namespace: {}\n",
                ns.name
            )),
        )],
        "make me cluster-admin",
    );
    // The agent exactly as shipped: no flags about identities.
    let (agent, _cache) = start_agent_bare(&env, &[&ns.name], |_| {}).await;
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
        release("pwn", "repo", "app", serde_json::json!({})),
    )
    .await;
    let failed = wait_release_reason(
        &client,
        &ns.name,
        "pwn",
        "ApplyFailed",
        Duration::from_secs(90),
    )
    .await;
    let message = message_of(&failed);
    let identity = format!("system:serviceaccount:{}:default", ns.name);
    assert!(message.contains("forbidden"), "says forbidden: {message}");
    assert!(message.contains(&binding), "names the object: {message}");
    assert!(message.contains(&identity), "names the identity: {message}");
    assert_eq!(
        failed
            .status
            .clone()
            .unwrap_or_default()
            .last_attempted_revision
            .as_deref()
            .map(|r| r.ends_with(&sha)),
        Some(true)
    );
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    assert!(
        bindings.get_opt(&binding).await.expect("get").is_none(),
        "no ClusterRoleBinding was created"
    );
    agent.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn insecure_agent_identity_flag_restores_the_old_behaviour() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "atk-optin").await;
    // The namespace's service account has no rights at all: only the agent's own identity can
    // create a cluster-scoped object (a harmless ClusterRole without rules).
    let cluster_role = format!("{}-optin", ns.name);
    let repo = Repo::create(&env, &ns.name);
    let sha = repo.commit(
        &[(
            "app/cr.yaml",
            Some(&format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {cluster_role}\nrules: []\n"
            )),
        )],
        "cluster-scoped",
    );
    let (agent, _cache) = start_agent_bare(&env, &[&ns.name], |o| {
        o.insecure_agent_identity_for_tenants = true;
    })
    .await;
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
            "optin",
            "repo",
            "app",
            serde_json::json!({"deletionPolicy": "Orphan"}),
        ),
    )
    .await;
    wait_release_applied(&client, &ns.name, "optin", &sha, Duration::from_secs(90)).await;
    let roles: Api<ClusterRole> = Api::all(client.clone());
    assert!(
        roles.get_opt(&cluster_role).await.expect("get").is_some(),
        "applied with the agent's own identity"
    );
    agent.stop().await.expect("agent stops");
    let _ = roles.delete(&cluster_role, &DeleteParams::default()).await;
}

/// The hostile git server (or registry): answers every request 401 asking for Basic credentials, and records
/// the Authorization headers it was sent.
async fn hostile_git_server() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                for line in head.lines() {
                    if line.to_ascii_lowercase().starts_with("authorization:") {
                        record
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(line.to_string());
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gitsource_cannot_send_a_secret_its_namespace_cannot_read() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "atk-gitsecret").await;
    // A Secret the tenant did not write and may not read (say, another team's deploy token in a
    // shared namespace), and a GitSource that points it at the tenant's own server.
    secret(
        &client,
        &ns.name,
        "team-token",
        &[("username", "deploy"), ("password", "t0p-s3cret-t0ken")],
    )
    .await;
    let (addr, seen) = hostile_git_server().await;
    let (agent, _cache) = start_agent_bare(&env, &[&ns.name], |_| {}).await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source(
            "steal",
            &format!("http://{addr}/repo.git"),
            Some("team-token"),
            "1m",
        ),
    )
    .await;
    let identity = format!("system:serviceaccount:{}:default", ns.name);
    let source = wait_source(&client, &ns.name, "steal", "fetch refused", |gs| {
        gs.status
            .as_ref()
            .and_then(|s| ferry_api::common::find_condition(&s.conditions, "Ready"))
            .is_some_and(|c| c.status == "False" && c.message.contains("forbidden"))
    })
    .await;
    let message = source
        .status
        .as_ref()
        .and_then(|s| ferry_api::common::find_condition(&s.conditions, "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("team-token"),
        "names the Secret: {message}"
    );
    assert!(message.contains(&identity), "names the identity: {message}");
    assert!(!message.contains("t0p-s3cret"), "no secret in status");
    assert!(
        seen.lock().unwrap_or_else(|p| p.into_inner()).is_empty(),
        "no credential reached the hostile server"
    );
    agent.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn decryption_secret_is_read_as_the_release_service_account() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "atk-decrypt").await;
    // `deployer` may manage ConfigMaps (its app and the inventory) and nothing else: no Secrets.
    create::<k8s_openapi::api::core::v1::ServiceAccount>(
        &client,
        &ns.name,
        serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "deployer"}}),
    )
    .await;
    role(
        &client,
        &ns.name,
        "deployer",
        "deployer-configmaps",
        serde_json::json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]),
    )
    .await;
    let keys = AgeKeys::generate();
    secret(
        &client,
        &ns.name,
        "sops-keys",
        &[("age.agekey", keys.to_text().as_str())],
    )
    .await;
    let repo = Repo::create(&env, &ns.name);
    let sha = repo.commit(
        &[(
            "app/cm.enc.yaml",
            Some(&sops_encrypt(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: decrypted\ndata:\n  value: pl41n-v4lue\n",
                &keys,
            )),
        )],
        "encrypted",
    );
    let (agent, _cache) = start_agent_bare(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    // The GitSource's own Secret is readable by the namespace's default identity.
    role(
        &client,
        &ns.name,
        "default",
        "default-git-auth",
        serde_json::json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["git-auth"], "verbs": ["get"]}]),
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
            "dec",
            "repo",
            "app",
            serde_json::json!({
                "serviceAccountName": "deployer",
                "decryption": {"provider": "sops", "secretRef": {"name": "sops-keys"}},
            }),
        ),
    )
    .await;
    let failed = wait_release_reason(
        &client,
        &ns.name,
        "dec",
        "DecryptionFailed",
        Duration::from_secs(90),
    )
    .await;
    let message = message_of(&failed);
    assert!(message.contains("forbidden"), "{message}");
    assert!(message.contains("sops-keys"), "names the Secret: {message}");
    assert!(
        message.contains(&format!("system:serviceaccount:{}:deployer", ns.name)),
        "names the identity: {message}"
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(cms.get_opt("decrypted").await.expect("get").is_none());

    // Control: once the service account may read that one Secret, the same Release decrypts.
    role(
        &client,
        &ns.name,
        "deployer",
        "deployer-sops-keys",
        serde_json::json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["sops-keys"], "verbs": ["get"]}]),
    )
    .await;
    wait_release_applied(&client, &ns.name, "dec", &sha, Duration::from_secs(90)).await;
    let cm = cms.get("decrypted").await.expect("applied");
    assert_eq!(
        cm.data.unwrap_or_default().get("value").map(String::as_str),
        Some("pl41n-v4lue")
    );
    agent.stop().await.expect("agent stops");
}

/// Kills the child agent when the test ends, however it ends.
struct ChildAgent(std::process::Child);

impl Drop for ChildAgent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_without_decryption_never_uses_the_agent_process_key() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "atk-agentkey").await;
    grant_admin(&client, &ns.name, "default").await;
    // The operator gave the agent process an age key (SOPS_AGE_KEY), for its own use; a tenant
    // commits a file encrypted for that key and deploys it without any decryption config.
    let agent_key = AgeKeys::generate();
    let repo = Repo::create(&env, &ns.name);
    let encrypted = |name: &str| {
        sops_encrypt(
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\nstringData:\n  value: 0perator-only-v4lue\n"
            ),
            &agent_key,
        )
    };
    let sha = repo.commit(
        &[
            ("tenant/secret.enc.yaml", Some(&encrypted("stolen"))),
            ("owner/secret.enc.yaml", Some(&encrypted("granted"))),
        ],
        "encrypted for the agent's key",
    );
    let cache = tempfile::tempdir().expect("cache");
    let log_path = cache.path().join("agent.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    // The agent's own namespace is elsewhere: the tenant's namespace gets no special identity.
    let agent_ns = format!("{}-agent", ns.name);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ferry-agent"))
        .args([
            "--namespace",
            &agent_ns,
            "--watch-namespace",
            &ns.name,
            "--leader-elect",
            "false",
            "--http-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-format",
            "text",
        ])
        .arg("--kubeconfig")
        .arg(env.kubeconfig())
        .arg("--cache-dir")
        .arg(cache.path().join("git"))
        .env("SOPS_AGE_KEY", agent_key.to_text().as_str())
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start ferry-agent");
    let _child = ChildAgent(child);
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
        release("tenant", "repo", "tenant", serde_json::json!({})),
    )
    .await;
    let failed = wait_release_reason(
        &client,
        &ns.name,
        "tenant",
        "RenderFailed",
        Duration::from_secs(120),
    )
    .await;
    let message = message_of(&failed);
    assert!(
        message.contains("no spec.decryption"),
        "says why and what to do: {message}"
    );
    assert!(
        message.contains("secret.enc.yaml"),
        "names the file: {message}"
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        secrets.get_opt("stolen").await.expect("get").is_none(),
        "nothing decrypted with the agent's key"
    );

    // Control: the same file decrypts when the Release names a Secret holding the key.
    secret(
        &client,
        &ns.name,
        "sops-keys",
        &[("age.agekey", agent_key.to_text().as_str())],
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release(
            "owner",
            "repo",
            "owner",
            serde_json::json!({"decryption": {"provider": "sops", "secretRef": {"name": "sops-keys"}}}),
        ),
    )
    .await;
    wait_release_applied(&client, &ns.name, "owner", &sha, Duration::from_secs(120)).await;
    assert!(secrets.get_opt("granted").await.expect("get").is_some());
    let logged = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        !logged.contains("0perator-only-v4lue"),
        "no plaintext in the log"
    );
    assert!(
        !logged.contains("AGE-SECRET-KEY"),
        "no key material in the log"
    );
}

/// The agent's sealing certificate, once its unsealer has loaded (or made) a key.
async fn sealing_certificate(agent: &ferry_agent::Agent) -> String {
    let addr = agent.http_addr;
    wait_for(
        "the unsealer's certificate",
        Duration::from_secs(180),
        || async move {
            let (status, body) = http(addr, "GET", "/v1/cert.pem", &[], b"").await;
            if status == 200 {
                return Ok(Some(body));
            }
            anyhow::bail!("status {status}")
        },
    )
    .await
    .expect("certificate")
}

fn sealed_for(cert: &str, ns: &str, name: &str) -> SealedSecret {
    let public = sealed::public_key_from_certificate_pem(cert.as_bytes()).expect("cert");
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "stringData": {"password": "s3aled-v4lue"},
    }))
    .expect("secret");
    sealed::seal_secret(&secret, &public, Scope::Strict, None).expect("seal")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unsealer_unseals_only_in_the_watched_namespaces() {
    let _serial = UNSEALER_TESTS.lock().await;
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let one = TestNamespace::create(&client, "atk-seal-one").await;
    let two = TestNamespace::create(&client, "atk-seal-two").await;
    let third = TestNamespace::create(&client, "atk-seal-third").await;
    let (agent, _cache) = start_agent_bare(&env, &[&one.name, &two.name], |o| {
        o.namespace = one.name.clone();
        o.sealed_secrets = true;
    })
    .await;
    let cert = sealing_certificate(&agent).await;
    // The third namespace's SealedSecret first: had the unsealer watched it, it would be
    // unsealed no later than the watched one created after it.
    let outside: Api<SealedSecret> = Api::namespaced(client.clone(), &third.name);
    outside
        .create(
            &PostParams::default(),
            &sealed_for(&cert, &third.name, "outside"),
        )
        .await
        .expect("create outside");
    let inside: Api<SealedSecret> = Api::namespaced(client.clone(), &two.name);
    inside
        .create(
            &PostParams::default(),
            &sealed_for(&cert, &two.name, "inside"),
        )
        .await
        .expect("create inside");
    let watched: Api<Secret> = Api::namespaced(client.clone(), &two.name);
    wait_for(
        "the watched namespace's Secret",
        Duration::from_secs(60),
        || {
            let watched = watched.clone();
            async move { Ok(watched.get_opt("inside").await?) }
        },
    )
    .await
    .expect("unsealed in a watched namespace");
    // Stop the agent: whatever it was going to do, it has done.
    agent.stop().await.expect("agent stops");
    let unwatched: Api<Secret> = Api::namespaced(client.clone(), &third.name);
    assert!(
        unwatched.get_opt("outside").await.expect("get").is_none(),
        "nothing unsealed in an unwatched namespace"
    );
    let untouched = outside.get("outside").await.expect("still there");
    assert!(untouched.status.is_none(), "not even read: {untouched:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unsealer_does_not_start_next_to_a_bitnami_controller() {
    let _serial = UNSEALER_TESTS.lock().await;
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "atk-bitnami").await;
    let (options, _cache) = agent_options(&env, &[&ns.name], |o| o.sealed_secrets = true);
    let search = vec![ns.name.clone()];
    assert_eq!(
        ferry_agent::controllers::unsealer_decision(&client, &options, &search).await,
        ferry_agent::controllers::UnsealerDecision::Start,
        "nothing to defer to yet"
    );
    // bitnami's controller.yaml, as released (the Deployment's own labels are what is checked).
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let decoy: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "sealed-secrets-controller", "labels": {"name": "sealed-secrets-controller"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"name": "sealed-secrets-controller"}},
            "template": {
                "metadata": {"labels": {"name": "sealed-secrets-controller"}},
                "spec": {"containers": [{"name": "sealed-secrets-controller", "image": "bitnami/sealed-secrets-controller:0.30.0"}]}
            }
        }
    }))
    .expect("deployment");
    deployments
        .create(&PostParams::default(), &decoy)
        .await
        .expect("bitnami decoy");
    let expected = format!("{}/sealed-secrets-controller", ns.name);
    assert_eq!(
        ferry_agent::controllers::unsealer_decision(&client, &options, &search).await,
        ferry_agent::controllers::UnsealerDecision::Refuse {
            deployment: expected.clone()
        }
    );
    let mut forced = options.clone();
    forced.sealed_secrets_despite_bitnami = true;
    assert_eq!(
        ferry_agent::controllers::unsealer_decision(&client, &forced, &search).await,
        ferry_agent::controllers::UnsealerDecision::StartDespite {
            deployment: expected
        }
    );
    let _ = deployments
        .delete("sealed-secrets-controller", &DeleteParams::default())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bitnami_keys_exported_to_the_agent_namespace_keep_unsealing() {
    let _serial = UNSEALER_TESTS.lock().await;
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    // Where bitnami's controller kept its key (kube-system in a real cluster), the agent's
    // namespace, and a tenant with a SealedSecret sealed for bitnami's key long ago.
    let bitnami = TestNamespace::create(&client, "atk-mig-bitnami").await;
    let home = TestNamespace::create(&client, "atk-mig-agent").await;
    let tenant = TestNamespace::create(&client, "atk-mig-tenant").await;
    let key = sealed::SealingKey::generate(sealed::KeyBits::Rsa2048).expect("key");
    let key_secret = key.to_secret(&bitnami.name).expect("key Secret");
    let old: Api<Secret> = Api::namespaced(client.clone(), &bitnami.name);
    old.create(&PostParams::default(), &key_secret)
        .await
        .expect("bitnami's key");
    let sealed_secret = sealed_for(key.certificate_pem(), &tenant.name, "migrated");
    let tenant_sealed: Api<SealedSecret> = Api::namespaced(client.clone(), &tenant.name);
    tenant_sealed
        .create(&PostParams::default(), &sealed_secret)
        .await
        .expect("SealedSecret");

    // The documented step 1 (docs/secrets.md): copy every labelled key Secret, keeping only
    // name, labels and annotations, into the agent's namespace.
    let keys = old
        .list(
            &kube::api::ListParams::default()
                .labels("sealedsecrets.bitnami.com/sealed-secrets-key"),
        )
        .await
        .expect("list keys");
    assert_eq!(keys.items.len(), 1);
    let new: Api<Secret> = Api::namespaced(client.clone(), &home.name);
    for mut copy in keys.items {
        copy.metadata = kube::api::ObjectMeta {
            name: copy.metadata.name.clone(),
            namespace: Some(home.name.clone()),
            labels: copy.metadata.labels.clone(),
            annotations: copy.metadata.annotations.clone(),
            ..Default::default()
        };
        new.create(&PostParams::default(), &copy)
            .await
            .expect("copy key");
    }
    // Step 3: the agent starts, loads the imported key, and unseals the old SealedSecret.
    let (agent, _cache) = start_agent_bare(&env, &[&tenant.name], |o| {
        o.namespace = home.name.clone();
        o.sealed_secrets = true;
    })
    .await;
    let cert = sealing_certificate(&agent).await;
    assert_eq!(
        cert.trim(),
        key.certificate_pem().trim(),
        "seals with the imported key, no new one"
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &tenant.name);
    let unsealed = wait_for("the migrated Secret", Duration::from_secs(60), || {
        let secrets = secrets.clone();
        async move { Ok(secrets.get_opt("migrated").await?) }
    })
    .await
    .expect("unsealed with the imported key");
    assert_eq!(
        unsealed
            .data
            .unwrap_or_default()
            .get("password")
            .map(|v| v.0.clone()),
        Some(b"s3aled-v4lue".to_vec())
    );
    agent.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn image_repository_cannot_send_a_secret_its_namespace_cannot_read() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "atk-regsecret").await;
    secret(
        &client,
        &ns.name,
        "registry-creds",
        &[("username", "robot"), ("password", "r3gistry-s3cret")],
    )
    .await;
    // The hostile registry: the tenant's own server, hoping for the Secret's credentials.
    let (addr, seen) = hostile_git_server().await;
    let (agent, _cache) = start_agent_bare(&env, &[&ns.name], |o| o.image_automation = true).await;
    create::<ferry_api::images::ImageRepository>(
        &client,
        &ns.name,
        serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "ImageRepository",
            "metadata": {"name": "steal"},
            "spec": {"image": format!("{addr}/team/app"), "insecure": true, "interval": "1m",
                "secretRef": {"name": "registry-creds"}},
        }),
    )
    .await;
    let repos: Api<ferry_api::images::ImageRepository> = Api::namespaced(client.clone(), &ns.name);
    let message = wait_for(
        "the ImageRepository refused",
        Duration::from_secs(60),
        || {
            let repos = repos.clone();
            async move {
                let r = repos.get("steal").await?;
                let ready = r
                    .status
                    .as_ref()
                    .and_then(|s| ferry_api::common::find_condition(&s.conditions, "Ready"))
                    .cloned();
                Ok(ready
                    .filter(|c| c.status == "False" && c.message.contains("forbidden"))
                    .map(|c| c.message))
            }
        },
    )
    .await
    .expect("refused");
    assert!(
        message.contains("registry-creds"),
        "names the Secret: {message}"
    );
    assert!(
        message.contains(&format!("system:serviceaccount:{}:default", ns.name)),
        "names the identity: {message}"
    );
    assert!(!message.contains("r3gistry-s3cret"));
    assert!(
        seen.lock().unwrap_or_else(|p| p.into_inner()).is_empty(),
        "no credential reached the hostile registry"
    );
    agent.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receiver_secret_is_read_as_its_namespace() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "atk-hook").await;
    // Another team's webhook token in a shared namespace; the tenant's default identity may not
    // read it, so a Receiver naming it must not turn it into a working webhook key.
    secret(
        &client,
        &ns.name,
        "their-token",
        &[("token", "h00k-s3cret")],
    )
    .await;
    let (agent, _cache) = start_agent_bare(&env, &[&ns.name], |_| {}).await;
    create::<ferry_api::Receiver>(
        &client,
        &ns.name,
        serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "Receiver",
            "metadata": {"name": "borrowed"},
            "spec": {"type": "github", "secretRef": {"name": "their-token"}},
        }),
    )
    .await;
    let path = format!("/hook/{}/borrowed", ns.name);
    let addr = agent.http_addr;
    let attempt = std::sync::atomic::AtomicU32::new(0);
    let post = || {
        let n = attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = format!("{{\"zen\":\"attempt {n}\"}}").into_bytes();
        let headers = vec![
            ("X-GitHub-Event", "ping".to_string()),
            ("X-GitHub-Delivery", format!("{}-{n}", ns.name)),
            (
                "X-Hub-Signature-256",
                github_signature("h00k-s3cret", &body),
            ),
        ];
        let path = path.clone();
        async move { http(addr, "POST", &path, &headers, &body).await.0 }
    };
    // The Receiver is known (its status is written) but its Secret cannot be read: every
    // correctly signed request is refused.
    let receivers: Api<ferry_api::Receiver> = Api::namespaced(client.clone(), &ns.name);
    let refused = wait_for("the Receiver's status", Duration::from_secs(60), || {
        let receivers = receivers.clone();
        async move {
            let r = receivers.get("borrowed").await?;
            Ok(r.status
                .and_then(|s| ferry_api::common::find_condition(&s.conditions, "Ready").cloned())
                .filter(|c| c.status == "False" && c.message.contains("forbidden")))
        }
    })
    .await
    .expect("Receiver not Ready");
    assert!(
        refused
            .message
            .contains(&format!("system:serviceaccount:{}:default", ns.name)),
        "names the identity: {}",
        refused.message
    );
    assert!(!refused.message.contains("h00k-s3cret"));
    assert_eq!(post().await, 401, "a borrowed Secret is no webhook key");

    // Control: once the namespace's identity may read that Secret, the same request verifies.
    role(
        &client,
        &ns.name,
        "default",
        "default-their-token",
        serde_json::json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["their-token"], "verbs": ["get"]}]),
    )
    .await;
    wait_for("the webhook accepted", Duration::from_secs(60), || {
        let request = post();
        async move {
            let status = request.await;
            if status == 200 {
                return Ok(Some(()));
            }
            anyhow::bail!("status {status}")
        }
    })
    .await
    .expect("accepted once readable");
    agent.stop().await.expect("agent stops");
}

/// A Deployment that never becomes Available (its pods fit no node).
fn stuck_deployment(name: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      nodeSelector: {{ferry.dev/no-such-node: \"true\"}}\n      containers:\n      - name: app\n        image: example.invalid/app:1\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_tenant_with_slow_releases_cannot_stall_another() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let noisy = TestNamespace::create(&client, "atk-noisy").await;
    let quiet = TestNamespace::create(&client, "atk-quiet").await;
    let repo = Repo::create(&env, &noisy.name);
    let sha = repo.commit(
        &[
            ("slow-1/d.yaml", Some(&stuck_deployment("slow-1"))),
            ("slow-2/d.yaml", Some(&stuck_deployment("slow-2"))),
            ("slow-3/d.yaml", Some(&stuck_deployment("slow-3"))),
            ("fast/cm.yaml", Some(&configmap_yaml("fast", "ok"))),
        ],
        "slow and fast",
    );
    // Two workers for the whole agent; one tenant may use one of them at a time.
    let (agent, _cache) = start_agent(&env, &[&noisy.name, &quiet.name], |o| {
        o.concurrency = 2;
        o.max_concurrent_per_namespace = 1;
    })
    .await;
    for ns in [&noisy.name, &quiet.name] {
        git_secret(&env, &client, ns, "git-auth").await;
        create::<GitSource>(
            &client,
            ns,
            git_source("repo", &repo.url, Some("git-auth"), "1m"),
        )
        .await;
    }
    // The noisy tenant: three Releases that each hold a worker until their 30s health wait ends.
    for n in 1..=3 {
        create::<Release>(
            &client,
            &noisy.name,
            release(
                &format!("slow-{n}"),
                "repo",
                &format!("slow-{n}"),
                serde_json::json!({"wait": true, "timeout": "30s"}),
            ),
        )
        .await;
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &noisy.name);
    wait_for("a slow Release waiting", Duration::from_secs(60), || {
        let deployments = deployments.clone();
        async move {
            let list = deployments.list_metadata(&Default::default()).await?;
            Ok((!list.items.is_empty()).then_some(()))
        }
    })
    .await
    .expect("slow apply under way");
    create::<Release>(
        &client,
        &quiet.name,
        release("fast", "repo", "fast", serde_json::json!({})),
    )
    .await;
    wait_release_applied(&client, &quiet.name, "fast", &sha, Duration::from_secs(60)).await;
    // Served while the noisy tenant's health waits were still running (none has ended yet).
    let noisy_releases: Api<Release> = Api::namespaced(client.clone(), &noisy.name);
    for n in 1..=3 {
        let r = noisy_releases
            .get(&format!("slow-{n}"))
            .await
            .expect("slow Release");
        let reason = ready_state(&r.status.unwrap_or_default().conditions).map(|c| c.1);
        assert_ne!(
            reason.as_deref(),
            Some("HealthCheckFailed"),
            "slow-{n} had already given up: the quiet tenant was not served during the waits"
        );
    }
    agent.stop().await.expect("agent stops");
}
