//! The Receiver controller: publishes `status.webhookPath` and whether the secret is usable, so
//! `kubectl get receivers` shows where to point the sender. Requests are served by
//! `crate::webhook`; this is only the controller.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_api::common::{self, READY};
use ferry_api::{Receiver, ReceiverStatus};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use crate::context::{Context, key_of};

const KIND: &str = "Receiver";

/// How often a usable Receiver's Secret is checked again (reads only).
const RECHECK: Duration = Duration::from_secs(600);
/// The longest wait between checks of a Secret that is missing or unreadable.
const RETRY_CAP: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
#[error("cannot update Receiver {0}: {1}")]
pub struct ReceiverError(String, String);

pub async fn reconcile(
    receiver: Arc<Receiver>,
    ctx: Arc<Context>,
) -> Result<Action, ReceiverError> {
    let started = Instant::now();
    let _running = ctx.metrics.running(KIND);
    let key = key_of(&*receiver);
    let (ns, name) = key.clone();
    // Read as the namespace's tenant identity (a Receiver must not reveal, even as Ready or
    // not, a Secret its author may not read).
    let (reader, identity) = ctx
        .secret_reader(&ns)
        .map_err(|e| ReceiverError(format!("{ns}/{name}"), e.to_string()))?;
    let secrets: Api<Secret> = Api::namespaced(reader, &ns);
    let secret_name = &receiver.spec.secret_ref.name;
    // Why it is unusable, if it is (never the value).
    let unusable = match secrets.get_opt(secret_name).await {
        Ok(Some(s))
            if s.data
                .as_ref()
                .and_then(|d| d.get("token"))
                .is_some_and(|t| !t.0.is_empty()) =>
        {
            None
        }
        Ok(_) => Some(format!(
            "Secret {ns}/{secret_name} is missing or has no `token` key; requests are rejected until it exists"
        )),
        Err(e) => Some(format!(
            "cannot read Secret {ns}/{secret_name} as {identity}: {e}; grant it `get` on that Secret; requests are rejected until then"
        )),
    };
    let usable = unusable.is_none();
    let old = receiver.status.clone().unwrap_or_default();
    let previous_message = common::find_condition(&old.conditions, READY)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    let mut status = ReceiverStatus {
        observed_generation: receiver.metadata.generation,
        conditions: old.conditions.clone(),
        webhook_path: Some(format!("/hook/{ns}/{name}")),
    };
    // Docker Hub cannot sign or set headers: its token goes in the URL (never in status).
    let query = if receiver.spec.kind == ferry_api::ReceiverType::Dockerhub {
        "?token=<the Secret's token>"
    } else {
        ""
    };
    let (ok, reason, message) = match (receiver.spec.targets(), usable) {
        (Err(invalid), _) => (
            false,
            "InvalidResources",
            format!("{invalid}; every request is refused (422) until it is fixed"),
        ),
        (Ok(_), true) => (
            true,
            "Succeeded",
            format!("receiving at /hook/{ns}/{name}{query}"),
        ),
        (Ok(_), false) => (false, "SecretNotFound", unusable.unwrap_or_default()),
    };
    // kstatus: an invalid spec is Stalled; a missing Secret is retried (Reconciling).
    let outcome = if ok {
        ferry_api::kstatus::Outcome::Ready {
            reason,
            message: &message,
        }
    } else {
        ferry_api::kstatus::failure(reason, &message, reason == "InvalidResources")
    };
    ferry_api::kstatus::set_outcome(
        &mut status.conditions,
        outcome,
        receiver.metadata.generation,
    );
    let strip = |s: &ReceiverStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    if strip(&old) != strip(&status) {
        let api: Api<Receiver> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"status": status})),
        )
        .await
        .map_err(|e| ReceiverError(format!("{ns}/{name}"), e.to_string()))?;
    }
    if !ok && previous_message != message {
        ctx.publish_event(&*receiver, EventType::Warning, reason, &message)
            .await;
    }
    ctx.metrics
        .observe_reconcile(KIND, &ns, &name, ok, started.elapsed());
    // The secret may appear later; check again now and then (reads only).
    Ok(Action::requeue(if ok {
        ctx.backoff.on_success(KIND, &key);
        ctx.backoff.interval(RECHECK)
    } else {
        ctx.backoff.on_error(KIND, &key, RETRY_CAP)
    }))
}

pub fn error_policy(receiver: Arc<Receiver>, err: &ReceiverError, ctx: Arc<Context>) -> Action {
    tracing::warn!("{err}");
    ctx.metrics.observe_error(KIND);
    Action::requeue(ctx.backoff.on_error(KIND, &key_of(&*receiver), RETRY_CAP))
}
