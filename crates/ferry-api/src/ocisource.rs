//! The `OCISource` CRD: an OCI artifact repository (`oci://host/path`) and a reference to follow
//! (tag, semver range or digest), pulled by the agent on an interval and used by Releases like a
//! GitSource. Modelled on Flux's OCIRepository; artifacts made by `flux push artifact` and by
//! `ferry push artifact` are the same format.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::LocalObjectReference;

/// The `spec.sourceRef.kind` of a Release that renders an OCISource's artifact.
pub const OCI_SOURCE_KIND: &str = "OCISource";

/// Desired state of an OCISource.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "OCISource",
    plural = "ocisources",
    shortname = "ocisrc",
    namespaced,
    status = "OCISourceStatus",
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.url"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".status.revision"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct OCISourceSpec {
    /// Repository URL without tag: `oci://ghcr.io/org/app`. Credentials from `secretRef` are sent
    /// only to this registry host (and to the https token service it names).
    pub url: String,
    /// What to follow. Defaults to the tag `latest`.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub oci_ref: Option<OCIRef>,
    /// How often to check the reference (Go duration, e.g. `1m`). Default `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Timeout for one pull (Go duration). Default `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// A Secret in the same namespace of type `kubernetes.io/dockerconfigjson` (or with
    /// `username` + `password`), read with the namespace's tenant identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// Speak plain HTTP to the registry (no TLS). Required for a registry without TLS,
    /// including one on the loopback interface; never assumed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// Stop pulling (the last pulled revision stays available).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

/// Which artifact to follow: `digest` over `semver` over `tag` (like Flux).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OCIRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// A semver range over tags, e.g. `>=1.0.0 <2.0.0`; the highest match wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    /// A manifest digest, `sha256:<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// Observed state of an OCISource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OCISourceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Last pulled revision, `<tag>@sha256:<manifest digest>` (or `sha256:<hex>` for a digest
    /// reference), as Flux writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The artifact's `org.opencontainers.image.source` annotation (where it was built from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_source: Option<String>,
    /// The artifact's `org.opencontainers.image.revision` annotation (e.g. `main@sha1:<hex>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_revision: Option<String>,
    /// When the last successful pull finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetch_time: Option<Time>,
    /// The last `ferry.dev/reconcile-requested-at` value acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}
