//! THE list of CRDs ferry ships: `ferry install` applies it, `ferry uninstall` and `ferry check`
//! compare the cluster against it, `ferry-agent crds` prints it (deploy/crds.yaml, the chart's
//! crds/), and the tests install it. Generated from the Rust types, never written by hand.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{GitSource, ImagePolicy, ImageRepository, ImageUpdate, Receiver, Release};

/// Every CRD ferry installs, in install order: ferry's own kinds, then the bitnami-compatible
/// SealedSecret (served by ferry's unsealer when enabled).
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![
        GitSource::crd(),
        crate::OCISource::crd(),
        Release::crd(),
        Receiver::crd(),
        ImageRepository::crd(),
        ImagePolicy::crd(),
        ImageUpdate::crd(),
        crate::DeployPolicy::crd(),
        crate::Provider::crd(),
        crate::Alert::crd(),
        crate::sealed::SealedSecret::crd(),
    ]
}

/// [`all_crds`] as JSON objects, the form installers and comparisons work on.
pub fn all_crd_values() -> Vec<serde_json::Value> {
    all_crds()
        .into_iter()
        // A CRD generated from our own types always serialises; nothing is dropped in practice.
        .filter_map(|crd| serde_json::to_value(crd).ok())
        .collect()
}

/// The image automation CRDs alone (ImageRepository, ImagePolicy, ImageUpdate), for tests and
/// tools that only need those.
pub fn image_crds() -> Vec<CustomResourceDefinition> {
    vec![
        ImageRepository::crd(),
        ImagePolicy::crd(),
        ImageUpdate::crd(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_once_with_its_group() {
        let names: Vec<String> = all_crds()
            .iter()
            .map(|crd| crd.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            names,
            [
                "gitsources.ferry.dev",
                "ocisources.ferry.dev",
                "releases.ferry.dev",
                "receivers.ferry.dev",
                "imagerepositories.ferry.dev",
                "imagepolicies.ferry.dev",
                "imageupdates.ferry.dev",
                "deploypolicies.ferry.dev",
                "providers.ferry.dev",
                "alerts.ferry.dev",
                "sealedsecrets.bitnami.com",
            ]
        );
        assert_eq!(all_crd_values().len(), names.len());
        for crd in image_crds() {
            assert!(all_crds().contains(&crd));
        }
    }
}
