//! Connecting to a cluster the way kubectl does: `--kubeconfig`/`KUBECONFIG`, `--context`, then
//! in-cluster config. Errors name the kubeconfig, context and server that failed.

use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde::Serialize;

use crate::{Error, Result};

/// How to find the cluster. All fields optional: the defaults behave like kubectl.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

/// Build a kube `Config` from the options, with errors that say where we looked.
pub async fn load_config(options: &ClusterOptions) -> Result<Config> {
    let kube_options = KubeConfigOptions {
        context: options.context.clone(),
        ..Default::default()
    };
    match &options.kubeconfig {
        Some(path) => config_from_file(path, &kube_options).await,
        None if options.context.is_some() => {
            Config::from_kubeconfig(&kube_options).await.map_err(|err| {
                config_error(format!(
                    "cannot load context {:?} from the default kubeconfig (~/.kube/config): {err}",
                    options.context.as_deref().unwrap_or_default()
                ))
            })
        }
        None => Config::infer().await.map_err(|err| {
            config_error(format!(
                "no cluster configured: no $KUBECONFIG, no usable ~/.kube/config and not running in a pod ({err}); pass --kubeconfig FILE"
            ))
        }),
    }
}

async fn config_from_file(path: &Path, kube_options: &KubeConfigOptions) -> Result<Config> {
    // KUBECONFIG may be a colon-separated list, like kubectl accepts.
    let mut merged: Option<Kubeconfig> = None;
    for part in std::env::split_paths(path) {
        if part.as_os_str().is_empty() {
            continue;
        }
        let loaded = Kubeconfig::read_from(&part).map_err(|err| {
            config_error(format!(
                "cannot read kubeconfig {}: {err}; check the path given by --kubeconfig or $KUBECONFIG",
                part.display()
            ))
        })?;
        merged = Some(match merged {
            None => loaded,
            Some(previous) => previous.merge(loaded).map_err(|err| {
                config_error(format!("cannot merge kubeconfig {}: {err}", part.display()))
            })?,
        });
    }
    let kubeconfig = merged
        .ok_or_else(|| config_error(format!("kubeconfig path {:?} is empty", path.display())))?;
    Config::from_custom_kubeconfig(kubeconfig, kube_options)
        .await
        .map_err(|err| {
            config_error(format!(
                "kubeconfig {}{}: {err}",
                path.display(),
                kube_options
                    .context
                    .as_deref()
                    .map(|c| format!(" (context {c})"))
                    .unwrap_or_default()
            ))
        })
}

/// Build a client; connection problems surface on the first request, see [`ClusterInfo::fetch`].
pub async fn connect(options: &ClusterOptions) -> Result<Client> {
    let config = load_config(options).await?;
    client_from_config(config)
}

pub fn client_from_config(config: Config) -> Result<Client> {
    let server = config.cluster_url.to_string();
    Client::try_from(config)
        .map_err(|err| config_error(format!("cannot build a client for {server}: {err}")))
}

/// What `ferry cluster-info` reports.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterInfo {
    pub server: String,
    pub version: String,
    pub platform: String,
    pub username: Option<String>,
    pub groups: Vec<String>,
    pub server_side_apply: bool,
}

impl ClusterInfo {
    /// Ask the API server for its version and for the identity it sees (SelfSubjectReview).
    pub async fn fetch(client: &Client, server: &str) -> Result<Self> {
        let version = client
            .apiserver_version()
            .await
            .map_err(|err| Error::Unreachable {
                message: format!(
                    "cannot reach the API server at {server}: {err}; is the cluster up and the kubeconfig current?"
                ),
            })?;
        let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
        let review = SelfSubjectReview::default();
        let (username, groups) = match reviews.create(&PostParams::default(), &review).await {
            Ok(review) => {
                let user = review.status.and_then(|s| s.user_info);
                (
                    user.as_ref().and_then(|u| u.username.clone()),
                    user.and_then(|u| u.groups).unwrap_or_default(),
                )
            }
            Err(err) => {
                tracing::warn!(%server, "SelfSubjectReview failed: {err}");
                (None, Vec::new())
            }
        };
        let minor: u32 = version
            .minor
            .trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .unwrap_or(0);
        Ok(Self {
            server: server.to_string(),
            version: version.git_version,
            platform: version.platform,
            username,
            groups,
            // Server-side apply is GA and always on since Kubernetes 1.22.
            server_side_apply: version.major == "1" && minor >= 22,
        })
    }
}

fn config_error(message: String) -> Error {
    Error::Config { message }
}
