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
