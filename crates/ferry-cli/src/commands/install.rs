//! `ferry install`: the agent's CRDs, namespace, RBAC, Deployment and webhook Service, generated
//! here from the Rust types and applied through the engine (so a re-run is idempotent and prunes
//! what an older install had). `--export` prints the YAML instead (deploy/install.yaml is made so).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ferry_api::{GitSource, Receiver, Release};
use ferry_engine::pipeline::{self, ApplyOptions, NoProgress};
use ferry_engine::{Manifest, Origin, cluster};
use kube::CustomResourceExt;
use serde_json::{Value, json};

use crate::cli::GlobalArgs;
use crate::commands::cluster_info::cluster_options;
use crate::output::{EXIT_ERROR, EXIT_OK};

#[derive(Debug, Args, Clone)]
pub struct InstallArgs {
    /// Namespace for the agent (and its leader-election Lease).
    #[arg(long, default_value = "ferry-system")]
    pub namespace: String,
    /// Agent container image.
    #[arg(long, default_value = concat!("ghcr.io/ferry-dev/ferry-agent:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
    /// Replicas (more than one: standbys behind the leader Lease).
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    /// Only watch these namespaces (repeatable).
    #[arg(long = "watch-namespace", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// ServiceAccount to impersonate for Releases without one (multi-tenant lockdown).
    #[arg(long)]
    pub default_service_account: Option<String>,
    /// CRDs, namespace and RBAC only: for running `ferry-agent --kubeconfig` outside the cluster.
    #[arg(long)]
    pub no_deployment: bool,
    /// Print the manifests as YAML instead of applying them.
    #[arg(long)]
    pub export: bool,
}

/// App name under which every install applies the shared CRDs.
pub const CRDS_APP: &str = "ferry-crds";
/// Namespace of the CRDs' inventory: one that exists in every cluster.
pub const CRDS_INVENTORY_NAMESPACE: &str = "kube-system";

/// The CRDs of every ferry kind (and the bitnami-compatible SealedSecret), as JSON objects.
pub fn crd_manifests() -> Vec<Value> {
    let mut crds = vec![GitSource::crd(), Release::crd(), Receiver::crd()];
    crds.extend(ferry_images::controller::crds());
    crds.push(ferry_engine::decrypt::sealed::SealedSecret::crd());
    crds.into_iter()
        .filter_map(|crd| serde_json::to_value(crd).ok())
        .collect()
}

/// Apply the shared CRDs (and wait until they are Established) as [`CRDS_APP`].
pub async fn apply_crds(client: &kube::Client) -> Result<ferry_engine::report::ApplyReport> {
    let options = ApplyOptions {
        app: CRDS_APP.to_string(),
        namespace: Some(CRDS_INVENTORY_NAMESPACE.to_string()),
        prune: false,
        wait: true,
        force_conflicts: true,
        ..ApplyOptions::default()
    };
    let report = pipeline::apply(
        client,
        as_manifests(crd_manifests(), "ferry install (CRDs)")?,
        &options,
        &NoProgress,
    )
    .await?;
    Ok(report)
}

/// The agent's own install manifests (without the CRDs) as JSON objects, in apply order.
pub fn manifests(args: &InstallArgs) -> Vec<Value> {
    let ns = &args.namespace;
    let mut out: Vec<Value> = Vec::new();
    let labels =
        json!({"app.kubernetes.io/name": "ferry-agent", "app.kubernetes.io/part-of": "ferry"});
    out.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}));
    out.push(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "ferry-agent", "namespace": ns, "labels": labels}}));
    // Like Flux's kustomize-controller, the agent itself may apply anything; tenants are confined
    // by impersonation (`serviceAccountName`, `--default-service-account`).
    out.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("ferry-agent-{ns}"), "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "ferry-agent", "namespace": ns}]}));
    if args.no_deployment {
        return out;
    }
    let mut agent_args = vec![
        json!("--namespace"),
        json!(ns),
        json!("--cache-dir"),
        json!("/cache"),
        // In the cluster the agent also unseals SealedSecrets and serves /v1/cert.pem.
        json!("--sealed-secrets=true"),
    ];
    if !args.watch_namespaces.is_empty() {
        agent_args.push(json!("--watch-namespace"));
        agent_args.push(json!(args.watch_namespaces.join(",")));
    }
    if let Some(sa) = &args.default_service_account {
        agent_args.push(json!("--default-service-account"));
        agent_args.push(json!(sa));
    }
    out.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "ferry-agent", "namespace": ns, "labels": labels},
        "spec": {
            "replicas": args.replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "ferry-agent"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": "ferry-agent",
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "agent",
                        "image": args.image,
                        "args": agent_args,
                        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "ports": [{"name": "http", "containerPort": 9090}],
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}},
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
                        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [{"name": "cache", "mountPath": "/cache"}, {"name": "tmp", "mountPath": "/tmp"}]
                    }],
                    "volumes": [{"name": "cache", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
                }
            }
        }}));
    out.push(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "ferry-agent", "namespace": ns, "labels": labels},
        "spec": {"selector": {"app.kubernetes.io/name": "ferry-agent"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}));
    out
}

/// Print one line per object and the failures; true when something failed.
pub fn print_report(report: &ferry_engine::report::ApplyReport) -> bool {
    for o in &report.objects {
        println!("{} {}", o.key, o.action.as_str());
    }
    let failures = report.failures();
    for f in &failures {
        eprintln!(
            "failed: {}: {}",
            f.key,
            f.message.clone().unwrap_or_default()
        );
    }
    !failures.is_empty()
}

/// Multi-document YAML of `objects`.
pub fn to_yaml(objects: &[Value]) -> Result<String> {
    let mut out = String::from("# Generated by `ferry install --export`; do not edit.\n");
    for obj in objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(obj).context("rendering YAML")?);
    }
    Ok(out)
}

pub fn as_manifests(objects: Vec<Value>, origin: &str) -> Result<Vec<Manifest>> {
    objects
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            Ok(Manifest {
                object: serde_json::from_value(v).context("install manifest")?,
                origin: Origin {
                    file: PathBuf::from(origin),
                    document: i,
                    line: None,
                },
            })
        })
        .collect()
}

pub async fn run(global: &GlobalArgs, args: &InstallArgs) -> Result<u8> {
    let objects = manifests(args);
    if args.export {
        let mut all = crd_manifests();
        all.extend(objects);
        crate::output::write_stdout(&to_yaml(&all)?)?;
        return Ok(EXIT_OK);
    }
    let client = cluster::connect(&cluster_options(global)).await?;
    let crds = apply_crds(&client).await?;
    if print_report(&crds) {
        return Ok(EXIT_ERROR);
    }
    let options = ApplyOptions {
        // The same app identity `ferry bootstrap`'s Release uses, so the agent can take the install
        // over from git without an ownership conflict. No prune: bootstrap adds objects to it.
        release: Some(ferry_engine::prune::identity::ReleaseRef {
            namespace: args.namespace.clone(),
            name: args.namespace.clone(),
        }),
        // Before identities were injective, install applied as push app `<namespace>`.
        legacy_app: Some(args.namespace.clone()),
        namespace: Some(args.namespace.clone()),
        prune: false,
        wait: !args.no_deployment,
        force_conflicts: true,
        ..ApplyOptions::default()
    };
    let report = pipeline::apply(
        &client,
        as_manifests(objects, "ferry install")?,
        &options,
        &NoProgress,
    )
    .await?;
    if print_report(&report) {
        return Ok(EXIT_ERROR);
    }
    if args.no_deployment {
        println!(
            "installed CRDs and RBAC; run the agent with: ferry-agent --kubeconfig \"$KUBECONFIG\" --namespace {}",
            args.namespace
        );
    }
    Ok(EXIT_OK)
}
