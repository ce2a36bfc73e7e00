//! Subcommand dispatch: each subcommand is a small module that calls into `ferry-engine`.

mod cluster_info;

use anyhow::Result;
use clap::CommandFactory;

use crate::cli::{Cli, Command};
use crate::output::EXIT_OK;

pub async fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::ClusterInfo => cluster_info::run(&cli.global).await,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "ferry", &mut std::io::stdout());
            Ok(EXIT_OK)
        }
    }
}
