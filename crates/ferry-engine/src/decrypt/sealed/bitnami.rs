//! Whether a bitnami sealed-secrets controller already serves the cluster: `ferry install
//! --sealed-secrets` and the agent both refuse to start a second unsealer beside one (two would
//! both write every SealedSecret's Secret and status, each with its own keys). The unsealer
//! itself runs in the agent (`ferry-agent/src/controllers/unsealer.rs`); this lookup stays in the
//! library because the CLI, which does not link the agent, needs it too.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::ListParams;
use kube::{Api, Client};

use crate::{Error, Result};

/// Label selectors of a bitnami sealed-secrets controller's Deployment: `name=...` is what
/// bitnami's `controller.yaml` release manifest sets, `app.kubernetes.io/name=sealed-secrets`
/// what its Helm chart sets.
pub const BITNAMI_CONTROLLER_SELECTORS: [&str; 2] = [
    "name=sealed-secrets-controller",
    "app.kubernetes.io/name=sealed-secrets",
];

/// The `namespace/name` of a Deployment that looks like a bitnami sealed-secrets controller
/// (see [`BITNAMI_CONTROLLER_SELECTORS`]), searched in `namespaces` (empty: all namespaces).
/// Two unsealers would both write every SealedSecret's Secret and status, each with its own keys,
/// so the agent does not start its own when one is found.
pub async fn find_bitnami_controller(
    client: &Client,
    namespaces: &[String],
) -> Result<Option<String>> {
    let scopes: Vec<Api<Deployment>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    for api in scopes {
        for selector in BITNAMI_CONTROLLER_SELECTORS {
            let found = api
                .list_metadata(&ListParams::default().labels(selector).limit(1))
                .await
                .map_err(|e| {
                    Error::Cluster(format!(
                        "looking for a bitnami sealed-secrets controller (Deployments labelled {selector}): {e}"
                    ))
                })?;
            if let Some(deployment) = found.items.first() {
                return Ok(Some(format!(
                    "{}/{}",
                    deployment.metadata.namespace.as_deref().unwrap_or_default(),
                    deployment.metadata.name.as_deref().unwrap_or_default()
                )));
            }
        }
    }
    Ok(None)
}
