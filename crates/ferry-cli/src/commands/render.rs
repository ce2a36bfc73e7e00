//! `ferry render PATH...`: print the final manifests that `apply` would send, as a YAML stream
//! (or a JSON list with `-o json`). No cluster needed.
//!
//! Secret data and other decrypted values *are* printed: it is exactly what would be applied,
//! and this command exists to show that (like `sops -d`). They only go to stdout; errors and
//! logs are redacted like every other command's (docs/secrets.md, "Redaction").

use anyhow::Result;
use clap::Args;
use ferry_engine::Manifest;

use crate::cli::GlobalArgs;
use crate::commands::apply::{SourceArgs, render_sources};
use crate::output::{EXIT_OK, OutputFormat, write_stdout};

pub const RENDER_HELP: &str = "\
Examples:
  ferry render ./deploy                          # YAML stream on stdout
  ferry render ./deploy --set-image web=ghcr.io/acme/web:2.0 -o json
  ferry render ./deploy | kubectl apply --dry-run=client -f -

Secret values are printed (decrypted, if a later stage decrypts them): this is exactly what
would be applied. They go to stdout only; errors and logs never show them (use `ferry diff`
for output that is safe to share). No cluster is contacted, so
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
        OutputFormat::Name => {
            let names: String = manifests
                .iter()
                .map(|m| {
                    format!(
                        "{}\n",
                        crate::output::object_name(m.group(), m.kind(), m.name())
                    )
                })
                .collect();
            write_stdout(&names)?;
        }
        // YAML is this command's own output: the stream apply would send.
        OutputFormat::Human | OutputFormat::Wide | OutputFormat::Yaml | OutputFormat::Markdown => {
            let out = to_yaml_stream(&manifests)?;
            write_stdout(&out)?;
            // The process exits right after: freeing megabytes of parsed objects node by node
            // would only delay that (about a millisecond per MB of YAML).
            std::mem::forget(out);
        }
    }
    std::mem::forget(manifests);
    Ok(EXIT_OK)
}

/// Below this many objects the YAML is written on one thread: a thread costs more than it
/// saves on a few dozen small objects.
const PARALLEL_OUTPUT_OBJECTS: usize = 64;

/// The manifests as one YAML stream, each with a `# Source:` comment.
///
/// Objects serialise straight into text (no intermediate `Value` copies), on several threads
/// for large outputs: a chart with 630 KB of CRDs took ~4.7 ms to print on one.
fn to_yaml_stream(manifests: &[Manifest]) -> Result<String> {
    fn write_part(part: Vec<&Manifest>) -> Result<String> {
        use std::fmt::Write as _;
        let mut out = String::new();
        for m in part {
            write!(out, "---\n# Source: {}\n", m.origin)?;
            serde_saphyr::to_fmt_writer(&mut out, &m.object)?;
        }
        Ok(out)
    }
    let parts = ferry_engine::yaml::parallel::map_parts(
        manifests.iter().collect(),
        manifests.len() >= PARALLEL_OUTPUT_OBJECTS,
        write_part,
    );
    let mut out = String::new();
    for part in parts {
        let part =
            part.unwrap_or_else(|| Err(anyhow::anyhow!("writing the YAML output panicked")))?;
        if out.is_empty() {
            out = part;
        } else {
            out.push_str(&part);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written on several threads or one, the stream is the same, in source order.
    #[test]
    fn parallel_yaml_output_keeps_order() {
        let yaml: String = (0..PARALLEL_OUTPUT_OBJECTS * 2 + 3)
            .map(|i| {
                format!(
                    "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n  n: \"{i}\"\n"
                )
            })
            .collect();
        let manifests =
            ferry_engine::yaml::parse_bytes(yaml.as_bytes(), "in.yaml".as_ref()).expect("parses");
        let whole = to_yaml_stream(&manifests).expect("writes");
        let one_by_one: String = manifests
            .chunks(1)
            .map(|one| to_yaml_stream(one).expect("writes"))
            .collect();
        assert_eq!(whole, one_by_one);
        let names: Vec<&str> = whole
            .lines()
            .filter_map(|line| line.strip_prefix("  name: "))
            .collect();
        assert_eq!(names.len(), manifests.len());
        assert_eq!(names[0], "cm-0");
        assert_eq!(
            names[names.len() - 1],
            format!("cm-{}", manifests.len() - 1)
        );
    }
}
