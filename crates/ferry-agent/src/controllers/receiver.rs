//! The Receiver controller: publishes `status.webhookPath` and whether the secret is usable, so
//! `kubectl get receivers` shows where to point the sender. Requests are served by `webhook`.

use std::sync::Arc;
use std::time::Duration;

use ferry_api::common::{self, READY};
use ferry_api::{Receiver, ReceiverStatus};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;

use crate::context::{Context, key_of};

#[derive(Debug, thiserror::Error)]
#[error("cannot update Receiver {0}: {1}")]
pub struct ReceiverError(String, String);

pub async fn reconcile(
    receiver: Arc<Receiver>,
    ctx: Arc<Context>,
) -> Result<Action, ReceiverError> {
    let (ns, name) = key_of(&*receiver);
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
    let mut status = ReceiverStatus {
        observed_generation: receiver.metadata.generation,
        conditions: old.conditions.clone(),
        webhook_path: Some(format!("/hook/{ns}/{name}")),
    };
    let (ok, reason, message) = if usable {
        (true, "Succeeded", format!("receiving at /hook/{ns}/{name}"))
    } else {
        (false, "SecretNotFound", unusable.unwrap_or_default())
    };
    common::set_condition(
        &mut status.conditions,
        READY,
        ok,
        reason,
        &message,
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
    // The secret may appear later; check again now and then (reads only).
    Ok(Action::requeue(Duration::from_secs(if ok {
        600
    } else {
        30
    })))
}

pub fn error_policy(_: Arc<Receiver>, err: &ReceiverError, _: Arc<Context>) -> Action {
    tracing::warn!("{err}");
    Action::requeue(Duration::from_secs(30))
}
