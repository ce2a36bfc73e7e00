//! Attack tests for app identity, inventory concurrency and destructive pruning (issue 11, items
//! 6 and 16), against the real testenv.
//!
//! - Releases whose names the pre-upgrade encoding conflated (`web.v1`/`web-v1`,
//!   `a`+`b-c`/`a-b`+`c`) and a push app named like a Release each apply objects; when one drops
//!   objects, the others' objects survive.
//! - A pre-upgrade inventory written by hand in the old format is adopted (objects re-owned, the
//!   old inventory removed, what left the source pruned) — and one that is not verifiably this
//!   app's is not.
//! - Two inventory writers with the same (stale) resourceVersion: the second gets a conflict.
//! - Namespaces, CRDs, PVCs and PVs that leave the source are kept unless they opted in with
//!   `ferry.dev/prune: allow-destructive`; objects in a terminating namespace are left to it.
//! - A 10,000-object inventory is stored compressed; a tenant's hand-written gzip bomb in its
//!   place is refused naming the ConfigMap, and nothing is applied.

mod push_common;

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_engine::Error;
use ferry_engine::inventory::{self, Inventory};
use ferry_engine::ownership::Owner;
use ferry_engine::ownership::ReleaseRef;
use ferry_engine::pipeline::{self, ApplyOptions};
use ferry_engine::progress::NoProgress;
use ferry_engine::report::{Action, ApplyReport};
use ferry_testsupport::{TestEnv, TestNamespace, unique_name, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use push_common::*;

fn release(ns: &str, name: &str) -> ReleaseRef {
    ReleaseRef {
        namespace: ns.to_string(),
        name: name.to_string(),
    }
}

/// What the agent passes for a Release deploying into `target`.
fn release_opts(r: &ReleaseRef, target: &str) -> ApplyOptions {
    ApplyOptions {
        release: Some(r.clone()),
        namespace: Some(target.to_string()),
        prune: true,
        source: "test".into(),
        timeout: Duration::from_secs(90),
        ..Default::default()
    }
}

async fn apply(client: &Client, yaml: &str, o: &ApplyOptions) -> ApplyReport {
    let report = pipeline::apply(client, manifests(yaml), o, &NoProgress)
        .await
        .unwrap_or_else(|e| panic!("apply: {e}"));
    assert!(report.succeeded(), "{:#?}", report);
    report
}

fn action_of(report: &ApplyReport, kind: &str, name: &str) -> Option<Action> {
    report
        .objects
        .iter()
        .find(|o| o.key.kind == kind && o.key.name == name)
        .map(|o| o.action)
}

#[tokio::test]
async fn conflated_release_names_do_not_prune_each_other() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "idn-rel").await;
    // Release namespaces shaped like the attack: `<p>`+`b-c` and `<p>-b`+`c` both became
    // `<p>-b-c` in the target namespace; `web.v1` and `web-v1` both became `web-v1`.
    let p = unique_name("r");
    let pairs = [
        (release(&ns.name, "web.v1"), release(&ns.name, "web-v1")),
        (release(&p, "b-c"), release(&format!("{p}-b"), "c")),
    ];
    for (i, (one, two)) in pairs.iter().enumerate() {
        let (o1, o2) = (release_opts(one, &ns.name), release_opts(two, &ns.name));
        apply(
            &client,
            &format!(
                "{}{}",
                configmap(&format!("one-{i}-a"), "1"),
                configmap(&format!("one-{i}-b"), "1")
            ),
            &o1,
        )
        .await;
        apply(&client, &configmap(&format!("two-{i}"), "1"), &o2).await;
        // The first Release drops an object: only its own object goes.
        let report = apply(&client, &configmap(&format!("one-{i}-b"), "1"), &o1).await;
        assert_eq!(
            action_of(&report, "ConfigMap", &format!("one-{i}-a")),
            Some(Action::Pruned),
            "{:#?}",
            report
        );
        assert!(
            configmap_exists(&client, &ns.name, &format!("two-{i}")).await,
            "Release {two} lost its object to Release {one}: {:#?}",
            report
        );
        assert!(!configmap_exists(&client, &ns.name, &format!("one-{i}-a")).await);
        // And the other way round.
        let report = apply(&client, &configmap(&format!("two-{i}-new"), "1"), &o2).await;
        assert_eq!(
            action_of(&report, "ConfigMap", &format!("two-{i}")),
            Some(Action::Pruned)
        );
        assert!(configmap_exists(&client, &ns.name, &format!("one-{i}-b")).await);
        // One Release cannot take over the other's object either.
        let err = pipeline::apply(
            &client,
            manifests(&configmap(&format!("one-{i}-b"), "stolen")),
            &o2,
            &NoProgress,
        )
        .await
        .expect("report");
        assert_eq!(
            action_of(&err, "ConfigMap", &format!("one-{i}-b")),
            Some(Action::Failed),
            "{:#?}",
            err
        );
    }
}

#[tokio::test]
async fn push_app_named_like_a_release_does_not_prune_it() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "idn-push").await;
    let rel = release(&ns.name, "web");
    apply(
        &client,
        &configmap("from-release", "1"),
        &release_opts(&rel, &ns.name),
    )
    .await;
    // `ferry apply ./web` in CI: app name `web`, same namespace.
    let mut push = opts("web", &ns.name);
    push.prune = true;
    apply(&client, &configmap("from-push", "1"), &push).await;
    let report = apply(&client, &configmap("from-push-2", "1"), &push).await;
    assert_eq!(
        action_of(&report, "ConfigMap", "from-push"),
        Some(Action::Pruned)
    );
    assert!(
        configmap_exists(&client, &ns.name, "from-release").await,
        "the push app pruned the Release's object: {:#?}",
        report
    );
    // Deleting the push app leaves the Release alone too.
    let deleted = pipeline::delete_app(&client, "web", Some(&ns.name), false, 4)
        .await
        .expect("delete");
    assert!(deleted.succeeded(), "{:#?}", deleted);
    assert!(configmap_exists(&client, &ns.name, "from-release").await);
    assert!(!configmap_exists(&client, &ns.name, "from-push-2").await);
}

/// Write objects and an inventory exactly as ferry ≤ 0.x did for a Release `web.v1` in `ns`
/// (app name `web-v1`): label `ferry.dev/app=web-v1`, annotation `ferry.dev/owner=<ns>/web-v1`,
/// inventory `ferry-inventory-web-v1` labelled with the app and without a stored owner.
async fn write_old_format(
    client: &Client,
    ns: &str,
    objects: &[(&str, &str)],
    listed: &[&str],
    source: &str,
) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for (name, owner) in objects {
        let cm = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "labels": {"ferry.dev/app": owner.rsplit('/').next().unwrap_or_default()},
                "annotations": {"ferry.dev/owner": owner},
            },
            "data": {"value": "old"},
        });
        api.patch(
            name,
            &PatchParams::apply("ferry").force(),
            &Patch::Apply(&cm),
        )
        .await
        .unwrap_or_else(|e| panic!("old-format object {name}: {e}"));
    }
    let entries: Vec<serde_json::Value> = listed
        .iter()
        .map(|name| {
            serde_json::json!({"apiVersion": "v1", "group": "", "kind": "ConfigMap", "namespace": ns, "name": name})
        })
        .collect();
    let text = serde_json::json!({
        "app": "web-v1", "source": source,
        "appliedAt": "2026-01-01T00:00:00Z", "objects": entries,
    })
    .to_string();
    let inv = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": "ferry-inventory-web-v1",
            "labels": {"ferry.dev/inventory": "web-v1", "app.kubernetes.io/managed-by": "ferry"},
        },
        "data": {"inventory.json": text},
    });
    api.patch(
        "ferry-inventory-web-v1",
        &PatchParams::apply("ferry").force(),
        &Patch::Apply(&inv),
    )
    .await
    .expect("old-format inventory");
}

fn owner_annotation(cm: &ConfigMap) -> Option<String> {
    cm.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("ferry.dev/owner"))
        .cloned()
}

#[tokio::test]
async fn pre_upgrade_inventory_is_adopted_then_pruned_correctly() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "idn-migrate").await;
    let old_id = format!("{}/web-v1", ns.name);
    // `foreign` is listed in the old inventory but owned by someone else by now.
    write_old_format(
        &client,
        &ns.name,
        &[
            ("keep", &old_id),
            ("gone", &old_id),
            ("foreign", &format!("{}/other", ns.name)),
        ],
        &["keep", "gone", "foreign"],
        "http://git.example/repo.git//web",
    )
    .await;
    let rel = release(&ns.name, "web.v1");
    let mut o = release_opts(&rel, &ns.name);
    o.legacy_app = Some(inventory::Legacy {
        app: "web-v1".into(),
        source_prefix: Some("http://git.example/repo.git//".into()),
        push_takeover: false,
    });
    let report = apply(
        &client,
        &format!("{}{}", configmap("keep", "new"), configmap("added", "1")),
        &o,
    )
    .await;
    let new_owner = Owner::release(&rel, &ns.name).expect("owner");
    // Adopted: the object in the source is re-owned under the new identity...
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let keep = api.get("keep").await.expect("keep");
    assert_eq!(owner_annotation(&keep), Some(new_owner.id()));
    assert_eq!(
        keep.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("ferry.dev/app")),
        Some(&new_owner.app)
    );
    // ...what left the source is pruned, what is not provably ours stays...
    assert_eq!(
        action_of(&report, "ConfigMap", "gone"),
        Some(Action::Pruned),
        "{:#?}",
        report
    );
    assert!(!configmap_exists(&client, &ns.name, "gone").await);
    assert!(configmap_exists(&client, &ns.name, "foreign").await);
    // ...the old inventory is gone and the new one stores the exact owner.
    assert!(
        api.get_opt("ferry-inventory-web-v1")
            .await
            .expect("get")
            .is_none()
    );
    let stored = inventory::read(&client, &new_owner)
        .await
        .expect("read")
        .expect("new inventory");
    assert_eq!(stored.inventory.owner, Some(new_owner.id()));
    assert_eq!(stored.inventory.adopted_from, None);
    // From now on the app prunes under its new identity.
    let report = apply(&client, &configmap("added", "1"), &o).await;
    assert_eq!(
        action_of(&report, "ConfigMap", "keep"),
        Some(Action::Pruned)
    );
    assert!(!configmap_exists(&client, &ns.name, "keep").await);
}

#[tokio::test]
async fn inventory_that_is_not_verifiably_ours_is_not_adopted() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "idn-noadopt").await;
    // A push app `web-v1` (this version: it stores its owner) owns `push-cm`.
    let mut push = opts("web-v1", &ns.name);
    push.prune = true;
    apply(&client, &configmap("push-cm", "1"), &push).await;
    // Release `web.v1` mapped to the same pre-upgrade name: it must not adopt (or prune from)
    // the push app's inventory.
    let rel = release(&ns.name, "web.v1");
    let mut o = release_opts(&rel, &ns.name);
    o.legacy_app = Some(inventory::Legacy {
        app: "web-v1".into(),
        source_prefix: Some("http://git.example/repo.git//".into()),
        push_takeover: false,
    });
    let report = apply(&client, &configmap("rel-cm", "1"), &o).await;
    assert!(
        report.objects.iter().all(|r| r.action != Action::Pruned),
        "{:#?}",
        report
    );
    assert!(configmap_exists(&client, &ns.name, "push-cm").await);
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        api.get_opt("ferry-inventory-web-v1")
            .await
            .expect("get")
            .is_some()
    );
    // And an inventory stored under a Release's name but for another owner is refused.
    let other = Owner::release(&release(&ns.name, "web-v1"), &ns.name).expect("owner");
    let mine = Owner::release(&rel, &ns.name).expect("owner");
    let mut cm = api.get(&mine.inventory_name()).await.expect("inventory");
    let mut inv: Inventory = serde_json::from_str(
        cm.data
            .as_ref()
            .and_then(|d| d.get("inventory.json"))
            .expect("data"),
    )
    .expect("parse");
    inv.owner = Some(other.id());
    cm.data = Some(BTreeMap::from([(
        "inventory.json".to_string(),
        serde_json::to_string(&inv).expect("json"),
    )]));
    api.replace(&mine.inventory_name(), &PostParams::default(), &cm)
        .await
        .expect("forge");
    let err = pipeline::apply(
        &client,
        manifests(&configmap("rel-cm", "1")),
        &o,
        &NoProgress,
    )
    .await
    .expect_err("an inventory of another owner is refused");
    assert!(matches!(err, Error::Refused(_)), "{err}");
    assert!(err.to_string().contains(&other.id()), "{err}");
    assert!(configmap_exists(&client, &ns.name, "rel-cm").await);
}

#[tokio::test]
async fn stale_inventory_writer_gets_a_conflict_not_an_overwrite() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "idn-occ").await;
    let mut o = opts("shared", &ns.name);
    o.prune = true;
    apply(&client, &configmap("a", "1"), &o).await;
    let owner = Owner::push("shared", &ns.name).expect("owner");
    // Two writers (e.g. two leaders during a Lease hand-over) read the same version.
    let first = inventory::read(&client, &owner)
        .await
        .expect("read")
        .expect("inventory");
    let second = first.clone();
    let mut v1 = Some(first.version.clone());
    let mut one = first.inventory.clone();
    one.source = "writer-1".into();
    inventory::write(&client, &owner, &one, &mut v1)
        .await
        .expect("first writer");
    let mut v2 = Some(second.version.clone());
    let mut two = second.inventory.clone();
    two.source = "writer-2".into();
    two.objects.clear();
    let err = inventory::write(&client, &owner, &two, &mut v2)
        .await
        .expect_err("stale writer must conflict");
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("another writer"), "{err}");
    let now = inventory::read(&client, &owner)
        .await
        .expect("read")
        .expect("inventory");
    assert_eq!(now.inventory.source, "writer-1", "the first write survived");
    assert_eq!(now.inventory.objects.len(), 1);
    // Two creators: the second create conflicts too.
    let fresh = Owner::push("fresh", &ns.name).expect("owner");
    let (mut c1, mut c2) = (None, None);
    inventory::write(&client, &fresh, &one, &mut c1)
        .await
        .expect("first create");
    let err = inventory::write(&client, &fresh, &two, &mut c2)
        .await
        .expect_err("second create must conflict");
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    // A stale delete is refused as well.
    let err = inventory::delete(&client, &owner, Some(&second.version))
        .await
        .expect_err("stale delete must conflict");
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
}

fn destructive_yaml(ns: &str, extra_ns: &str, group: &str, pv: &str, opt_in: bool) -> String {
    let ann = if opt_in {
        "\n  annotations: {ferry.dev/prune: allow-destructive}"
    } else {
        ""
    };
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {extra_ns}{ann}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: things.{group}{ann}
spec:
  group: {group}
  scope: Namespaced
  names: {{kind: Thing, plural: things, singular: thing, listKind: ThingList}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: {pv}{ann}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  storageClassName: ferry-test-none
  hostPath: {{path: /tmp/{pv}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  namespace: {ns}{ann}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ferry-test-none
  resources: {{requests: {{storage: 1Gi}}}}
---
"#
    )
}

/// Gone or being deleted.
async fn deleting(
    client: &Client,
    api_version: &str,
    kind: &str,
    plural: &str,
    ns: Option<&str>,
    name: &str,
) -> bool {
    match get(client, api_version, kind, plural, ns, name).await {
        None => true,
        Some(obj) => obj.metadata.deletion_timestamp.is_some(),
    }
}

#[tokio::test]
async fn destructive_kinds_are_kept_unless_they_opt_in() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "idn-destr").await;
    let extra_ns = unique_name("idn-owned");
    let group = format!("{}.ferry.test", unique_name("g"));
    let pv = unique_name("pv");
    let mut o = opts("data", &ns.name);
    o.prune = true;
    let keep = configmap("still-here", "1");
    apply(
        &client,
        &format!(
            "{keep}{}",
            destructive_yaml(&ns.name, &extra_ns, &group, &pv, false)
        ),
        &o,
    )
    .await;
    // They leave the source without opting in: kept, reported, still in the inventory.
    for _ in 0..2 {
        let report = apply(&client, &keep, &o).await;
        for (kind, name) in [
            ("Namespace", extra_ns.as_str()),
            ("CustomResourceDefinition", &format!("things.{group}")),
            ("PersistentVolume", pv.as_str()),
            ("PersistentVolumeClaim", "data"),
        ] {
            let result = report
                .objects
                .iter()
                .find(|r| r.key.kind == kind && r.key.name == name)
                .unwrap_or_else(|| panic!("{kind} {name} reported: {:#?}", report));
            assert_eq!(result.action, Action::Kept, "{:#?}", report);
            assert!(
                result
                    .message
                    .as_deref()
                    .unwrap_or_default()
                    .contains("allow-destructive"),
                "{:?}",
                result.message
            );
        }
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let live_ns = namespaces.get(&extra_ns).await.expect("namespace kept");
    assert!(live_ns.metadata.deletion_timestamp.is_none());
    assert!(
        !deleting(
            &client,
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            None,
            &format!("things.{group}")
        )
        .await
    );
    assert!(
        !deleting(
            &client,
            "v1",
            "PersistentVolume",
            "persistentvolumes",
            None,
            &pv
        )
        .await
    );
    assert!(
        !deleting(
            &client,
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            Some(&ns.name),
            "data"
        )
        .await
    );

    // With the opt-in in the source, removing them prunes them.
    apply(
        &client,
        &format!(
            "{keep}{}",
            destructive_yaml(&ns.name, &extra_ns, &group, &pv, true)
        ),
        &o,
    )
    .await;
    let report = apply(&client, &keep, &o).await;
    for kind in [
        "Namespace",
        "CustomResourceDefinition",
        "PersistentVolume",
        "PersistentVolumeClaim",
    ] {
        assert_eq!(
            report
                .objects
                .iter()
                .find(|r| r.key.kind == kind)
                .map(|r| r.action),
            Some(Action::Pruned),
            "{:#?}",
            report
        );
    }
    assert!(deleting(&client, "v1", "Namespace", "namespaces", None, &extra_ns).await);
    assert!(
        deleting(
            &client,
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            None,
            &format!("things.{group}")
        )
        .await
    );
    assert!(
        deleting(
            &client,
            "v1",
            "PersistentVolume",
            "persistentvolumes",
            None,
            &pv
        )
        .await
    );
    assert!(
        deleting(
            &client,
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            Some(&ns.name),
            "data"
        )
        .await
    );
}

#[tokio::test]
async fn prune_leaves_objects_in_a_terminating_namespace_to_it() {
    let env = TestEnv::get();
    let client = env.client().await;
    let home = TestNamespace::create(&client, "idn-home").await;
    let doomed = TestNamespace::create(&client, "idn-doomed").await;
    let mut o = opts("spread", &home.name);
    o.prune = true;
    let held = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  namespace: {}\ndata: {{v: '1'}}\n---\n",
        doomed.name
    );
    apply(&client, &format!("{}{held}", configmap("home", "1")), &o).await;
    // A finalizer nobody removes keeps the doomed namespace Terminating (a stuck finalizer).
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &doomed.name);
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"finalizers": ["ferry.test/hold"]}})),
    )
    .await
    .expect("add finalizer");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(&doomed.name, &DeleteParams::background())
        .await
        .expect("delete namespace");
    wait_for("namespace terminating", Duration::from_secs(30), || {
        let namespaces = namespaces.clone();
        let name = doomed.name.clone();
        async move {
            let ns = namespaces.get(&name).await?;
            Ok(ns.metadata.deletion_timestamp.map(|_| ()))
        }
    })
    .await
    .expect("terminating");
    let report = apply(&client, &configmap("home", "1"), &o).await;
    let held_result = report
        .objects
        .iter()
        .find(|r| r.key.name == "held")
        .expect("held reported");
    assert_eq!(held_result.action, Action::Kept, "{:#?}", report);
    assert!(
        held_result
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("terminating"),
        "{:?}",
        held_result.message
    );
    // Left to the namespace: dropped from the inventory, the next run does not retry it.
    let owner = Owner::push("spread", &home.name).expect("owner");
    let stored = inventory::read(&client, &owner)
        .await
        .expect("read")
        .expect("inventory");
    assert!(
        stored
            .inventory
            .objects
            .iter()
            .all(|e| e.key.name != "held")
    );
    // Let the namespace go.
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("remove finalizer");
}

#[tokio::test]
async fn pre_upgrade_inventories_are_not_taken_across_kinds() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "idn-cross").await;
    let old_id = format!("{}/web-v1", ns.name);
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    // A pre-upgrade push app `./web-v1` (source: a local path) owns `push-old`...
    write_old_format(
        &client,
        &ns.name,
        &[("push-old", &old_id)],
        &["push-old"],
        "./web-v1",
    )
    .await;
    // ...a Release `web.v1` (old name `web-v1`) must not adopt it and prune `push-old`.
    let rel = release(&ns.name, "web.v1");
    let mut o = release_opts(&rel, &ns.name);
    o.legacy_app = Some(inventory::Legacy {
        app: "web-v1".into(),
        source_prefix: Some("http://git.example/repo.git//".into()),
        push_takeover: false,
    });
    let report = apply(&client, &configmap("rel-cm", "1"), &o).await;
    assert!(
        report.objects.iter().all(|r| r.action != Action::Pruned),
        "{:#?}",
        report
    );
    assert!(configmap_exists(&client, &ns.name, "push-old").await);
    assert!(
        api.get_opt("ferry-inventory-web-v1")
            .await
            .expect("get")
            .is_some()
    );
    api.delete("ferry-inventory-web-v1", &DeleteParams::default())
        .await
        .expect("delete");

    // The other way round: a pre-upgrade Release's inventory (source: its git URL) is not taken
    // by a push app `ferry apply ./web-v1 --prune`, which would prune the Release's objects.
    write_old_format(
        &client,
        &ns.name,
        &[("release-old", &old_id)],
        &["release-old"],
        "http://git.example/repo.git//web",
    )
    .await;
    let mut push = opts("web-v1", &ns.name);
    push.prune = true;
    let err = pipeline::apply(
        &client,
        manifests(&configmap("push-new", "1")),
        &push,
        &NoProgress,
    )
    .await
    .expect_err("a Release's pre-upgrade inventory is refused to a push app");
    assert!(matches!(err, Error::Refused(_)), "{err}");
    assert!(err.to_string().contains("agent Release"), "{err}");
    assert!(configmap_exists(&client, &ns.name, "release-old").await);
    assert!(!configmap_exists(&client, &ns.name, "push-new").await);
}

#[tokio::test]
async fn deleting_an_app_in_a_terminating_namespace_needs_no_rights_there() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "idn-gone").await;
    // The tenant: a service account with a Role for ConfigMaps in its namespace only.
    let out = std::process::Command::new(testenv_script(&env, "mint-kubeconfig"))
        .args([&ns.name, "tenant"])
        .env("PATH", env.path_env())
        .output()
        .expect("run mint-kubeconfig");
    assert!(
        out.status.success(),
        "mint-kubeconfig: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kubeconfig = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let rbac = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: cm, namespace: {ns}}}\nrules:\n- apiGroups: ['']\n  resources: [configmaps]\n  verbs: ['*']\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: tenant, namespace: {ns}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: cm}}\nsubjects:\n- {{kind: ServiceAccount, name: tenant, namespace: {ns}}}\n",
        ns = ns.name
    );
    apply(&client, &rbac, &opts("rbac-setup", &ns.name)).await;
    let tenant = ferry_testsupport::client_for_kubeconfig(std::path::Path::new(&kubeconfig))
        .await
        .expect("tenant client");
    apply(
        &tenant,
        &configmap("tenant-cm", "1"),
        &opts("tenant", &ns.name),
    )
    .await;
    // A stuck finalizer keeps the namespace Terminating; the tenant's RoleBinding goes first.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    cms.patch(
        "tenant-cm",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"finalizers": ["ferry.test/hold"]}})),
    )
    .await
    .expect("add finalizer");
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(client.clone(), &ns.name);
    bindings
        .delete("tenant", &DeleteParams::default())
        .await
        .expect("delete RoleBinding");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(&ns.name, &DeleteParams::background())
        .await
        .expect("delete namespace");
    let name = ns.name.clone();
    wait_for("namespace terminating", Duration::from_secs(30), || {
        let namespaces = namespaces.clone();
        let name = name.clone();
        async move {
            let ns = namespaces.get(&name).await?;
            Ok(ns.metadata.deletion_timestamp.map(|_| ()))
        }
    })
    .await
    .expect("terminating");
    let delete = |terminating: std::collections::BTreeSet<String>| pipeline::DeleteOptions {
        app: "tenant".into(),
        namespace: Some(ns.name.clone()),
        concurrency: 4,
        terminating,
        ..Default::default()
    };
    // Without knowing the namespace terminates (the tenant may not read Namespaces), the
    // tenant's own identity cannot even read its inventory any more: this is what held a
    // Release's finalizer, and with it the namespace, forever.
    let err = pipeline::delete(&tenant, &delete(Default::default()))
        .await
        .expect_err("the tenant lost its rights");
    assert!(err.to_string().contains("forbidden"), "{err}");
    // Told (the agent reads Namespaces with its own identity), deletion finishes at once and
    // deletes nothing: everything goes with the namespace.
    let report = pipeline::delete(&tenant, &delete([ns.name.clone()].into()))
        .await
        .expect("finishes");
    assert!(report.succeeded(), "{:#?}", report);
    assert!(
        report
            .objects
            .iter()
            .all(|o| o.action != Action::Deleted && o.action != Action::Failed),
        "{:#?}",
        report
    );
    cms.patch(
        "tenant-cm",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("remove finalizer");
}

#[tokio::test]
async fn push_to_release_hand_over_is_explicit() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "idn-handover").await;
    // CI deployed push app `web` first.
    let mut push = opts("web", &ns.name);
    push.prune = true;
    apply(
        &client,
        &format!(
            "{}{}",
            configmap("shared", "1"),
            configmap("push-only", "1")
        ),
        &push,
    )
    .await;
    // A Release `web` declaring the same object does not silently take it over by name...
    let rel = release(&ns.name, "web");
    let mut o = release_opts(&rel, &ns.name);
    let report = pipeline::apply(
        &client,
        manifests(&configmap("shared", "2")),
        &o,
        &NoProgress,
    )
    .await
    .expect("report");
    let shared = report
        .objects
        .iter()
        .find(|r| r.key.name == "shared")
        .expect("shared");
    assert_eq!(shared.action, Action::Failed, "{:#?}", report);
    assert!(
        shared
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("already owned"),
        "{:?}",
        shared.message
    );
    assert!(configmap_exists(&client, &ns.name, "push-only").await);
    // ...only when it asks for the push app (`ferry.dev/adopt-push-app: web`).
    o.legacy_app = Some(inventory::Legacy {
        app: "web".into(),
        source_prefix: None,
        push_takeover: true,
    });
    let report = apply(&client, &configmap("shared", "2"), &o).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let owner = Owner::release(&rel, &ns.name).expect("owner");
    assert_eq!(
        owner_annotation(&api.get("shared").await.expect("shared")),
        Some(owner.id())
    );
    // The push app's leftovers are the Release's now: pruned; its inventory is gone.
    assert_eq!(
        action_of(&report, "ConfigMap", "push-only"),
        Some(Action::Pruned),
        "{:#?}",
        report
    );
    assert!(
        api.get_opt("ferry-inventory-web")
            .await
            .expect("get")
            .is_none()
    );
}

/// An app of 10,000 objects: its inventory (over 1 MiB as JSON) is stored compressed and reads
/// back whole through the real API server; when the app shrinks it is plain JSON again; and a
/// hand-written compressed inventory that inflates without bound (a tenant owns the namespace)
/// is refused naming the ConfigMap, before anything is applied or pruned.
#[tokio::test]
async fn a_large_inventory_is_stored_compressed_and_a_hand_written_bomb_is_refused() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "idn-big").await;
    let owner = Owner::push("big", &ns.name).expect("owner");
    let mut big = Inventory {
        app: "big".into(),
        source: "apps/".into(),
        applied_at: "2026-12-03T11:00:00Z".into(),
        ..Default::default()
    };
    big.objects = (0..10_000)
        .map(|i| inventory::Entry {
            api_version: "v1".into(),
            key: ferry_engine::ObjectKey {
                group: String::new(),
                kind: "ConfigMap".into(),
                namespace: Some(ns.name.clone()),
                name: format!("app-{i:05}-config"),
            },
            fingerprint: Some(format!("{}", 1_000_000 + i)),
        })
        .collect();
    let mut version = None;
    inventory::write(&client, &owner, &big, &mut version)
        .await
        .expect("a 10,000-object inventory is stored");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let stored = cms.get(&owner.inventory_name()).await.expect("get");
    assert!(stored.data.is_none(), "stored compressed, not as JSON");
    assert!(stored.binary_data.is_some());
    let read = inventory::read(&client, &owner)
        .await
        .expect("read")
        .expect("inventory");
    assert_eq!(read.inventory.objects, big.objects);

    let mut small = read.inventory.clone();
    small.objects.truncate(3);
    let mut version = Some(read.version.clone());
    inventory::write(&client, &owner, &small, &mut version)
        .await
        .expect("shrink");
    let stored = cms.get(&owner.inventory_name()).await.expect("get");
    assert!(stored.binary_data.is_none(), "small again: plain JSON");
    assert!(stored.data.expect("data")["inventory.json"].contains("app-00002-config"));

    // The tenant replaces it with 200 MiB of zeros, gzipped (~200 KB).
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1024 * 1024];
    for _ in 0..200 {
        std::io::Write::write_all(&mut gz, &zeros).expect("gzip");
    }
    let bomb = serde_json::json!({
        "data": null,
        "binaryData": {"inventory.json.gz": base64_encode(&gz.finish().expect("gzip"))},
    });
    cms.patch(
        &owner.inventory_name(),
        &PatchParams::default(),
        &Patch::Merge(&bomb),
    )
    .await
    .expect("tenant edit");
    let err = inventory::read(&client, &owner)
        .await
        .expect_err("the bomb is refused");
    let text = err.to_string();
    assert!(text.contains(&owner.inventory_name()), "{text}");
    assert!(text.contains("inflates past"), "{text}");
    // An apply of the app stops there: nothing applied, nothing pruned.
    let mut o = opts("big", &ns.name);
    o.prune = true;
    let err = pipeline::apply(&client, manifests(&configmap("a", "1")), &o, &NoProgress)
        .await
        .expect_err("apply refuses");
    assert!(err.to_string().contains(&owner.inventory_name()), "{err}");
    assert!(cms.get_opt("a").await.expect("get").is_none());
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
