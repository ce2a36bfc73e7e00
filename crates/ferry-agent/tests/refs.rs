//! Git references: semver ranges over tags, fixed tags and commits, over file:// and over the
//! authenticated smart-HTTP server; a missing ref is reported with the URL and ref.

mod common;

use common::*;
use ferry_api::GitSource;
use ferry_testsupport::{TestEnv, TestNamespace};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn semver_tag_and_commit_refs_resolve() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "agent-refs").await;
    let repo = Repo::create(&env, &ns.name);
    let c1 = repo.commit(&[("a.yaml", Some(&configmap_yaml("a", "1")))], "1");
    repo.tag("v1.0.0");
    let c2 = repo.commit(&[("a.yaml", Some(&configmap_yaml("a", "2")))], "2");
    repo.tag("v1.2.0");
    let c3 = repo.commit(&[("a.yaml", Some(&configmap_yaml("a", "3")))], "3");
    repo.tag("v2.0.0");
    // One source below uses a file:// URL: local sources are refused unless allowed.
    let (agent, _cache) =
        start_agent(&env, &[&ns.name], |o| o.allow_local_git_sources = true).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    let with_ref = |name: &str, url: &str, secret: Option<&str>, r: serde_json::Value| {
        let mut gs = git_source(name, url, secret, "1m");
        gs["spec"]["ref"] = r;
        gs
    };
    create::<GitSource>(
        &client,
        &ns.name,
        with_ref(
            "semver",
            &repo.url,
            Some("git-auth"),
            serde_json::json!({"semver": ">=1.0.0 <2.0.0"}),
        ),
    )
    .await;
    create::<GitSource>(
        &client,
        &ns.name,
        with_ref(
            "tag",
            &repo.file_url(&env),
            None,
            serde_json::json!({"tag": "v2.0.0"}),
        ),
    )
    .await;
    create::<GitSource>(
        &client,
        &ns.name,
        with_ref(
            "commit",
            &repo.url,
            Some("git-auth"),
            serde_json::json!({"commit": c1}),
        ),
    )
    .await;
    create::<GitSource>(
        &client,
        &ns.name,
        with_ref(
            "missing",
            &repo.url,
            Some("git-auth"),
            serde_json::json!({"branch": "nope"}),
        ),
    )
    .await;
    let revision = |gs: &GitSource| {
        gs.status
            .as_ref()
            .and_then(|s| s.revision.clone())
            .unwrap_or_default()
    };
    let expected = format!("v1.2.0@sha1:{c2}");
    wait_source(&client, &ns.name, "semver", &expected, |gs| {
        revision(gs) == expected
    })
    .await;
    let expected = format!("v2.0.0@sha1:{c3}");
    wait_source(&client, &ns.name, "tag", &expected, |gs| {
        revision(gs) == expected
    })
    .await;
    let expected = format!("sha1:{c1}");
    wait_source(&client, &ns.name, "commit", &expected, |gs| {
        revision(gs) == expected
    })
    .await;
    let gs = wait_source(&client, &ns.name, "missing", "Ready=False", |gs| {
        gs.status
            .as_ref()
            .and_then(|s| ready_state(&s.conditions))
            .is_some_and(|c| c.0 == "False")
    })
    .await;
    let message = ready_state(&gs.status.unwrap_or_default().conditions)
        .map(|c| c.2)
        .unwrap_or_default();
    assert!(
        message.contains("branch nope") && message.contains(&repo.url),
        "{message}"
    );
    agent.stop().await.expect("agent stops");
}
