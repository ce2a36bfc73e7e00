//! The `Release` CRD: one deployed app, rendered from a path of a source and applied by the agent
//! with the rights of a service account. Modelled on Flux's Kustomization.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{LocalObjectReference, NamespacedObjectReference, SourceReference};

/// Desired state of a Release.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "Release",
    plural = "releases",
    shortname = "rel",
    namespaced,
    status = "ReleaseStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".status.lastAppliedRevision"}"#,
    printcolumn = r#"{"name":"Suspended","type":"boolean","jsonPath":".spec.suspend"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseSpec {
    /// The source holding the manifests.
    pub source_ref: SourceReference,
    /// Directory inside the source, relative to its root. Default: the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Render options, the same schema as the `ferry.yaml` app config of push mode (renderer
    /// plain / kustomize / helm, values, substitutions). Merged over a `ferry.yaml` in `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub render: Option<serde_json::Value>,
    /// Namespace for namespaced objects that do not set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// Apply with the rights of this ServiceAccount (in the Release's namespace), through
    /// impersonation. When empty, the agent's `--default-service-account` is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// How often to re-check and correct drift (Go duration). Default `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// How soon to retry after a failure. Default: `interval`, capped at `2m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<String>,
    /// Delete objects that left the source (only objects this Release applied). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<bool>,
    /// Wait for applied objects to become healthy before reporting Ready.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait: bool,
    /// Timeout for apply + wait (Go duration). Default `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Custom health checks in CEL for `wait` (Flux's `healthCheckExprs`): per apiVersion and
    /// kind, `current` (required), `inProgress` and `failed` expressions over the live object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_check_exprs: Vec<crate::health::HealthCheckExpr>,
    /// Releases that must be Ready (at their current generation) before this one applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<NamespacedObjectReference>,
    /// Stop reconciling; nothing is applied or pruned while suspended.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// SOPS decryption: a Secret in the Release's namespace holding age keys (`*.agekey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decryption: Option<Decryption>,
    /// What deleting the Release does with the objects it applied. Default `Delete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
    /// Drift policy: correct (default) or only detect hand edits; fields and objects left to
    /// others. See docs/agent.md, "Drift and self-heal".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<crate::drift::DriftSpec>,
    /// Helm values from ConfigMaps and Secrets of the Release's namespace (Flux HelmRelease
    /// `valuesFrom`), read as the Release's service account and merged in order over the
    /// repository's values; `spec.render.helm.values` is merged last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_from: Vec<ValuesReference>,
    /// `${VAR}` substitution from the cluster (Flux Kustomization `postBuild`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_build: Option<PostBuild>,
}

/// Which kind of object a `valuesFrom` or `substituteFrom` entry reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum InputKind {
    #[default]
    ConfigMap,
    Secret,
}

/// One `valuesFrom` entry: a values document in a ConfigMap or Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValuesReference {
    /// `ConfigMap` or `Secret`.
    pub kind: InputKind,
    pub name: String,
    /// Only the Release's own namespace is allowed (any other is refused); leave it empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The data key holding the values. Default `values.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_key: Option<String>,
    /// Put the key's value (one flat value, typed like a plain YAML scalar) at this dotted path
    /// (`a.b`, `list[0].name`, `a\.b` for a key with a dot) instead of merging a values document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_path: Option<String>,
    /// A missing object or key is skipped instead of failing the Release.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

/// Variable substitution after rendering (Flux Kustomization `postBuild`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostBuild {
    /// Variables, winning over `substituteFrom`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub substitute: std::collections::BTreeMap<String, String>,
    /// ConfigMaps and Secrets of the Release's namespace whose every data key is a variable;
    /// later entries win.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub substitute_from: Vec<SubstituteReference>,
}

/// One `substituteFrom` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubstituteReference {
    /// `ConfigMap` or `Secret`.
    pub kind: InputKind,
    pub name: String,
    /// Only the Release's own namespace is allowed (any other is refused); leave it empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A missing object is skipped instead of failing the Release.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// SOPS decryption settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Decryption {
    /// Only `sops`.
    #[serde(default = "default_provider")]
    pub provider: String,
    pub secret_ref: LocalObjectReference,
}

fn default_provider() -> String {
    "sops".to_string()
}

/// What happens to applied objects when the Release is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete everything in the inventory.
    #[default]
    Delete,
    /// Leave the objects in the cluster.
    Orphan,
}

/// Observed state of a Release.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Source revision of the last successful apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,
    /// Source revision of the last attempt (successful or not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_revision: Option<String>,
    /// The last `ferry.dev/reconcile-requested-at` value acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// Objects applied by the last successful sync: what pruning and deletion may touch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<InventoryEntry>,
    /// The most recent syncs, newest first (at most 5).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<SyncRecord>,
    /// What the last drift check found (absent: no drift seen since the last apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<crate::drift::DriftStatus>,
    /// The `ferry.dev/deploy-request` id of the last deploy request this Release ran (see
    /// `ferry_api::deploy`): how `ferry deploy` knows its commit was handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_deploy_request: Option<String>,
}

/// One applied object.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEntry {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

/// One sync attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncRecord {
    pub revision: String,
    pub time: Time,
    /// `Succeeded` or `Failed`.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How many sync records to keep.
pub const HISTORY_LIMIT: usize = 5;
