//! The ImagePolicy controller: pick the latest tag from the repository's shared scan, optionally
//! pin its digest, and record latest / previous image and when it changed (and an Event when
//! Ready changes, e.g. to a new latest image).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_api::common::{READY, is_ready, set_failure, set_ready};
use ferry_api::images::{ImagePolicy, ImagePolicySpec, ImagePolicyStatus, ImageRepository};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use tokio_util::sync::CancellationToken;

use super::image_automation::{ImageContext, ReconcileError, lock, now_time, publish_ready_change};
use super::image_repository as repository;
use crate::context::key_of;
use ferry_images::policy::{Choice, Filter, Order, Policy};
use ferry_images::semver_range::Range;

const KIND: &str = "ImagePolicy";
/// Longest wait before retrying after an API error (the shared backoff starts at 2 s).
const ERROR_RETRY_CAP: Duration = Duration::from_secs(10);

/// Run until `stop` is cancelled; running reconciles finish first.
pub(super) async fn controller(
    ctx: Arc<ImageContext>,
    namespace: Option<String>,
    stop: CancellationToken,
) {
    let (policies, repos): (Api<ImagePolicy>, Api<ImageRepository>) = match &namespace {
        Some(ns) => (
            Api::namespaced(ctx.agent.client.clone(), ns),
            Api::namespaced(ctx.agent.client.clone(), ns),
        ),
        None => (
            Api::all(ctx.agent.client.clone()),
            Api::all(ctx.agent.client.clone()),
        ),
    };
    let controller = Controller::new(policies, watcher::Config::default());
    let store = controller.store();
    let controller = controller.watches(
        repos,
        watcher::Config::default(),
        move |repo: ImageRepository| {
            let ns = repo.namespace().unwrap_or_default();
            let name = repo.name_any();
            store
                .state()
                .into_iter()
                .filter(|p| {
                    // Policies whose reference resolves to this repository, in their own
                    // namespace or (when allowed) another one.
                    let policy_ns = p.namespace().unwrap_or_default();
                    let repo_ref = &p.spec.image_repository_ref;
                    repo_ref.name == name
                        && repo_ref
                            .namespace
                            .as_deref()
                            .filter(|n| !n.is_empty())
                            .unwrap_or(&policy_ns)
                            == ns
                })
                .map(|p| ObjectRef::from_obj(&*p))
                .collect::<Vec<_>>()
        },
    );
    super::drive(KIND, controller, 0, reconcile, error_policy, ctx, stop).await;
}

fn error_policy(policy: Arc<ImagePolicy>, err: &ReconcileError, ctx: Arc<ImageContext>) -> Action {
    let key = key_of(&*policy);
    tracing::warn!(policy = %format!("{}/{}", key.0, key.1), "reconcile failed: {err}");
    ctx.agent.metrics.observe_error(KIND);
    Action::requeue(ctx.agent.backoff.on_error(KIND, &key, ERROR_RETRY_CAP))
}

/// Build the pure policy from the spec; errors name the field.
pub fn build_policy(spec: &ImagePolicySpec) -> Result<Policy, String> {
    let order = |o: &Option<String>, field: &str| match o
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("asc") => Ok(Order::Asc),
        Some("desc") => Ok(Order::Desc),
        Some(other) => Err(format!(
            "spec.policy.{field}.order {other:?} must be asc or desc"
        )),
    };
    let p = &spec.policy;
    let choices = [
        p.semver.is_some(),
        p.numerical.is_some(),
        p.alphabetical.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if choices != 1 {
        return Err("spec.policy must set exactly one of semver, numerical, alphabetical".into());
    }
    let choice = if let Some(s) = &p.semver {
        Choice::Semver(
            Range::parse(&s.range).map_err(|e| format!("spec.policy.semver.range: {e}"))?,
        )
    } else if let Some(n) = &p.numerical {
        Choice::Numerical(order(&n.order, "numerical")?)
    } else if let Some(a) = &p.alphabetical {
        Choice::Alphabetical(order(&a.order, "alphabetical")?)
    } else {
        return Err("spec.policy is empty".into());
    };
    let filter = match &spec.filter_tags {
        Some(f) => Some(
            Filter::new(&f.pattern, f.extract.as_deref())
                .map_err(|e| format!("spec.filterTags: {e}"))?,
        ),
        None => None,
    };
    Ok(Policy { choice, filter })
}

/// Write the status when it changed (and publish an Event if Ready changed); returns whether
/// it is Ready.
async fn patch_status(
    ctx: &ImageContext,
    policy: &ImagePolicy,
    status: &ImagePolicyStatus,
) -> Result<bool, ReconcileError> {
    let ready = is_ready(&status.conditions);
    if policy.status.as_ref() == Some(status) {
        return Ok(ready);
    }
    let api: Api<ImagePolicy> = Api::namespaced(
        ctx.agent.client.clone(),
        &policy.namespace().unwrap_or_default(),
    );
    api.patch_status(
        &policy.name_any(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await?;
    let before = policy.status.clone().unwrap_or_default();
    let news = (before.latest_image != status.latest_image).then_some("NewLatestImage");
    publish_ready_change(
        ctx,
        policy,
        &before.conditions,
        &status.conditions,
        news,
        status.latest_image.as_deref(),
    )
    .await;
    Ok(ready)
}

async fn reconcile(
    policy: Arc<ImagePolicy>,
    ctx: Arc<ImageContext>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let _running = ctx.agent.metrics.running(KIND);
    let result = reconcile_inner(&policy, &ctx).await;
    if let Ok((_, ready)) = &result {
        ctx.observe(KIND, &key_of(&*policy), *ready, started);
    }
    result.map(|(action, _)| action)
}

/// One evaluation; returns what to do next and whether the policy ended Ready.
async fn reconcile_inner(
    policy: &ImagePolicy,
    ctx: &ImageContext,
) -> Result<(Action, bool), ReconcileError> {
    let ns = policy.namespace().unwrap_or_default();
    let generation = policy.meta().generation;
    let mut status = policy.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    let fail = |status: &mut ImagePolicyStatus, reason: &str, message: &str, stalled: bool| {
        set_failure(&mut status.conditions, reason, message, stalled, generation);
    };
    let rule = match build_policy(&policy.spec) {
        Ok(rule) => rule,
        Err(message) => {
            fail(&mut status, "InvalidPolicy", &message, true);
            let ready = patch_status(ctx, policy, &status).await?;
            return Ok((Action::await_change(), ready));
        }
    };
    let repo_ref = &policy.spec.image_repository_ref;
    // THE cross-namespace rule, with the agent's --allow-cross-namespace-refs as for Releases.
    let repo_ns = match ferry_api::referenced_namespace(
        ctx.agent.options.allow_cross_namespace_refs,
        "ImagePolicy",
        &ns,
        repo_ref.namespace.as_deref(),
        &format!("ImageRepository {}", repo_ref.name),
    ) {
        Ok(repo_ns) => repo_ns,
        Err(refused) => {
            fail(
                &mut status,
                ferry_api::CROSS_NAMESPACE_REF_DENIED,
                &refused.to_string(),
                true,
            );
            let ready = patch_status(ctx, policy, &status).await?;
            return Ok((Action::await_change(), ready));
        }
    };
    let repos: Api<ImageRepository> = Api::namespaced(ctx.agent.client.clone(), &repo_ns);
    let Some(repo) = repos.get_opt(&repo_ref.name).await? else {
        fail(
            &mut status,
            "ImageRepositoryNotFound",
            &format!("ImageRepository {repo_ns}/{} not found", repo_ref.name),
            false,
        );
        let ready = patch_status(ctx, policy, &status).await?;
        return Ok((Action::requeue(retry_soon(ctx, policy)), ready));
    };
    let scan = lock(&ctx.scans)
        .get(&(repo_ns.clone(), repo_ref.name.clone()))
        .cloned();
    let Some(scan) = scan else {
        // The repository's status tells why (e.g. 401); the watch brings us back after a scan.
        let why = repo
            .status
            .as_ref()
            .and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == READY && c.status == "False")
            })
            .map(|c| format!(": {}", c.message))
            .unwrap_or_default();
        fail(
            &mut status,
            "WaitingForScan",
            &format!(
                "waiting for a scan of ImageRepository {repo_ns}/{}{why}",
                repo_ref.name
            ),
            false,
        );
        let ready = patch_status(ctx, policy, &status).await?;
        return Ok((Action::requeue(retry_soon(ctx, policy)), ready));
    };
    let selection = rule.select(scan.tags.iter().map(String::as_str));
    let Some(tag) = selection.tag else {
        let message = format!(
            "no tag matches the policy: {} tags scanned, {} left after the filter, {} of those not orderable; latest image left at {}",
            scan.tags.len(),
            selection.filtered,
            selection.unparseable,
            status.latest_image.as_deref().unwrap_or("(none)")
        );
        fail(&mut status, "NoMatchingTag", &message, false);
        let ready = patch_status(ctx, policy, &status).await?;
        return Ok((Action::await_change(), ready));
    };
    let pin = match policy.spec.digest_reflection_policy.as_deref() {
        None | Some("Never") => false,
        Some("Always") => true,
        Some(other) => {
            fail(
                &mut status,
                "InvalidPolicy",
                &format!("spec.digestReflectionPolicy {other:?} must be Never or Always"),
                true,
            );
            let ready = patch_status(ctx, policy, &status).await?;
            return Ok((Action::await_change(), ready));
        }
    };
    let mut image = format!("{}:{tag}", scan.image);
    if pin {
        let target = match repository::connect(ctx, &repo).await {
            Ok(t) => t,
            Err((reason, message)) => {
                fail(&mut status, &reason, &message, false);
                let ready = patch_status(ctx, policy, &status).await?;
                return Ok((Action::requeue(retry_soon(ctx, policy)), ready));
            }
        };
        match ctx
            .registries
            .digest(&target, &tag, Duration::from_secs(30))
            .await
        {
            Ok(digest) => image = format!("{image}@{digest}"),
            Err(e) => {
                fail(
                    &mut status,
                    e.reason(),
                    &format!("resolving the digest of {image}: {e}"),
                    false,
                );
                let ready = patch_status(ctx, policy, &status).await?;
                // Never sooner than the registry asked (429).
                let retry = retry_soon(ctx, policy).max(e.retry_after().unwrap_or_default());
                return Ok((Action::requeue(retry), ready));
            }
        }
    }
    if status.latest_image.as_deref() != Some(image.as_str()) {
        tracing::info!(policy = %format!("{ns}/{}", policy.name_any()), from = ?status.latest_image, to = %image, "latest image changed");
        status.previous_image = status.latest_image.take();
        status.latest_image = Some(image.clone());
        status.last_change_time = Some(now_time());
    }
    set_ready(
        &mut status.conditions,
        "Succeeded",
        &format!("latest image is {image}"),
        generation,
    );
    let ready = patch_status(ctx, policy, &status).await?;
    ctx.agent.backoff.on_success(KIND, &key_of(policy));
    Ok((Action::await_change(), ready))
}

/// The retry after a failure that is probably temporary (the repository not scanned yet, a
/// Secret being created): the shared backoff, at most 30 s.
fn retry_soon(ctx: &ImageContext, policy: &ImagePolicy) -> Duration {
    ctx.agent
        .backoff
        .on_error(KIND, &key_of(policy), Duration::from_secs(30))
}
