//! `ferry logs [--for KIND/NAME]`: the agent's log lines (read from its pods through the API
//! server, like `kubectl logs`), optionally only those about one object, e.g. one Release.
//!
//! The agent logs JSON by default (`--log-format text` for people), one record per line, with
//! the object in a field named for its kind: `release`, `source` (GitSource), `receiver`,
//! `repository` (ImageRepository), `policy`, `automation` (ImageUpdate), each `NAMESPACE/NAME`;
//! every Event it publishes is also logged with `object=KIND/NAMESPACE/NAME`. Both formats are
//! filtered on those fields, never on free text.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use ferry_engine::cluster;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use serde_json::Value;

use crate::cli::GlobalArgs;
use crate::commands::cluster_info::cluster_options;
use crate::commands::events::parse_for;
use crate::output::{EXIT_OK, OutputFormat, write_stdout};

pub const LOGS_HELP: &str = "\
Examples:
  ferry logs --for release/web -n team-a            # the agent's lines about one Release
  ferry logs --for gitsource/apps -n team-a --since 10m
  ferry logs --level warn                           # every warning and error of the agent
  ferry logs --for release/web -n team-a -o json    # the JSON records as the agent wrote them
  ferry logs --agent-namespace team-a-ferry --tail 100 -o yaml

The agent runs in --agent-namespace (default ferry-system, where `ferry install` puts it); every
pod of it is read (the leader does the work, standbys log little). Reading logs needs `get` on
pods/log there. With several agent pods, human lines start with `[POD]` and -o json/yaml
records carry a `pod` field.";

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Only lines about this object, as KIND/NAME (e.g. release/web), in -n's namespace.
    #[arg(long = "for", value_name = "KIND/NAME")]
    pub for_object: Option<String>,
    // Filled from the global -n/--namespace (`Cli::resolve_namespaces`).
    #[arg(skip)]
    pub namespace: Option<String>,
    /// Namespace the agent runs in.
    #[arg(long, default_value = "ferry-system", value_name = "NS", add = crate::completion::namespaces())]
    pub agent_namespace: String,
    /// Only lines newer than this (e.g. 10m, 1h).
    #[arg(long, value_name = "DURATION", value_parser = ferry_api::parse_duration)]
    pub since: Option<Duration>,
    /// Only the last N lines of each agent pod (before filtering).
    #[arg(long, value_name = "N")]
    pub tail: Option<i64>,
    /// Only lines at this level or worse: error, warn, info, debug.
    #[arg(long, value_name = "LEVEL", value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub level: Option<String>,
}

/// The log field that names an object of `kind` in the agent's records.
fn field_for(kind: &str) -> &'static str {
    match kind {
        "Release" => "release",
        "GitSource" | "OCISource" => "source",
        "Receiver" => "receiver",
        "ImageRepository" => "repository",
        "ImagePolicy" => "policy",
        "ImageUpdate" => "automation",
        _ => "object",
    }
}

/// Which lines to keep.
#[derive(Debug, Clone)]
pub struct LineFilter {
    /// (kind, `namespace/name`) of the object asked for.
    pub object: Option<(String, String)>,
    /// Most verbose level kept (0 error … 4 trace).
    pub max_level: u8,
}

fn level_rank(level: &str) -> u8 {
    match level.to_ascii_lowercase().as_str() {
        "error" => 0,
        "warn" | "warning" => 1,
        "info" => 2,
        "debug" => 3,
        _ => 4,
    }
}

impl LineFilter {
    /// Whether `line` (JSON or text, as the agent writes it) passes.
    pub fn keeps(&self, line: &str) -> bool {
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(record)) => {
                let field = |name: &str| record.get(name).and_then(Value::as_str);
                let level_ok = field("level").is_none_or(|l| level_rank(l) <= self.max_level);
                let object_ok = self.object.as_ref().is_none_or(|(kind, key)| {
                    field(field_for(kind)) == Some(key.as_str())
                        || field("object") == Some(format!("{kind}/{key}").as_str())
                });
                level_ok && object_ok
            }
            _ => self.keeps_text(line),
        }
    }

    /// tracing's text format: `TIME  LEVEL target: message field=value field=value`.
    fn keeps_text(&self, line: &str) -> bool {
        let words: Vec<&str> = line.split_whitespace().collect();
        let level_ok = words
            .iter()
            .take(3)
            .find(|w| ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(w))
            .is_none_or(|l| level_rank(l) <= self.max_level);
        let object_ok = self.object.as_ref().is_none_or(|(kind, key)| {
            let named = format!("{}={key}", field_for(kind));
            let object = format!("object={kind}/{key}");
            words.iter().any(|w| {
                let w = w.trim_end_matches(',');
                w == named || w == object
            })
        });
        level_ok && object_ok
    }
}

/// A JSON record as one readable line: time, level, message, then the other fields.
fn human_line(line: &str) -> String {
    let Ok(Value::Object(mut record)) = serde_json::from_str::<Value>(line) else {
        return line.to_string();
    };
    let mut take = |name: &str| match record.remove(name) {
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let (time, level, message) = (take("timestamp"), take("level"), take("message"));
    let _ = take("target");
    let rest: Vec<String> = record
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    format!("{time} {level:>5} {message} {}", rest.join(" "))
        .trim_end()
        .to_string()
}

/// A line as data: the agent's JSON record as written (a text-format line as `{"message":
/// line}`), with the pod it came from in `pod` when several were read, so each output line
/// stays one JSON document (`jq` reads it) instead of carrying a `[pod]` prefix.
fn data_record(line: &str, pod: Option<&str>) -> Value {
    let mut record = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(record)) => record,
        _ => serde_json::Map::from_iter([("message".to_string(), Value::from(line))]),
    };
    if let Some(pod) = pod {
        record.insert("pod".to_string(), Value::from(pod));
    }
    Value::Object(record)
}

pub async fn run(global: &GlobalArgs, args: &LogsArgs) -> Result<u8> {
    let client = cluster::connect(&cluster_options(global)).await?;
    let object = match args.for_object.as_deref().map(parse_for).transpose()? {
        Some((kind, name)) => {
            let ns = args
                .namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string());
            Some((kind.to_string(), format!("{ns}/{name}")))
        }
        None => None,
    };
    let filter = LineFilter {
        object,
        max_level: args.level.as_deref().map_or(4, level_rank),
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &args.agent_namespace);
    let list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=ferry-agent"))
        .await
        .with_context(|| {
            format!(
                "cannot list the agent's pods in namespace {} (pass --agent-namespace where ferry install put it)",
                args.agent_namespace
            )
        })?;
    if list.items.is_empty() {
        anyhow::bail!(
            "no agent pods (label app.kubernetes.io/name=ferry-agent) in namespace {}: pass --agent-namespace, or read the log of an agent run outside the cluster where it runs",
            args.agent_namespace
        );
    }
    let several = list.items.len() > 1;
    let mut out = String::new();
    // -o yaml: one sequence of the records, written at the end.
    let mut records: Vec<Value> = Vec::new();
    for pod in &list.items {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let params = LogParams {
            container: Some("agent".to_string()),
            since_seconds: args.since.map(|d| d.as_secs().max(1) as i64),
            tail_lines: args.tail,
            ..LogParams::default()
        };
        let text = match pods.logs(&name, &params).await {
            Ok(text) => text,
            Err(err) => {
                eprintln!(
                    "warning: cannot read the log of pod {}/{name}: {err}",
                    args.agent_namespace
                );
                continue;
            }
        };
        for line in text.lines().filter(|l| filter.keeps(l)) {
            match global.output {
                OutputFormat::Json | OutputFormat::Yaml => {
                    let record = data_record(line, several.then_some(name.as_str()));
                    if global.output == OutputFormat::Json {
                        out.push_str(&serde_json::to_string(&record)?);
                        out.push('\n');
                    } else {
                        records.push(record);
                    }
                }
                _ => {
                    if several {
                        out.push_str(&format!("[{name}] "));
                    }
                    out.push_str(&human_line(line));
                    out.push('\n');
                }
            }
        }
    }
    if global.output == OutputFormat::Yaml {
        out = serde_saphyr::to_string(&records)?;
    }
    write_stdout(&out)?;
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn for_release() -> LineFilter {
        LineFilter {
            object: Some(("Release".into(), "team-a/web".into())),
            max_level: 4,
        }
    }

    #[test]
    fn json_lines_are_kept_by_their_object_field_only() {
        let f = for_release();
        assert!(
            f.keeps(r#"{"level":"WARN","release":"team-a/web","message":"reconcile failed: x"}"#)
        );
        assert!(f.keeps(
            r#"{"level":"INFO","object":"Release/team-a/web","reason":"Synced","message":"applied"}"#
        ));
        // Another Release whose name contains this one's, and free text naming it, do not match.
        assert!(!f.keeps(r#"{"level":"WARN","release":"team-a/web2","message":"x"}"#));
        assert!(!f.keeps(r#"{"level":"INFO","message":"Release team-a/web is mentioned"}"#));
        assert!(!f.keeps(r#"{"level":"INFO","source":"team-a/web","message":"fetched"}"#));
    }

    #[test]
    fn text_lines_and_levels_filter_too() {
        let f = for_release();
        assert!(
            f.keeps("2026-12-02T12:00:00Z  WARN ferry_agent: reconcile failed release=team-a/web")
        );
        assert!(
            !f.keeps(
                "2026-12-02T12:00:00Z  WARN ferry_agent: reconcile failed release=team-a/webx"
            )
        );
        let warn = LineFilter {
            object: None,
            max_level: 1,
        };
        assert!(warn.keeps(r#"{"level":"ERROR","message":"x"}"#));
        assert!(!warn.keeps(r#"{"level":"INFO","message":"x"}"#));
        assert!(!warn.keeps("2026-12-02T12:00:00Z  INFO ferry_agent: started"));
    }

    #[test]
    fn data_records_stay_json_and_name_their_pod() {
        let record = data_record(r#"{"level":"INFO","release":"a/b"}"#, Some("agent-1"));
        assert_eq!(record["release"], "a/b");
        assert_eq!(record["pod"], "agent-1");
        let text = data_record("2026-12-02T12:00:00Z  INFO started", None);
        assert_eq!(text["message"], "2026-12-02T12:00:00Z  INFO started");
        assert!(text.get("pod").is_none());
    }

    #[test]
    fn json_records_read_as_one_line() {
        assert_eq!(
            human_line(
                r#"{"timestamp":"2026-12-02T12:00:00Z","level":"WARN","target":"ferry_agent","message":"reconcile failed","release":"a/b"}"#
            ),
            "2026-12-02T12:00:00Z  WARN reconcile failed release=a/b"
        );
    }
}
