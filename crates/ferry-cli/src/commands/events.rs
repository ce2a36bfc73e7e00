//! `ferry events [--for KIND/NAME]`: the Kubernetes Events the agent published on ferry's
//! objects (Releases, sources, Receivers, image automation), oldest first, like `flux events`.

use anyhow::{Context, Result, bail};
use clap::Args;
use ferry_engine::cluster;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::commands::cluster_info::cluster_options;
use crate::output::{EXIT_OK, OutputFormat, print_data, write_stdout};
use crate::table::{Table, age_of};

pub const EVENTS_HELP: &str = "\
Examples:
  ferry events                              # every ferry object's Events in the namespace
  ferry events -A                           # in every namespace
  ferry events --for release/web -n team-a  # one Release's
  ferry events --for gitsource/apps -o json

KIND in --for is release, gitsource, ocisource, receiver, imagerepository, imagepolicy or
imageupdate (any case, plural or singular). Only Events on ferry.dev objects are shown; the
API server keeps Events for one hour by default.";

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only Events of this object, as KIND/NAME (e.g. release/web).
    #[arg(long = "for", value_name = "KIND/NAME")]
    pub for_object: Option<String>,
    /// Namespace (default: the kubeconfig context's).
    // Filled from the global -n/--namespace (`Cli::resolve_namespaces`).
    #[arg(skip)]
    pub namespace: Option<String>,
    /// Every namespace.
    // Filled from the global -A/--all-namespaces.
    #[arg(skip)]
    pub all_namespaces: bool,
}

/// ferry's kinds as users type them.
const KINDS: &[&str] = &[
    "Release",
    "GitSource",
    "OCISource",
    "Receiver",
    "ImageRepository",
    "ImagePolicy",
    "ImageUpdate",
];

/// `release/web` → (`Release`, `web`).
pub fn parse_for(text: &str) -> Result<(&'static str, String)> {
    let Some((kind, name)) = text
        .split_once('/')
        .filter(|(k, n)| !k.is_empty() && !n.is_empty())
    else {
        bail!("--for {text:?}: expected KIND/NAME, e.g. release/web");
    };
    let lower = kind.to_ascii_lowercase();
    let wanted = lower.strip_suffix(".ferry.dev").unwrap_or(&lower);
    let kind = KINDS
        .iter()
        .find(|k| {
            let k = k.to_ascii_lowercase();
            wanted == k
                || wanted.strip_suffix('s') == Some(k.as_str())
                || wanted.strip_suffix("es") == Some(k.as_str())
                || (k.ends_with('y') && wanted == format!("{}ies", &k[..k.len() - 1]))
        })
        .with_context(|| {
            format!(
                "--for {text:?}: unknown kind {kind:?}; one of {}",
                KINDS.join(", ").to_lowercase()
            )
        })?;
    Ok((kind, name.to_string()))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    namespace: String,
    last_seen: Option<String>,
    #[serde(rename = "type")]
    type_: String,
    reason: String,
    object: String,
    message: String,
    count: i32,
}

fn last_seen(event: &Event) -> Option<Timestamp> {
    event
        .last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

pub async fn run(global: &GlobalArgs, args: &EventsArgs) -> Result<u8> {
    let client = cluster::connect(&cluster_options(global)).await?;
    let namespace = (!args.all_namespaces).then(|| {
        args.namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string())
    });
    let api: Api<Event> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let target = args.for_object.as_deref().map(parse_for).transpose()?;
    let mut params = ListParams::default();
    if let Some((kind, name)) = &target {
        params = params.fields(&format!(
            "involvedObject.kind={kind},involvedObject.name={name}"
        ));
    }
    let events = api.list(&params).await.with_context(|| {
        format!(
            "cannot list Events {} (check -n/--namespace and `kubectl auth can-i list events`)",
            namespace
                .as_deref()
                .map_or("in any namespace".to_string(), |ns| format!(
                    "in namespace {ns}"
                ))
        )
    })?;
    let mut events: Vec<Event> = events
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object
                .api_version
                .as_deref()
                .is_some_and(|v| v.starts_with(&format!("{}/", ferry_api::GROUP)))
        })
        .collect();
    events.sort_by_key(last_seen);
    let rows: Vec<Row> = events
        .iter()
        .map(|e| Row {
            namespace: e.metadata.namespace.clone().unwrap_or_default(),
            last_seen: last_seen(e).map(|t| t.to_string()),
            type_: e.type_.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            object: format!(
                "{}/{}",
                e.involved_object.kind.as_deref().unwrap_or_default(),
                e.involved_object.name.as_deref().unwrap_or_default()
            ),
            message: e.message.clone().unwrap_or_default(),
            count: e.count.unwrap_or(1).max(1),
        })
        .collect();
    match global.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            print_data(global.output, &rows)?;
        }
        OutputFormat::Name => {
            let names: String = events
                .iter()
                .map(|e| format!("event/{}\n", e.metadata.name.as_deref().unwrap_or_default()))
                .collect();
            write_stdout(&names)?;
        }
        OutputFormat::Human | OutputFormat::Wide | OutputFormat::Markdown => {
            if rows.is_empty() {
                eprintln!("no Events on ferry objects found");
                return Ok(EXIT_OK);
            }
            let mut header = Vec::new();
            if args.all_namespaces {
                header.push("NAMESPACE");
            }
            header.extend(["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]);
            let mut table = Table::new(&header);
            for (row, event) in rows.iter().zip(&events) {
                let mut cells = Vec::new();
                if args.all_namespaces {
                    cells.push(row.namespace.clone());
                }
                let seen = age_of(last_seen(event).as_ref());
                cells.extend([
                    if row.count > 1 {
                        format!("{seen} (x{})", row.count)
                    } else {
                        seen
                    },
                    row.type_.clone(),
                    row.reason.clone(),
                    row.object.clone(),
                    row.message.clone(),
                ]);
                table.push(cells);
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

#[cfg(test)]
mod tests {
    use super::parse_for;

    #[test]
    fn kinds_are_read_as_users_type_them() {
        assert_eq!(
            parse_for("release/web").ok(),
            Some(("Release", "web".into()))
        );
        assert_eq!(
            parse_for("Releases/web").ok(),
            Some(("Release", "web".into()))
        );
        assert_eq!(
            parse_for("imagepolicies/app").ok(),
            Some(("ImagePolicy", "app".into()))
        );
        assert_eq!(
            parse_for("gitsource.ferry.dev/apps").ok(),
            Some(("GitSource", "apps".into()))
        );
        let err = parse_for("deployment/web").expect_err("not a ferry kind");
        assert!(err.to_string().contains("unknown kind"), "{err}");
        assert!(parse_for("web").is_err());
    }
}
