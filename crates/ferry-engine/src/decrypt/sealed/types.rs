//! The `SealedSecret` custom resource (`bitnami.com/v1alpha1`): the type lives in ferry-api
//! (beside ferry's own kinds and THE CRD list, `ferry_api::all_crds`); re-exported here for the
//! crypto and the unsealer, plus its CRD manifest as YAML.

use kube::CustomResourceExt;

pub use ferry_api::sealed::{
    SealedSecret, SealedSecretCondition, SealedSecretSpec, SealedSecretStatus, SecretTemplateSpec,
};

/// The CRD manifest as YAML, for installers.
pub fn crd_yaml() -> String {
    // The derive produces a valid CRD; serialisation of it cannot fail.
    serde_saphyr::to_string(&SealedSecret::crd()).unwrap_or_default()
}
