//! `ferry delete --app NAME`: delete every object in the app's inventory that still carries the
//! app's ownership metadata (reverse apply order), then the inventory.

use anyhow::Result;
use clap::Args;
use ferry_engine::{cluster, pipeline};

use crate::cli::GlobalArgs;
use crate::commands::cluster_info::cluster_options;
use crate::output::{EXIT_CHANGES, EXIT_OK, OutputFormat};

pub const DELETE_HELP: &str = "\
Examples:
  ferry delete --app web -n web
  ferry delete --app web -n web --dry-run     # what would be deleted

Objects annotated ferry.dev/prune: disabled, and objects that no longer carry the app's label
and owner annotation, are left in place. The inventory is removed only when every deletion
succeeded, so a rerun can finish an interrupted delete.

Exit codes: 0 deleted, 1 some objects could not be deleted, 2 error (e.g. no such app).";

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The app to delete.
    #[arg(long, value_name = "NAME", required = true)]
    pub app: String,
    /// Namespace holding the app's inventory (default: the kubeconfig context's namespace).
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Show what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Maximum parallel API requests.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub concurrency: usize,
}

pub async fn run(global: &GlobalArgs, args: &DeleteArgs) -> Result<u8> {
    let client = cluster::connect(&cluster_options(global)).await?;
    let report = pipeline::delete_app(
        &client,
        &args.app,
        args.namespace.as_deref(),
        args.dry_run,
        args.concurrency,
    )
    .await?;
    match global.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Markdown => print!("{}", report.to_markdown()),
        OutputFormat::Human => print!("{}", report.to_human(true)),
    }
    Ok(if report.succeeded() {
        EXIT_OK
    } else {
        EXIT_CHANGES
    })
}
