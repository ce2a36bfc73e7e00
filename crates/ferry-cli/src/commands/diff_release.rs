//! `ferry diff release NAME`: what the cluster holds against what a Release applies, rendered
//! here the agent's way (engine `render::release`) at its `status.lastAppliedRevision` (or with
//! `--latest` at its GitSource's current revision), then diffed with the server-side dry run and
//! redaction of `ferry diff`, leaving out `spec.drift.ignore` fields and objects with
//! `ferry.dev/reconcile: disabled`. The work is the engine's `pipeline::release_diff`, shared
//! with the dashboard (`ferry ui`).
//!
//! Everything is read with the user's own rights (kubeconfig): the Release, its GitSource, the
//! GitSource's credentials Secret and the decryption Secret only if the user may `get` them;
//! never the agent's or the tenant's identity. The repository is fetched by the engine's git
//! client into a temporary directory: network URLs only (a Release's `file://` or path URL
//! never makes the CLI read the user's disk), no redirects to another host, credentials only
//! for the configured host, never the user's own git credential helpers or SSH agent.

use std::io::IsTerminal;

use anyhow::Result;
use clap::Args;
use ferry_engine::pipeline::release_diff;

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
    let diff = release_diff::diff_release(
        &found.client,
        &found.release,
        args.latest,
        "`ferry diff release`",
    )
    .await?;
    let report = diff.report;
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
