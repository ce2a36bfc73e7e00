//! `ferry delete --app NAME`: delete every object in the app's inventory that still carries the
//! app's ownership metadata (reverse apply order), then the inventory.

use anyhow::{Context, Result};
use clap::Args;
use ferry_engine::ownership::ReleaseRef;
use ferry_engine::{cluster, pipeline};

use crate::cli::GlobalArgs;
use crate::commands::cluster_info::cluster_options;
use crate::output::{EXIT_CHANGES, EXIT_OK, OutputFormat};

pub const DELETE_HELP: &str = "\
Examples:
  ferry delete --app web -n web
  ferry delete --app web -n web --dry-run     # what would be deleted
  ferry delete --release team/web -n shop     # what an agent Release applied (it must be gone)

Objects annotated ferry.dev/prune: disabled, and objects that no longer carry the app's label
and exact owner annotation, are left in place. Unlike pruning, this explicit command also
deletes Namespaces, CRDs, PVCs and PVs without ferry.dev/prune: allow-destructive. Objects in a
namespace that is being deleted are left to it. The inventory is removed only when every deletion
succeeded, so a rerun can finish an interrupted delete.

Exit codes: 0 deleted, 1 some objects could not be deleted, 2 error (e.g. no such app).";

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The app to delete.
    #[arg(
        long,
        value_name = "NAME",
        required_unless_present = "release",
        conflicts_with = "release"
    )]
    pub app: Option<String>,
    /// Delete what an agent Release applied, by the Release's NAMESPACE/NAME (apps of Releases
    /// have their own identity, apart from push apps).
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub release: Option<String>,
    /// Namespace holding the app's inventory (default: the kubeconfig context's namespace; for
    /// --release: the Release's namespace).
    // Filled from the global -n/--namespace (`Cli::resolve_namespaces`).
    #[arg(skip)]
    pub namespace: Option<String>,
    /// Show what would be deleted; delete nothing.
    #[arg(long, value_name = "server|client", num_args = 0..=1, require_equals = true, default_value = "none", default_missing_value = "server", value_parser = crate::output::parse_dry_run)]
    pub dry_run: bool,
    /// Maximum parallel API requests.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub concurrency: usize,
}

pub async fn run(global: &GlobalArgs, args: &DeleteArgs) -> Result<u8> {
    let release = args.release.as_deref().map(parse_release).transpose()?;
    let namespace = args
        .namespace
        .clone()
        .or_else(|| release.as_ref().map(|r| r.namespace.clone()));
    let client = cluster::connect(&cluster_options(global)).await?;
    let report = pipeline::delete(
        &client,
        &pipeline::DeleteOptions {
            app: args.app.clone().unwrap_or_default(),
            release,
            namespace,
            dry_run: args.dry_run,
            concurrency: args.concurrency,
            // The operator asked for exactly this deletion.
            allow_destructive: true,
            ..Default::default()
        },
    )
    .await?;
    match global.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            crate::output::print_data(global.output, &report)?;
        }
        OutputFormat::Name => print!("{}", crate::report::object_names(&report.objects)),
        OutputFormat::Markdown => print!("{}", crate::report::apply_markdown(&report)),
        OutputFormat::Human | OutputFormat::Wide => {
            print!("{}", crate::report::apply_human(&report, true))
        }
    }
    Ok(if report.succeeded() {
        EXIT_OK
    } else {
        EXIT_CHANGES
    })
}

/// `NAMESPACE/NAME` of a Release.
pub fn parse_release(text: &str) -> Result<ReleaseRef> {
    let (namespace, name) = text
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .with_context(|| format!("--release {text:?}: expected NAMESPACE/NAME"))?;
    Ok(ReleaseRef {
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}
