//! The agent's NetworkPolicy for `ferry install` (issue 11, item 14): who may connect to the
//! agent pods. Kept apart from `install.rs` so the install owner only has to push it into the
//! manifest list.
//!
//! Decisions (docs/agent.md, "Network exposure"):
//! - Ingress to the webhook/health port (`http`, 9090) from anywhere: webhook senders (GitHub,
//!   GitLab, a registry) are outside the cluster and arrive through whatever ingress or load
//!   balancer the cluster uses; the kubelet's probes use the same port. Every request there is
//!   verified (signatures, tokens) before it does anything.
//! - Ingress to the metrics port (`metrics`, 9091) only from namespaces labelled
//!   [`METRICS_NAMESPACE_LABEL`]`=true` (label the monitoring namespace): metrics name tenants'
//!   objects and are no business of webhook senders.
//! - Everything else (any other port) is denied.
//! - Egress is not restricted: the agent must reach the API server, and git servers, chart
//!   repositories, registries and token realms that tenants choose at run time, so no fixed
//!   allow-list can be written at install time. The registry/chart/git clients carry their own
//!   controls (credentials only to the origin they belong to; see docs/images.md).

use serde_json::{Value, json};

/// Namespaces with this label set to `"true"` may scrape the agent's metrics.
pub const METRICS_NAMESPACE_LABEL: &str = "ferry.dev/metrics-scraper";

/// The NetworkPolicy selecting the agent pods (`pod_labels` must match the Deployment's pod
/// template labels); ports are the container's `http` and `metrics` port numbers.
pub fn agent_network_policy(
    namespace: &str,
    pod_labels: &Value,
    http_port: u16,
    metrics_port: u16,
) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "ferry-agent", "namespace": namespace, "labels": pod_labels},
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ferry-agent"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    // Webhooks, health probes, /v1/cert.pem: from anywhere.
                    "ports": [{"protocol": "TCP", "port": http_port}]
                },
                {
                    "from": [{"namespaceSelector": {"matchLabels": {METRICS_NAMESPACE_LABEL: "true"}}}],
                    "ports": [{"protocol": "TCP", "port": metrics_port}]
                }
            ]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_from_anywhere_metrics_from_labelled_namespaces_only() {
        let labels = json!({"app.kubernetes.io/name": "ferry-agent"});
        let policy = agent_network_policy("ferry-system", &labels, 9090, 9091);
        assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
        let rules = policy["spec"]["ingress"].as_array().expect("rules");
        assert_eq!(rules.len(), 2);
        // The webhook port has no `from`: open to all.
        assert!(rules[0].get("from").is_none());
        assert_eq!(rules[0]["ports"][0]["port"], 9090);
        // The metrics port only from labelled namespaces; never a rule with no `from` on it.
        assert_eq!(rules[1]["ports"][0]["port"], 9091);
        assert_eq!(
            rules[1]["from"][0]["namespaceSelector"]["matchLabels"][METRICS_NAMESPACE_LABEL],
            "true"
        );
        assert_eq!(
            policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
            "ferry-agent"
        );
    }
}
