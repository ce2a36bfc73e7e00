//! `ferry render PATH...`: print the final manifests that `apply` would send, as a YAML stream
//! (or a JSON list with `-o json`). No cluster needed.
//!
//! Secret data *is* printed: it is exactly what would be applied, and this command exists to
//! show that. It only goes to stdout, never to logs; redirect it accordingly.

use anyhow::Result;
use clap::Args;

use crate::cli::GlobalArgs;
use crate::commands::apply::{SourceArgs, render_sources};
use crate::output::{EXIT_OK, OutputFormat, write_stdout};

pub const RENDER_HELP: &str = "\
Examples:
  ferry render ./deploy                          # YAML stream on stdout
  ferry render ./deploy --set-image web=ghcr.io/acme/web:2.0 -o json
  ferry render ./deploy | kubectl apply --dry-run=client -f -

Secret values are printed (decrypted, if a later stage decrypts them): this is exactly what
would be applied. They go to stdout only, never to logs. No cluster is contacted, so
namespaces are filled in by apply (discovery decides what is namespaced), not here.

Exit codes: 0 rendered, 2 error (the message names the file, line and document).";

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub source: SourceArgs,
}

pub fn run(global: &GlobalArgs, args: &RenderArgs) -> Result<u8> {
    let manifests = render_sources(&args.source)?;
    match global.output {
        OutputFormat::Json => {
            let objects: Vec<_> = manifests.iter().map(|m| &m.object).collect();
            write_stdout(&format!("{}\n", serde_json::to_string_pretty(&objects)?))?;
        }
        OutputFormat::Human | OutputFormat::Markdown => {
            // Objects serialise straight into one buffer (no intermediate `Value` copies): on
            // a chart with megabytes of CRDs this was a visible share of ferry's render time.
            let mut out = String::new();
            for m in &manifests {
                use std::fmt::Write as _;
                write!(out, "---\n# Source: {}\n", m.origin)?;
                serde_saphyr::to_fmt_writer(&mut out, &m.object)?;
            }
            write_stdout(&out)?;
            // The process exits right after: freeing megabytes of parsed objects node by node
            // would only delay that (about a millisecond per MB of YAML).
            std::mem::forget(out);
        }
    }
    std::mem::forget(manifests);
    Ok(EXIT_OK)
}
