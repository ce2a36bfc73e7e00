//! Suspend stops applying; an explicit sync request (the annotation `ferry sync` writes) is
//! handled and recorded; resume applies what arrived meanwhile. Also: dependsOn ordering and the
//! Receiver's published webhook path.

mod common;

use std::time::Duration;

use common::*;
use ferry_api::common::RECONCILE_REQUESTED_AT;
use ferry_api::{GitSource, Receiver, Release};
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suspend_sync_resume_and_depends_on() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "agent-suspend").await;
    let repo = Repo::create(&env, &ns.name);
    let first = repo.commit(
        &[
            ("app/a.yaml", Some(&configmap_yaml("a", "one"))),
            ("base/b.yaml", Some(&configmap_yaml("b", "one"))),
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
    // `app` depends on `base`, which is created later: it waits, then follows.
    create::<Release>(
        &client,
        &ns.name,
        release(
            "app",
            "repo",
            "app",
            serde_json::json!({"dependsOn": [{"name": "base"}]}),
        ),
    )
    .await;
    wait_release_reason(
        &client,
        &ns.name,
        "app",
        "DependencyNotReady",
        Duration::from_secs(30),
    )
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        cms.get_opt("a").await.expect("get").is_none(),
        "nothing applied before the dependency is Ready"
    );
    create::<Release>(
        &client,
        &ns.name,
        release("base", "repo", "base", serde_json::json!({})),
    )
    .await;
    wait_release_applied(&client, &ns.name, "app", &first, Duration::from_secs(60)).await;

    // Suspended: new commits are not applied.
    let releases: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    let suspend = serde_json::json!({"spec": {"suspend": true}});
    releases
        .patch("app", &PatchParams::default(), &Patch::Merge(&suspend))
        .await
        .expect("suspend");
    let second = repo.commit(
        &[("app/a.yaml", Some(&configmap_yaml("a", "two")))],
        "second",
    );
    wait_source(&client, &ns.name, "repo", "second commit fetched", |gs| {
        gs.status
            .as_ref()
            .and_then(|s| s.revision.as_deref())
            .is_some_and(|r| r.ends_with(&second))
    })
    .await;
    // `base` (not suspended, same source) is re-synced at the new revision; `app` must not be.
    wait_release_applied(&client, &ns.name, "base", &second, Duration::from_secs(30)).await;
    let a = releases.get("app").await.expect("app");
    assert!(
        a.status
            .unwrap_or_default()
            .last_applied_revision
            .unwrap_or_default()
            .ends_with(&first)
    );
    let value = cms
        .get("a")
        .await
        .expect("a")
        .data
        .unwrap_or_default()
        .get("value")
        .cloned();
    assert_eq!(
        value.as_deref(),
        Some("one"),
        "suspended Release applied nothing"
    );

    // An explicit sync request is honoured even while suspended, and recorded.
    let token = "2026-01-01T00:00:00.000000001Z";
    let annotate =
        serde_json::json!({"metadata": {"annotations": {RECONCILE_REQUESTED_AT: token}}});
    releases
        .patch("app", &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .expect("sync");
    wait_for("sync request handled", Duration::from_secs(30), || {
        let releases = releases.clone();
        let second = second.clone();
        async move {
            let r = releases.get("app").await?;
            let s = r.status.unwrap_or_default();
            Ok((s.last_handled_reconcile_at.as_deref() == Some(token)
                && s.last_applied_revision
                    .as_deref()
                    .is_some_and(|rev| rev.ends_with(&second)))
            .then_some(()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));

    // Resume: follows new commits again.
    let resume = serde_json::json!({"spec": {"suspend": false}});
    releases
        .patch("app", &PatchParams::default(), &Patch::Merge(&resume))
        .await
        .expect("resume");
    let third = repo.commit(
        &[("app/a.yaml", Some(&configmap_yaml("a", "three")))],
        "third",
    );
    wait_release_applied(&client, &ns.name, "app", &third, Duration::from_secs(30)).await;

    // Receiver status tells where to send webhooks, and that the secret is missing.
    create::<Receiver>(
        &client,
        &ns.name,
        serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "Receiver", "metadata": {"name": "gh"},
            "spec": {"type": "github", "secretRef": {"name": "missing"}},
        }),
    )
    .await;
    let receivers: Api<Receiver> = Api::namespaced(client.clone(), &ns.name);
    let expected = format!("/hook/{}/gh", ns.name);
    wait_for("receiver status", Duration::from_secs(30), || {
        let receivers = receivers.clone();
        let expected = expected.clone();
        async move {
            let r = receivers.get("gh").await?;
            let s = r.status.unwrap_or_default();
            let not_ready = ready_state(&s.conditions)
                .is_some_and(|c| c.0 == "False" && c.2.contains("missing"));
            Ok((s.webhook_path.as_deref() == Some(expected.as_str()) && not_ready).then_some(()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    agent.stop().await.expect("agent stops");
}
