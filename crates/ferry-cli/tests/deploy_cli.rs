//! `ferry deploy` (the real binary) against a real in-process agent, the testenv git server and
//! the testenv kube-apiserver as the OIDC issuer (its service-account tokens, as another cluster's
//! CI would send them): the token from a file, from `$FERRY_OIDC_TOKEN`, and through GitHub
//! Actions' ID token request. GitHub's token endpoint cannot run here: a stand-in HTTP server
//! (this test's, said so) answers the runner's request with a real service-account token, so the
//! CLI's side of that flow (URL, audience parameter, bearer, answer shape) is what is tested.
//! No kubeconfig is given to the `ferry deploy` processes. And a pipeline fails when its deploy
//! does: a commit the API server refuses exits 1 naming the object (nothing else changed), a
//! commit whose objects never become healthy within the Release's timeout exits 3.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{run, start_agent};
use ferry_testsupport::ferry::{
    create, grant_admin, hourly_release, service_account, service_account_token, setup,
};
use ferry_testsupport::git::Repo;
use ferry_testsupport::http::request;
use ferry_testsupport::wait_until;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

const AUDIENCE: &str = "ferry-deploy-cli-test";

fn deploy(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
    command
        .arg("deploy")
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("FERRY_OIDC_TOKEN")
        .env_remove("ACTIONS_ID_TOKEN_REQUEST_URL")
        .env_remove("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
        // No cluster credentials anywhere: a kubeconfig that does not exist.
        .env("KUBECONFIG", "/nonexistent/kubeconfig");
    for (k, v) in env {
        command.env(k, v);
    }
    run(&mut command)
}

async fn configmap(client: &kube::Client, ns: &str) -> Option<String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    api.get_opt("shop")
        .await
        .expect("read")
        .and_then(|c| c.data)
        .and_then(|d| d.get("value").cloned())
}

fn cm(value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shop\ndata:\n  value: \"{value}\"\n"
    )
}

/// `ferry deploy --agent AGENT --release RELEASE --revision REVISION MORE...` with `env`.
fn deploy_to(
    agent: &str,
    release: &str,
    revision: &str,
    more: &[&str],
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let mut args = vec![
        "--agent",
        agent,
        "--release",
        release,
        "--revision",
        revision,
    ];
    args.extend_from_slice(more);
    deploy(&args, env)
}

/// A stand-in for GitHub's ID token endpoint: answers one GET with `{"value": token}` and
/// records the request line and the Authorization header.
fn fake_github_token_endpoint(token: String) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://{}/token?api-version=2.0",
        listener.local_addr().expect("addr")
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok() {
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                record
                    .lock()
                    .expect("lock")
                    .push(line.trim_end().to_string());
                line.clear();
            }
            let body = json!({"value": token}).to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.read(&mut [0u8; 1]);
        }
    });
    (url, seen)
}

/// Anonymous reads of the API server's OIDC discovery (only that), as the test's issuer needs:
/// the ClusterRoleBinding's name, to delete it at the end.
async fn allow_oidc_discovery(client: &kube::Client, ns: &str) -> String {
    let crbs: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(client.clone());
    let crb = format!("{ns}-oidc-discovery");
    let _ = crbs
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": crb},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:service-account-issuer-discovery"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:unauthenticated"}],
            }))
            .expect("crb"),
        )
        .await;
    crb
}

/// A DeployPolicy `ci` admitting tokens of the service account `ci` (audience [`AUDIENCE`]),
/// issued by the testenv kube-apiserver, for the Release `web` and commits on `main`.
async fn ci_policy(env: &ferry_testsupport::TestEnv, client: &kube::Client, ns: &str) {
    let apiserver = env.var("FERRY_APISERVER_URL");
    let ca = std::fs::read_to_string(format!("{}/pki/ca.crt", env.var("FERRY_TESTENV_DIR")))
        .expect("CA");
    create::<ferry_api::DeployPolicy>(
        client,
        ns,
        json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "DeployPolicy", "metadata": {"name": "ci"},
            "spec": {
                "issuer": {"url": "https://kubernetes.default.svc.cluster.local",
                           "discoveryURL": format!("{apiserver}/.well-known/openid-configuration"),
                           "caBundle": ca},
                "audience": AUDIENCE,
                "subjects": [format!("system:serviceaccount:{ns}:ci")],
                "releases": ["web"],
                "revisions": {"branch": "main"},
            },
        }),
    )
    .await;
    service_account(client, ns, "ci").await;
}

/// The agent's `/metrics` text (a plain HTTP/1.1 GET).
async fn metrics_text(addr: std::net::SocketAddr) -> String {
    let (status, text) = request(addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200, "GET /metrics: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ferry_deploy_deploys_with_an_oidc_token_and_no_kubeconfig() {
    let (env, client, ns) = setup("deploy-cli").await;
    // The tenant's default service account applies (the agent's secure default).
    grant_admin(&client, &ns.name, "default").await;
    let crb = allow_oidc_discovery(&client, &ns.name).await;
    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    let repo = Repo::create(&env, &ns.name);
    let first = repo.commit_files(&[("app/cm.yaml", cm("one").as_str())], "one");
    hourly_release(&env, &client, &ns.name, &repo, "web", json!({})).await;
    ci_policy(&env, &client, &ns.name).await;
    let mint = || service_account_token(&client, &ns.name, "ci", &[AUDIENCE]);
    wait_until("Release web applied", Duration::from_secs(60), || {
        let client = client.clone();
        let ns = ns.name.clone();
        async move {
            match configmap(&client, &ns).await.as_deref() {
                Some("one") => Ok(Some(())),
                other => anyhow::bail!("ConfigMap: {other:?}"),
            }
        }
    })
    .await;
    let agent_url = format!("http://{}", agent.http_addr);
    let release = format!("{}/web", ns.name);

    // A token from a file.
    let second = repo.commit_files(&[("app/cm.yaml", cm("two").as_str())], "two");
    let dir = tempfile::tempdir().expect("tmp");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, mint().await).expect("token file");
    let token_path = token_file.to_str().expect("utf8");
    let (code, out, err) = deploy_to(
        &agent_url,
        &release,
        &second,
        &["--token-file", token_path],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("deploy {release} at {}: succeeded", &second[..12])),
        "{out}"
    );
    assert!(
        out.contains("configured") && out.contains("ConfigMap"),
        "the apply report: {out}"
    );
    assert!(
        err.contains("accepted: request"),
        "progress on stderr: {err}"
    );
    assert_eq!(configmap(&client, &ns.name).await.as_deref(), Some("two"));
    // The same token again: refused (replay), exit 2.
    let (code, _, err) = deploy_to(
        &agent_url,
        &release,
        &second,
        &["--token-file", token_path],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("409") && err.contains("already used"), "{err}");

    // $FERRY_OIDC_TOKEN, markdown for a job summary.
    let third = repo.commit_files(&[("app/cm.yaml", cm("three").as_str())], "three");
    let token = mint().await;
    let (code, out, err) = deploy_to(
        &agent_url,
        &release,
        &third,
        &["-o", "markdown"],
        &[("FERRY_OIDC_TOKEN", &token)],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with(&format!(
            "### ferry deploy `{release}` at `{}`: succeeded",
            &third[..12]
        )),
        "{out}"
    );
    assert!(out.contains("| object | action | health |"), "{out}");
    assert_eq!(configmap(&client, &ns.name).await.as_deref(), Some("three"));

    // GitHub Actions' flow (stand-in endpoint, see the module doc): a rollback to the first
    // commit, which the policy refuses: exit 2, nothing applied.
    let (url, seen) = fake_github_token_endpoint(mint().await);
    let (code, out, err) = deploy_to(
        &agent_url,
        &release,
        &first,
        &["--audience", AUDIENCE],
        &[
            ("ACTIONS_ID_TOKEN_REQUEST_URL", &url),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "runner-request-token"),
        ],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("refused") && out.contains("rollback"), "{out}");
    let seen = seen.lock().expect("lock").clone();
    assert!(
        seen.first().is_some_and(
            |l| l.starts_with("GET /token?api-version=2.0&audience=ferry-deploy-cli-test ")
        ),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.eq_ignore_ascii_case("authorization: Bearer runner-request-token")),
        "{seen:?}"
    );
    assert_eq!(configmap(&client, &ns.name).await.as_deref(), Some("three"));

    // A garbage token: refused by the agent with the reason, exit 2.
    std::fs::write(&token_file, "not-a-jwt").expect("write");
    let (code, _, err) = deploy_to(
        &agent_url,
        &release,
        &third,
        &["--token-file", token_path],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("401") && err.contains("not a JWT"), "{err}");
    // Every request so far is counted on the agent's /metrics, refusals with their reason
    // (a token that names no issuer gets no namespace label: made-up input grows no series).
    let metrics = metrics_text(agent.metrics_addr).await;
    let sample = |labels: &str| -> u64 {
        let prefix = format!("ferry_deploy_requests_total{{{labels}}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let ns_label = format!("namespace=\"{}\"", ns.name);
    assert_eq!(
        sample(r#"namespace="",result="refused",reason="unauthenticated""#),
        1,
        "{metrics}"
    );
    assert_eq!(
        sample(&format!(r#"{ns_label},result="refused",reason="replayed""#)),
        1,
        "{metrics}"
    );
    assert_eq!(
        sample(&format!(r#"{ns_label},result="refused",reason="rollback""#)),
        1,
        "{metrics}"
    );
    assert!(
        sample(&format!(
            r#"{ns_label},result="accepted",reason="succeeded""#
        )) >= 2,
        "{metrics}"
    );
    // No token at all, and plain http to another host: refused before anything is sent.
    let (code, _, err) = deploy_to(&agent_url, &release, &third, &[], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("no OIDC token"), "{err}");
    let (code, _, err) = deploy_to(
        "http://ferry.example.com",
        &release,
        &third,
        &["--token-file", token_path],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("clear text"), "{err}");

    let crbs: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(client.clone());
    let _ = crbs.delete(&crb, &DeleteParams::default()).await;
    agent.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ferry_deploy_fails_when_the_commit_is_refused_and_times_out_when_it_never_gets_healthy() {
    let (env, client, ns) = setup("deploy-cli-fail").await;
    grant_admin(&client, &ns.name, "default").await;
    let crb = allow_oidc_discovery(&client, &ns.name).await;
    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    let repo = Repo::create(&env, &ns.name);
    let extra =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  value: \"kept\"\n";
    let first = repo.commit_files(
        &[
            ("app/cm.yaml", cm("one").as_str()),
            ("app/extra.yaml", extra),
        ],
        "one",
    );
    // Waits for health, 8 s at most; a ConfigMap whose value is "stuck" never becomes healthy.
    hourly_release(
        &env,
        &client,
        &ns.name,
        &repo,
        "web",
        json!({"wait": true, "timeout": "8s", "healthCheckExprs": [
            {"apiVersion": "v1", "kind": "ConfigMap", "current": "data.value != 'stuck'"}
        ]}),
    )
    .await;
    ci_policy(&env, &client, &ns.name).await;
    let releases: Api<ferry_api::Release> = Api::namespaced(client.clone(), &ns.name);
    let applied_revision = || async {
        releases
            .get("web")
            .await
            .expect("Release web")
            .status
            .and_then(|s| s.last_applied_revision)
            .unwrap_or_default()
    };
    wait_until("Release web applied", Duration::from_secs(60), || async {
        let revision = applied_revision().await;
        if revision.ends_with(&first) {
            return Ok(Some(()));
        }
        anyhow::bail!("lastAppliedRevision {revision:?}")
    })
    .await;
    let agent_url = format!("http://{}", agent.http_addr);
    let release = format!("{}/web", ns.name);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);

    // A commit the API server refuses: a ConfigMap key with a space and `!`. The same commit
    // drops extra.yaml, which must not be pruned by a failed deploy.
    let bad = repo.commit(
        &[
            (
                "app/broken.yaml",
                Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken\ndata:\n  \"bad key!\": v\n"),
            ),
            ("app/extra.yaml", None),
        ],
        "refused by the API server",
    );
    let token = service_account_token(&client, &ns.name, "ci", &[AUDIENCE]).await;
    let (code, out, err) = deploy_to(
        &agent_url,
        &release,
        &bad,
        &[],
        &[("FERRY_OIDC_TOKEN", &token)],
    );
    assert_eq!(code, 1, "a refused commit fails the job: {out}{err}");
    assert!(
        out.contains(&format!("deploy {release} at {}: failed", &bad[..12])),
        "{out}"
    );
    // The report names the refused object and the API server's reason.
    assert!(
        out.lines()
            .any(|l| l.starts_with("failed") && l.contains("ConfigMap") && l.contains("broken")),
        "a `failed ConfigMap/.../broken` line: {out}"
    );
    assert!(
        out.contains("bad key!") && out.contains("valid config key"),
        "the API server's reason: {out}"
    );
    // Nothing else changed: not created, nothing pruned, the applied revision kept.
    assert!(
        configmaps.get_opt("broken").await.expect("get").is_none(),
        "the refused object does not exist"
    );
    assert!(
        configmaps.get_opt("extra").await.expect("get").is_some(),
        "a failed deploy prunes nothing"
    );
    assert_eq!(configmap(&client, &ns.name).await.as_deref(), Some("one"));
    assert!(
        applied_revision().await.ends_with(&first),
        "lastAppliedRevision stays at the last good commit"
    );

    // A commit whose object never becomes healthy: health times out after the Release's 8 s.
    let stuck = repo.commit(
        &[
            ("app/broken.yaml", None),
            ("app/cm.yaml", Some(cm("stuck").as_str())),
        ],
        "never healthy",
    );
    let token = service_account_token(&client, &ns.name, "ci", &[AUDIENCE]).await;
    let started = std::time::Instant::now();
    let (code, out, err) = deploy_to(
        &agent_url,
        &release,
        &stuck,
        &[],
        &[("FERRY_OIDC_TOKEN", &token)],
    );
    assert_eq!(code, 3, "health timed out: {out}{err}");
    assert!(
        out.contains(&format!("deploy {release} at {}: timedOut", &stuck[..12])),
        "{out}"
    );
    assert!(
        out.contains("ConfigMap") && out.contains("shop") && out.contains("in-progress"),
        "the report names the object still in progress: {out}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(8),
        "waited the Release's timeout: {:?}",
        started.elapsed()
    );
    assert!(
        applied_revision().await.ends_with(&first),
        "a timed-out revision is not recorded as applied"
    );

    let crbs: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(client.clone());
    let _ = crbs.delete(&crb, &DeleteParams::default()).await;
    agent.stop().await.expect("agent stops");
}
