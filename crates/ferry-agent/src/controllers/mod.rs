//! Every controller of the agent, and leadership: wait for the Lease (when leader election is
//! on), start all controllers on one shared [`Context`] while leading, stop them gracefully when
//! the lease is lost or on shutdown (no new reconciles start, running ones finish; nothing is
//! aborted), then release the lease. Each controller is driven by [`drive`], so all of them get
//! the same stop, concurrency and logging; each reconcile reports the same metrics and requeues
//! through the same backoff ([`crate::backoff`]).

pub mod gitsource;
pub mod image_automation;
pub mod image_policy;
pub mod image_repository;
pub mod image_update;
pub mod notification;
pub mod ocisource;
pub mod receiver;
pub mod release;
pub mod release_drift;
pub mod release_helm;
pub mod release_inputs;
pub mod release_progress;
pub mod unsealer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ferry_api::{GitSource, Receiver, Release};
use futures::{StreamExt, future};
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::reflector;
use kube::runtime::utils::{Predicate, WatchStreamExt, predicates};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Config};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::task::JoinHandle;
use tokio_stream_shim::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::http::CertificateSlot;
use crate::metrics::Metrics;
use crate::options::AgentOptions;

#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: Client,
    config: Config,
    options: AgentOptions,
    metrics: Arc<Metrics>,
    leading: Arc<AtomicBool>,
    certificate: CertificateSlot,
    shutdown: CancellationToken,
    http_task: JoinHandle<()>,
) -> anyhow::Result<()> {
    // Sharded replicas all run; the shard Leases (crate::shard) decide who reconciles what.
    let result = if options.leader_elect && options.shards <= 1 {
        run_with_lease(
            &client,
            &config,
            &options,
            &metrics,
            &leading,
            &certificate,
            &shutdown,
        )
        .await
    } else {
        leading.store(true, Ordering::Relaxed);
        metrics.leader.set(1);
        run_controllers(
            client,
            config,
            options,
            metrics.clone(),
            certificate,
            shutdown.clone(),
        )
        .await;
        Ok(())
    };
    leading.store(false, Ordering::Relaxed);
    metrics.leader.set(0);
    shutdown.cancel();
    let _ = http_task.await;
    result
}

async fn run_with_lease(
    client: &Client,
    config: &Config,
    options: &AgentOptions,
    metrics: &Arc<Metrics>,
    leading: &Arc<AtomicBool>,
    certificate: &CertificateSlot,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let identity = options.identity.clone().unwrap_or_else(default_identity);
    let duration = options.lease_duration().as_secs();
    let manager = LeaseManagerBuilder::new(client.clone(), &options.lease_name)
        .with_namespace(&options.namespace)
        .with_identity(&identity)
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        // One field manager per replica: kube-lease-manager takes a free Lease with a
        // server-side apply and relies on the API server's conflict between two managers to
        // keep a second contender out; one shared manager let two replicas lead at once.
        .with_field_manager(format!("ferry-agent-{identity}"))
        .build()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot set up the leader-election Lease {}/{}: {e}; does the namespace exist and may the agent manage leases there?",
                options.namespace,
                options.lease_name
            )
        })?;
    let (mut is_leader, lease_task) = manager.watch().await;
    tracing::info!(%identity, lease = %options.lease_name, "waiting for leadership");
    loop {
        // Wait to become leader, or shutdown.
        while !*is_leader.borrow_and_update() {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    drop(is_leader);
                    let _ = lease_task.await;
                    return Ok(());
                }
                changed = is_leader.changed() => {
                    if changed.is_err() {
                        anyhow::bail!("the leader-election task stopped");
                    }
                }
            }
        }
        tracing::info!(%identity, "became leader");
        leading.store(true, Ordering::Relaxed);
        metrics.leader.set(1);
        let term = shutdown.child_token();
        let controllers = run_controllers(
            client.clone(),
            config.clone(),
            options.clone(),
            metrics.clone(),
            certificate.clone(),
            term.clone(),
        );
        tokio::pin!(controllers);
        let mut lost = false;
        loop {
            tokio::select! {
                _ = &mut controllers => break,
                changed = is_leader.changed() => {
                    if changed.is_err() || !*is_leader.borrow() {
                        tracing::warn!(%identity, "lost leadership; stopping controllers");
                        lost = true;
                        term.cancel();
                    }
                }
            }
        }
        leading.store(false, Ordering::Relaxed);
        metrics.leader.set(0);
        if shutdown.is_cancelled() || !lost {
            drop(is_leader);
            // Dropping the receiver makes the lease task release the Lease.
            let _ = lease_task.await;
            return Ok(());
        }
    }
}

fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|| "ferry-agent".to_string());
    format!("{host}-{:08x}", rand::random::<u32>())
}

fn watcher_config() -> watcher::Config {
    watcher::Config::default().any_semantic()
}

/// Drive one controller until `stop` is cancelled: at most `concurrency` reconciles at a time
/// (0: no limit); on stop no new reconcile starts and the running ones finish
/// (`graceful_shutdown_on`), so a leadership loss never cuts an apply in half. Reconcile errors
/// are logged by the controller's error policy; this only traces them.
pub async fn drive<K, Ctx, Fut, E>(
    kind: &'static str,
    controller: Controller<K>,
    concurrency: u16,
    reconcile: impl FnMut(Arc<K>, Arc<Ctx>) -> Fut,
    error_policy: impl Fn(Arc<K>, &E, Arc<Ctx>) -> Action,
    ctx: Arc<Ctx>,
    stop: CancellationToken,
) where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: std::fmt::Debug + Unpin + std::hash::Hash + Eq + Clone,
    Fut: std::future::Future<Output = Result<Action, E>> + Send + 'static,
    E: std::error::Error + Send + 'static,
    Ctx: Send + Sync + 'static,
{
    controller
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .graceful_shutdown_on(async move { stop.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            if let Err(err) = result {
                tracing::debug!("{kind} controller: {err}");
            }
            future::ready(())
        })
        .await;
    tracing::debug!("{kind} controller stopped");
}

/// Run every controller until `stop` is cancelled; in-flight reconciles finish first.
pub async fn run_controllers(
    client: Client,
    config: Config,
    options: AgentOptions,
    metrics: Arc<Metrics>,
    certificate: CertificateSlot,
    stop: CancellationToken,
) {
    let namespaces: Vec<Option<String>> = if options.watch_namespaces.is_empty() {
        vec![None]
    } else {
        options.watch_namespaces.iter().cloned().map(Some).collect()
    };
    let concurrency = options.concurrency;
    let extras_parts = (config.clone(), options.clone(), metrics.clone());
    let ctx = Arc::new(Context::new(
        client.clone(),
        config,
        options,
        metrics,
        stop.clone(),
    ));
    // A task of its own: renewing the shard Leases must not wait on the controllers' polls.
    let coordinator = tokio::spawn(sharding(client.clone(), ctx.clone()));
    let coordinator = async move {
        if let Err(err) = coordinator.await {
            tracing::error!("sharding task failed: {err}");
        }
    };
    // ferry_resource_info reads this term's caches (weakly: a finished term reports nothing).
    let objects: Arc<dyn crate::metrics::ObjectInfoSource> = ctx.clone();
    ctx.metrics.watch_objects(Arc::downgrade(&objects));
    // Releases queued by their GitSource, their dependencies, drift and webhooks.
    let release_queue =
        futures::stream::iter(ctx.take_release_queue()).flat_map(UnboundedReceiverStream);
    let extras = one_per_cluster(&client, &ctx, extras_parts, certificate);

    // One watch per namespace (or one cluster-wide), merged. Only spec (generation) and
    // annotation changes trigger: status writes by the agent itself do not.
    let (source_reader, source_writer) = reflector::store::<GitSource>();
    let source_stream = crate::watch::merged_watch(
        namespaces
            .iter()
            .map(|ns| api_for::<GitSource>(&client, ns.as_deref()))
            .collect(),
        watcher_config(),
    )
    .modify(strip_managed_fields)
    .reflect(source_writer)
    .applied_objects()
    .predicate_filter(
        (predicates::generation as fn(&GitSource) -> Option<u64>).combine(predicates::annotations),
        Default::default(),
    );
    let _ = ctx.sources.set(source_reader.clone());

    let (release_reader, release_writer) = reflector::store::<Release>();
    let release_stream = crate::watch::merged_watch(
        namespaces
            .iter()
            .map(|ns| api_for::<Release>(&client, ns.as_deref()))
            .collect(),
        watcher_config(),
    )
    .modify(strip_managed_fields)
    .reflect(release_writer)
    .applied_objects()
    .predicate_filter(
        (predicates::generation as fn(&Release) -> Option<u64>)
            .combine(predicates::annotations)
            .combine(predicates::finalizers),
        Default::default(),
    );
    let _ = ctx.releases.set(release_reader.clone());

    let sources = drive(
        "GitSource",
        Controller::for_stream(source_stream, source_reader),
        concurrency,
        gitsource::reconcile,
        gitsource::error_policy,
        ctx.clone(),
        stop.clone(),
    );
    let releases = drive(
        "Release",
        Controller::for_stream(release_stream, release_reader)
            .reconcile_on(release_queue)
            .reconcile_all_on(ctx.shards.acquisitions()),
        concurrency,
        release::reconcile,
        release::error_policy,
        ctx.clone(),
        stop.clone(),
    );
    let (receiver_reader, receiver_writer) = reflector::store::<Receiver>();
    let receiver_stream = crate::watch::merged_watch(
        namespaces
            .iter()
            .map(|ns| api_for::<Receiver>(&client, ns.as_deref()))
            .collect(),
        watcher_config(),
    )
    .reflect(receiver_writer)
    .applied_objects()
    .predicate_filter(
        predicates::generation as fn(&Receiver) -> Option<u64>,
        Default::default(),
    );
    let receivers = drive(
        "Receiver",
        Controller::for_stream(receiver_stream, receiver_reader),
        concurrency,
        receiver::reconcile,
        receiver::error_policy,
        ctx.clone(),
        stop.clone(),
    );
    let alerts = alert_cache(&client, &namespaces, ctx.clone(), stop.clone());
    let oci_sources = oci_source_controller(&client, &namespaces, ctx.clone(), stop.clone());
    let depth = queue_depth(ctx.clone(), stop.clone());
    tokio::join!(
        sources,
        releases,
        receivers,
        alerts,
        oci_sources,
        extras,
        depth,
        coordinator
    );
    tracing::info!("controllers stopped");
}

/// The Alerts of the watched namespaces, kept in `ctx.alerts` for the notification dispatch
/// (no controller: an Alert is only read when an event of a Release, source or image
/// automation object happens). Each Alert seen is checked against its spec, so an invalid one is
/// `Stalled` at once; a valid, unchanged Alert costs no write. Without the Alert CRD the watch
/// keeps retrying with backoff and the dispatch falls back to listing.
async fn alert_cache(
    client: &Client,
    namespaces: &[Option<String>],
    ctx: Arc<Context>,
    stop: CancellationToken,
) {
    use ferry_api::notification::Alert;
    let (reader, writer) = reflector::store::<Alert>();
    let _ = ctx.alerts.set(reader);
    let stream = crate::watch::merged_watch(
        namespaces
            .iter()
            .map(|ns| api_for::<Alert>(client, ns.as_deref()))
            .collect(),
        watcher_config(),
    )
    .modify(strip_managed_fields)
    .reflect(writer)
    .for_each(|event| {
        match event {
            Ok(watcher::Event::Apply(alert) | watcher::Event::InitApply(alert)) => {
                notification::check_alert_spec(&ctx, &alert);
            }
            Ok(_) => {}
            Err(err) => tracing::debug!("Alert watch: {err}"),
        }
        future::ready(())
    });
    tokio::select! {
        () = stream => {}
        () = stop.cancelled() => {}
    }
}

/// Cached objects need no managedFields (nothing reads them from a cache): dropping them
/// before the store keeps about a third of each cached Release out of memory.
fn strip_managed_fields<K: kube::Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// The OCISource controller: one watch per namespace, merged; only spec and annotation
/// changes trigger (its own status writes do not).
async fn oci_source_controller(
    client: &Client,
    namespaces: &[Option<String>],
    ctx: Arc<Context>,
    stop: CancellationToken,
) {
    let (reader, writer) = reflector::store::<ferry_api::OCISource>();
    let stream = crate::watch::merged_watch(
        namespaces
            .iter()
            .map(|ns| api_for::<ferry_api::OCISource>(client, ns.as_deref()))
            .collect(),
        watcher_config(),
    )
    .reflect(writer)
    .applied_objects()
    .predicate_filter(
        (predicates::generation as fn(&ferry_api::OCISource) -> Option<u64>)
            .combine(predicates::annotations),
        Default::default(),
    );
    let concurrency = ctx.options.concurrency;
    drive(
        "OCISource",
        Controller::for_stream(stream, reader),
        concurrency,
        ocisource::reconcile,
        ocisource::error_policy,
        ctx,
        stop,
    )
    .await;
}

/// With `--shards`: keep this replica's membership and shard Leases until `ctx.stop`, then hand
/// its shards back. Without: nothing (one replica owns the only shard).
async fn sharding(client: Client, ctx: Arc<Context>) {
    if ctx.shards.total() <= 1 {
        return;
    }
    let options = &ctx.options;
    let config = crate::shard::ShardConfig {
        namespace: options.namespace.clone(),
        group: options.lease_name.clone(),
        identity: options.identity.clone().unwrap_or_else(default_identity),
        lease_duration: options.lease_duration(),
    };
    tracing::info!(
        identity = %config.identity,
        shards = ctx.shards.total(),
        "sharding: joining the replicas"
    );
    crate::shard::run(client, config, ctx.shards.clone(), ctx.stop.clone()).await;
}

/// The unsealer and image automation: here without sharding; with it, only on the replica that
/// owns shard 0, each time on a Context of their own whose stop token ends when shard 0 leaves.
async fn one_per_cluster(
    client: &Client,
    ctx: &Arc<Context>,
    (config, options, metrics): (Config, AgentOptions, Arc<Metrics>),
    certificate: CertificateSlot,
) {
    if ctx.shards.total() <= 1 {
        return extra_controllers(client, ctx.clone(), certificate).await;
    }
    let client = client.clone();
    crate::shard::run_on_shard_zero(ctx.shards.clone(), ctx.stop.clone(), move |term| {
        let ctx = Arc::new(Context::new(
            client.clone(),
            config.clone(),
            options.clone(),
            metrics.clone(),
            term,
        ));
        let client = client.clone();
        let certificate = certificate.clone();
        async move { extra_controllers(&client, ctx, certificate).await }
    })
    .await;
}

/// `ferry_queue_depth`: Releases with work pending — spec not yet observed, or their source has
/// a revision they have not attempted — sampled every two seconds from the caches.
async fn queue_depth(ctx: Arc<Context>, stop: CancellationToken) {
    loop {
        if let Some(store) = ctx.releases.get() {
            let pending = store
                .state()
                .iter()
                .filter(|r| !r.spec.suspend)
                .filter(|r| {
                    let status = r.status.clone().unwrap_or_default();
                    let ns = r.metadata.namespace.clone().unwrap_or_default();
                    let src = (
                        r.spec.source_ref.namespace.clone().unwrap_or(ns),
                        r.spec.source_ref.name.clone(),
                    );
                    let artifact =
                        if r.spec.source_ref.kind == ferry_api::ocisource::OCI_SOURCE_KIND {
                            ocisource::artifact(&ctx, &src)
                        } else {
                            ctx.artifact(&src)
                        };
                    let behind = artifact.is_some_and(|a| {
                        status.last_attempted_revision.as_deref() != Some(a.revision.as_str())
                    });
                    status.observed_generation != r.metadata.generation || behind
                })
                .count();
            ctx.metrics.queued.set(pending as i64);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
        }
    }
}

/// Say loudly, once per start, when tenants may act with the agent's own rights.
pub fn warn_insecure_options(options: &AgentOptions) {
    if options.insecure_agent_identity_for_tenants {
        tracing::warn!(
            "--insecure-agent-identity-for-tenants is set: Releases without spec.serviceAccountName, and reads of the Secrets that GitSources, Receivers and image automation name, use the agent's OWN identity in every namespace; anyone who can create a Release can do whatever the agent can. Remove the flag to confine tenants to their namespace's --default-service-account ({}).",
            options.default_service_account
        );
    }
}

/// Whether the agent starts its Sealed Secrets unsealer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnsealerDecision {
    /// No bitnami controller found (or none could be looked for: a failed lookup is logged and
    /// does not block the unsealer, since two unsealers fight but leak nothing).
    Start,
    /// A bitnami controller runs (Deployment `namespace/name`): do not start a second unsealer.
    Refuse { deployment: String },
    /// One runs, but `--sealed-secrets-despite-bitnami` asks for ours anyway.
    StartDespite { deployment: String },
}

/// Decide whether to start the unsealer: look for a bitnami sealed-secrets controller's
/// Deployment in `search_namespaces` (empty: every namespace, as the agent does).
pub async fn unsealer_decision(
    client: &Client,
    options: &AgentOptions,
    search_namespaces: &[String],
) -> UnsealerDecision {
    use ferry_engine::decrypt::sealed::find_bitnami_controller;
    match find_bitnami_controller(client, search_namespaces).await {
        Ok(Some(deployment)) if options.sealed_secrets_despite_bitnami => {
            UnsealerDecision::StartDespite { deployment }
        }
        Ok(Some(deployment)) => UnsealerDecision::Refuse { deployment },
        Ok(None) => UnsealerDecision::Start,
        Err(err) => {
            tracing::warn!(
                "cannot check for a bitnami sealed-secrets controller ({err}); starting the unsealer"
            );
            UnsealerDecision::Start
        }
    }
}

/// The unsealer and image automation, when enabled: on the same [`Context`] as the others, each
/// in a task of its own, stopped by the Context's stop token like them (running reconciles
/// finish, nothing is aborted).
async fn extra_controllers(client: &Client, ctx: Arc<Context>, certificate: CertificateSlot) {
    let options = &ctx.options;
    let mut tasks = Vec::new();
    if options.sealed_secrets {
        // A bitnami controller anywhere in the cluster counts (searched in all namespaces).
        match unsealer_decision(client, options, &[]).await {
            UnsealerDecision::Refuse { deployment } => {
                tracing::error!(
                    %deployment,
                    "a bitnami sealed-secrets controller runs in this cluster (Deployment {deployment}); NOT starting ferry's unsealer, which would fight it over every SealedSecret. Keep using bitnami's, or migrate its keys (docs/secrets.md) and remove it; --sealed-secrets-despite-bitnami starts ours anyway"
                );
            }
            decision => {
                if let UnsealerDecision::StartDespite { deployment } = &decision {
                    tracing::warn!(%deployment, "a bitnami sealed-secrets controller runs in this cluster; starting ferry's unsealer anyway (--sealed-secrets-despite-bitnami)");
                }
                let unsealer_options = unsealer::UnsealerOptions::for_agent(options, certificate);
                let ctx = ctx.clone();
                tasks.push(tokio::spawn(async move {
                    if let Err(err) = unsealer::run(ctx, unsealer_options).await {
                        tracing::error!("Sealed Secrets unsealer stopped: {err}");
                    }
                }));
            }
        }
    }
    if options.image_automation {
        tasks.push(tokio::spawn(image_automation::run(ctx.clone())));
    }
    for task in tasks {
        if let Err(err) = task.await {
            tracing::error!("a controller task failed: {err}");
        }
    }
}

fn api_for<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A tiny adapter so we need not pull in tokio-stream for one type.
mod tokio_stream_shim {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::sync::mpsc::UnboundedReceiver;

    pub struct UnboundedReceiverStream<T>(pub UnboundedReceiver<T>);

    impl<T> futures::Stream for UnboundedReceiverStream<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}
