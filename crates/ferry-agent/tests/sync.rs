//! The core loop against the real testenv: a commit pushed to the git server is fetched by the
//! GitSource, applied by the Release, later commits update and prune, a broken commit keeps the
//! last good state, and deleting the Release prunes what it applied.

mod common;

use std::time::Duration;

use common::*;
use ferry_api::{GitSource, Release};
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commits_are_applied_updated_pruned_and_broken_commits_keep_last_good() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "agent-sync").await;
    let repo = Repo::create(&env, &ns.name);
    let first = repo.commit(
        &[
            ("apps/web/a.yaml", Some(&configmap_yaml("a", "one"))),
            ("apps/web/b.yaml", Some(&configmap_yaml("b", "one"))),
        ],
        "first",
    );
    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1s"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release("web", "repo", "./apps/web", serde_json::json!({})),
    )
    .await;

    let r = wait_release_applied(&client, &ns.name, "web", &first, Duration::from_secs(60)).await;
    let status = r.status.unwrap_or_default();
    assert_eq!(
        status.last_applied_revision.as_deref(),
        Some(format!("main@sha1:{first}").as_str())
    );
    assert_eq!(
        status.inventory.len(),
        2,
        "inventory: {:?}",
        status.inventory
    );
    assert_eq!(
        status.history.first().map(|h| h.result.as_str()),
        Some("Succeeded")
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let a = cms.get("a").await.expect("ConfigMap a applied");
    assert_eq!(
        a.data.unwrap_or_default().get("value").map(String::as_str),
        Some("one")
    );

    // Update a, remove b: applied and pruned on the next fetch.
    let second = repo.commit(
        &[
            ("apps/web/a.yaml", Some(&configmap_yaml("a", "two"))),
            ("apps/web/b.yaml", None),
        ],
        "second",
    );
    let r = wait_release_applied(&client, &ns.name, "web", &second, Duration::from_secs(60)).await;
    let a = cms.get("a").await.expect("a still there");
    assert_eq!(
        a.data.unwrap_or_default().get("value").map(String::as_str),
        Some("two")
    );
    assert!(
        cms.get_opt("b").await.expect("get b").is_none(),
        "b was pruned"
    );
    let status = r.status.unwrap_or_default();
    assert_eq!(status.inventory.len(), 1);
    assert!(status.history.len() >= 2);

    // A commit that breaks rendering: last good state kept, error in status, nothing pruned.
    let broken = repo.commit(
        &[("apps/web/a.yaml", Some("kind: ConfigMap\n  bad: [yaml\n"))],
        "broken",
    );
    let r = wait_release_reason(
        &client,
        &ns.name,
        "web",
        "RenderFailed",
        Duration::from_secs(60),
    )
    .await;
    let status = r.status.unwrap_or_default();
    assert_eq!(
        status.last_applied_revision.as_deref(),
        Some(format!("main@sha1:{second}").as_str())
    );
    assert_eq!(
        status.last_attempted_revision.as_deref(),
        Some(format!("main@sha1:{broken}").as_str())
    );
    let message = ready_state(&status.conditions)
        .map(|c| c.2)
        .unwrap_or_default();
    assert!(
        message.contains("a.yaml"),
        "message names the file: {message}"
    );
    assert!(
        cms.get_opt("a").await.expect("get a").is_some(),
        "a kept after a broken commit"
    );

    // Fixing the commit recovers.
    let fixed = repo.commit(
        &[("apps/web/a.yaml", Some(&configmap_yaml("a", "three")))],
        "fixed",
    );
    wait_release_applied(&client, &ns.name, "web", &fixed, Duration::from_secs(60)).await;

    // Deleting the Release prunes what it applied (finalizer).
    let releases: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    releases
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete release");
    wait_for(
        "Release gone and ConfigMap a deleted",
        Duration::from_secs(30),
        || {
            let releases = releases.clone();
            let cms = cms.clone();
            async move {
                let gone = releases.get_opt("web").await?.is_none();
                let a = cms.get_opt("a").await?;
                Ok((gone && a.is_none()).then_some(()))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    agent.stop().await.expect("agent stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_credentials_and_unreachable_server_keep_last_good_revision() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "agent-fault").await;
    let repo = Repo::create(&env, &ns.name);
    let first = repo.commit(
        &[("app/a.yaml", Some(&configmap_yaml("a", "one")))],
        "first",
    );
    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1s"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release("app", "repo", "app", serde_json::json!({})),
    )
    .await;
    wait_release_applied(&client, &ns.name, "app", &first, Duration::from_secs(60)).await;

    // Wrong password: the source says why, without leaking the password; the Release stays.
    let wrong = "definitely-wrong-password";
    secret(
        &client,
        &ns.name,
        "git-auth",
        &[
            ("username", &env.var("FERRY_GIT_USER")),
            ("password", wrong),
        ],
    )
    .await;
    let second = repo.commit(
        &[("app/a.yaml", Some(&configmap_yaml("a", "two")))],
        "second",
    );
    let gs = wait_source(&client, &ns.name, "repo", "Ready=False", |gs| {
        gs.status
            .as_ref()
            .and_then(|s| ready_state(&s.conditions))
            .is_some_and(|c| c.0 == "False")
    })
    .await;
    let status = gs.status.unwrap_or_default();
    let message = ready_state(&status.conditions)
        .map(|c| c.2)
        .unwrap_or_default();
    assert!(
        message.to_lowercase().contains("auth"),
        "says authentication failed: {message}"
    );
    assert!(
        message.contains(&first),
        "names the kept revision: {message}"
    );
    assert!(
        !message.contains(wrong),
        "never leaks the password: {message}"
    );
    assert_eq!(
        status.revision.as_deref(),
        Some(format!("main@sha1:{first}").as_str())
    );
    let releases: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    let r = releases.get("app").await.expect("release");
    assert_eq!(
        r.status
            .unwrap_or_default()
            .last_applied_revision
            .as_deref(),
        Some(format!("main@sha1:{first}").as_str())
    );

    // Credentials fixed: the new commit arrives.
    git_secret(&env, &client, &ns.name, "git-auth").await;
    wait_release_applied(&client, &ns.name, "app", &second, Duration::from_secs(60)).await;

    // Server unreachable (nothing listens on the port): last good revision kept, nothing pruned.
    let sources: Api<GitSource> = Api::namespaced(client.clone(), &ns.name);
    let patch = serde_json::json!({"spec": {"url": "http://127.0.0.1:9/nothing.git"}});
    sources
        .patch("repo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch url");
    let gs = wait_source(&client, &ns.name, "repo", "fetch failure reported", |gs| {
        gs.status
            .as_ref()
            .and_then(|s| ready_state(&s.conditions))
            .is_some_and(|c| c.0 == "False" && c.2.contains("127.0.0.1:9"))
    })
    .await;
    assert_eq!(
        gs.status.unwrap_or_default().revision.as_deref(),
        Some(format!("main@sha1:{second}").as_str())
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        cms.get_opt("a").await.expect("get").is_some(),
        "nothing pruned while the server is down"
    );
    agent.stop().await.expect("agent stops");
}
