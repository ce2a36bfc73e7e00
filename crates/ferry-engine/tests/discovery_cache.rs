//! A discovery cache shared across applies (the agent's case), against the real testenv: reused
//! while nothing suggests it is stale, refreshed for kinds served since, for sources with CRDs,
//! and before pruning inventory entries of kinds it does not know.

mod push_common;

use std::sync::Arc;

use ferry_engine::cluster::discovery::DiscoveryCache;
use ferry_engine::pipeline::{self, ApplyOptions};
use ferry_engine::progress::NoProgress;
use ferry_engine::report::Action;
use ferry_testsupport::{TestEnv, TestNamespace};
use push_common::*;

fn cached(app: &str, ns: &str, cache: &Arc<DiscoveryCache>) -> ApplyOptions {
    let mut o = opts(app, ns);
    o.discovery = Some(cache.clone());
    o.prune = true;
    o
}

#[tokio::test]
async fn shared_discovery_is_reused_and_refreshed_when_stale() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "discovery-cache").await;
    let suffix = &ns.name[ns.name.len() - 6..];
    let group = format!("{suffix}.cache.ferry.test");
    let crd = format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.{group}
spec:
  group: {group}
  scope: Namespaced
  names: {{kind: Gadget, plural: gadgets, singular: gadget, listKind: GadgetList}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#
    );
    let gadget = format!("apiVersion: {group}/v1\nkind: Gadget\nmetadata:\n  name: g1\n---\n");
    let cache = Arc::new(DiscoveryCache::default());
    // Filled before the CRD exists; used again only for the prune check at the end.
    let stale = Arc::new(DiscoveryCache::default());

    let apply = |app: &'static str, yaml: String, o: ApplyOptions| {
        let client = client.clone();
        async move {
            let report = pipeline::apply(&client, manifests(&yaml), &o, &NoProgress)
                .await
                .unwrap_or_else(|err| panic!("apply {app}: {err}"));
            assert!(report.succeeded(), "{:#?}", report);
            report
        }
    };

    let first = apply(
        "plain",
        configmap("plain", "1"),
        cached("plain", &ns.name, &cache),
    )
    .await;
    apply(
        "gadgets",
        configmap("g-config", "1"),
        cached("gadgets", &ns.name, &stale),
    )
    .await;
    assert_eq!((cache.refreshes(), stale.refreshes()), (1, 1));
    let again = apply(
        "plain",
        configmap("plain", "1"),
        cached("plain", &ns.name, &cache),
    )
    .await;
    assert_eq!(
        cache.refreshes(),
        1,
        "an unchanged kind set reuses discovery"
    );
    assert_eq!(
        again.requests.reads + 2,
        first.requests.reads,
        "the reuse saves the two discovery requests"
    );

    // A CRD installed by someone else: the cache does not know Gadget yet, refreshes once.
    apply("crd", crd.clone(), opts("crd", &ns.name)).await;
    apply(
        "gadgets",
        format!("{gadget}{}", configmap("g-config", "1")),
        cached("gadgets", &ns.name, &cache),
    )
    .await;
    assert_eq!(cache.refreshes(), 2, "unknown kind refreshes discovery");
    assert!(
        get(
            &client,
            &format!("{group}/v1"),
            "Gadget",
            "gadgets",
            Some(&ns.name),
            "g1"
        )
        .await
        .is_some()
    );

    // A source with CRDs always gets a fresh discovery.
    apply("crd", crd, cached("crd", &ns.name, &cache)).await;
    assert_eq!(
        cache.refreshes(),
        3,
        "a source with CRDs refreshes discovery"
    );

    // Pruning with a cache that predates the CRD: the Gadget entry must not be mistaken for a
    // kind the cluster no longer serves.
    let pruned = apply(
        "gadgets",
        configmap("g-config", "1"),
        cached("gadgets", &ns.name, &stale),
    )
    .await;
    assert_eq!(stale.refreshes(), 2, "{:#?}", pruned);
    assert!(
        pruned
            .objects
            .iter()
            .any(|o| o.key.kind == "Gadget" && o.action == Action::Pruned),
        "{:#?}",
        pruned
    );

    let deleted = pipeline::delete_app(&client, "crd", Some(&ns.name), false, 4)
        .await
        .expect("delete crd");
    assert!(deleted.succeeded(), "{:#?}", deleted);
}
