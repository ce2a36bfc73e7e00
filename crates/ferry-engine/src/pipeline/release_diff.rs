//! The diff between git and the cluster for one Release, as its user sees it: the Release is
//! rendered here the agent's way ([`crate::render::release`]) at its
//! `status.lastAppliedRevision` (or, `latest`, at its GitSource's current revision), then
//! diffed with the server-side dry run and redaction of [`super::diff_ignoring`], leaving out
//! `spec.drift.ignore` fields and objects with `ferry.dev/reconcile: disabled`. Shared by
//! `ferry diff release NAME` and the dashboard (`ferry ui`).
//!
//! Everything is read with the caller's client, which is the user's own identity (kubeconfig):
//! the GitSource, its credentials Secret and the decryption Secret only if the user may `get`
//! them (a Secret they may not read stops the diff before anything is fetched); never the
//! agent's or the tenant's identity. The repository is fetched by the engine's git client into
//! a temporary directory: network URLs only (a Release's `file://` or path URL never makes the
//! driver read the user's disk), no redirects to another host, credentials only for the
//! configured host, never the user's own git credential helpers or SSH agent.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferry_api::{GitSource, Release};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};

use super::drift::{IgnoreRule, strip_ignored_applied};
use super::{ApplyOptions, diff_ignoring};
use crate::decrypt::sops::AgeKeys;
use crate::progress::NoProgress;
use crate::render::config::RenderPolicy;
use crate::render::{self, release as release_render, safety::Redactor};
use crate::report::DiffReport;
use crate::source::git::{self, FetchRequest, GitAuth, GitReference};

/// What [`diff_release`] compared.
#[derive(Debug, Clone)]
pub struct ReleaseDiff {
    /// The commit rendered (40 hex digits).
    pub commit: String,
    /// `true`: the GitSource's current revision; `false`: the Release's last applied one.
    pub latest: bool,
    /// Per object: create, change, unchanged, prune, with the unified diff (live → git),
    /// Secret and decrypted values redacted.
    pub report: DiffReport,
}

/// Diff `release` (as read by the caller) with the cluster, as `client`'s identity. `driver`
/// names who runs it in messages (`` `ferry diff release` ``, `ferry ui`). No timeout of its
/// own besides the GitSource's fetch timeout: a driver that must answer in time bounds it.
pub async fn diff_release(
    client: &Client,
    release: &Release,
    latest: bool,
    driver: &str,
) -> Result<ReleaseDiff> {
    let namespace = release.namespace().unwrap_or_default();
    let release_name = format!("{namespace}/{}", release.name_any());
    refuse_unsupported(release, &release_name, driver)?;
    let ignore = match &release.spec.drift {
        Some(spec) => IgnoreRule::from_spec(spec)
            .map_err(|e| anyhow::anyhow!("Release {release_name}: {e}"))?,
        None => Vec::new(),
    };
    let source = read_source(client, release, &namespace).await?;
    let commit = revision_to_render(release, &source, latest, &release_name)?;
    let auth = source_auth(client, &source, driver).await?;
    // Before the fetch: a decryption Secret the user may not read stops it as well.
    let age_keys = decryption_keys(client, release, &namespace).await?;
    let cache = tempfile::tempdir().context("creating a temporary directory for the fetch")?;
    let checkout = fetch(&source, auth, &commit, cache.path(), driver).await?;

    let mut request = release_render::request_for(
        release,
        &checkout.path,
        release.spec.render.clone(),
        RenderPolicy::default(),
    )
    .with_context(|| format!("Release {release_name}"))?;
    request.age_keys = Some(age_keys);
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
    strip_ignored_applied(release, &mut manifests, &ignore);

    let opts = ApplyOptions {
        release: Some(release_render::release_ref(release)),
        namespace: Some(release_render::target_namespace(release)),
        prune: release.spec.prune.unwrap_or(true),
        revision: Some(checkout.revision.clone()),
        // The agent applies with `force`: a field someone took over would be taken back.
        force_conflicts: true,
        concurrency: 8,
        redactor,
        ..ApplyOptions::default()
    };
    let report = diff_ignoring(client, manifests, &opts, &ignore, &NoProgress).await?;
    Ok(ReleaseDiff {
        commit,
        latest,
        report,
    })
}

/// Inputs the agent reads from the cluster that this diff does not read yet: a diff without
/// them would show differences that are not there.
fn refuse_unsupported(release: &Release, name: &str, driver: &str) -> Result<()> {
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
            "Release {name} uses {what}, which {driver} does not read yet for a diff; its status.drift (ferry get release {} -n {} -o yaml) shows what the agent found",
            release.name_any(),
            release.namespace().unwrap_or_default()
        );
    }
    Ok(())
}

async fn read_source(client: &Client, release: &Release, ns: &str) -> Result<GitSource> {
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
            format!("Release {name} has not applied a revision yet; the latest revision (--latest) diffs the GitSource's current one")
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
async fn source_auth(client: &Client, source: &GitSource, driver: &str) -> Result<GitAuth> {
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
                "cannot read Secret {ns}/{name} (spec.secretRef of GitSource {ns}/{}) with your kubeconfig, so nothing was fetched; {driver} fetches with your own rights only: ask for `get` on it",
                source.name_any()
            )
        })?
        .with_context(|| format!("Secret {ns}/{name} (spec.secretRef of GitSource {ns}/{}) does not exist, so nothing was fetched", source.name_any()))?;
    let mut data = secret.data.unwrap_or_default();
    let auth = GitAuth::from_secret_keys(|k| data.get(k).map(|v| v.0.as_slice()));
    AgeKeys::wipe_secret_data(data.values_mut().map(|v| &mut v.0));
    Ok(auth)
}

/// Fetch `commit` of the GitSource's repository into `cache` (network URLs only).
async fn fetch(
    source: &GitSource,
    auth: GitAuth,
    commit: &str,
    cache: &std::path::Path,
    driver: &str,
) -> Result<git::Checkout> {
    let url = source.spec.url.clone();
    let name = format!(
        "GitSource {}/{}",
        source.namespace().unwrap_or_default(),
        source.name_any()
    );
    // Typed: a local repository is refused with the driver's reason (the git client's names
    // the agent).
    if let Err(git::GitError::LocalUrl { url, kind }) = git::check_url(&url, false) {
        bail!(
            "{name}: spec.url {url}: {kind} git URLs are refused: {driver} only fetches over the network and never reads your disk for a Release"
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
async fn decryption_keys(client: &Client, release: &Release, ns: &str) -> Result<AgeKeys> {
    let Some(decryption) = &release.spec.decryption else {
        return Ok(AgeKeys::empty());
    };
    let name = &decryption.secret_ref.name;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = secrets
        .get_opt(name)
        .await
        .with_context(|| format!("cannot read decryption Secret {ns}/{name} with your kubeconfig (spec.decryption.secretRef), so nothing was fetched"))?
        .with_context(|| format!("decryption Secret {ns}/{name} does not exist, so nothing was fetched"))?;
    let mut data = secret.data.unwrap_or_default();
    let keys = AgeKeys::from_secret_data(
        &format!("decryption Secret {ns}/{name}"),
        data.iter().map(|(k, v)| (k.as_str(), v.0.as_slice())),
    );
    AgeKeys::wipe_secret_data(data.values_mut().map(|v| &mut v.0));
    Ok(keys?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(status: serde_json::Value, spec: serde_json::Value) -> Release {
        let mut spec_json = serde_json::json!({"sourceRef": {"kind": "GitSource", "name": "repo"}});
        if let (Some(base), Some(extra)) = (spec_json.as_object_mut(), spec.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "Release",
            "metadata": {"name": "web", "namespace": "team"},
            "spec": spec_json, "status": status,
        }))
        .expect("release")
    }

    fn source(revision: Option<&str>) -> GitSource {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "GitSource",
            "metadata": {"name": "repo", "namespace": "team"},
            "spec": {"url": "https://git.example/repo.git", "interval": "1m"},
            "status": revision.map(|r| serde_json::json!({"revision": r})).unwrap_or(serde_json::json!({})),
        }))
        .expect("source")
    }

    #[test]
    fn the_commit_is_the_applied_one_or_the_sources_latest() {
        let applied = "a".repeat(40);
        let latest = "b".repeat(40);
        let r = release(
            serde_json::json!({"lastAppliedRevision": format!("main@sha1:{applied}")}),
            serde_json::json!({}),
        );
        let s = source(Some(&format!("main@sha1:{latest}")));
        assert_eq!(
            revision_to_render(&r, &s, false, "team/web").unwrap(),
            applied
        );
        assert_eq!(
            revision_to_render(&r, &s, true, "team/web").unwrap(),
            latest
        );
        let never = release(serde_json::json!({}), serde_json::json!({}));
        let err = revision_to_render(&never, &s, false, "team/web").unwrap_err();
        assert!(err.to_string().contains("has not applied"), "{err}");
        let short = release(
            serde_json::json!({"lastAppliedRevision": "main@sha1:abc"}),
            serde_json::json!({}),
        );
        let err = revision_to_render(&short, &s, false, "team/web").unwrap_err();
        assert!(err.to_string().contains("names no git commit"), "{err}");
    }

    #[test]
    fn inputs_it_cannot_read_are_refused_naming_the_driver() {
        let r = release(
            serde_json::json!({}),
            serde_json::json!({"postBuild": {"substitute": {"a": "b"}}}),
        );
        let err = refuse_unsupported(&r, "team/web", "ferry ui").unwrap_err();
        assert!(
            err.to_string().contains("spec.postBuild") && err.to_string().contains("ferry ui"),
            "{err}"
        );
        let plain = release(serde_json::json!({}), serde_json::json!({}));
        assert!(refuse_unsupported(&plain, "team/web", "ferry ui").is_ok());
    }
}
