//! ImagePolicy reconciler: pick the latest tag from the repository's shared scan, optionally
//! pin its digest, and record latest / previous image and when it changed.

use std::sync::Arc;
use std::time::Duration;

use ferry_api::common::{READY, STALLED, remove_condition, set_condition, set_failure};
use ferry_api::images::{ImagePolicy, ImagePolicySpec, ImagePolicyStatus, ImageRepository};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::image_automation::{Context, ReconcileError, drain, lock, now_time};
use super::image_repository as repository;
use ferry_images::policy::{Choice, Filter, Order, Policy};
use ferry_images::semver_range::Range;

pub(super) async fn controller(ctx: Arc<Context>, namespace: Option<String>) {
    let (policies, repos): (Api<ImagePolicy>, Api<ImageRepository>) = match &namespace {
        Some(ns) => (
            Api::namespaced(ctx.client.clone(), ns),
            Api::namespaced(ctx.client.clone(), ns),
        ),
        None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
    };
    let controller = Controller::new(policies, watcher::Config::default());
    let store = controller.store();
    let stream = controller
        .watches(
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
        )
        .run(reconcile, error_policy, ctx);
    drain(stream, "ImagePolicy").await;
}

fn error_policy(_: Arc<ImagePolicy>, err: &ReconcileError, _: Arc<Context>) -> Action {
    tracing::warn!("ImagePolicy reconcile failed: {err}");
    Action::requeue(Duration::from_secs(10))
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

async fn patch_status(
    ctx: &Context,
    policy: &ImagePolicy,
    status: &ImagePolicyStatus,
) -> Result<(), ReconcileError> {
    if policy.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<ImagePolicy> =
        Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
    api.patch_status(
        &policy.name_any(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await?;
    Ok(())
}

async fn reconcile(policy: Arc<ImagePolicy>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
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
            patch_status(&ctx, &policy, &status).await?;
            return Ok(Action::await_change());
        }
    };
    let repo_ref = &policy.spec.image_repository_ref;
    // THE cross-namespace rule, with the agent's --allow-cross-namespace-refs as for Releases.
    let repo_ns = match ferry_api::referenced_namespace(
        ctx.options.allow_cross_namespace_refs,
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
            patch_status(&ctx, &policy, &status).await?;
            return Ok(Action::await_change());
        }
    };
    let repos: Api<ImageRepository> = Api::namespaced(ctx.client.clone(), &repo_ns);
    let Some(repo) = repos.get_opt(&repo_ref.name).await? else {
        fail(
            &mut status,
            "ImageRepositoryNotFound",
            &format!("ImageRepository {repo_ns}/{} not found", repo_ref.name),
            false,
        );
        patch_status(&ctx, &policy, &status).await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
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
        patch_status(&ctx, &policy, &status).await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
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
        patch_status(&ctx, &policy, &status).await?;
        return Ok(Action::await_change());
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
            patch_status(&ctx, &policy, &status).await?;
            return Ok(Action::await_change());
        }
    };
    let mut image = format!("{}:{tag}", scan.image);
    if pin {
        let target = match repository::connect(&ctx, &repo).await {
            Ok(t) => t,
            Err((reason, message)) => {
                fail(&mut status, &reason, &message, false);
                patch_status(&ctx, &policy, &status).await?;
                return Ok(Action::requeue(Duration::from_secs(30)));
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
                patch_status(&ctx, &policy, &status).await?;
                return Ok(Action::requeue(
                    e.retry_after().unwrap_or(Duration::from_secs(30)),
                ));
            }
        }
    }
    if status.latest_image.as_deref() != Some(image.as_str()) {
        tracing::info!(policy = %format!("{ns}/{}", policy.name_any()), from = ?status.latest_image, to = %image, "latest image changed");
        status.previous_image = status.latest_image.take();
        status.latest_image = Some(image.clone());
        status.last_change_time = Some(now_time());
    }
    set_condition(
        &mut status.conditions,
        READY,
        true,
        "Succeeded",
        &format!("latest image is {image}"),
        generation,
    );
    remove_condition(&mut status.conditions, STALLED);
    patch_status(&ctx, &policy, &status).await?;
    Ok(Action::await_change())
}
