//! The REAL forge of the test environment (Gitea) both ways. Notifications: a Provider of type
//! `gitea` and an Alert make the in-process agent write commit statuses on the commit it applies
//! (pending while it applies, then success, or failure for a broken commit), each with its link
//! (the agent's --external-url page of the Release, then the Provider's spec.targetURL), read
//! back through Gitea's API.
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

    fn statuses_url(&self, sha: &str) -> String {
        format!(
            "{}/api/v1/repos/{}/{}/commits/{sha}/statuses",
            self.base, self.user, self.repo
        )
    }

    async fn statuses(&self, http: &reqwest::Client, sha: &str) -> Vec<serde_json::Value> {
        match http
            .get(self.statuses_url(sha))
            .header("Authorization", format!("token {}", self.token))
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }
}

/// When a watch of Release `name` first sees it Ready with `sha` applied (`None`: not within
/// 90 s; the test's own waits then fail with the reason).
async fn ready_seen_by_watch(
    api: kube::Api<Release>,
    name: String,
    sha: String,
) -> Option<Instant> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut releases = std::pin::pin!(watcher(api, config).applied_objects());
    let ready = async {
        while let Some(event) = releases.next().await {
            let Ok(release) = event else { continue };
            let status = release.status.unwrap_or_default();
            let applied = status
                .last_applied_revision
                .as_deref()
                .is_some_and(|r| r.ends_with(&sha));
            if applied && ready_state(&status.conditions).is_some_and(|(s, _, _)| s == "True") {
                return Some(Instant::now());
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_secs(90), ready)
        .await
        .ok()
        .flatten()
}

/// When a commit status `state` for `context` first shows at `url` (Gitea's statuses of one
/// commit), polling every 20 ms for up to 90 s.
async fn status_seen_by_polling(
    url: String,
    token: String,
    context: String,
    state: &'static str,
) -> Option<Instant> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let found = match http
            .get(&url)
            .header("Authorization", format!("token {token}"))
            .send()
            .await
        {
            Ok(r) => r.json::<Vec<serde_json::Value>>().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        if found.iter().any(|s| {
            s["context"].as_str() == Some(context.as_str()) && s["status"].as_str() == Some(state)
        }) {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The statuses of `context` on `sha`, oldest first (Gitea keeps every status it was sent).
async fn history(
    forge: &ForgeRepo,
    http: &reqwest::Client,
    sha: &str,
    context: &str,
) -> Vec<serde_json::Value> {
    let mut all: Vec<serde_json::Value> = forge
        .statuses(http, sha)
        .await
        .into_iter()
        .filter(|s| s["context"].as_str() == Some(context))
        .collect();
    all.sort_by_key(|s| s["id"].as_i64());
    all
}

/// The states of `statuses` in order, e.g. `["pending", "success"]`.
fn states(statuses: &[serde_json::Value]) -> Vec<String> {
    statuses
        .iter()
        .map(|s| s["status"].as_str().unwrap_or_default().to_string())
        .collect()
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

    // The dashboard's address: the default link of every commit status.
    let (_agent, _cache) = start_agent(&env, &[&ns.name], |o| {
        o.external_url = Some("https://ferry.example.com/ui/".parse().expect("url"));
    })
    .await;
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
    let context = format!("ferry/{}/app", ns.name);
    // For bench/notify: when a watch sees the Release Ready at the commit, and when the status
    // first shows in Gitea's API (polled every 20 ms), both started before the Release exists.
    let ready_seen = tokio::spawn(ready_seen_by_watch(
        kube::Api::namespaced(client.clone(), &ns.name),
        "app".to_string(),
        first.clone(),
    ));
    let status_seen = tokio::spawn(status_seen_by_polling(
        forge.statuses_url(&first),
        forge.token.clone(),
        context.clone(),
        "success",
    ));
    create::<Release>(
        &client,
        &ns.name,
        release("app", "repo", "app", serde_json::json!({})),
    )
    .await;

    let applied =
        wait_release_applied(&client, &ns.name, "app", &first, Duration::from_secs(90)).await;
    let status = wait_status(&forge, &http, &first, &context, "success").await;
    if let (Ok(Some(ready_at)), Ok(Some(status_at))) = (ready_seen.await, status_seen.await) {
        let ms = if status_at >= ready_at {
            status_at.duration_since(ready_at).as_millis() as i128
        } else {
            -(ready_at.duration_since(status_at).as_millis() as i128)
        };
        eprintln!("notify latency (Release Ready -> Gitea commit status visible): {ms} ms");
    }
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
    // The link: the dashboard's page of the Release (--external-url, no Provider targetURL).
    let dashboard = format!("https://ferry.example.com/ui/apps/release/{}/app", ns.name);
    assert_eq!(status["target_url"], dashboard.as_str(), "{status}");
    // Pending while the agent applied, then success; both with the link.
    let first_statuses = history(&forge, &http, &first, &context).await;
    assert_eq!(
        states(&first_statuses),
        ["pending", "success"],
        "{first_statuses:#?}"
    );
    assert!(
        first_statuses[0]["description"]
            .as_str()
            .is_some_and(|d| d.contains(&first) && d.contains("applying")),
        "{first_statuses:#?}"
    );
    assert!(
        first_statuses
            .iter()
            .all(|s| s["target_url"] == dashboard.as_str()),
        "{first_statuses:#?}"
    );

    // The Provider's own link template wins over the dashboard's.
    let providers: kube::Api<Provider> = kube::Api::namespaced(client.clone(), &ns.name);
    providers
        .patch(
            "gitea",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {
                "targetURL": "https://grafana.example/d/deploys?release={namespace}/{name}&commit={commit}",
            }})),
        )
        .await
        .expect("set spec.targetURL");

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
    let broken_statuses = history(&forge, &http, &broken, &context).await;
    assert_eq!(
        states(&broken_statuses),
        ["pending", "failure"],
        "{broken_statuses:#?}"
    );
    let grafana = format!(
        "https://grafana.example/d/deploys?release={}/app&commit={broken}",
        ns.name
    );
    assert!(
        broken_statuses
            .iter()
            .all(|s| s["target_url"] == grafana.as_str()),
        "{broken_statuses:#?}"
    );
    // The earlier commit keeps its pending and success (retries of the broken commit post
    // nothing more); the Alert says the last delivery worked.
    assert_eq!(
        states(&history(&forge, &http, &first, &context).await),
        ["pending", "success"]
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
    let good = forge.add_webhook(api, &hook_url, &hook_secret).await;
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

    // Flux documents Gitea webhooks with a `github` Receiver: Gitea also sends GitHub's headers
    // (`X-GitHub-Event`, `X-Hub-Signature-256`), so that works here too.
    forge.delete_webhook(api, good).await;
    create::<Receiver>(
        &client,
        &ns.name,
        serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "Receiver",
            "metadata": {"name": "github-style"},
            "spec": {"type": "github", "secretRef": {"name": "hook-token"}},
        }),
    )
    .await;
    let github_style = format!(
        "ferry_webhook_requests_total{{receiver=\"{}/github-style\",result=\"accepted\"}}",
        ns.name
    );
    let url = format!("http://{}/hook/{}/github-style", agent.http_addr, ns.name);
    forge.add_webhook(api, &url, &hook_secret).await;
    // The Receiver's key is loaded in the background: wait until a signed ping of ours is
    // accepted, then push.
    let mut attempt = 0u32;
    wait_for(
        "the github-style Receiver accepts a signed ping",
        Duration::from_secs(30),
        || {
            attempt += 1;
            let body = format!(r#"{{"zen":"ping {attempt}"}}"#).into_bytes();
            let path = format!("/hook/{}/github-style", ns.name);
            let signature = github_signature(&hook_secret, &body);
            let addr = agent.http_addr;
            async move {
                let (status, _) = http(
                    addr,
                    "POST",
                    &path,
                    &[
                        ("X-GitHub-Event", "ping".into()),
                        ("X-Hub-Signature-256", signature),
                    ],
                    &body,
                )
                .await;
                if status == 200 {
                    return Ok(Some(()));
                }
                anyhow::bail!("ping answered {status}")
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let fourth = forge.commit_and_push(&[("app/a.yaml", &configmap_yaml("a", "four"))], "fourth");
    wait_release_applied(&client, &ns.name, "app", &fourth, Duration::from_secs(60)).await;
    // Our ping and Gitea's push.
    assert!(metric(&agent, &github_style).await >= 2);
}
