//! `ferry history release NAME`: a Release's most recent syncs (`status.history`, newest
//! first, at most 5): revision, result, when, and the agent's summary.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use ferry_api::Release;
use ferry_engine::cluster;
use kube::Api;
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::commands::cluster_info::cluster_options;
use crate::output::{EXIT_OK, OutputFormat, print_data, write_stdout};
use crate::table::{Table, age_of};

pub const HISTORY_HELP: &str = "\
Examples:
  ferry history release web -n team-a
  ferry history release web -n team-a -o json | jq -r '.[0].revision'
  ferry rollback release web -n team-a --to <REVISION>   # go back to one of them

The agent keeps the last 5 syncs of each Release (successful and failed), newest first; the
CURRENT column marks the revision now applied (status.lastAppliedRevision).";

/// The kinds `history` and `rollback` work on (only Releases keep a history).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HistoryKind {
    #[value(alias = "releases", alias = "rel")]
    Release,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The kind: release.
    #[arg(value_enum)]
    pub kind: HistoryKind,
    /// The Release.
    #[arg(value_name = "NAME", add = crate::completion::release_names())]
    pub name: String,
    // Filled from the global -n/--namespace (`Cli::resolve_namespaces`).
    #[arg(skip)]
    pub namespace: Option<String>,
}

/// A Release read for `history`, `rollback` and `tree`, with the namespace it was read from.
pub struct FoundRelease {
    pub api: Api<Release>,
    pub client: kube::Client,
    pub namespace: String,
    pub release: Release,
}

/// Read Release `name` in `namespace` (default: the context's), or say how to find it.
pub async fn find_release(
    global: &GlobalArgs,
    namespace: Option<&str>,
    name: &str,
) -> Result<FoundRelease> {
    let client = cluster::connect(&cluster_options(global)).await?;
    let namespace =
        namespace.map_or_else(|| client.default_namespace().to_string(), str::to_string);
    let api: Api<Release> = Api::namespaced(client.clone(), &namespace);
    let release = api
        .get_opt(name)
        .await
        .with_context(|| format!("cannot read Release {namespace}/{name}"))?
        .with_context(|| {
            format!(
                "Release {namespace}/{name} not found (check the name and -n/--namespace; `ferry get releases -A` lists them)"
            )
        })?;
    Ok(FoundRelease {
        api,
        client,
        namespace,
        release,
    })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a> {
    #[serde(flatten)]
    record: &'a ferry_api::release::SyncRecord,
    current: bool,
}

pub async fn run(global: &GlobalArgs, args: &HistoryArgs) -> Result<u8> {
    let found = find_release(global, args.namespace.as_deref(), &args.name).await?;
    let status = found.release.status.clone().unwrap_or_default();
    let applied = status.last_applied_revision.as_deref();
    // Only the newest successful sync of the applied revision is the current one.
    let current_index = status
        .history
        .iter()
        .position(|r| r.result == "Succeeded" && Some(r.revision.as_str()) == applied);
    let entries: Vec<Entry> = status
        .history
        .iter()
        .enumerate()
        .map(|(i, record)| Entry {
            record,
            current: Some(i) == current_index,
        })
        .collect();
    match global.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            print_data(global.output, &entries)?;
        }
        OutputFormat::Name => {
            let names: String = entries
                .iter()
                .map(|e| format!("{}\n", e.record.revision))
                .collect();
            write_stdout(&names)?;
        }
        OutputFormat::Human | OutputFormat::Wide | OutputFormat::Markdown => {
            if entries.is_empty() {
                eprintln!(
                    "Release {}/{} has no history yet (the agent has not synced it)",
                    found.namespace, args.name
                );
                return Ok(EXIT_OK);
            }
            let mut table =
                Table::new(&["REVISION", "RESULT", "CURRENT", "AGE", "TIME", "MESSAGE"]);
            for e in &entries {
                table.push(vec![
                    e.record.revision.clone(),
                    e.record.result.clone(),
                    if e.current { "*".into() } else { String::new() },
                    age_of(Some(&e.record.time.0)),
                    e.record.time.0.to_string(),
                    e.record.message.clone().unwrap_or_default(),
                ]);
            }
            write_stdout(&if global.output == OutputFormat::Markdown {
                table.markdown()
            } else {
                table.render()
            })?;
        }
    }
    Ok(EXIT_OK)
}
