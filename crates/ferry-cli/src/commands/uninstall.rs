//! `ferry uninstall`: removes what `ferry install` put in `--namespace` (Deployment, Service,
//! NetworkPolicy, service accounts, Role, ClusterRole and their bindings, the leader Lease) —
//! safely: it refuses while the agent's Releases exist unless told what happens to their objects
//! (`--releases orphan` or `--releases delete`), so no Release is left with a finalizer that
//! nothing will ever remove (which would keep its namespace Terminating forever). CRDs stay
//! unless `--crds`, and even then only once no ferry object is left in the cluster.
//! `--dry-run` reads the same state, prints what the run would remove and removes nothing.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Args, ValueEnum};
use ferry_api::Release;
use ferry_engine::pipeline::{self, DeleteOptions};
use ferry_engine::report::Action;
use ferry_engine::{cluster, inventory, ownership};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::cli::GlobalArgs;
use crate::commands::cluster_info::cluster_options;
use crate::commands::install;
use crate::output::{EXIT_CHANGES, EXIT_ERROR, EXIT_OK, EXIT_TIMEOUT};

/// The agent's Release finalizer (ferry-agent's `release::FINALIZER`; a unit test keeps the
/// two equal).
pub const RELEASE_FINALIZER: &str = "ferry.dev/finalizer";

pub const UNINSTALL_HELP: &str = "\
Examples:
  ferry uninstall                            # refuses if Releases exist, listing them
  ferry uninstall --releases orphan          # keep what the Releases applied, delete the Releases
  ferry uninstall --releases delete          # the agent deletes what they applied first
  ferry uninstall --releases orphan --crds   # also the CRDs, once no ferry object is left
  ferry uninstall --releases delete --dry-run   # what would be removed; removes nothing

The namespace itself and the unsealer's sealing keys (Secrets in it) are kept: delete the
namespace yourself when you no longer need the keys.

Exit codes: 0 uninstalled, 1 some objects could not be deleted, 2 refused (Releases exist,
ferry objects left for --crds), 3 timed out waiting for the agent to delete Releases. With
--dry-run: 0, or 2 when the run would refuse or keep the CRDs.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReleasePolicy {
    /// Keep the objects the Releases applied; delete the Releases only.
    Orphan,
    /// Delete the Releases and wait until the agent has deleted what they applied.
    Delete,
}

#[derive(Debug, Args, Clone)]
pub struct UninstallArgs {
    // The agent's namespace: the global -n/--namespace, default ferry-system
    // (`Cli::resolve_namespaces`).
    #[arg(skip = String::from("ferry-system"))]
    pub namespace: String,
    /// What happens to the objects of the agent's Releases (required when any exist).
    #[arg(long, value_enum)]
    pub releases: Option<ReleasePolicy>,
    /// The namespaces whose Releases are this agent's (default: its Deployment's
    /// --watch-namespace, or every namespace when it watches all or has no Deployment). The
    /// agent's own namespace is always included.
    #[arg(long = "watch-namespace", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    // The agent watches every namespace (what its Deployment says when it has no
    // --watch-namespace; needed for an agent without a Deployment, run outside the cluster):
    // the global -A/--all-namespaces (`Cli::resolve_namespaces`).
    #[arg(skip)]
    pub all_namespaces: bool,
    /// How long `--releases delete` waits for the agent to delete the Releases' objects.
    #[arg(long, default_value = "5m", value_parser = ferry_api::parse_positive_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// Also delete the CRDs `ferry install` applied, once no ferry object is left anywhere.
    #[arg(long)]
    pub crds: bool,
    /// Print what would be removed (server-side dry runs of the deletes); remove nothing.
    #[arg(long, value_name = "server|client", num_args = 0..=1, require_equals = true, default_value = "none", default_missing_value = "server", value_parser = crate::output::parse_dry_run)]
    pub dry_run: bool,
}

pub async fn run(global: &GlobalArgs, args: &UninstallArgs) -> Result<u8> {
    let client = cluster::connect(&cluster_options(global)).await?;
    let ns = args.namespace.as_str();
    let (scope, known) = release_scope(&client, args).await?;
    let releases = agent_releases(&client, &scope).await?;
    if !known {
        let elsewhere: Vec<Release> = agent_releases(&client, &None)
            .await?
            .into_iter()
            .filter(|r| r.namespace().as_deref() != Some(ns))
            .collect();
        if !elsewhere.is_empty() {
            eprintln!(
                "refusing to uninstall the agent in {ns}: it has no Deployment to read its --watch-namespace from, and Releases exist in other namespaces ({}) that may be its or another agent's",
                names(&elsewhere)
            );
            eprintln!(
                "say which are its: --watch-namespace NS[,NS] (as the agent was run) or --all-namespaces"
            );
            return Ok(EXIT_ERROR);
        }
    }
    if args.dry_run {
        return dry_run(&client, args, releases).await;
    }
    if !releases.is_empty() {
        match args.releases {
            None => {
                eprintln!(
                    "refusing to uninstall the agent in {ns}: {} Release(s) exist, and without the agent their finalizers would never be removed: {}",
                    releases.len(),
                    names(&releases)
                );
                eprintln!(
                    "say what happens to the objects they applied: --releases orphan (keep them) or --releases delete (the agent deletes them first)"
                );
                return Ok(EXIT_ERROR);
            }
            Some(ReleasePolicy::Orphan) => orphan(&client, &releases).await?,
            Some(ReleasePolicy::Delete) => {
                // `ferry bootstrap`'s Release `<ns>/<ns>` applies the agent itself: pruning it
                // would delete the agent in the middle of its own finalizer. Its objects are
                // the install's, removed below; it is orphaned.
                let (own, tenants): (Vec<Release>, Vec<Release>) = releases
                    .into_iter()
                    .partition(|r| r.namespace().as_deref() == Some(ns) && r.name_any() == ns);
                if let Some(left) = delete_releases(&client, &tenants, args.timeout).await? {
                    eprintln!(
                        "timed out after {:?} waiting for the agent to delete the objects of: {}; the agent was left installed (is it running? kubectl -n {ns} logs deploy/ferry-agent)",
                        args.timeout,
                        names(&left)
                    );
                    return Ok(EXIT_TIMEOUT);
                }
                orphan(&client, &own).await?;
            }
        }
    }
    let failed = remove_agent(&client, ns).await?;
    // A Release created while the agent went away would keep its namespace Terminating: its
    // finalizer goes too (its objects stay; nothing can prune them now).
    for r in agent_releases(&client, &scope).await? {
        remove_finalizer(&client, &r).await?;
    }
    if failed {
        return Ok(EXIT_CHANGES);
    }
    if args.crds {
        return remove_crds(&client).await;
    }
    println!("uninstalled the agent from {ns} (CRDs kept; --crds removes them)");
    Ok(EXIT_OK)
}

/// `--dry-run`: what `run` would do from here (its refusals were already checked), printed with
/// "would"; every delete is a server-side dry run or a read. Exit code as the run would end.
async fn dry_run(
    client: &kube::Client,
    args: &UninstallArgs,
    releases: Vec<Release>,
) -> Result<u8> {
    let ns = args.namespace.as_str();
    if !releases.is_empty() {
        let Some(policy) = args.releases else {
            eprintln!(
                "refusing to uninstall the agent in {ns} (dry run): {} Release(s) exist: {}; say --releases orphan or --releases delete",
                releases.len(),
                names(&releases)
            );
            return Ok(EXIT_ERROR);
        };
        for r in &releases {
            let own = r.namespace().as_deref() == Some(ns) && r.name_any() == ns;
            let what = match policy {
                ReleasePolicy::Delete if !own => {
                    "would be deleted, and the agent would delete the objects it applied"
                }
                // Orphan, and bootstrap's own Release under delete (see `run`).
                _ => "would be deleted; its objects would be kept",
            };
            println!(
                "Release {}/{} {what}",
                r.namespace().unwrap_or_default(),
                r.name_any()
            );
        }
    }
    // Each object once, as `Kind ns/name`: the inventory's, then any other install object.
    let mut listed = BTreeSet::new();
    let options = DeleteOptions {
        dry_run: true,
        ..agent_delete_options(ns)
    };
    match pipeline::delete(client, &options).await {
        Ok(report) => {
            for o in report.objects.iter().filter(|o| o.key.kind != "Namespace") {
                let label = match &o.key.namespace {
                    Some(namespace) => format!("{} {namespace}/{}", o.key.kind, o.key.name),
                    None => format!("{} {}", o.key.kind, o.key.name),
                };
                let outcome = match o.action {
                    Action::Deleted | Action::Pruned => "would be deleted".to_string(),
                    Action::Failed => format!(
                        "would fail: {}",
                        o.message.as_deref().unwrap_or("(no message)")
                    ),
                    // Not provably the install's (or prune-protected): a real run keeps it.
                    _ => format!("would be kept ({})", o.action.as_str()),
                };
                if listed.insert(label.clone()) {
                    println!("{label} {outcome}");
                }
            }
        }
        Err(ferry_engine::Error::NoInventory { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    for object in install_objects(ns) {
        if let Some(label) = existing(client, &object).await?
            && listed.insert(label.clone())
        {
            println!("{label} would be deleted");
        }
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    if leases.get_opt("ferry-agent").await?.is_some() {
        println!("Lease {ns}/ferry-agent would be deleted");
    }
    if args.crds {
        // The Releases this run would delete do not count as left.
        let removed: BTreeSet<String> = releases
            .iter()
            .map(|r| r.uid().unwrap_or_default())
            .collect();
        let (ours, left) = crds_and_objects_left(client, &removed).await?;
        if !left.is_empty() {
            println!(
                "the CRDs would be kept: ferry objects would be left of kinds {}",
                left.join(", ")
            );
            println!("nothing was changed (dry run)");
            return Ok(EXIT_ERROR);
        }
        for name in ours {
            println!("CustomResourceDefinition {name} would be deleted");
        }
    }
    println!("nothing was changed (dry run)");
    Ok(EXIT_OK)
}

/// Namespaces whose Releases this agent reconciles (`None`: every namespace), and whether
/// that is known (false: no Deployment and no flag said; only its own namespace is assumed).
async fn release_scope(
    client: &kube::Client,
    args: &UninstallArgs,
) -> Result<(Option<BTreeSet<String>>, bool)> {
    if args.all_namespaces {
        return Ok((None, true));
    }
    let mut watched: Vec<String> = args.watch_namespaces.clone();
    if watched.is_empty() {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &args.namespace);
        let Some(d) = deployments.get_opt("ferry-agent").await? else {
            // No Deployment to read the agent's namespaces from (it runs outside the cluster, or
            // is gone): only its own namespace is known to be its. Releases elsewhere may be
            // another agent's; the caller refuses to guess (see `run`).
            return Ok((Some(BTreeSet::from([args.namespace.clone()])), false));
        };
        {
            let agent_args = d
                .spec
                .and_then(|s| s.template.spec)
                .and_then(|s| s.containers.into_iter().find(|c| c.name == "agent"))
                .and_then(|c| c.args)
                .unwrap_or_default();
            let mut it = agent_args.iter();
            while let Some(a) = it.next() {
                if a == "--watch-namespace" {
                    if let Some(v) = it.next() {
                        watched.extend(v.split(',').map(str::to_string));
                    }
                } else if let Some(v) = a.strip_prefix("--watch-namespace=") {
                    watched.extend(v.split(',').map(str::to_string));
                }
            }
        }
    }
    if watched.is_empty() {
        return Ok((None, true));
    }
    watched.push(args.namespace.clone());
    Ok((
        Some(watched.into_iter().filter(|n| !n.is_empty()).collect()),
        true,
    ))
}

async fn agent_releases(
    client: &kube::Client,
    scope: &Option<BTreeSet<String>>,
) -> Result<Vec<Release>> {
    match list_releases(client, scope).await {
        // No Release CRD (never installed, or removed): no Releases.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Vec::new()),
        other => Ok(other?),
    }
}

async fn list_releases(
    client: &kube::Client,
    scope: &Option<BTreeSet<String>>,
) -> Result<Vec<Release>, kube::Error> {
    Ok(match scope {
        None => {
            Api::<Release>::all(client.clone())
                .list(&ListParams::default())
                .await?
                .items
        }
        Some(namespaces) => {
            let mut out = Vec::new();
            for ns in namespaces {
                out.extend(
                    Api::<Release>::namespaced(client.clone(), ns)
                        .list(&ListParams::default())
                        .await?
                        .items,
                );
            }
            out
        }
    })
}

fn names(releases: &[Release]) -> String {
    releases
        .iter()
        .map(|r| format!("{}/{}", r.namespace().unwrap_or_default(), r.name_any()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn api_for(client: &kube::Client, r: &Release) -> Api<Release> {
    Api::namespaced(client.clone(), &r.namespace().unwrap_or_default())
}

/// Keep the objects: mark each Release `deletionPolicy: Orphan` first (a running agent then
/// finalizes without pruning), delete it, and drop the finalizer ourselves (the agent may be
/// stopped; with the policy set, nothing prunes either way).
async fn orphan(client: &kube::Client, releases: &[Release]) -> Result<()> {
    for r in releases {
        let api = api_for(client, r);
        let name = r.name_any();
        let patch = json!({"spec": {"deletionPolicy": "Orphan"}});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => return Err(e.into()),
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => return Err(e.into()),
        }
        if let Some(current) = api.get_opt(&name).await? {
            remove_finalizer(client, &current).await?;
        }
        println!(
            "Release {}/{name} deleted; its objects were kept",
            r.namespace().unwrap_or_default()
        );
    }
    Ok(())
}

/// Drop the agent's finalizer from a Release (a merge patch of the remaining list).
async fn remove_finalizer(client: &kube::Client, r: &Release) -> Result<()> {
    let finalizers = r.finalizers();
    if !finalizers.iter().any(|f| f == RELEASE_FINALIZER) {
        return Ok(());
    }
    let rest: Vec<&String> = finalizers
        .iter()
        .filter(|f| *f != RELEASE_FINALIZER)
        .collect();
    let patch = json!({"metadata": {"finalizers": rest}});
    match api_for(client, r)
        .patch(
            &r.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Delete the Releases and wait for the running agent to prune and finalize them. Returns the
/// Releases still there at the deadline.
async fn delete_releases(
    client: &kube::Client,
    releases: &[Release],
    timeout: Duration,
) -> Result<Option<Vec<Release>>> {
    for r in releases {
        match api_for(client, r)
            .delete(&r.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let deadline = Instant::now() + timeout;
    loop {
        let mut left = Vec::new();
        for r in releases {
            if let Some(current) = api_for(client, r).get_opt(&r.name_any()).await?
                && current.uid() == r.uid()
            {
                left.push(current);
            }
        }
        if left.is_empty() {
            println!(
                "deleted {} Release(s) and their objects: {}",
                releases.len(),
                names(releases)
            );
            return Ok(None);
        }
        if Instant::now() >= deadline {
            return Ok(Some(left));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Delete what `ferry install` applied in `ns` (its inventory, then the objects it names in
/// case the inventory is gone), except the namespace. True when something could not be deleted.
async fn remove_agent(client: &kube::Client, ns: &str) -> Result<bool> {
    let options = agent_delete_options(ns);
    let mut failed = false;
    match pipeline::delete(client, &options).await {
        Ok(report) => {
            for o in &report.objects {
                if o.key.kind != "Namespace" {
                    println!("{} {}", o.key, o.action.as_str());
                }
            }
            for f in report.failures() {
                if f.key.kind != "Namespace" {
                    failed = true;
                    eprintln!(
                        "failed: {}: {}",
                        f.key,
                        f.message.clone().unwrap_or_default()
                    );
                }
            }
        }
        // Installed another way (the chart) or inventory already gone: the names below.
        Err(ferry_engine::Error::NoInventory { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    for object in install_objects(ns) {
        if let Err(e) = delete_object(client, &object).await {
            failed = true;
            eprintln!("failed: {}: {e}", describe(&object));
        }
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    match leases.delete("ferry-agent", &DeleteParams::default()).await {
        Ok(_) => println!("Lease {ns}/ferry-agent deleted"),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => {
            failed = true;
            eprintln!("failed: Lease {ns}/ferry-agent: {e}");
        }
    }
    Ok(failed)
}

/// The agent's install app in `ns` (written by `ferry install` or `ferry bootstrap`), deleted
/// through its inventory; the namespace itself is never deleted.
fn agent_delete_options(ns: &str) -> DeleteOptions {
    DeleteOptions {
        release: Some(ownership::ReleaseRef {
            namespace: ns.to_string(),
            name: ns.to_string(),
        }),
        legacy_app: Some(inventory::Legacy {
            app: ns.to_string(),
            source_prefix: None,
            push_takeover: false,
        }),
        namespace: Some(ns.to_string()),
        concurrency: 4,
        // The namespace stays: it holds the sealing keys, and may hold more than the agent.
        allow_destructive: false,
        ..DeleteOptions::default()
    }
}

/// Every object any `ferry install` into `ns` may have created (the insecure binding too),
/// except the Namespace, in delete order (the reverse of apply order).
fn install_objects(ns: &str) -> Vec<Value> {
    let every = install::InstallArgs {
        namespace: ns.to_string(),
        insecure_agent_identity_for_tenants: true,
        ..install::InstallArgs::default()
    };
    let mut objects: Vec<Value> = install::manifests(&every)
        .into_iter()
        .filter(|o| o["kind"] != "Namespace")
        .collect();
    objects.reverse();
    objects
}

fn describe(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// The API of one install object's kind (namespaced or cluster-wide) and its name.
fn object_api(client: &kube::Client, object: &Value) -> (Api<DynamicObject>, String) {
    let (group, version) = match object["apiVersion"].as_str().unwrap_or_default() {
        v if v.contains('/') => v.split_once('/').unwrap_or(("", v)),
        v => ("", v),
    };
    let kind = object["kind"].as_str().unwrap_or_default();
    let plural = match kind {
        "NetworkPolicy" => "networkpolicies".to_string(),
        k => format!("{}s", k.to_ascii_lowercase()),
    };
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    (api, name.to_string())
}

/// The object's `Kind ns/name` when it exists in the cluster.
async fn existing(client: &kube::Client, object: &Value) -> Result<Option<String>> {
    let (api, name) = object_api(client, object);
    Ok(api.get_metadata_opt(&name).await?.map(|_| describe(object)))
}

/// Delete one install object by kind and name; absent is fine.
async fn delete_object(client: &kube::Client, object: &Value) -> Result<()> {
    let (api, name) = object_api(client, object);
    match api.delete(&name, &DeleteParams::background()).await {
        Ok(_) => {
            println!("{} deleted", describe(object));
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The CRDs `ferry install` applied (label `ferry.dev/app: ferry-crds`; someone else's, such as
/// bitnami's SealedSecret CRD, never count), and `Kind (crd)` for each of them that still has
/// objects other than those with a UID in `going` (what a dry run would delete first).
async fn crds_and_objects_left(
    client: &kube::Client,
    going: &BTreeSet<String>,
) -> Result<(Vec<String>, Vec<String>)> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut ours = Vec::new();
    let mut left = Vec::new();
    for shipped in ferry_api::all_crd_values() {
        let name = shipped["metadata"]["name"].as_str().unwrap_or_default();
        let Some(crd) = crds.get_opt(name).await? else {
            continue;
        };
        if crd.labels().get("ferry.dev/app").map(String::as_str) != Some(install::CRDS_APP) {
            // Someone else's (e.g. bitnami's SealedSecret CRD): never ours to delete.
            continue;
        }
        let version = crd
            .spec
            .versions
            .iter()
            .find(|v| v.storage)
            .map(|v| v.name.clone())
            .unwrap_or_default();
        let gvk = kube::api::GroupVersionKind::gvk(&crd.spec.group, &version, &crd.spec.names.kind);
        let resource = ApiResource::from_gvk_with_plural(&gvk, &crd.spec.names.plural);
        // One more than `going` holds: if all of them are going, there is no other one.
        let limit = u32::try_from(going.len() + 1).unwrap_or(u32::MAX);
        let objects = Api::<DynamicObject>::all_with(client.clone(), &resource)
            .list_metadata(&ListParams::default().limit(limit))
            .await?;
        if objects.items.iter().any(|o| {
            o.metadata
                .uid
                .as_ref()
                .is_none_or(|uid| !going.contains(uid))
        }) {
            left.push(format!("{} ({})", crd.spec.names.kind, name));
        }
        ours.push(name.to_string());
    }
    Ok((ours, left))
}

/// The CRDs `ferry install` applied (label `ferry.dev/app: ferry-crds`), only when no object of
/// any ferry kind is left anywhere: deleting a CRD deletes every object of its kind, and other
/// agents (other namespaces) share them.
async fn remove_crds(client: &kube::Client) -> Result<u8> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let (ours, left) = crds_and_objects_left(client, &BTreeSet::new()).await?;
    if !left.is_empty() {
        eprintln!(
            "the agent was uninstalled, but the CRDs were kept: ferry objects are left of kinds {} (other agents' or not yet deleted); delete them, then run ferry uninstall --crds again",
            left.join(", ")
        );
        return Ok(EXIT_ERROR);
    }
    // The CRDs' own app (and its inventory in kube-system), then any CRD it no longer lists.
    match pipeline::delete_app(
        client,
        install::CRDS_APP,
        Some(install::CRDS_INVENTORY_NAMESPACE),
        false,
        4,
    )
    .await
    {
        Ok(_) => {}
        Err(ferry_engine::Error::NoInventory { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    for name in &ours {
        match crds.delete(name, &DeleteParams::default()).await {
            Ok(_) => println!("CustomResourceDefinition {name} deleted"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    println!("uninstalled the agent and the CRDs");
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_finalizer_is_the_agents() {
        assert_eq!(super::RELEASE_FINALIZER, ferry_agent::release::FINALIZER);
    }
}
