//! THE cross-namespace reference rule: every controller that follows a reference from one object
//! to another (a Release's `sourceRef` and `dependsOn`, an ImagePolicy's `imageRepositoryRef`, an
//! ImageUpdate's `sourceRef`) asks [`referenced_namespace`], so one agent flag
//! (`--allow-cross-namespace-refs`) means the same thing for every kind.
//!
//! Refused by default, as Flux's multi-tenancy lockdown (`--no-cross-namespace-refs`) does: a
//! tenant who can create objects in namespace A must not make the agent act on namespace B's
//! sources or repositories. A refusal is `Stalled` with reason [`CROSS_NAMESPACE_REF_DENIED`]:
//! only a spec change or a restart of the agent with the flag can fix it.

/// The condition reason every controller sets when it refuses a cross-namespace reference.
pub const CROSS_NAMESPACE_REF_DENIED: &str = "CrossNamespaceRefDenied";

/// A reference into another namespace, refused because the agent does not allow them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} is in namespace {target}, but cross-namespace references are refused ({article} {referrer_kind} may only use objects of its own namespace {own}); move it, or start the agent with --allow-cross-namespace-refs",
    article = indefinite_article(.referrer_kind)
)]
pub struct CrossNamespaceRefused {
    /// What was referenced, e.g. `GitSource app`.
    pub what: String,
    /// The kind of the referring object, e.g. `Release`.
    pub referrer_kind: String,
    /// The referring object's namespace.
    pub own: String,
    /// The namespace the reference points to.
    pub target: String,
}

fn indefinite_article(word: &str) -> &'static str {
    match word.chars().next() {
        Some('A' | 'E' | 'I' | 'O' | 'U' | 'a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

/// The namespace a reference points to: its own `namespace` field, else the referring object's
/// namespace `own`. A different namespace is refused unless `allow_cross_namespace` (the agent's
/// `--allow-cross-namespace-refs`).
///
/// `referrer_kind` and `what` only shape the message (`Release`, `GitSource app`).
pub fn referenced_namespace(
    allow_cross_namespace: bool,
    referrer_kind: &str,
    own: &str,
    referenced: Option<&str>,
    what: &str,
) -> Result<String, CrossNamespaceRefused> {
    // An empty namespace field means "unset", as for every optional Kubernetes namespace field.
    let target = referenced.filter(|n| !n.is_empty()).unwrap_or(own);
    if target != own && !allow_cross_namespace {
        return Err(CrossNamespaceRefused {
            what: what.to_string(),
            referrer_kind: referrer_kind.to_string(),
            own: own.to_string(),
            target: target.to_string(),
        });
    }
    Ok(target.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_namespace_always_allowed() {
        for allow in [false, true] {
            assert_eq!(
                referenced_namespace(allow, "Release", "a", None, "GitSource app"),
                Ok("a".to_string())
            );
            assert_eq!(
                referenced_namespace(allow, "Release", "a", Some("a"), "GitSource app"),
                Ok("a".to_string())
            );
            assert_eq!(
                referenced_namespace(allow, "Release", "a", Some(""), "GitSource app"),
                Ok("a".to_string())
            );
        }
    }

    #[test]
    fn other_namespace_only_with_the_flag() {
        assert_eq!(
            referenced_namespace(true, "ImageUpdate", "a", Some("b"), "GitSource app"),
            Ok("b".to_string())
        );
        let refused = referenced_namespace(false, "ImageUpdate", "a", Some("b"), "GitSource app")
            .unwrap_err();
        assert_eq!(refused.target, "b");
        assert_eq!(
            refused.to_string(),
            "GitSource app is in namespace b, but cross-namespace references are refused (an ImageUpdate may only use objects of its own namespace a); move it, or start the agent with --allow-cross-namespace-refs"
        );
    }
}
