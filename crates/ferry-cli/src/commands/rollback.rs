//! `ferry rollback release NAME --to REVISION`: put a Release back on a commit it applied
//! before, and `--undo` to follow its source again.
//!
//! How (decision): a Release has no revision field of its own, and its GitSource may feed other
//! Releases, so pinning that GitSource would roll them back too. Instead rollback creates a
//! GitSource of its own for this Release, `<release>-rollback` (in the source's namespace), a copy
//! of the original (URL, credentials, timeout) with `ref.commit` set to the chosen commit, and
//! points the Release's `spec.sourceRef` at it; the original reference is kept in the
//! Release's annotation `ferry.dev/rollback-from`. `--undo` restores that reference and deletes
//! the pinned GitSource. Like Argo CD (which refuses a rollback while auto-sync is on), a
//! Release that is itself applied from git (it carries ferry's owner annotation) is refused
//! without `--force`: its next sync would put the reference back.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use ferry_api::common::{READY, RECONCILE_REQUESTED_AT, find_condition};
use ferry_api::{GitSource, Release};
use ferry_engine::ownership::ANNOTATION_OWNER;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use crate::cli::GlobalArgs;
use crate::commands::history::{FoundRelease, HistoryKind, find_release};
use crate::output::{DryRun, EXIT_ERROR, EXIT_OK, EXIT_TIMEOUT};

pub const ROLLBACK_HELP: &str = "\
Examples:
  ferry history release web -n team-a                          # the revisions it applied
  ferry rollback release web -n team-a --to 3f2a9c1            # a commit from that list
  ferry rollback release web -n team-a --to main@sha1:3f2a9c1… --dry-run=client
  ferry rollback release web -n team-a --undo                  # follow the source again

How: the Release is pointed at a GitSource of its own, <release>-rollback, a copy of its source
pinned to the commit (ref.commit); other Releases on the same source are not affected. The
original sourceRef is kept in the annotation ferry.dev/rollback-from, and --undo restores it.

Refused unless --force: a revision that is not in the Release's history (--force needs a full
40-character commit SHA then), and a Release that is applied from git itself (its next sync
would undo the rollback; change the revision in git instead, or suspend the Release that
applies it).

Exit codes: 0 rolled back (and Ready at that commit, unless --wait=false), 2 refused or
failed, 3 timed out waiting.";

/// Annotation on a rolled-back Release: its original `sourceRef` as `KIND/NAMESPACE/NAME`.
pub const ANNOTATION_ROLLBACK_FROM: &str = "ferry.dev/rollback-from";
/// Annotation on the pinned GitSource: the Release it serves, `NAMESPACE/NAME`.
pub const ANNOTATION_ROLLBACK_OF: &str = "ferry.dev/rollback-of";

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The kind: release.
    #[arg(value_enum)]
    pub kind: HistoryKind,
    /// The Release.
    #[arg(value_name = "NAME", add = crate::completion::release_names())]
    pub name: String,
    // Filled from the global -n/--namespace (`Cli::resolve_namespaces`).
    #[arg(skip)]
    pub namespace: Option<String>,
    /// The revision to go back to: as `ferry history` prints it (`main@sha1:…`), its commit
    /// SHA, or a unique prefix of at least 7 characters.
    #[arg(
        long,
        value_name = "REVISION",
        required_unless_present = "undo",
        conflicts_with = "undo"
    )]
    pub to: Option<String>,
    /// Follow the original source again and delete the pinned GitSource.
    #[arg(long)]
    pub undo: bool,
    /// Roll back to a commit not in the history (a full SHA), or a Release applied from git.
    #[arg(long)]
    pub force: bool,
    /// Show what would change: `client` prints it, `server` also has the API server validate it.
    #[arg(long, value_name = "server|client", num_args = 0..=1, require_equals = true, default_value = "none", default_missing_value = "server", value_parser = crate::output::parse_dry_run_mode)]
    pub dry_run: DryRun,
    /// Wait until the agent applied the commit and the Release is Ready.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub wait: bool,
    /// How long to wait.
    #[arg(long, default_value = "3m", value_parser = ferry_api::parse_duration)]
    pub timeout: Duration,
}

/// The commit SHA of a revision string (`main@sha1:<hex>`, `sha1:<hex>` or bare hex).
pub fn commit_of(revision: &str) -> &str {
    revision
        .rsplit_once("sha1:")
        .map_or(revision, |(_, sha)| sha)
}

fn is_full_sha(text: &str) -> bool {
    text.len() == 40 && text.chars().all(|c| c.is_ascii_hexdigit())
}

/// The commit `wanted` names among the Release's history revisions: exact revision, full SHA,
/// or a unique prefix of at least 7 hex characters.
pub fn resolve_in_history<'a>(
    wanted: &str,
    history: impl IntoIterator<Item = &'a str>,
) -> Result<Option<String>, String> {
    let wanted_sha = commit_of(wanted).to_ascii_lowercase();
    if wanted_sha.len() < 7 || !wanted_sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "--to {wanted:?}: expected a revision as `ferry history` prints it, a commit SHA or at least 7 of its hex characters"
        ));
    }
    let mut matches: Vec<String> = history
        .into_iter()
        .map(|r| commit_of(r).to_ascii_lowercase())
        .filter(|sha| sha.starts_with(&wanted_sha))
        .collect();
    matches.sort();
    matches.dedup();
    match matches.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        several => Err(format!(
            "--to {wanted:?} matches {} commits in the history ({}): give more characters",
            several.len(),
            several.join(", ")
        )),
    }
}

pub async fn run(global: &GlobalArgs, args: &RollbackArgs) -> Result<u8> {
    let found = find_release(global, args.namespace.as_deref(), &args.name).await?;
    if let Some(owner) = found
        .release
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_OWNER))
        && !args.force
    {
        bail!(
            "Release {}/{} is applied from git by {owner}: its next sync would undo the rollback. Change the revision in git (or suspend that Release first), or pass --force",
            found.namespace,
            args.name
        );
    }
    if args.undo {
        return undo(&found, args).await;
    }
    let wanted = args.to.as_deref().unwrap_or_default();
    let history = found
        .release
        .status
        .as_ref()
        .map(|s| {
            s.history
                .iter()
                .map(|r| r.revision.clone())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let commit = match resolve_in_history(wanted, history.iter().map(String::as_str))
        .map_err(anyhow::Error::msg)?
    {
        Some(commit) => commit,
        None if args.force && is_full_sha(commit_of(wanted)) => {
            commit_of(wanted).to_ascii_lowercase()
        }
        None if args.force => bail!(
            "--to {wanted:?} is not in Release {}/{}'s history; with --force give the full 40-character commit SHA",
            found.namespace,
            args.name
        ),
        None => bail!(
            "--to {wanted:?} is not in Release {}/{}'s history ({}); `ferry history release {}` lists them. Pass --force with a full commit SHA to pin a commit it never applied",
            found.namespace,
            args.name,
            if history.is_empty() {
                "it has none yet".to_string()
            } else {
                history.join(", ")
            },
            args.name
        ),
    };
    let (original, source) = original_source(&found).await?;
    let pinned_name = pinned_source_name(&found.namespace, &args.name, &original.namespace);
    let sources: Api<GitSource> = Api::namespaced(found.client.clone(), &original.namespace);
    if let Some(existing) = sources
        .get_opt(&pinned_name)
        .await
        .with_context(|| format!("cannot read GitSource {}/{pinned_name}", original.namespace))?
    {
        let ours = existing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_ROLLBACK_OF))
            == Some(&format!("{}/{}", found.namespace, args.name));
        if !ours {
            bail!(
                "GitSource {}/{pinned_name} exists and was not made by `ferry rollback` for Release {}/{}: rename or delete it first",
                original.namespace,
                found.namespace,
                args.name
            );
        }
    }
    let mut spec = source.spec.clone();
    spec.git_ref = Some(ferry_api::GitRef {
        commit: Some(commit.clone()),
        ..Default::default()
    });
    spec.suspend = false;
    let pinned = json!({
        "apiVersion": format!("{}/{}", ferry_api::GROUP, ferry_api::VERSION),
        "kind": "GitSource",
        "metadata": {
            "name": pinned_name,
            "namespace": original.namespace,
            "labels": {"app.kubernetes.io/managed-by": "ferry-rollback"},
            "annotations": {ANNOTATION_ROLLBACK_OF: format!("{}/{}", found.namespace, args.name)},
        },
        "spec": spec,
    });
    let release_patch = json!({
        "metadata": {"annotations": {
            ANNOTATION_ROLLBACK_FROM: original.to_string(),
            RECONCILE_REQUESTED_AT: k8s_openapi::jiff::Timestamp::now().to_string(),
        }},
        "spec": {"sourceRef": {
            "kind": "GitSource",
            "name": pinned_name,
            "namespace": (original.namespace != found.namespace).then_some(&original.namespace),
        }},
    });
    let what = format!(
        "Release {}/{} → GitSource {}/{pinned_name} pinned to commit {commit} (from {original})",
        found.namespace, args.name, original.namespace
    );
    if args.dry_run == DryRun::Client {
        println!("would roll back {what}");
        return Ok(EXIT_OK);
    }
    let dry = args.dry_run == DryRun::Server;
    let apply = PatchParams {
        dry_run: dry,
        field_manager: Some("ferry-rollback".to_string()),
        force: true,
        ..Default::default()
    };
    sources
        .patch(&pinned_name, &apply, &Patch::Apply(&pinned))
        .await
        .with_context(|| {
            format!(
                "cannot write GitSource {}/{pinned_name}",
                original.namespace
            )
        })?;
    found
        .api
        .patch(
            &args.name,
            &PatchParams {
                dry_run: dry,
                ..Default::default()
            },
            &Patch::Merge(&release_patch),
        )
        .await
        .with_context(|| format!("cannot update Release {}/{}", found.namespace, args.name))?;
    if dry {
        println!("would roll back {what} (validated by the API server)");
        return Ok(EXIT_OK);
    }
    println!("rolled back {what}");
    if !args.wait {
        return Ok(EXIT_OK);
    }
    wait_for_commit(
        &found.api,
        &found.namespace,
        &args.name,
        Some(&commit),
        args.timeout,
    )
    .await
}

/// A `sourceRef` spelled out.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SourceKey {
    kind: String,
    namespace: String,
    name: String,
}

impl std::fmt::Display for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

impl SourceKey {
    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.splitn(3, '/');
        let (kind, namespace, name) = (parts.next()?, parts.next()?, parts.next()?);
        (!kind.is_empty() && !namespace.is_empty() && !name.is_empty() && !name.contains('/')).then(
            || Self {
                kind: kind.to_string(),
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
        )
    }
}

/// The source the Release follows when not rolled back, and that GitSource.
async fn original_source(found: &FoundRelease) -> Result<(SourceKey, GitSource)> {
    let rolled_back_from = found
        .release
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_ROLLBACK_FROM));
    let key = match rolled_back_from {
        Some(text) => SourceKey::parse(text).with_context(|| {
            format!(
                "Release {}/{}: annotation {ANNOTATION_ROLLBACK_FROM}={text:?} is not KIND/NAMESPACE/NAME; fix or remove it",
                found.namespace,
                found.release.metadata.name.as_deref().unwrap_or_default()
            )
        })?,
        None => {
            let r = &found.release.spec.source_ref;
            SourceKey {
                kind: r.kind.clone(),
                namespace: r.namespace.clone().unwrap_or_else(|| found.namespace.clone()),
                name: r.name.clone(),
            }
        }
    };
    if key.kind != "GitSource" {
        bail!(
            "Release {}/{} reads from a {}: rollback pins GitSource commits only; set the {}'s revision instead",
            found.namespace,
            found.release.metadata.name.as_deref().unwrap_or_default(),
            key.kind,
            key.kind
        );
    }
    let api: Api<GitSource> = Api::namespaced(found.client.clone(), &key.namespace);
    let source = api
        .get_opt(&key.name)
        .await
        .with_context(|| format!("cannot read GitSource {}/{}", key.namespace, key.name))?
        .with_context(|| {
            format!(
                "GitSource {}/{} (the Release's source) not found: the pinned copy needs its URL and credentials",
                key.namespace, key.name
            )
        })?;
    Ok((key, source))
}

/// `<release>-rollback`, prefixed with the Release's namespace when the source lives elsewhere
/// (two namespaces' Releases of one shared source must not share a pin).
fn pinned_source_name(release_ns: &str, release: &str, source_ns: &str) -> String {
    if release_ns == source_ns {
        format!("{release}-rollback")
    } else {
        format!("{release_ns}-{release}-rollback")
    }
}

async fn undo(found: &FoundRelease, args: &RollbackArgs) -> Result<u8> {
    let Some(from) = found
        .release
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_ROLLBACK_FROM))
    else {
        bail!(
            "Release {}/{} is not rolled back (no {ANNOTATION_ROLLBACK_FROM} annotation): nothing to undo",
            found.namespace,
            args.name
        );
    };
    let (original, _) = original_source(found).await?;
    let pinned = found.release.spec.source_ref.clone();
    let pinned_ns = pinned
        .namespace
        .clone()
        .unwrap_or_else(|| found.namespace.clone());
    let patch = json!({
        "metadata": {"annotations": {
            ANNOTATION_ROLLBACK_FROM: null,
            RECONCILE_REQUESTED_AT: k8s_openapi::jiff::Timestamp::now().to_string(),
        }},
        "spec": {"sourceRef": {
            "kind": original.kind,
            "name": original.name,
            "namespace": (original.namespace != found.namespace).then_some(&original.namespace),
        }},
    });
    if args.dry_run == DryRun::Client {
        println!(
            "would point Release {}/{} back at {from} and delete GitSource {pinned_ns}/{}",
            found.namespace, args.name, pinned.name
        );
        return Ok(EXIT_OK);
    }
    let dry = args.dry_run == DryRun::Server;
    found
        .api
        .patch(
            &args.name,
            &PatchParams {
                dry_run: dry,
                ..Default::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .with_context(|| format!("cannot update Release {}/{}", found.namespace, args.name))?;
    // Delete the pin only when it is the one rollback made for this Release.
    let sources: Api<GitSource> = Api::namespaced(found.client.clone(), &pinned_ns);
    if let Some(source) = sources.get_opt(&pinned.name).await?
        && source
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_ROLLBACK_OF))
            == Some(&format!("{}/{}", found.namespace, args.name))
    {
        let params = DeleteParams {
            dry_run: dry,
            ..Default::default()
        };
        sources
            .delete(&pinned.name, &params)
            .await
            .with_context(|| format!("cannot delete GitSource {pinned_ns}/{}", pinned.name))?;
    }
    let verb = if dry { "would point" } else { "pointed" };
    println!(
        "{verb} Release {}/{} back at {from}",
        found.namespace, args.name
    );
    if dry || !args.wait {
        return Ok(EXIT_OK);
    }
    wait_for_commit(&found.api, &found.namespace, &args.name, None, args.timeout).await
}

/// Wait until the Release is Ready at `commit` (any commit for `None`, after the sync the
/// rollback requested).
async fn wait_for_commit(
    api: &Api<Release>,
    namespace: &str,
    name: &str,
    commit: Option<&str>,
    timeout: Duration,
) -> Result<u8> {
    let deadline = Instant::now() + timeout;
    let requested = api
        .get(name)
        .await?
        .metadata
        .annotations
        .and_then(|a| a.get(RECONCILE_REQUESTED_AT).cloned());
    loop {
        let release = api.get(name).await?;
        let status = release.status.clone().unwrap_or_default();
        let handled = status.last_handled_reconcile_at.is_some()
            && status.last_handled_reconcile_at == requested;
        let ready = find_condition(&status.conditions, READY);
        let at_commit = commit.is_none_or(|c| {
            status
                .last_applied_revision
                .as_deref()
                .is_some_and(|r| commit_of(r) == c)
        });
        if handled && at_commit && ready.is_some_and(|c| c.status == "True") {
            println!(
                "ready at {}",
                status.last_applied_revision.as_deref().unwrap_or_default()
            );
            return Ok(EXIT_OK);
        }
        if handled && ready.is_some_and(|c| c.status == "False") {
            eprintln!(
                "not ready: {}",
                ready.map(|c| c.message.as_str()).unwrap_or_default()
            );
            return Ok(EXIT_ERROR);
        }
        if Instant::now() >= deadline {
            eprintln!(
                "timed out after {timeout:?} waiting for Release {namespace}/{name} to be Ready{}; is ferry-agent running? (`ferry get releases -n {namespace}`, `ferry logs --for release/{name} -n {namespace}`)",
                commit.map(|c| format!(" at {c}")).unwrap_or_default()
            );
            return Ok(EXIT_TIMEOUT);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3f2a9c1d0e4b5a6978877665544332211ffeedcc";
    const B: &str = "3f2a9c1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn revisions_resolve_by_spelling_sha_or_unique_prefix() {
        let history = [format!("main@sha1:{A}"), format!("main@sha1:{B}")];
        let history = || history.iter().map(String::as_str);
        assert_eq!(
            resolve_in_history(&format!("main@sha1:{A}"), history()),
            Ok(Some(A.to_string()))
        );
        assert_eq!(resolve_in_history(A, history()), Ok(Some(A.to_string())));
        assert_eq!(
            resolve_in_history("3f2a9c1d", history()),
            Ok(Some(A.to_string()))
        );
        let ambiguous = resolve_in_history("3f2a9c1", history()).expect_err("two match");
        assert!(ambiguous.contains("matches 2 commits"), "{ambiguous}");
        assert_eq!(resolve_in_history("deadbee", history()), Ok(None));
        assert!(resolve_in_history("abc", history()).is_err(), "too short");
        assert!(
            resolve_in_history("main; rm -rf /", history()).is_err(),
            "not hex"
        );
    }

    #[test]
    fn the_original_source_is_read_back_from_its_annotation() {
        assert_eq!(
            SourceKey::parse("GitSource/team-a/apps"),
            Some(SourceKey {
                kind: "GitSource".into(),
                namespace: "team-a".into(),
                name: "apps".into()
            })
        );
        assert_eq!(SourceKey::parse("GitSource/team-a"), None);
        assert_eq!(SourceKey::parse("GitSource/team-a/a/b"), None);
        assert_eq!(pinned_source_name("a", "web", "a"), "web-rollback");
        assert_eq!(pinned_source_name("a", "web", "shared"), "a-web-rollback");
    }
}
