//! Watching one kind in several namespaces through one reflector store.
//!
//! kube-runtime's store replaces its whole content on each watcher `InitDone`. When the watches
//! of several namespaces are merged into one store, the (re)list of one namespace would therefore
//! wipe the objects of the others until they re-list, and Releases would see their GitSource
//! "not found". [`merged_watch`] turns each namespace's (re)list into plain `Apply` events plus a
//! `Delete` for every object of *that* namespace that disappeared, so the store stays complete.
//! One synthetic empty init at the start marks the store ready.

use std::collections::HashMap;

use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

type WatchItem<K> = Result<Event<K>, watcher::Error>;

/// One watcher stream per API (namespace), merged so that a shared store stays correct.
pub fn merged_watch<K>(
    apis: Vec<Api<K>>,
    config: watcher::Config,
) -> BoxStream<'static, WatchItem<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    use kube::runtime::WatchStreamExt;
    let streams: Vec<BoxStream<'static, WatchItem<K>>> = apis
        .into_iter()
        .map(|api| {
            watcher::watcher(api, config.clone())
                .default_backoff()
                .boxed()
        })
        .collect();
    if streams.len() == 1 {
        // A single watch owns the whole store: its relists may replace it.
        return stream::select_all(streams).boxed();
    }
    // The store only reports ready (and the controller only starts) after an `InitDone`; one
    // empty init marks it ready, the namespaces' lists then arrive as `Apply` events.
    let ready = stream::iter([Ok(Event::Init), Ok(Event::InitDone)]);
    ready
        .chain(stream::select_all(
            streams.into_iter().map(|s| relist_as_updates(s).boxed()),
        ))
        .boxed()
}

/// Per-namespace state: the objects last seen, and the relist being collected.
struct Relist<K> {
    known: HashMap<String, K>,
    pending: Option<HashMap<String, K>>,
}

fn relist_as_updates<K>(
    input: impl Stream<Item = WatchItem<K>> + Send + 'static,
) -> impl Stream<Item = WatchItem<K>> + Send
where
    K: Resource + Clone + Send + 'static,
{
    let state = Relist::<K> {
        known: HashMap::new(),
        pending: None,
    };
    input
        .scan(state, |state, item| {
            let out: Vec<WatchItem<K>> = match item {
                Err(err) => vec![Err(err)],
                Ok(Event::Init) => {
                    state.pending = Some(HashMap::new());
                    Vec::new()
                }
                Ok(Event::InitApply(obj)) => {
                    state
                        .pending
                        .get_or_insert_with(HashMap::new)
                        .insert(obj.name_any(), obj);
                    Vec::new()
                }
                Ok(Event::InitDone) => {
                    let listed = state.pending.take().unwrap_or_default();
                    let gone = state
                        .known
                        .iter()
                        .filter(|(name, _)| !listed.contains_key(*name))
                        .map(|(_, obj)| Ok(Event::Delete(obj.clone())));
                    let mut events: Vec<WatchItem<K>> = gone.collect();
                    events.extend(listed.values().cloned().map(|obj| Ok(Event::Apply(obj))));
                    state.known = listed;
                    events
                }
                Ok(Event::Apply(obj)) => {
                    state.known.insert(obj.name_any(), obj.clone());
                    vec![Ok(Event::Apply(obj))]
                }
                Ok(Event::Delete(obj)) => {
                    state.known.remove(&obj.name_any());
                    vec![Ok(Event::Delete(obj))]
                }
            };
            futures::future::ready(Some(stream::iter(out)))
        })
        .flatten()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;

    fn cm(name: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.to_string());
        cm
    }

    fn describe(events: Vec<WatchItem<ConfigMap>>) -> Vec<String> {
        events
            .into_iter()
            .map(|e| match e {
                Ok(Event::Apply(o)) => format!("apply {}", o.name_any()),
                Ok(Event::Delete(o)) => format!("delete {}", o.name_any()),
                Ok(other) => format!("{other:?}"),
                Err(err) => format!("error {err}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_relist_becomes_applies_and_deletes_of_that_namespace_only() {
        let input = stream::iter(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(cm("a"))),
            Ok(Event::InitDone),
            Ok(Event::Apply(cm("b"))),
            // The watch desynced and relisted: `a` was deleted meanwhile.
            Ok(Event::Init),
            Ok(Event::InitApply(cm("b"))),
            Ok(Event::InitDone),
        ]);
        let events: Vec<_> = relist_as_updates(input).collect().await;
        assert_eq!(
            describe(events),
            ["apply a", "apply b", "delete a", "apply b"]
        );
    }
}
