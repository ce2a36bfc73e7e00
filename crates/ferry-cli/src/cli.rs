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
  3  timed out waiting for health
  4  apply: drift reported and left in place (ferry.yaml drift.mode: detect)";

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
    /// Namespace of the objects the command is about (default: the kubeconfig context's; for
    /// install, check, uninstall, version and bootstrap the agent's, default ferry-system).
    /// `ferry ui` takes it several times.
    #[arg(
        short = 'n',
        long = "namespace",
        global = true,
        value_name = "NS",
        action = clap::ArgAction::Append,
        add = crate::completion::namespaces()
    )]
    pub namespaces: Vec<String>,
    /// Every namespace (get, events, ui; uninstall: the agent watches every namespace).
    #[arg(short = 'A', long = "all-namespaces", global = true)]
    pub all_namespaces: bool,
}

/// A combination of -n/-A a command cannot take, named with the flag that changes it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NamespaceFlagError(String);

impl Cli {
    /// Hand the global `-n/--namespace` and `-A/--all-namespaces` to the command that runs
    /// (each keeps its own field, so every command reads its namespace as before), refusing
    /// what makes no sense for it: a namespace for a command without one, `-A` for a command
    /// about one namespace, both at once, several `-n` where one is meant.
    pub fn resolve_namespaces(&mut self) -> Result<(), NamespaceFlagError> {
        use Command as C;
        let namespaces = self.global.namespaces.clone();
        let all = self.global.all_namespaces;
        let name = command_name(&self.command);
        let refuse = |message: String| Err(NamespaceFlagError(message));
        // Commands without a namespace of their own.
        let no_namespace = match &self.command {
            C::ClusterInfo => Some("it shows the cluster and your identity"),
            C::SetImage(_) => Some("it edits files in a checkout"),
            C::Secrets(_) => Some("it encrypts and decrypts files"),
            C::Push(_) => Some("it pushes to a registry"),
            C::Deploy(_) => Some("the Release is named by --release NAMESPACE/NAME"),
            C::Completions { .. } | C::Completion(_) => Some("it prints a shell script"),
            _ => None,
        };
        if let Some(why) = no_namespace {
            if !namespaces.is_empty() {
                return refuse(format!(
                    "-n/--namespace does not apply to `ferry {name}`: {why}; leave it out"
                ));
            }
            if all {
                return refuse(format!(
                    "-A/--all-namespaces does not apply to `ferry {name}`: {why}; leave it out"
                ));
            }
            return Ok(());
        }
        let takes_all = matches!(
            &self.command,
            C::Get(_) | C::Events(_) | C::Ui(_) | C::Uninstall(_)
        );
        if all && !takes_all {
            return refuse(format!(
                "-A/--all-namespaces does not apply to `ferry {name}`: it acts in one namespace; name it with -n/--namespace NS (only get, events, ui and uninstall take -A)"
            ));
        }
        // uninstall: -n is the agent's namespace and -A says that it watches every namespace.
        if all && !namespaces.is_empty() && !matches!(&self.command, C::Uninstall(_)) {
            return refuse(format!(
                "-n/--namespace and -A/--all-namespaces cannot be used together with `ferry {name}`: -A already means every namespace; leave one out"
            ));
        }
        if namespaces.len() > 1 && !matches!(&self.command, C::Ui(_)) {
            return refuse(format!(
                "-n/--namespace was given {} times ({}); `ferry {name}` acts in one namespace (only `ferry ui` takes several)",
                namespaces.len(),
                namespaces.join(", ")
            ));
        }
        let one = namespaces.first().cloned();
        let agent = || one.clone().unwrap_or_else(|| "ferry-system".to_string());
        match &mut self.command {
            C::Apply(args) => args.source.namespace = one,
            C::Diff(args) => match &mut args.target {
                Some(crate::commands::diff::DiffTarget::Release(release)) => {
                    release.namespace = one
                }
                None => args.source.namespace = one,
            },
            C::Render(args) => args.source.namespace = one,
            C::Delete(args) => args.namespace = one,
            C::Status(args) => args.namespace = one,
            C::Seal(args) => args.namespace = one,
            C::Sync(args) => args.namespace = one,
            C::Suspend(args) | C::Resume(args) => args.namespace = one,
            C::Install(args) => args.namespace = agent(),
            C::Check(args) => args.namespace = agent(),
            C::Uninstall(args) => {
                if all && !args.watch_namespaces.is_empty() {
                    return refuse(
                        "-A/--all-namespaces and --watch-namespace cannot be used together: the agent watches either every namespace or those listed".to_string(),
                    );
                }
                args.namespace = agent();
                args.all_namespaces = all;
            }
            C::Bootstrap(args) => args.install.namespace = agent(),
            C::Ui(args) => args.namespaces = namespaces,
            C::Get(args) => {
                if all && let Some(object) = &args.name {
                    return refuse(format!(
                        "-A/--all-namespaces lists every namespace, but NAME {object:?} is one object: name its namespace with -n/--namespace instead"
                    ));
                }
                args.namespace = one;
                args.all_namespaces = all;
            }
            C::Tree(args) => args.namespace = one,
            C::Events(args) => {
                args.namespace = one;
                args.all_namespaces = all;
            }
            C::Logs(args) => args.namespace = one,
            C::History(args) => args.namespace = one,
            C::Rollback(args) => args.namespace = one,
            C::Version(args) => args.namespace = agent(),
            C::ClusterInfo
            | C::SetImage(_)
            | C::Secrets(_)
            | C::Push(_)
            | C::Deploy(_)
            | C::Completions { .. }
            | C::Completion(_) => {}
        }
        Ok(())
    }
}

/// The subcommand's name as typed (`get`, `cluster-info`), for messages.
fn command_name(command: &Command) -> &'static str {
    use Command as C;
    match command {
        C::ClusterInfo => "cluster-info",
        C::Apply(_) => "apply",
        C::Diff(_) => "diff",
        C::Render(_) => "render",
        C::Delete(_) => "delete",
        C::Status(_) => "status",
        C::SetImage(_) => "set-image",
        C::Secrets(_) => "secrets",
        C::Seal(_) => "seal",
        C::Push(_) => "push",
        C::Sync(_) => "sync",
        C::Deploy(_) => "deploy",
        C::Suspend(_) => "suspend",
        C::Resume(_) => "resume",
        C::Install(_) => "install",
        C::Check(_) => "check",
        C::Uninstall(_) => "uninstall",
        C::Bootstrap(_) => "bootstrap",
        C::Ui(_) => "ui",
        C::Completions { .. } => "completions",
        C::Completion(_) => "completion",
        C::Get(_) => "get",
        C::Tree(_) => "tree",
        C::Events(_) => "events",
        C::Logs(_) => "logs",
        C::History(_) => "history",
        C::Rollback(_) => "rollback",
        C::Version(_) => "version",
    }
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

    fn resolved(args: &[&str]) -> Result<Cli, String> {
        let mut cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        cli.resolve_namespaces().map_err(|e| e.to_string())?;
        Ok(cli)
    }

    /// `-n`/`-A` are global: the same before and after the subcommand, handed to the command's
    /// own field (the agent commands default to ferry-system), refused where they make no
    /// sense, naming the flag.
    #[test]
    fn namespace_flags_are_global_and_refused_where_meaningless() {
        for args in [
            ["ferry", "-n", "team-a", "get", "releases"],
            ["ferry", "get", "releases", "-n", "team-a"],
            ["ferry", "get", "--namespace", "team-a", "releases"],
        ] {
            match resolved(&args).map(|c| c.command) {
                Ok(Command::Get(get)) => {
                    assert_eq!(get.namespace.as_deref(), Some("team-a"), "{args:?}");
                    assert!(!get.all_namespaces);
                }
                other => panic!("{args:?}: {other:?}"),
            }
        }
        match resolved(&["ferry", "-A", "events"]).map(|c| c.command) {
            Ok(Command::Events(events)) => assert!(events.all_namespaces),
            other => panic!("{other:?}"),
        }
        match resolved(&["ferry", "version", "--client"]).map(|c| c.command) {
            Ok(Command::Version(v)) => assert_eq!(v.namespace, "ferry-system"),
            other => panic!("{other:?}"),
        }
        match resolved(&["ferry", "-n", "ops", "install", "--export"]).map(|c| c.command) {
            Ok(Command::Install(i)) => assert_eq!(i.namespace, "ops"),
            other => panic!("{other:?}"),
        }
        match resolved(&["ferry", "uninstall", "-n", "ops", "-A"]).map(|c| c.command) {
            Ok(Command::Uninstall(u)) => {
                assert_eq!(u.namespace, "ops");
                assert!(u.all_namespaces);
            }
            other => panic!("{other:?}"),
        }
        match resolved(&["ferry", "ui", "-n", "a", "-n", "b"]).map(|c| c.command) {
            Ok(Command::Ui(ui)) => assert_eq!(ui.namespaces, ["a", "b"]),
            other => panic!("{other:?}"),
        }
        match resolved(&["ferry", "diff", "release", "web", "-n", "team-a"]).map(|c| c.command) {
            Ok(Command::Diff(diff)) => match diff.target {
                Some(crate::commands::diff::DiffTarget::Release(r)) => {
                    assert_eq!(r.namespace.as_deref(), Some("team-a"))
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        match resolved(&["ferry", "apply", ".", "-n", "team-a"]).map(|c| c.command) {
            Ok(Command::Apply(apply)) => {
                assert_eq!(apply.source.namespace.as_deref(), Some("team-a"))
            }
            other => panic!("{other:?}"),
        }
        for (args, names) in [
            (
                &["ferry", "get", "releases", "-n", "a", "-A"][..],
                "-n/--namespace and -A/--all-namespaces",
            ),
            (
                &["ferry", "-A", "get", "releases", "web"],
                "-A/--all-namespaces",
            ),
            (&["ferry", "cluster-info", "-n", "a"], "-n/--namespace"),
            (
                &["ferry", "set-image", "-A", "a=b:1"],
                "-A/--all-namespaces",
            ),
            (
                &["ferry", "status", "--app", "web", "-n", "a", "-n", "b"],
                "-n/--namespace",
            ),
            (&["ferry", "apply", ".", "-A"], "-A/--all-namespaces"),
            (
                &["ferry", "history", "release", "web", "-A"],
                "-A/--all-namespaces",
            ),
            (
                &["ferry", "uninstall", "-A", "--watch-namespace", "x"],
                "--watch-namespace",
            ),
        ] {
            let err = resolved(args).map(|c| c.command).expect_err("refused");
            assert!(err.contains(names), "{args:?}: {err}");
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
