//! The ImageUpdate controller: write the latest images of the namespace's policies into the
//! GitSource's repository (setter markers, mapped kustomization `images:` entries), commit and
//! push with non-fast-forward retries. A human's change after our last write stands until the
//! policy's latest image moves on (unless `overrideManualChanges`). An Event is published when
//! Ready changes (a push, a refusal).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_api::GitSource;
use ferry_api::common::{
    RECONCILE_REQUESTED_AT, is_ready, remove_condition, set_condition, set_failure, set_ready,
};
use ferry_api::images::{ImagePolicy, ImageUpdate, ImageUpdateStatus};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use tokio_util::sync::CancellationToken;

use super::image_automation::{
    ImageContext, ReconcileError, lock, now_time, parse_interval, publish_ready_change,
};
use crate::context::key_of;
use ferry_images::git::{self, EditOutcome, GitAuth, GitError, WriteBackResult, WriteBackSpec};
use ferry_images::kustomize;
use ferry_images::markers::{self, PolicyRef};
use ferry_images::reference::ImageRef;
use ferry_images::setimage::{self, FileEdit, FileIssue, TreeReport, ValueChange};

const KIND: &str = "ImageUpdate";
/// Longest wait before retrying after an API error (the shared backoff starts at 2 s).
const ERROR_RETRY_CAP: Duration = Duration::from_secs(10);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
pub const MARKERS_VALID: &str = "MarkersValid";
const DEFAULT_TEMPLATE: &str = "ferry: update images ({summary})\n\n{images}\n\nFiles:\n{changes}\n\nAutomation: {automation}\n";

/// Run until `stop` is cancelled; running reconciles (a write-back in progress) finish first.
pub(super) async fn controller(
    ctx: Arc<ImageContext>,
    namespace: Option<String>,
    stop: CancellationToken,
) {
    let (updates, policies): (Api<ImageUpdate>, Api<ImagePolicy>) = match &namespace {
        Some(ns) => (
            Api::namespaced(ctx.agent.client.clone(), ns),
            Api::namespaced(ctx.agent.client.clone(), ns),
        ),
        None => (
            Api::all(ctx.agent.client.clone()),
            Api::all(ctx.agent.client.clone()),
        ),
    };
    let controller = Controller::new(updates, watcher::Config::default());
    let store = controller.store();
    let controller = controller.watches(
        policies,
        watcher::Config::default(),
        move |policy: ImagePolicy| {
            let ns = policy.namespace();
            store
                .state()
                .into_iter()
                .filter(|u| u.namespace() == ns)
                .map(|u| ObjectRef::from_obj(&*u))
                .collect::<Vec<_>>()
        },
    );
    super::drive(KIND, controller, 0, reconcile, error_policy, ctx, stop).await;
}

fn error_policy(update: Arc<ImageUpdate>, err: &ReconcileError, ctx: Arc<ImageContext>) -> Action {
    let key = key_of(&*update);
    tracing::warn!(automation = %format!("{}/{}", key.0, key.1), "reconcile failed: {err}");
    ctx.agent.metrics.observe_error(KIND);
    Action::requeue(ctx.agent.backoff.on_error(KIND, &key, ERROR_RETRY_CAP))
}

/// The retry after a failure that is probably temporary (a GitSource or Secret being created,
/// a push refused): the shared backoff, at most `cap`.
fn retry_soon(ctx: &ImageContext, update: &ImageUpdate, cap: Duration) -> Duration {
    ctx.agent.backoff.on_error(KIND, &key_of(update), cap)
}

/// The policy key used in markers' resolution and `status.writtenImages`.
fn policy_key(ns: &str, name: &str) -> String {
    format!("{ns}:{name}")
}

/// Inputs of one automation run (cloned into the blocking git task).
#[derive(Clone)]
struct RunInputs {
    namespace: String,
    automation: String,
    /// `ns:name` → latest image.
    latest: BTreeMap<String, ImageRef>,
    /// `ns:name` of policies that exist but have no latest image yet.
    not_ready: BTreeSet<String>,
    written: BTreeMap<String, String>,
    override_manual: bool,
    kustomize_images: Vec<(String, String)>,
    path: PathBuf,
    template: String,
}

#[derive(Default)]
struct RunReport {
    tree: TreeReport,
    /// Policies whose values were examined (for `writtenImages`).
    seen: BTreeSet<String>,
    kept_manual: Vec<String>,
}

impl RunInputs {
    fn resolve(&self, policy: &PolicyRef) -> Result<(String, ImageRef), String> {
        let ns = policy
            .namespace
            .clone()
            .unwrap_or_else(|| self.namespace.clone());
        if ns != self.namespace {
            return Err(format!(
                "marker names policy {policy} in another namespace; an ImageUpdate only uses policies of its own namespace ({})",
                self.namespace
            ));
        }
        let key = policy_key(&ns, &policy.name);
        match self.latest.get(&key) {
            Some(image) => Ok((key, image.clone())),
            None if self.not_ready.contains(&key) => Err(format!(
                "ImagePolicy {ns}/{} has no latest image yet (see its status)",
                policy.name
            )),
            None => Err(format!("ImagePolicy {ns}/{} not found", policy.name)),
        }
    }

    /// Whether a value for `key` may be written: not when we already wrote this very image and
    /// someone changed it since (a manual rollback stands until the policy moves on).
    fn may_write(&self, key: &str, image: &ImageRef) -> bool {
        self.override_manual || self.written.get(key) != Some(&image.to_string())
    }

    fn edit_file(&self, file: &Path, text: &str, report: &mut RunReport) -> FileEdit {
        let mut out = FileEdit::default();
        let mut seen = BTreeSet::new();
        let mut kept = Vec::new();
        let (planned, issues) = markers::plan_changes(text, |p| {
            let r = self.resolve(p);
            if let Ok((key, _)) = &r {
                seen.insert(key.clone());
            }
            Some(r.map(|(_, image)| image))
        });
        // Count every resolved marker as matched.
        out.matched += seen.len();
        out.issues.extend(issues.into_iter().map(|i| FileIssue {
            file: file.to_path_buf(),
            line: Some(i.line),
            message: i.message,
        }));
        let mut edits = Vec::new();
        for (marker, change) in planned {
            let Ok((key, image)) = self.resolve(&marker.policy) else {
                continue;
            };
            if !self.may_write(&key, &image) {
                kept.push(format!(
                    "{}:{} keeps {} (changed after ferry wrote {image})",
                    file.display(),
                    change.line,
                    change.from
                ));
                continue;
            }
            edits.push(change.edit());
            out.changes.push(ValueChange {
                file: file.to_path_buf(),
                line: change.line,
                what: format!(
                    "marker {}",
                    setimage::marker_label(&marker.policy, marker.field)
                ),
                from: Some(change.from),
                to: Some(change.to),
                policy: Some(PolicyRef {
                    namespace: Some(self.namespace.clone()),
                    name: marker.policy.name.clone(),
                }),
            });
        }
        let mut text_now = if edits.is_empty() {
            None
        } else {
            Some(ferry_images::yaml_scan::apply_edits(text, &mut edits))
        };
        if setimage::is_kustomization(file) {
            for (entry, policy) in &self.kustomize_images {
                let pref = PolicyRef {
                    namespace: Some(self.namespace.clone()),
                    name: policy.clone(),
                };
                let (key, image) = match self.resolve(&pref) {
                    Ok(r) => r,
                    Err(message) => {
                        out.issues.push(FileIssue {
                            file: file.to_path_buf(),
                            line: None,
                            message: format!("spec.update.kustomizeImages[{entry}]: {message}"),
                        });
                        continue;
                    }
                };
                let base = text_now.clone().unwrap_or_else(|| text.to_string());
                match kustomize::set_image(&base, entry, &setimage::kustomize_update(entry, &image))
                {
                    Ok(Some((new_text, changes))) => {
                        seen.insert(key.clone());
                        out.matched += 1;
                        if changes.is_empty() {
                            continue;
                        }
                        if !self.may_write(&key, &image) {
                            kept.push(format!(
                                "{} images[{entry}] (changed after ferry wrote {image})",
                                file.display()
                            ));
                            continue;
                        }
                        for c in changes {
                            out.changes.push(ValueChange {
                                file: file.to_path_buf(),
                                line: c.line,
                                what: format!("kustomization images[{entry}].{}", c.field),
                                from: c.from,
                                to: c.to,
                                policy: Some(pref.clone()),
                            });
                        }
                        text_now = Some(new_text);
                    }
                    Ok(None) => {}
                    Err(message) => out.issues.push(FileIssue {
                        file: file.to_path_buf(),
                        line: None,
                        message,
                    }),
                }
            }
        }
        out.new_text = text_now;
        report.seen.extend(seen);
        report.kept_manual.extend(kept);
        out
    }

    fn message(&self, changes: &[ValueChange]) -> String {
        render_message(&self.template, &self.automation, changes)
    }
}

/// Render a commit message template (`{automation}`, `{summary}`, `{images}`, `{changes}`).
pub fn render_message(template: &str, automation: &str, changes: &[ValueChange]) -> String {
    let mut per_policy: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for c in changes {
        let key = c
            .policy
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_else(|| c.what.clone());
        let entry = per_policy.entry(key).or_default();
        entry
            .0
            .insert(c.from.clone().unwrap_or_else(|| "(none)".into()));
        entry
            .1
            .insert(c.to.clone().unwrap_or_else(|| "(removed)".into()));
    }
    let images = per_policy
        .iter()
        .map(|(p, (from, to))| {
            format!(
                "- {p}: {} -> {}",
                from.iter().cloned().collect::<Vec<_>>().join(", "),
                to.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let summary = {
        let all: BTreeSet<&String> = per_policy.values().flat_map(|(_, to)| to.iter()).collect();
        let mut s = all
            .into_iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if per_policy.values().map(|(_, to)| to.len()).sum::<usize>() > 3 {
            s.push_str(", …");
        }
        s
    };
    let lines = changes
        .iter()
        .map(|c| {
            format!(
                "- {}:{} {}: {} -> {}",
                c.file.display(),
                c.line,
                c.what,
                c.from.as_deref().unwrap_or("(none)"),
                c.to.as_deref().unwrap_or("(removed)")
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    template
        .replace("{automation}", automation)
        .replace("{summary}", &summary)
        .replace("{images}", &images)
        .replace("{changes}", &lines)
}

async fn git_auth(ctx: &ImageContext, ns: &str, source: &GitSource) -> Result<GitAuth, String> {
    let Some(r) = &source.spec.secret_ref else {
        return Ok(GitAuth::default());
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.secret_client(ns)?, ns);
    let secret = secrets
        .get_opt(&r.name)
        .await
        .map_err(|e| format!("cannot read Secret {ns}/{}: {e}", r.name))?
        .ok_or_else(|| {
            format!(
                "Secret {ns}/{} (the GitSource's secretRef) not found",
                r.name
            )
        })?;
    let data = secret.data.unwrap_or_default();
    let get = |k: &str| {
        data.get(k)
            .map(|v| String::from_utf8_lossy(&v.0).trim().to_string())
    };
    Ok(GitAuth {
        username: get("username"),
        password: get("password"),
        bearer_token: get("bearerToken"),
        // The same keys as the GitSource's fetch: the write-back pushes over ssh too.
        ssh_identity: get("identity"),
        known_hosts: get("known_hosts"),
    })
}

/// Write the status when it changed (and publish an Event if Ready changed); returns whether
/// it is Ready.
async fn patch_status(
    ctx: &ImageContext,
    update: &ImageUpdate,
    status: &ImageUpdateStatus,
) -> Result<bool, ReconcileError> {
    let ready = is_ready(&status.conditions);
    if update.status.as_ref() == Some(status) {
        return Ok(ready);
    }
    let api: Api<ImageUpdate> = Api::namespaced(
        ctx.agent.client.clone(),
        &update.namespace().unwrap_or_default(),
    );
    api.patch_status(
        &update.name_any(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await?;
    let before = update.status.clone().unwrap_or_default();
    // A push is news; a run with nothing to write ("no changes ... at <head>") is not.
    let news = (before.last_push_commit != status.last_push_commit).then_some("Pushed");
    // The revision as a Release's reads: `<branch>@sha1:<commit>`.
    let revision =
        status
            .last_push_commit
            .as_deref()
            .map(|commit| match status.last_push_branch.as_deref() {
                Some(branch) => format!("{branch}@sha1:{commit}"),
                None => commit.to_string(),
            });
    publish_ready_change(
        ctx,
        update,
        &before.conditions,
        &status.conditions,
        news,
        revision.as_deref(),
    )
    .await;
    Ok(ready)
}

fn short_hash(text: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    hex::encode(&d.as_ref()[..4])
}

async fn reconcile(
    update: Arc<ImageUpdate>,
    ctx: Arc<ImageContext>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let _running = ctx.agent.metrics.running(KIND);
    let result = reconcile_inner(&update, &ctx).await;
    if let Ok((_, ready)) = &result {
        ctx.observe(KIND, &key_of(&*update), *ready, started);
    }
    result.map(|(action, _)| action)
}

/// One automation run; returns what to do next and whether the ImageUpdate ended Ready.
async fn reconcile_inner(
    update: &ImageUpdate,
    ctx: &ImageContext,
) -> Result<(Action, bool), ReconcileError> {
    let ns = update.namespace().unwrap_or_default();
    let name = update.name_any();
    let generation = update.meta().generation;
    let mut status = update.status.clone().unwrap_or_default();
    if update.spec.suspend || update.meta().deletion_timestamp.is_some() {
        return Ok((Action::await_change(), is_ready(&status.conditions)));
    }
    let fail = |status: &mut ImageUpdateStatus, reason: &str, message: &str, stalled: bool| {
        set_failure(&mut status.conditions, reason, message, stalled, generation);
        status.observed_generation = generation;
    };
    let interval = match parse_interval(update.spec.interval.as_deref(), DEFAULT_INTERVAL) {
        // The agent's floor over what the tenant asked for.
        Ok(i) => ctx.agent.clamp_interval(i),
        Err(e) => {
            fail(
                &mut status,
                "InvalidInterval",
                &format!("spec.interval: {e}"),
                true,
            );
            let ready = patch_status(ctx, update, &status).await?;
            return Ok((Action::await_change(), ready));
        }
    };
    let source_ref = &update.spec.source_ref;
    if source_ref.kind != "GitSource" {
        fail(
            &mut status,
            "InvalidSourceRef",
            &format!(
                "spec.sourceRef.kind {:?} is not supported; use GitSource",
                source_ref.kind
            ),
            true,
        );
        let ready = patch_status(ctx, update, &status).await?;
        return Ok((Action::await_change(), ready));
    }
    // THE cross-namespace rule, with the agent's --allow-cross-namespace-refs as for Releases.
    let source_ns = match ferry_api::referenced_namespace(
        ctx.agent.options.allow_cross_namespace_refs,
        "ImageUpdate",
        &ns,
        source_ref.namespace.as_deref(),
        &format!("GitSource {}", source_ref.name),
    ) {
        Ok(source_ns) => source_ns,
        Err(refused) => {
            fail(
                &mut status,
                ferry_api::CROSS_NAMESPACE_REF_DENIED,
                &refused.to_string(),
                true,
            );
            let ready = patch_status(ctx, update, &status).await?;
            return Ok((Action::await_change(), ready));
        }
    };
    let sources: Api<GitSource> = Api::namespaced(ctx.agent.client.clone(), &source_ns);
    let Some(source) = sources.get_opt(&source_ref.name).await? else {
        fail(
            &mut status,
            "SourceNotFound",
            &format!("GitSource {source_ns}/{} not found", source_ref.name),
            false,
        );
        let ready = patch_status(ctx, update, &status).await?;
        return Ok((
            Action::requeue(retry_soon(ctx, update, Duration::from_secs(30))),
            ready,
        ));
    };
    // The GitSource's secretRef is a Secret of the GitSource's namespace, read as that
    // namespace's tenant (as the GitSource's own fetch reads it).
    let auth = match git_auth(ctx, &source_ns, &source).await {
        Ok(a) => a,
        Err(message) => {
            fail(&mut status, "SecretNotFound", &message, false);
            let ready = patch_status(ctx, update, &status).await?;
            return Ok((
                Action::requeue(retry_soon(ctx, update, Duration::from_secs(30))),
                ready,
            ));
        }
    };
    // Policies of this namespace.
    let policies: Api<ImagePolicy> = Api::namespaced(ctx.agent.client.clone(), &ns);
    let mut latest = BTreeMap::new();
    let mut not_ready = BTreeSet::new();
    for p in policies.list(&ListParams::default()).await? {
        let key = policy_key(&ns, &p.name_any());
        match p
            .status
            .as_ref()
            .and_then(|s| s.latest_image.as_deref())
            .map(ImageRef::parse)
        {
            Some(Ok(image)) => {
                latest.insert(key, image);
            }
            _ => {
                not_ready.insert(key);
            }
        }
    }
    let requested = update.annotations().get(RECONCILE_REQUESTED_AT).cloned();
    let fingerprint = format!(
        "{generation:?}|{requested:?}|{}|{:?}",
        source.spec.url,
        latest
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
    );
    let key = (ns.clone(), name.clone());
    if let Some((last, at)) = lock(&ctx.update_runs).get(&key).cloned()
        && last == fingerprint
        && at.elapsed() < interval
    {
        let ready = is_ready(&status.conditions);
        return Ok((Action::requeue(interval - at.elapsed()), ready));
    }
    let checkout_branch = update
        .spec
        .git
        .checkout_branch
        .clone()
        .or_else(|| source.spec.git_ref.as_ref().and_then(|r| r.branch.clone()))
        .unwrap_or_else(|| "main".to_string());
    let images_hash = short_hash(&fingerprint_images(&latest));
    let push_branch = update
        .spec
        .git
        .push_branch
        .clone()
        .unwrap_or_else(|| checkout_branch.clone())
        .replace("{hash}", &images_hash);
    let path = update.spec.update.path.clone().unwrap_or_default();
    let rel = Path::new(path.trim_start_matches("./").trim_start_matches('/'));
    if rel
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        fail(
            &mut status,
            "InvalidPath",
            &format!("spec.update.path {path:?} must stay inside the repository"),
            true,
        );
        let ready = patch_status(ctx, update, &status).await?;
        return Ok((Action::await_change(), ready));
    }
    let inputs = RunInputs {
        namespace: ns.clone(),
        automation: format!("{ns}/{name}"),
        latest: latest.clone(),
        not_ready,
        written: status.written_images.clone(),
        override_manual: update.spec.override_manual_changes,
        kustomize_images: update
            .spec
            .update
            .kustomize_images
            .iter()
            .map(|k| (k.name.clone(), k.policy.name.clone()))
            .collect(),
        path: rel.to_path_buf(),
        template: update
            .spec
            .git
            .commit
            .message_template
            .clone()
            .unwrap_or_else(|| DEFAULT_TEMPLATE.to_string()),
    };
    let spec = WriteBackSpec {
        url: source.spec.url.clone(),
        auth,
        checkout_branch: checkout_branch.clone(),
        push_branch: push_branch.clone(),
        author_name: update.spec.git.commit.author.name.clone(),
        author_email: update.spec.git.commit.author.email.clone(),
        work_dir: ctx.work_dir(&ns, &name),
        max_attempts: 5,
        allow_local: ctx.agent.options.allow_local_git_sources,
        max_fetch_bytes: ctx.agent.options.git_max_fetch_bytes,
        max_checkout_bytes: ctx.agent.options.git_max_checkout_bytes,
    };
    // One write-back per repository branch at a time in this process.
    let git_lock = lock(&ctx.git_locks)
        .entry(format!("{}|{push_branch}", source.spec.url))
        .or_default()
        .clone();
    let _guard = git_lock.lock().await;
    let report = Arc::new(Mutex::new(RunReport::default()));
    let started = Instant::now();
    let result = {
        let report = report.clone();
        let inputs = inputs.clone();
        tokio::task::spawn_blocking(move || {
            git::write_back(&spec, |root| {
                let mut run = RunReport::default();
                let target = root.join(&inputs.path);
                let tree = setimage::edit_tree(root, &target, false, |file, text| {
                    inputs.edit_file(file, text, &mut run)
                })
                .map_err(|e| match e {
                    setimage::TreeError::Missing { .. } => format!(
                        "spec.update.path {:?} does not exist in the repository",
                        inputs.path.display()
                    ),
                    other => other.to_string(),
                })?;
                let message = (!tree.changes.is_empty()).then(|| inputs.message(&tree.changes));
                run.tree = tree;
                *lock(&report) = run;
                Ok(EditOutcome { message })
            })
        })
        .await
        .map_err(ReconcileError::WriteBackTask)?
    };
    let run = std::mem::take(&mut *lock(&report));
    lock(&ctx.update_runs).insert(key.clone(), (fingerprint, Instant::now()));
    status.last_automation_run_time = Some(now_time());
    status.observed_generation = generation;
    status.last_handled_reconcile_at = requested;
    set_marker_condition(&mut status, &run.tree.issues, generation);
    let kept = if run.kept_manual.is_empty() {
        String::new()
    } else {
        format!(
            "; kept {} manual change(s): {}",
            run.kept_manual.len(),
            run.kept_manual.join("; ")
        )
    };
    match result {
        Ok(outcome) => {
            for key in &run.seen {
                if let Some(image) = latest.get(key) {
                    status.written_images.insert(key.clone(), image.to_string());
                }
            }
            let message = match &outcome {
                WriteBackResult::Pushed {
                    commit,
                    branch,
                    attempts,
                } => {
                    status.last_push_commit = Some(commit.clone());
                    status.last_push_time = Some(now_time());
                    status.last_push_branch = Some(branch.clone());
                    tracing::info!(automation = %format!("{ns}/{name}"), %commit, %branch, attempts, changes = run.tree.changes.len(), ms = started.elapsed().as_millis() as u64, "pushed image update");
                    format!(
                        "pushed {} to {branch}: {} value(s) in {} file(s){}",
                        &commit[..commit.len().min(12)],
                        run.tree.changes.len(),
                        run.tree.files_changed.len(),
                        if *attempts > 1 {
                            format!(" after {attempts} attempts (upstream moved)")
                        } else {
                            String::new()
                        }
                    )
                }
                WriteBackResult::NoChange { head } => format!(
                    "no changes: {} reference(s) up to date at {}",
                    run.tree.matched,
                    &head[..head.len().min(12)]
                ),
            };
            set_ready(
                &mut status.conditions,
                "Succeeded",
                &format!("{message}{kept}"),
                generation,
            );
            let ready = patch_status(ctx, update, &status).await?;
            ctx.agent.backoff.on_success(KIND, &key);
            Ok((Action::requeue(ctx.agent.backoff.interval(interval)), ready))
        }
        Err(err) => {
            let reason = match &err {
                GitError::Fetch { .. } | GitError::NoBranch { .. } | GitError::TooLarge { .. } => {
                    "GitFetchFailed"
                }
                GitError::LocalUrl { .. } => "InvalidSourceURL",
                GitError::CheckoutTooLarge { .. } => "CheckoutTooLarge",
                GitError::PushRefused { .. } => "PushRefused",
                GitError::Contention { .. } => "PushContention",
                GitError::Edit(_) => "UpdateFailed",
                GitError::Git(_) => "GitError",
            };
            tracing::warn!(automation = %format!("{ns}/{name}"), "{err}");
            fail(&mut status, reason, &err.to_string(), false);
            let ready = patch_status(ctx, update, &status).await?;
            // Let the next run retry even if nothing else changes.
            lock(&ctx.update_runs).remove(&key);
            let retry = retry_soon(ctx, update, Duration::from_secs(30).min(interval));
            Ok((Action::requeue(retry), ready))
        }
    }
}

fn fingerprint_images(latest: &BTreeMap<String, ImageRef>) -> String {
    latest.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

fn set_marker_condition(
    status: &mut ImageUpdateStatus,
    issues: &[FileIssue],
    generation: Option<i64>,
) {
    if issues.is_empty() {
        remove_condition(&mut status.conditions, MARKERS_VALID);
        return;
    }
    let mut message = issues
        .iter()
        .take(10)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if issues.len() > 10 {
        message.push_str(&format!("; and {} more", issues.len() - 10));
    }
    set_condition(
        &mut status.conditions,
        MARKERS_VALID,
        false,
        "InvalidMarkers",
        &format!("{message} (other markers were processed)"),
        generation,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(written: &[(&str, &str)], override_manual: bool) -> RunInputs {
        RunInputs {
            namespace: "apps".into(),
            automation: "apps/auto".into(),
            latest: [(
                "apps:app".to_string(),
                ImageRef::parse("r/app:2.0").unwrap(),
            )]
            .into_iter()
            .collect(),
            not_ready: ["apps:pending".to_string()].into_iter().collect(),
            written: written
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            override_manual,
            kustomize_images: vec![("r/app".into(), "app".into())],
            path: PathBuf::new(),
            template: DEFAULT_TEMPLATE.into(),
        }
    }

    const FILE: &str = "a: r/app:1.0 # {\"$imagepolicy\": \"apps:app\"}\nb: x # {\"$imagepolicy\": \"apps:pending\"}\nc: y # {\"$imagepolicy\": \"other:app\"}\nd: z # {\"$imagepolicy\": \"apps:gone\"}\n";

    #[test]
    fn writes_reports_and_names_problems() {
        let mut report = RunReport::default();
        let out = inputs(&[], false).edit_file(Path::new("x.yaml"), FILE, &mut report);
        assert_eq!(
            out.new_text.as_deref(),
            Some(FILE.replace("r/app:1.0", "r/app:2.0").as_str())
        );
        let messages: Vec<String> = out.issues.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages[0].starts_with("x.yaml:2:") && messages[0].contains("no latest image"));
        assert!(messages[1].starts_with("x.yaml:3:") && messages[1].contains("another namespace"));
        assert!(messages[2].starts_with("x.yaml:4:") && messages[2].contains("not found"));
        assert!(report.seen.contains("apps:app"));
        let msg = inputs(&[], false).message(&out.changes);
        assert!(msg.starts_with("ferry: update images (r/app:2.0)"), "{msg}");
        assert!(msg.contains("- apps:app: r/app:1.0 -> r/app:2.0"), "{msg}");
        assert!(
            msg.contains("- x.yaml:1 marker apps:app: r/app:1.0 -> r/app:2.0"),
            "{msg}"
        );
    }

    #[test]
    fn manual_rollback_stands_until_the_policy_moves() {
        // We wrote 2.0 before; a human rolled back to 1.0: leave it.
        let mut report = RunReport::default();
        let out = inputs(&[("apps:app", "r/app:2.0")], false).edit_file(
            Path::new("x.yaml"),
            FILE,
            &mut report,
        );
        assert!(out.new_text.is_none());
        assert_eq!(report.kept_manual.len(), 1);
        // With overrideManualChanges the value is restored.
        let out = inputs(&[("apps:app", "r/app:2.0")], true).edit_file(
            Path::new("x.yaml"),
            FILE,
            &mut RunReport::default(),
        );
        assert!(out.new_text.is_some());
        // A newer latest image than the one we wrote is written again.
        let out = inputs(&[("apps:app", "r/app:1.5")], false).edit_file(
            Path::new("x.yaml"),
            FILE,
            &mut RunReport::default(),
        );
        assert!(out.new_text.is_some());
    }

    #[test]
    fn kustomize_entries_by_mapping() {
        let text = "images:\n- name: r/app\n  newTag: \"1.0\"\n";
        let out = inputs(&[], false).edit_file(
            Path::new("kustomization.yaml"),
            text,
            &mut RunReport::default(),
        );
        assert_eq!(
            out.new_text.as_deref(),
            Some("images:\n- name: r/app\n  newTag: \"2.0\"\n")
        );
    }
}
