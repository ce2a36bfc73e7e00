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
use ferry_engine::pipeline::{self, ApplyOptions};
use ferry_engine::progress::NoProgress;
use ferry_engine::{Manifest, Origin, cluster};
use serde_json::{Value, json};

use crate::cli::GlobalArgs;
use crate::commands::cluster_info::cluster_options;
use crate::output::{EXIT_ERROR, EXIT_OK};

pub const INSTALL_HELP: &str = "\
Examples:
  ferry check --pre && ferry install         # check your rights, then install into ferry-system
  ferry install --dry-run                    # what would change (server-side dry run)
  ferry install --export > deploy/install.yaml
  ferry install --sealed-secrets --image-automation
  ferry install --node-selector kubernetes.io/os=linux --toleration dedicated=ferry:NoSchedule \\
      --image-pull-secret regcred
  ferry install --no-deployment --namespace team-a   # CRDs and RBAC; run ferry-agent yourself

Then: ferry check (is it healthy), ferry uninstall (remove it).";

#[derive(Debug, Args, Clone)]
pub struct InstallArgs {
    // The agent's namespace: the global -n/--namespace, default ferry-system
    // (`Cli::resolve_namespaces`).
    #[arg(skip = String::from("ferry-system"))]
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
    /// Run the image automation controllers (ImageRepository, ImagePolicy, ImageUpdate).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", action = clap::ArgAction::Set, default_value_t = false)]
    pub image_automation: bool,
    /// Run the Sealed Secrets unsealer (off by default since issue 12; install refuses when a
    /// bitnami sealed-secrets controller Deployment is found, see --sealed-secrets-despite-bitnami).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL", action = clap::ArgAction::Set, default_value_t = false)]
    pub sealed_secrets: bool,
    /// With --sealed-secrets: run ferry's unsealer even beside a bitnami controller (to migrate
    /// from it deliberately; both would write every SealedSecret's Secret).
    #[arg(long, requires = "sealed_secrets")]
    pub sealed_secrets_despite_bitnami: bool,
    /// Image pull Secret (in the agent's namespace) for the agent's image (repeatable).
    #[arg(long = "image-pull-secret", value_name = "NAME")]
    pub image_pull_secrets: Vec<String>,
    /// Node selector label for the agent's pods, `key=value` (repeatable).
    #[arg(long = "node-selector", value_name = "KEY=VALUE", value_parser = parse_node_selector)]
    pub node_selectors: Vec<(String, String)>,
    /// Toleration for the agent's pods: `key=value:Effect` (operator Equal) or `key:Effect`
    /// (operator Exists); Effect is NoSchedule, PreferNoSchedule or NoExecute (repeatable).
    #[arg(long = "toleration", value_name = "KEY=VALUE:EFFECT", value_parser = parse_toleration)]
    pub tolerations: Vec<Toleration>,
    /// Server-side dry run: print what would be created or changed, change nothing.
    #[arg(long, value_name = "server|client", num_args = 0..=1, require_equals = true, default_value = "none", default_missing_value = "server", value_parser = crate::output::parse_dry_run, conflicts_with = "export")]
    pub dry_run: bool,
}

impl Default for InstallArgs {
    fn default() -> Self {
        Self {
            namespace: "ferry-system".into(),
            image: concat!("ghcr.io/ferry-dev/ferry-agent:", env!("CARGO_PKG_VERSION")).into(),
            replicas: 1,
            watch_namespaces: Vec::new(),
            default_service_account: None,
            insecure_agent_identity_for_tenants: false,
            no_deployment: false,
            export: false,
            image_automation: false,
            sealed_secrets: false,
            sealed_secrets_despite_bitnami: false,
            image_pull_secrets: Vec::new(),
            node_selectors: Vec::new(),
            tolerations: Vec::new(),
            dry_run: false,
        }
    }
}

/// A pod toleration from `--toleration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toleration {
    pub key: String,
    /// `None`: operator Exists.
    pub value: Option<String>,
    pub effect: String,
}

/// `key=value` for `--node-selector`.
fn parse_node_selector(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!(
            "{text:?} is not key=value (e.g. --node-selector kubernetes.io/os=linux)"
        )),
    }
}

/// `key=value:Effect` or `key:Effect` for `--toleration`.
fn parse_toleration(text: &str) -> Result<Toleration, String> {
    let bad = || {
        format!(
            "{text:?} is not key=value:Effect or key:Effect with Effect NoSchedule, PreferNoSchedule or NoExecute (e.g. --toleration dedicated=ferry:NoSchedule)"
        )
    };
    let (left, effect) = text.rsplit_once(':').ok_or_else(bad)?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(bad());
    }
    let (key, value) = match left.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (left, None),
    };
    if key.is_empty() {
        return Err(bad());
    }
    Ok(Toleration {
        key: key.to_string(),
        value,
        effect: effect.to_string(),
    })
}

/// App name under which every install applies the shared CRDs.
pub const CRDS_APP: &str = "ferry-crds";
/// Namespace of the CRDs' inventory: one that exists in every cluster.
pub const CRDS_INVENTORY_NAMESPACE: &str = "kube-system";

/// Apply the shared CRDs (and wait until they are Established) as [`CRDS_APP`].
pub async fn apply_crds(client: &kube::Client) -> Result<ferry_engine::report::ApplyReport> {
    apply_crds_with(client, false).await
}

/// [`apply_crds`], or with `dry_run` a server-side dry run of it (nothing waited for).
pub async fn apply_crds_with(
    client: &kube::Client,
    dry_run: bool,
) -> Result<ferry_engine::report::ApplyReport> {
    let options = ApplyOptions {
        app: CRDS_APP.to_string(),
        namespace: Some(CRDS_INVENTORY_NAMESPACE.to_string()),
        prune: false,
        wait: !dry_run,
        dry_run,
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
            as_manifests(ferry_api::all_crd_values(), "ferry install (CRDs)")?,
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
        r#"{"apiGroups": ["ferry.dev"], "resources": ["gitsources", "ocisources", "releases", "receivers", "imagerepositories", "imagepolicies", "imageupdates", "providers", "alerts", "gitsources/status", "ocisources/status", "releases/status", "receivers/status", "imagerepositories/status", "imagepolicies/status", "imageupdates/status", "providers/status", "alerts/status"], "verbs": ["get", "list", "watch", "patch", "update"]}"#,
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
        // Explicit either way (the chart renders the same): the unsealer is off unless asked for.
        json!(format!("--sealed-secrets={}", args.sealed_secrets)),
    ];
    if args.image_automation {
        agent_args.push(json!("--image-automation=true"));
    }
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
    if args.sealed_secrets && args.sealed_secrets_despite_bitnami {
        agent_args.push(json!("--sealed-secrets-despite-bitnami"));
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
                        // Liveness: three missed 10 s probes restart the container.
                        // Readiness every 2 s (not the default 10 s): a new pod of a rollout
                        // or a takeover is in the Service (webhooks) within ~2 s of listening,
                        // and /readyz is a flag read, cheap to ask often. The chart's
                        // values.yaml has the same probes (tests/chart.rs keeps them equal).
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                            "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"},
                            "periodSeconds": 2, "timeoutSeconds": 5, "failureThreshold": 3},
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
                        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [{"name": "cache", "mountPath": "/cache"}, {"name": "tmp", "mountPath": "/tmp"}]
                    }],
                    "volumes": [{"name": "cache", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
                }
            }
        }}));
    if let Some(pod) = out
        .last_mut()
        .and_then(|d| d.pointer_mut("/spec/template/spec"))
        .and_then(Value::as_object_mut)
    {
        if !args.image_pull_secrets.is_empty() {
            pod.insert(
                "imagePullSecrets".into(),
                args.image_pull_secrets
                    .iter()
                    .map(|name| json!({"name": name}))
                    .collect(),
            );
        }
        if !args.node_selectors.is_empty() {
            pod.insert(
                "nodeSelector".into(),
                args.node_selectors
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect::<serde_json::Map<String, Value>>()
                    .into(),
            );
        }
        if !args.tolerations.is_empty() {
            pod.insert(
                "tolerations".into(),
                args.tolerations
                    .iter()
                    .map(|t| match &t.value {
                        Some(v) => json!({"key": t.key, "operator": "Equal", "value": v, "effect": t.effect}),
                        None => json!({"key": t.key, "operator": "Exists", "effect": t.effect}),
                    })
                    .collect(),
            );
        }
    }
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

/// With `--sealed-secrets` (and not `--sealed-secrets-despite-bitnami`): why installing is
/// refused when a bitnami sealed-secrets controller Deployment runs. The agent would not start
/// its unsealer beside one either; refusing says so before anything is installed or pushed.
/// Searched everywhere, as the agent does.
pub async fn bitnami_refusal(client: &kube::Client, args: &InstallArgs) -> Result<Option<String>> {
    if !args.sealed_secrets || args.sealed_secrets_despite_bitnami || args.no_deployment {
        return Ok(None);
    }
    let found = ferry_engine::decrypt::sealed::find_bitnami_controller(client, &[]).await?;
    Ok(found.map(|found| format!(
        "refusing --sealed-secrets: a bitnami sealed-secrets controller runs (Deployment {found}); both would write every SealedSecret's Secret, each with its own keys. Leave unsealing to it (drop --sealed-secrets), or take over deliberately with --sealed-secrets-despite-bitnami after importing its keys (docs/secrets.md)"
    )))
}

/// Upgrades from older installs. A binding's roleRef cannot be changed, and installs before
/// the narrow RBAC bound `ferry-agent-<ns>` to cluster-admin: such a binding is deleted so the
/// apply recreates it pointing at the narrow ClusterRole (the agent lacks its rights for that
/// moment only). And the insecure install's extra cluster-admin binding goes when the install
/// no longer asks for it (install does not prune, so it would otherwise stay, silently).
/// True when something could not be done.
async fn upgrade_bindings(
    client: &kube::Client,
    objects: &[Value],
    args: &InstallArgs,
) -> Result<bool> {
    use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind};
    let resource = |kind: &str, plural: &str| {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", kind),
            plural,
        )
    };
    let mut stale: Vec<(Api<DynamicObject>, String, String)> = Vec::new();
    for object in objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        let plural = match kind {
            "ClusterRoleBinding" => "clusterrolebindings",
            "RoleBinding" => "rolebindings",
            _ => continue,
        };
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource(kind, plural)),
            None => Api::all_with(client.clone(), &resource(kind, plural)),
        };
        let existing = match api.get_opt(name).await {
            Ok(existing) => existing,
            // A namespace that does not exist yet holds no binding.
            Err(kube::Error::Api(e)) if e.code == 404 => None,
            Err(e) => return Err(e.into()),
        };
        let Some(existing) = existing else { continue };
        let (was, will) = (&existing.data["roleRef"], &object["roleRef"]);
        if was["kind"] != will["kind"] || was["name"] != will["name"] {
            stale.push((
                api,
                name.to_string(),
                format!(
                    "{kind} {name}: roleRef {} {} becomes {} {} (immutable), so it is recreated",
                    was["kind"].as_str().unwrap_or_default(),
                    was["name"].as_str().unwrap_or_default(),
                    will["kind"].as_str().unwrap_or_default(),
                    will["name"].as_str().unwrap_or_default()
                ),
            ));
        }
    }
    if !args.insecure_agent_identity_for_tenants {
        let name = format!("ferry-agent-{}-cluster-admin", args.namespace);
        let api: Api<DynamicObject> = Api::all_with(
            client.clone(),
            &resource("ClusterRoleBinding", "clusterrolebindings"),
        );
        if let Some(existing) = api.get_opt(&name).await?
            && existing
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app.kubernetes.io/part-of"))
                .map(String::as_str)
                == Some("ferry")
        {
            stale.push((
                api,
                name.clone(),
                format!(
                    "ClusterRoleBinding {name}: the agent is no longer cluster-admin (--insecure-agent-identity-for-tenants keeps it), so it is deleted"
                ),
            ));
        }
    }
    let mut failed = false;
    for (api, name, why) in stale {
        if args.dry_run {
            println!("{why} (dry run: not done)");
            continue;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => println!("{why}"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                failed = true;
                eprintln!("failed: {why}: {e}");
            }
        }
    }
    Ok(failed)
}

pub async fn run(global: &GlobalArgs, args: &InstallArgs) -> Result<u8> {
    let objects = manifests(args);
    if args.export {
        let mut all = ferry_api::all_crd_values();
        all.extend(objects);
        crate::output::write_stdout(&to_yaml(&all)?)?;
        return Ok(EXIT_OK);
    }
    let client = cluster::connect(&cluster_options(global)).await?;
    if let Some(refusal) = bitnami_refusal(&client, args).await? {
        eprintln!("{refusal}");
        return Ok(EXIT_ERROR);
    }
    let crds = apply_crds_with(&client, args.dry_run).await?;
    if print_report(&crds) {
        return Ok(EXIT_ERROR);
    }
    let options = ApplyOptions {
        // The same app identity `ferry bootstrap`'s Release uses, so the agent can take the install
        // over from git without an ownership conflict. No prune: bootstrap adds objects to it.
        release: Some(ferry_engine::ownership::ReleaseRef {
            namespace: args.namespace.clone(),
            name: args.namespace.clone(),
        }),
        // Before identities were injective, install applied as push app `<namespace>`.
        legacy_app: Some(ferry_engine::inventory::Legacy {
            app: args.namespace.clone(),
            source_prefix: None,
            push_takeover: false,
        }),
        namespace: Some(args.namespace.clone()),
        prune: false,
        wait: !args.no_deployment && !args.dry_run,
        dry_run: args.dry_run,
        force_conflicts: true,
        ..ApplyOptions::default()
    };
    if upgrade_bindings(&client, &objects, args).await? {
        return Ok(EXIT_ERROR);
    }
    // A server-side dry run cannot create objects in a namespace that does not exist yet (the
    // Namespace itself is only dry-run too): those are listed as new, without the server's check.
    let mut objects = objects;
    let mut unvalidated = Vec::new();
    if args.dry_run {
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(client.clone());
        if namespaces.get_opt(&args.namespace).await?.is_none() {
            let (cluster_scoped, namespaced): (Vec<Value>, Vec<Value>) = objects
                .into_iter()
                .partition(|o| o.pointer("/metadata/namespace").is_none());
            objects = cluster_scoped;
            unvalidated = namespaced;
        }
    }
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
    for o in &unvalidated {
        println!(
            "{} {}/{} created (not validated by the server: namespace {} does not exist yet)",
            o["kind"].as_str().unwrap_or_default(),
            args.namespace,
            o.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            args.namespace
        );
    }
    if args.dry_run {
        println!("dry run: the lines above say what would change; nothing was changed");
        return Ok(EXIT_OK);
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
            image: "img".into(),
            export: true,
            ..InstallArgs::default()
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

    #[test]
    fn flags_shape_the_deployment_and_the_unsealer_is_off_by_default() {
        let deployment = |args: &InstallArgs| {
            manifests(args)
                .into_iter()
                .find(|o| o["kind"] == "Deployment")
                .expect("deployment")
        };
        let plain = deployment(&InstallArgs::default());
        let agent_args = &plain["spec"]["template"]["spec"]["containers"][0]["args"];
        assert!(
            agent_args
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "--sealed-secrets=false")
                    && !a.iter().any(|x| x == "--image-automation=true"))
        );
        let pod = &plain["spec"]["template"]["spec"];
        for absent in ["imagePullSecrets", "nodeSelector", "tolerations"] {
            assert!(pod.get(absent).is_none(), "{absent}");
        }
        let args = InstallArgs {
            image_automation: true,
            sealed_secrets: true,
            sealed_secrets_despite_bitnami: true,
            image_pull_secrets: vec!["regcred".into()],
            node_selectors: vec![parse_node_selector("kubernetes.io/os=linux").expect("sel")],
            tolerations: vec![
                parse_toleration("dedicated=ferry:NoSchedule").expect("tol"),
                parse_toleration("spot:NoExecute").expect("tol"),
            ],
            ..InstallArgs::default()
        };
        let d = deployment(&args);
        let pod = &d["spec"]["template"]["spec"];
        let agent_args = pod["containers"][0]["args"].as_array().expect("args");
        for flag in [
            "--sealed-secrets=true",
            "--image-automation=true",
            "--sealed-secrets-despite-bitnami",
        ] {
            assert!(agent_args.iter().any(|x| x == flag), "{flag}");
        }
        assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
        assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
        assert_eq!(
            pod["tolerations"],
            json!([
                {"key": "dedicated", "operator": "Equal", "value": "ferry", "effect": "NoSchedule"},
                {"key": "spot", "operator": "Exists", "effect": "NoExecute"}
            ])
        );
        for bad in [
            "dedicated=ferry",
            "x:Sometimes",
            ":NoSchedule",
            "=v:NoSchedule",
        ] {
            assert!(parse_toleration(bad).is_err(), "{bad}");
        }
        assert!(parse_node_selector("novalue").is_err());
    }
}
