//! `ferry diff release NAME`: what the cluster holds against what a Release applies, rendered
//! here the agent's way (engine `render::release`) at its `status.lastAppliedRevision` (or with
//! `--latest` at its GitSource's current revision), then diffed with the server-side dry run and
//! redaction of `ferry diff`, leaving out `spec.drift.ignore` fields and objects with
//! `ferry.dev/reconcile: disabled`.
//!
//! Everything is read with the user's own rights (kubeconfig): the Release, its GitSource, the
//! GitSource's credentials Secret and the decryption Secret only if the user may `get` them;
//! never the agent's or the tenant's identity. The repository is fetched by the engine's git
//! client into a temporary directory: network URLs only (a Release's `file://` or path URL
//! never makes the CLI read the user's disk), no redirects to another host, credentials only
//! for the configured host, never the user's own git credential helpers or SSH agent.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use ferry_api::{GitSource, Release};
use ferry_engine::decrypt::sops::AgeKeys;
use ferry_engine::pipeline::drift::{IgnoreRule, strip_ignored_applied};
use ferry_engine::pipeline::{self, ApplyOptions};
use ferry_engine::progress::NoProgress;
use ferry_engine::render::config::RenderPolicy;
use ferry_engine::render::{self, release as release_render, safety::Redactor};
use ferry_engine::source::git::{self, FetchRequest, GitAuth, GitReference};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use crate::cli::GlobalArgs;
use crate::commands::history::find_release;
use crate::output::{EXIT_CHANGES, EXIT_OK, OutputFormat};

pub const DIFF_RELEASE_HELP: &str = "\
Examples:
  ferry diff release web -n team-a             # hand edits since the last apply
  ferry diff release web -n team-a --latest    # what the next sync would change
  ferry diff release web -n team-a -o markdown > drift.md

The Release is rendered here as the agent renders it (spec.path, spec.render, targetNamespace,
SOPS with spec.decryption's Secret) at status.lastAppliedRevision, or with --latest at the
GitSource's current revision. Each object is dry-run applied by the API server and compared
with the live object as `ferry diff` does (Secret values and decrypted values redacted);
spec.drift.ignore fields and objects annotated ferry.dev/reconcile: disabled are left out.

Everything is read with your kubeconfig's rights: the GitSource's credentials Secret is used
only if you may read it (else the fetch is anonymous and the server may refuse it), and your own
git credentials are never used. Only network git URLs are fetched, never file:// or paths.
Releases with valuesFrom, postBuild or an OCISource are not supported yet.

Exit codes: 0 no changes, 1 changes found, 2 error.";

#[derive(Debug, Args)]
pub struct DiffReleaseArgs {
    /// The Release.
    #[arg(value_name = "NAME", add = crate::completion::release_names())]
    pub name: String,
    // Filled from the global -n/--namespace (`Cli::resolve_namespaces`).
    #[arg(skip)]
    pub namespace: Option<String>,
    /// Render the GitSource's current revision (what the next sync applies) instead of the
    /// Release's last applied one.
    #[arg(long)]
    pub latest: bool,
}

pub async fn run(global: &GlobalArgs, args: &DiffReleaseArgs) -> Result<u8> {
    let found = find_release(global, args.namespace.as_deref(), &args.name).await?;
    let (client, release) = (found.client, found.release);
    let release_name = format!("{}/{}", found.namespace, release.name_any());
    refuse_unsupported(&release, &release_name)?;
    let ignore = match &release.spec.drift {
        Some(spec) => IgnoreRule::from_spec(spec)
            .map_err(|e| anyhow::anyhow!("Release {release_name}: {e}"))?,
        None => Vec::new(),
    };
    let source = read_source(&client, &release, &found.namespace).await?;
    let revision = revision_to_render(&release, &source, args.latest, &release_name)?;
    let auth = source_auth(&client, &source).await?;
    let cache = tempfile::tempdir().context("creating a temporary directory for the fetch")?;
    let checkout = fetch(&source, auth, &revision, cache.path()).await?;

    let mut request = release_render::request_for(
        &release,
        &checkout.path,
        release.spec.render.clone(),
        RenderPolicy::default(),
    )
    .with_context(|| format!("Release {release_name}"))?;
    request.age_keys = Some(decryption_keys(&client, &release, &found.namespace).await?);
    let (mut manifests, redactor) = tokio::task::spawn_blocking(move || {
        let mut redactor = Redactor::new();
        render::render_collecting(&request, &mut redactor).map(|m| (m, redactor))
    })
    .await
    .context("render task failed")?
    .with_context(|| {
        format!(
            "rendering Release {release_name} at {} of {}",
            checkout.revision,
            git::redact_url(&source.spec.url)
        )
    })?;
    strip_ignored_applied(&release, &mut manifests, &ignore);

    let opts = ApplyOptions {
        release: Some(release_render::release_ref(&release)),
        namespace: Some(release_render::target_namespace(&release)),
        prune: release.spec.prune.unwrap_or(true),
        revision: Some(checkout.revision.clone()),
        // The agent applies with `force`: a field someone took over would be taken back.
        force_conflicts: true,
        concurrency: 8,
        redactor,
        ..ApplyOptions::default()
    };
    let report = pipeline::diff_ignoring(&client, manifests, &opts, &ignore, &NoProgress).await?;
    match global.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            crate::output::print_data(global.output, &report)?;
        }
        OutputFormat::Name => print!("{}", crate::report::object_names(&report.objects)),
        OutputFormat::Markdown => print!("{}", crate::report::diff_markdown(&report)),
        OutputFormat::Human | OutputFormat::Wide => print!(
            "{}",
            crate::report::diff_human(
                &report,
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            )
        ),
    }
    Ok(if report.has_changes() {
        EXIT_CHANGES
    } else {
        EXIT_OK
    })
}

/// Inputs the agent reads from the cluster that this command does not read yet: a diff without
/// them would show differences that are not there.
fn refuse_unsupported(release: &Release, name: &str) -> Result<()> {
    let spec = &release.spec;
    let unsupported = if spec.source_ref.kind != "GitSource" {
        Some(format!("spec.sourceRef.kind {}", spec.source_ref.kind))
    } else if !spec.values_from.is_empty() {
        Some("spec.valuesFrom".to_string())
    } else if spec.post_build.is_some() {
        Some("spec.postBuild".to_string())
    } else {
        None
    };
    if let Some(what) = unsupported {
        bail!(
            "Release {name} uses {what}, which `ferry diff release` does not read yet; its status.drift (ferry get release {} -n {} -o yaml) shows what the agent found",
            release.name_any(),
            release.namespace().unwrap_or_default()
        );
    }
    Ok(())
}

async fn read_source(client: &kube::Client, release: &Release, ns: &str) -> Result<GitSource> {
    let reference = &release.spec.source_ref;
    let source_ns = reference.namespace.as_deref().unwrap_or(ns);
    let api: Api<GitSource> = Api::namespaced(client.clone(), source_ns);
    api.get_opt(&reference.name)
        .await
        .with_context(|| format!("cannot read GitSource {source_ns}/{}", reference.name))?
        .with_context(|| {
            format!(
                "GitSource {source_ns}/{} (spec.sourceRef of Release {ns}/{}) not found",
                reference.name,
                release.name_any()
            )
        })
}

/// The commit to render: the one the Release last applied, or the GitSource's current one.
fn revision_to_render(
    release: &Release,
    source: &GitSource,
    latest: bool,
    name: &str,
) -> Result<String> {
    let status = release.status.clone().unwrap_or_default();
    let revision = if latest {
        source
            .status
            .as_ref()
            .and_then(|s| s.revision.clone())
            .with_context(|| {
                format!(
                    "GitSource {}/{} has not fetched a revision yet",
                    source.namespace().unwrap_or_default(),
                    source.name_any()
                )
            })?
    } else {
        status.last_applied_revision.with_context(|| {
            format!("Release {name} has not applied a revision yet; --latest diffs the GitSource's current one")
        })?
    };
    // `main@sha1:<hex>` or `sha1:<hex>`: render exactly that commit.
    let commit = revision
        .rsplit_once("sha1:")
        .map(|(_, hex)| hex)
        .filter(|hex| hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .with_context(|| format!("revision {revision:?} of Release {name} names no git commit"))?;
    Ok(commit.to_string())
}

/// The GitSource's credentials, read with the user's rights; none without a `secretRef`.
async fn source_auth(client: &kube::Client, source: &GitSource) -> Result<GitAuth> {
    let Some(secret_ref) = &source.spec.secret_ref else {
        return Ok(GitAuth::default());
    };
    let ns = source.namespace().unwrap_or_default();
    let name = &secret_ref.name;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = secrets
        .get_opt(name)
        .await
        .with_context(|| {
            format!(
                "cannot read Secret {ns}/{name} (spec.secretRef of GitSource {ns}/{}) with your kubeconfig; `ferry diff release` fetches with your own rights only: ask for `get` on it",
                source.name_any()
            )
        })?
        .with_context(|| format!("Secret {ns}/{name} (spec.secretRef of GitSource {ns}/{}) does not exist", source.name_any()))?;
    let mut data = secret.data.unwrap_or_default();
    let get = |k: &str| {
        data.get(k).map(|v| {
            String::from_utf8_lossy(&v.0)
                .trim_end_matches('\n')
                .to_string()
        })
    };
    let auth = GitAuth {
        username: get("username"),
        password: get("password"),
        bearer_token: get("bearerToken"),
        ssh_identity: get("identity"),
        known_hosts: get("known_hosts"),
    };
    AgeKeys::wipe_secret_data(data.values_mut().map(|v| &mut v.0));
    Ok(auth)
}

/// Fetch `commit` of the GitSource's repository into `cache` (network URLs only).
async fn fetch(
    source: &GitSource,
    auth: GitAuth,
    commit: &str,
    cache: &std::path::Path,
) -> Result<git::Checkout> {
    let url = source.spec.url.clone();
    let name = format!(
        "GitSource {}/{}",
        source.namespace().unwrap_or_default(),
        source.name_any()
    );
    // Typed: a local repository is refused with the CLI's reason (the engine's names the agent).
    if let Err(git::GitError::LocalUrl { url, kind }) = git::check_url(&url, false) {
        bail!(
            "{name}: spec.url {url}: {kind} git URLs are refused: `ferry diff release` only fetches over the network and never reads your disk for a Release"
        );
    }
    let timeout = match source.spec.timeout.as_deref() {
        Some(t) => ferry_api::duration::parse_duration(t).unwrap_or(Duration::from_secs(60)),
        None => Duration::from_secs(60),
    };
    let request = FetchRequest {
        auth,
        timeout,
        // Never the user's disk, whatever URL the Release's author wrote.
        allow_local: false,
        ..FetchRequest::new(
            "ferry-diff-release",
            &url,
            GitReference::Commit(commit.to_string()),
        )
    };
    let cache = cache.to_path_buf();
    let fetched = tokio::time::timeout(
        timeout + Duration::from_secs(5),
        tokio::task::spawn_blocking(move || git::fetch(&cache, &request)),
    )
    .await
    .with_context(|| format!("fetch of {} timed out", git::redact_url(&url)))?
    .context("fetch task failed")?;
    fetched.with_context(|| name)
}

/// The age keys of `spec.decryption`'s Secret, read with the user's rights; without
/// `spec.decryption` none at all (never the user's own SOPS keys: the agent would not have them).
async fn decryption_keys(client: &kube::Client, release: &Release, ns: &str) -> Result<AgeKeys> {
    let Some(decryption) = &release.spec.decryption else {
        return Ok(AgeKeys::empty());
    };
    let name = &decryption.secret_ref.name;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = secrets
        .get_opt(name)
        .await
        .with_context(|| format!("cannot read decryption Secret {ns}/{name} with your kubeconfig (spec.decryption.secretRef)"))?
        .with_context(|| format!("decryption Secret {ns}/{name} does not exist"))?;
    let mut data = secret.data.unwrap_or_default();
    let keys = AgeKeys::from_secret_data(
        &format!("decryption Secret {ns}/{name}"),
        data.iter().map(|(k, v)| (k.as_str(), v.0.as_slice())),
    );
    AgeKeys::wipe_secret_data(data.values_mut().map(|v| &mut v.0));
    Ok(keys?)
}
