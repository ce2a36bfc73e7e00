//! Command-line definition (clap derive). Kept separate so completions can be generated from it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::output::OutputFormat;

const ABOUT: &str =
    "Deliver what is declared in git to a Kubernetes cluster: push (CI) or pull (agent).";

const AFTER_HELP: &str = "\
Examples:
  ferry cluster-info                         # which cluster, which identity, is SSA available
  ferry apply ./deploy --app web --prune     # apply a directory as app \"web\", delete what left it
  ferry diff ./deploy                        # what would change (exit 1 if anything)
  ferry completions bash > /etc/bash_completion.d/ferry

Exit codes:
  0  success (diff: no changes)
  1  diff: changes found; other commands: some objects failed
  2  error (bad input, cluster unreachable, refused for safety)
  3  timed out waiting for health";

#[derive(Debug, Parser)]
#[command(name = "ferry", version, about = ABOUT, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Path to a kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current-context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_enum,
        default_value_t
    )]
    pub output: OutputFormat,
    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
// Each subcommand's arguments are built only when it is the one run (~0.3 ms at every start).
#[command(defer = true)]
pub enum Command {
    /// Show the cluster's version, the identity it sees, and whether server-side apply works.
    ClusterInfo,
    /// Server-side apply files, directories or stdin as one app; optionally prune and wait.
    #[command(after_help = crate::commands::apply::APPLY_HELP)]
    Apply(crate::commands::apply::ApplyArgs),
    /// Show what apply would change: server-side dry run and a diff per object.
    #[command(after_help = crate::commands::diff::DIFF_HELP)]
    Diff(crate::commands::diff::DiffArgs),
    /// Print the final manifests apply would send (no cluster needed).
    #[command(after_help = crate::commands::render::RENDER_HELP)]
    Render(crate::commands::render::RenderArgs),
    /// Delete everything an app applied, then its inventory.
    #[command(after_help = crate::commands::delete::DELETE_HELP)]
    Delete(crate::commands::delete::DeleteArgs),
    /// Show an app's inventory, last revision and the health of each object.
    #[command(after_help = crate::commands::status::STATUS_HELP)]
    Status(crate::commands::status::StatusArgs),
    /// Rewrite image references in a checkout (setter markers, kustomization images).
    SetImage(crate::commands::set_image::SetImageArgs),
    /// Encrypt, decrypt or edit SOPS files with age keys (no sops binary needed).
    #[command(subcommand)]
    Secrets(crate::commands::secrets::SecretsCommand),
    /// Seal a Secret into a kubeseal-compatible SealedSecret.
    Seal(crate::commands::seal::SealArgs),
    /// Ask the agent to reconcile a Release now (pull mode).
    Sync(crate::commands::sync::SyncArgs),
    /// Stop the agent from applying or pruning a Release.
    Suspend(crate::commands::suspend::SuspendArgs),
    /// Resume a suspended Release and sync it at once.
    Resume(crate::commands::resume::ResumeArgs),
    /// Install the agent: CRDs, namespace, RBAC, Deployment (or print them with --export).
    #[command(after_help = crate::commands::install::INSTALL_HELP)]
    Install(crate::commands::install::InstallArgs),
    /// Check the cluster, the CRDs, the agent and its RBAC (or, with --pre, that you may install).
    #[command(after_help = crate::commands::check::CHECK_HELP)]
    Check(crate::commands::check::CheckArgs),
    /// Remove the agent installed by `ferry install` (refuses while its Releases exist).
    #[command(after_help = crate::commands::uninstall::UNINSTALL_HELP)]
    Uninstall(crate::commands::uninstall::UninstallArgs),
    /// Make the agent manage itself from a git repository.
    Bootstrap(crate::commands::bootstrap::BootstrapArgs),
    /// Print shell completions for bash, zsh, fish, elvish or powershell.
    #[command(after_help = "Example:\n  ferry completions zsh > \"${fpath[1]}/_ferry\"")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}
