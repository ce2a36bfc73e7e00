//! The `Provider` and `Alert` CRDs: where the agent sends notifications about Releases, sources
//! and image automation (a forge's commit status, a chat webhook, a signed JSON POST) and which
//! events go there. Modelled on
//! Flux's notification-controller (`Provider`, `Alert` in notification.toolkit.fluxcd.io).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::LocalObjectReference;

/// What a Provider speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderType {
    /// Commit status on a Gitea/Forgejo repository (`address`: `https://gitea.example/owner/repo`).
    #[default]
    Gitea,
    /// Commit status on a GitHub repository (`address`: `https://github.com/owner/repo`).
    Github,
    /// Commit status on a GitLab project (`address`: `https://gitlab.com/group/project`).
    Gitlab,
    /// A JSON POST to `address`, signed with HMAC-SHA256 of the body in `X-Signature: sha256=<hex>`.
    GenericHmac,
    /// A Slack incoming webhook.
    Slack,
    /// A Microsoft Teams incoming webhook (MessageCard).
    Msteams,
    /// A Discord webhook.
    Discord,
}

impl ProviderType {
    /// Whether this provider writes commit statuses (needs a commit in the revision).
    pub fn is_forge(self) -> bool {
        matches!(self, Self::Gitea | Self::Github | Self::Gitlab)
    }
}

/// A notification target.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "Provider",
    plural = "providers",
    namespaced,
    status = "NotificationStatus",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ProviderSpec {
    #[serde(rename = "type")]
    pub provider_type: ProviderType,
    /// http(s) URL: the repository for forge providers, the webhook URL otherwise. May instead
    /// come from the Secret's `address` key (then the Secret's value wins, like Flux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Chat channel (Slack), when the webhook allows overriding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Display name for chat messages. Default `ferry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A Secret in the same namespace, read with the namespace's tenant identity: `token` (forge
    /// API token), `address` (webhook URL with its embedded key), `hmacKey` (generic-hmac).
    /// Credentials go only to the host of the provider's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// The link a commit status carries (forge providers): an http(s) URL template where
    /// `{namespace}`, `{name}`, `{revision}` and `{commit}` are replaced by the Release's
    /// namespace, name, attempted revision and commit SHA (each percent-encoded). Without it,
    /// the agent's `--external-url` dashboard link to the Release, if the agent has one. No
    /// user info (credentials) allowed: the link is shown to everyone who can see the commit.
    #[serde(default, rename = "targetURL", skip_serializing_if = "Option::is_none")]
    pub target_url: Option<String>,
    /// Timeout of one delivery attempt (Go duration). Default `15s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Send nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

/// The kinds whose events an Alert can select (`spec.eventSources[].kind`), as Flux's Alert
/// selects Kustomizations, GitRepositories, OCIRepositories and image automation objects.
pub const EVENT_SOURCE_KINDS: [&str; 6] = [
    "Release",
    "GitSource",
    "OCISource",
    "ImageRepository",
    "ImagePolicy",
    "ImageUpdate",
];

/// The Flux kind a user may have written for a ferry kind (for the error message).
pub fn ferry_kind_for_flux(kind: &str) -> Option<&'static str> {
    match kind {
        "Kustomization" | "HelmRelease" => Some("Release"),
        "GitRepository" => Some("GitSource"),
        "OCIRepository" => Some("OCISource"),
        "ImageUpdateAutomation" => Some("ImageUpdate"),
        _ => None,
    }
}

/// Which events (of Releases, sources and image automation) go to which Provider.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "Alert",
    plural = "alerts",
    namespaced,
    status = "NotificationStatus",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.providerRef.name"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AlertSpec {
    /// A Provider in the same namespace.
    pub provider_ref: LocalObjectReference,
    /// The objects whose events are sent: `kind` (`Release`, `GitSource`, `OCISource`,
    /// `ImageRepository`, `ImagePolicy`, `ImageUpdate`), `name` (`*` for all) and, with `*`,
    /// `matchLabels`, in the Alert's namespace.
    pub event_sources: Vec<EventSource>,
    /// `info` (everything, the default) or `error` (failures only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_severity: Option<EventSeverity>,
    /// Regular expressions over the event message; a match is not sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclusion_list: Vec<String>,
    /// A line prepended to chat messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Send nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

/// One `eventSources` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventSource {
    /// One of the kinds `Release`, `GitSource`, `OCISource`, `ImageRepository`, `ImagePolicy`, `ImageUpdate`.
    pub kind: String,
    /// An object name or `*`.
    pub name: String,
    /// With `name: "*"`: only objects carrying all these labels (as Flux's `matchLabels`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventSeverity {
    #[default]
    Info,
    Error,
}

/// Observed state of a Provider or an Alert, with kstatus conditions: `Ready` says whether the
/// last delivery worked (or why the object is refused); `Stalled=True` when only a change of the
/// spec (or the Provider's Secret) helps; `Reconciling=True` after a delivery failure that the
/// next event retries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
