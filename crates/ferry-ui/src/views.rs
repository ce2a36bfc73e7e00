//! The HTML, server-rendered with maud (escaped by construction): the page frame with its
//! landmarks, the apps list and its rows (also sent alone over SSE), and the detail page's
//! sections. Pure: data in, markup out.

use maud::{DOCTYPE, Markup, html};

use crate::model::{
    AppHealth, AppKind, AppRow, Detail, EventRow, Filter, SyncState, TreeNode, short_revision,
    summary,
};
use ferry_engine::health::HealthState;

/// Who and where: shown in the header so the user knows which cluster they act on.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    /// `context` or server URL.
    pub cluster: String,
    /// What the server identified the user as, if known.
    pub user: String,
    /// Scope of the watches: "all namespaces" or a list.
    pub scope: String,
}

/// The page around a view: skip link, header/nav, main, a live region for announcements.
/// `live` is the SSE URL the page listens on; `refresh` the fragment it reloads on a change.
pub fn page(frame: &Frame, title: &str, live: &str, refresh: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · ferry" }
                link rel="stylesheet" href="/assets/ui.css";
                script src="/assets/ui.js" defer {}
            }
            body data-live=(live) data-refresh=[refresh] {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Main" {
                        a.brand href="/" { "ferry" }
                        a href="/" { "Apps" }
                    }
                    p.who {
                        span { "cluster " strong { (frame.cluster) } }
                        @if !frame.user.is_empty() { span { " · as " strong { (frame.user) } } }
                        span { " · " (frame.scope) }
                        span #conn role="status" { " · live: connecting" }
                    }
                }
                main #main tabindex="-1" { (body) }
                div #announce .visually-hidden aria-live="polite" {}
            }
        }
    }
}

fn sync_badge(sync: SyncState) -> Markup {
    html! { span class={"badge sync-" (sync.slug())} { (sync.label()) } }
}

fn health_badge(health: AppHealth) -> Markup {
    html! { span class={"badge health-" (health.slug())} { (health.label()) } }
}

fn state_badge(state: HealthState) -> Markup {
    let label = match state {
        HealthState::Current => "Healthy",
        HealthState::InProgress => "Progressing",
        HealthState::Failed => "Degraded",
        HealthState::NotFound => "Missing",
    };
    html! { span class={"badge state-" (state.as_str())} { (label) } }
}

/// One row of the apps table; also what SSE sends to replace it in place.
pub fn app_row(row: &AppRow) -> Markup {
    html! {
        tr id=(row.key.dom_id())
            data-kind=(row.key.kind.slug()) data-namespace=(row.key.namespace)
            data-name=(format!("{}/{}", row.key.namespace, row.key.name))
            data-sync=(row.sync.slug()) data-health=(row.health.slug()) {
            td { (row.key.kind.label()) }
            td { (row.key.namespace) }
            th scope="row" { a href=(row.key.path()) { (row.key.name) } }
            td { (sync_badge(row.sync)) }
            td { (health_badge(row.health)) }
            td { @if let Some(r) = &row.revision { code title=(r) { (short_revision(r)) } } }
            td { @if let Some(t) = &row.last_change { time datetime=(t) { (t) } } }
            td.msg { (row.message) }
        }
    }
}

/// The apps list: filters (a GET form that works without script; the script filters as you
/// type) and one table.
pub fn apps(rows: &[&AppRow], filter: &Filter, namespaces: &[String], total: usize) -> Markup {
    let counts = summary(rows);
    html! {
        h1 { "Apps" }
        form.filters role="search" method="get" action="/" aria-label="Filter apps" {
            label { "Name " input type="search" name="q" value=(filter.q) autocomplete="off"; }
            label { "Namespace "
                select name="namespace" {
                    option value="" { "all" }
                    @for ns in namespaces { option value=(ns) selected[filter.namespace == *ns] { (ns) } }
                }
            }
            label { "Sync "
                select name="sync" {
                    option value="" { "any" }
                    @for s in SyncState::ALL { option value=(s.slug()) selected[filter.sync == s.slug()] { (s.label()) } }
                }
            }
            label { "Health "
                select name="health" {
                    option value="" { "any" }
                    @for h in [AppHealth::Healthy, AppHealth::Progressing, AppHealth::Degraded, AppHealth::Unknown] {
                        option value=(h.slug()) selected[filter.health == h.slug()] { (h.label()) }
                    }
                }
            }
            label { "Kind "
                select name="kind" {
                    option value="" { "any" }
                    @for k in [AppKind::Release, AppKind::Push] { option value=(k.slug()) selected[filter.kind == k.slug()] { (k.label()) } }
                }
            }
            button type="submit" { "Filter" }
        }
        p #count role="status" {
            span #shown { (rows.len()) } " of " span #total { (total) } " apps"
            @for (label, n) in &counts { " · " (label) ": " (n) }
        }
        table #apps {
            caption.visually-hidden { "Apps with sync state, health, revision and last change" }
            thead { tr {
                th scope="col" { "Kind" } th scope="col" { "Namespace" } th scope="col" { "Name" }
                th scope="col" { "Sync" } th scope="col" { "Health" } th scope="col" { "Revision" }
                th scope="col" { "Last change" } th scope="col" { "Message" }
            } }
            tbody { @for row in rows { (app_row(row)) } }
        }
    }
}

fn tree_node(node: &TreeNode) -> Markup {
    let label = format!(
        "{}{} {}",
        node.namespace
            .as_deref()
            .map(|n| format!("{n}/"))
            .unwrap_or_default(),
        node.kind,
        node.name
    );
    html! {
        li data-kind=(node.kind) data-name=(node.name) data-state=(node.health.state.as_str()) {
            span.node {
                span.kind { (node.kind) } " "
                span.name { @if let Some(ns) = &node.namespace { span.ns { (ns) "/" } } (node.name) } " "
                @if node.uid.is_none() && node.kind == "Secret" { span.badge.health-unknown { "Not read" } }
                @else { (state_badge(node.health.state)) }
                @if let Some(note) = &node.note { " " span.note { (note) } }
                @else if !node.health.message.is_empty() { " " span.note { (node.health.message) } }
            }
            @if !node.children.is_empty() {
                ul aria-label=(format!("owned by {label}")) { @for c in &node.children { (tree_node(c)) } }
            }
        }
    }
}

fn action_form(
    d: &Detail,
    csrf: &str,
    action: &str,
    label: &str,
    extra: Option<(&str, &str)>,
) -> Markup {
    html! {
        form.action method="post" action=(format!("{}/{action}", d.key.path())) {
            input type="hidden" name="csrf" value=(csrf);
            @if let Some((k, v)) = extra { input type="hidden" name=(k) value=(v); }
            button type="submit" { (label) }
        }
    }
}

/// The detail page's changing part (reloaded in place when SSE says something changed).
pub fn detail_panel(d: &Detail, csrf: &str) -> Markup {
    let is_release = d.key.kind == AppKind::Release;
    html! {
        section aria-labelledby="h-summary" {
            h2 #h-summary { "Status" }
            dl.summary {
                dt { "Sync" } dd #sync-state { (sync_badge(d.row.sync)) }
                dt { "Health" } dd #health-state { (health_badge(d.row.health)) }
                dt { "Revision" } dd { @if let Some(r) = &d.row.revision { code { (r) } } @else { "—" } }
                dt { "Last change" } dd { (d.row.last_change.as_deref().unwrap_or("—")) }
                dt { "Message" } dd #message { (d.row.message) }
            }
            @if is_release {
                div.actions role="group" aria-label="Actions" {
                    (action_form(d, csrf, "sync", "Sync now", None))
                    @if d.suspended { (action_form(d, csrf, "resume", "Resume", None)) }
                    @else { (action_form(d, csrf, "suspend", "Suspend", None)) }
                    @if d.rolled_back_from.is_some() { (action_form(d, csrf, "undo", "Undo rollback", None)) }
                }
                @if let Some(from) = &d.rolled_back_from {
                    p #rolled-back { "Rolled back: pinned to a commit; it follows " code { (from) } " again after Undo rollback." }
                }
            }
            @if !d.conditions.is_empty() {
                table.conditions {
                    caption { "Conditions" }
                    thead { tr { th scope="col" { "Type" } th scope="col" { "Status" } th scope="col" { "Reason" } th scope="col" { "Message" } th scope="col" { "Since" } } }
                    tbody { @for c in &d.conditions { tr { th scope="row" { (c.type_) } td { (c.status) } td { (c.reason) } td.msg { (c.message) } td { (c.time) } } } }
                }
            }
        }
        section aria-labelledby="h-tree" {
            h2 #h-tree { "Resources" }
            @if d.tree.is_empty() { p { "No objects applied yet." } }
            @else { ul.tree #tree aria-label="Resource tree" { @for n in &d.tree { (tree_node(n)) } } }
        }
        @if is_release {
            (git_and_cluster(d))
            section aria-labelledby="h-history" {
                h2 #h-history { "History" }
                @if d.history.is_empty() { p { "No syncs recorded yet." } }
                @else {
                    table #history {
                        caption.visually-hidden { "Recent syncs, newest first" }
                        thead { tr { th scope="col" { "Time" } th scope="col" { "Revision" } th scope="col" { "Result" } th scope="col" { "Message" } th scope="col" { "Roll back" } } }
                        tbody { @for h in &d.history { tr {
                            td { (h.time) } td { code { (h.revision) } } td { (h.result) } td.msg { (h.message) }
                            td {
                                @if h.result == "Succeeded" && d.row.revision.as_deref() != Some(h.revision.as_str()) {
                                    form.action method="post" action=(format!("{}/rollback", d.key.path())) {
                                        input type="hidden" name="csrf" value=(csrf);
                                        input type="hidden" name="revision" value=(h.revision);
                                        button type="submit" aria-label=(format!("Roll back to {}", h.revision)) { "Roll back" }
                                    }
                                }
                            }
                        } } }
                    }
                }
            }
        }
        section aria-labelledby="h-events" {
            h2 #h-events { "Events" }
            (events_table(&d.events))
        }
        @if let Some(source) = &d.source {
            section aria-labelledby="h-source" {
                h2 #h-source { "Source" }
                @if let Some(note) = &source.note { p.note { (note) } }
                @else {
                    dl.summary {
                        dt { "Object" } dd { (source.key.as_ref().map(|k| k.to_string()).unwrap_or_default()) }
                        dt { "URL" } dd { code { (source.url) } }
                        dt { "Reference" } dd { (source.reference) }
                        dt { "Revision" } dd { code { (source.revision) } }
                        dt { "Last fetch" } dd { (source.last_fetch) }
                        dt { "Suspended" } dd { (if source.suspended { "yes" } else { "no" }) }
                    }
                    @for c in &source.conditions { p { strong { (c.type_) "=" (c.status) } " " (c.reason) ": " (c.message) } }
                }
            }
        }
        @if is_release {
            section aria-labelledby="h-images" {
                h2 #h-images { "Image automation" }
                @if d.images.is_empty() { p { "No image automation in this namespace." } }
                @else {
                    table {
                        caption.visually-hidden { "Image repositories, policies and updates of this namespace" }
                        thead { tr { th scope="col" { "Kind" } th scope="col" { "Name" } th scope="col" { "State" } th scope="col" { "Ready" } } }
                        tbody { @for i in &d.images { tr {
                            td { (i.kind) } th scope="row" { (i.name) } td { (i.summary) }
                            td { @if let Some(c) = &i.ready { (c.status) " " (c.reason) } }
                        } } }
                    }
                }
            }
        }
        @if !d.notes.is_empty() {
            section aria-labelledby="h-notes" {
                h2 #h-notes { "Not shown" }
                ul { @for n in &d.notes { li { (n) } } }
            }
        }
    }
}

/// The "Git and cluster" section: revisions, the drift policy, what the agent's last drift
/// check found (`status.drift`: objects and fields, never values), and the button that computes
/// the real diff on demand (`GET …/diff`, as the user; its result goes into `#diff-result`,
/// which the script keeps when the panel reloads).
fn git_and_cluster(d: &Detail) -> Markup {
    let drift = &d.drift;
    html! {
        section #git-and-cluster aria-labelledby="h-diff" {
            h2 #h-diff { "Git and cluster" }
            dl.summary {
                dt { "Source revision (git)" } dd #source-revision { (drift.source_revision.as_deref().unwrap_or("unknown")) }
                dt { "Applied revision" } dd #applied-revision { (drift.applied_revision.as_deref().unwrap_or("none yet")) }
                dt { "Last attempted" } dd { (drift.attempted_revision.as_deref().unwrap_or("none yet")) }
                dt { "Drift policy" } dd #drift-mode data-mode=(drift.mode.as_str()) { (drift.policy()) }
            }
            p #drift-summary data-drifted=(drift.findings.is_some()) { (drift.summary()) }
            @if let Some(found) = &drift.findings {
                @if !found.objects.is_empty() {
                    table #drift {
                        caption { "What differs from git (status.drift: fields only, never values)" }
                        thead { tr { th scope="col" { "Object" } th scope="col" { "Fields that differ" } } }
                        tbody { @for o in &found.objects {
                            tr data-kind=(o.kind) data-name=(o.name) {
                                th scope="row" {
                                    (o.kind) " "
                                    @if let Some(ns) = &o.namespace { (ns) "/" }
                                    (o.name)
                                }
                                td {
                                    @if o.missing { "deleted from the cluster" }
                                    @else {
                                        @for (i, p) in o.paths.iter().enumerate() {
                                            @if i > 0 { ", " }
                                            code.path { (p) }
                                        }
                                        @if o.more_paths > 0 { " and " (o.more_paths) " more" }
                                    }
                                }
                            }
                        } }
                    }
                }
                @let listed = found.objects.len() as u32;
                @if found.count > listed {
                    p { (found.count - listed) " more objects differ (status.drift lists the first " (listed) ")." }
                }
            }
            @if !drift.ignored.is_empty() {
                p #drift-ignored { "Left to others, neither compared nor corrected (spec.drift.ignore): "
                    @for (i, rule) in drift.ignored.iter().enumerate() { @if i > 0 { "; " } code { (rule) } }
                }
            }
            @if drift.applied_revision.is_some() || drift.source_revision.is_some() {
                form.diff #diff-form method="get" action=(format!("{}/diff", d.key.path())) {
                    label { input type="checkbox" name="latest" value="1"; " at git's latest revision (what the next sync would change) instead of the applied one" }
                    button type="submit" { "Show the diff" }
                }
                p.hint { "Renders the Release here as the agent does and compares it with the cluster, as you (your RBAC); Secret values are redacted. Computed when you ask, within "
                    (crate::server::diff::DIFF_TIMEOUT.as_secs()) " s." }
                div #diff-result aria-live="polite" {}
            }
        }
    }
}

/// The outcome of one on-demand diff, for [`release_diff`].
pub struct DiffOutcome<'a> {
    pub key: &'a crate::model::AppKey,
    /// The diff, or why there is none (the message names the object and what to do).
    pub result: Result<&'a ferry_engine::pipeline::release_diff::ReleaseDiff, String>,
    /// When it was computed (UTC).
    pub at: String,
}

fn diff_line_class(line: &str) -> &'static str {
    if line.starts_with("@@") {
        "hunk"
    } else if line.starts_with('+') && !line.starts_with("+++") {
        "add"
    } else if line.starts_with('-') && !line.starts_with("---") {
        "del"
    } else {
        "ctx"
    }
}

/// The diff between git and the cluster (what `#diff-result` shows): per object that differs,
/// its action and unified diff (live → git), as `ferry diff release` prints it.
pub fn release_diff(outcome: &DiffOutcome) -> Markup {
    use ferry_engine::report::DiffAction;
    match &outcome.result {
        Err(message) => html! {
            div.diff-outcome data-state="error" {
                p #diff-error role="alert" { "No diff: " (message) }
            }
        },
        Ok(diff) => {
            let report = &diff.report;
            let changed: Vec<_> = report
                .objects
                .iter()
                .filter(|o| o.action != DiffAction::Unchanged)
                .collect();
            let count = |a: DiffAction| report.objects.iter().filter(|o| o.action == a).count();
            let which = if diff.latest {
                "git's latest revision"
            } else {
                "the applied revision"
            };
            html! {
                div.diff-outcome data-state=(if changed.is_empty() { "clean" } else { "changes" }) {
                    p #diff-summary {
                        "Compared at " (outcome.at) " with " (which) " " code { (short_revision(&diff.commit)) } ": "
                        (count(DiffAction::Create)) " to create, " (count(DiffAction::Change)) " to change, "
                        (count(DiffAction::Unchanged)) " unchanged, " (count(DiffAction::Prune)) " to prune."
                    }
                    @if changed.is_empty() {
                        p { "No differences: the cluster has what git has at this revision (fields in spec.drift.ignore and objects with ferry.dev/reconcile: disabled are not compared)." }
                    }
                    @for o in &changed {
                        article.object-diff data-kind=(o.key.kind) data-name=(o.key.name) data-action=(o.action.as_str()) {
                            h3 { span class={"badge action-" (o.action.as_str())} { (o.action.as_str()) } " " (o.key.to_string()) }
                            @if o.diff.is_empty() { p { "(no field-level diff)" } }
                            @else {
                                pre.diff aria-label=(format!("diff of {} (- cluster, + git)", o.key)) {
                                    @for line in o.diff.lines() { span class=(diff_line_class(line)) { (line) } "\n" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The diff as a page of its own (without the script: the form's GET lands here).
pub fn release_diff_page(outcome: &DiffOutcome) -> Markup {
    let key = outcome.key;
    html! {
        nav aria-label="Breadcrumb" { a href="/" { "Apps" } " / " a href=(key.path()) { (key.namespace) " / " (key.name) } " / diff" }
        h1 { "Git and cluster: " (key.kind.label()) " " (key.namespace) "/" (key.name) }
        div #diff-result { (release_diff(outcome)) }
        p { a href=(key.path()) { "Back to the app" } }
    }
}

fn events_table(events: &[EventRow]) -> Markup {
    html! {
        @if events.is_empty() { p { "No Events." } }
        @else {
            table #events {
                caption.visually-hidden { "Events, newest first" }
                thead { tr { th scope="col" { "Time" } th scope="col" { "Type" } th scope="col" { "Reason" } th scope="col" { "Object" } th scope="col" { "Message" } } }
                tbody { @for e in events { tr class={"ev-" (e.type_.to_ascii_lowercase())} {
                    td { (e.time) } td { (e.type_) } td { (e.reason) } td { (e.object) }
                    td.msg { (e.message) @if e.count > 1 { " (×" (e.count) ")" } }
                } } }
            }
        }
    }
}

/// The detail page body: heading, result of the last action, and the panel.
pub fn detail(d: &Detail, csrf: &str, done: Option<&str>) -> Markup {
    html! {
        nav aria-label="Breadcrumb" { a href="/" { "Apps" } " / " (d.key.namespace) " / " (d.key.name) }
        h1 { (d.key.kind.label()) " " (d.key.namespace) "/" (d.key.name) }
        p #result role="status" { @if let Some(done) = done { (done) } }
        div #panel { (detail_panel(d, csrf)) }
    }
}

/// An error page body (the API server refused, the app does not exist, ...).
pub fn error(status: u16, message: &str) -> Markup {
    html! {
        h1 { "Error " (status) }
        p #error role="alert" { (message) }
        p { a href="/" { "Back to the apps" } }
    }
}

/// Minimal page for refusals before anything else is known (no frame, no script).
pub fn refusal(message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "ferry ui: refused" } }
            body { main { h1 { "Refused" } p { (message) } } }
        }
    }
}

/// Used by tests and the SSE payload: markup as a string.
pub fn to_string(markup: Markup) -> String {
    markup.into_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AppKey;
    use ferry_engine::ObjectKey;
    use ferry_engine::pipeline::release_diff::ReleaseDiff;
    use ferry_engine::report::{DiffAction, DiffReport, ObjectDiff, RequestCounts};

    fn key() -> AppKey {
        AppKey {
            kind: AppKind::Release,
            namespace: "team".into(),
            name: "web".into(),
        }
    }

    fn object(kind: &str, name: &str, action: DiffAction, diff: &str) -> ObjectDiff {
        ObjectDiff {
            key: ObjectKey {
                group: String::new(),
                kind: kind.into(),
                namespace: Some("team".into()),
                name: name.into(),
            },
            action,
            diff: diff.into(),
            hook: None,
        }
    }

    #[test]
    fn the_diff_marks_lines_escapes_them_and_leaves_unchanged_objects_out() {
        let key = key();
        let diff = ReleaseDiff {
            commit: "0123456789".repeat(4),
            latest: false,
            report: DiffReport {
                app: "web".into(),
                namespace: "team".into(),
                objects: vec![
                    object(
                        "ConfigMap",
                        "settings",
                        DiffAction::Change,
                        "@@ -1,2 +1,2 @@\n-  value: <b>hand</b>\n+  value: one\n   other: x\n",
                    ),
                    object("Service", "web", DiffAction::Unchanged, ""),
                ],
                requests: RequestCounts::default(),
            },
        };
        let html = release_diff(&DiffOutcome {
            key: &key,
            result: Ok(&diff),
            at: "2026-12-03 06:00:00 UTC".into(),
        })
        .into_string();
        assert!(html.contains(r#"data-state="changes""#), "{html}");
        assert!(
            html.contains(r#"<span class="del">-  value: &lt;b&gt;hand&lt;/b&gt;</span>"#),
            "{html}"
        );
        assert!(html.contains(r#"<span class="add">+  value: one</span>"#));
        assert!(html.contains(r#"<span class="hunk">@@ -1,2 +1,2 @@</span>"#));
        assert!(html.contains("1 to change, 1 unchanged"), "{html}");
        assert!(html.contains("the applied revision") && html.contains("0123456"));
        assert!(
            !html.contains(r#"data-kind="Service""#),
            "unchanged objects are not listed"
        );

        let clean = ReleaseDiff {
            report: DiffReport {
                objects: vec![object("Service", "web", DiffAction::Unchanged, "")],
                ..diff.report.clone()
            },
            latest: true,
            ..diff.clone()
        };
        let html = release_diff(&DiffOutcome {
            key: &key,
            result: Ok(&clean),
            at: String::new(),
        })
        .into_string();
        assert!(html.contains(r#"data-state="clean""#) && html.contains("No differences"));
        assert!(html.contains("latest revision"));

        let html = release_diff(&DiffOutcome {
            key: &key,
            result: Err("cannot read Secret team/git-auth <x>".into()),
            at: String::new(),
        })
        .into_string();
        assert!(
            html.contains(r#"id="diff-error""#) && html.contains("Secret team/git-auth &lt;x&gt;"),
            "{html}"
        );
    }
}
