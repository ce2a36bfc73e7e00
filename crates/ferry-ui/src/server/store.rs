//! The apps list kept in memory from watches, as the user: Releases, their sources' revisions
//! and push apps' inventory ConfigMaps. Every change becomes one [`Change`] on a broadcast
//! channel that SSE connections forward; pages are rendered from the store without asking the
//! API server again, which is what keeps the first paint of 1,000 apps fast and the API server
//! quiet (one watch per kind and scope, however many browser tabs are open).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ferry_api::{GitSource, Release};
use ferry_engine::cluster::kube_error::{describe_kube_error, status_code};
use ferry_engine::inventory::store::LABEL_INVENTORY;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ListParams;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use tokio::sync::{broadcast, mpsc};

use crate::model::{AppKey, AppKind, AppRow, SourceKey, push_row, release_row};

/// One change of the apps list.
#[derive(Debug, Clone)]
pub enum Change {
    Upsert(Box<AppRow>),
    Remove(AppKey),
}

/// Which namespaces the watches cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Namespaces(Vec<String>),
}

impl Scope {
    pub fn describe(&self) -> String {
        match self {
            Scope::All => "all namespaces".to_string(),
            Scope::Namespaces(ns) => format!(
                "namespace{} {}",
                if ns.len() == 1 { "" } else { "s" },
                ns.join(", ")
            ),
        }
    }
}

#[derive(Default)]
struct Inner {
    rows: BTreeMap<AppKey, AppRow>,
    releases: BTreeMap<(String, String), Release>,
    source_revisions: HashMap<SourceKey, String>,
}

/// The apps list and its change feed.
pub struct Store {
    inner: RwLock<Inner>,
    changes: broadcast::Sender<Change>,
    /// What the watches could not see (RBAC), for the header.
    notes: RwLock<Vec<String>>,
}

impl Store {
    pub fn new() -> Arc<Self> {
        Arc::new(Store {
            inner: RwLock::new(Inner::default()),
            changes: broadcast::channel(8192).0,
            notes: RwLock::new(Vec::new()),
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// A snapshot of the rows, sorted by kind, namespace, name.
    pub fn rows(&self) -> Vec<AppRow> {
        self.read().rows.values().cloned().collect()
    }

    pub fn row(&self, key: &AppKey) -> Option<AppRow> {
        self.read().rows.get(key).cloned()
    }

    /// The revision a source last fetched, as the store saw it.
    pub fn source_revision(&self, key: &SourceKey) -> Option<String> {
        self.read().source_revisions.get(key).cloned()
    }

    pub fn notes(&self) -> Vec<String> {
        self.notes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn note(&self, text: String) {
        let mut notes = self.notes.write().unwrap_or_else(|p| p.into_inner());
        if !notes.contains(&text) {
            notes.push(text);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn upsert(&self, inner: &mut Inner, row: AppRow) {
        if inner.rows.get(&row.key) != Some(&row) {
            inner.rows.insert(row.key.clone(), row.clone());
            let _ = self.changes.send(Change::Upsert(Box::new(row)));
        }
    }

    fn remove(&self, inner: &mut Inner, key: &AppKey) {
        if inner.rows.remove(key).is_some() {
            let _ = self.changes.send(Change::Remove(key.clone()));
        }
    }

    fn apply_release(&self, release: Release) {
        let mut inner = self.write();
        let revision = inner
            .source_revisions
            .get(&crate::model::release_source(&release))
            .cloned();
        let row = release_row(&release, revision.as_deref());
        let id = (
            release.metadata.namespace.clone().unwrap_or_default(),
            release.metadata.name.clone().unwrap_or_default(),
        );
        inner.releases.insert(id, release);
        self.upsert(&mut inner, row);
    }

    fn delete_release(&self, namespace: &str, name: &str) {
        let mut inner = self.write();
        inner
            .releases
            .remove(&(namespace.to_string(), name.to_string()));
        let key = AppKey {
            kind: AppKind::Release,
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        self.remove(&mut inner, &key);
    }

    fn apply_source(&self, key: SourceKey, revision: Option<String>) {
        let mut inner = self.write();
        let changed = match &revision {
            Some(r) => {
                inner
                    .source_revisions
                    .insert(key.clone(), r.clone())
                    .as_ref()
                    != Some(r)
            }
            None => inner.source_revisions.remove(&key).is_some(),
        };
        if !changed {
            return;
        }
        let rows: Vec<AppRow> = inner
            .releases
            .values()
            .filter(|r| crate::model::release_source(r) == key)
            .map(|r| release_row(r, revision.as_deref()))
            .collect();
        for row in rows {
            self.upsert(&mut inner, row);
        }
    }

    fn apply_inventory(&self, cm: &ConfigMap, pushed: &mut HashMap<(String, String), AppKey>) {
        let id = (
            cm.metadata.namespace.clone().unwrap_or_default(),
            cm.metadata.name.clone().unwrap_or_default(),
        );
        let mut inner = self.write();
        match push_row(cm) {
            Some(row) => {
                pushed.insert(id, row.key.clone());
                self.upsert(&mut inner, row);
            }
            None => {
                if let Some(key) = pushed.remove(&id) {
                    self.remove(&mut inner, &key);
                }
            }
        }
    }

    fn delete_inventory(&self, cm: &ConfigMap, pushed: &mut HashMap<(String, String), AppKey>) {
        let id = (
            cm.metadata.namespace.clone().unwrap_or_default(),
            cm.metadata.name.clone().unwrap_or_default(),
        );
        if let Some(key) = pushed.remove(&id) {
            let mut inner = self.write();
            self.remove(&mut inner, &key);
        }
    }
}

/// Decide the scope: all namespaces when the user may list Releases there, else the given
/// namespaces, else the kubeconfig context's namespace (a namespaced user's usual case).
pub async fn decide_scope(client: &Client, asked: &[String]) -> (Scope, Option<String>) {
    if !asked.is_empty() {
        return (Scope::Namespaces(asked.to_vec()), None);
    }
    let all: Api<Release> = Api::all(client.clone());
    match all.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => (Scope::All, None),
        Err(err) => {
            let ns = client.default_namespace().to_string();
            let why = format!(
                "cannot list Releases in all namespaces ({}); showing namespace {ns} (pass --namespace to choose)",
                describe_kube_error(&err)
            );
            (Scope::Namespaces(vec![ns]), Some(why))
        }
    }
}

fn apis<K>(client: &Client, scope: &Scope) -> Vec<(Option<String>, Api<K>)>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
{
    match scope {
        Scope::All => vec![(None, Api::all(client.clone()))],
        Scope::Namespaces(ns) => ns
            .iter()
            .map(|n| (Some(n.clone()), Api::namespaced(client.clone(), n)))
            .collect(),
    }
}

/// Start every watch; returns once each has listed its objects once (or failed once, which
/// becomes a note), or after `timeout`.
pub async fn start_watches(store: &Arc<Store>, client: &Client, scope: &Scope, timeout: Duration) {
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(64);
    let mut started = 0usize;
    for (ns, api) in apis::<Release>(client, scope) {
        started += 1;
        let store = store.clone();
        let ready = ready_tx.clone();
        tokio::spawn(watch_releases(store, api, ns, ready));
    }
    for (_, api) in apis::<GitSource>(client, scope) {
        started += 1;
        let store = store.clone();
        let ready = ready_tx.clone();
        tokio::spawn(watch_sources(store, api, ready));
    }
    for (_, api) in apis::<ConfigMap>(client, scope) {
        started += 1;
        let store = store.clone();
        let ready = ready_tx.clone();
        tokio::spawn(watch_inventories(store, api, ready));
    }
    drop(ready_tx);
    let wait = async {
        for _ in 0..started {
            if ready_rx.recv().await.is_none() {
                break;
            }
        }
    };
    if tokio::time::timeout(timeout, wait).await.is_err() {
        store.note(format!(
            "not every watch had listed its objects after {timeout:?}; the list fills in as they do"
        ));
    }
}

/// Runs one watch until the process ends; calls `on` for each event, signals `ready` once.
async fn drive<K, S>(
    store: Arc<Store>,
    what: String,
    stream: S,
    ready: mpsc::Sender<()>,
    mut on: impl FnMut(Event<K>),
) where
    S: Stream<Item = Result<Event<K>, watcher::Error>>,
{
    let mut ready = Some(ready);
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                let done = matches!(event, Event::InitDone);
                on(event);
                if done && let Some(r) = ready.take() {
                    let _ = r.send(()).await;
                }
            }
            Err(err) => {
                let message = match &err {
                    watcher::Error::InitialListFailed(e) | watcher::Error::WatchFailed(e) => {
                        let code = status_code(e)
                            .map(|c| format!(" ({c})"))
                            .unwrap_or_default();
                        format!("{}{code}", describe_kube_error(e))
                    }
                    other => other.to_string(),
                };
                tracing::warn!(watch = %what, %message, "watch failed; retrying with backoff");
                store.note(format!("{what}: {message}"));
                if let Some(r) = ready.take() {
                    let _ = r.send(()).await;
                }
            }
        }
    }
}

async fn watch_releases(
    store: Arc<Store>,
    api: Api<Release>,
    ns: Option<String>,
    ready: mpsc::Sender<()>,
) {
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut listing: BTreeSet<(String, String)> = BTreeSet::new();
    let what = format!("Releases in {}", ns.as_deref().unwrap_or("all namespaces"));
    let s = store.clone();
    drive(store, what, stream, ready, move |event| match event {
        Event::Init => listing.clear(),
        Event::InitApply(r) | Event::Apply(r) => {
            let id = (
                r.metadata.namespace.clone().unwrap_or_default(),
                r.metadata.name.clone().unwrap_or_default(),
            );
            listing.insert(id.clone());
            seen.insert(id);
            s.apply_release(r);
        }
        Event::Delete(r) => {
            let id = (
                r.metadata.namespace.clone().unwrap_or_default(),
                r.metadata.name.clone().unwrap_or_default(),
            );
            seen.remove(&id);
            s.delete_release(&id.0, &id.1);
        }
        Event::InitDone => {
            // A relist after a lost watch: whatever was not listed again is gone.
            for gone in seen.difference(&listing).cloned().collect::<Vec<_>>() {
                seen.remove(&gone);
                s.delete_release(&gone.0, &gone.1);
            }
        }
    })
    .await;
}

async fn watch_sources(store: Arc<Store>, api: Api<GitSource>, ready: mpsc::Sender<()>) {
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let s = store.clone();
    let key = |g: &GitSource| SourceKey {
        kind: "GitSource".to_string(),
        namespace: g.metadata.namespace.clone().unwrap_or_default(),
        name: g.metadata.name.clone().unwrap_or_default(),
    };
    drive(
        store,
        "GitSources".to_string(),
        stream,
        ready,
        move |event| match event {
            Event::InitApply(g) | Event::Apply(g) => {
                let revision = g.status.as_ref().and_then(|st| st.revision.clone());
                s.apply_source(key(&g), revision);
            }
            Event::Delete(g) => s.apply_source(key(&g), None),
            Event::Init | Event::InitDone => {}
        },
    )
    .await;
}

async fn watch_inventories(store: Arc<Store>, api: Api<ConfigMap>, ready: mpsc::Sender<()>) {
    let config = watcher::Config::default().labels(LABEL_INVENTORY);
    let stream = watcher::watcher(api, config).default_backoff();
    let s = store.clone();
    let mut pushed: HashMap<(String, String), AppKey> = HashMap::new();
    let mut listing: BTreeSet<(String, String)> = BTreeSet::new();
    drive(
        store,
        "push app inventories (ConfigMaps)".to_string(),
        stream,
        ready,
        move |event| match event {
            Event::Init => listing.clear(),
            Event::InitApply(cm) | Event::Apply(cm) => {
                listing.insert((
                    cm.metadata.namespace.clone().unwrap_or_default(),
                    cm.metadata.name.clone().unwrap_or_default(),
                ));
                s.apply_inventory(&cm, &mut pushed);
            }
            Event::Delete(cm) => s.delete_inventory(&cm, &mut pushed),
            Event::InitDone => {
                let gone: Vec<_> = pushed
                    .keys()
                    .filter(|id| !listing.contains(*id))
                    .cloned()
                    .collect();
                for id in gone {
                    if let Some(key) = pushed.remove(&id) {
                        let mut inner = s.write();
                        s.remove(&mut inner, &key);
                    }
                }
            }
        },
    )
    .await;
}
