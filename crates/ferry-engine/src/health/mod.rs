//! Stage 7, health: kstatus-like readiness rules. Pure: [`assess`] judges one live object's JSON
//! (Current, InProgress, Failed); fetching and waiting until objects are Current is the cluster
//! side's (`cluster::manager::wait`).

pub mod cel;

use serde::Serialize;
use serde_json::Value;

pub use cel::CustomHealth;

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
    pub fn current() -> Self {
        Self {
            state: HealthState::Current,
            message: String::new(),
        }
    }
    pub fn progress(message: impl Into<String>) -> Self {
        Self {
            state: HealthState::InProgress,
            message: message.into(),
        }
    }
    pub fn failed(message: impl Into<String>) -> Self {
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

/// Assess one live object by a custom CEL rule for its kind ([`cel`]), else by the built-in
/// rules ([`assess`]).
pub fn assess_with(custom: &CustomHealth, group: &str, kind: &str, obj: &Value) -> Health {
    custom
        .assess(obj)
        .unwrap_or_else(|| assess(group, kind, obj))
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
