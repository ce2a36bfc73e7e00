//! ferry-agent: the pull-mode driver over `ferry-engine`. [`Agent::start`] connects to the
//! cluster (in-cluster or a kubeconfig), serves HTTP (health, metrics, webhooks), takes the
//! leader Lease, and runs every controller (`controllers/`) on one shared [`context::Context`]
//! while it leads.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod context;
pub mod controllers;
pub mod crds;
pub mod deploy;
pub mod drift;
pub mod http;
pub mod metrics;
pub mod object_info;
pub mod options;
pub mod process_metrics;
pub mod shard;
pub mod watch;
pub mod webhook;

// The controllers' old paths (`ferry_agent::release::FINALIZER`, ...), kept for callers outside
// this crate until the shims are removed at the end of issue 13.
pub use controllers::{gitsource, receiver, release};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use ferry_engine::cluster::{ClusterOptions, load_config};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
pub use crate::options::AgentOptions;

/// A running agent: its HTTP address and a handle to stop it.
pub struct Agent {
    pub http_addr: SocketAddr,
    /// Where `/metrics` is served (`--metrics-addr`), separate from webhooks.
    pub metrics_addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub metrics: Arc<Metrics>,
    /// True while this replica holds the lease (always true without leader election).
    pub leading: Arc<AtomicBool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Agent {
    /// Connect, bind the HTTP port, and start electing/reconciling in the background.
    pub async fn start(options: AgentOptions) -> anyhow::Result<Self> {
        ferry_engine::install_crypto_provider();
        let config = load_config(&ClusterOptions {
            kubeconfig: options.kubeconfig.clone(),
            context: options.context.clone(),
        })
        .await?;
        let server = config.cluster_url.to_string();
        let metrics = Arc::new(Metrics::new());
        let client = context::counted_client(config.clone(), metrics.clone())
            .with_context(|| format!("cannot build a client for {server}"))?;
        client.apiserver_version().await.with_context(|| {
            format!("cannot reach the API server at {server}; is the cluster up and the kubeconfig current?")
        })?;
        std::fs::create_dir_all(&options.cache_dir).with_context(|| {
            format!(
                "cannot create the cache dir {}",
                options.cache_dir.display()
            )
        })?;
        let shutdown = CancellationToken::new();
        let leading = Arc::new(AtomicBool::new(false));
        // Webhook receivers read their Secrets as their namespace's tenant identity.
        let tenants = Arc::new(context::TenantClients::new(
            config.clone(),
            options.clone(),
            metrics.clone(),
        )?);
        let state = http::HttpState {
            client: client.clone(),
            metrics: metrics.clone(),
            max_body: options.webhook_max_bytes,
            ready: Arc::new(AtomicBool::new(true)),
            watch_namespaces: options.watch_namespaces.clone(),
            certificate: Default::default(),
            keys: webhook::ReceiverKeys::default().with_tenants(tenants.clone()),
            deploy: Some(Arc::new(
                deploy::DeployService::new(client.clone(), tenants, options.clone())
                    .with_metrics(&metrics),
            )),
        };
        let certificate = state.certificate.clone();
        let (http_addr, http_task) =
            http::serve(options.http_addr, state, shutdown.clone()).await?;
        let metrics_addr =
            http::serve_metrics_on(options.metrics_addr, metrics.clone(), shutdown.clone()).await?;
        tracing::info!(%http_addr, %metrics_addr, %server, "ferry-agent started");
        controllers::warn_insecure_options(&options);
        let task = tokio::spawn(controllers::run(
            client,
            config,
            options,
            metrics.clone(),
            leading.clone(),
            certificate,
            shutdown.clone(),
            http_task,
        ));
        Ok(Self {
            http_addr,
            metrics_addr,
            shutdown,
            metrics,
            leading,
            task,
        })
    }

    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// Graceful stop: running reconciles finish, the lease is released.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.context("agent task panicked")?
    }

    /// Wait until the agent exits on its own (signal or fatal error).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("agent task panicked")?
    }
}
