//! The REAL forge of the test environment (Gitea) both ways. Notifications: a Provider of type
//! `gitea` and an Alert make the in-process agent write a commit status on the commit it applied
//! (success after an apply, failure for a broken commit), read back through Gitea's API.
//! Webhooks: Gitea's own signed push events (a repository webhook made through its API) reach
//! the agent's Receiver and the pushed commit is applied at once; deliveries signed with a wrong
//! secret or with none are refused (401) and trigger nothing. The app lives in a Gitea
//! repository pushed over HTTP with a token, like a real tenant's.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use ferry_api::{Alert, GitSource, Provider, Receiver, Release};
use ferry_testsupport::{TestEnv, TestNamespace, unique_name, wait_for};

/// A user, token and empty repository on the testenv Gitea, made through its admin API.
struct ForgeRepo {
    base: String,
    user: String,
    token: String,
    repo: String,
    work: tempfile::TempDir,
}

impl ForgeRepo {
    async fn create(env: &TestEnv, http: &reqwest::Client) -> Self {
        let base = env.var("FERRY_FORGE_URL");
        let admin = env.var("FERRY_FORGE_USER");
        let admin_password = env.var("FERRY_FORGE_PASSWORD");
        let user = unique_name("notify");
        let password = format!("pw-{}", unique_name("x"));
        let response = http
            .post(format!("{base}/api/v1/admin/users"))
            .basic_auth(&admin, Some(&admin_password))
            .json(&serde_json::json!({
                "username": user, "email": format!("{user}@example.invalid"),
                "password": password, "must_change_password": false,
            }))
            .send()
            .await
            .expect("create forge user");
        assert!(
            response.status().is_success(),
            "create user: {}",
            response.status()
        );
        let token: serde_json::Value = http
            .post(format!("{base}/api/v1/users/{user}/tokens"))
            .basic_auth(&user, Some(&password))
            .json(
                &serde_json::json!({"name": "ferry", "scopes": ["write:repository", "write:user"]}),
            )
            .send()
            .await
            .expect("create token")
            .json()
            .await
            .expect("token json");
        let token = token["sha1"].as_str().expect("token in answer").to_string();
        let repo = "app".to_string();
        let response = http
            .post(format!("{base}/api/v1/user/repos"))
            .header("Authorization", format!("token {token}"))
            .json(&serde_json::json!({"name": repo, "default_branch": "main", "private": true}))
            .send()
            .await
            .expect("create repo");
        assert!(
            response.status().is_success(),
            "create repo: {}",
            response.status()
        );
        let work = tempfile::tempdir().expect("work dir");
        let me = Self {
            base,
            user,
            token,
            repo,
            work,
        };
        me.git(&["init", "-q", "-b", "main"]);
        me.git(&["config", "user.email", "test@example.invalid"]);
        me.git(&["config", "user.name", "test"]);
        me
    }

    fn clone_url(&self) -> String {
        format!("{}/{}/{}.git", self.base, self.user, self.repo)
    }

    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(self.work.path())
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Commit `files` and push over HTTP with the token (basic auth, token as password).
    fn commit_and_push(&self, files: &[(&str, &str)], message: &str) -> String {
        for (path, text) in files {
            let full = self.work.path().join(path);
            std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
            std::fs::write(full, text).expect("write");
        }
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        let push_url =
            self.clone_url()
                .replacen("://", &format!("://{}:{}@", self.user, self.token), 1);
        self.git(&["push", "-q", &push_url, "HEAD:main"]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// A repository webhook of Gitea's own type, for push events, signed with `secret` (Gitea
    /// signs nothing when it is empty); returns its id.
    async fn add_webhook(&self, http: &reqwest::Client, url: &str, secret: &str) -> i64 {
        let response = http
            .post(format!(
                "{}/api/v1/repos/{}/{}/hooks",
                self.base, self.user, self.repo
            ))
            .header("Authorization", format!("token {}", self.token))
            .json(&serde_json::json!({
                "type": "gitea", "active": true, "events": ["push"], "branch_filter": "*",
                "config": {"url": url, "content_type": "json", "secret": secret},
            }))
            .send()
            .await
            .expect("create webhook");
        assert!(
            response.status().is_success(),
            "create webhook: {}",
            response.status()
        );
        let hook: serde_json::Value = response.json().await.expect("webhook json");
        hook["id"].as_i64().expect("webhook id")
    }

    async fn delete_webhook(&self, http: &reqwest::Client, id: i64) {
        let response = http
            .delete(format!(
                "{}/api/v1/repos/{}/{}/hooks/{id}",
                self.base, self.user, self.repo
            ))
            .header("Authorization", format!("token {}", self.token))
            .send()
            .await
            .expect("delete webhook");
        assert!(
            response.status().is_success(),
            "delete webhook: {}",
            response.status()
        );
    }

    async fn statuses(&self, http: &reqwest::Client, sha: &str) -> Vec<serde_json::Value> {
        let url = format!(
            "{}/api/v1/repos/{}/{}/commits/{sha}/statuses",
            self.base, self.user, self.repo
        );
        match http
            .get(url)
            .header("Authorization", format!("token {}", self.token))
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }
}

async fn wait_status(
    forge: &ForgeRepo,
    http: &reqwest::Client,
    sha: &str,
    context: &str,
    state: &str,
) -> serde_json::Value {
    wait_for(
        &format!("Gitea commit status {state} for {context} on {sha}"),
        Duration::from_secs(90),
        || async {
            let all = forge.statuses(http, sha).await;
            let hit = all.iter().find(|s| {
                s["context"].as_str() == Some(context) && s["status"].as_str() == Some(state)
            });
            match hit {
                Some(s) => Ok(Some(s.clone())),
                None => anyhow::bail!("statuses so far: {all:?}"),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gitea_commit_status_follows_applies_and_failures() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let http = reqwest::Client::new();
    let ns = TestNamespace::create(&client, "notify-gitea").await;
    let forge = ForgeRepo::create(&env, &http).await;
    let first = forge.commit_and_push(&[("app/a.yaml", &configmap_yaml("a", "one"))], "first");

    let (_agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    secret(
        &client,
        &ns.name,
        "forge",
        &[
            ("username", &forge.user),
            ("password", &forge.token),
            ("token", &forge.token),
        ],
    )
    .await;
    create::<Provider>(
        &client,
        &ns.name,
        serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "Provider",
            "metadata": {"name": "gitea"},
            "spec": {"type": "gitea", "address": format!("{}/{}/{}", forge.base, forge.user, forge.repo),
                     "secretRef": {"name": "forge"}},
        }),
    )
    .await;
    create::<Alert>(
        &client,
        &ns.name,
        serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "Alert",
            "metadata": {"name": "status"},
            "spec": {"providerRef": {"name": "gitea"},
                     "eventSources": [{"kind": "Release", "name": "*"}]},
        }),
    )
    .await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &forge.clone_url(), Some("forge"), "2s"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release("app", "repo", "app", serde_json::json!({})),
    )
    .await;
    let context = format!("ferry/{}/app", ns.name);

    let applied =
        wait_release_applied(&client, &ns.name, "app", &first, Duration::from_secs(90)).await;
    let applied_at = Instant::now();
    let status = wait_status(&forge, &http, &first, &context, "success").await;
    eprintln!(
        "notify latency: Release Ready at {first} seen -> Gitea success status seen: {:?}",
        applied_at.elapsed()
    );
    assert!(
        applied
            .status
            .as_ref()
            .and_then(|s| s.last_applied_revision.as_deref())
            .is_some_and(|r| r.ends_with(&first))
    );
    assert!(
        status["description"]
            .as_str()
            .is_some_and(|d| d.contains(&first)),
        "description names the revision: {status}"
    );

    // A broken commit: the API server refuses the object, the commit gets a failure status.
    let broken = forge.commit_and_push(
        &[(
            "app/b.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_A_Valid_Name\ndata:\n  k: v\n",
        )],
        "broken",
    );
    let failed = wait_status(&forge, &http, &broken, &context, "failure").await;
    assert!(
        failed["description"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    // The earlier commit keeps its success; the Alert says the last delivery worked.
    assert!(
        forge
            .statuses(&http, &first)
            .await
            .iter()
            .all(|s| s["status"] == "success")
    );
    let alerts: kube::Api<Alert> = kube::Api::namespaced(client.clone(), &ns.name);
    let alert = alerts.get("status").await.expect("alert");
    let ready = ready_state(&alert.status.unwrap_or_default().conditions);
    assert_eq!(
        ready.map(|(s, r, _)| (s, r)),
        Some(("True".into(), "Delivered".into()))
    );
}

/// The value of one sample of the agent's `/metrics` (0 when absent).
async fn metric(agent: &ferry_agent::Agent, sample: &str) -> u64 {
    let (status, text) = http(agent.metrics_addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200, "GET /metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(sample))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gitea_push_webhook_triggers_the_receiver_and_forged_deliveries_are_refused() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let api_client = reqwest::Client::new();
    let api = &api_client;
    let ns = TestNamespace::create(&client, "gitea-hook").await;
    let forge = ForgeRepo::create(&env, api).await;
    let first = forge.commit_and_push(&[("app/a.yaml", &configmap_yaml("a", "one"))], "first");

    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    secret(
        &client,
        &ns.name,
        "forge",
        &[("username", &forge.user), ("password", &forge.token)],
    )
    .await;
    let hook_secret = format!("hook-{}", unique_name("s"));
    secret(&client, &ns.name, "hook-token", &[("token", &hook_secret)]).await;
    // Hour-long intervals: within this test only a webhook can make the source fetch.
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &forge.clone_url(), Some("forge"), "1h"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release("app", "repo", "app", serde_json::json!({"interval": "1h"})),
    )
    .await;
    create::<Receiver>(
        &client,
        &ns.name,
        serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "Receiver",
            "metadata": {"name": "gitea"},
            "spec": {"type": "gitea", "secretRef": {"name": "hook-token"}},
        }),
    )
    .await;
    wait_release_applied(&client, &ns.name, "app", &first, Duration::from_secs(90)).await;
    let hook_url = format!("http://{}/hook/{}/gitea", agent.http_addr, ns.name);
    let refused = format!(
        "ferry_webhook_requests_total{{receiver=\"{}/gitea\",result=\"unauthorized\"}}",
        ns.name
    );
    let accepted = format!(
        "ferry_webhook_requests_total{{receiver=\"{}/gitea\",result=\"accepted\"}}",
        ns.name
    );

    // Attack: Gitea delivers a real push event signed with the wrong secret, and one unsigned
    // (a webhook without a secret). Both are refused with 401 and nothing is fetched.
    let wrong = forge
        .add_webhook(api, &hook_url, "not-the-receivers-secret")
        .await;
    let unsigned = forge.add_webhook(api, &hook_url, "").await;
    let second = forge.commit_and_push(&[("app/a.yaml", &configmap_yaml("a", "two"))], "second");
    wait_for(
        "both forged deliveries refused by the agent",
        Duration::from_secs(60),
        || async {
            let n = metric(&agent, &refused).await;
            if n >= 2 {
                return Ok(Some(n));
            }
            anyhow::bail!("refused deliveries so far: {n}")
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(metric(&agent, &accepted).await, 0, "nothing was accepted");
    let sources: kube::Api<GitSource> = kube::Api::namespaced(client.clone(), &ns.name);
    let gs = sources.get("repo").await.expect("source");
    assert!(
        !gs.metadata
            .annotations
            .unwrap_or_default()
            .contains_key(ferry_api::common::RECONCILE_REQUESTED_AT),
        "a refused delivery asked for no fetch"
    );
    let revision = gs.status.unwrap_or_default().revision.unwrap_or_default();
    assert!(
        revision.ends_with(&first) && !revision.ends_with(&second),
        "refused deliveries fetched nothing: {revision}"
    );
    forge.delete_webhook(api, wrong).await;
    forge.delete_webhook(api, unsigned).await;

    // The real thing: a webhook with the Receiver's secret; a push is applied within seconds
    // although every interval is an hour.
    forge.add_webhook(api, &hook_url, &hook_secret).await;
    let third = forge.commit_and_push(&[("app/a.yaml", &configmap_yaml("a", "three"))], "third");
    let pushed = Instant::now();
    let applied =
        wait_release_applied(&client, &ns.name, "app", &third, Duration::from_secs(60)).await;
    eprintln!(
        "gitea webhook latency: git push returned -> Release Ready at {third}: {:?}",
        pushed.elapsed()
    );
    assert!(metric(&agent, &accepted).await >= 1);
    let configmaps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), &ns.name);
    let cm = configmaps.get("a").await.expect("configmap a");
    assert_eq!(
        cm.data.unwrap_or_default().get("value").map(String::as_str),
        Some("three")
    );
    assert!(
        applied
            .status
            .and_then(|s| s.last_applied_revision)
            .is_some_and(|r| r.ends_with(&third))
    );
}
