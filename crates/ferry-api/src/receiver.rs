//! The `Receiver` CRD: a webhook endpoint served by the agent. A verified push event from a git
//! host (GitHub, GitLab, Gitea, Bitbucket) makes the listed GitSources fetch at once; a verified
//! push event from a container registry (Docker Hub, Harbor) makes the listed ImageRepositories
//! scan at once; the generic senders can do either. Modelled on Flux's notification Receiver.
//! [`ReceiverSpec::targets`] is THE reading of `spec.resources` (kinds, wildcards and the rule
//! that a Receiver only ever triggers objects in its own namespace).

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
    /// Sender type; decides how requests are verified and what they trigger.
    #[serde(rename = "type")]
    pub kind: ReceiverType,
    /// Secret in the same namespace whose `token` key is the shared secret (HMAC key for
    /// github / gitea / bitbucket / generic-hmac, compared token for gitlab / generic / harbor,
    /// the `?token=` URL parameter for dockerhub).
    pub secret_ref: LocalObjectReference,
    /// Objects in the Receiver's namespace to trigger: `<name>` or `GitSource/<name>` (fetch),
    /// `ImageRepository/<name>` (scan); `*` (or `ImageRepository/*`) means all of that kind. For
    /// dockerhub and harbor a bare `<name>` is an ImageRepository. When empty: the GitSources
    /// whose URL names the pushed repository (git hosts), or the ImageRepositories whose image
    /// was pushed (registries). Never another namespace.
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
    /// Docker Hub (unsigned): the token travels in the URL, `/hook/<ns>/<name>?token=<token>`.
    Dockerhub,
    /// Harbor: the webhook policy's "Auth Header" is sent verbatim as `Authorization`.
    Harbor,
}

impl ReceiverType {
    /// Senders that describe git pushes (their events fetch GitSources).
    pub fn is_git_host(self) -> bool {
        matches!(
            self,
            Self::Github | Self::Gitlab | Self::Gitea | Self::Bitbucket
        )
    }

    /// Senders that describe image pushes (their events scan ImageRepositories).
    pub fn is_registry(self) -> bool {
        matches!(self, Self::Dockerhub | Self::Harbor)
    }

    /// The name used in `spec.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Gitlab => "gitlab",
            Self::Gitea => "gitea",
            Self::Bitbucket => "bitbucket",
            Self::Generic => "generic",
            Self::GenericHmac => "generic-hmac",
            Self::Dockerhub => "dockerhub",
            Self::Harbor => "harbor",
        }
    }
}

/// The kinds a Receiver can trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TargetKind {
    /// Fetch now (`ferry.dev/reconcile-requested-at` on the GitSource).
    GitSource,
    /// Scan now (`ferry.dev/reconcile-requested-at` on the ImageRepository).
    ImageRepository,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GitSource => "GitSource",
            Self::ImageRepository => "ImageRepository",
        }
    }
}

/// Which objects of one kind, in the Receiver's own namespace, a Receiver triggers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Selection {
    /// `spec.resources` names none of this kind (and is not empty): trigger none.
    #[default]
    None,
    /// `spec.resources` is empty: those the event names (by repository URL or image).
    ByEvent,
    /// `*`: all of them.
    All,
    /// These names.
    Named(std::collections::BTreeSet<String>),
}

impl Selection {
    /// Whether an object called `name` is selected (for [`Selection::ByEvent`] the caller
    /// still matches the event).
    pub fn includes(&self, name: &str) -> bool {
        match self {
            Self::None => false,
            Self::ByEvent | Self::All => true,
            Self::Named(names) => names.contains(name),
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, Self::None)
    }

    fn add(&mut self, name: &str) {
        if name == "*" {
            *self = Self::All;
            return;
        }
        match self {
            Self::All => {}
            Self::Named(names) => {
                names.insert(name.to_string());
            }
            Self::None | Self::ByEvent => {
                *self = Self::Named(std::iter::once(name.to_string()).collect());
            }
        }
    }
}

/// What a Receiver triggers, read from `spec.resources` by [`ReceiverSpec::targets`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Targets {
    pub git_sources: Selection,
    pub image_repositories: Selection,
}

/// A `spec.resources` entry the agent refuses (the whole Receiver triggers nothing until it is
/// fixed: half a configuration is worse than none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidResource {
    /// Position in `spec.resources`.
    pub index: usize,
    /// The entry as written.
    pub entry: String,
    /// Why, and what to write instead.
    pub reason: String,
}

impl std::fmt::Display for InvalidResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "spec.resources[{}] {:?}: {}",
            self.index, self.entry, self.reason
        )
    }
}

impl std::error::Error for InvalidResource {}

/// A Kubernetes object name (DNS-1123 subdomain): what a `spec.resources` name must be. Keeps
/// `..`, `/` and the like out of anything that could end up in an API path.
fn is_object_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric())
}

impl ReceiverSpec {
    /// Read `spec.resources` for this sender type. Entries are `<name>`, `*` or `<Kind>/<name>`
    /// (`GitSource`, `ImageRepository`, case-insensitive); a bare name is a GitSource for git
    /// hosts and the generic types and an ImageRepository for registries. Anything with a
    /// namespace (`<Kind>/<namespace>/<name>`, `<namespace>/<name>`) is refused: a Receiver
    /// only triggers objects in its own namespace, so a tenant cannot make another tenant's
    /// objects fetch or scan (the cross-namespace rule holds without a flag here).
    pub fn targets(&self) -> Result<Targets, InvalidResource> {
        let kind = self.kind;
        let mut targets = Targets::default();
        if self.resources.is_empty() {
            if kind.is_registry() {
                targets.image_repositories = Selection::ByEvent;
            } else {
                targets.git_sources = Selection::ByEvent;
            }
            return Ok(targets);
        }
        for (index, entry) in self.resources.iter().enumerate() {
            let invalid = |reason: String| InvalidResource {
                index,
                entry: entry.clone(),
                reason,
            };
            let trimmed = entry.trim();
            let (target, name) = match trimmed.split_once('/') {
                None if kind.is_registry() => (TargetKind::ImageRepository, trimmed),
                None => (TargetKind::GitSource, trimmed),
                Some((prefix, rest)) => {
                    let target = if prefix.eq_ignore_ascii_case("GitSource") {
                        TargetKind::GitSource
                    } else if prefix.eq_ignore_ascii_case("ImageRepository") {
                        TargetKind::ImageRepository
                    } else {
                        return Err(invalid(format!(
                            "{prefix:?} is not a kind a Receiver triggers, and a Receiver \
                             triggers objects in its own namespace only; write `<name>`, \
                             `GitSource/<name>` or `ImageRepository/<name>`"
                        )));
                    };
                    if rest.contains('/') {
                        return Err(invalid(format!(
                            "names a namespace; a Receiver triggers objects in its own \
                             namespace only: write `{}/<name>` and create the Receiver in the \
                             namespace of the {}",
                            target.as_str(),
                            target.as_str()
                        )));
                    }
                    (target, rest)
                }
            };
            if name != "*" && !is_object_name(name) {
                return Err(invalid(format!(
                    "{name:?} is not an object name (lowercase letters, digits, `-` and `.`) \
                     or `*`"
                )));
            }
            match target {
                TargetKind::GitSource if kind.is_registry() => {
                    return Err(invalid(format!(
                        "a {} Receiver announces image pushes and triggers ImageRepositories \
                         only; use a git host or generic Receiver for GitSources",
                        kind.as_str()
                    )));
                }
                TargetKind::ImageRepository if kind.is_git_host() => {
                    return Err(invalid(format!(
                        "a {} Receiver announces git pushes and triggers GitSources only; use a \
                         dockerhub, harbor, generic or generic-hmac Receiver for \
                         ImageRepositories",
                        kind.as_str()
                    )));
                }
                TargetKind::GitSource => targets.git_sources.add(name),
                TargetKind::ImageRepository => targets.image_repositories.add(name),
            }
        }
        Ok(targets)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: ReceiverType, resources: &[&str]) -> ReceiverSpec {
        ReceiverSpec {
            kind,
            secret_ref: LocalObjectReference {
                name: "token".into(),
            },
            resources: resources.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn named(names: &[&str]) -> Selection {
        Selection::Named(names.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn empty_resources_follow_the_event() {
        let git = spec(ReceiverType::Github, &[]).targets().unwrap();
        assert_eq!(git.git_sources, Selection::ByEvent);
        assert!(git.image_repositories.is_none());
        let hub = spec(ReceiverType::Dockerhub, &[]).targets().unwrap();
        assert_eq!(hub.image_repositories, Selection::ByEvent);
        assert!(hub.git_sources.is_none());
    }

    #[test]
    fn bare_names_depend_on_the_sender() {
        let git = spec(ReceiverType::GenericHmac, &["repo", "ImageRepository/app"])
            .targets()
            .unwrap();
        assert_eq!(git.git_sources, named(&["repo"]));
        assert_eq!(git.image_repositories, named(&["app"]));
        let harbor = spec(ReceiverType::Harbor, &["app", "imagerepository/web"])
            .targets()
            .unwrap();
        assert_eq!(harbor.image_repositories, named(&["app", "web"]));
        assert!(harbor.git_sources.is_none());
        let all = spec(ReceiverType::Generic, &["ImageRepository/*", "x"])
            .targets()
            .unwrap();
        assert_eq!(all.image_repositories, Selection::All);
        assert!(all.image_repositories.includes("anything"));
        assert!(!all.git_sources.includes("y"));
    }

    #[test]
    fn other_namespaces_and_mismatched_kinds_are_refused() {
        for (kind, entry) in [
            (ReceiverType::Harbor, "ImageRepository/team-b/app"),
            (ReceiverType::Harbor, "team-b/app"),
            (ReceiverType::Github, "GitSource/team-b/repo"),
            (ReceiverType::Dockerhub, "GitSource/repo"),
            (ReceiverType::Github, "ImageRepository/app"),
            (ReceiverType::GenericHmac, "ImageRepository/.."),
            (ReceiverType::GenericHmac, "Secret/x"),
            (ReceiverType::Generic, ""),
        ] {
            let err = spec(kind, &["ok", entry]).targets().unwrap_err();
            assert_eq!(err.index, 1, "{entry}");
            assert!(err.to_string().contains(&format!("{entry:?}")), "{err}");
        }
        let err = spec(ReceiverType::Harbor, &["ImageRepository/team-b/app"])
            .targets()
            .unwrap_err();
        assert!(err.reason.contains("own namespace"), "{err}");
    }

    #[test]
    fn type_names_match_the_crd() {
        for kind in [
            ReceiverType::Github,
            ReceiverType::Gitlab,
            ReceiverType::Gitea,
            ReceiverType::Bitbucket,
            ReceiverType::Generic,
            ReceiverType::GenericHmac,
            ReceiverType::Dockerhub,
            ReceiverType::Harbor,
        ] {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::String(kind.as_str().into())
            );
        }
    }
}
