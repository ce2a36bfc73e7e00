//! What a Release's Helm render needs from the cluster, gathered before the (cluster-free)
//! render runs: the credentials of `spec.render.helm.chart.secretRef` (read as the Release's
//! own identity, bound to the chart source's host), the cluster's capabilities for
//! `.Capabilities` (from the shared discovery cache), and the agent's chart cache.
//!
//! The Secret holds `username` and `password` (HTTP repositories and OCI registries, Flux's
//! HelmRepository keys), or, for an OCI registry, a `.dockerconfigjson` whose entry for the
//! registry's host is used. Its values never appear in a message.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use ferry_engine::render::RenderRequest;
use ferry_engine::render::helm::cache::{ChartCache, DEFAULT_MAX_BYTES};
use ferry_engine::render::request::ChartCredentials;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::context::{Context, Identity};

/// Why a Release's Helm inputs could not be gathered (the message names the Secret, never a
/// value).
#[derive(Debug, thiserror::Error)]
pub enum HelmInputError {
    #[error(
        "cannot read chart credentials Secret {secret} as {identity}: {source}; grant it `get` on that Secret (spec.render.helm.chart.secretRef)"
    )]
    Read {
        secret: String,
        identity: String,
        #[source]
        source: kube::Error,
    },
    #[error("chart credentials Secret {0} does not exist")]
    Missing(String),
    #[error(
        "chart credentials Secret {secret} has no `username`/`password`{oci}; add them (Flux HelmRepository keys)"
    )]
    NoCredentials { secret: String, oci: String },
    #[error("spec.render.helm.chart.secretRef needs a chart `repo` or `oci` with a host")]
    NoHost,
    #[error("reading the cluster's API versions for helm's .Capabilities: {0}")]
    Capabilities(#[source] ferry_engine::Error),
}

/// Fill `request`'s chart cache and, for a helm app, its chart credentials and capabilities.
pub async fn prepare(
    request: &mut RenderRequest,
    namespace: &str,
    client: &Client,
    identity: &Identity,
    ctx: &Context,
) -> Result<(), HelmInputError> {
    request.chart_cache = chart_cache(&ctx.options.cache_dir);
    // Only a helm app needs the rest (no reads for the others); a broken app is left to the
    // render, which says what is wrong with it.
    let helm = ferry_engine::render::app::kind_of(request)
        .is_ok_and(|kind| kind == ferry_engine::render::config::RendererKind::Helm);
    if !helm {
        return Ok(());
    }
    request.capabilities = Some(
        ferry_engine::cluster::capabilities::of(Some(&ctx.discovery), client)
            .await
            .map_err(HelmInputError::Capabilities)?,
    );
    let chart = request
        .spec
        .as_ref()
        .and_then(|spec| spec.config.helm.as_ref())
        .and_then(|helm| helm.chart.as_ref());
    let Some((chart, secret_ref)) = chart.and_then(|c| c.secret_ref.as_ref().map(|s| (c, s)))
    else {
        return Ok(());
    };
    let host = chart.host().ok_or(HelmInputError::NoHost)?;
    let shown = format!("{namespace}/{}", secret_ref.name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets
        .get_opt(&secret_ref.name)
        .await
        .map_err(|source| HelmInputError::Read {
            secret: shown.clone(),
            identity: identity.to_string(),
            source,
        })?
        .ok_or_else(|| HelmInputError::Missing(shown.clone()))?;
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    let (username, password) = credentials(&data, &host, chart.oci.is_some()).ok_or_else(|| {
        HelmInputError::NoCredentials {
            secret: shown.clone(),
            oci: if chart.oci.is_some() {
                format!(" and no .dockerconfigjson entry for {host}")
            } else {
                String::new()
            },
        }
    })?;
    request.chart_credentials = Some(ChartCredentials {
        host,
        username,
        password,
        origin: format!("Secret {shown}"),
    });
    Ok(())
}

/// `username`/`password`, else (OCI) the `.dockerconfigjson` entry for `host`.
fn credentials(
    data: &BTreeMap<String, Vec<u8>>,
    host: &str,
    oci: bool,
) -> Option<(String, String)> {
    let text = |key: &str| {
        data.get(key)
            .and_then(|v| String::from_utf8(v.clone()).ok())
            .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
    };
    if let (Some(user), Some(password)) = (text("username"), text("password")) {
        return Some((user, password));
    }
    if !oci {
        return None;
    }
    let config: serde_json::Value = serde_json::from_slice(data.get(".dockerconfigjson")?).ok()?;
    let auths = config.get("auths")?.as_object()?;
    let (_, entry) = auths
        .iter()
        .find(|(key, _)| registry_host(key) == host.to_ascii_lowercase())?;
    let field = |name: &str| entry.get(name).and_then(|v| v.as_str()).map(str::to_string);
    if let (Some(user), Some(password)) = (field("username"), field("password")) {
        return Some((user, password));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(field("auth")?)
        .ok()?;
    let (user, password) = String::from_utf8(decoded)
        .ok()?
        .split_once(':')
        .map(|(u, p)| (u.to_string(), p.to_string()))?;
    Some((user, password))
}

/// A docker config `auths` key (`host`, `https://host/v1/`) → `host[:port]`, lower-cased.
fn registry_host(key: &str) -> String {
    let rest = key.split_once("://").map_or(key, |(_, rest)| rest);
    rest.split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// One cache per cache directory, shared by every Release of this process.
fn chart_cache(cache_dir: &std::path::Path) -> Option<Arc<ChartCache>> {
    static CACHES: OnceLock<Mutex<BTreeMap<PathBuf, Arc<ChartCache>>>> = OnceLock::new();
    let dir = cache_dir.join("charts");
    let mut caches = CACHES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(cache) = caches.get(&dir) {
        return Some(cache.clone());
    }
    match ChartCache::new(&dir, DEFAULT_MAX_BYTES) {
        Ok(cache) => {
            let cache = Arc::new(cache);
            caches.insert(dir, cache.clone());
            Some(cache)
        }
        Err(err) => {
            tracing::warn!("no chart cache, charts are pulled on every render: {err}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(entries: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn credentials_from_basic_keys_or_a_docker_config_for_the_host_only() {
        let basic = data(&[("username", "u"), ("password", "p\n")]);
        assert_eq!(
            credentials(&basic, "charts.example", false),
            Some(("u".into(), "p".into()))
        );
        let auth = base64::engine::general_purpose::STANDARD.encode("robot:s3cret");
        let docker = data(&[(
            ".dockerconfigjson",
            &format!(
                r#"{{"auths":{{"https://Registry.Example:5000/v1/":{{"auth":"{auth}"}},"other.example":{{"username":"x","password":"y"}}}}}}"#
            ),
        )]);
        assert_eq!(
            credentials(&docker, "registry.example:5000", true),
            Some(("robot".into(), "s3cret".into()))
        );
        assert_eq!(credentials(&docker, "evil.example", true), None);
        assert_eq!(
            credentials(&docker, "registry.example:5000", false),
            None,
            "docker configs only for OCI registries"
        );
    }
}
