//! `ferry cluster-info`: server version, the identity the server sees, server-side apply support.

use anyhow::Result;
use ferry_engine::cluster::{self, ClusterInfo, ClusterOptions};

use crate::cli::GlobalArgs;
use crate::output::{EXIT_OK, OutputFormat};

pub async fn run(global: &GlobalArgs) -> Result<u8> {
    let options = cluster_options(global);
    let config = cluster::load_config(&options).await?;
    let server = config.cluster_url.to_string();
    let client = cluster::client_from_config(config)?;
    let info = ClusterInfo::fetch(&client, &server).await?;
    match global.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            crate::output::print_data(global.output, &info)?;
        }
        OutputFormat::Name => println!("{}", info.server),
        OutputFormat::Human | OutputFormat::Wide | OutputFormat::Markdown => {
            println!("server:            {}", info.server);
            println!("version:           {} ({})", info.version, info.platform);
            println!(
                "identity:          {}",
                info.username.as_deref().unwrap_or("(unknown)")
            );
            if !info.groups.is_empty() {
                println!("groups:            {}", info.groups.join(", "));
            }
            println!(
                "server-side apply: {}",
                if info.server_side_apply {
                    "available"
                } else {
                    "not available (needs Kubernetes 1.22+)"
                }
            );
        }
    }
    Ok(EXIT_OK)
}

pub fn cluster_options(global: &GlobalArgs) -> ClusterOptions {
    ClusterOptions {
        kubeconfig: global.kubeconfig.clone(),
        context: global.context.clone(),
    }
}
