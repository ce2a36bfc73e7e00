//! The DeployPolicy decision: given a verified token and a request (Release, commit, image
//! overrides), which policy of the Release's namespace admits it, or, when none does, why each
//! one refused (issuer, audience, subject, a claim, the Release name, image overrides). The
//! commit rules (reachability, rollback) need git and are checked later by the handler with the
//! admitting policy's [`CommitRules`].
//!
//! Patterns are globs where `*` matches any run of characters (including `/` and `:`, so
//! `repo:acme/*:ref:refs/heads/main` works) and everything else matches itself; no regexes, so a
//! tenant's pattern cannot be made expensive.

use ferry_api::DeployPolicy;
use ferry_api::deploy::RevisionRule;
use kube::ResourceExt;

use super::verify::{IssuerConfig, VerifiedToken};

/// What a request asks for, as far as policies care.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    pub release: &'a str,
    pub overrides_images: bool,
}

/// What the admitting policy allows for the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRules {
    /// `namespace/name` of the policy.
    pub policy: String,
    pub reachable_from: Reachability,
    pub allow_rollback: bool,
}

/// Which commits may be deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reachability {
    /// Reachable from this branch's tip.
    Branch(String),
    /// Reachable from this tag.
    Tag(String),
    /// Reachable from any branch (the default).
    AnyBranch,
    /// Any commit the server serves.
    AnyCommit,
}

impl std::fmt::Display for Reachability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reachability::Branch(b) => write!(f, "branch {b}"),
            Reachability::Tag(t) => write!(f, "tag {t}"),
            Reachability::AnyBranch => f.write_str("any branch"),
            Reachability::AnyCommit => f.write_str("any commit"),
        }
    }
}

/// Why no policy admitted a request: one line per policy that names the token's issuer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no DeployPolicy allows this request: {}", .reasons.join("; "))]
pub struct Denied {
    pub reasons: Vec<String>,
}

/// The issuer configurations the policies give for `iss` (deduplicated, in policy order); empty
/// when no policy names it, and then nothing may be fetched.
pub fn issuers_for(policies: &[DeployPolicy], iss: &str) -> Vec<IssuerConfig> {
    let mut out: Vec<IssuerConfig> = Vec::new();
    for p in policies.iter().filter(|p| p.spec.issuer.url == iss) {
        let config = IssuerConfig {
            issuer: p.spec.issuer.url.clone(),
            discovery_url: p.spec.issuer.discovery_url.clone(),
            ca_pem: p.spec.issuer.ca_bundle.clone(),
        };
        if !out.contains(&config) {
            out.push(config);
        }
    }
    out
}

/// The audiences the policies naming `iss` accept.
pub fn audiences_for(policies: &[DeployPolicy], iss: &str) -> std::collections::BTreeSet<String> {
    policies
        .iter()
        .filter(|p| p.spec.issuer.url == iss)
        .map(|p| p.spec.audience.clone())
        .collect()
}

/// The first policy (by name) that admits the request, with its commit rules.
pub fn admit(
    policies: &[DeployPolicy],
    token: &VerifiedToken,
    ask: &Ask<'_>,
) -> Result<CommitRules, Denied> {
    let mut sorted: Vec<&DeployPolicy> = policies.iter().collect();
    sorted.sort_by_key(|p| p.name_any());
    let mut reasons = Vec::new();
    for policy in sorted {
        let id = format!(
            "DeployPolicy {}/{}",
            policy.namespace().unwrap_or_default(),
            policy.name_any()
        );
        match check(policy, token, ask) {
            Ok(rules) => return Ok(rules),
            Err(why) => reasons.push(format!("{id}: {why}")),
        }
    }
    if reasons.is_empty() {
        reasons.push(format!(
            "no DeployPolicy in this namespace names issuer {}",
            token.issuer
        ));
    }
    Err(Denied { reasons })
}

fn check(
    policy: &DeployPolicy,
    token: &VerifiedToken,
    ask: &Ask<'_>,
) -> Result<CommitRules, String> {
    let spec = &policy.spec;
    if spec.issuer.url != token.issuer {
        return Err(format!("issuer is {:?}, not the token's", spec.issuer.url));
    }
    if !token.audiences.contains(&spec.audience) {
        return Err(format!(
            "audience {:?} is not among the token's {:?}",
            spec.audience, token.audiences
        ));
    }
    if !spec.subjects.is_empty() && !spec.subjects.iter().any(|p| glob(p, &token.subject)) {
        return Err(format!(
            "subject {:?} matches none of {:?}",
            token.subject, spec.subjects
        ));
    }
    for (claim, patterns) in &spec.claims {
        match token.claim_text(claim) {
            None => return Err(format!("the token has no claim {claim:?}")),
            Some(value) if !patterns.iter().any(|p| glob(p, &value)) => {
                return Err(format!(
                    "claim {claim} {value:?} matches none of {patterns:?}"
                ));
            }
            Some(_) => {}
        }
    }
    if !spec.releases.iter().any(|p| glob(p, ask.release)) {
        return Err(format!(
            "Release {:?} is not among its releases {:?}",
            ask.release, spec.releases
        ));
    }
    if ask.overrides_images && !spec.allow_image_overrides {
        return Err("image overrides are not allowed (spec.allowImageOverrides)".to_string());
    }
    Ok(CommitRules {
        policy: format!(
            "{}/{}",
            policy.namespace().unwrap_or_default(),
            policy.name_any()
        ),
        reachable_from: reachability(spec.revisions.as_ref())?,
        allow_rollback: spec.allow_rollback,
    })
}

fn reachability(rule: Option<&RevisionRule>) -> Result<Reachability, String> {
    let Some(rule) = rule else {
        return Ok(Reachability::AnyBranch);
    };
    match (&rule.branch, &rule.tag, rule.any_commit) {
        (Some(b), None, false) => Ok(Reachability::Branch(b.clone())),
        (None, Some(t), false) => Ok(Reachability::Tag(t.clone())),
        (None, None, true) => Ok(Reachability::AnyCommit),
        (None, None, false) => Ok(Reachability::AnyBranch),
        _ => Err("spec.revisions sets more than one of branch, tag, anyCommit".to_string()),
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob(pattern: &str, value: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == value;
    }
    let (first, rest) = (parts[0], &parts[1..]);
    let Some(mut remaining) = value.strip_prefix(first) else {
        return false;
    };
    let (last, middle) = match rest.split_last() {
        Some(split) => split,
        None => return true,
    };
    for part in middle {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_api::DeployPolicySpec;
    use ferry_api::deploy::IssuerSpec;
    use serde_json::json;

    const GITHUB: &str = "https://token.actions.githubusercontent.com";

    fn policy(name: &str, spec: DeployPolicySpec) -> DeployPolicy {
        let mut p = DeployPolicy::new(name, spec);
        p.metadata.namespace = Some("shop".to_string());
        p
    }

    fn base() -> DeployPolicySpec {
        DeployPolicySpec {
            issuer: IssuerSpec {
                url: GITHUB.to_string(),
                ..IssuerSpec::default()
            },
            audience: "https://ferry.example".to_string(),
            subjects: vec!["repo:acme/shop:*".to_string()],
            claims: [
                ("repository".to_string(), vec!["acme/shop".to_string()]),
                ("ref".to_string(), vec!["refs/heads/main".to_string()]),
            ]
            .into(),
            releases: vec!["web".to_string(), "worker-*".to_string()],
            ..DeployPolicySpec::default()
        }
    }

    fn token(claims: serde_json::Value) -> VerifiedToken {
        let claims = claims.as_object().cloned().unwrap_or_default();
        VerifiedToken {
            issuer: GITHUB.to_string(),
            subject: claims
                .get("sub")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string(),
            audiences: vec!["https://ferry.example".to_string()],
            claims,
            expires_at: 0,
            replay_key: String::new(),
        }
    }

    fn main_push() -> VerifiedToken {
        token(json!({
            "sub": "repo:acme/shop:ref:refs/heads/main",
            "repository": "acme/shop",
            "ref": "refs/heads/main",
            "environment": "production",
        }))
    }

    fn ask(release: &str) -> Ask<'_> {
        Ask {
            release,
            overrides_images: false,
        }
    }

    #[test]
    fn globs_match_whole_values() {
        assert!(glob("acme/shop", "acme/shop"));
        assert!(!glob("acme/shop", "acme/shop2"));
        assert!(glob(
            "repo:acme/*:ref:refs/heads/main",
            "repo:acme/shop:ref:refs/heads/main"
        ));
        assert!(!glob(
            "repo:acme/*:ref:refs/heads/main",
            "repo:acme/shop:ref:refs/heads/dev"
        ));
        assert!(glob("*", ""));
        assert!(glob("worker-*", "worker-eu"));
        assert!(!glob("worker-*", "web"));
        assert!(glob("a*b*c", "a-x-b-y-c"));
        assert!(!glob("a*b*c", "a-c-b"));
        assert!(!glob("ab*ba", "aba"), "prefix and suffix must not overlap");
    }

    #[test]
    fn a_matching_token_is_admitted_with_the_policy_commit_rules() {
        let mut spec = base();
        spec.revisions = Some(RevisionRule {
            branch: Some("main".into()),
            ..RevisionRule::default()
        });
        let policies = vec![policy("ci", spec)];
        let rules = admit(&policies, &main_push(), &ask("worker-eu")).expect("admitted");
        assert_eq!(rules.policy, "shop/ci");
        assert_eq!(rules.reachable_from, Reachability::Branch("main".into()));
        assert!(!rules.allow_rollback);
    }

    #[test]
    fn each_denial_names_the_rule_that_failed() {
        let policies = vec![policy("ci", base())];
        let denied = |t: &VerifiedToken, a: Ask<'_>| {
            admit(&policies, t, &a).expect_err("denied").to_string()
        };
        let feature = token(json!({
            "sub": "repo:acme/shop:ref:refs/heads/feature",
            "repository": "acme/shop", "ref": "refs/heads/feature",
        }));
        let why = denied(&feature, ask("web"));
        assert!(
            why.contains("DeployPolicy shop/ci") && why.contains("claim ref"),
            "{why}"
        );
        let fork = token(json!({
            "sub": "repo:evil/shop:ref:refs/heads/main",
            "repository": "evil/shop", "ref": "refs/heads/main",
        }));
        assert!(denied(&fork, ask("web")).contains("subject"));
        let no_ref = token(json!({"sub": "repo:acme/shop:x", "repository": "acme/shop"}));
        assert!(denied(&no_ref, ask("web")).contains("no claim \"ref\""));
        assert!(denied(&main_push(), ask("db")).contains("Release \"db\""));
        let images = Ask {
            release: "web",
            overrides_images: true,
        };
        assert!(denied(&main_push(), images).contains("allowImageOverrides"));
        let mut other_aud = main_push();
        other_aud.audiences = vec!["something-else".into()];
        assert!(denied(&other_aud, ask("web")).contains("audience"));
    }

    #[test]
    fn any_admitting_policy_wins_and_issuers_come_only_from_policies() {
        let mut strict = base();
        strict.releases = vec!["db".into()];
        let mut images = base();
        images.allow_image_overrides = true;
        images.allow_rollback = true;
        images.issuer.discovery_url =
            Some("https://alt.example/.well-known/openid-configuration".into());
        let policies = vec![policy("a-strict", strict), policy("b-images", images)];
        let rules = admit(
            &policies,
            &main_push(),
            &Ask {
                release: "web",
                overrides_images: true,
            },
        )
        .expect("b admits");
        assert_eq!(rules.policy, "shop/b-images");
        assert!(rules.allow_rollback);
        assert_eq!(issuers_for(&policies, GITHUB).len(), 2);
        assert!(issuers_for(&policies, "https://evil.example").is_empty());
        assert_eq!(audiences_for(&policies, GITHUB).len(), 1);
    }

    #[test]
    fn contradictory_revision_rules_refuse() {
        let mut spec = base();
        spec.revisions = Some(RevisionRule {
            branch: Some("main".into()),
            tag: Some("v1".into()),
            any_commit: false,
        });
        let policies = vec![policy("ci", spec)];
        let why = admit(&policies, &main_push(), &ask("web")).expect_err("denied");
        assert!(why.to_string().contains("spec.revisions"), "{why}");
    }
}
