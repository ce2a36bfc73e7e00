//! Tests of the test environment's real node (`testenv/node-up`): pods that tolerate its taint
//! really run there (containerd + runc pull the image from the test registry and execute it),
//! their exit codes and logs come back through the kubelet, the kubelet really probes
//! readiness, and pods that do not tolerate the taint stay on the kwok nodes.

use std::time::{Duration, Instant};

use ferry_testsupport::{TestEnv, TestNamespace, unique_name, wait_for};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{LogParams, PostParams};
use serde_json::{Value, json};

/// The real node's name and the testbox image, or a panic saying how to get them: these tests
/// fail (never skip) when the node is off.
fn real_node(env: &TestEnv) -> (String, String) {
    let node = env.vars.get("FERRY_REAL_NODE").cloned();
    let image = env.vars.get("FERRY_TESTBOX_IMAGE").cloned();
    match (node, image) {
        (Some(node), Some(image)) => (node, image),
        _ => panic!(
            "the testenv has no real node (FERRY_REAL_NODE/FERRY_TESTBOX_IMAGE missing from {}/env): \
             run testenv/node-up, or testenv/up without FERRY_TESTENV_REAL_NODE=0",
            env.dir.display()
        ),
    }
}

/// A pod for the real node: the toleration and node selector that let it (and only it) land
/// there, and the restricted securityContext an agent pod would run with.
fn real_node_pod(name: &str, image: &str, args: &[&str], extra: Value) -> Pod {
    let mut container = json!({
        "name": "main",
        "image": image,
        "args": args,
        "securityContext": {
            "runAsUser": 65532,
            "runAsNonRoot": true,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] }
        }
    });
    if let (Some(c), Some(e)) = (container.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name },
        "spec": {
            "nodeSelector": { "ferry.dev/real-node": "true" },
            "tolerations": [
                { "key": "ferry.dev/real-node", "operator": "Exists", "effect": "NoSchedule" }
            ],
            "restartPolicy": "Never",
            "containers": [container]
        }
    }))
    .expect("pod JSON matches the Pod schema")
}

fn phase(pod: &Pod) -> Option<String> {
    pod.status.as_ref().and_then(|s| s.phase.clone())
}

fn exit_code(pod: &Pod) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

async fn wait_for_phase(pods: &Api<Pod>, name: &str, want: &str) -> Pod {
    wait_for(
        &format!("pod {name} in phase {want}"),
        Duration::from_secs(90),
        || {
            let pods = pods.clone();
            let name = name.to_string();
            let want = want.to_string();
            async move {
                let pod = pods.get(&name).await?;
                Ok((phase(&pod).as_deref() == Some(want.as_str())).then_some(pod))
            }
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err:#}"))
}

#[tokio::test]
async fn pod_on_the_real_node_runs_and_its_logs_and_exit_code_come_back() {
    let env = TestEnv::get();
    let (node, image) = real_node(&env);
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "real-node-run").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);

    // a token only this run prints: the logs cannot come from anywhere else
    let token = unique_name("token");
    pods.create(
        &PostParams::default(),
        &real_node_pod("ok", &image, &["say", "hello", &token], json!({})),
    )
    .await
    .expect("create pod ok");
    pods.create(
        &PostParams::default(),
        &real_node_pod(
            "fails",
            &image,
            &["say", "-exit", "7", "failing"],
            json!({}),
        ),
    )
    .await
    .expect("create pod fails");

    let ok = wait_for_phase(&pods, "ok", "Succeeded").await;
    assert_eq!(
        ok.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(node.as_str())
    );
    assert_eq!(exit_code(&ok), Some(0));
    let logs = pods
        .logs("ok", &LogParams::default())
        .await
        .expect("kubectl logs equivalent through the kubelet");
    assert!(
        logs.lines().any(|l| l == format!("hello {token}")),
        "logs: {logs}"
    );
    // the securityContext and the in-cluster environment the kubelet provides
    assert!(
        logs.contains("uid=65532 hostname=ok kubernetes_service_host=10.96.0.1 sa_token=true"),
        "logs: {logs}"
    );

    let failed = wait_for_phase(&pods, "fails", "Failed").await;
    assert_eq!(exit_code(&failed), Some(7));
}

#[tokio::test]
async fn the_kubelet_probes_readiness_and_untolerated_pods_stay_on_kwok() {
    let env = TestEnv::get();
    let (node, image) = real_node(&env);
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "real-node-probe").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);

    let start = Instant::now();
    pods.create(
        &PostParams::default(),
        &real_node_pod(
            "web",
            &image,
            &["serve", "-addr", ":8080"],
            json!({
                "ports": [{ "containerPort": 8080 }],
                "readinessProbe": {
                    "httpGet": { "path": "/readyz", "port": 8080 },
                    "periodSeconds": 1
                }
            }),
        ),
    )
    .await
    .expect("create pod web");
    wait_for("pod web Ready", Duration::from_secs(90), || {
        let pods = pods.clone();
        async move {
            let pod = pods.get("web").await?;
            let ready = pod
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            Ok(ready.then_some(()))
        }
    })
    .await
    .unwrap_or_else(|err| panic!("{err:#}"));
    println!(
        "pod web: created to Ready on {node} in {:?}",
        start.elapsed()
    );
    // the program logs every request: the kubelet's prober made one
    let logs = pods
        .logs("web", &LogParams::default())
        .await
        .expect("logs of web");
    assert!(
        logs.lines()
            .any(|l| l.starts_with("probe GET /readyz kube-probe/")),
        "no probe request in the logs: {logs}"
    );

    // no toleration: the scheduler never picks the tainted real node
    let plain: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "plain" },
        "spec": { "containers": [{ "name": "main", "image": image }] }
    }))
    .expect("pod JSON");
    pods.create(&PostParams::default(), &plain)
        .await
        .expect("create pod plain");
    let scheduled_to = wait_for("pod plain scheduled", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move {
            let pod = pods.get("plain").await?;
            Ok(pod.spec.and_then(|s| s.node_name))
        }
    })
    .await
    .unwrap_or_else(|err| panic!("{err:#}"));
    assert_ne!(
        scheduled_to, node,
        "an untolerated pod landed on the real node"
    );
    assert!(
        scheduled_to.starts_with("kwok-node-"),
        "scheduled to {scheduled_to}"
    );
}
