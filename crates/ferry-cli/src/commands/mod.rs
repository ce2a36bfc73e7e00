//! Subcommand dispatch: each subcommand is a small module that calls into `ferry-engine`.

pub(crate) mod apply;
pub(crate) mod bootstrap;
pub(crate) mod check;
mod cluster_info;
pub(crate) mod completion;
pub(crate) mod delete;
pub(crate) mod deploy;
pub(crate) mod diff;
pub(crate) mod diff_release;
pub(crate) mod events;
pub(crate) mod get;
pub(crate) mod handover;
pub(crate) mod history;
pub(crate) mod install;
pub(crate) mod logs;
pub(crate) mod network_policy;
pub(crate) mod push_artifact;
pub(crate) mod render;
pub(crate) mod render_args;
pub(crate) mod resume;
pub(crate) mod rollback;
pub(crate) mod seal;
pub(crate) mod secrets;
pub(crate) mod set_image;
pub(crate) mod status;
pub(crate) mod suspend;
pub(crate) mod sync;
pub(crate) mod tree;
pub(crate) mod ui;
pub(crate) mod uninstall;
pub(crate) mod version;

use anyhow::Result;
use clap::CommandFactory;

use crate::cli::{Cli, Command};
use crate::output::EXIT_OK;

pub async fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::ClusterInfo => cluster_info::run(&cli.global).await,
        Command::Apply(args) => apply::run(&cli.global, &args).await,
        Command::Diff(args) => diff::run(&cli.global, &args).await,
        Command::Render(args) => render::run(&cli.global, &args),
        Command::Delete(args) => delete::run(&cli.global, &args).await,
        Command::Status(args) => status::run(&cli.global, &args).await,
        Command::SetImage(args) => set_image::run(&cli.global, &args),
        Command::Secrets(command) => secrets::run(&command),
        Command::Seal(args) => seal::run(&args).await,
        Command::Push(command) => push_artifact::run(&command).await,
        Command::Sync(args) => sync::run_sync(&cli.global, &args).await,
        Command::Deploy(args) => deploy::run(&cli.global, &args).await,
        Command::Suspend(args) => suspend::run_suspend(&cli.global, &args, true).await,
        Command::Resume(args) => suspend::run_suspend(&cli.global, &args, false).await,
        Command::Install(args) => install::run(&cli.global, &args).await,
        Command::Check(args) => check::run(&cli.global, &args).await,
        Command::Uninstall(args) => uninstall::run(&cli.global, &args).await,
        Command::Bootstrap(args) => bootstrap::run(&cli.global, &args).await,
        Command::Ui(args) => ui::run(&cli.global, &args).await,
        Command::Completion(args) => completion::run(&args),
        Command::Get(args) => get::run(&cli.global, &args).await,
        Command::Tree(args) => tree::run(&cli.global, &args).await,
        Command::Events(args) => events::run(&cli.global, &args).await,
        Command::Logs(args) => logs::run(&cli.global, &args).await,
        Command::History(args) => history::run(&cli.global, &args).await,
        Command::Rollback(args) => rollback::run(&cli.global, &args).await,
        Command::Version(args) => version::run(&cli.global, &args).await,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "ferry", &mut std::io::stdout());
            Ok(EXIT_OK)
        }
    }
}
