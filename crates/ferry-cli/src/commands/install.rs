//! `ferry install`: the agent's CRDs, namespace, RBAC, Deployment and webhook Service, generated
//! here from the Rust types and applied through the engine (so a re-run is idempotent and prunes
//! what an older install had). `--export` prints the YAML instead (deploy/install.yaml is made so).
//!
//! RBAC (see docs/agent.md, "Rights"): the agent itself gets the `ferry-agent-<ns>` ClusterRole,
//! which is narrower than cluster-admin (it reads everything, writes only its own kinds' status,
//! Events, its Lease and unsealed Secrets, and impersonates service accounts); tenant work runs
//! as the tenant's service account by impersonation. The agent's own Releases (bootstrap's) run as
//! the `ferry-admin` service account, which is bound to cluster-admin explicitly and separately.
//! `--insecure-agent-identity-for-tenants` restores the old install (agent bound to cluster-admin,
//! tenants without a service account applying as the agent).

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
    /// ServiceAccount (in each tenant's namespace) that Releases without `serviceAccountName`
    /// apply as (the agent's default: `default`).
    #[arg(long)]
    pub default_service_account: Option<String>,
    /// INSECURE, the install before tenant lockdown: bind the agent to cluster-admin and let
    /// Releases without `serviceAccountName` apply with the agent's own rights in every
    /// namespace (anyone who can create a Release becomes cluster-admin). See docs/agent.md.
    #[arg(long)]
    pub insecure_agent_identity_for_tenants: bool,
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
    // `ferry-crds` is shared by every agent's install: two installs at once race for its
    // inventory, and the loser gets a conflict instead of overwriting. Installing is idempotent,
    // so run again from the winner's state (a fresh read, not an overwrite).
    let mut attempt = 0;
    loop {
        attempt += 1;
        match pipeline::apply(
            client,
            as_manifests(crd_manifests(), "ferry install (CRDs)")?,
            &options,
            &NoProgress,
        )
        .await
        {
            Err(ferry_engine::Error::Conflict { .. }) if attempt < 5 => continue,
            result => return Ok(result?),
        }
    }
}

/// The service account the agent's own Releases run as (ferry-agent's `--system-service-account`
/// default; a unit test keeps the two equal).
pub const SYSTEM_SERVICE_ACCOUNT: &str = "ferry-admin";

/// The agent's own rights, one rule per job, each with the reason it is there (the reasons
/// are written as comments above the ClusterRole in the exported YAML, and in docs/agent.md).
pub const AGENT_RULES: &[(&str, &str)] = &[
    (
        "read every kind, everywhere (get/list/watch): drift detection watches (metadata only) every kind a Release applied, the unsealer looks for a bitnami controller's Deployment, and Release status needs Namespace phases; reading is not applying: every write a tenant causes is made as the tenant's service account",
        r#"{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]}"#,
    ),
    (
        "ferry's own kinds: finalizers and webhook-triggered reconciles (patch/update), and their status",
        r#"{"apiGroups": ["ferry.dev"], "resources": ["gitsources", "releases", "receivers", "imagerepositories", "imagepolicies", "imageupdates", "gitsources/status", "releases/status", "receivers/status", "imagerepositories/status", "imagepolicies/status", "imageupdates/status"], "verbs": ["get", "list", "watch", "patch", "update"]}"#,
    ),
    (
        "the Sealed Secrets unsealer: SealedSecret status",
        r#"{"apiGroups": ["bitnami.com"], "resources": ["sealedsecrets", "sealedsecrets/status"], "verbs": ["get", "list", "watch", "patch", "update"]}"#,
    ),
    (
        "the Sealed Secrets unsealer: the Secrets it unseals (in the watched namespaces) and its sealing keys (in its own namespace)",
        r#"{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "patch", "update"]}"#,
    ),
    (
        "Events about ferry's objects (kubectl describe)",
        r#"{"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]}"#,
    ),
    (
        "tenancy: act as a namespace's service account for that namespace's work (apply, prune, reads of the Secrets it names); the API server adds the service account's groups itself, so no `groups` impersonation is needed",
        r#"{"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]}"#,
    ),
];

/// Rights in the agent's own namespace only.
pub const AGENT_NAMESPACE_RULES: &[(&str, &str)] = &[(
    "leader election: the agent's Lease",
    r#"{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list", "watch", "create", "update", "patch"]}"#,
)];

pub(crate) fn rules(list: &[(&str, &str)]) -> Vec<Value> {
    list.iter()
        .filter_map(|(_, rule)| serde_json::from_str(rule).ok())
        .collect()
}

/// YAML comments written above an object in the exported manifests: why each rule is there.
fn comment_for(object: &Value) -> Option<String> {
    let kind = object.get("kind")?.as_str()?;
    let (title, list) = match kind {
        "ClusterRole" => (
            "The agent's own rights (narrower than cluster-admin), one rule per job:",
            AGENT_RULES,
        ),
        "Role" => (
            "The agent's rights in its own namespace only:",
            AGENT_NAMESPACE_RULES,
        ),
        "ClusterRoleBinding"
            if object.pointer("/roleRef/name").and_then(Value::as_str) == Some("cluster-admin") =>
        {
            let who = object
                .pointer("/subjects/0/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return Some(if who == SYSTEM_SERVICE_ACCOUNT {
                "# cluster-admin for the ferry-admin service account, which nothing runs as: the agent\n\
                 # impersonates it only for Releases in its own namespace that name no service account\n\
                 # (such as `ferry bootstrap`'s, which applies this install). Only cluster admins\n\
                 # should be able to create objects in this namespace.\n"
                    .to_string()
            } else {
                "# INSECURE (--insecure-agent-identity-for-tenants): the agent itself is cluster-admin,\n\
                 # and Releases without serviceAccountName apply with its rights.\n"
                    .to_string()
            });
        }
        _ => return None,
    };
    let mut out = format!("# {title}\n");
    for (i, (why, _)) in list.iter().enumerate() {
        out.push_str(&format!("# rules[{i}]: {why}\n"));
    }
    Some(out)
}

/// The agent's own install manifests (without the CRDs) as JSON objects, in apply order.
pub fn manifests(args: &InstallArgs) -> Vec<Value> {
    let ns = &args.namespace;
    let mut out: Vec<Value> = Vec::new();
    let labels =
        json!({"app.kubernetes.io/name": "ferry-agent", "app.kubernetes.io/part-of": "ferry"});
    let admin = SYSTEM_SERVICE_ACCOUNT;
    out.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}));
    out.push(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "ferry-agent", "namespace": ns, "labels": labels}}));
    // Nothing runs as ferry-admin: the agent impersonates it. No token is mounted anywhere.
    out.push(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": admin, "namespace": ns, "labels": labels},
        "automountServiceAccountToken": false}));
    out.push(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": format!("ferry-agent-{ns}"), "labels": labels},
        "rules": rules(AGENT_RULES)}),
    );
    out.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("ferry-agent-{ns}"), "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("ferry-agent-{ns}")},
        "subjects": [{"kind": "ServiceAccount", "name": "ferry-agent", "namespace": ns}]}));
    out.push(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "ferry-agent", "namespace": ns, "labels": labels},
        "rules": rules(AGENT_NAMESPACE_RULES)}),
    );
    out.push(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "ferry-agent", "namespace": ns, "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ferry-agent"},
        "subjects": [{"kind": "ServiceAccount", "name": "ferry-agent", "namespace": ns}]}),
    );
    out.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("{admin}-{ns}"), "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": admin, "namespace": ns}]}));
    if args.insecure_agent_identity_for_tenants {
        out.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": format!("ferry-agent-{ns}-cluster-admin"), "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "ferry-agent", "namespace": ns}]}));
    }
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
    if args.insecure_agent_identity_for_tenants {
        agent_args.push(json!("--insecure-agent-identity-for-tenants"));
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
                        "ports": [{"name": "http", "containerPort": 9090}, {"name": "metrics", "containerPort": 9091}],
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
    // Webhooks from anywhere, metrics from labelled namespaces only (see network_policy.rs).
    out.push(super::network_policy::agent_network_policy(
        ns, &labels, 9090, 9091,
    ));
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
        if let Some(comment) = comment_for(obj) {
            out.push_str(&comment);
        }
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
        legacy_app: Some(ferry_engine::prune::inventory::Legacy {
            app: args.namespace.clone(),
            source_prefix: None,
            push_takeover: false,
        }),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_install_is_not_cluster_admin_and_every_rule_has_a_reason() {
        assert_eq!(
            SYSTEM_SERVICE_ACCOUNT,
            ferry_agent::options::SYSTEM_SERVICE_ACCOUNT
        );
        let args = InstallArgs {
            namespace: "ferry-system".into(),
            image: "img".into(),
            replicas: 1,
            watch_namespaces: Vec::new(),
            default_service_account: None,
            insecure_agent_identity_for_tenants: false,
            no_deployment: false,
            export: true,
        };
        let objects = manifests(&args);
        let admin_bindings: Vec<&Value> = objects
            .iter()
            .filter(|o| {
                o["kind"] == "ClusterRoleBinding" && o["roleRef"]["name"] == "cluster-admin"
            })
            .collect();
        assert_eq!(admin_bindings.len(), 1, "only ferry-admin is cluster-admin");
        assert_eq!(admin_bindings[0]["subjects"][0]["name"], "ferry-admin");
        assert_eq!(
            rules(AGENT_RULES).len(),
            AGENT_RULES.len(),
            "every rule parses"
        );
        assert_eq!(
            rules(AGENT_NAMESPACE_RULES).len(),
            AGENT_NAMESPACE_RULES.len()
        );
        let yaml = to_yaml(&objects).expect("yaml");
        assert!(yaml.contains("# rules[5]: tenancy"), "{yaml}");
        let args = InstallArgs {
            insecure_agent_identity_for_tenants: true,
            ..args
        };
        let objects = manifests(&args);
        assert!(objects.iter().any(|o| o["kind"] == "ClusterRoleBinding"
            && o["roleRef"]["name"] == "cluster-admin"
            && o["subjects"][0]["name"] == "ferry-agent"));
        let deployment = objects
            .iter()
            .find(|o| o["kind"] == "Deployment")
            .expect("deployment");
        assert!(
            deployment["spec"]["template"]["spec"]["containers"][0]["args"]
                .as_array()
                .is_some_and(|a| a
                    .iter()
                    .any(|x| x == "--insecure-agent-identity-for-tenants"))
        );
    }
}
