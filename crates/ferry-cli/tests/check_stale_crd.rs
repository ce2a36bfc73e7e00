//! `ferry check` names a CRD that is not the one this CLI ships (as an older install leaves
//! it), and `ferry install` updates it; the CRD upgrade from an older ferry's CRDs (those of
//! commit d089750, plus an ImageRepository schema from before `certSecretRef`) keeps every
//! object, and serves the new field. Its own test binary: it changes shared CRDs (a schema
//! description, and one optional field no other test sets), and the other check tests expect
//! every CRD current; cargo runs test binaries one after another. The two tests here take turns
//! ([`SHARED_CRDS`]).

use std::process::Command;
use std::time::Duration;

use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

/// Each test makes shared CRDs stale and expects `ferry install` to be the last to touch them
/// before its check: one at a time.
static SHARED_CRDS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CRD: &str = "imageupdates.ferry.dev";

fn ferry(env: &TestEnv, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("KUBECONFIG", env.kubeconfig())
        .output()
        .expect("run ferry");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn check_names_a_stale_crd_and_install_updates_it() {
    let _turn = SHARED_CRDS.lock().await;
    let env = TestEnv::get();
    let client = env.client().await;
    let home = TestNamespace::create(&client, "check-crd").await;
    let (code, out, err) = ferry(
        &env,
        &["install", "--no-deployment", "--namespace", &home.name],
    );
    assert_eq!(code, 0, "ferry install: {out}{err}");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    // Another test's `ferry install` may restore the CRD at any moment: change it again on
    // every attempt until check sees it stale.
    let line = wait_for(
        "check to name the stale CRD",
        Duration::from_secs(60),
        || {
            let crds = crds.clone();
            let env = env.clone();
            let ns = home.name.clone();
            async move {
                let mut crd = crds.get(CRD).await?;
                if let Some(schema) = crd
                    .spec
                    .versions
                    .first_mut()
                    .and_then(|v| v.schema.as_mut())
                    .and_then(|s| s.open_api_v3_schema.as_mut())
                {
                    schema.description = Some("an older ferry's ImageUpdate".into());
                }
                crds.replace(CRD, &PostParams::default(), &crd).await?;
                let (code, out, _) = ferry(&env, &["check", "--no-deployment", "--namespace", &ns]);
                match out
                    .lines()
                    .find(|l| l.starts_with(&format!("✗ CRD {CRD}:")))
                {
                    Some(line) if code == 1 => Ok(Some(line.to_string())),
                    _ => anyhow::bail!("exit {code}: {out}"),
                }
            }
        },
    )
    .await
    .expect("stale CRD reported");
    assert!(
        line.contains("differs from the one this CLI") && line.contains("ferry install"),
        "{line}"
    );

    let (code, out, err) = ferry(
        &env,
        &["install", "--no-deployment", "--namespace", &home.name],
    );
    assert_eq!(code, 0, "ferry install: {out}{err}");
    let (code, out, err) = ferry(
        &env,
        &["check", "--no-deployment", "--namespace", &home.name],
    );
    assert_eq!(code, 0, "check after install: {out}{err}");
    assert!(
        out.contains(&format!("✔ CRD {CRD}: current and Established")),
        "{out}"
    );

    delete_cluster_scoped(&client, &home.name).await;
}

/// The ClusterRole and bindings `ferry install --namespace <home>` created.
async fn delete_cluster_scoped(client: &kube::Client, home: &str) {
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    for name in [format!("ferry-agent-{home}"), format!("ferry-admin-{home}")] {
        let _ = bindings.delete(&name, &DeleteParams::default()).await;
    }
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let _ = roles
        .delete(&format!("ferry-agent-{home}"), &DeleteParams::default())
        .await;
}

/// The older ferry's CRDs: commit d089750's, verbatim, except that the ImageRepository schema
/// lacks `spec.certSecretRef` (git history has no schema change of a shipped CRD yet: this is
/// what a CRD from before a new optional field looks like). Each gets the labels and
/// annotations the current CRD has, as the older `ferry install` (the same field manager and
/// app) left them: applied with ferry's field manager, the upgrade below is exactly
/// `ferry install` over an older `ferry install`.
fn older_crds(current: &[CustomResourceDefinition]) -> Vec<Value> {
    let text = include_str!("fixtures/crds-d089750.yaml");
    let mut crds: Vec<Value> = serde_saphyr::from_multiple::<Value>(text)
        .expect("fixtures/crds-d089750.yaml parses")
        .into_iter()
        .filter(|v| v.is_object())
        .collect();
    for crd in &mut crds {
        let name = crd["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Some(now) = current
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(&name))
        {
            crd["metadata"]["labels"] = json!(now.metadata.labels);
            crd["metadata"]["annotations"] = json!(now.metadata.annotations);
        }
        if name == IMAGE_REPOSITORIES {
            let spec = crd
                .pointer_mut("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties")
                .and_then(Value::as_object_mut)
                .expect("the ImageRepository spec schema");
            assert!(spec.remove("certSecretRef").is_some(), "{spec:?}");
        }
    }
    assert_eq!(crds.len(), 7, "d089750 shipped seven CRDs");
    crds
}

const IMAGE_REPOSITORIES: &str = "imagerepositories.ferry.dev";

fn dynamic(client: &kube::Client, ns: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("ferry.dev", "v1alpha1", kind),
        plural,
    );
    Api::namespaced_with(client.clone(), ns, &resource)
}

/// Server-side apply as the test (its own field manager).
async fn apply(api: &Api<DynamicObject>, object: &Value) -> anyhow::Result<DynamicObject> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    Ok(api
        .patch(
            name,
            &PatchParams::apply("ferry-upgrade-test").force(),
            &Patch::Apply(object),
        )
        .await?)
}

/// Merge-patch the ImageRepository `app` with `spec.certSecretRef` (the field the older schema
/// lacks); whether the stored object has it afterwards.
async fn set_cert_secret_ref(repositories: &Api<DynamicObject>) -> anyhow::Result<bool> {
    let patch = json!({"spec": {"certSecretRef": {"name": "ca"}}});
    let written = repositories
        .patch("app", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(written
        .data
        .pointer("/spec/certSecretRef/name")
        .is_some_and(|n| n == "ca"))
}

/// An older ferry's CRDs in the cluster, objects created under them (a GitSource, a Release
/// and an ImageRepository), then today's `ferry install`: `ferry check` goes from naming the
/// stale CRDs to passing, the CRDs are the shipped ones and serve the new field, and every
/// object is still there (same UID, same spec) and readable with today's types.
#[tokio::test]
async fn install_upgrades_older_crds_and_keeps_their_objects() {
    let _turn = SHARED_CRDS.lock().await;
    let env = TestEnv::get();
    let client = env.client().await;
    let home = TestNamespace::create(&client, "crd-upgrade").await;
    let tenant = TestNamespace::create(&client, "crd-upgrade-tenant").await;
    // Today's install first, so that the CRDs exist with their labels (and the RBAC for check).
    let (code, out, err) = ferry(
        &env,
        &["install", "--no-deployment", "--namespace", &home.name],
    );
    assert_eq!(code, 0, "ferry install: {out}{err}");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let current = crds.list(&Default::default()).await.expect("CRDs").items;
    let older = older_crds(&current);

    let gitsources = dynamic(&client, &tenant.name, "GitSource", "gitsources");
    let releases = dynamic(&client, &tenant.name, "Release", "releases");
    let repositories = dynamic(
        &client,
        &tenant.name,
        "ImageRepository",
        "imagerepositories",
    );
    let gitsource = json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "GitSource",
        "metadata": {"name": "app", "namespace": tenant.name},
        "spec": {"url": "https://git.example.invalid/app.git", "ref": {"branch": "main"}, "interval": "1h", "suspend": true},
    });
    let release = json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": "app", "namespace": tenant.name},
        "spec": {"sourceRef": {"kind": "GitSource", "name": "app"}, "path": "app", "interval": "1h",
                 "suspend": true, "dependsOn": [{"name": "base"}]},
    });
    let repository = json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "ImageRepository",
        "metadata": {"name": "app", "namespace": tenant.name},
        "spec": {"image": "registry.example.invalid/app", "interval": "1h", "suspend": true},
    });

    // The older CRDs, served: an object written now loses certSecretRef. Another test's
    // `ferry install` (other binaries run at the same time on a shared testenv) may restore the
    // current CRDs at any moment, so apply, write and check again until all three agree.
    let applier = PatchParams::apply("ferry").force();
    let stale_lines = wait_for(
        "the older CRDs served and named by ferry check",
        Duration::from_secs(90),
        || {
            let (crds, older, env) = (crds.clone(), older.clone(), env.clone());
            let (gitsources, releases, repositories) =
                (gitsources.clone(), releases.clone(), repositories.clone());
            let (gitsource, release, repository) =
                (gitsource.clone(), release.clone(), repository.clone());
            let (applier, ns) = (applier.clone(), home.name.clone());
            async move {
                for crd in &older {
                    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
                    let old: CustomResourceDefinition = serde_json::from_value(crd.clone())?;
                    crds.patch(name, &applier, &Patch::Apply(&old)).await?;
                }
                apply(&gitsources, &gitsource).await?;
                apply(&releases, &release).await?;
                apply(&repositories, &repository).await?;
                // A merge patch setting the new field: the older schema drops it (the API
                // server's default field validation warns and prunes; server-side apply would
                // refuse the unknown field instead).
                if set_cert_secret_ref(&repositories).await? {
                    let unset = json!({"spec": {"certSecretRef": null}});
                    repositories
                        .patch("app", &PatchParams::default(), &Patch::Merge(&unset))
                        .await?;
                    anyhow::bail!("the older ImageRepository schema is not served yet");
                }
                let (code, out, _) = ferry(&env, &["check", "--no-deployment", "--namespace", &ns]);
                let stale: Vec<String> = out
                    .lines()
                    .filter(|l| {
                        l.starts_with("✗ CRD ") && l.contains("differs from the one this CLI")
                    })
                    .map(str::to_string)
                    .collect();
                let named = |crd: &str| stale.iter().any(|l| l.contains(crd));
                if code == 1 && named("gitsources.ferry.dev") && named(IMAGE_REPOSITORIES) {
                    return Ok(Some(stale));
                }
                anyhow::bail!("exit {code}: {out}")
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    // Named: the two CRDs whose schema differs, GitSource (a description) and ImageRepository.
    println!("ferry check before the upgrade: {stale_lines:#?}");
    let before = [
        gitsources.get("app").await.expect("GitSource"),
        releases.get("app").await.expect("Release"),
        repositories.get("app").await.expect("ImageRepository"),
    ];

    // The upgrade.
    let (code, out, err) = ferry(
        &env,
        &["install", "--no-deployment", "--namespace", &home.name],
    );
    assert_eq!(code, 0, "ferry install over the older CRDs: {out}{err}");
    let (code, out, err) = ferry(
        &env,
        &["check", "--no-deployment", "--namespace", &home.name],
    );
    assert_eq!(code, 0, "check after the upgrade: {out}{err}");
    for crd in &older {
        let name = crd["metadata"]["name"].as_str().unwrap_or_default();
        assert!(
            out.contains(&format!("✔ CRD {name}: current and Established")),
            "{out}"
        );
    }
    let served = crds.get(IMAGE_REPOSITORIES).await.expect("CRD");
    let schema = serde_json::to_value(&served.spec.versions[0].schema).expect("schema");
    assert!(
        schema
            .pointer("/openAPIV3Schema/properties/spec/properties/certSecretRef")
            .is_some(),
        "the upgraded CRD has the new field"
    );

    // Every object kept: the same object (UID), the same spec, readable with today's types.
    for (api, old) in [&gitsources, &releases, &repositories]
        .into_iter()
        .zip(&before)
    {
        let now = api
            .get("app")
            .await
            .expect("the object survived the upgrade");
        assert_eq!(now.metadata.uid, old.metadata.uid);
        assert_eq!(now.data["spec"], old.data["spec"]);
    }
    let typed: ferry_api::Release =
        serde_json::to_value(releases.get("app").await.expect("Release"))
            .and_then(serde_json::from_value)
            .expect("the Release reads as today's type");
    assert_eq!(
        typed
            .spec
            .depends_on
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>(),
        ["base"]
    );
    // The new field is served now (the API server switches schemas shortly after the update).
    wait_for(
        "certSecretRef kept by the upgraded schema",
        Duration::from_secs(30),
        || {
            let repositories = repositories.clone();
            async move { Ok(set_cert_secret_ref(&repositories).await?.then_some(())) }
        },
    )
    .await
    .expect("the new field is served");

    delete_cluster_scoped(&client, &home.name).await;
}
