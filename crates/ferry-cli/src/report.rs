//! How the CLI shows the engine's reports: human text (with colour on a terminal) and markdown
//! for pull-request comments. The engine returns data only (`ferry_engine::report`); JSON is
//! that data serialised. The text here is what users and scripts read: keep it stable (the
//! tests in tests/ compare it).

use std::fmt::Write as _;

use ferry_engine::health::HealthState;
use ferry_engine::report::{
    Action, ApplyReport, DiffAction, DiffReport, HookTiming, ObjectDiff, StatusReport,
};

/// Human text of an apply (or delete): one line per object that changed or failed, then the
/// summary; `verbose` lists unchanged healthy objects too.
/// What `-o name` prints for a report's objects: one `kind.group/name` line each.
pub fn object_names<T: HasObjectKey>(objects: &[T]) -> String {
    objects
        .iter()
        .map(|o| {
            let key = o.object_key();
            format!(
                "{}\n",
                crate::output::object_name(&key.group, &key.kind, &key.name)
            )
        })
        .collect()
}

/// Report entries that name one object.
pub trait HasObjectKey {
    fn object_key(&self) -> &ferry_engine::ObjectKey;
}

impl HasObjectKey for ferry_engine::report::ObjectResult {
    fn object_key(&self) -> &ferry_engine::ObjectKey {
        &self.key
    }
}

impl HasObjectKey for ferry_engine::report::ObjectDiff {
    fn object_key(&self) -> &ferry_engine::ObjectKey {
        &self.key
    }
}

pub fn apply_human(report: &ApplyReport, verbose: bool) -> String {
    let mut out = String::new();
    for o in &report.objects {
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
        if !o.drift.is_empty() {
            let _ = writeln!(out, "           differs: {}", o.drift.join(", "));
        }
        if let Some(h) = &o.health
            && h.state != HealthState::Current
        {
            for line in h.message.lines() {
                let _ = writeln!(out, "           {line}");
            }
        }
    }
    if let Some(reason) = &report.prune_skipped {
        let _ = writeln!(out, "prune skipped: {reason}");
    }
    if report.timed_out {
        let _ = writeln!(out, "timed out waiting for health");
    }
    let _ = writeln!(out, "{}", report.summary());
    out
}

/// Markdown of an apply (or delete): a table of objects, then the summary.
pub fn apply_markdown(report: &ApplyReport) -> String {
    let mut out = format!("### ferry apply: `{}`\n\n", report.app);
    out.push_str("| object | action | health |\n|---|---|---|\n");
    for o in &report.objects {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            o.key,
            o.action.as_str(),
            o.health.as_ref().map(|h| h.state.as_str()).unwrap_or("")
        );
    }
    let _ = writeln!(out, "\n{}", report.summary());
    out
}

/// What a hook's timing means for the reader of a diff.
fn hook_description(hook: HookTiming) -> &'static str {
    match hook {
        HookTiming::PreDeploy => "pre-deploy hook: runs first, on every apply that changes the app",
        HookTiming::PostDeploy => {
            "post-deploy hook: runs last, on every apply that changes the app"
        }
    }
}

/// `ACTION KEY`, plus when a hook runs.
fn diff_header(o: &ObjectDiff) -> String {
    match o.hook {
        Some(hook) => format!(
            "{} {} ({})",
            o.action.as_str(),
            o.key,
            hook_description(hook)
        ),
        None => format!("{} {}", o.action.as_str(), o.key),
    }
}

/// Whether a diff entry is shown: changes always; an unchanged hook when anything else
/// changes, since it runs then.
fn diff_shown(report: &DiffReport, o: &ObjectDiff) -> bool {
    !(o.action == DiffAction::Unchanged && !(o.hook.is_some() && report.has_changes()))
}

/// Human text of a diff; `color` adds ANSI colours to diff lines (only on a terminal).
pub fn diff_human(report: &DiffReport, color: bool) -> String {
    use owo_colors::OwoColorize;
    let mut out = String::new();
    for o in report.objects.iter().filter(|o| diff_shown(report, o)) {
        let header = diff_header(o);
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
    let _ = writeln!(out, "{}", report.summary());
    out
}

/// Markdown of a diff for a pull-request comment: the summary and one collapsible diff per
/// object.
pub fn diff_markdown(report: &DiffReport) -> String {
    let mut out = format!(
        "### ferry diff: `{}`\n\n{}\n\n",
        report.app,
        report.summary()
    );
    for o in report.objects.iter().filter(|o| diff_shown(report, o)) {
        let _ = writeln!(
            out,
            "<details><summary><b>{}</b> <code>{}</code>{}</summary>\n\n```diff\n{}```\n</details>\n",
            o.action.as_str(),
            o.key,
            o.hook
                .map(|h| format!(" ({})", hook_description(h)))
                .unwrap_or_default(),
            // A fence inside the diff would end the block early.
            o.diff.replace("```", "`\u{200b}``")
        );
    }
    out
}

/// Human text of `ferry status`.
pub fn status_human(report: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "app:       {} (inventory in {})",
        report.app, report.namespace
    );
    let _ = writeln!(out, "source:    {}", report.source);
    let _ = writeln!(
        out,
        "revision:  {}",
        report.revision.as_deref().unwrap_or("(none)")
    );
    let _ = writeln!(out, "applied:   {}", report.applied_at);
    let _ = writeln!(out, "objects:   {}", report.objects.len());
    for o in &report.objects {
        let _ = writeln!(out, "  {:<12} {}", o.health.state.as_str(), o.key);
        if o.health.state != HealthState::Current && !o.health.message.is_empty() {
            for line in o.health.message.lines() {
                let _ = writeln!(out, "               {line}");
            }
        }
    }
    out
}

/// Markdown of `ferry status`.
pub fn status_markdown(report: &StatusReport) -> String {
    let mut out = format!(
        "### ferry status: `{}`\n\nrevision `{}`, applied {}\n\n| object | health |\n|---|---|\n",
        report.app,
        report.revision.as_deref().unwrap_or("-"),
        report.applied_at
    );
    for o in &report.objects {
        let _ = writeln!(out, "| `{}` | {} |", o.key, o.health.state.as_str());
    }
    out
}

#[cfg(test)]
mod tests {
    use ferry_engine::ObjectKey;
    use ferry_engine::report::RequestCounts;

    use super::*;

    fn key(kind: &str, name: &str) -> ObjectKey {
        ObjectKey {
            group: if kind == "Job" { "batch" } else { "" }.to_string(),
            kind: kind.to_string(),
            namespace: Some("web".to_string()),
            name: name.to_string(),
        }
    }

    fn diff_report(objects: Vec<ObjectDiff>) -> DiffReport {
        DiffReport {
            app: "web".to_string(),
            namespace: "web".to_string(),
            objects,
            requests: RequestCounts::default(),
        }
    }

    fn object(kind: &str, name: &str, action: DiffAction, diff: &str) -> ObjectDiff {
        ObjectDiff {
            key: key(kind, name),
            action,
            diff: diff.to_string(),
            hook: None,
        }
    }

    #[test]
    fn diff_human_lists_changes_and_hooks_that_will_run() {
        let mut hook = object("Job", "migrate", DiffAction::Unchanged, "");
        hook.hook = Some(HookTiming::PreDeploy);
        let report = diff_report(vec![
            object(
                "ConfigMap",
                "settings",
                DiffAction::Change,
                "@@ -1 +1 @@\n-a: 1\n+a: 2\n",
            ),
            object("ConfigMap", "same", DiffAction::Unchanged, ""),
            hook,
        ]);
        assert_eq!(
            diff_human(&report, false),
            "change ConfigMap web/settings\n@@ -1 +1 @@\n-a: 1\n+a: 2\n\
             unchanged Job.batch web/migrate (pre-deploy hook: runs first, on every apply that changes the app)\n\
             app web: 0 to create, 1 to change, 2 unchanged, 0 to prune\n"
        );
        let coloured = diff_human(&report, true);
        assert!(
            coloured.contains("\u{1b}[32m+a: 2\u{1b}[39m"),
            "{coloured:?}"
        );
        assert!(
            coloured.contains("\u{1b}[31m-a: 1\u{1b}[39m"),
            "{coloured:?}"
        );
    }

    #[test]
    fn an_unchanged_hook_is_hidden_when_nothing_changes() {
        let mut hook = object("Job", "migrate", DiffAction::Unchanged, "");
        hook.hook = Some(HookTiming::PostDeploy);
        let report = diff_report(vec![hook]);
        assert_eq!(
            diff_human(&report, false),
            "app web: 0 to create, 0 to change, 1 unchanged, 0 to prune\n"
        );
        assert!(!diff_markdown(&report).contains("<details>"));
    }

    #[test]
    fn diff_markdown_keeps_a_fence_in_the_diff_inside_its_block() {
        let report = diff_report(vec![object(
            "ConfigMap",
            "docs",
            DiffAction::Create,
            "+text: ```sh\n",
        )]);
        let markdown = diff_markdown(&report);
        assert!(markdown.starts_with(
            "### ferry diff: `web`\n\napp web: 1 to create, 0 to change, 0 unchanged, 0 to prune\n\n"
        ));
        assert!(markdown.contains("```diff\n+text: `\u{200b}``sh\n```\n</details>"));
    }
}
