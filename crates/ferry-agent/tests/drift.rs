//! Self-heal: with an interval of an hour, an owned object deleted or edited in the cluster is
//! restored within seconds (drift watches), and `ferry.dev/reconcile-requested-at` syncs on demand.

mod common;

use std::time::Duration;

use common::*;
use ferry_api::{GitSource, Release};
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleted_or_edited_objects_are_restored_without_waiting_for_the_interval() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "agent-drift").await;
    let repo = Repo::create(&env, &ns.name);
    let sha = repo.commit(
        &[("app/a.yaml", Some(&configmap_yaml("a", "desired")))],
        "first",
    );
    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1h"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release("app", "repo", "app", serde_json::json!({"interval": "1h"})),
    )
    .await;
    wait_release_applied(&client, &ns.name, "app", &sha, Duration::from_secs(60)).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let value = |cm: Option<ConfigMap>| {
        cm.and_then(|c| c.data)
            .and_then(|d| d.get("value").cloned())
    };

    // Edited by hand: restored.
    let patch = serde_json::json!({"data": {"value": "tampered"}});
    cms.patch("a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("tamper");
    wait_for("edited ConfigMap restored", Duration::from_secs(20), || {
        let cms = cms.clone();
        async move { Ok((value(cms.get_opt("a").await?).as_deref() == Some("desired")).then_some(())) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));

    // Deleted by hand: recreated.
    cms.delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for(
        "deleted ConfigMap recreated",
        Duration::from_secs(20),
        || {
            let cms = cms.clone();
            async move {
                Ok((value(cms.get_opt("a").await?).as_deref() == Some("desired")).then_some(()))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    agent.stop().await.expect("agent stops");
}
