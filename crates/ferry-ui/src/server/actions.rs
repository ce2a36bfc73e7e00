//! The dashboard's actions on a Release, sent as the user so the API server decides: sync now
//! (the reconcile-request annotation `ferry sync` writes), suspend and resume (`spec.suspend`,
//! as `ferry suspend` / `ferry resume` patch it; resuming also requests a sync), and roll back
//! to a revision of its history / undo that, by the mechanism `ferry rollback` uses (see
//! crates/ferry-cli/src/commands/rollback.rs): the Release is pointed at a GitSource of its
//! own, `<release>-rollback`, a copy of its source pinned to the commit, and its original
//! `sourceRef` is kept in the annotation `ferry.dev/rollback-from`. The names and annotations
//! are the CLI's, so either tool can undo what the other did.

use ferry_api::common::RECONCILE_REQUESTED_AT;
use ferry_api::{GitSource, Release};
use ferry_engine::ownership::ANNOTATION_OWNER;

use crate::model::is_kube_name;
use ferry_engine::cluster::kube_error::{describe_kube_error, status_code};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Sync,
    Suspend,
    Resume,
    /// Back to a revision of `status.history` (given in the form).
    Rollback,
    /// Follow the original source again.
    Undo,
}

impl Action {
    pub fn from_slug(s: &str) -> Option<Self> {
        match s {
            "sync" => Some(Action::Sync),
            "suspend" => Some(Action::Suspend),
            "resume" => Some(Action::Resume),
            "rollback" => Some(Action::Rollback),
            "undo" => Some(Action::Undo),
            _ => None,
        }
    }

    pub fn slug(self) -> &'static str {
        match self {
            Action::Sync => "sync",
            Action::Suspend => "suspend",
            Action::Resume => "resume",
            Action::Rollback => "rollback",
            Action::Undo => "undo",
        }
    }

    /// What the page says once the API server accepted it.
    pub fn done(self) -> &'static str {
        match self {
            Action::Sync => "Sync requested: the agent syncs the Release now.",
            Action::Suspend => {
                "Suspended: the agent applies and prunes nothing until it is resumed."
            }
            Action::Resume => "Resumed, and a sync requested.",
            Action::Rollback => {
                "Rolled back: the Release now follows a GitSource pinned to that commit (Undo rollback follows the source again)."
            }
            Action::Undo => "Rollback undone: the Release follows its source again.",
        }
    }
}

/// The API server's refusal (RBAC, not found, conflict), with its status code.
#[derive(Debug, thiserror::Error)]
#[error("{action} of Release {namespace}/{name} refused by the API server: {message}")]
pub struct ActionError {
    pub action: &'static str,
    pub namespace: String,
    pub name: String,
    pub code: Option<u16>,
    pub message: String,
}

/// The annotation on a rolled-back Release: its original `sourceRef` as `KIND/NAMESPACE/NAME`
/// (the same as `ferry rollback`'s).
pub const ANNOTATION_ROLLBACK_FROM: &str = "ferry.dev/rollback-from";
/// The annotation on the pinned GitSource: the Release it serves, `NAMESPACE/NAME`.
pub const ANNOTATION_ROLLBACK_OF: &str = "ferry.dev/rollback-of";

/// The merge patch an action sends (the same ones as `ferry sync/suspend/resume`).
pub fn patch_for(action: Action, now: &str) -> Value {
    let annotate = json!({"annotations": {RECONCILE_REQUESTED_AT: now}});
    match action {
        Action::Sync => json!({"metadata": annotate}),
        Action::Suspend => json!({"spec": {"suspend": true}}),
        Action::Resume => json!({"spec": {"suspend": false}, "metadata": annotate}),
        // Built by `rollback` / `undo` from the Release's current state.
        Action::Rollback | Action::Undo => json!({}),
    }
}

/// Run an action as the client's identity. `revision` is the rollback target.
pub async fn run(
    client: &Client,
    namespace: &str,
    name: &str,
    action: Action,
    revision: &str,
) -> Result<(), ActionError> {
    let failed = |code: Option<u16>, message: String| ActionError {
        action: action.slug(),
        namespace: namespace.to_string(),
        name: name.to_string(),
        code,
        message,
    };
    let from_kube = |err: kube::Error| failed(status_code(&err), describe_kube_error(&err));
    let api: Api<Release> = Api::namespaced(client.clone(), namespace);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    match action {
        Action::Sync | Action::Suspend | Action::Resume => api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&patch_for(action, &now)),
            )
            .await
            .map(|_| ())
            .map_err(from_kube),
        Action::Rollback | Action::Undo => {
            let release = api.get(name).await.map_err(from_kube)?;
            let plan =
                plan_rollback(&release, action, revision).map_err(|m| failed(Some(409), m))?;
            let sources: Api<GitSource> = Api::namespaced(client.clone(), &plan.original.namespace);
            if action == Action::Rollback {
                let original = sources.get(&plan.original.name).await.map_err(from_kube)?;
                if let Some(existing) = sources.get_opt(&plan.pinned).await.map_err(from_kube)?
                    && !is_pin_of(&existing, namespace, name)
                {
                    return Err(failed(
                        Some(409),
                        format!(
                            "GitSource {}/{} exists and was not made by a rollback of this Release: rename or delete it first",
                            plan.original.namespace, plan.pinned
                        ),
                    ));
                }
                let pinned = pinned_source(&original, &plan, namespace, name);
                let apply = PatchParams::apply("ferry-rollback").force();
                sources
                    .patch(&plan.pinned, &apply, &Patch::Apply(&pinned))
                    .await
                    .map_err(from_kube)?;
            }
            api.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&release_patch(&plan, action, namespace, &now)),
            )
            .await
            .map_err(from_kube)?;
            if action == Action::Undo
                && let Some(pin) = sources.get_opt(&plan.pinned).await.map_err(from_kube)?
                && is_pin_of(&pin, namespace, name)
            {
                sources
                    .delete(&plan.pinned, &DeleteParams::default())
                    .await
                    .map_err(from_kube)?;
            }
            Ok(())
        }
    }
}

/// A `sourceRef` spelled out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// What a rollback or undo changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackPlan {
    /// The source the Release follows when not rolled back.
    pub original: SourceRef,
    /// The pinned GitSource's name (in the original's namespace).
    pub pinned: String,
    /// The commit to pin (rollback only).
    pub commit: String,
}

/// Decide a rollback (to `revision`, which must be in the Release's history) or an undo, with
/// `ferry rollback`'s rules: a Release applied from git is refused (its next sync would undo
/// it), only GitSources can be pinned.
pub fn plan_rollback(
    release: &Release,
    action: Action,
    revision: &str,
) -> Result<RollbackPlan, String> {
    let namespace = release.metadata.namespace.clone().unwrap_or_default();
    let name = release.metadata.name.clone().unwrap_or_default();
    let annotations = release.metadata.annotations.clone().unwrap_or_default();
    if let Some(owner) = annotations.get(ANNOTATION_OWNER) {
        return Err(format!(
            "Release {namespace}/{name} is applied from git by {owner}: its next sync would undo the rollback; change the revision in git instead"
        ));
    }
    let original = match annotations.get(ANNOTATION_ROLLBACK_FROM) {
        Some(text) => {
            let mut parts = text.splitn(3, '/');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(k), Some(ns), Some(n))
                    if !k.is_empty() && is_kube_name(ns) && is_kube_name(n) =>
                {
                    SourceRef {
                        kind: k.to_string(),
                        namespace: ns.to_string(),
                        name: n.to_string(),
                    }
                }
                _ => {
                    return Err(format!(
                        "annotation {ANNOTATION_ROLLBACK_FROM}={text:?} is not KIND/NAMESPACE/NAME; fix or remove it"
                    ));
                }
            }
        }
        None if action == Action::Undo => {
            return Err(format!(
                "Release {namespace}/{name} is not rolled back: nothing to undo"
            ));
        }
        None => SourceRef {
            kind: release.spec.source_ref.kind.clone(),
            namespace: release
                .spec
                .source_ref
                .namespace
                .clone()
                .unwrap_or_else(|| namespace.clone()),
            name: release.spec.source_ref.name.clone(),
        },
    };
    if original.kind != "GitSource" {
        return Err(format!(
            "the Release reads from a {}: rollback pins GitSource commits only",
            original.kind
        ));
    }
    let pinned = if original.namespace == namespace {
        format!("{name}-rollback")
    } else {
        format!("{namespace}-{name}-rollback")
    };
    let mut commit = String::new();
    if action == Action::Rollback {
        let history = release
            .status
            .as_ref()
            .map(|s| s.history.clone())
            .unwrap_or_default();
        if !history.iter().any(|h| h.revision == revision) {
            return Err(format!(
                "revision {revision:?} is not in the Release's history"
            ));
        }
        commit = revision
            .rsplit_once("sha1:")
            .map_or(revision, |(_, sha)| sha)
            .to_ascii_lowercase();
        if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("revision {revision:?} does not name a git commit"));
        }
    }
    Ok(RollbackPlan {
        original,
        pinned,
        commit,
    })
}

fn is_pin_of(source: &GitSource, namespace: &str, name: &str) -> bool {
    source
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_ROLLBACK_OF))
        == Some(&format!("{namespace}/{name}"))
}

/// The pinned copy of the original GitSource (URL, credentials, timeout), at the commit.
fn pinned_source(original: &GitSource, plan: &RollbackPlan, namespace: &str, name: &str) -> Value {
    let mut spec = original.spec.clone();
    spec.git_ref = Some(ferry_api::GitRef {
        commit: Some(plan.commit.clone()),
        ..Default::default()
    });
    spec.suspend = false;
    json!({
        "apiVersion": format!("{}/{}", ferry_api::GROUP, ferry_api::VERSION),
        "kind": "GitSource",
        "metadata": {
            "name": plan.pinned,
            "namespace": plan.original.namespace,
            "labels": {"app.kubernetes.io/managed-by": "ferry-rollback"},
            "annotations": {ANNOTATION_ROLLBACK_OF: format!("{namespace}/{name}")},
        },
        "spec": spec,
    })
}

fn release_patch(plan: &RollbackPlan, action: Action, namespace: &str, now: &str) -> Value {
    let o = &plan.original;
    let other_ns = (o.namespace != namespace).then_some(&o.namespace);
    if action == Action::Undo {
        json!({
            "metadata": {"annotations": {ANNOTATION_ROLLBACK_FROM: null, RECONCILE_REQUESTED_AT: now}},
            "spec": {"sourceRef": {"kind": o.kind, "name": o.name, "namespace": other_ns}},
        })
    } else {
        json!({
            "metadata": {"annotations": {
                ANNOTATION_ROLLBACK_FROM: format!("{}/{}/{}", o.kind, o.namespace, o.name),
                RECONCILE_REQUESTED_AT: now,
            }},
            "spec": {"sourceRef": {"kind": "GitSource", "name": plan.pinned, "namespace": other_ns}},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_are_the_cli_ones() {
        assert_eq!(
            patch_for(Action::Sync, "T"),
            json!({"metadata": {"annotations": {"ferry.dev/reconcile-requested-at": "T"}}})
        );
        assert_eq!(
            patch_for(Action::Suspend, "T"),
            json!({"spec": {"suspend": true}})
        );
        assert_eq!(
            patch_for(Action::Resume, "T")["spec"]["suspend"],
            json!(false)
        );
        assert!(Action::from_slug("delete").is_none());
    }

    fn release(annotations: Value) -> Release {
        serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "Release",
            "metadata": {"name": "web", "namespace": "team", "annotations": annotations},
            "spec": {"sourceRef": {"kind": "GitSource", "name": "repo"}},
            "status": {"history": [{"revision": format!("main@sha1:{}", "a".repeat(40)), "time": "2026-12-01T10:00:00Z", "result": "Succeeded"}]},
        }))
        .expect("release")
    }

    #[test]
    fn rollback_plans_like_the_cli() {
        let good = format!("main@sha1:{}", "a".repeat(40));
        let plan = plan_rollback(&release(json!({})), Action::Rollback, &good).expect("plan");
        assert_eq!(plan.pinned, "web-rollback");
        assert_eq!(plan.commit, "a".repeat(40));
        assert_eq!(
            plan.original,
            SourceRef {
                kind: "GitSource".into(),
                namespace: "team".into(),
                name: "repo".into()
            }
        );
        let patch = release_patch(&plan, Action::Rollback, "team", "T");
        assert_eq!(
            patch["metadata"]["annotations"][ANNOTATION_ROLLBACK_FROM],
            json!("GitSource/team/repo")
        );
        assert_eq!(patch["spec"]["sourceRef"]["name"], json!("web-rollback"));
        // Only revisions from the history; not a Release applied from git; undo only when rolled back.
        assert!(
            plan_rollback(
                &release(json!({})),
                Action::Rollback,
                &format!("main@sha1:{}", "b".repeat(40))
            )
            .is_err()
        );
        assert!(
            plan_rollback(
                &release(json!({ANNOTATION_OWNER: "x/release/y/z"})),
                Action::Rollback,
                &good
            )
            .is_err()
        );
        assert!(plan_rollback(&release(json!({})), Action::Undo, "").is_err());
        let rolled = release(json!({ANNOTATION_ROLLBACK_FROM: "GitSource/team/repo"}));
        let undo = plan_rollback(&rolled, Action::Undo, "").expect("undo");
        assert_eq!(
            release_patch(&undo, Action::Undo, "team", "T")["spec"]["sourceRef"]["name"],
            json!("repo")
        );
        assert!(
            plan_rollback(
                &release(json!({ANNOTATION_ROLLBACK_FROM: "GitSource/../x"})),
                Action::Undo,
                ""
            )
            .is_err()
        );
    }
}
