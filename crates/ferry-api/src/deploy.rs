//! The `DeployPolicy` CRD: who may ask the agent to deploy a commit to the Releases of one
//! namespace, without cluster credentials (`ferry deploy`, docs/ci.md). A request carries a CI
//! system's OIDC ID token (GitHub Actions, GitLab CI, Azure DevOps, Jenkins, another cluster's
//! service-account tokens); the agent verifies it against the issuer named here and matches its
//! claims against the rules. Also the annotations by which an accepted request pins a Release to
//! its commit for the Release controller ([`DEPLOY_REVISION`], [`DEPLOY_REQUEST`], [`DEPLOY_IMAGES`]).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotation on a Release: the full commit SHA an accepted deploy request pinned it to. The
/// Release applies that commit of its GitSource's repository (not the GitSource's current
/// revision) until the next deploy or until the annotation is removed.
pub const DEPLOY_REVISION: &str = "ferry.dev/deploy-revision";
/// Annotation on a Release: the id of the deploy request that set [`DEPLOY_REVISION`]; the
/// Release controller copies it to `status.lastHandledDeployRequest` when it has applied it.
pub const DEPLOY_REQUEST: &str = "ferry.dev/deploy-request";
/// Annotation on a Release: image overrides of the deploy request (JSON list of
/// `NAME=IMAGE`, the syntax of `ferry apply --set-image`), when its policy allows them.
pub const DEPLOY_IMAGES: &str = "ferry.dev/deploy-images";

/// Who may deploy which Releases of this namespace, and which commits.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "DeployPolicy",
    plural = "deploypolicies",
    shortname = "dp",
    namespaced,
    printcolumn = r#"{"name":"Issuer","type":"string","jsonPath":".spec.issuer.url"}"#,
    printcolumn = r#"{"name":"Audience","type":"string","jsonPath":".spec.audience"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DeployPolicySpec {
    /// The OIDC issuer whose tokens this policy accepts.
    pub issuer: IssuerSpec,
    /// The audience the token must be issued for (`aud`), e.g. the agent's URL. Required: a
    /// token minted for another service must never deploy here.
    pub audience: String,
    /// Patterns the token's `sub` must match (one of them); `*` matches any run of characters.
    /// Empty: any subject (then `claims` should pin the repository).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<String>,
    /// Claims the token must carry, each matching one of its patterns (`repository`, `ref`,
    /// `environment`, `project_path`, ...). A missing claim never matches.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub claims: std::collections::BTreeMap<String, Vec<String>>,
    /// Names (patterns) of the Releases in this namespace a request may deploy.
    pub releases: Vec<String>,
    /// Which commits may be deployed. Default: commits reachable from any branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revisions: Option<RevisionRule>,
    /// Whether a request may replace container images (`ferry deploy --set-image`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_image_overrides: bool,
    /// Whether a commit that is not a descendant of the deployed one (an older commit, or one
    /// on an unrelated history) may be deployed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_rollback: bool,
}

/// An OIDC issuer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerSpec {
    /// The issuer URL, exactly as the token's `iss` claim (e.g.
    /// `https://token.actions.githubusercontent.com`).
    pub url: String,
    /// Where to read the discovery document when the issuer's own URL is not reachable from
    /// the agent (another cluster's `https://kubernetes.default.svc`). Default:
    /// `<url>/.well-known/openid-configuration`.
    #[serde(
        default,
        rename = "discoveryURL",
        skip_serializing_if = "Option::is_none"
    )]
    pub discovery_url: Option<String>,
    /// PEM CA certificates for the issuer's TLS, in addition to the agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
}

/// Which commits a request may deploy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRule {
    /// Only commits reachable from this branch (its current tip or an ancestor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Only commits reachable from this tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Any commit the repository serves, even one on no branch.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub any_commit: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn the_policy_reads_as_documented() {
        let spec: DeployPolicySpec = serde_json::from_value(serde_json::json!({
            "issuer": {"url": "https://token.actions.githubusercontent.com"},
            "audience": "https://ferry.example.com",
            "subjects": ["repo:acme/shop:ref:refs/heads/main"],
            "claims": {"repository": ["acme/shop"], "environment": ["production"]},
            "releases": ["web", "worker-*"],
            "revisions": {"branch": "main"},
            "allowRollback": true
        }))
        .expect("parses");
        assert_eq!(
            spec.issuer.url,
            "https://token.actions.githubusercontent.com"
        );
        assert_eq!(spec.claims["environment"], vec!["production".to_string()]);
        assert_eq!(
            spec.revisions.and_then(|r| r.branch).as_deref(),
            Some("main")
        );
        assert!(spec.allow_rollback && !spec.allow_image_overrides);
        assert_eq!(
            DeployPolicy::crd().metadata.name.as_deref(),
            Some("deploypolicies.ferry.dev")
        );
    }
}
