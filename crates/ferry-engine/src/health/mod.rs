//! Stage 7, health: kstatus-like readiness rules ([`assess`]) and waiting until applied objects
//! are Current ([`wait_all`]), with conditions and recent events for the ones that are not.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, DynamicObject, ListParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde_json::Value;

use crate::ObjectKey;
use crate::apply::Requests;
use crate::plan::ResolvedKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthState {
    /// Fully reconciled and ready.
    Current,
    /// Still rolling out / reconciling.
    InProgress,
    /// Reconciliation failed (job failed, rollout deadline exceeded, Stalled condition).
    Failed,
    /// The object does not exist.
    NotFound,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::InProgress => "in-progress",
            Self::Failed => "failed",
            Self::NotFound => "not-found",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    pub state: HealthState,
    /// Why it is not Current (empty when it is).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl Health {
    fn current() -> Self {
        Self {
            state: HealthState::Current,
            message: String::new(),
        }
    }
    fn progress(message: impl Into<String>) -> Self {
        Self {
            state: HealthState::InProgress,
            message: message.into(),
        }
    }
    fn failed(message: impl Into<String>) -> Self {
        Self {
            state: HealthState::Failed,
            message: message.into(),
        }
    }
    pub fn not_found() -> Self {
        Self {
            state: HealthState::NotFound,
            message: "the object does not exist".into(),
        }
    }
}

fn int(v: &Value, pointer: &str) -> Option<i64> {
    v.pointer(pointer).and_then(Value::as_i64)
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"].as_str() == Some(type_))
}

fn condition_is(obj: &Value, type_: &str, status: &str) -> bool {
    condition(obj, type_).is_some_and(|c| c["status"].as_str() == Some(status))
}

fn condition_text(c: &Value) -> String {
    format!(
        "{}={} {}: {}",
        c["type"].as_str().unwrap_or("?"),
        c["status"].as_str().unwrap_or("?"),
        c["reason"].as_str().unwrap_or(""),
        c["message"].as_str().unwrap_or("")
    )
}

/// All conditions, one per line, for failure messages.
pub fn conditions_summary(obj: &Value) -> String {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().map(condition_text).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

/// Assess one live object (its full JSON) by kstatus-like rules.
pub fn assess(group: &str, kind: &str, obj: &Value) -> Health {
    // Anything that reports observedGeneration must have seen the latest spec.
    if let (Some(generation), Some(observed)) = (
        int(obj, "/metadata/generation"),
        int(obj, "/status/observedGeneration"),
    ) && observed < generation
    {
        return Health::progress(format!(
            "controller has not observed generation {generation} yet (observed {observed})"
        ));
    }
    let replicas = int(obj, "/spec/replicas").unwrap_or(1);
    let status = |f: &str| int(obj, &format!("/status/{f}")).unwrap_or(0);
    match (group, kind) {
        ("apps", "Deployment") => {
            if let Some(c) = condition(obj, "Progressing")
                && c["reason"].as_str() == Some("ProgressDeadlineExceeded")
            {
                return Health::failed(format!("rollout stuck: {}", condition_text(c)));
            }
            if obj.pointer("/status/observedGeneration").is_none() {
                return Health::progress("waiting for the deployment controller");
            }
            let (updated, total, available) = (
                status("updatedReplicas"),
                status("replicas"),
                status("availableReplicas"),
            );
            if updated < replicas {
                Health::progress(format!("{updated}/{replicas} replicas updated"))
            } else if total > updated {
                Health::progress(format!(
                    "{} old replicas pending termination",
                    total - updated
                ))
            } else if available < replicas {
                Health::progress(format!("{available}/{replicas} replicas available"))
            } else {
                Health::current()
            }
        }
        ("apps", "StatefulSet") => {
            if obj.pointer("/status/observedGeneration").is_none() {
                return Health::progress("waiting for the statefulset controller");
            }
            let ready = status("readyReplicas");
            let updated = status("updatedReplicas");
            let rolling = obj
                .pointer("/spec/updateStrategy/type")
                .and_then(Value::as_str)
                != Some("OnDelete");
            if ready < replicas {
                Health::progress(format!("{ready}/{replicas} replicas ready"))
            } else if rolling && updated < replicas {
                Health::progress(format!("{updated}/{replicas} replicas updated"))
            } else if rolling
                && obj.pointer("/status/currentRevision") != obj.pointer("/status/updateRevision")
            {
                Health::progress("rolling update in progress")
            } else {
                Health::current()
            }
        }
        ("apps", "DaemonSet") => {
            if obj.pointer("/status/observedGeneration").is_none() {
                return Health::progress("waiting for the daemonset controller");
            }
            let desired = status("desiredNumberScheduled");
            let updated = status("updatedNumberScheduled");
            let available = status("numberAvailable");
            if updated < desired {
                Health::progress(format!("{updated}/{desired} pods updated"))
            } else if available < desired {
                Health::progress(format!("{available}/{desired} pods available"))
            } else {
                Health::current()
            }
        }
        ("apps", "ReplicaSet") => {
            let available = status("availableReplicas");
            if available < replicas {
                Health::progress(format!("{available}/{replicas} replicas available"))
            } else {
                Health::current()
            }
        }
        ("batch", "Job") => {
            if condition_is(obj, "Failed", "True") {
                let c = condition(obj, "Failed")
                    .map(condition_text)
                    .unwrap_or_default();
                Health::failed(format!("job failed: {c}"))
            } else if condition_is(obj, "Complete", "True") {
                Health::current()
            } else {
                Health::progress(format!(
                    "job running ({} succeeded, {} active)",
                    status("succeeded"),
                    status("active")
                ))
            }
        }
        ("", "PersistentVolumeClaim") => {
            match obj.pointer("/status/phase").and_then(Value::as_str) {
                Some("Bound") => Health::current(),
                Some("Lost") => Health::failed("claim lost its volume"),
                other => Health::progress(format!("phase {}", other.unwrap_or("Pending"))),
            }
        }
        ("", "Pod") => match obj.pointer("/status/phase").and_then(Value::as_str) {
            Some("Succeeded") => Health::current(),
            Some("Failed") => Health::failed("pod failed"),
            _ if condition_is(obj, "Ready", "True") => Health::current(),
            other => Health::progress(format!("pod {}", other.unwrap_or("Pending"))),
        },
        ("", "Namespace") => match obj.pointer("/status/phase").and_then(Value::as_str) {
            Some("Terminating") => Health::failed("namespace is terminating"),
            _ => Health::current(),
        },
        ("", "Service") => {
            let lb = obj.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer");
            let ingress = obj
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            if lb && !ingress {
                Health::progress("waiting for a load balancer address")
            } else {
                Health::current()
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            if condition_is(obj, "Established", "True") {
                Health::current()
            } else if condition_is(obj, "NamesAccepted", "False") {
                Health::failed(format!(
                    "names not accepted: {}",
                    condition(obj, "NamesAccepted")
                        .map(condition_text)
                        .unwrap_or_default()
                ))
            } else {
                Health::progress("waiting for Established")
            }
        }
        _ => generic(obj),
    }
}

/// Custom resources: `Stalled`/`Reconciling` (kstatus) and `Ready` conditions; no conditions
/// means nothing to wait for.
fn generic(obj: &Value) -> Health {
    if let Some(c) = condition(obj, "Stalled")
        && c["status"].as_str() == Some("True")
    {
        return Health::failed(condition_text(c));
    }
    if let Some(c) = condition(obj, "Reconciling")
        && c["status"].as_str() == Some("True")
    {
        return Health::progress(condition_text(c));
    }
    match condition(obj, "Ready") {
        Some(c) if c["status"].as_str() == Some("True") => Health::current(),
        Some(c) => Health::progress(condition_text(c)),
        None => Health::current(),
    }
}

/// An object to watch.
#[derive(Debug, Clone)]
pub struct Target {
    pub key: ObjectKey,
    pub kind: ResolvedKind,
}

pub(crate) fn api_for(
    client: &Client,
    kind: &ResolvedKind,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match (kind.namespaced, namespace) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &kind.resource),
        _ => Api::all_with(client.clone(), &kind.resource),
    }
}

/// Fetch and assess one object.
pub async fn check(client: &Client, target: &Target, requests: &Requests) -> Health {
    let api = api_for(client, &target.kind, target.key.namespace.as_deref());
    requests.read();
    match api.get_opt(&target.key.name).await {
        Ok(Some(obj)) => {
            let value = serde_json::to_value(&obj).unwrap_or(Value::Null);
            assess(&target.key.group, &target.key.kind, &value)
        }
        Ok(None) => Health::not_found(),
        Err(err) => Health::progress(format!(
            "cannot read: {}",
            crate::apply::describe_kube_error(&err)
        )),
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
    requests: &Requests,
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
    let per_group: Vec<Vec<(usize, Health)>> = futures::stream::iter(
        groups
            .into_values()
            .map(|members| async move {
                if members.len() > 1 {
                    let first = &targets[members[0]];
                    let api = api_for(client, &first.kind, first.key.namespace.as_deref());
                    requests.read();
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
                                        let value =
                                            serde_json::to_value(obj).unwrap_or(Value::Null);
                                        assess(&t.key.group, &t.key.kind, &value)
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
                    out.push((i, check(client, &targets[i], requests).await));
                }
                out
            })
            .collect::<Vec<_>>(),
    )
    .buffer_unordered(concurrency.max(1))
    .collect()
    .await;
    per_group.into_iter().flatten().collect()
}

/// Poll until every target is Current or Failed, or `timeout` passes. Returns one health per
/// target (same order) and whether the deadline was hit. Objects that did not become Current
/// get their conditions and recent events appended to the message.
pub async fn wait_all(
    client: &Client,
    targets: &[Target],
    timeout: Duration,
    concurrency: usize,
    requests: &Requests,
    progress: &dyn crate::pipeline::Progress,
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
        progress.event(crate::pipeline::ProgressEvent::Waiting {
            pending: pending.len(),
            total: targets.len(),
        });
        if pending.is_empty() {
            break false;
        }
        if tokio::time::Instant::now() >= deadline {
            break true;
        }
        let results = check_many(client, targets, &pending, concurrency, requests).await;
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
            let detail = explain(client, &targets[i], requests).await;
            if !detail.is_empty() {
                h.message = format!("{}\n{detail}", h.message);
            }
        }
        out.push(h);
    }
    (out, timed_out)
}

/// Conditions and the last few events of an object that is not healthy.
pub async fn explain(client: &Client, target: &Target, requests: &Requests) -> String {
    let mut out = Vec::new();
    let api = api_for(client, &target.kind, target.key.namespace.as_deref());
    requests.read();
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
    requests.read();
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deployment_rollout() {
        let mut d = json!({"metadata": {"generation": 2}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 1}});
        assert_eq!(
            assess("apps", "Deployment", &d).state,
            HealthState::InProgress
        );
        d["status"] = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2});
        assert_eq!(
            assess("apps", "Deployment", &d).state,
            HealthState::InProgress
        );
        d["status"]["replicas"] = json!(2);
        assert_eq!(assess("apps", "Deployment", &d).state, HealthState::Current);
        d["status"]["conditions"] = json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]);
        assert_eq!(assess("apps", "Deployment", &d).state, HealthState::Failed);
    }

    #[test]
    fn jobs_pvcs_crds_and_generic() {
        let job = json!({"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}});
        assert_eq!(assess("batch", "Job", &job).state, HealthState::Failed);
        let job = json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(assess("batch", "Job", &job).state, HealthState::Current);
        let pvc = json!({"status": {"phase": "Pending"}});
        assert_eq!(
            assess("", "PersistentVolumeClaim", &pvc).state,
            HealthState::InProgress
        );
        let crd = json!({"status": {"conditions": [{"type": "Established", "status": "True"}]}});
        assert_eq!(
            assess("apiextensions.k8s.io", "CustomResourceDefinition", &crd).state,
            HealthState::Current
        );
        let cr = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Waiting"}]}});
        assert_eq!(
            assess("example.com", "Widget", &cr).state,
            HealthState::InProgress
        );
        assert_eq!(
            assess("example.com", "Widget", &json!({})).state,
            HealthState::Current
        );
        let svc = json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {}}});
        assert_eq!(assess("", "Service", &svc).state, HealthState::InProgress);
    }
}
