//! Custom health checks, the shape of Flux's `healthCheckExprs`: for one `apiVersion` + `kind`,
//! CEL expressions over the live object that decide whether it is Current, InProgress or
//! Failed. Used by a Release's `spec.healthCheckExprs` and by `ferry.yaml` for push apps; the
//! engine (`ferry_engine::health::cel`) compiles and evaluates them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// CEL health rules for one kind. The object's top-level fields (`metadata`, `spec`, `status`,
/// ...) are the expressions' variables. Evaluated in this order: `inProgress`, `failed`,
/// `current`; the first that is true decides, none true means InProgress.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckExpr {
    /// `group/version` (or `v1` for the core group) of the kind the rules are for.
    pub api_version: String,
    pub kind: String,
    /// True when the object is healthy (required).
    pub current: String,
    /// True while the object is still working toward its desired state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_progress: Option<String>,
    /// True when the object failed and will not become healthy by waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}
