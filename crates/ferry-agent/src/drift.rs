//! Drift detection: metadata-only watches on every kind that appears in a Release inventory,
//! limited to objects labelled `ferry.dev/app`. An object deleted or changed (new generation, or
//! for kinds without one, a new resourceVersion) queues its Release at once, which re-applies
//! through the engine (self-heal). Status-only churn of workloads does not trigger.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_api::Release;
use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::core::{GroupVersionKind, PartialObjectMeta};
use kube::discovery::{ApiResource, Scope, pinned_kind};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch};
use tokio_util::sync::CancellationToken;

use crate::context::{Context, key_of, owner_id};

/// The label the engine puts on everything it applies.
const LABEL_APP: &str = "ferry.dev/app";
const ANNOTATION_OWNER: &str = "ferry.dev/owner";

/// Make sure `kind` is watched and its watch has listed once, before a Release applies objects
/// of it: an edit can then never fall between the apply and the start of the watch. Cheap when
/// already watching. Gives up after a few seconds (the interval re-apply still corrects drift).
pub async fn ensure(ctx: &Arc<Context>, api_version: &str, kind: &str) {
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
                    // Let waiters go; a later Release retries the lookup.
                    let _ = tx.send(true);
                    ctx.drift_watches
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key);
                }
            }
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r)).await;
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
        tokio::spawn(async move {
            let config = watcher::Config::default().labels(LABEL_APP).any_semantic();
            let mut stream = watch(api, config).default_backoff().boxed();
            // Last seen change marker per object; the initial list only fills it.
            let mut seen: HashMap<String, String> = HashMap::new();
            let mut listed = false;
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => return,
                    event = stream.next() => event,
                };
                let Some(event) = event else { return };
                match event {
                    Ok(Event::InitApply(obj)) => {
                        seen.insert(uid(&obj), marker(&obj));
                    }
                    Ok(Event::InitDone) => {
                        if !listed {
                            listed = true;
                            if pending.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
                                let _ = ready.send(true);
                            }
                        }
                    }
                    Ok(Event::Apply(obj)) => {
                        let m = marker(&obj);
                        if seen
                            .insert(uid(&obj), m.clone())
                            .is_some_and(|old| old == m)
                        {
                            continue;
                        }
                        if written_by_ferry(&obj) {
                            continue;
                        }
                        trigger(&ctx, &obj, &kind, "changed");
                    }
                    Ok(Event::Delete(obj)) => {
                        seen.remove(&uid(&obj));
                        trigger(&ctx, &obj, &kind, "deleted");
                    }
                    Ok(_) => {}
                    Err(err) => tracing::debug!(%kind, "drift watch: {err}"),
                }
            }
        });
    }
}

/// Whether the newest change was ferry's own server-side apply (field manager `ferry`): the echo
/// of an apply is not drift. Anything else — kubectl, another controller, a deletion — is.
fn written_by_ferry(obj: &PartialObjectMeta<DynamicObject>) -> bool {
    let fields = obj.metadata.managed_fields.as_deref().unwrap_or_default();
    fields
        .iter()
        .filter(|f| f.subresource.as_deref().unwrap_or_default().is_empty())
        .max_by_key(|f| f.time.as_ref().map(|t| t.0))
        .is_some_and(|f| f.manager.as_deref() == Some(ferry_engine::FIELD_MANAGER))
}

fn uid(obj: &PartialObjectMeta<DynamicObject>) -> String {
    obj.metadata.uid.clone().unwrap_or_default()
}

/// What counts as a spec change: generation when the kind has one, else resourceVersion.
fn marker(obj: &PartialObjectMeta<DynamicObject>) -> String {
    match obj.metadata.generation {
        Some(g) => format!("g{g}"),
        None => obj.metadata.resource_version.clone().unwrap_or_default(),
    }
}

fn trigger(ctx: &Context, obj: &PartialObjectMeta<DynamicObject>, kind: &str, what: &str) {
    let labels = obj.metadata.labels.clone().unwrap_or_default();
    if !labels.contains_key(LABEL_APP) {
        return;
    }
    // The exact owner id names one Release (see ferry_engine::ownership).
    let Some(owner) = obj
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_OWNER))
        .cloned()
    else {
        return;
    };
    let Some(store) = ctx.releases.get() else {
        return;
    };
    for release in store.state() {
        let (ns, _) = key_of(&*release);
        if owner_id(&release).as_ref() == Some(&owner) {
            tracing::debug!(
                release = %format!("{ns}/{}", release.metadata.name.clone().unwrap_or_default()),
                object = %format!("{kind} {}", obj.metadata.name.clone().unwrap_or_default()),
                "drift: object {what}; re-applying"
            );
            let _ = ctx
                .release_trigger
                .send(ObjectRef::<Release>::from_obj(&*release));
        }
    }
}
