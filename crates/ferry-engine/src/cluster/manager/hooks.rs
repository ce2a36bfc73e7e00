//! Helm/Argo hooks at apply time. The render stage classifies hook objects
//! (`render::helm::hooks`); here one phase's hooks (`PreDeploy` or `PostDeploy`) are run the
//! way Helm runs them: one at a time, ordered by weight and then the usual kind order, each
//! applied and awaited (Jobs complete) before the next, with `helm.sh/hook-delete-policy`:
//! `before-hook-creation` deletes the previous object first (so a Job runs again),
//! `hook-succeeded` / `hook-failed` delete it after it succeeded / failed.
//!
//! Deletes only touch objects that carry this app's label and owner annotation.

use std::collections::HashMap;
use std::time::Duration;

use kube::api::{DeleteParams, Preconditions, PropagationPolicy};

use super::ResourceManager;
use super::live::LiveMeta;
use super::wait::Target;
use crate::ObjectKey;
use crate::cluster::api_for;
use crate::cluster::kube_error::{describe_kube_error, status_code};
use crate::health::{self, HealthState};
use crate::plan::PlannedObject;
use crate::progress::Progress;
use crate::render::helm::hooks::{self as classify, HookDeletePolicy};
use crate::report::{Action, ObjectResult};

/// What one phase's hooks did.
#[derive(Debug, Default)]
pub struct PhaseOutcome {
    /// One report line per hook that was attempted.
    pub results: Vec<ObjectResult>,
    /// Hooks that are still in the cluster afterwards (not removed by a delete policy), with
    /// the fingerprint ferry saw after applying them: these stay in the inventory.
    pub live: Vec<(ObjectKey, Option<String>)>,
    /// Hooks that ran to success, with their intent hash.
    pub succeeded: Vec<(ObjectKey, String)>,
    /// The first hook that failed (apply error, failed or not healthy before the deadline), and
    /// why. Later hooks of the phase were not run.
    pub failure: Option<(ObjectKey, String)>,
}

impl ResourceManager {
    /// Run `hooks` (already ordered, `plan::order_hooks`) one by one. `live` is the live metadata
    /// read before the apply; `recorded` the fingerprints from the inventory.
    pub async fn run_hooks(
        &self,
        hooks: &[&PlannedObject],
        live: &HashMap<ObjectKey, LiveMeta>,
        recorded: &HashMap<ObjectKey, String>,
        progress: &dyn Progress,
    ) -> PhaseOutcome {
        let mut out = PhaseOutcome::default();
        for hook in hooks {
            let policies = classify::delete_policies(&hook.manifest);
            let mut current = live.get(&hook.key).cloned();
            if !self.dry_run()
                && policies.contains(&HookDeletePolicy::BeforeHookCreation)
                && let Some(existing) = &current
                && self.owner().owns(
                    existing.meta.labels.as_ref(),
                    existing.meta.annotations.as_ref(),
                )
            {
                if let Err(message) = self.delete_and_wait(hook, Some(existing)).await {
                    let message = format!("cannot delete the previous hook object: {message}");
                    out.results.push(failed_result(hook, &message));
                    out.failure = Some((hook.key.clone(), message));
                    return out;
                }
                current = None;
            }
            let single: HashMap<ObjectKey, LiveMeta> = current
                .into_iter()
                .map(|meta| (hook.key.clone(), meta))
                .collect();
            let applied = self
                .apply_batch(&[*hook], &single, recorded, progress)
                .await;
            let Some(applied) = applied.changes.into_iter().next() else {
                continue;
            };
            let Some(mut result) = applied.result else {
                continue;
            };
            result.source = result
                .source
                .or_else(|| Some(hook.manifest.origin.to_string()));
            if result.action == Action::Failed {
                let message = result.message.clone().unwrap_or_default();
                out.results.push(result);
                out.failure = Some((hook.key.clone(), message));
                return out;
            }
            if self.dry_run() {
                out.results.push(result);
                continue;
            }
            let target = Target {
                key: hook.key.clone(),
                kind: hook.resolved_kind(),
            };
            let (mut healths, _) = self
                .wait(std::slice::from_ref(&target), self.timeout(), progress)
                .await;
            let h = healths.pop().unwrap_or_else(health::Health::not_found);
            let succeeded = h.state == HealthState::Current;
            let message = if succeeded {
                None
            } else if h.state == HealthState::Failed {
                Some(format!("hook failed: {}", h.message))
            } else {
                Some(format!(
                    "hook did not complete within {}s: {}",
                    self.timeout().as_secs(),
                    h.message
                ))
            };
            result.health = Some(h);
            let policy = if succeeded {
                HookDeletePolicy::HookSucceeded
            } else {
                HookDeletePolicy::HookFailed
            };
            let mut deleted = false;
            if policies.contains(&policy) {
                match self.delete_and_wait(hook, None).await {
                    Ok(()) => deleted = true,
                    // The hook's own outcome matters more; a leftover object is re-created next time.
                    Err(err) => tracing::warn!(hook = %hook.key, "cannot delete hook: {err}"),
                }
            }
            if !deleted {
                out.live.push((hook.key.clone(), applied.fingerprint));
            }
            match message {
                None => {
                    if deleted {
                        result.message = Some("hook succeeded; deleted (hook-succeeded)".into());
                    }
                    out.results.push(result);
                    out.succeeded.push((hook.key.clone(), hook.hash.clone()));
                }
                Some(message) => {
                    result.action = Action::Failed;
                    result.message = Some(message.clone());
                    out.results.push(result);
                    out.failure = Some((hook.key.clone(), message));
                    return out;
                }
            }
        }
        out
    }
}

fn failed_result(hook: &PlannedObject, message: &str) -> ObjectResult {
    let mut r = ObjectResult::new(hook.key.clone(), hook.api_version(), Action::Failed)
        .with_message(message);
    r.source = Some(hook.manifest.origin.to_string());
    r
}

/// Delete a hook object (with a UID precondition when its live metadata is known) and wait
/// until it is gone, so that re-creating it starts from scratch.
impl ResourceManager {
    async fn delete_and_wait(
        &self,
        hook: &PlannedObject,
        live: Option<&LiveMeta>,
    ) -> std::result::Result<(), String> {
        let api = api_for(
            self.client(),
            &hook.resolved_kind(),
            hook.key.namespace.as_deref(),
        );
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            preconditions: live.map(|l| Preconditions {
                uid: l.meta.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&hook.key.name, &params).await {
            Ok(_) => {}
            Err(err) if status_code(&err) == Some(404) => return Ok(()),
            Err(err) => return Err(describe_kube_error(&err)),
        }
        let deadline = tokio::time::Instant::now() + self.timeout();
        let mut delay = Duration::from_millis(100);
        loop {
            match api.get_metadata_opt(&hook.key.name).await {
                Ok(None) => return Ok(()),
                // A new object under the same name (someone else's) is not ours to wait for.
                Ok(Some(obj)) if live.is_some_and(|l| l.meta.uid != obj.metadata.uid) => {
                    return Ok(());
                }
                Ok(Some(_)) => {}
                Err(err) => return Err(describe_kube_error(&err)),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(format!(
                    "still present {}s after deletion (finalizers?)",
                    self.timeout().as_secs()
                ));
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }
}
