//! `ferry completion bash|zsh|fish|elvish|powershell`: the shell hook for dynamic completion
//! (see `crate::completion`).

use anyhow::Result;
use clap::Args;

use crate::output::{EXIT_OK, write_stdout};

pub const COMPLETION_HELP: &str = "\
Examples:
  source <(ferry completion bash)                          # bash, in ~/.bashrc
  source <(ferry completion zsh)                           # zsh, in ~/.zshrc
  ferry completion fish | source                           # fish, in config.fish
  source <(ferry completion bash --program kubectl-ferry)  # as a kubectl plugin

At each TAB the shell runs `COMPLETE=<shell> ferry -- <the line>`: commands and flags come from
ferry itself, Release names and namespaces from the cluster of the line's --kubeconfig /
--context (at most 3 seconds; nothing is completed when it does not answer), contexts from the
kubeconfig. Generate the hook anew when ferry is upgraded (sourcing it at shell start does).
`ferry completions SHELL` prints the older static script (no names from the cluster).";

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_name = "SHELL", value_parser = ["bash", "zsh", "fish", "elvish", "powershell"])]
    pub shell: String,
    /// How the shell should run ferry (default: this program as it was invoked).
    #[arg(long, value_name = "PROGRAM")]
    pub program: Option<String>,
}

pub fn run(args: &CompletionArgs) -> Result<u8> {
    let program = match &args.program {
        Some(program) => program.clone(),
        None => invoked_as(),
    };
    write_stdout(&crate::completion::registration_script(
        &args.shell,
        &program,
    )?)?;
    Ok(EXIT_OK)
}

/// argv[0], made absolute when it is a relative path (a bare name is looked up on PATH).
fn invoked_as() -> String {
    let argv0 = std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "ferry".into());
    let argv0 = if argv0.components().count() > 1 && argv0.is_relative() {
        std::env::current_dir()
            .map(|cwd| cwd.join(&argv0))
            .unwrap_or(argv0)
    } else {
        argv0
    };
    argv0.to_string_lossy().into_owned()
}
