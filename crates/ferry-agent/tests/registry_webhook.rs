//! Registry webhooks through the agent's receiver, end to end against the real testenv (issue
//! 13): a tag pushed to the real OCI registry, announced in Harbor's JSON shape, Docker Hub's
//! JSON shape or a generic HMAC-signed body to the in-process agent's HTTP server, makes the
//! named ImageRepository scan at once (its status shows the new tag; for generic-hmac the
//! ImageUpdate then writes it to the real git server). The attack cases are here too: the
//! attacker is this test, posting with wrong tokens and signatures, replaying a delivery,
//! naming another namespace's ImageRepository and sending an oversized body.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use ferry_agent::webhook::UNAUTHORIZED_BODY;
use ferry_api::common::RECONCILE_REQUESTED_AT;
use ferry_api::images::{ImagePolicy, ImageRepository, ImageUpdate};
use ferry_api::{GitSource, Receiver};
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use kube::api::Api;
use kube::{Client, ResourceExt};
use serde_json::json;

const TOKEN: &str = "registry-hook-s3cret";

/// `crane append` an empty layer as `reference` (the first tag of an image).
fn crane_push(env: &TestEnv, reference: &str) {
    ferry_testsupport::git::push_empty_image(env, reference, None);
}

/// `image:from` tagged `to` as well, in the real registry.
fn crane_tag(env: &TestEnv, image: &str, from: &str, to: &str) {
    ferry_testsupport::git::crane(env, &["tag", "--insecure", &format!("{image}:{from}"), to]);
}

/// What Harbor posts for a pushed artifact (its "default" payload format).
fn harbor_push(image: &str, tag: &str) -> Vec<u8> {
    let (_, path) = image.split_once('/').expect("registry/path");
    let (project, name) = path.rsplit_once('/').unwrap_or(("library", path));
    serde_json::to_vec(&json!({
        "type": "PUSH_ARTIFACT",
        "occur_at": chrono::Utc::now().timestamp(),
        "operator": "robot$ci",
        "event_data": {
            "resources": [{
                "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "tag": tag,
                "resource_url": format!("{image}:{tag}"),
            }],
            "repository": {
                "date_created": 1_700_000_000,
                "name": name,
                "namespace": project,
                "repo_full_name": path,
                "repo_type": "private",
            },
        },
    }))
    .expect("json")
}

/// What Docker Hub posts for a push to `org/name`.
fn dockerhub_push(repo_name: &str, tag: &str) -> Vec<u8> {
    let (namespace, name) = repo_name.split_once('/').expect("org/name");
    serde_json::to_vec(&json!({
        "callback_url": format!(
            "https://registry.hub.docker.com/u/{repo_name}/hook/{}/",
            ferry_testsupport::unique_name("cb")
        ),
        "push_data": {"pushed_at": chrono::Utc::now().timestamp(), "pusher": "ci", "tag": tag},
        "repository": {
            "name": name, "namespace": namespace, "repo_name": repo_name,
            "repo_url": format!("https://hub.docker.com/r/{repo_name}"),
            "status": "Active", "is_private": false,
        },
    }))
    .expect("json")
}

/// `X-Timestamp` and `X-Signature` over `<timestamp>.<body>` (generic-hmac with a signed time).
fn generic_hmac_headers(key: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let ts = chrono::Utc::now().timestamp().to_string();
    let mut signed = ts.clone().into_bytes();
    signed.push(b'.');
    signed.extend_from_slice(body);
    vec![
        ("X-Timestamp", ts),
        ("X-Signature", github_signature(key, &signed)),
    ]
}

fn receiver(name: &str, kind: &str, resources: &[&str]) -> serde_json::Value {
    json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "Receiver",
        "metadata": {"name": name},
        "spec": {"type": kind, "secretRef": {"name": "hook-token"}, "resources": resources},
    })
}

fn image_repository(name: &str, image: &str, suspend: bool) -> serde_json::Value {
    json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "ImageRepository",
        "metadata": {"name": name},
        // An hour: within the test only a webhook makes it scan again.
        "spec": {"image": image, "interval": "1h", "suspend": suspend},
    })
}

/// Post until the agent has loaded the Receiver and its Secret (it does so in the background,
/// not per request): `request` must build a fresh, correctly authenticated delivery that the
/// receiver accepts without triggering anything.
async fn wait_loaded<F>(addr: std::net::SocketAddr, path: &str, request: F)
where
    F: Fn() -> (Vec<(&'static str, String)>, Vec<u8>),
{
    let request = &request;
    wait_for(
        &format!("receiver {path} loaded"),
        Duration::from_secs(30),
        || async move {
            let (headers, body) = request();
            let (status, reply) = http(addr, "POST", path, &headers, &body).await;
            if status == 200 {
                assert!(
                    reply.contains("\"triggered\":[]"),
                    "the probe triggered something: {reply}"
                );
                return Ok(Some(()));
            }
            anyhow::bail!("{status} {reply}")
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
}

async fn requested_at(client: &Client, ns: &str, name: &str) -> Option<String> {
    let api: Api<ImageRepository> = Api::namespaced(client.clone(), ns);
    let repo = api.get(name).await.expect("ImageRepository");
    repo.annotations().get(RECONCILE_REQUESTED_AT).cloned()
}

/// Wait until the ImageRepository's last scan lists `tag`.
async fn wait_tag(client: &Client, ns: &str, name: &str, tag: &str, timeout: Duration) {
    let api: Api<ImageRepository> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("ImageRepository {ns}/{name} lists tag {tag}"),
        timeout,
        || {
            let api = api.clone();
            async move {
                let repo = api.get(name).await?;
                let scan = repo.status.and_then(|s| s.last_scan_result);
                let tags = scan.as_ref().map(|s| s.latest_tags.clone());
                if tags.as_ref().is_some_and(|t| t.iter().any(|t| t == tag)) {
                    return Ok(Some(()));
                }
                anyhow::bail!("last scan: {scan:?}")
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// The agent (with image automation) watching `ns`, the `hook-token` Secret, and images
/// `<registry>/<ns>/app` and `<registry>/<ns>/other` at `1.0.0` with an ImageRepository each,
/// both scanned once.
struct Setup {
    env: TestEnv,
    client: Client,
    ns: TestNamespace,
    agent: ferry_agent::Agent,
    _cache: tempfile::TempDir,
    app: String,
}

async fn setup(prefix: &str, receivers: &[serde_json::Value]) -> Setup {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, prefix).await;
    let short = ns.name.trim_start_matches("ferry-test-").to_string();
    let registry = env.var("FERRY_REGISTRY");
    let app = format!("{registry}/{short}/app");
    let other = format!("{registry}/{short}/other");
    crane_push(&env, &format!("{app}:1.0.0"));
    crane_push(&env, &format!("{other}:1.0.0"));
    secret(&client, &ns.name, "hook-token", &[("token", TOKEN)]).await;
    create::<ImageRepository>(&client, &ns.name, image_repository("app", &app, false)).await;
    create::<ImageRepository>(&client, &ns.name, image_repository("other", &other, false)).await;
    for r in receivers {
        create::<Receiver>(&client, &ns.name, r.clone()).await;
    }
    let (agent, cache) = start_agent(&env, &[&ns.name], |o| o.image_automation = true).await;
    for name in ["app", "other"] {
        wait_tag(&client, &ns.name, name, "1.0.0", Duration::from_secs(60)).await;
    }
    Setup {
        env,
        client,
        ns,
        agent,
        _cache: cache,
        app,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn harbor_push_scans_the_named_image_repository_only() {
    let s = setup(
        "reghook-harbor",
        &[receiver("harbor", "harbor", &["app", "other"])],
    )
    .await;
    let addr = s.agent.http_addr;
    let path = format!("/hook/{}/harbor", s.ns.name);
    let auth = || vec![("Authorization", TOKEN.to_string())];
    // A Harbor event that is not a push (each probe a new body) is accepted and triggers nothing.
    wait_loaded(addr, &path, || {
        let body =
            json!({"type": "SCANNING_COMPLETED", "occur_at": ferry_testsupport::unique_name("t")});
        (auth(), serde_json::to_vec(&body).expect("json"))
    })
    .await;
    let other_before = requested_at(&s.client, &s.ns.name, "other").await;

    crane_tag(&s.env, &s.app, "1.0.0", "1.1.0");
    let (status, reply) = http(addr, "POST", &path, &auth(), &harbor_push(&s.app, "1.1.0")).await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply.contains("\"triggered\":[\"ImageRepository/app\"]"),
        "{reply}"
    );
    wait_tag(
        &s.client,
        &s.ns.name,
        "app",
        "1.1.0",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        requested_at(&s.client, &s.ns.name, "other").await,
        other_before,
        "only the ImageRepository of the pushed image was asked to scan"
    );

    // A push of an image that no listed ImageRepository watches: accepted, ignored.
    let elsewhere = format!("{}/{}/unwatched", s.env.var("FERRY_REGISTRY"), s.ns.name);
    let (status, reply) = http(
        addr,
        "POST",
        &path,
        &auth(),
        &harbor_push(&elsewhere, "9.9.9"),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("\"triggered\":[]"), "{reply}");
    let app_at = requested_at(&s.client, &s.ns.name, "app").await;

    // Attack: the same delivery again (captured on the wire) → 409, no scan requested. (Harbor
    // payloads carry the push time and the tag, so this one differs from the first push.)
    let replayed = harbor_push(&s.app, "1.1.1");
    let (status, _) = http(addr, "POST", &path, &auth(), &replayed).await;
    assert_eq!(status, 200);
    let app_at = {
        let now = requested_at(&s.client, &s.ns.name, "app").await;
        assert_ne!(now, app_at, "the fresh delivery requested a scan");
        now
    };
    let (status, reply) = http(addr, "POST", &path, &auth(), &replayed).await;
    assert_eq!(status, 409, "replayed Harbor delivery: {reply}");
    assert!(reply.contains("already accepted"), "{reply}");

    // Attack: a wrong or missing Authorization → the uniform 401, no scan requested.
    for headers in [
        vec![("Authorization", "Bearer guess".to_string())],
        vec![("Authorization", format!("{TOKEN}x"))],
        vec![],
    ] {
        let (status, reply) =
            http(addr, "POST", &path, &headers, &harbor_push(&s.app, "1.2.0")).await;
        assert_eq!((status, reply.as_str()), (401, UNAUTHORIZED_BODY));
    }
    assert_eq!(requested_at(&s.client, &s.ns.name, "app").await, app_at);
    s.agent.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generic_hmac_push_scans_and_the_image_update_writes_git() {
    let s = setup(
        "reghook-generic",
        &[receiver(
            "generic",
            "generic-hmac",
            &["ImageRepository/app"],
        )],
    )
    .await;
    let (env, client, ns) = (&s.env, &s.client, &s.ns.name);
    // A git repository with a Deployment whose image line carries a Flux setter marker.
    let repo = Repo::create(env, ns);
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  selector:\n    matchLabels: {{app: app}}\n  template:\n    metadata:\n      labels: {{app: app}}\n    spec:\n      containers:\n        - name: app\n          image: {}:1.0.0 # {{\"$imagepolicy\": \"{ns}:app\"}}\n",
        s.app
    );
    let first = repo.commit(&[("deploy/app.yaml", Some(&manifest))], "app at 1.0.0");
    git_secret(env, client, ns, "git-auth").await;
    create::<GitSource>(
        client,
        ns,
        git_source("repo", &repo.url, Some("git-auth"), "1h"),
    )
    .await;
    create::<ImagePolicy>(client, ns, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImagePolicy", "metadata": {"name": "app"}, "spec": {"imageRepositoryRef": {"name": "app"}, "policy": {"semver": {"range": "^1.0.0"}}}})).await;
    create::<ImageUpdate>(client, ns, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImageUpdate", "metadata": {"name": "app"}, "spec": {
        "sourceRef": {"kind": "GitSource", "name": "repo"},
        "interval": "1h",
        "git": {"commit": {"author": {"name": "ferry-bot", "email": "bot@ferry.invalid"}}},
        "update": {"path": "./deploy"}
    }})).await;
    let addr = s.agent.http_addr;
    let path = format!("/hook/{ns}/generic");
    // A signed push of an image nobody here watches: accepted, nothing triggered.
    let unwatched = format!("{}/{ns}/unwatched", env.var("FERRY_REGISTRY"));
    wait_loaded(addr, &path, || {
        let body = json!({"image": format!("{unwatched}:1.0.0"), "nonce": ferry_testsupport::unique_name("n")});
        let body = serde_json::to_vec(&body).expect("json");
        (generic_hmac_headers(TOKEN, &body), body)
    })
    .await;

    crane_tag(env, &s.app, "1.0.0", "1.2.0");
    let body = serde_json::to_vec(&json!({"image": format!("{}:1.2.0", s.app)})).expect("json");
    let (status, reply) = http(
        addr,
        "POST",
        &path,
        &generic_hmac_headers(TOKEN, &body),
        &body,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply.contains("\"triggered\":[\"ImageRepository/app\"]"),
        "{reply}"
    );
    wait_tag(client, ns, "app", "1.2.0", Duration::from_secs(30)).await;
    assert!(
        requested_at(client, ns, "other").await.is_none(),
        "the Receiver does not list `other`"
    );

    // The write-back: the ImageUpdate commits 1.2.0 to the real git server.
    let bare = PathBuf::from(env.var("FERRY_GIT_ROOT")).join(format!("{ns}.git"));
    let expected = format!("{}:1.2.0", s.app);
    wait_for(
        "the ImageUpdate's commit in git",
        Duration::from_secs(60),
        || {
            let bare = bare.clone();
            let first = first.clone();
            let expected = expected.clone();
            async move {
                let show = Command::new("git")
                    .args(["show", "refs/heads/main:deploy/app.yaml"])
                    .current_dir(&bare)
                    .output()?;
                let text = String::from_utf8_lossy(&show.stdout).to_string();
                let head = Command::new("git")
                    .args(["rev-parse", "refs/heads/main"])
                    .current_dir(&bare)
                    .output()?;
                let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
                if head != first && text.contains(&expected) {
                    return Ok(Some(()));
                }
                anyhow::bail!("main at {head}: {text}")
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));

    // Attack: a wrong key, a body changed after signing, no signature → 401, no scan.
    let before = requested_at(client, ns, "app").await;
    let other_body =
        serde_json::to_vec(&json!({"image": format!("{}:1.3.0", s.app)})).expect("json");
    for (headers, body) in [
        (generic_hmac_headers("guess", &body), body.clone()),
        (generic_hmac_headers(TOKEN, &body), other_body.clone()),
        (vec![], other_body.clone()),
    ] {
        let (status, reply) = http(addr, "POST", &path, &headers, &body).await;
        assert_eq!((status, reply.as_str()), (401, UNAUTHORIZED_BODY));
    }
    assert_eq!(
        requested_at(client, ns, "app").await,
        before,
        "nothing scanned"
    );
    s.agent.stop().await.expect("agent stops");
}

/// Docker Hub only announces docker.io images, which the offline testenv cannot serve: this
/// test proves the routing (token in the URL, matching by repository, the scan request on the
/// right ImageRepository); the scans themselves are proven by the two tests above. The
/// ImageRepositories are suspended so nothing tries to reach Docker Hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dockerhub_push_requests_a_scan_of_the_matching_image_repository() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "reghook-hub").await;
    let org = ns.name.trim_start_matches("ferry-test-").to_string();
    secret(&client, &ns.name, "hook-token", &[("token", TOKEN)]).await;
    // `docker.io/<org>/app` and `<org>/web` (Docker Hub without a host) are both Hub images.
    create::<ImageRepository>(
        &client,
        &ns.name,
        image_repository("app", &format!("docker.io/{org}/app"), true),
    )
    .await;
    create::<ImageRepository>(
        &client,
        &ns.name,
        image_repository("web", &format!("{org}/web"), true),
    )
    .await;
    // No resources: the ImageRepositories whose image was pushed.
    create::<Receiver>(&client, &ns.name, receiver("hub", "dockerhub", &[])).await;
    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    let addr = agent.http_addr;
    let base = format!("/hook/{}/hub", ns.name);
    let with_token = format!("{base}?token={TOKEN}");
    wait_loaded(addr, &with_token, || {
        (vec![], dockerhub_push(&format!("{org}/unwatched"), "1.0.0"))
    })
    .await;

    let (status, reply) = http(
        addr,
        "POST",
        &with_token,
        &[],
        &dockerhub_push(&format!("{org}/web"), "2.0.0"),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply.contains("\"triggered\":[\"ImageRepository/web\"]"),
        "{reply}"
    );
    assert!(requested_at(&client, &ns.name, "web").await.is_some());
    assert!(requested_at(&client, &ns.name, "app").await.is_none());

    // Attack: no token, a wrong one, the token in a header instead of the URL → 401, no scan.
    let body = dockerhub_push(&format!("{org}/app"), "2.0.0");
    for (path, headers) in [
        (base.clone(), vec![]),
        (format!("{base}?token=guess"), vec![]),
        (format!("{base}?token={TOKEN}x"), vec![]),
        (
            base.clone(),
            vec![("Authorization", format!("Bearer {TOKEN}"))],
        ),
    ] {
        let (status, reply) = http(addr, "POST", &path, &headers, &body).await;
        assert_eq!((status, reply.as_str()), (401, UNAUTHORIZED_BODY), "{path}");
    }
    assert!(requested_at(&client, &ns.name, "app").await.is_none());
    let (status, reply) = http(addr, "POST", &with_token, &[], &body).await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("ImageRepository/app"), "{reply}");
    // The same body again → 409.
    let (status, _) = http(addr, "POST", &with_token, &[], &body).await;
    assert_eq!(status, 409);
    agent.stop().await.expect("agent stops");
}

/// Attack: a tenant's Receiver names another tenant's ImageRepository (with a namespace, and by
/// a bare name that exists only over there), and an oversized body. Nothing in the other
/// namespace is asked to scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_namespaces_and_oversized_bodies_are_refused() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let attacker = TestNamespace::create(&client, "reghook-a").await;
    let victim = TestNamespace::create(&client, "reghook-b").await;
    let image = format!("{}/{}/app", env.var("FERRY_REGISTRY"), victim.name);
    create::<ImageRepository>(&client, &victim.name, image_repository("app", &image, true)).await;
    secret(&client, &attacker.name, "hook-token", &[("token", TOKEN)]).await;
    let cross = format!("ImageRepository/{}/app", victim.name);
    create::<Receiver>(
        &client,
        &attacker.name,
        receiver("cross", "harbor", &[cross.as_str()]),
    )
    .await;
    create::<Receiver>(
        &client,
        &attacker.name,
        receiver("bare", "harbor", &["app"]),
    )
    .await;
    create::<Receiver>(
        &client,
        &attacker.name,
        receiver("all", "generic-hmac", &["ImageRepository/*"]),
    )
    .await;
    let (agent, _cache) = start_agent(&env, &[&attacker.name, &victim.name], |o| {
        o.webhook_max_bytes = 64 * 1024;
    })
    .await;
    let addr = agent.http_addr;
    let auth = || vec![("Authorization", TOKEN.to_string())];

    // The namespace-qualified entry: refused with the reason, once the Receiver is loaded (a
    // verified request gets the reason; before that, the uniform 401).
    let cross_path = format!("/hook/{}/cross", attacker.name);
    let reply = wait_for(
        "the cross-namespace Receiver loaded",
        Duration::from_secs(30),
        || {
            let cross_path = cross_path.clone();
            let image = image.clone();
            async move {
                let (status, reply) = http(
                    addr,
                    "POST",
                    &cross_path,
                    &auth(),
                    &harbor_push(&image, "2.0.0"),
                )
                .await;
                Ok((status != 401).then_some((status, reply)))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(reply.0, 422, "{}", reply.1);
    assert!(
        reply.1.contains("own namespace") && reply.1.contains(&cross),
        "{}",
        reply.1
    );
    // ... and the Receiver's status says so.
    let receivers: Api<Receiver> = Api::namespaced(client.clone(), &attacker.name);
    wait_for(
        "the cross-namespace Receiver not Ready",
        Duration::from_secs(30),
        || {
            let receivers = receivers.clone();
            let cross = cross.clone();
            async move {
                let r = receivers.get("cross").await?;
                let ready = ready_state(&r.status.unwrap_or_default().conditions);
                Ok(ready
                    .filter(|(status, reason, message)| {
                        status == "False"
                            && reason == "InvalidResources"
                            && message.contains(&cross)
                    })
                    .map(|_| ()))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));

    // A bare name resolves in the Receiver's namespace only, where there is no `app`; `*`
    // covers the Receiver's namespace only.
    let bare = format!("/hook/{}/bare", attacker.name);
    wait_loaded(addr, &bare, || {
        (
            auth(),
            harbor_push(&image, &ferry_testsupport::unique_name("t")),
        )
    })
    .await;
    let all = format!("/hook/{}/all", attacker.name);
    wait_loaded(addr, &all, || {
        let body = serde_json::to_vec(&json!({"nonce": ferry_testsupport::unique_name("n")}))
            .expect("json");
        (generic_hmac_headers(TOKEN, &body), body)
    })
    .await;

    // Oversized: 413 before anything is verified or parsed.
    let mut big = harbor_push(&image, "3.0.0");
    big.truncate(big.len() - 1);
    big.extend(std::iter::repeat_n(b' ', 65 * 1024));
    big.push(b'}');
    let (status, _) = http(addr, "POST", &bare, &auth(), &big).await;
    assert_eq!(status, 413, "oversized body");

    assert!(
        requested_at(&client, &victim.name, "app").await.is_none(),
        "nothing in the other namespace was asked to scan"
    );
    agent.stop().await.expect("agent stops");
}
