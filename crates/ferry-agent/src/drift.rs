//! Drift detection: metadata-only watches on every kind that appears in a Release inventory,
//! limited to objects labelled `ferry.dev/app`. An object deleted or changed (new generation, or
//! for kinds without one, a new resourceVersion, or a label or annotation the Release applied
//! that no longer has the applied value) queues its Release at once, which re-applies through
//! the engine (self-heal) or reports the drift (`spec.drift.mode: detect`). Status-only churn of
//! workloads does not trigger.
//!
//! [`DriftState`] is what the watches know, for the Release controller: the labels and
//! annotations each Release applied per object, and a per-Release count of drift signals, so that
//! a Release whose objects sent no signal since its last apply (and whose source did not move)
//! needs no API request at all at its interval (issue 17, see `controllers::release_drift`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_api::Release;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::api::{Api, DynamicObject};
use kube::core::{GroupVersionKind, PartialObjectMeta};
use kube::discovery::{ApiResource, Scope, pinned_kind};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use crate::context::{Context, Key, owner_id};

/// The label the engine puts on everything it applies.
const LABEL_APP: &str = "ferry.dev/app";
const ANNOTATION_OWNER: &str = "ferry.dev/owner";

/// Make sure `kind` is watched and its watch has listed once, before a Release applies objects
/// of it: an edit can then never fall between the apply and the start of the watch. Cheap when
/// already watching. Gives up after a few seconds (the interval re-apply still corrects drift).
/// Returns whether the kind is watched and listed: only then can a Release rely on the watch
/// instead of reading the API at its interval.
pub async fn ensure(ctx: &Arc<Context>, api_version: &str, kind: &str) -> bool {
    let stop = ctx.stop.clone();
    let key = (api_version.to_string(), kind.to_string());
    let (mut ready, start) = {
        let mut watches = ctx.drift_watches.lock().unwrap_or_else(|p| p.into_inner());
        match watches.get(&key) {
            Some(rx) => (rx.clone(), None),
            None => {
                let (tx, rx) = tokio::sync::watch::channel(false);
                watches.insert(key.clone(), rx.clone());
                (rx, Some(tx))
            }
        }
    };
    if let Some(tx) = start {
        let ctx = ctx.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let (group, version) = match key.0.split_once('/') {
                Some((g, v)) => (g.to_string(), v.to_string()),
                None => (String::new(), key.0.clone()),
            };
            let gvk = GroupVersionKind::gvk(&group, &version, &key.1);
            match pinned_kind(&ctx.client, &gvk).await {
                Ok((resource, caps)) => {
                    let namespaced = caps.scope == Scope::Namespaced;
                    spawn_watch(ctx.clone(), resource, namespaced, stop, tx).await;
                }
                Err(err) => {
                    tracing::debug!(kind = %key.1, "drift: cannot resolve kind: {err}");
                    // Let waiters go (not watched); a later Release retries the lookup.
                    ctx.drift_watches
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key);
                    let _ = tx.send(true);
                }
            }
        });
    }
    let listed = tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r))
        .await
        .is_ok();
    let still_watched = ctx
        .drift_watches
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains_key(&key);
    listed && still_watched
}

async fn spawn_watch(
    ctx: Arc<Context>,
    resource: ApiResource,
    namespaced: bool,
    stop: CancellationToken,
    ready: tokio::sync::watch::Sender<bool>,
) {
    // Objects live in the Releases' target namespaces, which need not be watched namespaces:
    // watch cluster-wide when allowed; a namespace-scoped agent falls back to its namespaces.
    let cluster_wide = !namespaced || ctx.options.watch_namespaces.is_empty() || {
        let probe: Api<PartialObjectMeta<DynamicObject>> =
            Api::all_with(ctx.client.clone(), &resource);
        probe
            .list_metadata(&kube::api::ListParams::default().labels(LABEL_APP).limit(1))
            .await
            .is_ok()
    };
    let namespaces: Vec<Option<String>> = if cluster_wide {
        vec![None]
    } else {
        tracing::info!(kind = %resource.kind, "drift: cannot list cluster-wide; watching only --watch-namespace");
        ctx.options
            .watch_namespaces
            .iter()
            .cloned()
            .map(Some)
            .collect()
    };
    let ready = Arc::new(ready);
    let pending = Arc::new(std::sync::atomic::AtomicUsize::new(namespaces.len()));
    for ns in namespaces {
        let ready = ready.clone();
        let pending = pending.clone();
        // `Api<PartialObjectMeta<_>>` makes metadata-only list/watch requests.
        let api: Api<PartialObjectMeta<DynamicObject>> = match &ns {
            Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &resource),
            None => Api::all_with(ctx.client.clone(), &resource),
        };
        let ctx = ctx.clone();
        let stop = stop.clone();
        let kind = resource.kind.clone();
        let group = resource.group.clone();
        tokio::spawn(async move {
            let config = watcher::Config::default().labels(LABEL_APP).any_semantic();
            let mut stream = watch(api, config).default_backoff().boxed();
            // What was last seen of each object (by a hash of its uid); a (re)list is compared
            // with it.
            let mut seen: HashMap<u64, Seen> = HashMap::new();
            let mut relisted: Option<HashSet<u64>> = None;
            let mut listed = false;
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => return,
                    event = stream.next() => event,
                };
                let Some(event) = event else { return };
                match event {
                    Ok(Event::Init) => relisted = Some(HashSet::new()),
                    Ok(Event::InitApply(obj)) => {
                        relisted.get_or_insert_with(HashSet::new).insert(uid(&obj));
                        if listed {
                            // A relist after the watch lost track: changes made meanwhile.
                            observe(&ctx, &mut seen, &obj, &group, &kind);
                        } else {
                            seen.insert(uid(&obj), Seen::of(&obj));
                        }
                    }
                    Ok(Event::InitDone) => {
                        let present = relisted.take().unwrap_or_default();
                        if listed {
                            let gone: Vec<u64> = seen
                                .keys()
                                .filter(|u| !present.contains(*u))
                                .cloned()
                                .collect();
                            for u in gone {
                                if let Some(old) = seen.remove(&u) {
                                    trigger(&ctx, &old, &kind, "deleted");
                                }
                            }
                        } else {
                            listed = true;
                            if pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                                let _ = ready.send(true);
                            }
                        }
                    }
                    Ok(Event::Apply(obj)) => observe(&ctx, &mut seen, &obj, &group, &kind),
                    Ok(Event::Delete(obj)) => {
                        // Deleted, or no longer labelled (someone removed `ferry.dev/app`): what
                        // was seen before names the owner.
                        let old = seen.remove(&uid(&obj)).unwrap_or_else(|| Seen::of(&obj));
                        trigger(&ctx, &old, &kind, "deleted");
                    }
                    Err(err) => {
                        // Events may be lost until the relist: no Release trusts the watches
                        // alone until it has re-checked the cluster.
                        ctx.drift.watch_failed();
                        tracing::debug!(%kind, "drift watch: {err}");
                    }
                }
            }
        });
    }
}

/// What a watch remembers of one object: only what the next event of it is compared with and
/// what a deletion needs (the owner), in ~200 bytes. The labels and annotations themselves are
/// not kept (at 10,000 Releases × 4 objects they were ~40 MiB of the agent): a hash tells
/// whether they changed, and the event that changed them carries the new values.
struct Seen {
    /// Generation (kinds with one) or a hash of the resourceVersion.
    marker: u64,
    /// Hash of the labels and annotations.
    metadata: u64,
    name: String,
    /// The exact owner id (`ferry.dev/owner`).
    owner: Option<String>,
    /// Annotated `ferry.dev/reconcile: disabled` by hand.
    disabled: bool,
}

impl Seen {
    fn of(obj: &PartialObjectMeta<DynamicObject>) -> Self {
        let annotations = obj.metadata.annotations.as_ref();
        Self {
            marker: marker(obj),
            metadata: metadata_hash(obj),
            name: obj.metadata.name.clone().unwrap_or_default(),
            owner: annotations.and_then(|a| a.get(ANNOTATION_OWNER).cloned()),
            disabled: ferry_engine::cluster::manager::live::reconcile_disabled(annotations),
        }
    }
}

fn hash_of(value: &impl std::hash::Hash) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(value)
}

fn metadata_hash(obj: &PartialObjectMeta<DynamicObject>) -> u64 {
    hash_of(&(&obj.metadata.labels, &obj.metadata.annotations))
}

/// An object was added or changed: queue its Release when that is drift.
fn observe(
    ctx: &Context,
    seen: &mut HashMap<u64, Seen>,
    obj: &PartialObjectMeta<DynamicObject>,
    group: &str,
    kind: &str,
) {
    let now = Seen::of(obj);
    let before = seen.insert(uid(obj), Seen::of(obj));
    let key = ObjectId::fingerprint_of(group, kind, obj.metadata.namespace.as_deref(), &now.name);
    let empty = BTreeMap::new();
    let labels = obj.metadata.labels.as_ref().unwrap_or(&empty);
    let annotations = obj.metadata.annotations.as_ref().unwrap_or(&empty);
    let drifted = match &before {
        None => false,
        Some(old) if old.marker != now.marker => !written_by_ferry(obj),
        // Same generation: a label or annotation edit (kinds with a generation only; for the
        // others the resourceVersion moved with it). Compared with what the Release applied
        // when that is known (then who wrote it does not matter: ferry never writes another
        // value), else any change not written by ferry.
        Some(old) => {
            obj.metadata.generation.is_some()
                && old.metadata != now.metadata
                && ctx
                    .drift
                    .metadata_drifted(key, labels, annotations)
                    .unwrap_or_else(|| !written_by_ferry(obj))
        }
    };
    if drifted {
        trigger(ctx, &now, kind, "changed");
    }
}

/// Whether the newest change was ferry's own server-side apply (field manager `ferry`): the echo
/// of an apply is not drift. Anything else — kubectl, another controller, a deletion — is.
/// Status writes are not changes of intent; other subresources are (`kubectl scale` writes
/// `spec.replicas` through `scale`). Times have a resolution of one second: another writer in
/// the same second as ferry, or one without a time, counts as drift (at worst one needless
/// check, which writes nothing), so an edit right after an apply is never taken for its echo.
fn written_by_ferry(obj: &PartialObjectMeta<DynamicObject>) -> bool {
    let fields = obj.metadata.managed_fields.as_deref().unwrap_or_default();
    let intent: Vec<_> = fields
        .iter()
        .filter(|f| f.subresource.as_deref() != Some("status"))
        .collect();
    let is_ferry =
        |f: &&&ManagedFieldsEntry| f.manager.as_deref() == Some(ferry_engine::FIELD_MANAGER);
    let time = |f: &&ManagedFieldsEntry| f.time.as_ref().map(|t| t.0);
    let Some(ferry) = intent.iter().filter(is_ferry).map(time).max() else {
        return false;
    };
    // Writes through a subresource (`kubectl scale`, an HPA) carry no time at all: they may be
    // newer than ferry's, so they count as drift too.
    intent
        .iter()
        .filter(|f| !is_ferry(f))
        .all(|f| time(f).is_some() && time(f) < ferry)
}

/// A hash of the object's uid: 8 bytes per watched object instead of a 36-character string (at
/// 10,000 Releases the watches remember 40,000 objects). Two uids of one kind sharing a 64-bit
/// hash would make a deletion of one look like the other's: one needless drift check.
fn uid(obj: &PartialObjectMeta<DynamicObject>) -> u64 {
    hash_of(&obj.metadata.uid)
}

/// What counts as a spec change: generation when the kind has one, else resourceVersion.
fn marker(obj: &PartialObjectMeta<DynamicObject>) -> u64 {
    match obj.metadata.generation {
        Some(g) => hash_of(&("generation", g)),
        None => hash_of(&("resourceVersion", &obj.metadata.resource_version)),
    }
}

fn trigger(ctx: &Context, obj: &Seen, kind: &str, what: &str) {
    // Opted out by hand: ferry neither writes nor reports it.
    if obj.disabled {
        return;
    }
    // The exact owner id names one Release (see ferry_engine::ownership).
    let Some(owner) = &obj.owner else {
        return;
    };
    let Some(store) = ctx.releases.get() else {
        return;
    };
    // `<target>/release/<namespace>/<name>`: the Release is looked up by name (no scan of
    // every Release per event: 10,000 owner ids formatted per drift event before), then its
    // own id is checked against the annotation, which anyone who may edit the object can set.
    let mut parts = owner.split('/');
    let (Some(_), Some("release"), Some(ns), Some(name), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return;
    };
    let Some(release) = store.get(&ObjectRef::<Release>::new(name).within(ns)) else {
        return;
    };
    if owner_id(&release).as_ref() != Some(owner) {
        return;
    }
    tracing::debug!(
        release = %format!("{ns}/{name}"),
        object = %format!("{kind} {}", obj.name),
        "drift: object {what}; queued"
    );
    ctx.drift.signal(&(ns.to_string(), name.to_string()));
    let _ = ctx
        .release_trigger
        .send(ObjectRef::<Release>::from_obj(&*release));
}

/// One object, as the watches and the Release controller name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectId {
    pub fn new(group: &str, kind: &str, namespace: Option<&str>, name: &str) -> Self {
        Self {
            group: group.to_string(),
            kind: kind.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        }
    }

    /// The key [`DriftState`] files this object's intent under.
    pub fn fingerprint(&self) -> u64 {
        Self::fingerprint_of(
            &self.group,
            &self.kind,
            self.namespace.as_deref(),
            &self.name,
        )
    }

    /// [`ObjectId::fingerprint`] without building the id (a watch event computes it for every
    /// object it sees).
    pub fn fingerprint_of(group: &str, kind: &str, namespace: Option<&str>, name: &str) -> u64 {
        hash_of(&(group, kind, namespace, name))
    }
}

/// The labels and annotations one Release applied to one object, as plain pairs (a BTreeMap
/// node holds room for eleven entries: most intents have one or two), shared between the keys
/// one manifest is recorded under (see `release_drift::intents_of`).
#[derive(Debug, Clone, Default)]
pub struct MetadataIntent {
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
}

/// What the drift watches share with the Release controller (see the module docs).
#[derive(Default)]
pub struct DriftState {
    /// By [`ObjectId::fingerprint`]: 8 bytes of key per object instead of four strings (at
    /// 10,000 Releases, 80,000 keys were ~17 MB). A collision of two ids' 64-bit hashes would
    /// compare one object's labels with the other's intent: at worst one needless drift check,
    /// or one label edit noticed only at the next apply.
    intents: Mutex<HashMap<u64, Arc<MetadataIntent>>>,
    /// Drift signals per Release since the agent started: a Release compares the count with the
    /// one it saw before its last apply.
    signals: Mutex<HashMap<Key, u64>>,
    /// Watch errors since the agent started (events may have been lost until the relist).
    watch_failures: AtomicU64,
    /// Per Release: what its last successful apply (or drift check) in this process saw.
    pub applied: Mutex<HashMap<Key, AppliedRecord>>,
    /// What a Release's drift check found, from its decision to its status write.
    pub findings: crate::controllers::release_drift::Findings,
    /// `ferry_release_drift_objects{namespace,name}`: objects that differ from the source and
    /// were left in place (`spec.drift.mode: detect`).
    pub drift_objects: Family<ReleaseLabels, Gauge<i64, AtomicI64>>,
    /// `ferry_release_drift_corrected_objects_total{namespace,name}`: drifted objects reverted.
    pub corrected: Family<ReleaseLabels, Counter>,
}

/// One Release in the drift metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReleaseLabels {
    pub namespace: String,
    pub name: String,
}

/// What a Release's last successful apply, or drift check, saw: while all of it still holds,
/// nothing can have changed, and its interval needs no API request (issue 17).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedRecord {
    pub uid: String,
    pub generation: Option<i64>,
    /// The source revision applied.
    pub revision: String,
    /// A hash of the Release's annotations (a sync request, an adoption changes them).
    pub annotations: u64,
    /// A digest of the manifests applied (`release_drift::digest`).
    pub digest: u64,
    /// The drift signals before the apply began.
    pub mark: SignalMark,
    /// Every kind was watched and nothing outside the source feeds the render.
    pub can_rest: bool,
}

impl DriftState {
    /// A state whose metrics are served with the agent's others.
    pub fn new(metrics: &crate::metrics::Metrics) -> Self {
        Self {
            drift_objects: metrics.shared(
                "ferry_release_drift_objects",
                "Objects of a Release that differ from its source and were left in place (spec.drift.mode: detect)",
            ),
            corrected: metrics.shared(
                "ferry_release_drift_corrected_objects",
                "Objects of a Release found drifted and reverted",
            ),
            ..Self::default()
        }
    }

    /// Remember the labels and annotations a Release applied (after a successful apply).
    pub fn record_intents(
        &self,
        intents: impl IntoIterator<Item = (ObjectId, Arc<MetadataIntent>)>,
    ) {
        let mut map = self.intents.lock().unwrap_or_else(|p| p.into_inner());
        map.extend(
            intents
                .into_iter()
                .map(|(id, intent)| (id.fingerprint(), intent)),
        );
    }

    /// Whether a label or annotation the Release applied to the object `key`
    /// ([`ObjectId::fingerprint`]) no longer has the applied value; `None` without a record (not
    /// applied by this process yet).
    pub fn metadata_drifted(
        &self,
        key: u64,
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
    ) -> Option<bool> {
        let map = self.intents.lock().unwrap_or_else(|p| p.into_inner());
        let intent = map.get(&key)?;
        let differs = |want: &[(String, String)], live: &BTreeMap<String, String>| {
            want.iter().any(|(k, v)| live.get(k) != Some(v))
        };
        Some(differs(&intent.labels, labels) || differs(&intent.annotations, annotations))
    }

    /// Whether this process has applied (or drift-checked) `release` successfully.
    pub fn applied_in_this_process(&self, release: &Key) -> bool {
        self.applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(release)
    }

    /// A drift signal for Release `release`.
    pub fn signal(&self, release: &Key) {
        let mut map = self.signals.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(release.clone()).or_default() += 1;
    }

    /// A watch failed (and will relist).
    pub fn watch_failed(&self) {
        self.watch_failures.fetch_add(1, Ordering::AcqRel);
    }

    /// Where the signals stand for `release`: equal marks mean no drift signal in between.
    pub fn mark(&self, release: &Key) -> SignalMark {
        let signals = self
            .signals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(release)
            .copied()
            .unwrap_or_default();
        SignalMark {
            signals,
            watch_failures: self.watch_failures.load(Ordering::Acquire),
        }
    }
}

/// A point in the drift signals of one Release (see [`DriftState::mark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalMark {
    signals: u64,
    watch_failures: u64,
}
