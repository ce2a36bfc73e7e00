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
    #[error(
        "Release {release}: annotation {DEPLOY_IMAGES} is not a JSON list of NAME=IMAGE strings: {source}"
    )]
    DeployImagesJson {
        release: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("Release {release}: annotation {DEPLOY_IMAGES}: {source}")]
    DeployImages {
        release: String,
        #[source]
        source: crate::Error,
    },
    #[error("Release {release}: {source}")]
    Render {
        release: String,
        #[source]
        source: crate::Error,
    },
}

/// `namespace/name` of the Release, for messages.
fn name_of(release: &Release) -> String {
    format!(
        "{}/{}",
        release.namespace().unwrap_or_default(),
        release.name_any()
    )
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
/// as the agent builds it: the target namespace as default, `spec.render` as an untrusted
/// object layer under `policy`, and the deploy request's image overrides. Decryption keys are
/// the caller's to add (`age_keys`; never a process's own keys).
pub fn request_for(
    release: &Release,
    checkout: &Path,
    policy: RenderPolicy,
) -> Result<RenderRequest, ReleaseSpecError> {
    let release_name = name_of(release);
    let path = release.spec.path.clone().unwrap_or_else(|| ".".to_string());
    let mut request = RenderRequest::new(checkout, path.trim_start_matches("./"))
        .with_default_namespace(Some(target_namespace(release)));
    if let Some(raw) = release.annotations().get(DEPLOY_IMAGES) {
        let list: Vec<String> =
            serde_json::from_str(raw).map_err(|source| ReleaseSpecError::DeployImagesJson {
                release: release_name.clone(),
                source,
            })?;
        request.set_images = super::set_image::parse_all(&list).map_err(|source| {
            ReleaseSpecError::DeployImages {
                release: release_name.clone(),
                source,
            }
        })?;
    }
    let object = release.spec.render.clone().map(|value| ObjectLayer {
        object: format!("Release {release_name} spec.render"),
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
    .map_err(|source| ReleaseSpecError::Render {
        release: release_name,
        source,
    })?;
    Ok(request)
}
