//! `ferry render PATH...`: print the final manifests that `apply` would send, as a YAML stream
//! (or a JSON list with `-o json`). No cluster needed.
//!
//! Secret data and other decrypted values *are* printed: it is exactly what would be applied,
//! and this command exists to show that (like `sops -d`). They only go to stdout; errors and
//! logs are redacted like every other command's (docs/secrets.md, "Redaction").

use anyhow::Result;
use clap::Args;
use ferry_engine::Manifest;
use ferry_engine::render::request::Capabilities;

use crate::cli::GlobalArgs;
use crate::commands::apply::{SourceArgs, render_sources};
use crate::output::{EXIT_OK, OutputFormat, write_stdout};

pub const RENDER_HELP: &str = "\
Examples:
  ferry render ./deploy                          # YAML stream on stdout
  ferry render ./deploy --set-image web=ghcr.io/acme/web:2.0 -o json
  ferry render ./deploy | kubectl apply --dry-run=client -f -
  ferry render --chart ./chart --kube-version v1.35.4 --api-versions monitoring.coreos.com/v1

Like `helm template`, charts see helm's default .Capabilities unless --kube-version /
--api-versions say otherwise (`ferry apply` and `ferry diff` pass the cluster's own).

Secret values are printed (decrypted, if a later stage decrypts them): this is exactly what
would be applied. They go to stdout only; errors and logs never show them (use `ferry diff`
for output that is safe to share). No cluster is contacted, so
namespaces are filled in by apply (discovery decides what is namespaced), not here.

Exit codes: 0 rendered, 2 error (the message names the file, line and document).";

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Kubernetes version for helm's .Capabilities.KubeVersion, e.g. v1.35.4 (default: helm's
    /// built-in one; `ferry apply` and `ferry diff` use the cluster's).
    #[arg(long, value_name = "VERSION", help_heading = "Rendering")]
    pub kube_version: Option<String>,
    /// API versions for helm's .Capabilities.APIVersions, GROUP/VERSION or GROUP/VERSION/KIND
    /// (repeatable or comma-separated; default: helm's built-in list; `ferry apply` and `ferry
    /// diff` use what the cluster serves).
    #[arg(
        long = "api-versions",
        short = 'a',
        value_name = "GROUP/VERSION[/KIND]",
        value_delimiter = ',',
        help_heading = "Rendering"
    )]
    pub api_versions: Vec<String>,
}

/// Why `--kube-version` / `--api-versions` were refused: they end up on helm's command line,
/// so only the shapes helm documents are passed.
#[derive(Debug, thiserror::Error)]
pub enum CapabilityFlagError {
    #[error("--kube-version {0:?}: expected a Kubernetes version such as v1.35.4 or 1.35")]
    KubeVersion(String, #[source] ferry_engine::render::names::NameError),
    #[error(
        "--api-versions {0:?}: expected GROUP/VERSION or GROUP/VERSION/KIND, e.g. monitoring.coreos.com/v1 or apps/v1/Deployment"
    )]
    ApiVersion(String, #[source] ferry_engine::render::names::NameError),
}

impl RenderArgs {
    /// What helm's `.Capabilities` should say: `None` (helm template's offline defaults)
    /// unless `--kube-version` or `--api-versions` is given. Each value is checked here, so a
    /// bad one names its flag instead of being dropped by the render.
    pub fn capabilities(&self) -> Result<Option<Capabilities>, CapabilityFlagError> {
        use ferry_engine::render::names;
        if self.kube_version.is_none() && self.api_versions.is_empty() {
            return Ok(None);
        }
        if let Some(version) = &self.kube_version {
            names::kube_version(version)
                .map_err(|err| CapabilityFlagError::KubeVersion(version.clone(), err))?;
        }
        for api in &self.api_versions {
            names::api_version(api)
                .map_err(|err| CapabilityFlagError::ApiVersion(api.clone(), err))?;
        }
        Ok(Some(Capabilities {
            kube_version: self.kube_version.clone(),
            api_versions: self.api_versions.clone(),
        }))
    }
}

pub fn run(global: &GlobalArgs, args: &RenderArgs) -> Result<u8> {
    let capabilities = args.capabilities()?;
    let manifests = render_sources(&args.source, capabilities.as_ref())?;
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
