//! Agent configuration: command-line flags (with environment fallbacks) shared by `main` and the
//! in-process tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Default of --default-service-account: the ServiceAccount every namespace has.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// Default of --system-service-account: created by `ferry install`, bound to cluster-admin.
pub const SYSTEM_SERVICE_ACCOUNT: &str = "ferry-admin";

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
    /// ServiceAccount (in the object's own namespace) that tenant work without an explicit
    /// `serviceAccountName` runs as: applying a Release, and reading the Secrets that a Release,
    /// GitSource, Receiver or ImageRepository refers to. Its rights are what the cluster admin
    /// grants it (none, by default). Never the agent's own rights; see
    /// --insecure-agent-identity-for-tenants.
    #[arg(
        long,
        env = "FERRY_DEFAULT_SERVICE_ACCOUNT",
        value_name = "NAME",
        default_value = DEFAULT_SERVICE_ACCOUNT
    )]
    pub default_service_account: String,
    /// ServiceAccount in the agent's own namespace (--namespace) that the agent's own Releases
    /// (such as `ferry bootstrap`'s) run as when they name none. `ferry install` creates it and
    /// binds it to cluster-admin, so the cluster-admin grant is explicit and separate from the
    /// agent's identity. Only cluster admins should be able to create objects in that namespace.
    #[arg(
        long,
        env = "FERRY_SYSTEM_SERVICE_ACCOUNT",
        value_name = "NAME",
        default_value = SYSTEM_SERVICE_ACCOUNT
    )]
    pub system_service_account: String,
    /// INSECURE, the behaviour before tenant lockdown: tenant work that names no service account
    /// (Releases, Secret reads for GitSources, Receivers, image automation) runs with the agent's
    /// own identity in every namespace, so anyone who may create a Release may do whatever the
    /// agent may (with a cluster-admin agent: create ClusterRoleBindings). Only for single-team
    /// clusters where everyone who can create a Release is a cluster admin anyway.
    #[arg(long, env = "FERRY_INSECURE_AGENT_IDENTITY_FOR_TENANTS")]
    pub insecure_agent_identity_for_tenants: bool,
    /// Floor for the `interval` / `retryInterval` a tenant sets on a GitSource, Release or
    /// ImageRepository (`interval: 1s` would hammer the git server, the registry and the API
    /// server). Shorter values are raised to this.
    #[arg(long, env = "FERRY_MIN_INTERVAL", value_name = "DURATION", default_value = "10s", value_parser = ferry_api::parse_duration)]
    pub min_interval: Duration,
    /// Ceiling for the `timeout` a tenant sets on a GitSource, Release or ImageRepository
    /// (`timeout: 24h` would hold a reconcile slot for a day). Longer values are lowered to this.
    #[arg(long, env = "FERRY_MAX_TIMEOUT", value_name = "DURATION", default_value = "15m", value_parser = ferry_api::parse_duration)]
    pub max_timeout: Duration,
    /// Most Releases of one namespace reconciled at the same time, so one tenant with many slow
    /// Releases cannot take every slot of --concurrency (a Release over the limit is retried a
    /// second later without holding a slot). 0: no per-namespace limit.
    #[arg(long, env = "FERRY_MAX_CONCURRENT_PER_NAMESPACE", default_value_t = 4)]
    pub max_concurrent_per_namespace: u16,
    /// Allow references into another namespace: a Release's sourceRef and dependsOn, an
    /// ImagePolicy's imageRepositoryRef, an ImageUpdate's sourceRef (refused by default: a
    /// tenant must not use another tenant's sources; THE rule: ferry_api::referenced_namespace).
    #[arg(long, env = "FERRY_ALLOW_CROSS_NAMESPACE_REFS")]
    pub allow_cross_namespace_refs: bool,
    /// Where git checkouts are cached.
    #[arg(
        long,
        env = "FERRY_CACHE_DIR",
        default_value = "/tmp/ferry-agent-cache"
    )]
    pub cache_dir: PathBuf,
    /// Allow GitSources with `file://` URLs or local paths (refused by default: they would let
    /// a tenant read repositories, caches and other files on the agent's own disk).
    #[arg(long, env = "FERRY_ALLOW_LOCAL_GIT_SOURCES")]
    pub allow_local_git_sources: bool,
    /// Most pack bytes one git fetch may receive (`512Mi`, `2Gi`); larger fetches are aborted.
    #[arg(long, env = "FERRY_GIT_MAX_FETCH_BYTES", value_name = "SIZE", default_value = "512Mi", value_parser = parse_size)]
    pub git_max_fetch_bytes: u64,
    /// Most bytes of files in one git checkout.
    #[arg(long, env = "FERRY_GIT_MAX_CHECKOUT_BYTES", value_name = "SIZE", default_value = "1Gi", value_parser = parse_size)]
    pub git_max_checkout_bytes: u64,
    /// Most files and directories in one git checkout.
    #[arg(long, env = "FERRY_GIT_MAX_CHECKOUT_FILES", default_value_t = 100_000)]
    pub git_max_checkout_files: u64,
    /// Total size of the git cache (--cache-dir); least recently used sources are evicted past
    /// it and fetch again on their next interval. `0`: unbounded.
    #[arg(long, env = "FERRY_GIT_CACHE_MAX_BYTES", value_name = "SIZE", default_value = "10Gi", value_parser = parse_size)]
    pub git_cache_max_bytes: u64,
    /// Address for /healthz, /readyz, webhooks (/hook/...) and /v1/cert.pem.
    #[arg(long, env = "FERRY_HTTP_ADDR", default_value = "0.0.0.0:9090")]
    pub http_addr: SocketAddr,
    /// Address for /metrics, kept off the webhook port (which senders on the internet reach).
    #[arg(long, env = "FERRY_METRICS_ADDR", default_value = "0.0.0.0:9091")]
    pub metrics_addr: SocketAddr,
    /// Use a Lease so that only one replica reconciles at a time.
    #[arg(long, env = "FERRY_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "ferry-agent")]
    pub lease_name: String,
    /// Lease duration in seconds: how long a dead leader blocks the others.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_secs: u64,
    /// Split Releases over the replicas: the number of shards (1: no sharding, one leader
    /// reconciles everything). With more, every replica runs, each Release belongs to one shard
    /// (a hash of its namespace/name), each shard to one live replica (one Lease per shard,
    /// rendezvous hashing), and a dead replica's shards move after --lease-duration-secs.
    /// Use several shards per replica (e.g. 4 × replicas) so shares stay even. Docs: docs/agent.md.
    #[arg(long, env = "FERRY_SHARDS", default_value_t = 1)]
    pub shards: u32,
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
    /// Also read the discovery documents and keys of plain-http OIDC issuers named in
    /// DeployPolicies (tests only: a token's keys must come over TLS).
    #[arg(long, env = "FERRY_DEPLOY_ALLOW_HTTP_ISSUERS")]
    pub deploy_allow_http_issuers: bool,
    /// Run the Sealed Secrets unsealer (keys in --namespace) and serve its certificate at
    /// /v1/cert.pem. It unseals only in the namespaces the agent watches (--watch-namespace).
    #[arg(long, env = "FERRY_SEALED_SECRETS", default_value_t = false, action = clap::ArgAction::Set)]
    pub sealed_secrets: bool,
    /// Start the unsealer even when a bitnami sealed-secrets controller is found in the cluster
    /// (two controllers would fight over every SealedSecret's Secret and status). Only for a
    /// migration in which the bitnami controller is being removed; see docs/secrets.md.
    #[arg(long, env = "FERRY_SEALED_SECRETS_DESPITE_BITNAMI")]
    pub sealed_secrets_despite_bitnami: bool,
    /// Also run the image automation controllers (ImageRepository, ImagePolicy, ImageUpdate).
    #[arg(long, env = "FERRY_IMAGE_AUTOMATION", default_value_t = false, action = clap::ArgAction::Set)]
    pub image_automation: bool,
    /// Forbid remote loading in kustomizations (remote bases, URLs in generator files,
    /// patches, replacements, ...) whatever a repository's ferry.yaml or a Release's
    /// spec.render says (Flux's flag of the same name). See docs/render.md.
    #[arg(long, env = "FERRY_NO_REMOTE_BASES")]
    pub no_remote_bases: bool,
    /// The dashboard's external URL (e.g. `https://ferry.example.com/ui`): commit statuses link
    /// to `<URL>/apps/release/<namespace>/<name>` (the `ferry ui` page of the Release) when
    /// their Provider sets no `spec.targetURL`. http(s), no user info, query or fragment.
    #[arg(long, env = "FERRY_EXTERNAL_URL", value_name = "URL", value_parser = parse_external_url)]
    pub external_url: Option<reqwest::Url>,
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
    /// Options for tests and embedding: no leader election, an ephemeral port, and a 1s
    /// --min-interval so tests need not wait 10s for a retry. Every tenancy default (service
    /// accounts, identity, cross-namespace refs) is the same as the command line's.
    pub fn for_kubeconfig(kubeconfig: PathBuf, cache_dir: PathBuf) -> Self {
        Self {
            kubeconfig: Some(kubeconfig),
            context: None,
            namespace: "ferry-system".to_string(),
            watch_namespaces: Vec::new(),
            default_service_account: DEFAULT_SERVICE_ACCOUNT.to_string(),
            system_service_account: SYSTEM_SERVICE_ACCOUNT.to_string(),
            insecure_agent_identity_for_tenants: false,
            min_interval: Duration::from_secs(1),
            max_timeout: Duration::from_secs(15 * 60),
            max_concurrent_per_namespace: 4,
            allow_cross_namespace_refs: false,
            cache_dir,
            allow_local_git_sources: false,
            git_max_fetch_bytes: ferry_engine::source::git::DEFAULT_MAX_FETCH_BYTES,
            git_max_checkout_bytes: 1024 * 1024 * 1024,
            git_max_checkout_files: 100_000,
            git_cache_max_bytes: ferry_engine::source::git::DEFAULT_MAX_CACHE_BYTES,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            leader_elect: false,
            lease_name: "ferry-agent".to_string(),
            lease_duration_secs: 15,
            shards: 1,
            identity: None,
            concurrency: 8,
            fetch_concurrency: 4,
            webhook_max_bytes: 1024 * 1024,
            deploy_allow_http_issuers: false,
            image_automation: false,
            sealed_secrets: false,
            sealed_secrets_despite_bitnami: false,
            no_remote_bases: false,
            external_url: None,
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

    /// A tenant-set interval, raised to `--min-interval` (and never below one second).
    pub fn clamp_interval(&self, interval: Duration) -> Duration {
        interval.max(self.min_interval).max(Duration::from_secs(1))
    }

    /// A tenant-set timeout, lowered to `--max-timeout`.
    pub fn clamp_timeout(&self, timeout: Duration) -> Duration {
        timeout.min(self.max_timeout)
    }

    pub fn lease_duration(&self) -> Duration {
        Duration::from_secs(self.lease_duration_secs.max(2))
    }
}

/// --external-url: an http(s) URL with a host and no user info (it is shown on every commit
/// status), no query or fragment (paths are appended to it).
pub fn parse_external_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text.trim())
        .map_err(|e| format!("--external-url is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "--external-url has scheme {:?}; use an http(s) URL",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("--external-url has no host".to_string());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "--external-url carries user info; it is shown on commit statuses, so it must hold no credentials"
                .to_string(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(
            "--external-url has a query or fragment; give the dashboard's base URL (paths are appended)"
                .to_string(),
        );
    }
    Ok(url)
}

/// A size flag: bytes, or with a binary (`Ki`, `Mi`, `Gi`, `Ti`) or decimal (`k`, `M`, `G`, `T`)
/// suffix, like Kubernetes quantities.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 512Mi, 2Gi, 1000000)"))?;
    let factor: u64 = match unit {
        "" => 1,
        "k" | "K" => 1000,
        "M" => 1000u64.pow(2),
        "G" => 1000u64.pow(3),
        "T" => 1000u64.pow(4),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?}; use Ki, Mi, Gi, Ti, k, M, G or T"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::{parse_external_url, parse_size};

    #[test]
    fn external_urls_are_http_without_credentials() {
        let url = parse_external_url("https://ferry.example.com/ui/").expect("https");
        assert_eq!(url.as_str(), "https://ferry.example.com/ui/");
        assert!(parse_external_url("http://10.0.0.1:7077").is_ok());
        for (bad, needle) in [
            ("https://admin:s3cret@ferry.example.com", "user info"),
            ("https://token@ferry.example.com", "user info"),
            ("javascript:alert(1)", "scheme"),
            ("file:///etc/passwd", "scheme"),
            ("https://ferry.example.com/?token=x", "query"),
            ("ferry.example.com", "not a URL"),
        ] {
            let err = parse_external_url(bad).expect_err(bad);
            assert!(err.contains(needle), "{bad}: {err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512Mi"), Ok(512 << 20));
        assert_eq!(parse_size("10Gi"), Ok(10 << 30));
        assert_eq!(parse_size("2k"), Ok(2000));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("1Xi").unwrap_err().contains("unknown unit"));
        assert!(parse_size("Mi").is_err());
        assert!(
            parse_size("99999999999Ti")
                .unwrap_err()
                .contains("too large")
        );
    }
}
