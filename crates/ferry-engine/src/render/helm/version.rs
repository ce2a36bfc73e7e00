//! Chart version constraints in Helm's (Masterminds semver) syntax, checked with the `semver`
//! crate: `1.2.3` (exact), `^1.2`, `~1.4`, `>=1.0.0 <2.0.0`, `>=1.0, <2`, `1.2.x`, `*`, and `||`
//! alternatives. Helm resolves ranges itself for repository and OCI charts; ferry uses this to
//! validate ranges early and to check local charts, whose version helm ignores.

use semver::{Version, VersionReq};

/// A parsed constraint: OR of AND-groups.
#[derive(Debug, Clone)]
pub struct Constraint {
    alternatives: Vec<VersionReq>,
}

impl Constraint {
    pub fn matches(&self, version: &Version) -> bool {
        self.alternatives.iter().any(|req| req.matches(version))
    }
}

/// Parse Masterminds syntax; the error says what is wrong with which part.
pub fn parse_constraint(text: &str) -> Result<Constraint, String> {
    let mut alternatives = Vec::new();
    for group in text.split("||") {
        let mut comparators: Vec<String> = Vec::new();
        let mut pending_op: Option<String> = None;
        for token in group.split([' ', ',']).filter(|t| !t.is_empty()) {
            // `>= 1.2` is one comparator written with a space.
            if token.chars().all(|c| "<>=!~^".contains(c)) {
                pending_op = Some(token.to_string());
                continue;
            }
            let token = match pending_op.take() {
                Some(op) => format!("{op}{token}"),
                None => token.to_string(),
            };
            comparators.push(translate(&token));
        }
        if comparators.is_empty() {
            return Err(format!(
                "version constraint {text:?} has an empty alternative"
            ));
        }
        let joined = comparators.join(", ");
        let req = VersionReq::parse(&joined).map_err(|err| {
            format!("version constraint {text:?} is not a valid semver range ({err}); use e.g. \"1.2.3\", \"^1.2\" or \">=1.0.0 <2.0.0\"")
        })?;
        alternatives.push(req);
    }
    Ok(Constraint { alternatives })
}

/// Masterminds → Cargo: a bare version means exactly that version (Cargo would read `^`),
/// `v` prefixes are dropped, `x`/`X` wildcards become `*`.
fn translate(token: &str) -> String {
    let (op, rest) = token.split_at(
        token
            .find(|c: char| c.is_ascii_alphanumeric() || c == '*')
            .unwrap_or(0),
    );
    let rest = rest.strip_prefix('v').unwrap_or(rest);
    let rest = rest.replace(['x', 'X'], "*");
    let op = match op {
        "" if rest.contains('*') => "",
        "" => "=",
        "==" => "=",
        other => other,
    };
    format!("{op}{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(range: &str, version: &str) -> bool {
        parse_constraint(range)
            .unwrap()
            .matches(&Version::parse(version).unwrap())
    }

    #[test]
    fn masterminds_forms() {
        assert!(ok("1.2.3", "1.2.3"));
        assert!(!ok("1.2.3", "1.2.4"));
        assert!(ok(">=1.0.0 <2.0.0", "1.9.0"));
        assert!(!ok(">=1.0.0 <2.0.0", "2.0.0"));
        assert!(ok(">= 1.0, < 2", "1.5.0"));
        assert!(ok("^1.2", "1.9.9"));
        assert!(ok("~1.4", "1.4.7"));
        assert!(!ok("~1.4", "1.5.0"));
        assert!(ok("1.2.x", "1.2.9"));
        assert!(ok("<1 || ^3", "3.1.0"));
        assert!(ok("v1.2.3", "1.2.3"));
        assert!(ok("*", "0.1.0"));
        assert!(parse_constraint("not a version").is_err());
    }
}
