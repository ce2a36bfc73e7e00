//! Stage 8, report: per-object results of apply/diff/delete/status as DATA (serialisable, plus
//! the one-line `summary()` the agent puts in conditions). Human, markdown and colour renderings
//! belong to the drivers (ferry-cli's `report` module). Nothing here ever holds Secret values:
//! diffs are redacted upstream, and every report passes through [`redact::Redactor`] (the values
//! that came from decryption) before the pipeline returns it.

pub mod redact;

use serde::Serialize;

use crate::ObjectKey;
use crate::health::{Health, HealthState};

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Created,
    Configured,
    Unchanged,
    Pruned,
    /// Left in place: prune disabled by annotation, not owned by this app, or `--prune` off.
    Kept,
    Deleted,
    Failed,
    /// Left as it is in the cluster: edited there since ferry's last apply while unchanged in
    /// the source, and the app's drift policy is `detect` (ferry.yaml `drift.mode`).
    Drifted,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Configured => "configured",
            Self::Unchanged => "unchanged",
            Self::Pruned => "pruned",
            Self::Kept => "kept",
            Self::Deleted => "deleted",
            Self::Failed => "failed",
            Self::Drifted => "drifted",
        }
    }
}

/// A field-manager conflict reported by server-side apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    pub manager: String,
    pub field: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ObjectResult {
    #[serde(flatten)]
    pub key: ObjectKey,
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// File and document it came from (`-` for stdin), when it came from the source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Conflict>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// With [`Action::Drifted`]: the fields that differ from the source, as JSON pointers
    /// (never values).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<String>,
}

impl ObjectResult {
    pub fn new(key: ObjectKey, api_version: String, action: Action) -> Self {
        Self {
            key,
            api_version,
            source: None,
            action,
            message: None,
            conflicts: Vec::new(),
            health: None,
            drift: Vec::new(),
        }
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    fn redact(&mut self, redactor: &redact::Redactor) {
        if let Some(message) = &mut self.message {
            *message = redactor.redact(message);
        }
        if let Some(health) = &mut self.health {
            health.message = redactor.redact(&health.message);
        }
        for c in &mut self.conflicts {
            c.field = redactor.redact(&c.field);
        }
        for path in &mut self.drift {
            *path = redactor.redact(path);
        }
    }
}

/// API requests the engine sent, split into reads (GET/LIST/discovery) and writes
/// (PATCH/POST/DELETE, dry-run included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RequestCounts {
    pub reads: u64,
    pub writes: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyReport {
    pub app: String,
    pub namespace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub dry_run: bool,
    pub objects: Vec<ObjectResult>,
    pub requests: RequestCounts,
    /// Whether `--wait` ran out of time.
    pub timed_out: bool,
    /// Why prune was skipped, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune_skipped: Option<String>,
    pub duration_ms: u128,
}

impl ApplyReport {
    /// Take every decrypted value out of the messages (API server errors echo field values).
    pub fn redact(&mut self, redactor: &redact::Redactor) {
        if redactor.is_empty() {
            return;
        }
        for o in &mut self.objects {
            o.redact(redactor);
        }
        if let Some(reason) = &mut self.prune_skipped {
            *reason = redactor.redact(reason);
        }
    }

    pub fn count(&self, action: Action) -> usize {
        self.objects.iter().filter(|o| o.action == action).count()
    }

    /// Objects that failed to apply or to become healthy.
    pub fn failures(&self) -> Vec<&ObjectResult> {
        self.objects
            .iter()
            .filter(|o| {
                o.action == Action::Failed
                    || o.health
                        .as_ref()
                        .is_some_and(|h| h.state != HealthState::Current)
            })
            .collect()
    }

    pub fn succeeded(&self) -> bool {
        self.failures().is_empty() && !self.timed_out
    }

    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for action in [
            Action::Created,
            Action::Configured,
            Action::Unchanged,
            Action::Pruned,
            Action::Kept,
            Action::Drifted,
            Action::Failed,
        ] {
            let n = self.count(action);
            if n > 0 {
                parts.push(format!("{n} {}", action.as_str()));
            }
        }
        if parts.is_empty() {
            parts.push("nothing to do".into());
        }
        format!(
            "app {} in {}{}: {} ({} reads, {} writes, {:.1}s)",
            self.app,
            self.namespace,
            if self.dry_run { " (dry run)" } else { "" },
            parts.join(", "),
            self.requests.reads,
            self.requests.writes,
            self.duration_ms as f64 / 1000.0
        )
    }
}

/// One object in a diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiffAction {
    Create,
    Change,
    Unchanged,
    Prune,
}

impl DiffAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Change => "change",
            Self::Unchanged => "unchanged",
            Self::Prune => "prune",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ObjectDiff {
    #[serde(flatten)]
    pub key: ObjectKey,
    pub action: DiffAction,
    /// Unified diff (live → desired), Secret values redacted; empty when unchanged.
    pub diff: String,
    /// For hooks (`helm.sh/hook`, Argo `PreSync`/`PostSync`): when the apply runs it. A hook
    /// runs on every apply that changes anything in the app, even when its own diff is empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<HookTiming>,
}

/// When a hook runs relative to the app's other objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookTiming {
    /// Applied and awaited before everything else.
    PreDeploy,
    /// Applied after everything else.
    PostDeploy,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffReport {
    pub app: String,
    pub namespace: String,
    pub objects: Vec<ObjectDiff>,
    pub requests: RequestCounts,
}

impl DiffReport {
    /// Defence in depth after the structural redaction in `pipeline::diff_object`: long
    /// decrypted values anywhere in the diff text (short ones are only hidden structurally,
    /// since `1` also appears in every `@@ -1,3 +1,4 @@` line).
    pub fn redact(&mut self, redactor: &redact::Redactor) {
        if redactor.is_empty() {
            return;
        }
        for o in &mut self.objects {
            o.diff = redactor.redact_substrings(&o.diff);
        }
    }

    pub fn has_changes(&self) -> bool {
        self.objects
            .iter()
            .any(|o| o.action != DiffAction::Unchanged)
    }

    pub fn summary(&self) -> String {
        let count = |a| self.objects.iter().filter(|o| o.action == a).count();
        format!(
            "app {}: {} to create, {} to change, {} unchanged, {} to prune",
            self.app,
            count(DiffAction::Create),
            count(DiffAction::Change),
            count(DiffAction::Unchanged),
            count(DiffAction::Prune)
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ObjectStatus {
    #[serde(flatten)]
    pub key: ObjectKey,
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub health: Health,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub app: String,
    pub namespace: String,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub applied_at: String,
    pub objects: Vec<ObjectStatus>,
}

impl StatusReport {
    pub fn healthy(&self) -> bool {
        self.objects
            .iter()
            .all(|o| o.health.state == HealthState::Current)
    }
}
