//! Waiting until applied objects are Current: fetch them (one LIST per kind and namespace where
//! several share one, a GET otherwise), judge each with [`health::assess`], poll with backoff
//! until every one is Current or Failed or the deadline passes, and explain the ones that are
//! not with their conditions and recent events.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, DynamicObject, ListParams};
use kube::{Client, Resource};
use serde_json::Value;

use crate::ObjectKey;
use crate::cluster::api_for;
use crate::cluster::kube_error::describe_kube_error;
use crate::health::{CustomHealth, Health, HealthState, assess_with, conditions_summary};
use crate::plan::ResolvedKind;
use crate::progress::{Progress, ProgressEvent};

/// An object to watch.
#[derive(Debug, Clone)]
pub struct Target {
    pub key: ObjectKey,
    pub kind: ResolvedKind,
}

/// Fetch and assess one object (custom rules first, see `health::cel`).
pub async fn check(client: &Client, target: &Target, custom: &CustomHealth) -> Health {
    let api = api_for(client, &target.kind, target.key.namespace.as_deref());
    match api.get_opt(&target.key.name).await {
        Ok(Some(obj)) => {
            let value = serde_json::to_value(&obj).unwrap_or(Value::Null);
            assess_with(custom, &target.key.group, &target.key.kind, &value)
        }
        Ok(None) => Health::not_found(),
        Err(err) => Health::progress(format!("cannot read: {}", describe_kube_error(&err))),
    }
}

/// Assess the targets at `indices`: one LIST per kind and namespace where several objects share
/// them (a 1,000-object app is a handful of requests per poll), a GET otherwise or when listing
/// is not allowed.
async fn check_many(
    client: &Client,
    targets: &[Target],
    indices: &[usize],
    concurrency: usize,
    custom: &CustomHealth,
) -> Vec<(usize, Health)> {
    type GroupKey = (String, String, Option<String>);
    let mut groups: std::collections::BTreeMap<GroupKey, Vec<usize>> = Default::default();
    for &i in indices {
        let t = &targets[i];
        groups
            .entry((
                t.kind.resource.api_version.clone(),
                t.kind.resource.plural.clone(),
                t.key.namespace.clone(),
            ))
            .or_default()
            .push(i);
    }
    let per_group: Vec<Vec<(usize, Health)>> = futures::stream::iter(groups.into_values())
        .map(|members| async move {
            if members.len() > 1 {
                let first = &targets[members[0]];
                let api = api_for(client, &first.kind, first.key.namespace.as_deref());
                if let Ok(list) = api.list(&ListParams::default()).await {
                    let by_name: std::collections::HashMap<&str, &DynamicObject> = list
                        .items
                        .iter()
                        .filter_map(|o| o.metadata.name.as_deref().map(|n| (n, o)))
                        .collect();
                    return members
                        .iter()
                        .map(|&i| {
                            let t = &targets[i];
                            let h = match by_name.get(t.key.name.as_str()) {
                                Some(obj) => {
                                    let value = serde_json::to_value(obj).unwrap_or(Value::Null);
                                    assess_with(custom, &t.key.group, &t.key.kind, &value)
                                }
                                None => Health::not_found(),
                            };
                            (i, h)
                        })
                        .collect();
                }
            }
            let mut out = Vec::with_capacity(members.len());
            for i in members {
                out.push((i, check(client, &targets[i], custom).await));
            }
            out
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    per_group.into_iter().flatten().collect()
}

impl super::ResourceManager {
    /// [`wait_all`] with this manager's client and concurrency.
    pub async fn wait(
        &self,
        targets: &[Target],
        timeout: Duration,
        progress: &dyn Progress,
    ) -> (Vec<Health>, bool) {
        wait_all(
            self.client(),
            targets,
            timeout,
            self.concurrency(),
            self.health_checks(),
            progress,
        )
        .await
    }
}

/// Poll until every target is Current or Failed, or `timeout` passes. Returns one health per
/// target (same order) and whether the deadline was hit. Objects that did not become Current
/// get their conditions and recent events appended to the message.
pub async fn wait_all(
    client: &Client,
    targets: &[Target],
    timeout: Duration,
    concurrency: usize,
    custom: &CustomHealth,
    progress: &dyn Progress,
) -> (Vec<Health>, bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut health: Vec<Option<Health>> = vec![None; targets.len()];
    let mut delay = Duration::from_millis(250);
    let timed_out = loop {
        let pending: Vec<usize> = (0..targets.len())
            .filter(|&i| {
                !matches!(
                    health[i].as_ref().map(|h| h.state),
                    Some(HealthState::Current | HealthState::Failed)
                )
            })
            .collect();
        progress.event(ProgressEvent::Waiting {
            pending: pending.len(),
            total: targets.len(),
        });
        if pending.is_empty() {
            break false;
        }
        if tokio::time::Instant::now() >= deadline {
            break true;
        }
        let results = check_many(client, targets, &pending, concurrency, custom).await;
        let mut still_pending = false;
        for (i, h) in results {
            still_pending |= !matches!(h.state, HealthState::Current | HealthState::Failed);
            health[i] = Some(h);
        }
        if still_pending {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break true;
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    };
    let mut out = Vec::with_capacity(targets.len());
    for (i, h) in health.into_iter().enumerate() {
        let mut h = h.unwrap_or_else(|| Health::progress("not checked before the deadline"));
        if h.state != HealthState::Current {
            let detail = explain(client, &targets[i]).await;
            if !detail.is_empty() {
                h.message = format!("{}\n{detail}", h.message);
            }
        }
        out.push(h);
    }
    (out, timed_out)
}

/// Conditions and the last few events of an object that is not healthy.
pub async fn explain(client: &Client, target: &Target) -> String {
    let mut out = Vec::new();
    let api = api_for(client, &target.kind, target.key.namespace.as_deref());
    if let Ok(Some(obj)) = api.get_opt(&target.key.name).await {
        let value = serde_json::to_value(&obj).unwrap_or(Value::Null);
        let conditions = conditions_summary(&value);
        if !conditions.is_empty() {
            out.push(format!(
                "conditions:\n  {}",
                conditions.replace('\n', "\n  ")
            ));
        }
    }
    let Some(ns) = target.key.namespace.as_deref() else {
        return out.join("\n");
    };
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let selector = format!(
        "involvedObject.name={},involvedObject.kind={}",
        target.key.name, target.key.kind
    );
    if let Ok(list) = events.list(&ListParams::default().fields(&selector)).await {
        let mut items = list.items;
        items.sort_by_key(|e| {
            e.last_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .or_else(|| {
                    e.meta()
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.to_string())
                })
        });
        let recent: Vec<String> = items
            .iter()
            .rev()
            .take(5)
            .map(|e| {
                format!(
                    "{} {}: {}",
                    e.type_.as_deref().unwrap_or(""),
                    e.reason.as_deref().unwrap_or(""),
                    e.message.as_deref().unwrap_or("").trim()
                )
            })
            .collect();
        if !recent.is_empty() {
            out.push(format!("recent events:\n  {}", recent.join("\n  ")));
        }
    }
    out.join("\n")
}
