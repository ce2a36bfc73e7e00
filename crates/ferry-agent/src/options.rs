//! Agent configuration: command-line flags (with environment fallbacks) shared by `main` and the
//! in-process tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// How the agent runs. Every flag has an environment fallback so the Deployment can set them.
#[derive(Debug, Clone, Args)]
pub struct AgentOptions {
    /// Path to a kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// The agent's own namespace: where its leader-election Lease lives.
    #[arg(long, env = "FERRY_NAMESPACE", default_value = "ferry-system")]
    pub namespace: String,
    /// Only watch GitSources, Releases and Receivers in these namespaces (repeatable). Default:
    /// all namespaces. Lets several agents with their own RBAC run side by side.
    #[arg(
        long = "watch-namespace",
        env = "FERRY_WATCH_NAMESPACE",
        value_delimiter = ','
    )]
    pub watch_namespaces: Vec<String>,
    /// ServiceAccount (in the Release's namespace) used for Releases without
    /// `serviceAccountName`. When set, no Release ever applies with the agent's own rights.
    #[arg(long, env = "FERRY_DEFAULT_SERVICE_ACCOUNT", value_name = "NAME")]
    pub default_service_account: Option<String>,
    /// Allow a Release to reference a GitSource or Release in another namespace (refused by
    /// default: a tenant must not read another tenant's sources).
    #[arg(long, env = "FERRY_ALLOW_CROSS_NAMESPACE_REFS")]
    pub allow_cross_namespace_refs: bool,
    /// Where git checkouts are cached.
    #[arg(
        long,
        env = "FERRY_CACHE_DIR",
        default_value = "/tmp/ferry-agent-cache"
    )]
    pub cache_dir: PathBuf,
    /// Address for /healthz, /readyz, /metrics, webhooks (/hook/...) and /v1/cert.pem.
    #[arg(long, env = "FERRY_HTTP_ADDR", default_value = "0.0.0.0:9090")]
    pub http_addr: SocketAddr,
    /// Use a Lease so that only one replica reconciles at a time.
    #[arg(long, env = "FERRY_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "ferry-agent")]
    pub lease_name: String,
    /// Lease duration in seconds: how long a dead leader blocks the others.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_secs: u64,
    /// Identity in the Lease (default: $POD_NAME or hostname + random suffix).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Releases reconciled in parallel.
    #[arg(long, default_value_t = 8)]
    pub concurrency: u16,
    /// Git fetches in parallel.
    #[arg(long, default_value_t = 4)]
    pub fetch_concurrency: u16,
    /// Largest accepted webhook payload.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub webhook_max_bytes: usize,
    /// Run the Sealed Secrets unsealer (keys in --namespace) and serve its certificate at
    /// /v1/cert.pem.
    #[arg(long, env = "FERRY_SEALED_SECRETS", default_value_t = false, action = clap::ArgAction::Set)]
    pub sealed_secrets: bool,
    /// Also run the image automation controllers (ImageRepository, ImagePolicy, ImageUpdate).
    #[arg(long, env = "FERRY_IMAGE_AUTOMATION", default_value_t = false, action = clap::ArgAction::Set)]
    pub image_automation: bool,
    /// Forbid remote loading in kustomizations (remote bases, URLs in generator files,
    /// patches, replacements, ...) whatever a repository's ferry.yaml or a Release's
    /// spec.render says (Flux's flag of the same name). See docs/render.md.
    #[arg(long, env = "FERRY_NO_REMOTE_BASES")]
    pub no_remote_bases: bool,
    /// Ceiling on a renderer's run time in seconds: ferry.yaml / spec.render
    /// `limits.timeoutSeconds` may lower it, never raise it above this.
    #[arg(long, env = "FERRY_RENDER_MAX_TIMEOUT_SECONDS", default_value_t = 300)]
    pub render_max_timeout_seconds: u64,
    /// Ceiling on `limits.maxTotalBytes` (source files read and renderer output, per app).
    #[arg(long, env = "FERRY_RENDER_MAX_TOTAL_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub render_max_total_bytes: u64,
    /// Ceiling on `limits.maxFileBytes` (one source file).
    #[arg(long, env = "FERRY_RENDER_MAX_FILE_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub render_max_file_bytes: u64,
    /// Ceiling on `limits.maxChartBytes` (a chart archive, uncompressed).
    #[arg(long, env = "FERRY_RENDER_MAX_CHART_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub render_max_chart_bytes: u64,
}

impl AgentOptions {
    /// Options for tests and embedding: no leader election, an ephemeral port.
    pub fn for_kubeconfig(kubeconfig: PathBuf, cache_dir: PathBuf) -> Self {
        Self {
            kubeconfig: Some(kubeconfig),
            context: None,
            namespace: "ferry-system".to_string(),
            watch_namespaces: Vec::new(),
            default_service_account: None,
            allow_cross_namespace_refs: false,
            cache_dir,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            leader_elect: false,
            lease_name: "ferry-agent".to_string(),
            lease_duration_secs: 15,
            identity: None,
            concurrency: 8,
            fetch_concurrency: 4,
            webhook_max_bytes: 1024 * 1024,
            image_automation: false,
            sealed_secrets: false,
            no_remote_bases: false,
            render_max_timeout_seconds: 300,
            render_max_total_bytes: 256 * 1024 * 1024,
            render_max_file_bytes: 32 * 1024 * 1024,
            render_max_chart_bytes: 256 * 1024 * 1024,
        }
    }

    /// What the agent imposes on every render: remote loading, and ceilings on the `limits`
    /// a repository or a tenant's spec.render may set.
    pub fn render_policy(&self) -> ferry_engine::render::config::RenderPolicy {
        let defaults = ferry_engine::render::safety::Limits::ceilings();
        ferry_engine::render::config::RenderPolicy {
            forbid_remote_loading: self.no_remote_bases,
            ceilings: ferry_engine::render::safety::Limits {
                max_file_bytes: self.render_max_file_bytes,
                max_total_bytes: self.render_max_total_bytes,
                max_chart_bytes: self.render_max_chart_bytes,
                max_chart_entries: defaults.max_chart_entries,
                timeout_seconds: self.render_max_timeout_seconds.max(1),
            },
        }
    }

    pub fn lease_duration(&self) -> Duration {
        Duration::from_secs(self.lease_duration_secs.max(2))
    }
}
