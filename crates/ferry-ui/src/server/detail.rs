//! One app's page, read from the cluster as the user when it is opened: the live objects of its
//! inventory and what they own (ReplicaSets, Pods, Jobs), Events, the source, image
//! automation. Secrets are never requested: a Secret in the inventory is shown by name only.
//! What the user may not read becomes a note on the page, not an error.

use std::collections::BTreeSet;
use std::sync::Arc;

use ferry_api::Release;
use ferry_api::images::{ImagePolicy, ImageRepository, ImageUpdate};
use ferry_engine::ObjectKey;
use ferry_engine::cluster::api_for;
use ferry_engine::cluster::discovery::{DiscoveryCache, resolver_for};
use ferry_engine::cluster::kube_error::{describe_kube_error, status_code};
use ferry_engine::health::HealthState;
use ferry_engine::inventory::Entry;
use ferry_engine::ownership::Owner;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::Value;

use crate::model::{
    AppHealth, AppKey, AppKind, ConditionRow, Detail, DriftView, HistoryRow, ImageView, LiveObject,
    Root, SourceView, TreeNode, Unassessed, build_tree, push_row, read_inventory, release_row,
    release_source, select_events,
};
use crate::server::store::Store;

/// Why a page could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DetailError {
    #[error("{0} not found (it may have been deleted, or it is in a namespace you cannot read)")]
    NotFound(String),
    #[error("reading {what}: {message}")]
    Api {
        what: String,
        code: Option<u16>,
        message: String,
    },
}

impl DetailError {
    pub fn status(&self) -> u16 {
        match self {
            DetailError::NotFound(_) => 404,
            DetailError::Api { code, .. } => code.unwrap_or(502),
        }
    }
}

fn api_error(what: &str, err: &kube::Error) -> DetailError {
    DetailError::Api {
        what: what.to_string(),
        code: status_code(err),
        message: describe_kube_error(err),
    }
}

/// Kinds whose objects own Pods (directly or through ReplicaSets/Jobs): only then are the
/// namespace's Pods listed for the tree.
const OWNER_KINDS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
];

/// Build the page data for `key`.
pub async fn load(
    client: &Client,
    store: &Store,
    discovery: &Arc<DiscoveryCache>,
    key: &AppKey,
) -> Result<Detail, DetailError> {
    match key.kind {
        AppKind::Release => load_release(client, store, discovery, key).await,
        AppKind::Push => load_push(client, discovery, key).await,
    }
}

async fn load_release(
    client: &Client,
    store: &Store,
    discovery: &Arc<DiscoveryCache>,
    key: &AppKey,
) -> Result<Detail, DetailError> {
    let what = format!("Release {}/{}", key.namespace, key.name);
    let api: Api<Release> = Api::namespaced(client.clone(), &key.namespace);
    let release = api
        .get_opt(&key.name)
        .await
        .map_err(|e| api_error(&what, &e))?
        .ok_or_else(|| DetailError::NotFound(what.clone()))?;
    let mut notes = Vec::new();
    let source_key = release_source(&release);
    let source = load_source(client, discovery, &source_key, &mut notes).await;
    let source_revision = source
        .as_ref()
        .map(|s| s.revision.clone())
        .filter(|r| !r.is_empty())
        .or_else(|| store.source_revision(&source_key));
    let row = release_row(&release, source_revision.as_deref());
    let status = release.status.clone().unwrap_or_default();
    let entries: Vec<Entry> = status
        .inventory
        .iter()
        .map(|e| Entry {
            api_version: e.api_version.clone(),
            key: ObjectKey {
                group: e
                    .api_version
                    .rsplit_once('/')
                    .map(|(g, _)| g.to_string())
                    .unwrap_or_default(),
                kind: e.kind.clone(),
                namespace: e.namespace.clone(),
                name: e.name.clone(),
            },
            fingerprint: None,
        })
        .collect();
    let tree = load_tree(client, discovery, entries, &mut notes).await;
    let mut uids = BTreeSet::new();
    for node in &tree {
        node.uids(&mut uids);
    }
    if let Some(uid) = &release.metadata.uid {
        uids.insert(uid.clone());
    }
    let events = load_events(
        client,
        &row.namespaces,
        &uids,
        Some(("Release", &key.namespace, &key.name)),
        &mut notes,
    )
    .await;
    let images = load_images(client, &key.namespace, &mut notes).await;
    Ok(Detail {
        key: key.clone(),
        suspended: release.spec.suspend,
        rolled_back_from: release
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::server::actions::ANNOTATION_ROLLBACK_FROM))
            .cloned(),
        conditions: status
            .conditions
            .iter()
            .map(ConditionRow::from_condition)
            .collect(),
        history: status
            .history
            .iter()
            .map(|h| HistoryRow {
                revision: h.revision.clone(),
                time: h.time.0.to_string(),
                result: h.result.clone(),
                message: h.message.clone().unwrap_or_default(),
            })
            .collect(),
        drift: DriftView::of_release(&release, source_revision),
        row,
        tree,
        events,
        source,
        images,
        notes,
    })
}

async fn load_push(
    client: &Client,
    discovery: &Arc<DiscoveryCache>,
    key: &AppKey,
) -> Result<Detail, DetailError> {
    let owner = Owner::push(&key.name, &key.namespace).map_err(|e| {
        DetailError::NotFound(format!("push app {}/{} ({e})", key.namespace, key.name))
    })?;
    let name = owner.inventory_name();
    let what = format!("inventory ConfigMap {}/{name}", key.namespace);
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &key.namespace);
    let cm = api
        .get_opt(&name)
        .await
        .map_err(|e| api_error(&what, &e))?
        .ok_or_else(|| DetailError::NotFound(format!("push app {}/{}", key.namespace, key.name)))?;
    let mut row = push_row(&cm).ok_or_else(|| {
        DetailError::NotFound(format!(
            "push app {}/{} ({what} is not a push app's inventory)",
            key.namespace, key.name
        ))
    })?;
    let inventory = read_inventory(&cm).ok_or_else(|| DetailError::NotFound(what.clone()))?;
    let mut notes = Vec::new();
    let tree = load_tree(client, discovery, inventory.objects.clone(), &mut notes).await;
    // A push app has no controller judging it: its health is its objects' worst.
    row.health = worst(&tree);
    let mut uids = BTreeSet::new();
    for node in &tree {
        node.uids(&mut uids);
    }
    let events = load_events(client, &row.namespaces, &uids, None, &mut notes).await;
    Ok(Detail {
        key: key.clone(),
        suspended: false,
        rolled_back_from: None,
        conditions: Vec::new(),
        history: Vec::new(),
        drift: DriftView::default(),
        row,
        tree,
        events,
        source: None,
        images: Vec::new(),
        notes,
    })
}

fn worst(tree: &[TreeNode]) -> AppHealth {
    fn walk(n: &TreeNode, acc: &mut AppHealth) {
        let h = match n.health.state {
            HealthState::Current => AppHealth::Healthy,
            HealthState::InProgress => AppHealth::Progressing,
            HealthState::Failed | HealthState::NotFound => AppHealth::Degraded,
        };
        let rank = |h: AppHealth| match h {
            AppHealth::Degraded => 3,
            AppHealth::Progressing => 2,
            AppHealth::Healthy => 1,
            AppHealth::Unknown => 0,
        };
        if rank(h) > rank(*acc) {
            *acc = h;
        }
        n.children.iter().for_each(|c| walk(c, acc));
    }
    let mut acc = AppHealth::Unknown;
    tree.iter().for_each(|n| walk(n, &mut acc));
    acc
}

/// The inventory's objects, live, and what they own.
async fn load_tree(
    client: &Client,
    discovery: &Arc<DiscoveryCache>,
    entries: Vec<Entry>,
    notes: &mut Vec<String>,
) -> Vec<TreeNode> {
    if entries.is_empty() {
        return Vec::new();
    }
    let mut resolver = match resolver_for(Some(discovery), client, &[]).await {
        Ok(r) => r,
        Err(err) => {
            notes.push(format!("resource tree: {err}"));
            return Vec::new();
        }
    };
    if let Err(err) = resolver.refresh_for_entries(client, &entries).await {
        notes.push(format!("resource tree: {err}"));
    }
    let (resolved, unresolved) = resolver.resolve_entries(entries);
    let mut roots: Vec<Root> = unresolved
        .into_iter()
        .map(|e| Root::Unassessed {
            group: e.key.group.clone(),
            kind: e.key.kind.clone(),
            namespace: e.key.namespace.clone(),
            name: e.key.name.clone(),
            why: Unassessed::Unreadable(format!(
                "kind {} {} is not served by the cluster",
                e.api_version, e.key.kind
            )),
        })
        .collect();
    let fetched: Vec<Root> = futures::stream::iter(resolved.into_iter().map(|(entry, kind)| {
        let client = client.clone();
        async move {
            let k = &entry.key;
            let unassessed = |why| Root::Unassessed {
                group: k.group.clone(),
                kind: k.kind.clone(),
                namespace: k.namespace.clone(),
                name: k.name.clone(),
                why,
            };
            // Never fetched, not even its metadata: annotations such as kubectl's
            // last-applied-configuration can hold the data.
            if k.group.is_empty() && k.kind == "Secret" {
                return unassessed(Unassessed::SecretNotRead);
            }
            let api = api_for(&client, &kind, k.namespace.as_deref());
            match api.get_opt(&k.name).await {
                Ok(Some(obj)) => match serde_json::to_value(&obj) {
                    Ok(json) => Root::Live(LiveObject::from_json(&k.group, &k.kind, &json)),
                    Err(e) => unassessed(Unassessed::Unreadable(e.to_string())),
                },
                Ok(None) => unassessed(Unassessed::Missing),
                Err(e) => unassessed(Unassessed::Unreadable(format!(
                    "cannot read: {}",
                    describe_kube_error(&e)
                ))),
            }
        }
    }))
    .buffer_unordered(16)
    .collect()
    .await;
    roots.extend(fetched);
    let owner_namespaces: BTreeSet<String> = roots
        .iter()
        .filter_map(|r| match r {
            Root::Live(o) if OWNER_KINDS.contains(&o.kind.as_str()) => o.namespace.clone(),
            _ => None,
        })
        .collect();
    let mut descendants = Vec::new();
    for ns in owner_namespaces {
        list_into::<ReplicaSet>(client, &ns, "apps", "ReplicaSet", &mut descendants, notes).await;
        list_into::<Job>(client, &ns, "batch", "Job", &mut descendants, notes).await;
        list_into::<Pod>(client, &ns, "", "Pod", &mut descendants, notes).await;
    }
    build_tree(roots, descendants)
}

async fn list_into<K>(
    client: &Client,
    ns: &str,
    group: &str,
    kind: &str,
    into: &mut Vec<LiveObject>,
    notes: &mut Vec<String>,
) where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    match api.list(&ListParams::default()).await {
        Ok(list) => {
            for item in list.items {
                if let Ok(json) = serde_json::to_value(&item) {
                    // Only objects that have an owner can hang in the tree.
                    if json.pointer("/metadata/ownerReferences").is_some() {
                        into.push(LiveObject::from_json(group, kind, &json));
                    }
                }
            }
        }
        Err(e) => notes.push(format!("{kind}s in {ns}: {}", describe_kube_error(&e))),
    }
}

async fn load_events(
    client: &Client,
    namespaces: &BTreeSet<String>,
    uids: &BTreeSet<String>,
    app_object: Option<(&str, &str, &str)>,
    notes: &mut Vec<String>,
) -> Vec<crate::model::EventRow> {
    let mut all = Vec::new();
    for ns in namespaces {
        let api: Api<Event> = Api::namespaced(client.clone(), ns);
        match api.list(&ListParams::default()).await {
            Ok(list) => all.extend(list.items),
            Err(e) => notes.push(format!("Events in {ns}: {}", describe_kube_error(&e))),
        }
    }
    select_events(all, uids, app_object, 50)
}

async fn load_source(
    client: &Client,
    discovery: &Arc<DiscoveryCache>,
    key: &crate::model::SourceKey,
    notes: &mut Vec<String>,
) -> Option<SourceView> {
    let resolver = match resolver_for(Some(discovery), client, &[]).await {
        Ok(r) => r,
        Err(err) => {
            notes.push(format!("source: {err}"));
            return None;
        }
    };
    let Some(kind) = resolver.resolve(ferry_api::GROUP, ferry_api::VERSION, &key.kind) else {
        return Some(SourceView {
            key: Some(key.clone()),
            note: Some(format!(
                "source kind {} is not served by this cluster",
                key.kind
            )),
            ..SourceView::default()
        });
    };
    let api = api_for(client, &kind, Some(&key.namespace));
    match api.get_opt(&key.name).await {
        Ok(Some(obj)) => {
            let json: Value = serde_json::to_value(&obj).unwrap_or_default();
            Some(SourceView::from_json(key.clone(), &json))
        }
        Ok(None) => Some(SourceView {
            key: Some(key.clone()),
            note: Some(format!("{key} does not exist")),
            ..SourceView::default()
        }),
        Err(e) => Some(SourceView {
            key: Some(key.clone()),
            note: Some(format!("{key}: {}", describe_kube_error(&e))),
            ..SourceView::default()
        }),
    }
}

fn ready_of(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Option<ConditionRow> {
    ferry_api::common::find_condition(conditions, ferry_api::common::READY)
        .map(ConditionRow::from_condition)
}

async fn load_images(client: &Client, ns: &str, notes: &mut Vec<String>) -> Vec<ImageView> {
    let mut views = Vec::new();
    let mut note = |what: &str, e: &kube::Error| {
        // Not installed (image automation is optional): nothing to show, nothing to say.
        if status_code(e) != Some(404) {
            notes.push(format!("{what} in {ns}: {}", describe_kube_error(e)));
        }
    };
    match Api::<ImageRepository>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => views.extend(list.items.into_iter().map(|r| {
            let st = r.status.clone().unwrap_or_default();
            let scan = st.last_scan_result.as_ref();
            ImageView {
                kind: "ImageRepository".into(),
                name: r.metadata.name.clone().unwrap_or_default(),
                summary: format!(
                    "{}: {} tags{}",
                    r.spec.image,
                    scan.map(|s| s.tag_count).unwrap_or(0),
                    scan.map(|s| format!(", latest {}", s.latest_tags.join(" ")))
                        .unwrap_or_default()
                ),
                ready: ready_of(&st.conditions),
            }
        })),
        Err(e) => note("ImageRepositories", &e),
    }
    match Api::<ImagePolicy>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => views.extend(list.items.into_iter().map(|p| {
            let st = p.status.clone().unwrap_or_default();
            ImageView {
                kind: "ImagePolicy".into(),
                name: p.metadata.name.clone().unwrap_or_default(),
                summary: format!(
                    "latest {}{}",
                    st.latest_image.as_deref().unwrap_or("none yet"),
                    st.previous_image
                        .as_deref()
                        .map(|p| format!(" (was {p})"))
                        .unwrap_or_default()
                ),
                ready: ready_of(&st.conditions),
            }
        })),
        Err(e) => note("ImagePolicies", &e),
    }
    match Api::<ImageUpdate>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => views.extend(list.items.into_iter().map(|u| {
            let json = serde_json::to_value(&u).unwrap_or_default();
            let last = json
                .pointer("/status/lastPushCommit")
                .and_then(Value::as_str)
                .unwrap_or("no push yet");
            let conditions = u
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            ImageView {
                kind: "ImageUpdate".into(),
                name: u.metadata.name.clone().unwrap_or_default(),
                summary: format!("last push {last}"),
                ready: ready_of(&conditions),
            }
        })),
        Err(e) => note("ImageUpdates", &e),
    }
    views
}
