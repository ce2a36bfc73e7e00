//! The unsealer controller the agent runs: keeps the sealing keys in labelled Secrets of its
//! namespace (generating the first one, renewing on a period, importing any bitnami-labelled
//! key it finds), turns SealedSecrets into Secrets it owns, re-syncs them when they are edited or
//! deleted, and reports a `Synced` condition whose message never contains secret data.
//!
//! Scope: it watches SealedSecrets (and the Secrets it owns) only in the namespaces it is given,
//! one watch per namespace (so its RBAC can be namespaced), or cluster-wide when given none.
//! The sealing and unsealing themselves are the library's (`ferry_engine::decrypt::sealed`);
//! `find_bitnami_controller` there tells the agent whether a bitnami sealed-secrets controller
//! already serves the cluster, in which case the agent does not start a second unsealer.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use ferry_engine::decrypt::sealed::keys::{
    KEY_LABEL, KEY_LABEL_ACTIVE, KeyBits, KeyError, KeyRing, SealingKey,
};
use ferry_engine::decrypt::sealed::types::{SealedSecret, SealedSecretCondition};
use ferry_engine::decrypt::sealed::unseal;

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

struct Ctx {
    client: Client,
    options: UnsealerOptions,
}

/// Run the unsealer until the watch streams end (normally: forever). Loads or creates the
/// sealing key first, so [`CertificateHandle::certificate_pem`] is available once this has
/// started reconciling.
pub async fn run_unsealer(client: Client, options: UnsealerOptions) -> Result<(), KeyStoreError> {
    refresh_keys(&client, &options).await?;
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        options: options.clone(),
    });

    let key_loop = {
        let client = client.clone();
        let options = options.clone();
        async move {
            loop {
                tokio::time::sleep(options.key_refresh).await;
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
        Controller::new(sealed, watcher::Config::default())
            .owns(secrets, watcher::Config::default())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| async move {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "unsealer reconcile");
                }
            })
    });
    tokio::select! {
        _ = futures::future::join_all(controllers) => Ok(()),
        _ = key_loop => Ok(()),
    }
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

fn error_policy(_: Arc<SealedSecret>, err: &ReconcileError, _: Arc<Ctx>) -> Action {
    tracing::warn!(error = %err, "unsealer: retrying");
    Action::requeue(Duration::from_secs(15))
}

async fn reconcile(sealed: Arc<SealedSecret>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let Some(namespace) = sealed.namespace() else {
        return Ok(Action::await_change());
    };
    let name = sealed.name_any();
    let ring = ctx.options.certificates.key_ring();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let outcome = match unseal(&sealed, &ring) {
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
    update_status(&ctx.client, &sealed, status, &message).await?;
    Ok(match outcome {
        Ok(()) => Action::requeue(Duration::from_secs(3600)),
        // Keys may be imported or the Secret deleted later: retry.
        Err(_) => Action::requeue(Duration::from_secs(30)),
    })
}

async fn update_status(
    client: &Client,
    sealed: &SealedSecret,
    status: &str,
    message: &str,
) -> Result<(), kube::Error> {
    let previous = sealed
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Synced"));
    let generation = sealed.metadata.generation;
    let unchanged = previous
        .is_some_and(|c| c.status == status && c.message.as_deref() == Some(message))
        && sealed.status.as_ref().and_then(|s| s.observed_generation) == generation;
    if unchanged {
        return Ok(());
    }
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
        reason: Some(
            if status == "True" {
                "Unsealed"
            } else {
                "ErrUnsealFailed"
            }
            .into(),
        ),
        message: Some(message.into()),
    };
    let api: Api<SealedSecret> =
        Api::namespaced(client.clone(), &sealed.namespace().unwrap_or_default());
    let patch = json!({
        "status": { "conditions": [condition], "observedGeneration": generation }
    });
    api.patch_status(
        &sealed.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}
