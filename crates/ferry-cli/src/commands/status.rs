//! `ferry status --app NAME`: the app's inventory, last applied revision and time, and the
//! health of every object in it.

use anyhow::Result;
use clap::Args;
use ferry_engine::{cluster, pipeline};

use crate::cli::GlobalArgs;
use crate::commands::cluster_info::cluster_options;
use crate::output::{EXIT_CHANGES, EXIT_OK, OutputFormat};

pub const STATUS_HELP: &str = "\
Examples:
  ferry status --app web -n web
  ferry status --app web -n web -o json | jq '.objects[] | select(.health.state != \"current\")'
  ferry status --release team/web -n shop     # what an agent Release applied into shop

The time shown is that of the last apply that changed something (a no-change apply writes
nothing, not even the inventory).

Exit codes: 0 every object healthy, 1 some object not healthy, 2 error (e.g. no such app).";

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The app to show.
    #[arg(
        long,
        value_name = "NAME",
        required_unless_present = "release",
        conflicts_with = "release"
    )]
    pub app: Option<String>,
    /// Show what an agent Release applied, by the Release's NAMESPACE/NAME.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub release: Option<String>,
    /// Namespace holding the app's inventory (default: the kubeconfig context's namespace; for
    /// --release: the Release's namespace).
    // Filled from the global -n/--namespace (`Cli::resolve_namespaces`).
    #[arg(skip)]
    pub namespace: Option<String>,
}

pub async fn run(global: &GlobalArgs, args: &StatusArgs) -> Result<u8> {
    let release = args
        .release
        .as_deref()
        .map(crate::commands::delete::parse_release)
        .transpose()?;
    let namespace = args
        .namespace
        .clone()
        .or_else(|| release.as_ref().map(|r| r.namespace.clone()));
    let client = cluster::connect(&cluster_options(global)).await?;
    let report = pipeline::status_of(
        &client,
        args.app.as_deref().unwrap_or_default(),
        release.as_ref(),
        namespace.as_deref(),
        16,
    )
    .await?;
    match global.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            crate::output::print_data(global.output, &report)?;
        }
        OutputFormat::Name => {
            for o in &report.objects {
                println!(
                    "{}",
                    crate::output::object_name(&o.key.group, &o.key.kind, &o.key.name)
                );
            }
        }
        OutputFormat::Markdown => print!("{}", crate::report::status_markdown(&report)),
        OutputFormat::Human | OutputFormat::Wide => {
            print!("{}", crate::report::status_human(&report))
        }
    }
    Ok(if report.healthy() {
        EXIT_OK
    } else {
        EXIT_CHANGES
    })
}
