//! `ferry diff PATH...`: server-side dry-run apply against the live cluster and a redacted
//! unified diff per object (Secret data and every decrypted value, see
//! `ferry_engine::report::redact`). Exit 0 = no changes, 1 = changes, 2 = error.
//! `ferry diff release NAME` is [`super::diff_release`].

use std::io::IsTerminal;

use anyhow::Result;
use clap::{Args, Subcommand};
use ferry_engine::pipeline;
use ferry_engine::progress::NoProgress;

use crate::cli::GlobalArgs;
use crate::commands::apply::{AppArgs, SourceArgs, prepare};
use crate::output::{EXIT_CHANGES, EXIT_OK, OutputFormat};

pub const DIFF_HELP: &str = "\
Examples:
  ferry diff ./deploy                      # colored diff on a terminal
  ferry diff ./deploy --prune              # also list what --prune would delete
  ferry diff ./deploy -o markdown > diff.md  # for a pull-request comment
  if ferry diff ./deploy; then echo 'nothing to deploy'; fi
  ferry diff release web -n team-a         # a Release (pull mode) against the cluster

Each object is dry-run applied by the API server (defaults, webhooks and all), then compared
with the live object; managedFields, status and bookkeeping annotations are left out, Secret
values are shown as <redacted>, and every value that came from SOPS decryption is shown as
[REDACTED] in whatever object it ended up (ConfigMaps, env values, custom resources, helm
values), in every output format and in errors. See docs/secrets.md, section Redaction.

Exit codes: 0 no changes, 1 changes found, 2 error.";

#[derive(Debug, Args)]
// `ferry diff release NAME` is a subcommand; anything else is a PATH (`./release` for a
// directory of that name).
#[command(args_conflicts_with_subcommands = true)]
pub struct DiffArgs {
    #[command(subcommand)]
    pub target: Option<DiffTarget>,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub app: AppArgs,
}

/// What else than local files `ferry diff` compares with the cluster.
#[derive(Debug, Subcommand)]
pub enum DiffTarget {
    /// A Release (pull mode), rendered here the agent's way, against the cluster.
    #[command(
        visible_alias = "releases",
        alias = "rel",
        after_help = crate::commands::diff_release::DIFF_RELEASE_HELP
    )]
    Release(crate::commands::diff_release::DiffReleaseArgs),
}

pub async fn run(global: &GlobalArgs, args: &DiffArgs) -> Result<u8> {
    if let Some(DiffTarget::Release(release)) = &args.target {
        return crate::commands::diff_release::run(global, release).await;
    }
    let mut prepared = prepare(global, &args.app, &args.source).await?;
    let manifests = std::mem::take(&mut prepared.manifests);
    // ferry.yaml `drift.ignore`: fields left to others are not shown as changes.
    let report = pipeline::diff_ignoring(
        &prepared.client,
        manifests,
        &prepared.opts,
        &prepared.opts.drift.rules,
        &NoProgress,
    )
    .await
    .map_err(|err| prepared.name_server(err))?;
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
