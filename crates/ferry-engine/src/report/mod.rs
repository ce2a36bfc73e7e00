//! Stage 8, report: per-object results of apply/diff/delete/status, and their human, JSON and
//! markdown renderings. Nothing here ever holds Secret values: diffs are redacted upstream, and
//! every report passes through [`redact::Redactor`] (the values that came from decryption)
//! before the pipeline returns it.

pub mod redact;

use std::fmt::Write as _;

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

    /// Human text: one line per object that changed or failed, then the summary.
    pub fn to_human(&self, verbose: bool) -> String {
        let mut out = String::new();
        for o in &self.objects {
            let healthy = o
                .health
                .as_ref()
                .is_none_or(|h| h.state == HealthState::Current);
            if !verbose && o.action == Action::Unchanged && healthy {
                continue;
            }
            let _ = write!(out, "{:<10} {}", o.action.as_str(), o.key);
            if let Some(h) = &o.health {
                let _ = write!(out, "  [{}]", h.state.as_str());
            }
            out.push('\n');
            if let Some(message) = &o.message {
                for line in message.lines() {
                    let _ = writeln!(out, "           {line}");
                }
            }
            if let Some(h) = &o.health
                && h.state != HealthState::Current
            {
                for line in h.message.lines() {
                    let _ = writeln!(out, "           {line}");
                }
            }
        }
        if let Some(reason) = &self.prune_skipped {
            let _ = writeln!(out, "prune skipped: {reason}");
        }
        if self.timed_out {
            let _ = writeln!(out, "timed out waiting for health");
        }
        let _ = writeln!(out, "{}", self.summary());
        out
    }

    pub fn to_markdown(&self) -> String {
        let mut out = format!("### ferry apply: `{}`\n\n", self.app);
        out.push_str("| object | action | health |\n|---|---|---|\n");
        for o in &self.objects {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} |",
                o.key,
                o.action.as_str(),
                o.health.as_ref().map(|h| h.state.as_str()).unwrap_or("")
            );
        }
        let _ = writeln!(out, "\n{}", self.summary());
        out
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

impl HookTiming {
    fn describe(self) -> &'static str {
        match self {
            Self::PreDeploy => "pre-deploy hook: runs first, on every apply that changes the app",
            Self::PostDeploy => "post-deploy hook: runs last, on every apply that changes the app",
        }
    }
}

impl ObjectDiff {
    /// `ACTION KEY`, plus when a hook runs.
    fn header(&self) -> String {
        match self.hook {
            Some(hook) => format!(
                "{} {} ({})",
                self.action.as_str(),
                self.key,
                hook.describe()
            ),
            None => format!("{} {}", self.action.as_str(), self.key),
        }
    }
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

    /// Human text; `color` adds ANSI colors to diff lines (only on a terminal).
    pub fn to_human(&self, color: bool) -> String {
        use owo_colors::OwoColorize;
        let mut out = String::new();
        for o in &self.objects {
            // An unchanged hook still runs when anything else changes: show it then.
            if o.action == DiffAction::Unchanged && !(o.hook.is_some() && self.has_changes()) {
                continue;
            }
            let header = o.header();
            if color {
                let _ = writeln!(out, "{}", header.bold());
            } else {
                let _ = writeln!(out, "{header}");
            }
            for line in o.diff.lines() {
                if !color {
                    let _ = writeln!(out, "{line}");
                } else if line.starts_with('+') && !line.starts_with("+++") {
                    let _ = writeln!(out, "{}", line.green());
                } else if line.starts_with('-') && !line.starts_with("---") {
                    let _ = writeln!(out, "{}", line.red());
                } else if line.starts_with("@@") {
                    let _ = writeln!(out, "{}", line.cyan());
                } else {
                    let _ = writeln!(out, "{line}");
                }
            }
        }
        let _ = writeln!(out, "{}", self.summary());
        out
    }

    /// Markdown for a pull-request comment: a summary table and one collapsible diff per object.
    pub fn to_markdown(&self) -> String {
        let mut out = format!("### ferry diff: `{}`\n\n{}\n\n", self.app, self.summary());
        for o in &self.objects {
            // An unchanged hook still runs when anything else changes: show it then.
            if o.action == DiffAction::Unchanged && !(o.hook.is_some() && self.has_changes()) {
                continue;
            }
            let _ = writeln!(
                out,
                "<details><summary><b>{}</b> <code>{}</code>{}</summary>\n\n```diff\n{}```\n</details>\n",
                o.action.as_str(),
                o.key,
                o.hook
                    .map(|h| format!(" ({})", h.describe()))
                    .unwrap_or_default(),
                // A fence inside the diff would end the block early.
                o.diff.replace("```", "`\u{200b}``")
            );
        }
        out
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

    pub fn to_human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "app:       {} (inventory in {})",
            self.app, self.namespace
        );
        let _ = writeln!(out, "source:    {}", self.source);
        let _ = writeln!(
            out,
            "revision:  {}",
            self.revision.as_deref().unwrap_or("(none)")
        );
        let _ = writeln!(out, "applied:   {}", self.applied_at);
        let _ = writeln!(out, "objects:   {}", self.objects.len());
        for o in &self.objects {
            let _ = writeln!(out, "  {:<12} {}", o.health.state.as_str(), o.key);
            if o.health.state != HealthState::Current && !o.health.message.is_empty() {
                for line in o.health.message.lines() {
                    let _ = writeln!(out, "               {line}");
                }
            }
        }
        out
    }

    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "### ferry status: `{}`\n\nrevision `{}`, applied {}\n\n| object | health |\n|---|---|\n",
            self.app,
            self.revision.as_deref().unwrap_or("-"),
            self.applied_at
        );
        for o in &self.objects {
            let _ = writeln!(out, "| `{}` | {} |", o.key, o.health.state.as_str());
        }
        out
    }
}
