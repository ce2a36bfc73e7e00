//! The shipped NetworkPolicy (issue 11, item 14) against the real API server: `ferry install
//! --export` contains it, the API server accepts it (server-side dry run), it selects the agent
//! pods, opens the webhook port to everyone and the metrics port only to labelled namespaces,
//! and the ports it names are the ones the Deployment and the agent's defaults use. (The
//! testenv has no CNI that enforces NetworkPolicies, so the connection attempt itself cannot
//! be made here; that /metrics is not on the webhook port at all is shown against the real
//! agent in crates/ferry-agent/tests/attack_webhook.rs.)

use std::process::Command;

use clap::Parser;
use ferry_agent::AgentOptions;
use ferry_testsupport::{TestEnv, TestNamespace};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, PostParams};
use serde_json::Value;

#[derive(Parser)]
struct AgentCli {
    #[command(flatten)]
    options: AgentOptions,
}

#[tokio::test]
async fn install_ships_a_network_policy_the_api_server_accepts() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "netpol").await;
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["install", "--export", "--namespace", &ns.name])
        .env("KUBECONFIG", env.kubeconfig())
        .output()
        .expect("run ferry");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8_lossy(&out.stdout).to_string();
    let docs: Vec<Value> =
        serde_saphyr::from_slice_multiple(yaml.as_bytes()).expect("install YAML parses");
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("install has no {kind}"))
    };
    let policy = find("NetworkPolicy");
    let deployment = find("Deployment");

    // The real API server validates it.
    let typed: NetworkPolicy = serde_json::from_value(policy.clone()).expect("typed policy");
    let api: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns.name);
    api.create(
        &PostParams {
            dry_run: true,
            ..PostParams::default()
        },
        &typed,
    )
    .await
    .expect("the API server accepts the NetworkPolicy");

    // It selects the agent's pods.
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let selector = policy["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    for (k, v) in selector {
        assert_eq!(&pod_labels[k], v, "pod label {k}");
    }
    // Ingress only (egress stays open; see docs/agent.md), two rules.
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress"])
    );
    let ports = &deployment["spec"]["template"]["spec"]["containers"][0]["ports"];
    let port = |name: &str| {
        ports
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("container port {name}"))
    };
    let (http, metrics) = (port("http"), port("metrics"));
    assert_ne!(http, metrics);
    let rules = policy["spec"]["ingress"].as_array().expect("ingress rules");
    for rule in rules {
        let rule_ports: Vec<u64> = rule["ports"]
            .as_array()
            .expect("every rule names its ports")
            .iter()
            .filter_map(|p| p["port"].as_u64())
            .collect();
        if rule_ports.contains(&metrics) {
            let from = rule["from"].as_array().expect("metrics rule has `from`");
            assert!(!from.is_empty());
            for peer in from {
                assert!(
                    peer["namespaceSelector"]["matchLabels"].is_object(),
                    "metrics only from labelled namespaces: {peer}"
                );
            }
        }
    }
    assert!(
        rules.iter().any(|r| r.get("from").is_none()
            && r["ports"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["port"] == http))),
        "webhook port open to all"
    );
    // The agent's defaults listen where the policy and the Deployment say.
    let defaults = AgentCli::parse_from(["ferry-agent"]).options;
    assert_eq!(u64::from(defaults.http_addr.port()), http);
    assert_eq!(u64::from(defaults.metrics_addr.port()), metrics);
}
