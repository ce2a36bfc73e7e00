//! What helm's `.Capabilities` should say about the target cluster, from discovery: every
//! `group/version` and `group/version/Kind` the cluster serves and the server's version, the
//! data `helm install` gets from the cluster itself. The render side takes it as plain data
//! (`render::request::Capabilities`) and passes it as `--api-versions` / `--kube-version`.

use std::sync::Arc;
use std::time::Instant;

use kube::Client;
use kube::discovery::Discovery;

use super::discovery::DiscoveryCache;
use super::kube_error::{describe_kube_error, status_code};
use crate::render::request::Capabilities;
use crate::{Error, Result};

/// The cluster's capabilities: from `cache` when given (no request while it is fresh), else
/// a fresh discovery (the CLI).
pub async fn of(cache: Option<&Arc<DiscoveryCache>>, client: &Client) -> Result<Capabilities> {
    let (discovery, kube_version) = match cache {
        Some(cache) => {
            let discovery = cache.discovery(client).await?;
            let cached = cache
                .kube_version
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .filter(|(_, at)| at.elapsed() < cache.max_age());
            let version = match cached {
                Some((version, _)) => version,
                None => {
                    let version = server_version(client).await?;
                    *cache
                        .kube_version
                        .write()
                        .unwrap_or_else(|p| p.into_inner()) =
                        Some((version.clone(), Instant::now()));
                    version
                }
            };
            (discovery, version)
        }
        None => {
            let discovery = Discovery::new(client.clone())
                .run_aggregated()
                .await
                .map_err(|err| Error::Discovery {
                    message: describe_kube_error(&err),
                    code: status_code(&err),
                })?;
            (Arc::new(discovery), server_version(client).await?)
        }
    };
    Ok(Capabilities {
        kube_version: Some(kube_version),
        api_versions: api_versions(&discovery),
    })
}

async fn server_version(client: &Client) -> Result<String> {
    client
        .apiserver_version()
        .await
        .map(|info| info.git_version)
        .map_err(|err| Error::Discovery {
            message: describe_kube_error(&err),
            code: status_code(&err),
        })
}

/// `group/version` and `group/version/Kind` for every served resource (core group: `v1`,
/// `v1/Pod`), sorted, as helm's own discovery lists them.
pub fn api_versions(discovery: &Discovery) -> Vec<String> {
    let mut out = std::collections::BTreeSet::new();
    for group in discovery.groups() {
        for version in group.versions() {
            let gv = if group.name().is_empty() {
                version.to_string()
            } else {
                format!("{}/{version}", group.name())
            };
            for (resource, _) in group.versioned_resources(version) {
                out.insert(format!("{gv}/{}", resource.kind));
            }
            out.insert(gv);
        }
    }
    out.into_iter().collect()
}
