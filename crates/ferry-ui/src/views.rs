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
            section aria-labelledby="h-diff" {
                h2 #h-diff { "Git and cluster" }
                dl.summary {
                    dt { "Source revision (git)" } dd #source-revision { (d.drift.source_revision.as_deref().unwrap_or("unknown")) }
                    dt { "Applied revision" } dd { (d.drift.applied_revision.as_deref().unwrap_or("none yet")) }
                    dt { "Last attempted" } dd { (d.drift.attempted_revision.as_deref().unwrap_or("none yet")) }
                }
                p {
                    @match (&d.drift.source_revision, &d.drift.applied_revision) {
                        (Some(s), Some(a)) if s == a => "The cluster has what git has at this revision; the agent corrects drift of applied objects at every interval.",
                        (Some(_), Some(_)) => "Git has a newer revision than the cluster: the next sync applies it.",
                        _ => "Nothing applied yet.",
                    }
                }
            }
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
