//! `ferry check` (like `flux check`): is the cluster new enough, are the CRDs this CLI ships
//! installed and current, is the agent Deployment Available at the CLI's version, and are the
//! agent's RBAC rules exactly the ones `ferry install` binds (sufficient and no broader).
//! `--pre` checks, before installing, that the cluster is new enough and that the caller may
//! create what `ferry install` creates (SelfSubjectAccessReview).
//!
//! Every check is a line with ✔/✗ and a reason; exit code 0 when all pass, 1 when any fails
//! (an unreachable cluster is a failed check too, so scripts need only test the exit code).

use anyhow::Result;
use clap::Args;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PostParams};
use serde::Serialize;
use serde_json::Value;

use crate::cli::GlobalArgs;
use crate::commands::cluster_info::cluster_options;
use crate::commands::install::{self, AGENT_NAMESPACE_RULES, AGENT_RULES};
use crate::output::{EXIT_CHANGES, EXIT_OK, OutputFormat};

/// The oldest Kubernetes minor version ferry supports (1.x): the CRDs use `x-kubernetes-*`
/// validation and server-side apply features that are GA from 1.27 on, and 1.27 is the oldest
/// release any major provider still supports.
pub const MIN_KUBERNETES_MINOR: u32 = 27;

pub const CHECK_HELP: &str = "\
Examples:
  ferry check --pre                          # before installing: cluster version and your rights
  ferry check                                # after installing into ferry-system
  ferry check --namespace team-a -o json     # an agent installed with --namespace team-a
  ferry check --no-deployment                # agent runs outside the cluster (install --no-deployment)

Exit codes: 0 every check passed, 1 at least one failed.";

#[derive(Debug, Args, Clone)]
pub struct CheckArgs {
    // The agent's namespace: the global -n/--namespace, default ferry-system
    // (`Cli::resolve_namespaces`).
    #[arg(skip = String::from("ferry-system"))]
    pub namespace: String,
    /// Before installing: only the cluster's version and whether you may create what
    /// `ferry install` creates (CRDs, ClusterRoles and bindings, the namespace, the Deployment).
    #[arg(long)]
    pub pre: bool,
    /// The agent was installed with `--no-deployment` (it runs outside the cluster): skip the
    /// Deployment check.
    #[arg(long)]
    pub no_deployment: bool,
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub message: String,
}

impl Check {
    fn pass(name: impl Into<String>, message: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            ok: true,
            message: message.into(),
        }
    }
    fn fail(name: impl Into<String>, message: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            ok: false,
            message: message.into(),
        }
    }
}

pub async fn run(global: &GlobalArgs, args: &CheckArgs) -> Result<u8> {
    let checks = checks(global, args).await;
    let ok = checks.iter().all(|c| c.ok);
    match global.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            crate::output::print_data(
                global.output,
                &serde_json::json!({"ok": ok, "checks": checks}),
            )?;
        }
        OutputFormat::Name => {
            for c in &checks {
                println!("{}", c.name);
            }
        }
        OutputFormat::Human | OutputFormat::Wide | OutputFormat::Markdown => {
            for c in &checks {
                println!("{} {}: {}", if c.ok { "✔" } else { "✗" }, c.name, c.message);
            }
            println!(
                "{}",
                if ok {
                    "all checks passed"
                } else {
                    "some checks failed"
                }
            );
        }
    }
    Ok(if ok { EXIT_OK } else { EXIT_CHANGES })
}

async fn checks(global: &GlobalArgs, args: &CheckArgs) -> Vec<Check> {
    let mut out = Vec::new();
    let client = match ferry_engine::cluster::connect(&cluster_options(global)).await {
        Ok(client) => client,
        Err(err) => {
            out.push(Check::fail("cluster", format!("cannot connect: {err}")));
            return out;
        }
    };
    let version = cluster_version(&client).await;
    let reachable = version.is_ok() || !matches!(&version, Err(VersionError::Unreachable(_)));
    out.push(match version {
        Ok((text, minor)) if minor >= MIN_KUBERNETES_MINOR => Check::pass(
            "cluster",
            format!("Kubernetes {text} (>= 1.{MIN_KUBERNETES_MINOR})"),
        ),
        Ok((text, _)) => Check::fail(
            "cluster",
            format!(
                "Kubernetes {text} is older than the oldest supported, 1.{MIN_KUBERNETES_MINOR}: upgrade the cluster"
            ),
        ),
        Err(err) => Check::fail("cluster", err.to_string()),
    });
    if !reachable {
        return out;
    }
    if args.pre {
        out.extend(pre_checks(&client, &args.namespace).await);
        return out;
    }
    out.extend(crd_checks(&client).await);
    if !args.no_deployment {
        out.push(deployment_check(&client, &args.namespace).await);
        out.push(webhook_check(&client, &args.namespace).await);
    }
    out.extend(rbac_checks(&client, &args.namespace).await);
    out
}

#[derive(Debug, thiserror::Error)]
enum VersionError {
    #[error("cannot reach the API server: {0}")]
    Unreachable(#[source] kube::Error),
    #[error(
        "the API server reports version {0:?}, which is not 1.x: cannot tell whether it is supported"
    )]
    Unparsable(String),
}

/// The server's `gitVersion` and minor version (providers append `+` and suffixes: `29+`).
async fn cluster_version(client: &kube::Client) -> Result<(String, u32), VersionError> {
    let info = client
        .apiserver_version()
        .await
        .map_err(VersionError::Unreachable)?;
    let minor: String = info
        .minor
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    match (info.major.as_str(), minor.parse::<u32>()) {
        ("1", Ok(minor)) => Ok((info.git_version, minor)),
        _ => Err(VersionError::Unparsable(format!(
            "{}.{}",
            info.major, info.minor
        ))),
    }
}

/// What `ferry install` does, as (verb, group, resource, name, namespace): it creates these,
/// and binds `ferry-admin` to cluster-admin (which needs `bind` on it, or holding every right).
type Permission = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<String>,
);

fn install_permissions(namespace: &str) -> Vec<Permission> {
    let rbac = "rbac.authorization.k8s.io";
    let ns = || Some(namespace.to_string());
    vec![
        (
            "create",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
            None,
        ),
        ("create", "", "namespaces", None, None),
        ("create", rbac, "clusterroles", None, None),
        ("create", rbac, "clusterrolebindings", None, None),
        ("bind", rbac, "clusterroles", Some("cluster-admin"), None),
        ("create", rbac, "roles", None, ns()),
        ("create", rbac, "rolebindings", None, ns()),
        ("create", "", "serviceaccounts", None, ns()),
        ("create", "apps", "deployments", None, ns()),
        ("create", "", "services", None, ns()),
        ("create", "networking.k8s.io", "networkpolicies", None, ns()),
    ]
}

async fn pre_checks(client: &kube::Client, namespace: &str) -> Vec<Check> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut out = Vec::new();
    for (verb, group, resource, object, ns) in install_permissions(namespace) {
        let name = format!(
            "may {verb} {resource}{}{}",
            if group.is_empty() {
                String::new()
            } else {
                format!(".{group}")
            },
            object.map(|o| format!("/{o}")).unwrap_or_default()
        );
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(group.to_string()),
                    resource: Some(resource.to_string()),
                    verb: Some(verb.to_string()),
                    name: object.map(str::to_string),
                    namespace: ns.clone(),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let where_ = ns
            .map(|ns| format!("in namespace {ns}"))
            .unwrap_or_else(|| "cluster-wide".to_string());
        out.push(
            match reviews.create(&PostParams::default(), &review).await {
                Ok(answer) => match answer.status {
                    Some(status) if status.allowed => {
                        Check::pass(name, format!("allowed {where_}"))
                    }
                    Some(status) => Check::fail(
                        name,
                        format!(
                            "denied {where_}{}: ferry install needs a cluster admin",
                            status
                                .reason
                                .filter(|r| !r.is_empty())
                                .map(|r| format!(" ({r})"))
                                .unwrap_or_default()
                        ),
                    ),
                    None => Check::fail(name, "the API server gave no answer"),
                },
                Err(err) => Check::fail(name, format!("cannot ask the API server: {err}")),
            },
        );
    }
    out
}

/// True when every field of `shipped` is in `stored` with the same value. The API server adds
/// defaults to stored CRDs (conversion strategy, status), so equality would never hold; a CRD
/// from an older CLI lacks or changes a field of the shipped one and fails this.
pub fn contains(stored: &Value, shipped: &Value) -> bool {
    match (stored, shipped) {
        (Value::Object(s), Value::Object(w)) => w
            .iter()
            .all(|(k, v)| s.get(k).is_some_and(|sv| contains(sv, v))),
        (Value::Array(s), Value::Array(w)) => {
            s.len() == w.len() && s.iter().zip(w).all(|(a, b)| contains(a, b))
        }
        (s, w) => s == w,
    }
}

async fn crd_checks(client: &kube::Client) -> Vec<Check> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut out = Vec::new();
    for shipped in ferry_api::all_crd_values() {
        let name = shipped["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let label = format!("CRD {name}");
        let stored = match api.get_opt(&name).await {
            Ok(Some(crd)) => crd,
            Ok(None) => {
                out.push(Check::fail(label, "not installed: run ferry install"));
                continue;
            }
            Err(err) => {
                out.push(Check::fail(label, format!("cannot read it: {err}")));
                continue;
            }
        };
        let established = stored
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        let stored_spec = serde_json::to_value(&stored.spec).unwrap_or(Value::Null);
        out.push(if !contains(&stored_spec, &shipped["spec"]) {
            Check::fail(
                label,
                format!(
                    "differs from the one this CLI ({}) ships: run ferry install to update it",
                    env!("CARGO_PKG_VERSION")
                ),
            )
        } else if !established {
            Check::fail(label, "current but not Established")
        } else {
            Check::pass(label, "current and Established")
        });
    }
    out
}

/// The tag of an image reference (`repo:tag` or `repo:tag@digest`), if any.
fn image_tag(image: &str) -> Option<&str> {
    let name = image.split('@').next()?;
    let last = name.rsplit('/').next()?;
    last.split_once(':').map(|(_, tag)| tag)
}

async fn deployment_check(client: &kube::Client, namespace: &str) -> Check {
    let name = format!("agent Deployment {namespace}/ferry-agent");
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = match api.get_opt("ferry-agent").await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return Check::fail(
                name,
                "not found: run ferry install (or pass --no-deployment if the agent runs outside the cluster)",
            );
        }
        Err(err) => return Check::fail(name, format!("cannot read it: {err}")),
    };
    let available = deployment
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Available" && c.status == "True")
        });
    let ready = deployment
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let image = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.iter().find(|c| c.name == "agent"))
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let cli = env!("CARGO_PKG_VERSION");
    let tag = image_tag(&image).unwrap_or("");
    if !available || ready == 0 {
        return Check::fail(
            name,
            format!(
                "not Available ({ready} ready replicas): kubectl -n {namespace} describe deployment ferry-agent"
            ),
        );
    }
    if tag.is_empty() && image.contains("@sha256:") {
        // Pinned by digest only (as GitOps installs often are): the reference says nothing
        // about the version. Not a failure: the digest is the stronger pin; say how to have
        // the version checked too.
        return Check::pass(
            name,
            format!(
                "Available, {ready} ready, image {image} pinned by digest only: its version cannot be compared with this CLI's {cli} (pin it as REPOSITORY:{cli}@sha256:… to have it checked)"
            ),
        );
    }
    if tag.trim_start_matches('v') != cli {
        return Check::fail(
            name,
            format!(
                "Available, but its image {image} is not this CLI's version {cli}: run ferry install to upgrade (or use a CLI of the agent's version)"
            ),
        );
    }
    Check::pass(
        name,
        format!("Available, {ready} ready, image {image} (CLI {cli})"),
    )
}

/// The webhook Service has a ready endpoint: what receivers' senders reach (through whatever
/// Ingress fronts it). Not a request to the agent: the API server's proxy may have no route
/// to pods, and the NetworkPolicy decides who else may connect.
async fn webhook_check(client: &kube::Client, namespace: &str) -> Check {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let name = format!("webhook Service {namespace}/ferry-agent");
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    match services.get_opt("ferry-agent").await {
        Ok(Some(_)) => {}
        Ok(None) => return Check::fail(name, "not found: run ferry install"),
        Err(err) => return Check::fail(name, format!("cannot read it: {err}")),
    }
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let list = match slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=ferry-agent"))
        .await
    {
        Ok(list) => list,
        Err(err) => return Check::fail(name, format!("cannot list its EndpointSlices: {err}")),
    };
    let ready = list
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .count();
    if ready == 0 {
        Check::fail(
            name,
            "no ready endpoint: webhooks cannot reach the agent (is its pod Ready?)",
        )
    } else {
        Check::pass(name, format!("{ready} ready endpoint(s)"))
    }
}

/// Rules as comparable values (serialised PolicyRules, so field order and absent-vs-empty
/// lists do not matter).
fn normalise(rules: &[PolicyRule]) -> Vec<Value> {
    rules
        .iter()
        .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
        .collect()
}

fn expected(list: &[(&str, &str)]) -> Vec<Value> {
    let rules: Vec<PolicyRule> = install::rules(list)
        .into_iter()
        .filter_map(|r| serde_json::from_value(r).ok())
        .collect();
    normalise(&rules)
}

/// Compare installed rules with the expected ones: extra rules are broader than this CLI
/// installs, missing ones leave the agent short of rights.
fn compare_rules(label: String, stored: &[PolicyRule], expected: &[Value]) -> Check {
    let stored = normalise(stored);
    let extra: Vec<&Value> = stored.iter().filter(|r| !expected.contains(r)).collect();
    let missing: Vec<&Value> = expected.iter().filter(|r| !stored.contains(r)).collect();
    if extra.is_empty() && missing.is_empty() {
        return Check::pass(label, "rules equal to what this CLI installs");
    }
    let mut reasons = Vec::new();
    for r in extra {
        reasons.push(format!("broader than this CLI installs, extra rule {r}"));
    }
    for r in missing {
        reasons.push(format!("insufficient, missing rule {r}"));
    }
    Check::fail(
        label,
        format!("{}; run ferry install to restore it", reasons.join("; ")),
    )
}

async fn rbac_checks(client: &kube::Client, namespace: &str) -> Vec<Check> {
    let mut out = Vec::new();
    let cluster_role = format!("ferry-agent-{namespace}");
    let label = format!("ClusterRole {cluster_role}");
    let roles: Api<ClusterRole> = Api::all(client.clone());
    out.push(match roles.get_opt(&cluster_role).await {
        Ok(Some(role)) => compare_rules(
            label,
            role.rules.as_deref().unwrap_or_default(),
            &expected(AGENT_RULES),
        ),
        Ok(None) => Check::fail(label, "not found: run ferry install"),
        Err(err) => Check::fail(label, format!("cannot read it: {err}")),
    });
    let label = format!("Role {namespace}/ferry-agent");
    let ns_roles: Api<Role> = Api::namespaced(client.clone(), namespace);
    out.push(match ns_roles.get_opt("ferry-agent").await {
        Ok(Some(role)) => compare_rules(
            label,
            role.rules.as_deref().unwrap_or_default(),
            &expected(AGENT_NAMESPACE_RULES),
        ),
        Ok(None) => Check::fail(label, "not found: run ferry install"),
        Err(err) => Check::fail(label, format!("cannot read it: {err}")),
    });
    // Other bindings of the agent's service account make it broader than its ClusterRole
    // (`--insecure-agent-identity-for-tenants` binds it to cluster-admin: reported as such).
    let label = format!("ClusterRoleBindings of {namespace}/ferry-agent");
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    out.push(match bindings.list(&ListParams::default()).await {
        Ok(list) => {
            let mut ours = false;
            let mut others = Vec::new();
            for b in list.items {
                let binds_agent = b.subjects.iter().flatten().any(|s| {
                    s.kind == "ServiceAccount"
                        && s.name == "ferry-agent"
                        && s.namespace.as_deref() == Some(namespace)
                });
                if !binds_agent {
                    continue;
                }
                let name = b.metadata.name.clone().unwrap_or_default();
                if name == cluster_role
                    && b.role_ref.kind == "ClusterRole"
                    && b.role_ref.name == cluster_role
                {
                    ours = true;
                } else {
                    others.push(format!(
                        "{name} (to {} {})",
                        b.role_ref.kind, b.role_ref.name
                    ));
                }
            }
            if !others.is_empty() {
                Check::fail(
                    label,
                    format!(
                        "broader than this CLI installs, also bound by: {}",
                        others.join(", ")
                    ),
                )
            } else if !ours {
                Check::fail(
                    label,
                    format!("no binding {cluster_role} to the ClusterRole: run ferry install"),
                )
            } else {
                Check::pass(label, format!("bound to {cluster_role} only"))
            }
        }
        Err(err) => Check::fail(label, format!("cannot list them: {err}")),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_tolerates_server_defaults_but_not_changes() {
        let shipped = serde_json::json!({"a": 1, "v": [{"x": true}]});
        let stored = serde_json::json!({"a": 1, "b": 2, "v": [{"x": true, "d": 0}]});
        assert!(contains(&stored, &shipped));
        let older = serde_json::json!({"a": 1, "v": [{"x": false}]});
        assert!(!contains(&older, &shipped));
        let fewer = serde_json::json!({"a": 1, "v": []});
        assert!(!contains(&fewer, &shipped));
    }

    #[test]
    fn image_tags_are_read_past_registries_with_ports_and_digests() {
        assert_eq!(
            image_tag("ghcr.io/ferry-dev/ferry-agent:0.1.0"),
            Some("0.1.0")
        );
        assert_eq!(
            image_tag("127.0.0.1:15000/ferry-agent:0.1.0@sha256:ab"),
            Some("0.1.0")
        );
        assert_eq!(image_tag("127.0.0.1:15000/ferry-agent"), None);
    }

    #[test]
    fn an_extra_rule_is_named_as_broader() {
        let expected = expected(AGENT_RULES);
        let mut stored: Vec<PolicyRule> = expected
            .iter()
            .filter_map(|r| serde_json::from_value(r.clone()).ok())
            .collect();
        assert!(compare_rules("x".into(), &stored, &expected).ok);
        stored.push(PolicyRule {
            api_groups: Some(vec!["*".into()]),
            resources: Some(vec!["*".into()]),
            verbs: vec!["*".into()],
            ..PolicyRule::default()
        });
        let check = compare_rules("x".into(), &stored, &expected);
        assert!(!check.ok);
        assert!(check.message.contains("broader"), "{}", check.message);
    }
}
