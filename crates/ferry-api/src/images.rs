//! Image automation CRDs (owned by ferry-images): `ImageRepository` (what to scan in a
//! registry), `ImagePolicy` (which tag is the latest) and `ImageUpdate` (write the latest images
//! back to git). Modelled on Flux's image-reflector and image-automation APIs so that Flux users
//! recognise the fields.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{LocalObjectReference, NamespacedObjectReference, SourceReference};

/// A container image repository to scan for tags.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "ImageRepository",
    plural = "imagerepositories",
    shortname = "imagerepo",
    namespaced,
    status = "ImageRepositoryStatus",
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".spec.image"}"#,
    printcolumn = r#"{"name":"Tags","type":"integer","jsonPath":".status.lastScanResult.tagCount"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Last scan","type":"date","jsonPath":".status.lastScanResult.scanTime"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ImageRepositorySpec {
    /// Image name without tag, e.g. `ghcr.io/org/app`, `nginx`, `127.0.0.1:5000/app`.
    pub image: String,
    /// How often to scan (Go duration). Default `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Timeout of one scan (Go duration). Default `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Registry credentials: a `kubernetes.io/dockerconfigjson` Secret (`.dockerconfigjson`),
    /// or keys `username` + `password`, or `token` (a bearer token sent as is). Docker Hub,
    /// GHCR, Harbor and ECR-style token services are handled by the bearer-token flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// Secret with `ca.crt` (a PEM CA bundle trusted in addition to the system roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_secret_ref: Option<LocalObjectReference>,
    /// Allow plain HTTP (and any TLS certificate). Loopback registries may use HTTP regardless.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// Regular expressions of tags to ignore. Default `["^.*\\.sig$"]` (cosign signatures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusion_list: Option<Vec<String>>,
    /// Stop scanning.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageRepositoryStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The image as scanned (registry host and path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canonical_image_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scan_result: Option<ScanResult>,
    /// The last `ferry.dev/reconcile-requested-at` value acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanResult {
    /// Tags after exclusions.
    pub tag_count: i64,
    pub scan_time: Option<Time>,
    /// A few of the most recent tags (by name, descending), for humans.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latest_tags: Vec<String>,
    /// HTTP requests the last scan needed (1 when the registry answered "not modified").
    #[serde(default)]
    pub requests: i64,
}

/// Which tag of an ImageRepository is the latest.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "ImagePolicy",
    plural = "imagepolicies",
    shortname = "imagepol",
    namespaced,
    status = "ImagePolicyStatus",
    printcolumn = r#"{"name":"Latest","type":"string","jsonPath":".status.latestImage"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Changed","type":"date","jsonPath":".status.lastChangeTime"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ImagePolicySpec {
    /// The ImageRepository whose tags are chosen from (same namespace by default).
    pub image_repository_ref: NamespacedObjectReference,
    /// Exactly one of semver, numerical, alphabetical.
    pub policy: ImagePolicyChoice,
    /// Only tags matching `pattern` are considered; `extract` (e.g. `$ts`) is what is ordered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_tags: Option<TagFilter>,
    /// `Always` resolves the chosen tag's digest and pins it (`tag@sha256:…`). Default `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest_reflection_policy: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePolicyChoice {
    /// A Masterminds/semver v3 range, e.g. `>=1.0 <2.0`, `~1.2`, `^1.2`, `1.2.x`, `>=1.0.0-0`
    /// (a range naming a pre-release includes pre-releases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<SemverPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numerical: Option<OrderPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alphabetical: Option<OrderPolicy>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SemverPolicy {
    pub range: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderPolicy {
    /// `asc` (default: the highest wins) or `desc` (the lowest wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TagFilter {
    /// A regular expression; named groups may be used by `extract`.
    pub pattern: String,
    /// A template over the pattern's groups, e.g. `$ts` or `${ts}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `repo:tag` or `repo:tag@sha256:…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_image: Option<String>,
    /// The latest image before the last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_image: Option<String>,
    /// When `latestImage` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change_time: Option<Time>,
}

/// Write the latest images of the policies in this namespace back to a git repository.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "ImageUpdate",
    plural = "imageupdates",
    shortname = "imageupd",
    namespaced,
    status = "ImageUpdateStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Last push","type":"date","jsonPath":".status.lastPushTime"}"#,
    printcolumn = r#"{"name":"Commit","type":"string","jsonPath":".status.lastPushCommit"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ImageUpdateSpec {
    /// The GitSource whose URL and credentials are used (`kind: GitSource`).
    pub source_ref: SourceReference,
    /// How often to run (Go duration). Default `1m`. Policy changes also trigger a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    pub git: ImageUpdateGit,
    #[serde(default)]
    pub update: UpdateStrategy,
    /// Rewrite a value back to the policy's latest image even when a human changed it after the
    /// automation's last write (e.g. a manual rollback). Default false: a manual change stands
    /// until the policy's latest image changes again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub override_manual_changes: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageUpdateGit {
    /// Branch to check out. Default: the GitSource's branch, else `main`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout_branch: Option<String>,
    pub commit: CommitSpec,
    /// Branch to push to. Default: the checkout branch. `{hash}` in the name is replaced by a
    /// short hash of the change set, giving a new branch per update (for review).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_branch: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommitSpec {
    pub author: CommitAuthor,
    /// Commit message template. Placeholders: `{automation}`, `{changes}` (one line per change:
    /// `file:line what: from -> to`), `{images}` (one line per policy: `policy: from -> to`).
    /// Default: `ferry: update images\n\n{images}\n\nFiles:\n{changes}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_template: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommitAuthor {
    pub name: String,
    pub email: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStrategy {
    /// Directory (relative to the repository root) to update. Default: the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Kustomization `images:` entries (by `name`) to keep at a policy's latest image, for
    /// entries without setter markers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kustomize_images: Vec<KustomizeImage>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KustomizeImage {
    /// The entry's `name`.
    pub name: String,
    /// The ImagePolicy (same namespace by default).
    pub policy: NamespacedObjectReference,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageUpdateStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_automation_run_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_push_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_push_time: Option<Time>,
    /// Branch of the last push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_push_branch: Option<String>,
    /// Per policy (`namespace:name`), the image this automation last wrote; a value in git that
    /// differs while the policy still wants this image is a manual change and is left alone.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub written_images: BTreeMap<String, String>,
    /// The last `ferry.dev/reconcile-requested-at` value acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}
