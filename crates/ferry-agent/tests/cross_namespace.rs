//! THE cross-namespace rule (`ferry_api::referenced_namespace`) as the image controllers follow
//! it, against the real testenv: an ImageUpdate whose `sourceRef` names a GitSource of another
//! namespace, and an ImagePolicy whose `imageRepositoryRef` names an ImageRepository of another
//! namespace. Without `--allow-cross-namespace-refs` both are refused (Stalled,
//! `CrossNamespaceRefDenied`, nothing pushed); with it, the same objects write the policy's
//! image into the other namespace's repository. Before the rule had one home, ImageUpdates and
//! ImagePolicies refused such references whatever the flag said (Releases honoured it).

mod common;

use std::time::Duration;

use common::{Repo, create, git_secret, install_crds, start_agent};
use ferry_api::common::{READY, STALLED, find_condition};
use ferry_api::images::{ImagePolicy, ImageRepository, ImageUpdate};
use ferry_api::{CROSS_NAMESPACE_REF_DENIED, GitSource};
use ferry_testsupport::git::push_empty_image;
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use kube::Client;
use kube::api::Api;
use serde_json::json;

/// Wait until `name`'s conditions say Ready=False and Stalled=True with `reason`; returns the
/// Ready message.
async fn wait_refused<K>(client: &Client, ns: &str, name: &str, reason: &str) -> String
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K: HasConditions,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let what = format!("{ns}/{name} Stalled with {reason}");
    wait_for(&what, Duration::from_secs(60), || {
        let api = api.clone();
        async move {
            let object = api.get(name).await?;
            let conditions = object.conditions();
            let ready = find_condition(&conditions, READY);
            let stalled = find_condition(&conditions, STALLED);
            if let (Some(ready), Some(stalled)) = (ready, stalled)
                && ready.status == "False"
                && ready.reason == reason
                && stalled.status == "True"
            {
                return Ok(Some(ready.message.clone()));
            }
            anyhow::bail!("conditions: {conditions:?}")
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

trait HasConditions {
    fn conditions(&self) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>;
}

impl HasConditions for ImageUpdate {
    fn conditions(&self) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
        self.status.clone().unwrap_or_default().conditions
    }
}

impl HasConditions for ImagePolicy {
    fn conditions(&self) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
        self.status.clone().unwrap_or_default().conditions
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn image_automation_follows_cross_namespace_refs_only_with_the_flag() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    // `apps` holds the automation (ImagePolicy, ImageUpdate); `shared` holds what they refer
    // to (the GitSource and its Secret, the ImageRepository).
    let apps = TestNamespace::create(&client, "xns-apps").await;
    let shared = TestNamespace::create(&client, "xns-shared").await;

    let image = format!(
        "{}/{}/app",
        env.var("FERRY_REGISTRY"),
        shared.name.trim_start_matches("ferry-test-")
    );
    push_empty_image(&env, &format!("{image}:1.0.0"), None);

    // The repository starts at 0.9.0; the policy (^1.0.0) wants 1.0.0.
    let repo = Repo::create(&env, &shared.name);
    let marker = format!("{{\"$imagepolicy\": \"{}:app\"}}", apps.name);
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: app\nspec:\n  containers:\n    - name: app\n      image: {image}:0.9.0 # {marker}\n"
    );
    let first = repo.commit(&[("deploy/app.yaml", Some(&manifest))], "app at 0.9.0");

    git_secret(&env, &client, &shared.name, "git-auth").await;
    create::<GitSource>(
        &client,
        &shared.name,
        common::git_source("repo", &repo.url, Some("git-auth"), "1m"),
    )
    .await;
    create::<ImageRepository>(
        &client,
        &shared.name,
        json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "ImageRepository",
            "metadata": {"name": "app"}, "spec": {"image": image, "interval": "10m"}
        }),
    )
    .await;
    create::<ImagePolicy>(
        &client,
        &apps.name,
        json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "ImagePolicy", "metadata": {"name": "app"},
            "spec": {
                "imageRepositoryRef": {"name": "app", "namespace": shared.name},
                "policy": {"semver": {"range": "^1.0.0"}}
            }
        }),
    )
    .await;
    create::<ImageUpdate>(
        &client,
        &apps.name,
        json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "ImageUpdate", "metadata": {"name": "app"},
            "spec": {
                "sourceRef": {"kind": "GitSource", "name": "repo", "namespace": shared.name},
                "interval": "10m",
                "git": {"commit": {"author": {"name": "ferry-bot", "email": "bot@ferry.invalid"}}},
                "update": {"path": "./deploy"}
            }
        }),
    )
    .await;
    let namespaces = [apps.name.as_str(), shared.name.as_str()];

    // Without the flag: both references refused, as a Release's would be; nothing pushed.
    let (agent, _cache) = start_agent(&env, &namespaces, |o| o.image_automation = true).await;
    let message =
        wait_refused::<ImageUpdate>(&client, &apps.name, "app", CROSS_NAMESPACE_REF_DENIED).await;
    assert!(
        message.contains(&format!("GitSource repo is in namespace {}", shared.name))
            && message.contains("--allow-cross-namespace-refs"),
        "says what was refused and what to do: {message}"
    );
    let message =
        wait_refused::<ImagePolicy>(&client, &apps.name, "app", CROSS_NAMESPACE_REF_DENIED).await;
    assert!(
        message.contains(&format!(
            "ImageRepository app is in namespace {}",
            shared.name
        )),
        "{message}"
    );
    // A refusal is final (Stalled, no requeue): the repository is as it was.
    assert_eq!(repo.head(), first);
    agent.stop().await.expect("agent stops");

    // With the flag: the policy reads the other namespace's scan, the update pushes to the
    // other namespace's repository (with that GitSource's Secret).
    let (agent, _cache) = start_agent(&env, &namespaces, |o| {
        o.image_automation = true;
        o.allow_cross_namespace_refs = true;
    })
    .await;
    let updates: Api<ImageUpdate> = Api::namespaced(client.clone(), &apps.name);
    let pushed = wait_for(
        "the ImageUpdate pushed to the other namespace's repository",
        Duration::from_secs(90),
        || {
            let updates = updates.clone();
            async move {
                let update = updates.get("app").await?;
                let status = update.status.unwrap_or_default();
                match status.last_push_commit {
                    Some(commit) => Ok(Some(commit)),
                    None => anyhow::bail!("conditions: {:?}", status.conditions),
                }
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_ne!(pushed, first);
    assert_eq!(repo.head(), pushed, "the push is on main");
    let written = repo.file("deploy/app.yaml");
    assert!(
        written.contains(&format!("image: {image}:1.0.0 # {marker}")),
        "{written}"
    );
    agent.stop().await.expect("agent stops");
}
