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
    #[arg(long, global = true, value_name = "NAME", add = crate::completion::contexts())]
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
    #[command(
        after_help = "Examples:\n  ferry cluster-info\n  ferry cluster-info --context staging -o json"
    )]
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
    #[command(
        subcommand,
        after_help = "Examples:\n  ferry secrets encrypt --age age1… secret.yaml > secret.enc.yaml\n  ferry secrets decrypt secret.enc.yaml\n  ferry secrets edit secret.enc.yaml"
    )]
    Secrets(crate::commands::secrets::SecretsCommand),
    /// Seal a Secret into a kubeseal-compatible SealedSecret.
    Seal(crate::commands::seal::SealArgs),
    /// Push a directory to a registry as an OCI artifact (Flux's format), for an OCISource.
    #[command(
        subcommand,
        after_help = "Example:\n  ferry push artifact oci://registry.example/fleet/apps:v1 --path ./deploy"
    )]
    Push(crate::commands::push_artifact::PushCommand),
    /// Ask the agent to reconcile a Release now (pull mode).
    #[command(
        after_help = "Examples:\n  ferry sync web -n team-a                  # reconcile now, wait and report the result\n  ferry sync web -n team-a --with-source    # fetch its GitSource first\n  ferry sync web -n team-a --wait=false -o name"
    )]
    Sync(crate::commands::sync::SyncArgs),
    /// Ask the agent to deploy a commit, authenticated by the CI system's OIDC token (no
    /// kubeconfig).
    #[command(after_help = crate::commands::deploy::DEPLOY_HELP)]
    Deploy(crate::commands::deploy::DeployArgs),
    /// Stop the agent from applying or pruning a Release.
    #[command(
        after_help = "Examples:\n  ferry suspend web -n team-a\n  ferry suspend web -n team-a -o yaml       # the Release afterwards"
    )]
    Suspend(crate::commands::suspend::SuspendArgs),
    /// Resume a suspended Release and sync it at once.
    #[command(
        after_help = "Examples:\n  ferry resume web -n team-a\n  ferry resume web -n team-a -o name"
    )]
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
    #[command(
        after_help = "Examples:\n  FERRY_GIT_USERNAME=me FERRY_GIT_PASSWORD=… ferry bootstrap --url https://git.example/org/fleet.git --path clusters/prod\n  ferry bootstrap --url file:///srv/git/fleet.git --branch main"
    )]
    Bootstrap(crate::commands::bootstrap::BootstrapArgs),
    /// Start the web dashboard on 127.0.0.1, as your kubeconfig's user (docs/ui.md).
    #[command(after_help = crate::commands::ui::UI_HELP)]
    Ui(crate::commands::ui::UiArgs),
    /// Print static shell completions (commands and flags only; `ferry completion` also
    /// completes Release names, namespaces and contexts).
    #[command(after_help = "Example:\n  ferry completions zsh > \"${fpath[1]}/_ferry\"")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the shell hook for completions that also complete Release names, namespaces and
    /// kubeconfig contexts (asks ferry at each TAB).
    #[command(after_help = crate::commands::completion::COMPLETION_HELP)]
    Completion(crate::commands::completion::CompletionArgs),
    /// List Releases, sources, image automation objects or Receivers with their state.
    #[command(after_help = crate::commands::get::GET_HELP)]
    Get(crate::commands::get::GetArgs),
    /// Show what a Release manages, with health, down to its pods.
    #[command(after_help = crate::commands::tree::TREE_HELP)]
    Tree(crate::commands::tree::TreeArgs),
    /// Show the Events the agent published on ferry objects.
    #[command(after_help = crate::commands::events::EVENTS_HELP)]
    Events(crate::commands::events::EventsArgs),
    /// Show the agent's log lines, optionally only those about one object.
    #[command(after_help = crate::commands::logs::LOGS_HELP)]
    Logs(crate::commands::logs::LogsArgs),
    /// Show a Release's recent syncs (revision, result, time, message).
    #[command(after_help = crate::commands::history::HISTORY_HELP)]
    History(crate::commands::history::HistoryArgs),
    /// Put a Release back on a commit from its history (or --undo).
    #[command(after_help = crate::commands::rollback::ROLLBACK_HELP)]
    Rollback(crate::commands::rollback::RollbackArgs),
    /// Show the CLI's version and, if a cluster is reachable, the agent's.
    #[command(after_help = crate::commands::version::VERSION_HELP)]
    Version(crate::commands::version::VersionArgs),
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::{Cli, Command};

    fn apply_timeout(value: &str) -> Result<Duration, clap::Error> {
        let cli = Cli::try_parse_from(["ferry", "apply", ".", "--timeout", value])?;
        match cli.command {
            Command::Apply(args) => Ok(args.timeout),
            other => panic!("parsed as {other:?}"),
        }
    }

    /// The flags read durations with THE parser (ferry_api::parse_duration): the CLI's old
    /// forms (`90s`, `1h30m`, bare seconds) and the CRDs' (`500ms`, fractions) alike.
    #[test]
    fn duration_flags_take_the_one_grammar() {
        assert_eq!(apply_timeout("120").ok(), Some(Duration::from_secs(120)));
        assert_eq!(apply_timeout("1h30m").ok(), Some(Duration::from_secs(5400)));
        assert_eq!(apply_timeout("1.5m").ok(), Some(Duration::from_secs(90)));
        assert_eq!(
            apply_timeout("1500ms").ok(),
            Some(Duration::from_millis(1500))
        );
        // A timeout of zero would give up at once: refused, as before.
        let zero = apply_timeout("0s").expect_err("zero refused");
        assert!(zero.to_string().contains("must be positive"), "{zero}");
        let bad = apply_timeout("5d").expect_err("unknown unit refused");
        assert!(bad.to_string().contains("unknown unit"), "{bad}");
        let cli = Cli::try_parse_from(["ferry", "sync", "web", "--timeout", "0"])
            .expect("sync --timeout 0 parses");
        match cli.command {
            Command::Sync(args) => assert_eq!(args.timeout, Duration::ZERO),
            other => panic!("parsed as {other:?}"),
        }
    }
}
