//! `ferry push artifact`: pack a directory (manifests, a kustomize overlay, a chart with its
//! `ferry.yaml`) into a reproducible OCI artifact in Flux's format and push it, for an
//! OCISource (or Flux's OCIRepository) to deploy. Credentials come from the docker config
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`, as `docker login` and
//! `crane auth login` write it) or `--username` with `FERRY_REGISTRY_PASSWORD`; they are sent
//! only to the registry named in the URL (and its https token service).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ferry_engine::source::oci::{self, PushRequest};
use ferry_engine::source::registry::Registries;
use ferry_engine::source::registry::auth::{self, Credentials};

use crate::output::EXIT_OK;

pub const PUSH_ARTIFACT_HELP: &str = "Examples:
  ferry push artifact oci://ghcr.io/org/app-config:$(git rev-parse --short HEAD) --path ./deploy
  ferry push artifact oci://127.0.0.1:15000/team/app:v1.2.0 --path ./chart \\
      --source https://git.example/team/app --revision main@sha1:$(git rev-parse HEAD)

The artifact is Flux's format (config application/vnd.cncf.flux.config.v1+json, one layer
application/vnd.cncf.flux.content.v1.tar+gzip, annotations org.opencontainers.image.source and
.revision): an OCISource or Flux's OCIRepository deploys it. The same directory and annotations
give the same digest. `.git` is never packed; `.sourceignore` patterns are honoured.
--source and --revision default to the directory's git remote `origin` and
`<branch>@sha1:<commit>` when it is in a git checkout.";

#[derive(Debug, Subcommand)]
pub enum PushCommand {
    /// Pack a directory as an OCI artifact and push it to a registry.
    #[command(after_help = PUSH_ARTIFACT_HELP)]
    Artifact(PushArtifactArgs),
}

#[derive(Debug, Args)]
pub struct PushArtifactArgs {
    /// Where to push: oci://REGISTRY/PATH:TAG.
    pub url: String,
    /// The directory to pack.
    #[arg(long, default_value = ".")]
    pub path: PathBuf,
    /// The org.opencontainers.image.source annotation (default: the git remote `origin`).
    #[arg(long)]
    pub source: Option<String>,
    /// The org.opencontainers.image.revision annotation (default: `<branch>@sha1:<commit>`).
    #[arg(long)]
    pub revision: Option<String>,
    /// User name for the registry; the password comes from FERRY_REGISTRY_PASSWORD (never a
    /// flag: command lines are visible to every user of the machine).
    #[arg(long)]
    pub username: Option<String>,
    /// Speak plain HTTP to the registry (loopback registries always are).
    #[arg(long)]
    pub insecure: bool,
    /// Timeout of each registry operation, in seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

pub async fn run(command: &PushCommand) -> Result<u8> {
    match command {
        PushCommand::Artifact(args) => push_artifact(args).await,
    }
}

async fn push_artifact(args: &PushArtifactArgs) -> Result<u8> {
    let url = oci::parse_url(&args.url)?;
    if !args.path.is_dir() {
        bail!(
            "--path {} is not a directory; name the directory of manifests, overlay or chart to push",
            args.path.display()
        );
    }
    let credentials = credentials(args, &url.host)?;
    let (git_source, git_revision) = git_origin(&args.path);
    let request = PushRequest {
        url,
        dir: args.path.clone(),
        source: args.source.clone().or(git_source),
        revision: args.revision.clone().or(git_revision),
        credentials,
        insecure: args.insecure,
        timeout: Duration::from_secs(args.timeout.max(1)),
    };
    let pushed = oci::push(&Registries::default(), &request)
        .await
        .with_context(|| format!("ferry push artifact {}", args.url))?;
    eprintln!(
        "pushed {} ({} bytes compressed, layer {})",
        pushed.url, pushed.layer_size, pushed.layer_digest
    );
    println!("{}@{}", pushed.url, pushed.digest);
    Ok(EXIT_OK)
}

fn credentials(args: &PushArtifactArgs, host: &str) -> Result<Credentials> {
    if let Some(username) = &args.username {
        let password = std::env::var("FERRY_REGISTRY_PASSWORD").map_err(|_| {
            anyhow::anyhow!("--username needs the password in FERRY_REGISTRY_PASSWORD")
        })?;
        return Ok(Credentials::Basic {
            username: username.clone(),
            password,
        });
    }
    let config = docker_config_path();
    let Some(config) = config.filter(|p| p.is_file()) else {
        return Ok(Credentials::Anonymous);
    };
    let json =
        std::fs::read(&config).with_context(|| format!("cannot read {}", config.display()))?;
    match auth::from_docker_config(&config.display().to_string(), &json, host) {
        Ok(credentials) => Ok(credentials),
        // No entry for this registry: push anonymously (the registry says if it needs more).
        Err(auth::CredentialError::NoEntry { .. }) => Ok(Credentials::Anonymous),
        Err(e) => Err(e.into()),
    }
}

fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
}

/// The git remote `origin` (credentials removed) and `<branch>@sha1:<commit>` of the checkout
/// holding `dir`, Flux's annotation values; `None` outside a checkout.
fn git_origin(dir: &Path) -> (Option<String>, Option<String>) {
    if ferry_engine::source::git_workdir(
        &std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()),
    )
    .is_none()
    {
        return (None, None);
    }
    let Ok(repo) = git2::Repository::discover(dir) else {
        return (None, None);
    };
    let source = repo
        .find_remote("origin")
        .ok()
        .and_then(|r| r.url().ok().map(ferry_engine::source::git::redact_url));
    let revision = ferry_engine::source::git_revision(dir).map(|commit| {
        let branch = repo
            .head()
            .ok()
            .filter(|h| h.is_branch())
            .and_then(|h| h.shorthand().ok().map(str::to_string));
        match branch {
            Some(branch) => format!("{branch}@sha1:{commit}"),
            None => format!("sha1:{commit}"),
        }
    });
    (source, revision)
}
