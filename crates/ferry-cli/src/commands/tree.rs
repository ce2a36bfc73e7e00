//! `ferry tree release NAME`: what a Release manages, from its inventory, with the health of
//! every object, and below each workload what it owns through owner references (ReplicaSets,
//! Jobs, Pods), like `flux tree kustomization` plus `kubectl tree`.

use std::collections::BTreeMap;

use anyhow::Result;
use clap::Args;
use ferry_api::common::{READY, find_condition};
use ferry_engine::health::{self, Health, HealthState};
use ferry_engine::ownership::ReleaseRef;
use ferry_engine::pipeline;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::commands::history::{HistoryKind, find_release};
use crate::output::{EXIT_CHANGES, EXIT_OK, OutputFormat, object_name, print_data, write_stdout};

pub const TREE_HELP: &str = "\
Examples:
  ferry tree release web -n team-a
  ferry tree release web -n team-a -o wide     # also ReplicaSets scaled to zero
  ferry tree release web -n team-a -o json | jq '.. | objects | select(.health.state? == \"failed\")'

The objects are the Release's inventory (what its last successful sync applied), each with its
health as `ferry status` assesses it; below Deployments, StatefulSets, DaemonSets, CronJobs and
Jobs come the ReplicaSets, Jobs and Pods they own (owner references), read with your own rights.

Exit codes: 0 every object healthy, 1 some object not healthy, 2 error.";

#[derive(Debug, Args)]
pub struct TreeArgs {
    /// The kind: release.
    #[arg(value_enum)]
    pub kind: HistoryKind,
    /// The Release.
    #[arg(value_name = "NAME", add = crate::completion::release_names())]
    pub name: String,
    // Filled from the global -n/--namespace (`Cli::resolve_namespaces`).
    #[arg(skip)]
    pub namespace: Option<String>,
}

/// One node of the tree.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub group: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub health: Health,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Node>,
}

/// Children listed once per namespace, grouped by their owner (`Kind/name`).
#[derive(Default)]
struct Owned {
    by_owner: BTreeMap<(String, String), Vec<Node>>,
}

impl Owned {
    fn add<K: serde::Serialize + kube::Resource<DynamicType = ()>>(
        &mut self,
        group: &str,
        kind: &str,
        object: &K,
        keep: bool,
    ) {
        if !keep {
            return;
        }
        let meta = object.meta();
        let value = serde_json::to_value(object).unwrap_or_default();
        for owner in meta.owner_references.iter().flatten() {
            self.by_owner
                .entry((owner.kind.clone(), owner.name.clone()))
                .or_default()
                .push(Node {
                    group: group.to_string(),
                    kind: kind.to_string(),
                    namespace: meta.namespace.clone(),
                    name: meta.name.clone().unwrap_or_default(),
                    health: health::assess(group, kind, &value),
                    children: Vec::new(),
                });
        }
    }

    /// Attach what `node` owns, recursively (Deployment → ReplicaSet → Pod, CronJob → Job → Pod).
    fn attach(&mut self, node: &mut Node, depth: usize) {
        if depth > 4 {
            return;
        }
        if let Some(mut children) = self
            .by_owner
            .remove(&(node.kind.clone(), node.name.clone()))
        {
            for child in &mut children {
                self.attach(child, depth + 1);
            }
            children.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
            node.children = children;
        }
    }
}

const OWNERS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "CronJob",
    "Job",
    "ReplicaSet",
];

async fn owned_in(client: &kube::Client, namespace: &str, wide: bool) -> Result<Owned> {
    let mut owned = Owned::default();
    let params = ListParams::default();
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    for rs in replica_sets.list(&params).await?.items {
        // A Deployment keeps its old ReplicaSets scaled to zero; only -o wide shows them.
        let active = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1) > 0
            || rs.status.as_ref().is_some_and(|s| s.replicas > 0);
        owned.add("apps", "ReplicaSet", &rs, wide || active);
    }
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    for job in jobs.list(&params).await?.items {
        owned.add("batch", "Job", &job, true);
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    for pod in pods.list(&params).await?.items {
        owned.add("", "Pod", &pod, true);
    }
    Ok(owned)
}

pub async fn run(global: &GlobalArgs, args: &TreeArgs) -> Result<u8> {
    let found = find_release(global, args.namespace.as_deref(), &args.name).await?;
    let target = found
        .release
        .spec
        .target_namespace
        .clone()
        .unwrap_or_else(|| found.namespace.clone());
    let report = pipeline::status_of(
        &found.client,
        "",
        Some(&ReleaseRef {
            namespace: found.namespace.clone(),
            name: args.name.clone(),
        }),
        Some(&target),
        16,
    )
    .await?;
    let wide = global.output == OutputFormat::Wide;
    let mut owned_by_namespace: BTreeMap<String, Owned> = BTreeMap::new();
    let mut nodes = Vec::new();
    for object in &report.objects {
        let mut node = Node {
            group: object.key.group.clone(),
            kind: object.key.kind.clone(),
            namespace: object.key.namespace.clone(),
            name: object.key.name.clone(),
            health: object.health.clone(),
            children: Vec::new(),
        };
        if let Some(ns) = &object.key.namespace
            && OWNERS.contains(&object.key.kind.as_str())
            && object.health.state != HealthState::NotFound
        {
            if !owned_by_namespace.contains_key(ns) {
                let owned = owned_in(&found.client, ns, wide)
                    .await
                    .unwrap_or_else(|err| {
                        eprintln!(
                            "warning: cannot list what workloads own in namespace {ns}: {err}"
                        );
                        Owned::default()
                    });
                owned_by_namespace.insert(ns.clone(), owned);
            }
            if let Some(owned) = owned_by_namespace.get_mut(ns) {
                owned.attach(&mut node, 0);
            }
        }
        nodes.push(node);
    }
    let status = found.release.status.clone().unwrap_or_default();
    let ready = find_condition(&status.conditions, READY);
    let root = serde_json::json!({
        "kind": "Release",
        "namespace": found.namespace,
        "name": args.name,
        "ready": ready.map_or("Unknown", |c| c.status.as_str()),
        "message": ready.map(|c| c.message.clone()).unwrap_or_default(),
        "revision": status.last_applied_revision,
        "objects": nodes,
    });
    let healthy = all_healthy(&nodes);
    match global.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            print_data(global.output, &root)?;
        }
        OutputFormat::Name => {
            let mut out = String::new();
            names(&nodes, &mut out);
            write_stdout(&out)?;
        }
        OutputFormat::Human | OutputFormat::Wide | OutputFormat::Markdown => {
            let mut out = format!(
                "Release {}/{}  {}  {}\n",
                found.namespace,
                args.name,
                match ready {
                    Some(c) if c.status == "True" => "Ready".to_string(),
                    Some(c) => format!("NotReady: {}", c.message),
                    None => "Unknown".to_string(),
                },
                status
                    .last_applied_revision
                    .as_deref()
                    .unwrap_or("(never applied)")
            );
            draw(&nodes, "", &mut out);
            write_stdout(&out)?;
        }
    }
    Ok(if healthy { EXIT_OK } else { EXIT_CHANGES })
}

fn all_healthy(nodes: &[Node]) -> bool {
    nodes
        .iter()
        .all(|n| n.health.state == HealthState::Current && all_healthy(&n.children))
}

fn names(nodes: &[Node], out: &mut String) {
    for n in nodes {
        out.push_str(&object_name(&n.group, &n.kind, &n.name));
        out.push('\n');
        names(&n.children, out);
    }
}

fn state_text(health: &Health) -> String {
    let state = match health.state {
        HealthState::Current => "Current",
        HealthState::InProgress => "InProgress",
        HealthState::Failed => "Failed",
        HealthState::NotFound => "NotFound",
    };
    if health.message.is_empty() {
        state.to_string()
    } else {
        let first_line = health.message.lines().next().unwrap_or_default();
        format!("{state}: {first_line}")
    }
}

fn draw(nodes: &[Node], prefix: &str, out: &mut String) {
    for (i, n) in nodes.iter().enumerate() {
        let last = i + 1 == nodes.len();
        let name = match &n.namespace {
            Some(ns) => format!("{}/{ns}/{}", n.kind, n.name),
            None => format!("{}/{}", n.kind, n.name),
        };
        out.push_str(&format!(
            "{prefix}{}{name}  {}\n",
            if last { "└── " } else { "├── " },
            state_text(&n.health)
        ));
        let deeper = format!("{prefix}{}", if last { "    " } else { "│   " });
        draw(&n.children, &deeper, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(kind: &str, name: &str, children: Vec<Node>) -> Node {
        Node {
            group: String::new(),
            kind: kind.into(),
            namespace: Some("ns".into()),
            name: name.into(),
            health: Health::current(),
            children,
        }
    }

    #[test]
    fn the_tree_is_drawn_with_branches() {
        let nodes = vec![
            node(
                "Deployment",
                "web",
                vec![node(
                    "ReplicaSet",
                    "web-1",
                    vec![node("Pod", "web-1-a", vec![])],
                )],
            ),
            node("Service", "web", vec![]),
        ];
        let mut out = String::new();
        draw(&nodes, "", &mut out);
        assert_eq!(
            out,
            "├── Deployment/ns/web  Current\n│   └── ReplicaSet/ns/web-1  Current\n│       └── Pod/ns/web-1-a  Current\n└── Service/ns/web  Current\n"
        );
    }
}
