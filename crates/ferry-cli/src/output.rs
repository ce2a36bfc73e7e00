//! Output plumbing shared by all subcommands: format selection, exit codes, logging setup.

use clap::ValueEnum;

/// Success, nothing left to do.
pub const EXIT_OK: u8 = 0;
/// `ferry diff`: changes found. Other commands: the operation finished but some objects failed.
pub const EXIT_CHANGES: u8 = 1;
/// An error: bad input, cluster unreachable, refused for safety.
pub const EXIT_ERROR: u8 = 2;
/// `--wait` ran out of time before every object became healthy.
pub const EXIT_TIMEOUT: u8 = 3;
/// `ferry apply` with ferry.yaml `drift.mode: detect`: everything else applied, but objects
/// edited in the cluster (and unchanged in the source) were reported and left as they are.
pub const EXIT_DRIFT: u8 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    /// Human-readable text (default).
    #[default]
    Human,
    /// One JSON document, for machines.
    Json,
    /// Markdown, e.g. for a pull-request comment.
    Markdown,
    /// One YAML document (the same data as json).
    Yaml,
    /// Only the names of the objects a command lists or touched, as `kind.group/name` lines
    /// (kubectl's `-o name`).
    Name,
    /// Human-readable text with more columns (listing commands); otherwise the same as human.
    Wide,
}

impl OutputFormat {
    /// True for the formats meant for people (human, wide, markdown): progress bars, colours.
    pub fn is_for_people(self) -> bool {
        matches!(self, Self::Human | Self::Wide)
    }
}

/// `--dry-run`, `--dry-run=server` and `--dry-run=client` (kubectl's spellings) all ask for a
/// dry run; ferry's dry runs never write and every one that can asks the API server to
/// validate (so `client` is accepted and means the same). `--dry-run=none` is the default.
pub fn parse_dry_run(value: &str) -> Result<bool, String> {
    match value {
        "server" | "client" | "true" => Ok(true),
        "none" | "false" => Ok(false),
        other => Err(format!(
            "--dry-run={other}: expected --dry-run, --dry-run=server or --dry-run=client"
        )),
    }
}

/// A dry run as a command that does different things for each spelling sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DryRun {
    /// Not a dry run.
    None,
    /// Print what would be done; send nothing that changes the cluster.
    Client,
    /// Send every write with `dryRun=All`: the API server validates it and persists nothing.
    Server,
}

/// [`parse_dry_run`] for commands where `client` and `server` differ.
pub fn parse_dry_run_mode(value: &str) -> Result<DryRun, String> {
    match value {
        "server" | "true" => Ok(DryRun::Server),
        "client" => Ok(DryRun::Client),
        "none" | "false" => Ok(DryRun::None),
        other => Err(format!(
            "--dry-run={other}: expected --dry-run, --dry-run=server or --dry-run=client"
        )),
    }
}

/// Print `value` as JSON or YAML (the two data formats); returns false for every other format,
/// so a command prints its own text then.
pub fn print_data<T: serde::Serialize>(format: OutputFormat, value: &T) -> anyhow::Result<bool> {
    let text = match format {
        OutputFormat::Json => format!("{}\n", serde_json::to_string_pretty(value)?),
        OutputFormat::Yaml => serde_saphyr::to_string(value)?,
        _ => return Ok(false),
    };
    write_stdout(&text)?;
    Ok(true)
}

/// `kind.group/name` as kubectl's `-o name` prints it: the kind lower-cased, the group only
/// when there is one.
pub fn object_name(group: &str, kind: &str, name: &str) -> String {
    let kind = kind.to_lowercase();
    if group.is_empty() {
        format!("{kind}/{name}")
    } else {
        format!("{kind}.{group}/{name}")
    }
}

/// Logs go to stderr so that stdout stays clean for `-o json` and `ferry render`.
/// `RUST_LOG` wins over `-v` when set.
pub fn init_tracing(verbosity: u8) {
    // kube-client logs every failed request at ERROR; ferry reports the same failure itself,
    // with the object or URL and what to do, so that line is noise until `-v`.
    let default = match verbosity {
        0 => "warn,kube_client=off",
        1 => "info,ferry=info",
        2 => "debug,hyper=info,h2=info,tower=info,rustls=info",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Every record passes through the redactor of decrypted values (docs/secrets.md).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| ferry_engine::report::redact::LogWriter::new(std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Print an error chain: the top error and each cause on its own line.
pub fn print_error(err: &anyhow::Error) {
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}

/// Write `text` to stdout. A reader that went away (`ferry render . | head`) is not an error:
/// the output is simply not wanted any more, so the rest is dropped quietly instead of the
/// panic `print!` raises on a broken pipe.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(err).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

impl OutputFormat {
    /// The spelling `-o` takes.
    pub fn flag_value(self) -> &'static str {
        match self {
            Self::Human => "human",
            Self::Json => "json",
            Self::Markdown => "markdown",
            Self::Yaml => "yaml",
            Self::Name => "name",
            Self::Wide => "wide",
        }
    }
}

/// `-o FORMAT` given to a command that has nothing to print in that format.
#[derive(Debug, thiserror::Error)]
#[error(
    "-o/--output {format} does not apply to `ferry {command}` ({why}): {instead}",
    format = .format.flag_value()
)]
pub struct UnsupportedFormat {
    pub format: OutputFormat,
    pub command: &'static str,
    pub why: &'static str,
    pub instead: &'static str,
}

/// Check `-o` against what `command` can print, before it runs (so nothing is changed by a
/// command whose answer could not be printed). Every command prints `human`; `wide` is
/// `human` with more columns where there are columns. The rest is per command: the listing
/// and showing commands take every format; commands that act print what they did as people
/// read it and name where to get the data instead.
pub fn check_format(
    command: &crate::cli::Command,
    format: OutputFormat,
) -> Result<(), UnsupportedFormat> {
    use crate::cli::Command as C;
    use OutputFormat as F;
    if matches!(format, F::Human | F::Wide) {
        return Ok(());
    }
    let refuse = |command, why, instead| {
        Err(UnsupportedFormat {
            format,
            command,
            why,
            instead,
        })
    };
    match command {
        // Objects listed or shown: every format.
        C::ClusterInfo
        | C::Apply(_)
        | C::Diff(_)
        | C::Delete(_)
        | C::Status(_)
        | C::SetImage(_)
        | C::Check(_)
        | C::Get(_)
        | C::Tree(_)
        | C::Events(_)
        | C::History(_)
        | C::Version(_) => Ok(()),
        // The Release changed: its name, or the object as it is afterwards.
        C::Sync(_) | C::Suspend(_) | C::Resume(_) => match format {
            F::Markdown => refuse(
                "sync/suspend/resume",
                "it changes one Release",
                "use -o name, json or yaml",
            ),
            _ => Ok(()),
        },
        C::Render(_) => match format {
            F::Markdown => refuse(
                "render",
                "it prints manifests",
                "use -o yaml (the default), json or name",
            ),
            _ => Ok(()),
        },
        C::Logs(_) => match format {
            F::Json | F::Yaml => Ok(()),
            _ => refuse(
                "logs",
                "it prints log records, not objects",
                "use -o json or yaml for the records as the agent wrote them",
            ),
        },
        C::Deploy(_) => match format {
            F::Json | F::Markdown => Ok(()),
            _ => refuse(
                "deploy",
                "it prints the agent's apply report",
                "use -o json or markdown",
            ),
        },
        C::Push(_) => match format {
            F::Name => Ok(()),
            _ => refuse(
                "push artifact",
                "it prints the pushed reference",
                "use -o name (the same line) or the default",
            ),
        },
        C::Rollback(_) => refuse(
            "rollback",
            "it reports the steps it takes",
            "run `ferry get release NAME -o json` or `ferry history release NAME -o json` afterwards",
        ),
        C::Install(_) => refuse(
            "install",
            "it reports the steps it takes",
            "use --export for the objects as YAML, or `ferry check -o json` afterwards",
        ),
        C::Uninstall(_) => refuse(
            "uninstall",
            "it reports the steps it takes",
            "use --dry-run to list what it would delete",
        ),
        C::Bootstrap(_) => refuse(
            "bootstrap",
            "it reports the steps it takes",
            "run `ferry get releases -A -o json` afterwards",
        ),
        C::Seal(_) => refuse(
            "seal",
            "it prints a SealedSecret",
            "use --format json or --format yaml",
        ),
        C::Secrets(_) => refuse(
            "secrets",
            "it prints files as they are",
            "drop -o; the file's own format is kept",
        ),
        C::Ui(_) => refuse("ui", "it serves a web page", "drop -o"),
        C::Completion(_) | C::Completions { .. } => {
            refuse("completion", "it prints a shell script", "drop -o")
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{OutputFormat, check_format};
    use crate::cli::Cli;

    /// Every command and subcommand, at any depth, shows examples in `--help` (issue 16).
    #[test]
    fn every_command_has_help_examples() {
        fn walk(cmd: &mut clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            let help = cmd.render_long_help().to_string();
            if !help.contains("Example") {
                missing.push(path.clone());
            }
            for sub in cmd.get_subcommands_mut() {
                if sub.get_name() != "help" {
                    walk(sub, &path, missing);
                }
            }
        }
        let mut root = Cli::command();
        root.build();
        let mut missing = Vec::new();
        for sub in root.get_subcommands_mut() {
            if sub.get_name() != "help" {
                walk(sub, "ferry", &mut missing);
            }
        }
        assert!(missing.is_empty(), "no examples in --help: {missing:?}");
    }

    /// A format a command cannot print is refused before it runs, naming -o and what to use.
    #[test]
    fn formats_a_command_cannot_print_are_refused_naming_the_flag() {
        let format_of = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).expect("parses");
            check_format(&cli.command, cli.global.output)
        };
        for ok in [
            &["ferry", "get", "releases", "-o", "name"][..],
            &["ferry", "logs", "-o", "json"],
            &["ferry", "logs", "-o", "yaml"],
            &["ferry", "sync", "web", "-o", "yaml"],
            &["ferry", "resume", "web", "-o", "name"],
            &["ferry", "render", ".", "-o", "json"],
            &["ferry", "ui", "-o", "wide"],
            &["ferry", "rollback", "release", "web", "--undo"],
        ] {
            assert!(format_of(ok).is_ok(), "{ok:?} refused");
        }
        for (refused, names) in [
            (&["ferry", "logs", "-o", "name"][..], "-o json or yaml"),
            (&["ferry", "ui", "-o", "json"], "drop -o"),
            (&["ferry", "completion", "bash", "-o", "yaml"], "drop -o"),
            (
                &["ferry", "seal", "--cert", "c.pem", "-o", "json"],
                "--format json",
            ),
            (
                &[
                    "ferry", "rollback", "release", "web", "--undo", "-o", "json",
                ],
                "ferry get release NAME -o json",
            ),
            (&["ferry", "install", "-o", "yaml"], "--export"),
            (&["ferry", "render", ".", "-o", "markdown"], "-o yaml"),
        ] {
            let err = format_of(refused).expect_err("refused").to_string();
            assert!(
                err.starts_with("-o/--output ") && err.contains(names),
                "{refused:?}: {err}"
            );
        }
        assert_eq!(OutputFormat::Markdown.flag_value(), "markdown");
    }

    /// Every command with --dry-run takes kubectl's three spellings, and refuses others naming
    /// them.
    #[test]
    fn every_dry_run_takes_kubectls_spellings() {
        for command in [
            &["ferry", "apply", "."][..],
            &["ferry", "delete", "--app", "web"],
            &["ferry", "set-image", "a=b:1"],
            &["ferry", "install"],
            &["ferry", "uninstall"],
            &["ferry", "rollback", "release", "web", "--undo"],
        ] {
            for spelling in ["--dry-run", "--dry-run=client", "--dry-run=server"] {
                let mut args = command.to_vec();
                args.push(spelling);
                if let Err(err) = Cli::try_parse_from(&args) {
                    panic!("{args:?}: {err}");
                }
            }
            let mut args = command.to_vec();
            args.push("--dry-run=maybe");
            let err = Cli::try_parse_from(&args).expect_err("refused").to_string();
            assert!(
                err.contains("--dry-run=server or --dry-run=client"),
                "{args:?}: {err}"
            );
        }
    }
}
