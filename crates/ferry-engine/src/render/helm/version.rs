//! Chart version constraints in Helm's (Masterminds semver) syntax: `1.2.3` (exact), `^1.2`,
//! `~1.4`, `>=1.0.0 <2.0.0`, `>=1.0, <2`, `1.2.x`, `*`, hyphen ranges and `||` alternatives.
//! Helm resolves ranges itself for repository and OCI charts; ferry uses this to validate
//! ranges early and to check local charts, whose version helm ignores. The grammar lives in
//! `ferry-semver`, shared with GitSource tag ranges and image policies.

pub use ferry_semver::Range as Constraint;

use super::super::names::{self, NameError};

/// Parse Masterminds syntax; the error says what is wrong with which part.
pub fn parse_constraint(text: &str) -> Result<Constraint, NameError> {
    names::version_constraint(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use semver::Version;

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
