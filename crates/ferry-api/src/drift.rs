//! A Release's drift policy (`spec.drift`) and what the agent last found (`status.drift`):
//! correct drift (the default) or only report it, and fields or objects left to others.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `spec.drift`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftSpec {
    /// `correct` (default): hand edits and deletions of the Release's objects are reverted.
    /// `detect`: they are reported (status.drift, an Event, `ferry_release_drift_objects`) and
    /// left in place until the next apply of a new revision or spec.
    #[serde(default)]
    pub mode: DriftMode,
    /// Fields ferry leaves to other managers: neither applied to existing objects, nor
    /// reverted, nor reported (Argo CD `ignoreDifferences.jsonPointers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<DriftIgnore>,
}

/// What the agent does about drift.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DriftMode {
    #[default]
    Correct,
    Detect,
}

impl DriftMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Correct => "correct",
            Self::Detect => "detect",
        }
    }
}

/// JSON pointers to ignore on the objects `target` selects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftIgnore {
    /// Which objects; every field left out matches all (no target: every object).
    #[serde(default)]
    pub target: DriftTarget,
    /// JSON pointers (RFC 6901), e.g. `/spec/replicas`, `/metadata/annotations/a~1b`.
    pub paths: Vec<String>,
}

/// Selects objects of a Release by group, kind, name and namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftTarget {
    /// API group (`apps`; empty string for the core group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// At most this many objects are listed in `status.drift.objects`.
pub const DRIFT_OBJECTS_LIMIT: usize = 20;
/// At most this many paths are listed per object.
pub const DRIFT_PATHS_LIMIT: usize = 10;

/// `status.drift`: what the last drift check found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftStatus {
    /// The mode the check ran in (`detect`: the drift is still there; `correct`: it was
    /// reverted by the apply that followed the check).
    pub mode: String,
    /// How many objects differed (all of them, also those beyond the list).
    pub count: u32,
    /// The source revision the objects were compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The first objects that differed, with the first fields that differ (never values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<DriftedObject>,
}

/// One object that differed from the source.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftedObject {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// Deleted from the cluster.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missing: bool,
    /// Fields that differ, as JSON pointers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// How many more paths differ than are listed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more_paths: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
