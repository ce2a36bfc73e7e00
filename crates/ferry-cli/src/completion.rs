//! Shell completion: `ferry completion SHELL` prints a script that calls back into ferry
//! (clap_complete's `COMPLETE=SHELL ferry -- ARGS` protocol), so that Release names,
//! namespaces and kubeconfig contexts are completed from the cluster and the kubeconfig as they
//! are now, not from a list frozen at install time.
//!
//! The candidates are looked up while the user waits at the prompt: every lookup is bounded
//! (a few seconds), and any failure (no cluster, no rights) just completes nothing.

use std::ffi::OsString;
use std::time::Duration;

use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};

/// How long a completion may wait for the API server before giving up silently.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// Completes Release names (in the namespace given by `-n` on the line being completed).
pub fn release_names() -> ArgValueCandidates {
    ArgValueCandidates::new(|| lookup(Lookup::Releases))
}

/// Completes namespace names.
pub fn namespaces() -> ArgValueCandidates {
    ArgValueCandidates::new(|| lookup(Lookup::Namespaces))
}

/// Completes the kubeconfig's context names (no cluster needed).
pub fn contexts() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        let flags = LineFlags::from_args(std::env::args_os());
        let kubeconfig = match flags.kubeconfig {
            Some(path) => kube::config::Kubeconfig::read_from(path).ok(),
            None => kube::config::Kubeconfig::read().ok(),
        };
        kubeconfig
            .map(|k| {
                k.contexts
                    .into_iter()
                    .map(|c| CompletionCandidate::new(c.name))
                    .collect()
            })
            .unwrap_or_default()
    })
}

enum Lookup {
    Releases,
    Namespaces,
}

/// The cluster flags on the command line being completed (clap_complete passes it as this
/// process's arguments after `--`).
#[derive(Debug, Default, PartialEq, Eq)]
struct LineFlags {
    kubeconfig: Option<String>,
    context: Option<String>,
    namespace: Option<String>,
}

impl LineFlags {
    fn from_args(args: impl IntoIterator<Item = OsString>) -> Self {
        let args: Vec<String> = args
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut flags = Self::default();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            let next = args.get(i + 1).cloned();
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) if name.starts_with("--") => {
                    (name.to_string(), Some(value.to_string()))
                }
                _ => (arg.clone(), None),
            };
            let slot = match name.as_str() {
                "--kubeconfig" => Some(&mut flags.kubeconfig),
                "--context" => Some(&mut flags.context),
                "-n" | "--namespace" => Some(&mut flags.namespace),
                _ => None,
            };
            if let Some(slot) = slot {
                match inline {
                    Some(value) => *slot = Some(value),
                    None => {
                        // The value being completed may be empty: ignore an empty or flag-like one.
                        if let Some(value) = next.filter(|v| !v.is_empty() && !v.starts_with('-')) {
                            *slot = Some(value);
                        }
                        i += 1;
                    }
                }
            }
            i += 1;
        }
        flags
    }
}

fn lookup(what: Lookup) -> Vec<CompletionCandidate> {
    let flags = LineFlags::from_args(std::env::args_os());
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    runtime
        .block_on(async {
            tokio::time::timeout(LOOKUP_TIMEOUT, names(what, flags))
                .await
                .ok()
                .flatten()
        })
        .unwrap_or_default()
        .into_iter()
        .map(CompletionCandidate::new)
        .collect()
}

async fn names(what: Lookup, flags: LineFlags) -> Option<Vec<String>> {
    use kube::api::{Api, ListParams};
    let options = ferry_engine::cluster::ClusterOptions {
        kubeconfig: flags
            .kubeconfig
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("KUBECONFIG").map(Into::into)),
        context: flags.context,
    };
    let client = ferry_engine::cluster::connect(&options).await.ok()?;
    let names = match what {
        Lookup::Releases => {
            let ns = flags
                .namespace
                .unwrap_or_else(|| client.default_namespace().to_string());
            let api: Api<ferry_api::Release> = Api::namespaced(client, &ns);
            api.list_metadata(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter_map(|r| r.metadata.name)
                .collect()
        }
        Lookup::Namespaces => {
            let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
            api.list_metadata(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter_map(|n| n.metadata.name)
                .collect()
        }
    };
    Some(names)
}

/// The registration script for `shell`: sourced once, it asks `ferry` for candidates at every
/// TAB. `program` is how the shell should call ferry back (its path or name on PATH).
pub fn registration_script(shell: &str, program: &str) -> anyhow::Result<String> {
    use clap_complete::env::{EnvCompleter, Shells};
    let shells = Shells::builtins();
    let completer = shells.completer(shell).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown shell {shell:?}: ferry completion takes one of {}",
            shells.names().collect::<Vec<_>>().join(", ")
        )
    })?;
    let mut buf = Vec::new();
    EnvCompleter::write_registration(completer, "COMPLETE", "ferry", "ferry", program, &mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(line: &[&str]) -> LineFlags {
        LineFlags::from_args(line.iter().map(OsString::from))
    }

    #[test]
    fn the_completed_line_names_namespace_context_and_kubeconfig() {
        assert_eq!(
            flags(&[
                "ferry", "--", "ferry", "history", "release", "-n", "team-a", ""
            ]),
            LineFlags {
                namespace: Some("team-a".into()),
                ..LineFlags::default()
            }
        );
        assert_eq!(
            flags(&[
                "ferry",
                "--context=kind",
                "--kubeconfig",
                "/k",
                "get",
                "rel",
                "--namespace",
                ""
            ]),
            LineFlags {
                kubeconfig: Some("/k".into()),
                context: Some("kind".into()),
                namespace: None,
            }
        );
    }
}
