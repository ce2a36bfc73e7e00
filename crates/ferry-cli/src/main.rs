//! `ferry`: the push-mode driver. Parses flags, connects to the cluster, and hands the work to
//! `ferry-engine`. Each subcommand lives in `commands/`.
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod completion;
mod output;
mod report;
mod table;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;

fn main() -> ExitCode {
    // `COMPLETE=bash ferry -- ARGS` (the hook `ferry completion` prints) answers with
    // candidates and exits; without that variable this returns at once.
    clap_complete::CompleteEnv::with_factory(<Cli as clap::CommandFactory>::command).complete();
    let mut cli = Cli::parse();
    output::init_tracing(cli.global.verbose);
    if let Err(err) = output::check_format(&cli.command, cli.global.output) {
        output::print_error(&anyhow::Error::new(err));
        return ExitCode::from(output::EXIT_ERROR);
    }
    // -n/--namespace and -A/--all-namespaces are global: handed to the command, or refused.
    if let Err(err) = cli.resolve_namespaces() {
        output::print_error(&anyhow::Error::new(err));
        return ExitCode::from(output::EXIT_ERROR);
    }
    ferry_engine::install_crypto_provider();
    // `render` never talks to the cluster: it runs without an async runtime (and its worker
    // threads), which is measurable next to a ~40 ms `helm template`.
    if let cli::Command::Render(args) = &cli.command {
        return match commands::render::run(&cli.global, args) {
            Ok(code) => ExitCode::from(code),
            Err(err) => {
                output::print_error(&err);
                ExitCode::from(output::EXIT_ERROR)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(output::EXIT_ERROR);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            output::print_error(&err);
            ExitCode::from(output::EXIT_ERROR)
        }
    }
}
