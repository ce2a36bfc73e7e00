//! Notification request shapes, recorded by a local HTTP server this test starts. It stands in
//! for the hosted services that cannot run here (GitHub, GitLab, Slack, Teams, Discord, a
//! generic-hmac receiver); the Releases, Providers, Alerts and agent are real. Also: a 500 is
//! retried until it succeeds, and refused Providers (unreadable Secret, non-http address) say
//! why in their status. Events of sources and image automation reach Alerts too: a GitSource's
//! new commits and an unreachable GitSource, an ImagePolicy's new latest image and the commit an
//! ImageUpdate pushed, as signed generic-hmac payloads naming the right kind; commit-status
//! Providers get none of them.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use common::*;
use ferry_api::images::{ImagePolicy, ImageRepository, ImageUpdate};
use ferry_api::{Alert, GitSource, Provider, Release};
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use kube::Api;

#[derive(Clone, Debug)]
struct Recorded {
    path: String,
    headers: HeaderMap,
    body: serde_json::Value,
    raw: Vec<u8>,
}

#[derive(Clone, Default)]
struct Sink {
    seen: Arc<Mutex<Vec<Recorded>>>,
    retry_hits: Arc<Mutex<u32>>,
}

async fn record(State(sink): State<Sink>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    let path = uri.path().to_string();
    if path == "/retry" {
        let mut hits = sink.retry_hits.lock().expect("lock");
        *hits += 1;
        if *hits == 1 {
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    sink.seen.lock().expect("lock").push(Recorded {
        path,
        headers,
        body: serde_json::from_slice(&body).unwrap_or_default(),
        raw: body.to_vec(),
    });
    StatusCode::OK
}

async fn start_sink() -> (SocketAddr, Sink) {
    let sink = Sink::default();
    let app = axum::Router::new()
        .fallback(record)
        .with_state(sink.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, sink)
}

fn provider(name: &str, kind: &str, address: &str, secret: Option<&str>) -> serde_json::Value {
    let mut spec = serde_json::json!({"type": kind, "address": address});
    if let Some(s) = secret {
        spec["secretRef"] = serde_json::json!({"name": s});
    }
    serde_json::json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Provider",
                       "metadata": {"name": name}, "spec": spec})
}

fn alert(name: &str, provider: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Alert",
        "metadata": {"name": name},
        "spec": {"providerRef": {"name": provider}, "summary": "prod",
                 "eventSources": [{"kind": "Release", "name": "*"}]}})
}

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    hex::encode(aws_lc_rs::hmac::sign(&key, body).as_ref())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_provider_shape_and_a_retried_500() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "notify-shapes").await;
    let repo = Repo::create(&env, &ns.name);
    let sha = repo.commit(
        &[("app/a.yaml", Some(&configmap_yaml("a", "one")))],
        "first",
    );
    let (addr, sink) = start_sink().await;
    // The dashboard's address: the commit status link of Providers without spec.targetURL.
    let (_agent, _cache) = start_agent(&env, &[&ns.name], |o| {
        o.external_url = Some("https://ferry.example.com".parse().expect("url"));
    })
    .await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    secret(&client, &ns.name, "hmac", &[("hmacKey", "hm4c-key")]).await;
    secret(&client, &ns.name, "token", &[("token", "t0ken-value")]).await;
    let base = format!("http://{addr}");
    let mut github = provider(
        "github",
        "github",
        &format!("{base}/owner/repo"),
        Some("token"),
    );
    github["spec"]["targetURL"] =
        serde_json::json!("https://ci.example.com/deploys/{namespace}/{name}?commit={commit}");
    let providers = [
        provider(
            "hmac",
            "generic-hmac",
            &format!("{base}/hmac"),
            Some("hmac"),
        ),
        provider(
            "retry",
            "generic-hmac",
            &format!("{base}/retry"),
            Some("hmac"),
        ),
        provider("slack", "slack", &format!("{base}/slack"), None),
        provider("teams", "msteams", &format!("{base}/teams"), None),
        provider("discord", "discord", &format!("{base}/discord"), None),
        github,
        provider(
            "gitlab",
            "gitlab",
            &format!("{base}/group/project"),
            Some("token"),
        ),
    ];
    for p in providers {
        let name = p["metadata"]["name"].as_str().expect("name").to_string();
        create::<Provider>(&client, &ns.name, p).await;
        create::<Alert>(&client, &ns.name, alert(&name, &name)).await;
    }
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1h"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release("app", "repo", "app", serde_json::json!({})),
    )
    .await;
    wait_release_applied(&client, &ns.name, "app", &sha, Duration::from_secs(60)).await;

    let paths = [
        "/hmac".to_string(),
        "/retry".to_string(),
        "/slack".to_string(),
        "/teams".to_string(),
        "/discord".to_string(),
        format!("/api/v3/repos/owner/repo/statuses/{sha}"),
        format!("/api/v4/projects/group%2Fproject/statuses/{sha}"),
    ];
    let seen = wait_for("every provider called", Duration::from_secs(60), || async {
        let seen = sink.seen.lock().expect("lock").clone();
        let missing: Vec<_> = paths
            .iter()
            .filter(|p| !seen.iter().any(|r| &r.path == *p))
            .collect();
        if missing.is_empty() {
            return Ok(Some(seen));
        }
        anyhow::bail!(
            "missing {missing:?}; seen {:?}",
            seen.iter().map(|r| &r.path).collect::<Vec<_>>()
        )
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let by = |path: &str| {
        seen.iter()
            .find(|r| r.path == path)
            .cloned()
            .expect("recorded")
    };

    // generic-hmac: the exact body is signed with the Secret's key.
    let hmac = by("/hmac");
    let signature = hmac
        .headers
        .get("x-signature")
        .and_then(|v| v.to_str().ok())
        .expect("signature");
    assert_eq!(
        signature,
        format!("sha256={}", hmac_hex(b"hm4c-key", &hmac.raw))
    );
    assert_eq!(hmac.body["involvedObject"]["kind"], "Release");
    assert_eq!(hmac.body["involvedObject"]["name"], "app");
    assert_eq!(hmac.body["involvedObject"]["namespace"], ns.name.as_str());
    assert_eq!(hmac.body["severity"], "info");
    assert_eq!(hmac.body["reason"], "Synced");
    assert!(
        hmac.body["metadata"]["revision"]
            .as_str()
            .is_some_and(|r| r.ends_with(&sha))
    );
    assert!(!String::from_utf8_lossy(&hmac.raw).contains("hm4c-key"));

    // The 500 was retried, then delivered.
    assert!(*sink.retry_hits.lock().expect("lock") >= 2);

    let slack = by("/slack");
    assert_eq!(slack.body["username"], "ferry");
    assert_eq!(slack.body["attachments"][0]["color"], "good");
    assert_eq!(
        slack.body["attachments"][0]["title"],
        format!("Release/{}/app", ns.name)
    );
    assert!(
        slack.body["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("prod: "))
    );
    let teams = by("/teams");
    assert_eq!(teams.body["@type"], "MessageCard");
    assert!(teams.body["sections"][0]["facts"].is_array());
    let discord = by("/discord");
    assert!(
        discord.body["embeds"][0]["description"]
            .as_str()
            .is_some_and(|d| d.contains(&sha))
    );

    // Forges: pending (GitLab: running) while the agent applied, then the result, in this order.
    let github_path = format!("/api/v3/repos/owner/repo/statuses/{sha}");
    let gitlab_path = format!("/api/v4/projects/group%2Fproject/statuses/{sha}");
    let settled = wait_for(
        "both forges got the result after the pending state",
        Duration::from_secs(60),
        || async {
            let seen = sink.seen.lock().expect("lock").clone();
            let count = |p: &str| seen.iter().filter(|r| r.path == p).count();
            if count(&github_path) >= 2 && count(&gitlab_path) >= 2 {
                return Ok(Some(seen));
            }
            anyhow::bail!(
                "not yet: {:?}",
                seen.iter().map(|r| &r.path).collect::<Vec<_>>()
            )
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let seen = settled;
    let states = |path: &str| -> Vec<String> {
        seen.iter()
            .filter(|r| r.path == path)
            .map(|r| r.body["state"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(states(&github_path), ["pending", "success"]);
    assert_eq!(states(&gitlab_path), ["running", "success"]);
    let last = |path: &str| {
        seen.iter()
            .rev()
            .find(|r| r.path == path)
            .cloned()
            .expect("recorded")
    };
    // The links: the Provider's template for GitHub, the dashboard's page for GitLab.
    for r in seen.iter().filter(|r| r.path == github_path) {
        assert_eq!(
            r.body["target_url"],
            format!(
                "https://ci.example.com/deploys/{}/app?commit={sha}",
                ns.name
            )
        );
    }
    for r in seen.iter().filter(|r| r.path == gitlab_path) {
        assert_eq!(
            r.body["target_url"],
            format!("https://ferry.example.com/apps/release/{}/app", ns.name)
        );
    }
    let github = last(&github_path);
    assert_eq!(
        github
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer t0ken-value")
    );
    assert_eq!(
        github.headers.get("accept").and_then(|v| v.to_str().ok()),
        Some("application/vnd.github+json")
    );
    assert_eq!(github.body["state"], "success");
    assert_eq!(github.body["context"], format!("ferry/{}/app", ns.name));
    let gitlab = last(&gitlab_path);
    assert_eq!(
        gitlab
            .headers
            .get("private-token")
            .and_then(|v| v.to_str().ok()),
        Some("t0ken-value")
    );
    assert_eq!(gitlab.body["state"], "success");
    assert_eq!(gitlab.body["name"], format!("ferry/{}/app", ns.name));

    // Deduplicated: the same event for the same revision went out once per Alert; chats and
    // signed events get the result only (no "applying").
    assert_eq!(seen.iter().filter(|r| r.path == "/slack").count(), 1);
    assert_eq!(seen.iter().filter(|r| r.path == "/hmac").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_providers_say_why_and_send_nothing() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "notify-attack").await;
    let repo = Repo::create(&env, &ns.name);
    repo.commit(
        &[("app/a.yaml", Some(&configmap_yaml("a", "one")))],
        "first",
    );
    let (addr, sink) = start_sink().await;
    // No rights for the tenant: its Secrets are unreadable to it (the agent could read them).
    let (_agent, _cache) = start_agent_bare(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    secret(&client, &ns.name, "hmac", &[("hmacKey", "hm4c-key")]).await;
    create::<Provider>(
        &client,
        &ns.name,
        provider(
            "locked",
            "generic-hmac",
            &format!("http://{addr}/locked"),
            Some("hmac"),
        ),
    )
    .await;
    create::<Provider>(
        &client,
        &ns.name,
        provider("file", "slack", "file:///etc/passwd", None),
    )
    .await;
    // A commit status link with credentials in it: refused, never quoted.
    let mut leaky = provider(
        "leaky",
        "github",
        &format!("http://{addr}/owner/repo"),
        None,
    );
    leaky["spec"]["targetURL"] = serde_json::json!("https://admin:s3cret@dash.example/{name}");
    create::<Provider>(&client, &ns.name, leaky).await;
    create::<Alert>(&client, &ns.name, alert("locked", "locked")).await;
    create::<Alert>(&client, &ns.name, alert("file", "file")).await;
    create::<Alert>(&client, &ns.name, alert("leaky", "leaky")).await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1h"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release("app", "repo", "app", serde_json::json!({})),
    )
    .await;

    let providers: Api<Provider> = Api::namespaced(client.clone(), &ns.name);
    for (name, reason, needle) in [
        (
            "locked",
            "SecretUnreadable",
            "grant that identity get on the Secret",
        ),
        ("file", "InvalidAddress", "has scheme \"file\""),
        (
            "leaky",
            "InvalidTargetURL",
            "spec.targetURL carries user info",
        ),
    ] {
        let p = wait_for(
            &format!("Provider {name} refused"),
            Duration::from_secs(90),
            || {
                let providers = providers.clone();
                async move {
                    let p = providers.get(name).await?;
                    match ready_state(&p.status.clone().unwrap_or_default().conditions) {
                        Some((s, r, m)) if s == "False" => Ok(Some((r, m))),
                        other => anyhow::bail!("not yet: {other:?}"),
                    }
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(p.0, reason, "{name}: {}", p.1);
        assert!(p.1.contains(needle), "{name}: {}", p.1);
        assert!(!p.1.contains("hm4c-key") && !p.1.contains("s3cret"));
    }
    assert!(
        sink.seen.lock().expect("lock").is_empty(),
        "nothing sent by refused Providers"
    );
    let alerts: Api<Alert> = Api::namespaced(client.clone(), &ns.name);
    let locked = alerts.get("locked").await.expect("alert");
    let state = ready_state(&locked.status.unwrap_or_default().conditions);
    assert_eq!(
        state.map(|(s, r, _)| (s, r)),
        Some(("False".into(), "SecretUnreadable".into()))
    );
}

fn alert_for(name: &str, provider: &str, sources: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Alert",
        "metadata": {"name": name},
        "spec": {"providerRef": {"name": provider}, "eventSources": sources}})
}

/// The JSON bodies received on `path` (each checked against its HMAC signature first).
fn bodies(sink: &Sink, path: &str, key: &[u8]) -> Vec<serde_json::Value> {
    sink.seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|r| r.path == path)
        .map(|r| {
            let signature = r.headers.get("x-signature").and_then(|v| v.to_str().ok());
            assert_eq!(
                signature,
                Some(format!("sha256={}", hmac_hex(key, &r.raw)).as_str()),
                "signed body on {path}"
            );
            r.body.clone()
        })
        .collect()
}

/// Wait until a body on `path` satisfies `check`; returns it.
async fn wait_body<F>(sink: &Sink, path: &str, what: &str, check: F) -> serde_json::Value
where
    F: Fn(&serde_json::Value) -> bool,
{
    let check = &check;
    wait_for(what, Duration::from_secs(90), || async move {
        let all = bodies(sink, path, b"hm4c-key");
        if let Some(found) = all.iter().find(|b| check(b)) {
            return Ok(Some(found.clone()));
        }
        anyhow::bail!("{path} got {all:#?}")
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

fn about(body: &serde_json::Value, kind: &str, name: &str, reason: &str) -> bool {
    body["involvedObject"]["kind"] == kind
        && body["involvedObject"]["name"] == name
        && body["reason"] == reason
}

fn marked_deployment(ns: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: app}}\n  template:\n    metadata:\n      labels: {{app: app}}\n    spec:\n      containers:\n        - name: app\n          image: {image}:1.0.0 # {{\"$imagepolicy\": \"{ns}:app\"}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn source_and_image_automation_events_reach_alerts() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "notify-sources").await;
    let registry = env.var("FERRY_REGISTRY");
    let image = format!(
        "{registry}/{}/app",
        ns.name.trim_start_matches("ferry-test-")
    );
    ferry_testsupport::git::push_empty_image(&env, &format!("{image}:1.0.0"), None);
    let repo = Repo::create(&env, &ns.name);
    let first = repo.commit(
        &[
            ("app/a.yaml", Some(&configmap_yaml("a", "one"))),
            (
                "deploy/app.yaml",
                Some(&marked_deployment(&ns.name, &image)),
            ),
        ],
        "first",
    );
    let (addr, sink) = start_sink().await;
    let (_agent, _cache) = start_agent(&env, &[&ns.name], |o| o.image_automation = true).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    secret(&client, &ns.name, "hmac", &[("hmacKey", "hm4c-key")]).await;
    secret(&client, &ns.name, "token", &[("token", "t0ken-value")]).await;
    let base = format!("http://{addr}");
    for (name, path) in [
        ("sources", "/sources"),
        ("errors", "/errors"),
        ("images", "/images"),
    ] {
        create::<Provider>(
            &client,
            &ns.name,
            provider(name, "generic-hmac", &format!("{base}{path}"), Some("hmac")),
        )
        .await;
    }
    create::<Provider>(
        &client,
        &ns.name,
        provider(
            "forge",
            "gitea",
            &format!("{base}/owner/repo"),
            Some("token"),
        ),
    )
    .await;
    let any_source = serde_json::json!([{"kind": "GitSource", "name": "*"}]);
    create::<Alert>(
        &client,
        &ns.name,
        alert_for("sources", "sources", any_source.clone()),
    )
    .await;
    let mut errors = alert_for("errors", "errors", any_source.clone());
    errors["spec"]["eventSeverity"] = serde_json::json!("error");
    create::<Alert>(&client, &ns.name, errors).await;
    create::<Alert>(
        &client,
        &ns.name,
        alert_for(
            "images",
            "images",
            serde_json::json!([{"kind": "ImagePolicy", "name": "*", "matchLabels": {"notify": "yes"}},
                               {"kind": "ImageUpdate", "name": "app"}]),
        ),
    )
    .await;
    // A commit status names a commit a Release applied: source events are not sent there.
    create::<Alert>(&client, &ns.name, alert_for("forge", "forge", any_source)).await;

    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1h"),
    )
    .await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("down", "http://127.0.0.1:1/nothing.git", None, "1h"),
    )
    .await;
    create::<ImageRepository>(&client, &ns.name, serde_json::json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImageRepository", "metadata": {"name": "app"}, "spec": {"image": image, "interval": "10m"}})).await;
    create::<ImagePolicy>(&client, &ns.name, serde_json::json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImagePolicy", "metadata": {"name": "app", "labels": {"notify": "yes"}}, "spec": {"imageRepositoryRef": {"name": "app"}, "policy": {"semver": {"range": "^1.0.0"}}}})).await;
    create::<ImageUpdate>(&client, &ns.name, serde_json::json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImageUpdate", "metadata": {"name": "app"}, "spec": {
        "sourceRef": {"kind": "GitSource", "name": "repo"},
        "interval": "10m",
        "git": {"commit": {"author": {"name": "ferry-bot", "email": "bot@ferry.invalid"}}},
        "update": {"path": "./deploy"}
    }})).await;

    // The GitSource's first revision: an info event of kind GitSource with its revision.
    let fetched = wait_body(&sink, "/sources", "NewArtifact of repo", |b| {
        about(b, "GitSource", "repo", "NewArtifact")
    })
    .await;
    assert_eq!(
        fetched["involvedObject"]["apiVersion"],
        "ferry.dev/v1alpha1"
    );
    assert_eq!(fetched["involvedObject"]["namespace"], ns.name.as_str());
    assert_eq!(fetched["severity"], "info");
    assert_eq!(fetched["reportingController"], "ferry-agent");
    let revision = fetched["metadata"]["revision"].as_str().unwrap_or_default();
    assert!(revision.ends_with(&first), "{fetched}");
    assert!(
        fetched["message"]
            .as_str()
            .is_some_and(|m| m.contains(&first)),
        "{fetched}"
    );
    // The unreachable one: an error event, to the severity=error Alert as well.
    let failed = wait_body(&sink, "/sources", "FetchFailed of down", |b| {
        about(b, "GitSource", "down", "FetchFailed")
    })
    .await;
    assert_eq!(failed["severity"], "error");
    assert!(
        failed["message"]
            .as_str()
            .is_some_and(|m| m.contains("127.0.0.1")),
        "names the URL: {failed}"
    );
    wait_body(&sink, "/errors", "FetchFailed of down to errors", |b| {
        about(b, "GitSource", "down", "FetchFailed")
    })
    .await;

    // The ImagePolicy's selection, to the Alert whose matchLabels it carries.
    let selected = wait_body(&sink, "/images", "NewLatestImage of app", |b| {
        about(b, "ImagePolicy", "app", "NewLatestImage")
    })
    .await;
    assert_eq!(selected["severity"], "info");
    assert_eq!(
        selected["metadata"]["revision"],
        format!("{image}:1.0.0"),
        "{selected}"
    );

    // A new commit, fetched on request: one more NewArtifact, at the new commit.
    let second = repo.commit(
        &[("app/a.yaml", Some(&configmap_yaml("a", "two")))],
        "second",
    );
    request_reconcile::<GitSource>(&client, &ns.name, "repo").await;
    wait_body(
        &sink,
        "/sources",
        "NewArtifact of repo at the second commit",
        |b| {
            about(b, "GitSource", "repo", "NewArtifact")
                && b["metadata"]["revision"]
                    .as_str()
                    .is_some_and(|r| r.ends_with(&second))
        },
    )
    .await;

    // A new tag: the policy selects it and the ImageUpdate pushes a commit; both are told.
    ferry_testsupport::git::crane(
        &env,
        &["tag", "--insecure", &format!("{image}:1.0.0"), "1.1.0"],
    );
    request_reconcile::<ImageRepository>(&client, &ns.name, "app").await;
    wait_body(&sink, "/images", "NewLatestImage 1.1.0", |b| {
        about(b, "ImagePolicy", "app", "NewLatestImage")
            && b["metadata"]["revision"] == format!("{image}:1.1.0")
    })
    .await;
    let pushed = wait_body(&sink, "/images", "Pushed of the ImageUpdate", |b| {
        about(b, "ImageUpdate", "app", "Pushed")
    })
    .await;
    let head = repo.head();
    assert_eq!(pushed["severity"], "info");
    assert_eq!(
        pushed["metadata"]["revision"],
        format!("main@sha1:{head}"),
        "{pushed}"
    );
    assert!(
        repo.file("deploy/app.yaml")
            .contains(&format!("{image}:1.1.0"))
    );

    // Filters held: only errors on /errors, no ImageRepository kind (not selected), each
    // revision of repo sent once, and nothing reached the commit-status Provider.
    let errors = bodies(&sink, "/errors", b"hm4c-key");
    assert!(
        errors.iter().all(|b| b["severity"] == "error"),
        "{errors:#?}"
    );
    let images = bodies(&sink, "/images", b"hm4c-key");
    assert!(
        images
            .iter()
            .all(|b| b["involvedObject"]["kind"] != "ImageRepository"),
        "{images:#?}"
    );
    let sources = bodies(&sink, "/sources", b"hm4c-key");
    for sha in [&first, &second] {
        let n = sources
            .iter()
            .filter(|b| {
                about(b, "GitSource", "repo", "NewArtifact")
                    && b["metadata"]["revision"]
                        .as_str()
                        .is_some_and(|r| r.ends_with(sha.as_str()))
            })
            .count();
        assert_eq!(n, 1, "NewArtifact at {sha} sent once: {sources:#?}");
    }
    let paths: Vec<String> = sink
        .seen
        .lock()
        .expect("lock")
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert!(
        paths.iter().all(|p| !p.starts_with("/api/")),
        "no commit status for source events: {paths:?}"
    );
    // The Alerts say the last delivery worked.
    let alerts: Api<Alert> = Api::namespaced(client.clone(), &ns.name);
    let sources_alert = alerts.get("sources").await.expect("alert");
    let state = ready_state(&sources_alert.status.unwrap_or_default().conditions);
    assert_eq!(
        state.map(|(s, r, _)| (s, r)),
        Some(("True".into(), "Delivered".into()))
    );
}

/// Ask for a reconcile now, as `ferry sync` does.
async fn request_reconcile<K>(client: &kube::Client, ns: &str, name: &str)
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!(
            {"metadata": {"annotations": {"ferry.dev/reconcile-requested-at": now}}}
        )),
    )
    .await
    .unwrap_or_else(|e| panic!("annotate {ns}/{name}: {e}"));
}
