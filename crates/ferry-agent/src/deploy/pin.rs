//! The Release controller's side of a deploy request. An accepted request pins the Release to a
//! commit with annotations (`ferry_api::deploy::DEPLOY_REVISION` and friends); the Release
//! controller then runs its ordinary reconcile (render, decrypt, apply as the Release's service
//! account, prune, health, status, history, Events) on that commit instead of the GitSource's
//! current revision, via [`checkout`], [`image_overrides`] and [`progress`].
//!
//! Progress of the apply goes to the HTTP handler that waits for it over an in-process channel
//! ([`listen`]): the handler and the controller run in the same process when the request reached
//! the leader; otherwise the handler follows the Release's status alone (the result is the same,
//! only per-object progress is missing).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use ferry_api::Release;
use ferry_api::deploy::{DEPLOY_IMAGES, DEPLOY_REQUEST, DEPLOY_REVISION};
use ferry_engine::progress::{NoProgress, Progress, ProgressEvent};
use ferry_engine::render::set_image::{self, ImageOverride};
use ferry_engine::report::ApplyReport;
use ferry_engine::source::git::history::Reach;
use kube::ResourceExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::context::{Artifact, Context, Key};

/// What the controller tells a waiting handler.
#[derive(Debug)]
pub enum Note {
    /// A progress event, ready to stream (`{"event":"progress",...}`).
    Progress(Value),
    /// The run's report (the same one `ferry apply` prints).
    Report(Box<ApplyReport>),
}

type Listeners = Mutex<HashMap<String, mpsc::UnboundedSender<Note>>>;

/// Deploy request id -> its handler. Process-wide: the HTTP server lives for the process, the
/// controllers' Context only for a leadership term, and a request id is random (unique per
/// request), so agents embedded side by side in one test process never see each other's.
fn listeners() -> &'static Listeners {
    static LISTENERS: OnceLock<Listeners> = OnceLock::new();
    LISTENERS.get_or_init(Default::default)
}

/// Receive the controller's notes for request `id` until the returned guard is dropped.
pub fn listen(id: &str) -> (mpsc::UnboundedReceiver<Note>, ListenGuard) {
    let (tx, rx) = mpsc::unbounded_channel();
    listeners()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.to_string(), tx);
    (rx, ListenGuard(id.to_string()))
}

/// Stops listening when dropped.
pub struct ListenGuard(String);

impl Drop for ListenGuard {
    fn drop(&mut self) {
        listeners()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.0);
    }
}

fn send(release: &Release, note: Note) {
    let Some(id) = release.annotations().get(DEPLOY_REQUEST) else {
        return;
    };
    if let Some(tx) = listeners()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(id)
    {
        let _ = tx.send(note);
    }
}

/// The commit a deploy request pinned this Release to, checked out; `Ok(None)` when the Release
/// is not pinned (it follows its GitSource).
pub async fn checkout(
    release: &Release,
    ctx: &Context,
    source: &Key,
) -> Result<Option<Artifact>, String> {
    let Some(commit) = release.annotations().get(DEPLOY_REVISION) else {
        return Ok(None);
    };
    let request =
        super::source::fetch_request(&ctx.client, &ctx.tenants, &ctx.options, source).await?;
    let url = ferry_engine::source::git::redact_url(&request.url);
    let _slot = ctx
        .fetch_slots
        .acquire()
        .await
        .map_err(|_| "agent is shutting down".to_string())?;
    // The policy's rules were checked when the request was accepted; here the commit only has
    // to exist in the repository.
    let fetched = super::source::fetch_commit(
        &ctx.options.cache_dir,
        request,
        commit,
        Reach::AnyCommit,
        None,
    )
    .await
    .map_err(|e| format!("deploy request pinned commit {commit}: {e}"))?;
    Ok(Some(Artifact {
        path: fetched.checkout.path,
        revision: fetched.checkout.revision,
        url,
    }))
}

/// The deploy request's image overrides (`NAME=IMAGE`, as `ferry apply --set-image`).
pub fn image_overrides(release: &Release) -> Result<Vec<ImageOverride>, String> {
    let Some(raw) = release.annotations().get(DEPLOY_IMAGES) else {
        return Ok(Vec::new());
    };
    let list: Vec<String> = serde_json::from_str(raw)
        .map_err(|e| format!("annotation {DEPLOY_IMAGES} is not a JSON list of strings: {e}"))?;
    set_image::parse_all(&list).map_err(|e| format!("annotation {DEPLOY_IMAGES}: {e}"))
}

/// Where the apply of this run reports progress: the waiting handler, if any.
pub fn progress(release: &Release) -> Box<dyn Progress> {
    match release.annotations().get(DEPLOY_REQUEST) {
        Some(_) => Box::new(Forward(release.clone())),
        None => Box::new(NoProgress),
    }
}

/// Hand the run's report to the waiting handler, if any.
pub fn report(release: &Release, report: &ApplyReport) {
    send(release, Note::Report(Box::new(report.clone())));
}

struct Forward(Release);

impl Progress for Forward {
    fn event(&self, event: ProgressEvent<'_>) {
        let value = match event {
            ProgressEvent::Planned { total } => {
                json!({"event": "progress", "phase": "planned", "total": total})
            }
            ProgressEvent::Applied { key, action } => {
                json!({"event": "progress", "phase": "applied", "object": key.to_string(), "action": action.as_str()})
            }
            ProgressEvent::Waiting { pending, total } => {
                json!({"event": "progress", "phase": "waiting", "pending": pending, "total": total})
            }
            ProgressEvent::Pruned { key, action } => {
                json!({"event": "progress", "phase": "pruned", "object": key.to_string(), "action": action.as_str()})
            }
        };
        send(&self.0, Note::Progress(value));
    }
}
