//! Types shared by ferry's CRDs: references, conditions and the condition vocabulary (Flux's
//! Ready / Reconciling / Stalled model), plus helpers to read and set conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every ferry CRD.
pub const GROUP: &str = "ferry.dev";
/// The API version of every ferry CRD.
pub const VERSION: &str = "v1alpha1";

/// Condition types (Flux/kstatus vocabulary).
pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// Annotation that requests an immediate reconcile; any new value triggers one
/// (`ferry sync` writes the current time). Mirrors Flux's `reconcile.fluxcd.io/requestedAt`.
pub const RECONCILE_REQUESTED_AT: &str = "ferry.dev/reconcile-requested-at";

/// A Secret in the same namespace as the referring object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    pub name: String,
}

/// A reference to an object that may live in another namespace (refused by default, see
/// `ferry-agent --allow-cross-namespace-refs`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedObjectReference {
    pub name: String,
    /// Defaults to the namespace of the referring object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A typed reference to a source object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceReference {
    /// Kind of the source: `GitSource` (the default) or `OCISource`.
    #[serde(default = "default_source_kind")]
    pub kind: String,
    pub name: String,
    /// Defaults to the namespace of the Release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

fn default_source_kind() -> String {
    "GitSource".to_string()
}

/// The duration parser used to live here; its one home is [`crate::duration`].
pub use crate::duration::parse_duration;

/// Find a condition by type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the `Ready` condition is `True`.
pub fn is_ready(conditions: &[Condition]) -> bool {
    find_condition(conditions, READY).is_some_and(|c| c.status == "True")
}

/// Set (or replace) a condition, keeping `lastTransitionTime` when the status did not change,
/// as the Kubernetes API conventions ask.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let transition = match find_condition(conditions, type_) {
        Some(old) if old.status == status => old.last_transition_time.clone(),
        _ => now,
    };
    let condition = Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation,
        last_transition_time: transition,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(slot) => *slot = condition,
        None => conditions.push(condition),
    }
}

/// Record a failure: `Ready=False` with the reason, plus `Stalled=True` when retrying cannot
/// help (invalid spec, refused reference), else `Reconciling=True` (retrying); see
/// [`crate::kstatus`].
pub fn set_failure(
    conditions: &mut Vec<Condition>,
    reason: &str,
    message: &str,
    stalled: bool,
    observed_generation: Option<i64>,
) {
    crate::kstatus::set_outcome(
        conditions,
        crate::kstatus::failure(reason, message, stalled),
        observed_generation,
    );
}

/// Record a success: `Ready=True`, no `Reconciling` or `Stalled` (see [`crate::kstatus`]).
pub fn set_ready(
    conditions: &mut Vec<Condition>,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
) {
    crate::kstatus::set_outcome(
        conditions,
        crate::kstatus::Outcome::Ready { reason, message },
        observed_generation,
    );
}

/// Remove a condition by type.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_transition_time_kept_when_status_unchanged() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, READY, true, "A", "first", Some(1));
        let first = conditions[0].last_transition_time.clone();
        set_condition(&mut conditions, READY, true, "B", "second", Some(2));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, first);
        assert_eq!(conditions[0].reason, "B");
        assert!(is_ready(&conditions));
        set_condition(&mut conditions, READY, false, "C", "broken", Some(2));
        assert!(!is_ready(&conditions));
    }
}
