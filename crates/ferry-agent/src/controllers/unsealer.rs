//! The unsealer controller (`--sealed-secrets`): keeps the sealing keys in labelled Secrets of
//! the agent's namespace (generating the first one, renewing on a period, importing any
//! bitnami-labelled key it finds), turns SealedSecrets into Secrets it owns, re-syncs them when
//! they are edited or deleted, and reports a `Synced` condition (and an Event when it changes)
//! whose message never contains secret data. It runs on the agent's one [`Context`] (metrics,
//! Events, backoff, stop token) with the other controllers while the agent leads, and stops with
//! them: running reconciles finish, nothing is aborted.
//!
//! Scope: it watches SealedSecrets (and the Secrets it owns) only in the namespaces it is given,
//! one watch per namespace (so its RBAC can be namespaced), or cluster-wide when given none.
//! The sealing and unsealing themselves are the library's (`ferry_engine::decrypt::sealed`);
//! `find_bitnami_controller` there tells the agent whether a bitnami sealed-secrets controller
//! already serves the cluster, in which case the agent does not start a second unsealer.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use ferry_engine::decrypt::sealed::keys::{
    KEY_LABEL, KEY_LABEL_ACTIVE, KeyBits, KeyError, KeyRing, SealingKey,
};
use ferry_engine::decrypt::sealed::types::{SealedSecret, SealedSecretCondition};
use ferry_engine::decrypt::sealed::unseal;

use crate::context::{Context, key_of};
use crate::options::AgentOptions;

const KIND: &str = "SealedSecret";
/// How often an unsealed Secret is checked again with nothing else happening.
const RESYNC_INTERVAL: Duration = Duration::from_secs(3600);
/// Longest wait before retrying a SealedSecret that could not be unsealed (a key may be
/// imported, a foreign Secret deleted); the shared backoff starts at 2 s.
const UNSEAL_RETRY_CAP: Duration = Duration::from_secs(30);
/// Longest wait before retrying after an API error.
const ERROR_RETRY_CAP: Duration = Duration::from_secs(15);

/// Field manager for the Secrets the unsealer writes.
pub const UNSEALER_FIELD_MANAGER: &str = "ferry-unsealer";

/// Shared view of the key ring: the agent serves [`CertificateHandle::certificate_pem`] over
/// HTTP (e.g. at `/v1/cert.pem`) for `ferry seal --cert URL` and `kubeseal --cert`.
#[derive(Clone, Default)]
pub struct CertificateHandle(Arc<RwLock<KeyRing>>);

impl std::fmt::Debug for CertificateHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateHandle")
            .field("keys", &self.key_ring().keys().len())
            .finish()
    }
}

impl CertificateHandle {
    /// PEM of the current sealing certificate; `None` until the unsealer has loaded its keys.
    pub fn certificate_pem(&self) -> Option<String> {
        self.0
            .read()
            .ok()
            .and_then(|ring| ring.current().map(|k| k.certificate_pem().to_string()))
    }

    /// A snapshot of all keys (newest last).
    pub fn key_ring(&self) -> KeyRing {
        self.0.read().map(|r| r.clone()).unwrap_or_default()
    }

    fn replace(&self, ring: KeyRing) {
        if let Ok(mut guard) = self.0.write() {
            *guard = ring;
        }
    }
}

/// How the unsealer runs.
#[derive(Debug, Clone)]
pub struct UnsealerOptions {
    /// Namespace of the key Secrets (the agent's namespace).
    pub key_namespace: String,
    /// Only watch SealedSecrets in these namespaces (one watch each); empty for all namespaces.
    pub watch_namespaces: Vec<String>,
    /// Size of generated keys (4096 like bitnami; 2048 is quicker for tests).
    pub key_bits: KeyBits,
    /// Generate a new sealing key when the newest is this old; `None` never renews.
    /// Old keys stay for unsealing.
    pub renew_period: Option<Duration>,
    /// How often key Secrets are re-read (to pick up imported keys) and renewal is checked.
    pub key_refresh: Duration,
    /// Where the current certificate is published.
    pub certificates: CertificateHandle,
}

impl UnsealerOptions {
    /// The agent's unsealer: keys in the agent's namespace, SealedSecrets in exactly the
    /// namespaces the agent watches (all of them only when it watches all).
    pub fn for_agent(options: &AgentOptions, certificates: CertificateHandle) -> Self {
        Self {
            key_namespace: options.namespace.clone(),
            watch_namespaces: options.watch_namespaces.clone(),
            certificates,
            ..Self::default()
        }
    }
}

impl Default for UnsealerOptions {
    fn default() -> Self {
        Self {
            key_namespace: "ferry-system".into(),
            watch_namespaces: Vec::new(),
            key_bits: KeyBits::Rsa4096,
            renew_period: Some(Duration::from_secs(30 * 24 * 3600)),
            key_refresh: Duration::from_secs(60),
            certificates: CertificateHandle::default(),
        }
    }
}

/// The agent's [`Context`] and the unsealer's options.
struct UnsealerContext {
    agent: Arc<Context>,
    options: UnsealerOptions,
}

/// Run the unsealer until the Context's stop token is cancelled; running reconciles finish
/// first. Loads or creates the sealing key first (an error here is returned and nothing is
/// watched), so [`CertificateHandle::certificate_pem`] is available once this has started
/// reconciling.
pub async fn run(agent: Arc<Context>, options: UnsealerOptions) -> Result<(), KeyStoreError> {
    let stop = agent.stop.clone();
    let client = agent.client.clone();
    refresh_keys(&client, &options).await?;
    let ctx = Arc::new(UnsealerContext {
        agent,
        options: options.clone(),
    });

    let key_loop = {
        let client = client.clone();
        let options = options.clone();
        let stop = stop.clone();
        async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(options.key_refresh) => {}
                }
                if let Err(err) = refresh_keys(&client, &options).await {
                    tracing::warn!(error = %err, "sealing keys: refresh failed");
                }
            }
        }
    };

    // One controller per watched namespace: a SealedSecret outside them is never read, and the
    // agent needs no cluster-wide Secret rights when it watches a fixed set of namespaces.
    let scopes: Vec<Option<String>> = if options.watch_namespaces.is_empty() {
        vec![None]
    } else {
        options.watch_namespaces.iter().cloned().map(Some).collect()
    };
    let controllers = scopes.into_iter().map(|scope| {
        let (sealed, secrets): (Api<SealedSecret>, Api<Secret>) = match &scope {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        let controller = Controller::new(sealed, watcher::Config::default())
            .owns(secrets, watcher::Config::default());
        super::drive(
            KIND,
            controller,
            0,
            reconcile,
            error_policy,
            ctx.clone(),
            stop.clone(),
        )
    });
    tokio::join!(futures::future::join_all(controllers), key_loop);
    tracing::info!("Sealed Secrets unsealer stopped");
    Ok(())
}

/// Read the key Secrets; generate a key when there is none or the newest is due for renewal.
async fn refresh_keys(client: &Client, options: &UnsealerOptions) -> Result<(), KeyStoreError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &options.key_namespace);
    let list = api
        .list(&ListParams::default().labels(&format!("{KEY_LABEL}={KEY_LABEL_ACTIVE}")))
        .await
        .map_err(|source| KeyStoreError::List {
            namespace: options.key_namespace.clone(),
            source,
        })?;
    let mut keys = Vec::new();
    for secret in &list.items {
        match SealingKey::from_secret(secret) {
            Ok(key) => keys.push(key),
            Err(err) => {
                tracing::warn!(namespace = %options.key_namespace, error = %err, "ignoring unusable sealing key")
            }
        }
    }
    let mut ring = KeyRing::new(keys);
    let due = match (ring.current(), options.renew_period) {
        (None, _) => true,
        (Some(newest), Some(period)) => {
            let age = chrono::Utc::now() - newest.created;
            age.to_std().map(|a| a >= period).unwrap_or(false)
        }
        (Some(_), None) => false,
    };
    if due {
        let bits = options.key_bits;
        let key = tokio::task::spawn_blocking(move || SealingKey::generate(bits))
            .await
            .map_err(KeyStoreError::Task)?
            .map_err(KeyStoreError::Generate)?;
        let secret = key
            .to_secret(&options.key_namespace)
            .map_err(KeyStoreError::Encode)?;
        let created = api
            .create(&PostParams::default(), &secret)
            .await
            .map_err(|source| KeyStoreError::Create {
                namespace: options.key_namespace.clone(),
                source,
            })?;
        let mut key = key;
        key.secret_name = created.name_any();
        if let Some(ts) = created.metadata.creation_timestamp {
            key.created = to_chrono(&ts.0);
        }
        tracing::info!(namespace = %options.key_namespace, secret = %key.secret_name, "generated a new sealing key");
        ring.push(key);
    }
    options.certificates.replace(ring);
    Ok(())
}

/// Why the sealing keys could not be read or a new one made. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("listing sealing key Secrets in {namespace}: {source}")]
    List {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("the key generation task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    #[error("generating a sealing key: {0}")]
    Generate(#[source] KeyError),
    #[error("storing the sealing key: {0}")]
    Encode(#[source] KeyError),
    #[error("creating a sealing key Secret in {namespace}: {source}")]
    Create {
        namespace: String,
        #[source]
        source: kube::Error,
    },
}

/// k8s-openapi timestamps are `jiff`; the key ring orders by `chrono`.
fn to_chrono(ts: &k8s_openapi::jiff::Timestamp) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(ts.as_second(), ts.subsec_nanosecond().max(0) as u32)
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

fn error_policy(
    sealed: Arc<SealedSecret>,
    err: &ReconcileError,
    ctx: Arc<UnsealerContext>,
) -> Action {
    let key = key_of(&*sealed);
    tracing::warn!(sealedsecret = %format!("{}/{}", key.0, key.1), error = %err, "unsealer: retrying");
    ctx.agent.metrics.observe_error(KIND);
    Action::requeue(ctx.agent.backoff.on_error(KIND, &key, ERROR_RETRY_CAP))
}

async fn reconcile(
    sealed: Arc<SealedSecret>,
    ctx: Arc<UnsealerContext>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let _running = ctx.agent.metrics.running(KIND);
    let result = reconcile_inner(&sealed, &ctx).await;
    if let Ok((_, synced)) = &result {
        let key = key_of(&*sealed);
        ctx.agent
            .metrics
            .observe_reconcile(KIND, &key.0, &key.1, *synced, started.elapsed());
    }
    result.map(|(action, _)| action)
}

/// Unseal one SealedSecret; returns what to do next and whether its Secret is in sync.
async fn reconcile_inner(
    sealed: &SealedSecret,
    ctx: &UnsealerContext,
) -> Result<(Action, bool), ReconcileError> {
    let Some(namespace) = sealed.namespace() else {
        return Ok((Action::await_change(), false));
    };
    let name = sealed.name_any();
    let ring = ctx.options.certificates.key_ring();
    let secrets: Api<Secret> = Api::namespaced(ctx.agent.client.clone(), &namespace);
    let outcome = match unseal(sealed, &ring) {
        Err(err) => Err(err.to_string()),
        Ok(secret) => {
            let ours = sealed.uid();
            match secrets.get_opt(&name).await? {
                Some(existing)
                    if !existing
                        .owner_references()
                        .iter()
                        .any(|o| Some(&o.uid) == ours.as_ref())
                        && existing
                            .metadata
                            .managed_fields
                            .iter()
                            .flatten()
                            .all(|m| m.manager.as_deref() != Some(UNSEALER_FIELD_MANAGER)) =>
                {
                    Err(format!(
                        "Secret {namespace}/{name} already exists and is not managed by this \
                         SealedSecret; delete it to let the unsealer create it"
                    ))
                }
                _ => {
                    let params = PatchParams::apply(UNSEALER_FIELD_MANAGER).force();
                    secrets
                        .patch(&name, &params, &Patch::Apply(&secret))
                        .await?;
                    Ok(())
                }
            }
        }
    };
    let (status, message) = match &outcome {
        Ok(()) => ("True", "Secret unsealed".to_string()),
        Err(message) => ("False", message.clone()),
    };
    match &outcome {
        Ok(()) => tracing::info!(sealedsecret = %format!("{namespace}/{name}"), "unsealed"),
        Err(message) => {
            tracing::warn!(sealedsecret = %format!("{namespace}/{name}"), %message, "cannot unseal")
        }
    }
    update_status(ctx, sealed, status, &message).await?;
    let key = key_of(sealed);
    let backoff = &ctx.agent.backoff;
    Ok(match outcome {
        Ok(()) => {
            backoff.on_success(KIND, &key);
            (Action::requeue(backoff.interval(RESYNC_INTERVAL)), true)
        }
        // Keys may be imported or the Secret deleted later: retry.
        Err(_) => (
            Action::requeue(backoff.on_error(KIND, &key, UNSEAL_RETRY_CAP)),
            false,
        ),
    })
}

/// Write the `Synced` condition when it changed, and publish an Event when its status or
/// message changed (bitnami's reasons: `Unsealed`, `ErrUnsealFailed`).
async fn update_status(
    ctx: &UnsealerContext,
    sealed: &SealedSecret,
    status: &str,
    message: &str,
) -> Result<(), kube::Error> {
    let previous = sealed
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Synced"));
    let generation = sealed.metadata.generation;
    let same_condition =
        previous.is_some_and(|c| c.status == status && c.message.as_deref() == Some(message));
    let unchanged =
        same_condition && sealed.status.as_ref().and_then(|s| s.observed_generation) == generation;
    if unchanged {
        return Ok(());
    }
    let reason = if status == "True" {
        "Unsealed"
    } else {
        "ErrUnsealFailed"
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let transition = match previous {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Some(now.clone()),
    };
    let condition = SealedSecretCondition {
        type_: "Synced".into(),
        status: status.into(),
        last_transition_time: transition,
        last_update_time: Some(now),
        reason: Some(reason.into()),
        message: Some(message.into()),
    };
    let api: Api<SealedSecret> = Api::namespaced(
        ctx.agent.client.clone(),
        &sealed.namespace().unwrap_or_default(),
    );
    let patch = json!({
        "status": { "conditions": [condition], "observedGeneration": generation }
    });
    api.patch_status(
        &sealed.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    if !same_condition {
        let type_ = if status == "True" {
            EventType::Normal
        } else {
            EventType::Warning
        };
        ctx.agent
            .publish_event(sealed, type_, reason, message)
            .await;
    }
    Ok(())
}
