//! The `Receiver` CRD: a webhook endpoint served by the agent. A verified push event from GitHub,
//! GitLab, Gitea, Bitbucket or a generic sender makes the listed GitSources fetch at once.
//! Modelled on Flux's notification Receiver.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::LocalObjectReference;

/// Desired state of a Receiver.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "Receiver",
    plural = "receivers",
    shortname = "rcv",
    namespaced,
    status = "ReceiverStatus",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Path","type":"string","jsonPath":".status.webhookPath"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverSpec {
    /// Sender type; decides how requests are verified.
    #[serde(rename = "type")]
    pub kind: ReceiverType,
    /// Secret in the same namespace whose `token` key is the shared secret (HMAC key for
    /// github / gitea / bitbucket / generic-hmac, compared token for gitlab / generic).
    pub secret_ref: LocalObjectReference,
    /// GitSources (same namespace) to fetch on a push; `*` means all of them. When empty, the
    /// GitSources whose URL names the pushed repository are fetched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
}

/// Supported webhook senders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReceiverType {
    /// `X-Hub-Signature-256: sha256=<hmac>`.
    #[default]
    Github,
    /// `X-Gitlab-Token: <token>`.
    Gitlab,
    /// `X-Gitea-Signature: <hex hmac>`.
    Gitea,
    /// `X-Hub-Signature: sha256=<hmac>` (Bitbucket Server / Data Center webhook secret).
    Bitbucket,
    /// `Authorization: Bearer <token>`.
    Generic,
    /// `X-Signature: sha256=<hmac>`.
    GenericHmac,
}

/// Observed state of a Receiver.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Where to point the sender: `/hook/<namespace>/<name>` on the agent's webhook port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_path: Option<String>,
}
