//! Push-mode bad input and faults against the real testenv: malformed YAML, missing kind,
//! unknown kinds, missing namespaces, RBAC denials, an unreachable API server, interrupted
//! applies, empty sources with prune, and two apps claiming one object.

mod push_common;

use std::process::Command;

use ferry_engine::pipeline;
use ferry_engine::progress::NoProgress;
use ferry_engine::report::Action;
use ferry_testsupport::{TestEnv, TestNamespace, client_for_kubeconfig};
use push_common::*;

#[tokio::test]
async fn malformed_yaml_names_file_and_line() {
    let (_dir, result) = render_dir(&[
        ("ok.yaml", &configmap("fine", "1")),
        (
            "sub/broken.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\ndata:\n  key: [unclosed\n",
        ),
    ]);
    let err = result.expect_err("malformed YAML must fail").to_string();
    assert!(err.contains("sub/broken.yaml"), "{err}");
    assert!(
        err.contains("line 1"),
        "should name a line in the second document: {err}"
    );
}

#[tokio::test]
async fn document_without_kind_or_api_version_is_named() {
    let (_dir, result) = render_dir(&[(
        "app.yml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nmetadata:\n  name: b\ndata: {}\n",
    )]);
    let err = result.expect_err("must fail").to_string();
    assert!(
        err.contains("app.yml")
            && err.contains("document 2")
            && err.contains("apiVersion and kind"),
        "{err}"
    );
}

#[tokio::test]
async fn unknown_kind_names_file_and_document_and_applies_nothing() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "push-unknown").await;
    let (_dir, result) = render_dir(&[
        ("a.yaml", &configmap("before", "1")),
        (
            "b.yaml",
            "apiVersion: example.invalid/v1\nkind: Gizmo\nmetadata:\n  name: g\n",
        ),
    ]);
    let manifests = result.expect("renders");
    let err = pipeline::apply(&client, manifests, &opts("unknown", &ns.name), &NoProgress)
        .await
        .expect_err("unknown kind must fail")
        .to_string();
    assert!(
        err.contains("b.yaml") && err.contains("document 1") && err.contains("Gizmo"),
        "{err}"
    );
    assert!(
        !configmap_exists(&client, &ns.name, "before").await,
        "nothing may be applied"
    );
}

#[tokio::test]
async fn missing_namespace_is_a_clear_error_unless_in_the_set() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "push-nsmissing").await;
    let absent = format!("{}-absent", ns.name);
    let yaml =
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: {absent}\n");
    let err = pipeline::apply(
        &client,
        manifests(&yaml),
        &opts("nsm", &ns.name),
        &NoProgress,
    )
    .await
    .expect_err("missing namespace")
    .to_string();
    assert!(
        err.contains(&absent) && err.contains("does not exist"),
        "{err}"
    );
    // With the Namespace in the same source it is created first.
    let with_ns =
        format!("{yaml}---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {absent}\n");
    let report = pipeline::apply(
        &client,
        manifests(&with_ns),
        &opts("nsm", &ns.name),
        &NoProgress,
    )
    .await
    .expect("apply");
    assert!(report.succeeded(), "{:#?}", report);
    assert!(configmap_exists(&client, &absent, "c").await);
    pipeline::delete_app(&client, "nsm", Some(&ns.name), false, 4)
        .await
        .expect("cleanup");
}

#[tokio::test]
async fn rbac_denial_names_verb_resource_and_identity() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "push-rbac").await;
    let out = Command::new(testenv_script(&env, "mint-kubeconfig"))
        .args([&ns.name, "deployer"])
        .env("PATH", env.path_env())
        .output()
        .expect("run mint-kubeconfig");
    assert!(
        out.status.success(),
        "mint-kubeconfig: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kubeconfig = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // The tenant may manage ConfigMaps (for the inventory and its objects) but not Deployments.
    let rbac = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: cm-only, namespace: {ns}}}\nrules:\n- apiGroups: ['']\n  resources: [configmaps]\n  verbs: ['*']\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: cm-only, namespace: {ns}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: cm-only}}\nsubjects:\n- {{kind: ServiceAccount, name: deployer, namespace: {ns}}}\n",
        ns = ns.name
    );
    let admin = pipeline::apply(
        &client,
        manifests(&rbac),
        &opts("rbac-setup", &ns.name),
        &NoProgress,
    )
    .await
    .expect("rbac setup");
    assert!(admin.succeeded(), "{:#?}", admin);
    let tenant = client_for_kubeconfig(std::path::Path::new(&kubeconfig))
        .await
        .expect("tenant client");
    let yaml = format!(
        "{}{}",
        configmap("allowed", "1"),
        deployment("denied", "registry.k8s.io/pause:3.10")
    );
    let report = pipeline::apply(
        &tenant,
        manifests(&yaml),
        &opts("tenant", &ns.name),
        &NoProgress,
    )
    .await
    .expect("apply runs");
    let denied = report
        .objects
        .iter()
        .find(|r| r.key.kind == "Deployment")
        .expect("deployment result");
    assert_eq!(denied.action, Action::Failed);
    let message = denied.message.clone().unwrap_or_default();
    assert!(
        message.contains(&format!("system:serviceaccount:{}:deployer", ns.name)),
        "{message}"
    );
    assert!(
        message.contains("patch") && message.contains("deployments"),
        "{message}"
    );
    let allowed = report
        .objects
        .iter()
        .find(|r| r.key.name == "allowed")
        .expect("cm result");
    assert_eq!(allowed.action, Action::Created);
}

#[tokio::test]
async fn unreachable_api_server_is_a_clear_error_and_leaves_the_inventory_alone() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "push-down").await;
    let o = opts("down", &ns.name);
    pipeline::apply(&client, manifests(&configmap("a", "1")), &o, &NoProgress)
        .await
        .expect("apply");
    let inventory_before = get(
        &client,
        "v1",
        "ConfigMap",
        "configmaps",
        Some(&ns.name),
        "ferry-inventory-down",
    )
    .await
    .expect("inventory");

    // Same credentials, but a port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let kubeconfig = kube::config::Kubeconfig::read_from(env.kubeconfig()).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    config.cluster_url = format!("https://127.0.0.1:{port}").parse().expect("url");
    let dead = kube::Client::try_from(config).expect("client");
    let err = pipeline::apply(&dead, manifests(&configmap("b", "1")), &o, &NoProgress)
        .await
        .expect_err("unreachable")
        .to_string();
    assert!(err.contains("cannot reach the API server"), "{err}");
    let inventory_after = get(
        &client,
        "v1",
        "ConfigMap",
        "configmaps",
        Some(&ns.name),
        "ferry-inventory-down",
    )
    .await
    .expect("inventory");
    assert_eq!(inventory_before.data, inventory_after.data);
}

#[tokio::test]
async fn interrupted_apply_keeps_inventory_and_rerun_completes_and_prunes() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "push-rerun").await;
    let mut o = opts("rerun", &ns.name);
    o.prune = true;
    pipeline::apply(&client, manifests(&configmap("old", "1")), &o, &NoProgress)
        .await
        .expect("v1");
    // v2 drops "old" and creates "fresh" but fails half-way on an invalid object (the API
    // server rejects it): nothing is pruned and "fresh" is already in the widened inventory.
    let broken = format!(
        "{}apiVersion: v1\nkind: Service\nmetadata:\n  name: broken\nspec:\n  ports: [{{port: 99999}}]\n",
        configmap("fresh", "1")
    );
    let report = pipeline::apply(&client, manifests(&broken), &o, &NoProgress)
        .await
        .expect("v2 runs");
    assert!(!report.succeeded());
    assert!(
        report
            .objects
            .iter()
            .any(|r| r.key.name == "broken" && r.action == Action::Failed)
    );
    assert!(report.prune_skipped.is_some());
    let inventory = get(
        &client,
        "v1",
        "ConfigMap",
        "configmaps",
        Some(&ns.name),
        "ferry-inventory-rerun",
    )
    .await
    .expect("inventory");
    let text = inventory.data["data"]["inventory.json"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        text.contains("\"fresh\"") && text.contains("\"old\""),
        "{text}"
    );
    // The fixed rerun drops both "old" and "fresh": both are pruned, the inventory narrows.
    let fixed = configmap("final", "1");
    let report = pipeline::apply(&client, manifests(&fixed), &o, &NoProgress)
        .await
        .expect("v3");
    assert!(report.succeeded(), "{:#?}", report);
    let mut pruned: Vec<_> = report
        .objects
        .iter()
        .filter(|r| r.action == Action::Pruned)
        .map(|r| r.key.name.clone())
        .collect();
    pruned.sort();
    assert_eq!(pruned, vec!["fresh".to_string(), "old".to_string()]);
    let inventory = get(
        &client,
        "v1",
        "ConfigMap",
        "configmaps",
        Some(&ns.name),
        "ferry-inventory-rerun",
    )
    .await
    .expect("inventory");
    let text = inventory.data["data"]["inventory.json"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        text.contains("\"final\"") && !text.contains("\"old\""),
        "{text}"
    );
}

#[tokio::test]
async fn empty_source_with_prune_is_refused_without_allow_empty() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "push-empty").await;
    let mut o = opts("empty", &ns.name);
    pipeline::apply(
        &client,
        manifests(&configmap("precious", "1")),
        &o,
        &NoProgress,
    )
    .await
    .expect("apply");
    o.prune = true;
    let (_dir, rendered) = render_dir(&[("README.md", "no manifests here")]);
    let err = pipeline::apply(&client, rendered.expect("renders"), &o, &NoProgress)
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("rendered no objects") && err.contains("--allow-empty"),
        "{err}"
    );
    assert!(configmap_exists(&client, &ns.name, "precious").await);
    o.allow_empty = true;
    let report = pipeline::apply(&client, Vec::new(), &o, &NoProgress)
        .await
        .expect("allowed");
    assert_eq!(report.count(Action::Pruned), 1, "{:#?}", report);
}

#[tokio::test]
async fn second_app_claiming_an_object_fails_and_names_the_owner() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "push-claim").await;
    let yaml = configmap("contested", "1");
    pipeline::apply(
        &client,
        manifests(&yaml),
        &opts("first", &ns.name),
        &NoProgress,
    )
    .await
    .expect("first");
    let report = pipeline::apply(
        &client,
        manifests(&configmap("contested", "2")),
        &opts("second", &ns.name),
        &NoProgress,
    )
    .await
    .expect("second runs");
    let result = &report.objects[0];
    assert_eq!(result.action, Action::Failed);
    let message = result.message.clone().unwrap_or_default();
    assert!(message.contains(&format!("{}/first", ns.name)), "{message}");
    // The second app's prune/delete never touches it either.
    let deleted = pipeline::delete_app(&client, "second", Some(&ns.name), false, 4)
        .await
        .expect("delete second");
    assert_eq!(deleted.count(Action::Deleted), 0, "{:#?}", deleted);
    let live = get(
        &client,
        "v1",
        "ConfigMap",
        "configmaps",
        Some(&ns.name),
        "contested",
    )
    .await
    .expect("still there");
    assert_eq!(live.data["data"]["value"], "1");
}

/// A TCP proxy to the API server that cuts every connection once `limit` bytes went upstream:
/// the API server "goes away" in the middle of an apply.
async fn cutting_proxy(
    upstream: String,
    limit: usize,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    let sent = Arc::new(AtomicUsize::new(0));
    let cut = Arc::new(AtomicBool::new(false));
    let cut_flag = cut.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if cut.load(Ordering::SeqCst) {
                continue; // refuse: dropped immediately
            }
            let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let (sent, cut) = (sent.clone(), cut.clone());
            tokio::spawn(async move {
                let (mut ri, mut wi) = inbound.split();
                let (mut ro, mut wo) = outbound.split();
                let up = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match ri.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if sent.fetch_add(n, Ordering::SeqCst) + n > limit {
                            cut.store(true, Ordering::SeqCst);
                        }
                        if cut.load(Ordering::SeqCst) || wo.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let down = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match ro.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if cut.load(Ordering::SeqCst) || wi.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                // Whichever direction ends first (or the cut) closes both sides.
                tokio::select! { _ = up => {}, _ = down => {} }
            });
        }
    });
    (port, cut_flag)
}

#[tokio::test]
async fn api_server_lost_mid_apply_leaves_a_consistent_inventory_for_the_rerun() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "push-cut").await;
    let mut o = opts("cut", &ns.name);
    o.prune = true;
    o.concurrency = 4;
    let v1: String = (0..5).map(|i| configmap(&format!("v1-{i}"), "1")).collect();
    pipeline::apply(&client, manifests(&v1), &o, &NoProgress)
        .await
        .expect("v1");

    let upstream = env
        .var("FERRY_APISERVER_URL")
        .trim_start_matches("https://")
        .to_string();
    let (port, cut) = cutting_proxy(upstream, 24 * 1024).await;
    let kubeconfig = kube::config::Kubeconfig::read_from(env.kubeconfig()).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    config.cluster_url = format!("https://127.0.0.1:{port}").parse().expect("url");
    let flaky = kube::Client::try_from(config).expect("client");
    let v2: String = (0..60)
        .map(|i| configmap(&format!("v2-{i}"), &"x".repeat(200)))
        .collect();
    let outcome = pipeline::apply(&flaky, manifests(&v2), &o, &NoProgress).await;
    assert!(
        cut.load(std::sync::atomic::Ordering::SeqCst),
        "the proxy never cut: raise the object count"
    );
    match &outcome {
        Ok(report) => {
            assert!(
                !report.succeeded(),
                "apply through a dead server must fail: {:#?}",
                report
            );
            assert!(report.prune_skipped.is_some() || report.count(Action::Pruned) == 0);
            let failed = report
                .objects
                .iter()
                .find(|r| r.action == Action::Failed)
                .expect("a failure");
            assert!(
                failed
                    .message
                    .as_deref()
                    .unwrap_or("")
                    .contains("API server"),
                "{:?}",
                failed.message
            );
        }
        Err(err) => assert!(
            err.to_string().contains("API server") || err.to_string().contains("inventory"),
            "{err}"
        ),
    }
    // Invariant: every live object carrying the app's label is in the inventory (or nothing
    // was written), so no object the failed run created can leak.
    let inventory = get(
        &client,
        "v1",
        "ConfigMap",
        "configmaps",
        Some(&ns.name),
        "ferry-inventory-cut",
    )
    .await
    .expect("inventory");
    let text = inventory.data["data"]["inventory.json"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), &ns.name);
    let labelled = api
        .list(&kube::api::ListParams::default().labels("ferry.dev/app=cut"))
        .await
        .expect("list");
    for cm in &labelled.items {
        let name = cm.metadata.name.clone().unwrap_or_default();
        assert!(
            text.contains(&format!("\"{name}\"")),
            "{name} exists but is not in the inventory: {text}"
        );
    }
    // Nothing from v1 was pruned by the failed run.
    assert!(configmap_exists(&client, &ns.name, "v1-0").await);

    // The rerun (server back) completes v2 and prunes v1 and nothing else.
    let report = pipeline::apply(&client, manifests(&v2), &o, &NoProgress)
        .await
        .expect("rerun");
    assert!(report.succeeded(), "{:#?}", report);
    assert_eq!(report.count(Action::Pruned), 5, "{:#?}", report);
    let labelled = api
        .list(&kube::api::ListParams::default().labels("ferry.dev/app=cut"))
        .await
        .expect("list");
    let mut names: Vec<String> = labelled
        .items
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    names.sort();
    let mut expected: Vec<String> = (0..60).map(|i| format!("v2-{i}")).collect();
    expected.sort();
    assert_eq!(names, expected);
}
