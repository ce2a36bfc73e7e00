//! `ferry version`: this CLI's version and, when a cluster is reachable, the API server's and
//! the installed agent's (read from its Deployment's image tag and labels). `--client` never
//! contacts a cluster.

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use ferry_engine::cluster;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::commands::cluster_info::cluster_options;
use crate::output::{EXIT_OK, OutputFormat, print_data};

pub const VERSION_HELP: &str = "\
Examples:
  ferry version --client              # this binary only, no cluster needed
  ferry version                       # also the API server and the agent in ferry-system
  ferry version --namespace team-a-ferry -o json
  kubectl ferry version --client      # the same, as a kubectl plugin (kubectl-ferry on PATH)

The agent's version is its Deployment's image tag (an image pinned by digest only has none;
then the label app.kubernetes.io/version, if set). An unreachable cluster is not an error: the
server part says why it is missing and the exit code stays 0.";

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Only this CLI's version; no cluster is contacted.
    #[arg(long)]
    pub client: bool,
    // The agent's namespace: the global -n/--namespace, default ferry-system
    // (`Cli::resolve_namespaces`).
    #[arg(skip = String::from("ferry-system"))]
    pub namespace: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Versions {
    client: ClientVersion,
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<ServerVersions>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ClientVersion {
    version: &'static str,
    platform: String,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct ServerVersions {
    #[serde(skip_serializing_if = "Option::is_none")]
    kubernetes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_image: Option<String>,
    /// Why a part is missing (unreachable cluster, no agent installed, no rights).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
}

/// How long `ferry version` waits for a cluster before printing what it has.
const SERVER_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(global: &GlobalArgs, args: &VersionArgs) -> Result<u8> {
    let client_version = ClientVersion {
        version: env!("CARGO_PKG_VERSION"),
        platform: format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    };
    let server = if args.client {
        None
    } else {
        Some(
            tokio::time::timeout(SERVER_TIMEOUT, server_versions(global, &args.namespace))
                .await
                .unwrap_or_else(|_| ServerVersions {
                    notes: vec![format!(
                        "no answer from the cluster within {}s (use --client for the CLI alone)",
                        SERVER_TIMEOUT.as_secs()
                    )],
                    ..ServerVersions::default()
                }),
        )
    };
    let versions = Versions {
        client: client_version,
        server,
    };
    match global.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            print_data(global.output, &versions)?;
        }
        OutputFormat::Name => println!("{}", versions.client.version),
        OutputFormat::Human | OutputFormat::Wide | OutputFormat::Markdown => {
            println!(
                "client: {} ({})",
                versions.client.version, versions.client.platform
            );
            if let Some(server) = &versions.server {
                if let Some(k8s) = &server.kubernetes {
                    println!("kubernetes: {k8s}");
                }
                if let Some(agent) = &server.agent {
                    println!(
                        "agent: {agent} ({})",
                        server.agent_image.as_deref().unwrap_or_default()
                    );
                }
                for note in &server.notes {
                    println!("note: {note}");
                }
            }
        }
    }
    Ok(EXIT_OK)
}

async fn server_versions(global: &GlobalArgs, namespace: &str) -> ServerVersions {
    let mut out = ServerVersions::default();
    let client = match cluster::connect(&cluster_options(global)).await {
        Ok(client) => client,
        Err(err) => {
            out.notes.push(format!("no cluster: {err}"));
            return out;
        }
    };
    match client.apiserver_version().await {
        Ok(info) => out.kubernetes = Some(info.git_version),
        Err(err) => {
            out.notes
                .push(format!("cannot reach the API server: {err}"));
            return out;
        }
    }
    let deployments: Api<Deployment> = Api::namespaced(client, namespace);
    match deployments.get_opt("ferry-agent").await {
        Ok(Some(deployment)) => {
            let image = deployment
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|s| s.containers.iter().find(|c| c.name == "agent"))
                .and_then(|c| c.image.clone());
            let label = deployment
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app.kubernetes.io/version"))
                .cloned();
            out.agent = image
                .as_deref()
                .and_then(image_tag)
                .map(str::to_string)
                .or(label)
                .or_else(|| Some("unknown (image pinned by digest only)".to_string()));
            out.agent_image = image;
        }
        Ok(None) => out.notes.push(format!(
            "no agent Deployment {namespace}/ferry-agent (installed elsewhere? pass --namespace)"
        )),
        Err(err) => out.notes.push(format!(
            "cannot read Deployment {namespace}/ferry-agent: {err}"
        )),
    }
    out
}

/// The tag of an image reference (`repo:tag` or `repo:tag@digest`), if any.
pub fn image_tag(image: &str) -> Option<&str> {
    let name = image.split('@').next()?;
    let last = name.rsplit('/').next()?;
    last.split_once(':').map(|(_, tag)| tag)
}

#[cfg(test)]
mod tests {
    use super::image_tag;

    #[test]
    fn tags_are_read_past_registry_ports_and_digests() {
        assert_eq!(
            image_tag("127.0.0.1:15000/ferry/agent:0.1.0@sha256:ab"),
            Some("0.1.0")
        );
        assert_eq!(image_tag("127.0.0.1:15000/ferry/agent@sha256:ab"), None);
    }
}
