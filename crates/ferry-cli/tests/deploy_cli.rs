//! `ferry deploy` (the real binary) against a real in-process agent, the testenv git server and
//! the testenv kube-apiserver as the OIDC issuer (its service-account tokens, as another cluster's
//! CI would send them): the token from a file, from `$FERRY_OIDC_TOKEN`, and through GitHub
//! Actions' ID token request. GitHub's token endpoint cannot run here: a stand-in HTTP server
//! (this test's, said so) answers the runner's request with a real service-account token, so the
//! CLI's side of that flow (URL, audience parameter, bearer, answer shape) is what is tested.
//! No kubeconfig is given to the `ferry deploy` processes.

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
    // Anonymous reads of the API server's OIDC discovery (only that).
    let crbs: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(client.clone());
    let crb = format!("{}-oidc-discovery", ns.name);
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
    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    let repo = Repo::create(&env, &ns.name);
    let first = repo.commit_files(&[("app/cm.yaml", cm("one").as_str())], "one");
    hourly_release(&env, &client, &ns.name, &repo, "web", json!({})).await;
    let apiserver = env.var("FERRY_APISERVER_URL");
    let ca = std::fs::read_to_string(format!("{}/pki/ca.crt", env.var("FERRY_TESTENV_DIR")))
        .expect("CA");
    create::<ferry_api::DeployPolicy>(
        &client,
        &ns.name,
        json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "DeployPolicy", "metadata": {"name": "ci"},
            "spec": {
                "issuer": {"url": "https://kubernetes.default.svc.cluster.local",
                           "discoveryURL": format!("{apiserver}/.well-known/openid-configuration"),
                           "caBundle": ca},
                "audience": AUDIENCE,
                "subjects": [format!("system:serviceaccount:{}:ci", ns.name)],
                "releases": ["web"],
                "revisions": {"branch": "main"},
            },
        }),
    )
    .await;
    service_account(&client, &ns.name, "ci").await;
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

    let _ = crbs.delete(&crb, &DeleteParams::default()).await;
    agent.stop().await.expect("agent stops");
}
