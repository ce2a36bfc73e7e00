//! What the dashboard shows, as plain data, pure (no client, no HTML): one row per app (a
//! Release, or a push app found through its inventory ConfigMap), the list filters, the
//! resource tree built from owner references with ferry-engine's health rules per object, and
//! Events. The server fills these from the cluster; the views render them.
//!
//! Nothing here holds an object's body: a row or tree node keeps names, states and messages
//! only, so no Secret value can reach the browser through them (Secrets are not even fetched,
//! see `server::detail`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ferry_api::Release;
use ferry_api::common::{READY, RECONCILING, find_condition};
use ferry_api::drift::{DriftMode, DriftStatus};
use ferry_engine::health::{Health, HealthState, assess};
use ferry_engine::inventory::Inventory;
use ferry_engine::inventory::store::LABEL_INVENTORY;
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::Value;

/// The inventory ConfigMap's data key for a plain (small) inventory (`inventory::store` writes it).
#[cfg(test)]
const INVENTORY_DATA_KEY: &str = "inventory.json";

/// Which kind of app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AppKind {
    Release,
    Push,
}

impl AppKind {
    /// The URL segment and filter value.
    pub fn slug(self) -> &'static str {
        match self {
            AppKind::Release => "release",
            AppKind::Push => "push",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            AppKind::Release => "Release",
            AppKind::Push => "push app",
        }
    }
    pub fn from_slug(s: &str) -> Option<Self> {
        match s {
            "release" => Some(AppKind::Release),
            "push" => Some(AppKind::Push),
            _ => None,
        }
    }
}

/// One app's identity: for a Release its own namespace and name; for a push app the namespace
/// of its inventory and the app name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppKey {
    pub kind: AppKind,
    pub namespace: String,
    pub name: String,
}

impl AppKey {
    /// An HTML id: kind, namespace and name are DNS labels / subdomains, so `--` cannot occur
    /// inside a namespace; anything else is replaced to keep the id a plain token.
    pub fn dom_id(&self) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        format!(
            "app--{}--{}--{}",
            self.kind.slug(),
            clean(&self.namespace),
            clean(&self.name)
        )
    }

    /// The detail page's path.
    pub fn path(&self) -> String {
        format!(
            "/apps/{}/{}/{}",
            self.kind.slug(),
            self.namespace,
            self.name
        )
    }
}

/// Sync state, Argo CD's vocabulary where it fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    /// Applied at the source's current revision.
    Synced,
    /// The source moved on and the Release has not applied its revision yet, or (drift
    /// `detect`) objects differ from git and were left so (`status.drift`).
    OutOfSync,
    /// The agent is working on it (or has not seen it yet).
    Progressing,
    /// The last attempt failed.
    Failed,
    /// `spec.suspend`: nothing is applied.
    Suspended,
    /// A push app: applied by a pipeline; nothing in the cluster tracks its source.
    Applied,
}

impl SyncState {
    pub fn slug(self) -> &'static str {
        match self {
            SyncState::Synced => "synced",
            SyncState::OutOfSync => "out-of-sync",
            SyncState::Progressing => "progressing",
            SyncState::Failed => "failed",
            SyncState::Suspended => "suspended",
            SyncState::Applied => "applied",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            SyncState::Synced => "Synced",
            SyncState::OutOfSync => "Out of sync",
            SyncState::Progressing => "Progressing",
            SyncState::Failed => "Failed",
            SyncState::Suspended => "Suspended",
            SyncState::Applied => "Applied",
        }
    }
    pub const ALL: [SyncState; 6] = [
        SyncState::Synced,
        SyncState::OutOfSync,
        SyncState::Progressing,
        SyncState::Failed,
        SyncState::Suspended,
        SyncState::Applied,
    ];
}

/// An app's health as the list shows it: the Release's Ready condition (the agent waits for
/// health when `spec.wait` is set); push apps are assessed on their own page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppHealth {
    Healthy,
    Progressing,
    Degraded,
    Unknown,
}

impl AppHealth {
    pub fn slug(self) -> &'static str {
        match self {
            AppHealth::Healthy => "healthy",
            AppHealth::Progressing => "progressing",
            AppHealth::Degraded => "degraded",
            AppHealth::Unknown => "unknown",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            AppHealth::Healthy => "Healthy",
            AppHealth::Progressing => "Progressing",
            AppHealth::Degraded => "Degraded",
            AppHealth::Unknown => "Unknown",
        }
    }
}

/// One line of the apps list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRow {
    pub key: AppKey,
    pub sync: SyncState,
    pub health: AppHealth,
    /// Last applied revision (full; the view shortens it).
    pub revision: Option<String>,
    /// RFC 3339 time of the last change (last sync, or the inventory's apply time).
    pub last_change: Option<String>,
    /// The Ready message, or what the inventory says.
    pub message: String,
    /// The source, `Kind ns/name` (Releases only).
    pub source: Option<SourceKey>,
    /// Namespaces the app's objects live in (for the detail page's live watches).
    pub namespaces: BTreeSet<String>,
}

/// A Release's source reference, resolved to a namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceKey {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// The source a Release reads from.
pub fn release_source(release: &Release) -> SourceKey {
    let namespace = release
        .spec
        .source_ref
        .namespace
        .clone()
        .or_else(|| release.metadata.namespace.clone())
        .unwrap_or_default();
    SourceKey {
        kind: release.spec.source_ref.kind.clone(),
        namespace,
        name: release.spec.source_ref.name.clone(),
    }
}

/// A Release's row. `source_revision` is the revision its source last fetched, when known:
/// it tells Synced from Out of sync.
pub fn release_row(release: &Release, source_revision: Option<&str>) -> AppRow {
    let key = AppKey {
        kind: AppKind::Release,
        namespace: release.metadata.namespace.clone().unwrap_or_default(),
        name: release.metadata.name.clone().unwrap_or_default(),
    };
    let status = release.status.clone().unwrap_or_default();
    let ready = find_condition(&status.conditions, READY);
    let reconciling =
        find_condition(&status.conditions, RECONCILING).is_some_and(|c| c.status == "True");
    let observed_current = match (release.metadata.generation, status.observed_generation) {
        (Some(generation), Some(observed)) => observed >= generation,
        (Some(_), None) => false,
        _ => true,
    };
    let revision = status.last_applied_revision.clone();
    // `status.drift` of a detect-mode check: objects that differ from git and were left so.
    let drifted_left = status
        .drift
        .as_ref()
        .filter(|d| d.mode == DriftMode::Detect.as_str())
        .map(|d| d.count.max(d.objects.len() as u32))
        .filter(|n| *n > 0);
    let sync = if release.spec.suspend {
        SyncState::Suspended
    } else if !observed_current || reconciling {
        SyncState::Progressing
    } else {
        match ready.map(|c| c.status.as_str()) {
            Some("True") => match (source_revision, revision.as_deref()) {
                (Some(source), Some(applied)) if source != applied => SyncState::OutOfSync,
                // Applied at git's revision, but objects were edited and left so (detect).
                _ if drifted_left.is_some() => SyncState::OutOfSync,
                _ => SyncState::Synced,
            },
            Some("False") => SyncState::Failed,
            _ => SyncState::Progressing,
        }
    };
    let health = match ready.map(|c| c.status.as_str()) {
        Some("True") => AppHealth::Healthy,
        Some("False") if reconciling => AppHealth::Progressing,
        Some("False") => AppHealth::Degraded,
        _ if status.conditions.is_empty() => AppHealth::Unknown,
        _ => AppHealth::Progressing,
    };
    let last_change = status
        .history
        .first()
        .map(|h| h.time.0.to_string())
        .or_else(|| ready.map(|c| c.last_transition_time.0.to_string()));
    let mut namespaces: BTreeSet<String> = status
        .inventory
        .iter()
        .filter_map(|e| e.namespace.clone())
        .collect();
    namespaces.insert(key.namespace.clone());
    if let Some(target) = &release.spec.target_namespace {
        namespaces.insert(target.clone());
    }
    AppRow {
        key,
        sync,
        health,
        revision,
        last_change,
        message: match drifted_left {
            Some(n) => format!(
                "Drift: {n} object(s) differ from git, not corrected (spec.drift.mode detect). {}",
                ready.map(|c| c.message.as_str()).unwrap_or_default()
            )
            .trim_end()
            .to_string(),
            None => ready.map(|c| c.message.clone()).unwrap_or_default(),
        },
        source: Some(release_source(release)),
        namespaces,
    }
}

/// A push app's row from its inventory ConfigMap; `None` for a Release's inventory (the
/// Release has its own row) or a ConfigMap that is not a readable ferry inventory.
pub fn push_row(cm: &ConfigMap) -> Option<AppRow> {
    let inventory = read_inventory(cm)?;
    let namespace = cm.metadata.namespace.clone()?;
    // A Release's inventory stores the owner id `<ns>/release/<ns>/<name>`; a push app's is
    // `<ns>/<app>` (or absent in inventories older than stored owners).
    if inventory
        .owner
        .as_deref()
        .is_some_and(|o| o.split('/').count() != 2)
    {
        return None;
    }
    if cm
        .metadata
        .name
        .as_deref()
        .is_some_and(|n| n.starts_with("ferry-release-"))
    {
        return None;
    }
    let mut namespaces: BTreeSet<String> = inventory
        .objects
        .iter()
        .filter_map(|e| e.key.namespace.clone())
        .collect();
    namespaces.insert(namespace.clone());
    Some(AppRow {
        key: AppKey {
            kind: AppKind::Push,
            namespace,
            name: inventory.app.clone(),
        },
        sync: SyncState::Applied,
        health: AppHealth::Unknown,
        revision: inventory.revision.clone(),
        last_change: Some(inventory.applied_at.clone()).filter(|t| !t.is_empty()),
        message: format!(
            "{} objects applied from {}",
            inventory.objects.len(),
            inventory.source
        ),
        source: None,
        namespaces,
    })
}

/// The inventory in a ConfigMap labelled as one, if it parses.
pub fn read_inventory(cm: &ConfigMap) -> Option<Inventory> {
    cm.metadata.labels.as_ref()?.get(LABEL_INVENTORY)?;
    ferry_engine::inventory::store::decode(cm).ok()
}

/// Whether `s` is a Kubernetes object or namespace name (DNS-1123 subdomain characters): what
/// may go into an API path. Anything from a URL or an annotation is checked with it first.
pub fn is_kube_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !s.starts_with(['-', '.'])
        && !s.contains("..")
}

/// A revision as the list shows it: `main@sha1:0123456789ab…` becomes `main@0123456`.
pub fn short_revision(revision: &str) -> String {
    match revision.split_once("@sha1:") {
        Some((reference, sha)) => {
            format!("{reference}@{}", sha.chars().take(7).collect::<String>())
        }
        None if revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()) => {
            revision[..7].to_string()
        }
        None => revision.to_string(),
    }
}

/// The list filters (query parameters of `/`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Filter {
    /// Substring of namespace/name.
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub namespace: String,
    /// A [`SyncState::slug`].
    #[serde(default)]
    pub sync: String,
    /// An [`AppHealth::slug`].
    #[serde(default)]
    pub health: String,
    /// An [`AppKind::slug`].
    #[serde(default)]
    pub kind: String,
}

impl Filter {
    pub fn matches(&self, row: &AppRow) -> bool {
        let q = self.q.trim().to_ascii_lowercase();
        (q.is_empty()
            || format!("{}/{}", row.key.namespace, row.key.name)
                .to_ascii_lowercase()
                .contains(&q))
            && (self.namespace.is_empty() || row.key.namespace == self.namespace)
            && (self.sync.is_empty() || row.sync.slug() == self.sync)
            && (self.health.is_empty() || row.health.slug() == self.health)
            && (self.kind.is_empty() || row.key.kind.slug() == self.kind)
    }

    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }
}

/// One live object as the tree needs it: identity, owners, health. Built from the object's
/// JSON, which is then dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveObject {
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
    /// UIDs of its owners (ownerReferences).
    pub owners: Vec<String>,
    pub health: Health,
}

impl LiveObject {
    /// Assess a live object with ferry-engine's health rules.
    pub fn from_json(group: &str, kind: &str, obj: &Value) -> Self {
        let meta = &obj["metadata"];
        LiveObject {
            group: group.to_string(),
            kind: kind.to_string(),
            namespace: meta["namespace"].as_str().map(str::to_string),
            name: meta["name"].as_str().unwrap_or_default().to_string(),
            uid: meta["uid"].as_str().unwrap_or_default().to_string(),
            owners: meta["ownerReferences"]
                .as_array()
                .map(|refs| {
                    refs.iter()
                        .filter_map(|r| r["uid"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            health: assess(group, kind, obj),
        }
    }
}

/// What the tree says about one object of the inventory that could not be assessed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unassessed {
    /// Not in the cluster.
    Missing,
    /// A Secret: ferry ui never reads Secrets (their values must not reach a browser).
    SecretNotRead,
    /// The API server refused (RBAC), or the kind is not served.
    Unreadable(String),
}

/// One node of the resource tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeNode {
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: Option<String>,
    pub health: Health,
    /// Set when the object was not assessed (see [`Unassessed`]).
    pub note: Option<String>,
    pub children: Vec<TreeNode>,
}

impl TreeNode {
    /// Every node's uid, depth first (for Events).
    pub fn uids(&self, into: &mut BTreeSet<String>) {
        if let Some(uid) = &self.uid {
            into.insert(uid.clone());
        }
        for child in &self.children {
            child.uids(into);
        }
    }

    /// Count of nodes in this subtree.
    pub fn size(&self) -> usize {
        1 + self.children.iter().map(TreeNode::size).sum::<usize>()
    }
}

/// A root of the tree: an inventory entry, live or not.
#[derive(Debug, Clone)]
pub enum Root {
    Live(LiveObject),
    Unassessed {
        group: String,
        kind: String,
        namespace: Option<String>,
        name: String,
        why: Unassessed,
    },
}

/// Build the tree: each inventory entry is a root; `descendants` (ReplicaSets, Pods, Jobs, ...
/// of the same namespaces) hang under whatever owns them, by ownerReferences uid, to any depth.
/// Descendants owned by nothing in the tree are left out; cycles cannot recurse forever (each
/// uid is placed once).
pub fn build_tree(roots: Vec<Root>, descendants: Vec<LiveObject>) -> Vec<TreeNode> {
    let mut by_owner: HashMap<String, Vec<LiveObject>> = HashMap::new();
    for d in descendants {
        for owner in &d.owners {
            by_owner.entry(owner.clone()).or_default().push(d.clone());
        }
    }
    for children in by_owner.values_mut() {
        children.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
    }
    let mut placed = BTreeSet::new();
    let mut nodes: Vec<TreeNode> = roots
        .into_iter()
        .map(|root| match root {
            Root::Live(obj) => {
                placed.insert(obj.uid.clone());
                grow(obj, &by_owner, &mut placed)
            }
            Root::Unassessed {
                group,
                kind,
                namespace,
                name,
                why,
            } => {
                let (health, note) = match why {
                    Unassessed::Missing => (Health::not_found(), None),
                    Unassessed::SecretNotRead => (
                        Health {
                            state: HealthState::Current,
                            message: String::new(),
                        },
                        Some(
                            "Secret: not read by ferry ui (its values never reach the browser)"
                                .to_string(),
                        ),
                    ),
                    Unassessed::Unreadable(message) => (
                        Health {
                            state: HealthState::InProgress,
                            message: message.clone(),
                        },
                        Some(message),
                    ),
                };
                TreeNode {
                    group,
                    kind,
                    namespace,
                    name,
                    uid: None,
                    health,
                    note,
                    children: Vec::new(),
                }
            }
        })
        .collect();
    nodes.sort_by(|a, b| (&a.namespace, &a.kind, &a.name).cmp(&(&b.namespace, &b.kind, &b.name)));
    nodes
}

fn grow(
    obj: LiveObject,
    by_owner: &HashMap<String, Vec<LiveObject>>,
    placed: &mut BTreeSet<String>,
) -> TreeNode {
    let mut children = Vec::new();
    if let Some(owned) = by_owner.get(&obj.uid) {
        for child in owned {
            if placed.insert(child.uid.clone()) {
                children.push(grow(child.clone(), by_owner, placed));
            }
        }
    }
    TreeNode {
        group: obj.group,
        kind: obj.kind,
        namespace: obj.namespace,
        name: obj.name,
        uid: Some(obj.uid),
        health: obj.health,
        note: None,
        children,
    }
}

/// One Event, as the Events section shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// RFC 3339; the newest first.
    pub time: String,
    /// `Normal` or `Warning`.
    pub type_: String,
    pub reason: String,
    /// `Kind/name` of the object it is about.
    pub object: String,
    pub message: String,
    pub count: i32,
}

/// Keep the Events about `uids` (or about the app object itself, by kind and name), newest
/// first, at most `limit`.
pub fn select_events(
    events: Vec<k8s_openapi::api::core::v1::Event>,
    uids: &BTreeSet<String>,
    app_object: Option<(&str, &str, &str)>,
    limit: usize,
) -> Vec<EventRow> {
    let mut rows: Vec<EventRow> = events
        .into_iter()
        .filter(|e| {
            let io = &e.involved_object;
            io.uid.as_ref().is_some_and(|u| uids.contains(u))
                || app_object.is_some_and(|(kind, ns, name)| {
                    io.kind.as_deref() == Some(kind)
                        && io.namespace.as_deref() == Some(ns)
                        && io.name.as_deref() == Some(name)
                })
        })
        .map(|e| {
            let time = e
                .last_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
                .or_else(|| {
                    e.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.to_string())
                })
                .unwrap_or_default();
            EventRow {
                time,
                type_: e.type_.unwrap_or_default(),
                reason: e.reason.unwrap_or_default(),
                object: format!(
                    "{}/{}",
                    e.involved_object.kind.unwrap_or_default(),
                    e.involved_object.name.unwrap_or_default()
                ),
                message: e.message.unwrap_or_default(),
                count: e.count.unwrap_or(1),
            }
        })
        .collect();
    rows.sort_by(|a, b| b.time.cmp(&a.time));
    rows.truncate(limit);
    rows
}

/// Counts per sync state, for the list's summary line.
pub fn summary(rows: &[&AppRow]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for row in rows {
        *counts.entry(row.sync.label()).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn release(value: Value) -> Release {
        serde_json::from_value(value).expect("release")
    }

    fn base(status: Value) -> Value {
        json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "Release",
            "metadata": {"name": "web", "namespace": "team", "generation": 2},
            "spec": {"sourceRef": {"kind": "GitSource", "name": "repo"}, "targetNamespace": "shop"},
            "status": status,
        })
    }

    fn ready(status: &str) -> Value {
        json!({"type": "Ready", "status": status, "reason": "R", "message": "msg",
               "lastTransitionTime": "2026-12-01T10:00:00Z"})
    }

    #[test]
    fn release_rows_tell_synced_out_of_sync_failed_suspended() {
        let synced = release(base(json!({
            "observedGeneration": 2, "conditions": [ready("True")],
            "lastAppliedRevision": "main@sha1:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "inventory": [{"apiVersion": "v1", "kind": "ConfigMap", "namespace": "shop", "name": "a"}],
            "history": [{"revision": "main@sha1:aaaa", "time": "2026-12-01T11:00:00Z", "result": "Succeeded"}],
        })));
        let row = release_row(
            &synced,
            Some("main@sha1:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        );
        assert_eq!(row.sync, SyncState::Synced);
        assert_eq!(row.health, AppHealth::Healthy);
        assert_eq!(row.last_change.as_deref(), Some("2026-12-01T11:00:00Z"));
        assert_eq!(
            row.namespaces.iter().cloned().collect::<Vec<_>>(),
            vec!["shop".to_string(), "team".to_string()]
        );
        assert_eq!(
            row.source.as_ref().map(|s| s.to_string()).as_deref(),
            Some("GitSource team/repo")
        );
        let row = release_row(
            &synced,
            Some("main@sha1:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
        );
        assert_eq!(row.sync, SyncState::OutOfSync);

        let failed = release(base(
            json!({"observedGeneration": 2, "conditions": [ready("False")]}),
        ));
        assert_eq!(release_row(&failed, None).sync, SyncState::Failed);
        assert_eq!(release_row(&failed, None).health, AppHealth::Degraded);

        let unseen = release(base(
            json!({"observedGeneration": 1, "conditions": [ready("True")]}),
        ));
        assert_eq!(release_row(&unseen, None).sync, SyncState::Progressing);

        let mut suspended = failed.clone();
        suspended.spec.suspend = true;
        assert_eq!(release_row(&suspended, None).sync, SyncState::Suspended);

        let fresh = release(base(json!({})));
        let row = release_row(&fresh, None);
        assert_eq!(
            (row.sync, row.health),
            (SyncState::Progressing, AppHealth::Unknown)
        );
    }

    fn inventory_cm(name: &str, owner: Option<&str>) -> ConfigMap {
        let mut inventory = json!({"app": "web", "source": "./deploy", "revision": "abc",
            "appliedAt": "2026-12-01T09:00:00Z",
            "objects": [{"apiVersion": "v1", "group": "", "kind": "ConfigMap", "namespace": "shop", "name": "a"}]});
        if let Some(owner) = owner {
            inventory["owner"] = json!(owner);
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "labels": {LABEL_INVENTORY: "web"}},
            "data": {INVENTORY_DATA_KEY: inventory.to_string()},
        }))
        .expect("cm")
    }

    #[test]
    fn push_apps_come_from_push_inventories_only() {
        let row =
            push_row(&inventory_cm("ferry-inventory-web", Some("shop/web"))).expect("push app");
        assert_eq!(row.key.kind, AppKind::Push);
        assert_eq!(row.key.name, "web");
        assert_eq!(row.revision.as_deref(), Some("abc"));
        assert!(push_row(&inventory_cm("ferry-inventory-web", None)).is_some());
        assert!(
            push_row(&inventory_cm(
                "ferry-release-web-0123",
                Some("shop/release/team/web")
            ))
            .is_none()
        );
        // Not labelled, or not JSON: not an app.
        let mut cm = inventory_cm("ferry-inventory-web", None);
        cm.metadata.labels = None;
        assert!(push_row(&cm).is_none());
        let mut cm = inventory_cm("ferry-inventory-web", None);
        cm.data = Some([(INVENTORY_DATA_KEY.to_string(), "{".to_string())].into());
        assert!(push_row(&cm).is_none());
    }

    #[test]
    fn filters_combine() {
        let row = push_row(&inventory_cm("ferry-inventory-web", None)).expect("row");
        let f = |v: Value| -> Filter { serde_json::from_value(v).expect("filter") };
        assert!(f(json!({})).matches(&row));
        assert!(f(json!({"q": "SHOP/W"})).matches(&row));
        assert!(!f(json!({"q": "db"})).matches(&row));
        assert!(f(json!({"kind": "push", "sync": "applied", "namespace": "shop"})).matches(&row));
        assert!(!f(json!({"kind": "release"})).matches(&row));
        assert!(!f(json!({"health": "healthy"})).matches(&row));
    }

    fn drift_view(spec_drift: Value, status_drift: Option<Value>) -> DriftView {
        let rev = format!("main@sha1:{}", "a".repeat(40));
        let mut status = json!({"lastAppliedRevision": rev});
        if let Some(d) = status_drift {
            status["drift"] = d;
        }
        let mut value = base(status);
        value["spec"]["drift"] = spec_drift;
        DriftView::of_release(&release(value), Some(rev))
    }

    #[test]
    fn drift_findings_are_never_summarised_as_matching_git() {
        let found = json!({"mode": "detect", "count": 3, "revision": format!("main@sha1:{}", "a".repeat(40)),
            "objects": [{"apiVersion": "v1", "kind": "ConfigMap", "namespace": "shop", "name": "settings", "paths": ["/data/value"]},
                        {"apiVersion": "v1", "kind": "Secret", "namespace": "shop", "name": "db", "missing": true}]});
        let v = drift_view(
            json!({"mode": "detect", "ignore": [{"target": {"kind": "Deployment"}, "paths": ["/spec/replicas"]}]}),
            Some(found.clone()),
        );
        assert_eq!(v.mode, DriftMode::Detect);
        assert!(v.policy().contains("not corrected"), "{}", v.policy());
        let summary = v.summary();
        assert!(
            summary.contains("differs from git")
                && summary.contains("3 objects")
                && summary.contains("not corrected"),
            "{summary}"
        );
        assert!(
            !summary.contains("matches") && !summary.contains("has what git has"),
            "{summary}"
        );
        assert_eq!(v.findings.as_ref().map(|f| f.objects.len()), Some(2));
        assert_eq!(v.ignored, vec!["Deployment: /spec/replicas".to_string()]);

        // Correct mode: found and corrected.
        let mut corrected = found;
        corrected["mode"] = json!("correct");
        corrected["objects"] = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "settings", "paths": ["/data/value"]}]);
        corrected["count"] = json!(1);
        let v = drift_view(json!({}), Some(corrected));
        assert_eq!(v.mode, DriftMode::Correct);
        assert!(v.policy().starts_with("correct: ") && v.policy().contains("are corrected"));
        assert!(
            v.summary().contains("1 object drifted") && v.summary().contains("corrected them"),
            "{}",
            v.summary()
        );

        // The row: out of sync while detect-mode drift is left in place, with the count.
        let rev = format!("main@sha1:{}", "a".repeat(40));
        let mut value = base(json!({"lastAppliedRevision": rev, "observedGeneration": 2,
            "conditions": [ready("True")], "drift": {"mode": "detect", "count": 2}}));
        value["spec"]["drift"] = json!({"mode": "detect"});
        let row = release_row(&release(value.clone()), Some(&rev));
        assert_eq!(row.sync, SyncState::OutOfSync);
        assert!(
            row.message
                .starts_with("Drift: 2 object(s) differ from git"),
            "{}",
            row.message
        );
        value["status"]["drift"]["mode"] = json!("correct");
        assert_eq!(
            release_row(&release(value), Some(&rev)).sync,
            SyncState::Synced
        );

        // Nothing found: no claim beyond what the agent reported.
        let v = drift_view(json!({"mode": "detect"}), None);
        assert!(v.findings.is_none());
        assert!(
            v.summary().contains("No drift reported") && v.summary().contains("detect mode"),
            "{}",
            v.summary()
        );
        // An empty finding is no finding.
        let v = drift_view(
            json!({"mode": "detect"}),
            Some(json!({"mode": "detect", "count": 0})),
        );
        assert!(v.findings.is_none());
        // Not applied yet.
        let mut never = base(json!({}));
        never["spec"]["drift"] = json!({"mode": "detect"});
        assert_eq!(
            DriftView::of_release(&release(never), None).summary(),
            "Nothing applied yet."
        );
    }

    fn obj(kind: &str, name: &str, uid: &str, owner: Option<&str>) -> LiveObject {
        let group = match kind {
            "Deployment" | "ReplicaSet" => "apps",
            _ => "",
        };
        let owners = owner.map(|o| json!([{"uid": o}])).unwrap_or(json!([]));
        LiveObject::from_json(
            group,
            kind,
            &json!({"metadata": {"name": name, "namespace": "shop", "uid": uid, "ownerReferences": owners},
                    "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
        )
    }

    #[test]
    fn tree_follows_owner_references_to_any_depth() {
        let roots = vec![
            Root::Live(obj("Deployment", "web", "d1", None)),
            Root::Unassessed {
                group: String::new(),
                kind: "Secret".into(),
                namespace: Some("shop".into()),
                name: "creds".into(),
                why: Unassessed::SecretNotRead,
            },
        ];
        let descendants = vec![
            obj("ReplicaSet", "web-1", "r1", Some("d1")),
            obj("Pod", "web-1-a", "p1", Some("r1")),
            obj("Pod", "web-1-b", "p2", Some("r1")),
            obj("Pod", "stray", "p3", Some("other")),
            // A cycle must not recurse forever.
            obj("Pod", "loop", "d1", Some("p1")),
        ];
        let tree = build_tree(roots, descendants);
        assert_eq!(tree.len(), 2);
        let deployment = tree.iter().find(|n| n.kind == "Deployment").expect("root");
        assert_eq!(deployment.size(), 4);
        assert_eq!(deployment.children[0].kind, "ReplicaSet");
        assert_eq!(deployment.children[0].children.len(), 2);
        assert_eq!(
            deployment.children[0].children[0].health.state,
            HealthState::Current
        );
        let secret = tree
            .iter()
            .find(|n| n.kind == "Secret")
            .expect("secret root");
        assert!(
            secret
                .note
                .as_deref()
                .unwrap_or_default()
                .contains("not read")
        );
        let mut uids = BTreeSet::new();
        deployment.uids(&mut uids);
        assert!(uids.contains("p2") && !uids.contains("p3"));
    }

    #[test]
    fn revisions_shorten() {
        assert_eq!(
            short_revision("main@sha1:0123456789abcdef0123456789abcdef01234567"),
            "main@0123456"
        );
        assert_eq!(
            short_revision("0123456789abcdef0123456789abcdef01234567"),
            "0123456"
        );
        assert_eq!(short_revision("v1.2.3"), "v1.2.3");
    }
}

/// One condition of the app or its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionRow {
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub time: String,
}

impl ConditionRow {
    pub fn from_condition(c: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition) -> Self {
        ConditionRow {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            time: c.last_transition_time.0.to_string(),
        }
    }

    /// From a condition in an object's JSON (any kind).
    pub fn from_json(c: &Value) -> Self {
        let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
        ConditionRow {
            type_: s("type"),
            status: s("status"),
            reason: s("reason"),
            message: s("message"),
            time: s("lastTransitionTime"),
        }
    }
}

/// One sync of `status.history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    pub revision: String,
    pub time: String,
    pub result: String,
    pub message: String,
}

/// Git and the cluster, for the "Git and cluster" section: what git has, what was applied, the
/// drift policy (`spec.drift`) and what the agent's last drift check found (`status.drift`:
/// objects and JSON pointers, never values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriftView {
    pub source_revision: Option<String>,
    pub applied_revision: Option<String>,
    pub attempted_revision: Option<String>,
    /// `spec.drift.mode` (default `correct`).
    pub mode: DriftMode,
    /// `spec.drift.ignore`, one line per rule: `Deployment web: /spec/replicas`.
    pub ignored: Vec<String>,
    /// `status.drift`: absent when no drift was seen since the last apply.
    pub findings: Option<DriftStatus>,
}

impl DriftView {
    /// From the Release and the source's current revision.
    pub fn of_release(release: &Release, source_revision: Option<String>) -> Self {
        let status = release.status.clone().unwrap_or_default();
        let spec = release.spec.drift.clone().unwrap_or_default();
        let ignored = spec
            .ignore
            .iter()
            .map(|rule| {
                let t = &rule.target;
                let mut target: Vec<String> = Vec::new();
                if let Some(g) = &t.group {
                    target.push(if g.is_empty() {
                        "core group".to_string()
                    } else {
                        g.clone()
                    });
                }
                if let Some(k) = &t.kind {
                    target.push(k.clone());
                }
                if let Some(ns) = &t.namespace {
                    target.push(format!("in {ns}"));
                }
                if let Some(n) = &t.name {
                    target.push(n.clone());
                }
                let target = if target.is_empty() {
                    "every object".to_string()
                } else {
                    target.join(" ")
                };
                format!("{target}: {}", rule.paths.join(", "))
            })
            .collect();
        DriftView {
            source_revision,
            applied_revision: status.last_applied_revision.clone(),
            attempted_revision: status.last_attempted_revision.clone(),
            mode: spec.mode,
            ignored,
            findings: status
                .drift
                .filter(|d| d.count > 0 || !d.objects.is_empty()),
        }
    }

    /// The drift policy in words: what the agent does about a hand edit.
    pub fn policy(&self) -> &'static str {
        match self.mode {
            DriftMode::Detect => {
                "detect: hand edits and deletions of applied objects are reported here and not corrected (left in place until a new revision or spec is applied)"
            }
            DriftMode::Correct => {
                "correct: hand edits and deletions of applied objects are corrected (the agent re-applies what git has)"
            }
        }
    }

    /// Where git and the cluster stand, in one or two sentences. Never says the cluster matches
    /// git when `status.drift` lists differences.
    pub fn summary(&self) -> String {
        let (Some(applied), source) = (&self.applied_revision, &self.source_revision) else {
            return "Nothing applied yet.".to_string();
        };
        let revisions = match source {
            Some(s) if s == applied => "Git's current revision is the applied one.".to_string(),
            Some(s) => format!(
                "Git has a newer revision ({}) than the applied one: the next sync applies it.",
                short_revision(s)
            ),
            None => "The source's current revision is unknown.".to_string(),
        };
        let drift = match &self.findings {
            Some(f) => {
                let at = f
                    .revision
                    .as_deref()
                    .map(|r| format!(" at {}", short_revision(r)))
                    .unwrap_or_default();
                let n = f.count.max(f.objects.len() as u32);
                let objects = if n == 1 { "object" } else { "objects" };
                if f.mode == DriftMode::Detect.as_str() {
                    format!(
                        "The cluster differs from git: {n} {objects} drifted from git{at} and the agent left them as they are (detect mode: reported, not corrected)."
                    )
                } else {
                    format!(
                        "The agent's last check found {n} {objects} drifted from git{at} and corrected them (correct mode: re-applied)."
                    )
                }
            }
            None => match self.mode {
                DriftMode::Detect => "No drift reported since the last apply; in detect mode the agent reports hand edits here and leaves them in place.".to_string(),
                DriftMode::Correct => "No drift reported since the last apply; the agent corrects hand edits of the applied objects when it sees them.".to_string(),
            },
        };
        format!("{revisions} {drift}")
    }
}

/// A source object (GitSource, OCISource, ...), read generically from its JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceView {
    pub key: Option<SourceKey>,
    /// `spec.url` (credentials in it are cut off before showing).
    pub url: String,
    /// The branch/tag/semver/commit asked for, as `key=value`.
    pub reference: String,
    pub revision: String,
    pub last_fetch: String,
    pub suspended: bool,
    pub conditions: Vec<ConditionRow>,
    /// Why it could not be read, if it could not.
    pub note: Option<String>,
}

impl SourceView {
    pub fn from_json(key: SourceKey, obj: &Value) -> Self {
        let reference = obj
            .pointer("/spec/ref")
            .and_then(Value::as_object)
            .map(|r| {
                r.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let s = |p: &str| {
            obj.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        SourceView {
            key: Some(key),
            url: without_userinfo(&s("/spec/url")),
            reference,
            revision: s("/status/revision"),
            last_fetch: s("/status/lastFetchTime"),
            suspended: obj
                .pointer("/spec/suspend")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            conditions: obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .map(|cs| cs.iter().map(ConditionRow::from_json).collect())
                .unwrap_or_default(),
            note: None,
        }
    }
}

/// `https://user:pass@host/x` without `user:pass@`: a URL may carry credentials.
pub fn without_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority
                .rsplit_once('@')
                .map(|(_, h)| h)
                .unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

/// One image automation object of the app's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageView {
    pub kind: String,
    pub name: String,
    /// What it found or did: latest image, tag count, last push.
    pub summary: String,
    pub ready: Option<ConditionRow>,
}

/// Everything the detail page shows about one app.
#[derive(Debug, Clone)]
pub struct Detail {
    pub key: AppKey,
    pub row: AppRow,
    pub suspended: bool,
    /// Set when the Release is rolled back: the source it follows otherwise.
    pub rolled_back_from: Option<String>,
    pub conditions: Vec<ConditionRow>,
    pub history: Vec<HistoryRow>,
    pub drift: DriftView,
    pub tree: Vec<TreeNode>,
    pub events: Vec<EventRow>,
    pub source: Option<SourceView>,
    pub images: Vec<ImageView>,
    /// What could not be read (RBAC) and was left out, one line each.
    pub notes: Vec<String>,
}
