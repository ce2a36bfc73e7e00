//! A Release's render as the agent does it, for the drivers that render a Release outside the
//! agent (`ferry diff release`): its path in the source, its target namespace, its
//! `spec.render` layered over the app's ferry.yaml as untrusted input, the images a
//! `ferry deploy` request pinned. No cluster client: reading Secrets is the driver's job.

use std::path::Path;

use ferry_api::Release;
use ferry_api::deploy::DEPLOY_IMAGES;
use kube::ResourceExt;

use super::RenderRequest;
use super::config::RenderPolicy;
use super::overrides::{DriverSettings, ObjectLayer, layer_onto};
use crate::ownership::ReleaseRef;

/// Why a Release cannot be rendered as the agent would (the spec's fault).
#[derive(Debug, thiserror::Error)]
pub enum ReleaseSpecError {
    #[error("annotation {DEPLOY_IMAGES} is not a JSON list of strings: {source}")]
    DeployImagesJson {
        #[source]
        source: serde_json::Error,
    },
    #[error("annotation {DEPLOY_IMAGES}: {source}")]
    DeployImages {
        #[source]
        source: crate::Error,
    },
    /// `spec.render` is not a valid ferry.yaml layer (the message names the Release).
    #[error("{source}")]
    Render {
        #[source]
        source: crate::Error,
    },
}

/// The Release by its own namespace and name (its objects' owner).
pub fn release_ref(release: &Release) -> ReleaseRef {
    ReleaseRef {
        namespace: release.namespace().unwrap_or_default(),
        name: release.name_any(),
    }
}

/// Where the Release deploys (and keeps its inventory): `spec.targetNamespace`, else its own.
pub fn target_namespace(release: &Release) -> String {
    release
        .spec
        .target_namespace
        .clone()
        .unwrap_or_else(|| release.namespace().unwrap_or_default())
}

/// The render request for the Release's `spec.path` in `checkout` (the source at one revision),
/// as the agent builds it: the target namespace as default, `render` (its `spec.render`, with
/// whatever the driver layered into it from `valuesFrom`/`postBuild`) as an untrusted object
/// layer under `policy`, and the deploy request's image overrides. A tenant writes
/// `spec.render`, so it is exactly as untrusted as the repository: the engine checks it like
/// ferry.yaml (paths inside the source root, chart sources, every name that reaches a
/// renderer's argv); a chart name without a repository is an error, never a path on the
/// driver's disk. Only the driver's own settings become `policy`. Decryption keys are the
/// caller's to add (`age_keys`; never a process's own keys).
pub fn request_for(
    release: &Release,
    checkout: &Path,
    render: Option<serde_json::Value>,
    policy: RenderPolicy,
) -> Result<RenderRequest, ReleaseSpecError> {
    let path = release.spec.path.clone().unwrap_or_else(|| ".".to_string());
    let mut request = RenderRequest::new(checkout, path.trim_start_matches("./"))
        .with_default_namespace(Some(target_namespace(release)));
    if let Some(raw) = release.annotations().get(DEPLOY_IMAGES) {
        let list: Vec<String> = serde_json::from_str(raw)
            .map_err(|source| ReleaseSpecError::DeployImagesJson { source })?;
        request.set_images = super::set_image::parse_all(&list)
            .map_err(|source| ReleaseSpecError::DeployImages { source })?;
    }
    let object = render.map(|value| ObjectLayer {
        object: format!(
            "Release {}/{} spec.render",
            release.namespace().unwrap_or_default(),
            release.name_any()
        ),
        value,
    });
    layer_onto(
        &mut request,
        DriverSettings {
            object,
            policy,
            ..DriverSettings::default()
        },
    )
    .map_err(|source| ReleaseSpecError::Render { source })?;
    Ok(request)
}
