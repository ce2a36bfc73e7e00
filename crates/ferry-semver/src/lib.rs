//! Masterminds/semver v3-compatible versions and ranges (what Flux image policies use), on top of
//! the `semver` crate: lenient versions (`v1.2`, `1`), `||`, comma/space AND, `~`, `~>`, `^`,
//! wildcards (`1.2.x`, `*`), hyphen ranges, and Masterminds' pre-release rule: a pre-release
//! version only satisfies a comparator whose own version has a pre-release (`>=1.0.0-0`).
#![forbid(unsafe_code)]

use std::cmp::Ordering;
use std::fmt;

use semver::{BuildMetadata, Prerelease, Version};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid semver range {range:?}: {reason}")]
pub struct RangeError {
    pub range: String,
    pub reason: String,
}

/// Parse a version the way Masterminds' `NewVersion` does: optional `v`, missing minor/patch
/// default to 0, pre-release and build metadata kept.
pub fn parse_version(text: &str) -> Option<Version> {
    // Missing minor/patch are zeros in a version; only constraints read them as wildcards.
    let core = text.trim().split(['-', '+']).next()?;
    if core.contains(['x', 'X', '*']) {
        return None;
    }
    let partial = parse_partial(text)?;
    partial.major?;
    Some(partial.to_version())
}

/// A version whose minor/patch may be missing or wildcards (`1`, `1.2`, `1.x`, `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Partial {
    major: Option<u64>,
    minor: Option<u64>,
    patch: Option<u64>,
    pre: Prerelease,
    build: BuildMetadata,
}

impl Partial {
    fn to_version(&self) -> Version {
        Version {
            major: self.major.unwrap_or(0),
            minor: self.minor.unwrap_or(0),
            patch: self.patch.unwrap_or(0),
            pre: self.pre.clone(),
            build: self.build.clone(),
        }
    }
}

fn parse_partial(text: &str) -> Option<Partial> {
    let text = text.trim();
    let text = text
        .strip_prefix('v')
        .or_else(|| text.strip_prefix('V'))
        .unwrap_or(text);
    if text.is_empty() {
        return None;
    }
    let (text, build) = match text.split_once('+') {
        Some((t, b)) => (t, BuildMetadata::new(b).ok()?),
        None => (text, BuildMetadata::EMPTY),
    };
    // The pre-release starts at the first '-' after the numeric core.
    let core_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'x' || c == 'X' || c == '*'))
        .unwrap_or(text.len());
    let (core, pre) = if core_end < text.len() {
        let rest = &text[core_end..];
        let pre = rest.strip_prefix('-')?;
        (&text[..core_end], Prerelease::new(pre).ok()?)
    } else {
        (text, Prerelease::EMPTY)
    };
    let mut parts = core.split('.');
    let mut next = || -> Option<Option<Option<u64>>> {
        match parts.next() {
            None => Some(None),
            Some("x" | "X" | "*") => Some(Some(None)),
            Some(n) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => {
                Some(Some(Some(n.parse().ok()?)))
            }
            Some(_) => None,
        }
    };
    let major = next()?.flatten();
    let minor = next()?.flatten();
    let patch = next()?.flatten();
    if parts.next().is_some() {
        return None;
    }
    // Nothing may follow a wildcard.
    if (major.is_none() && (minor.is_some() || patch.is_some()))
        || (minor.is_none() && patch.is_some())
    {
        return None;
    }
    Some(Partial {
        major,
        minor,
        patch,
        pre,
        build,
    })
}

/// One primitive comparison against a full version.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bound {
    Ge(Version),
    Gt(Version),
    Le(Version),
    Lt(Version),
    Eq(Version),
    Ne(Version),
    /// Not in [lower, upper), for `!=` with wildcards.
    Outside(Version, Version),
    Any,
}

impl Bound {
    fn check(&self, v: &Version) -> bool {
        let cmp = |a: &Version, b: &Version| cmp_precedence(a, b);
        match self {
            Bound::Ge(c) => cmp(v, c) != Ordering::Less,
            Bound::Gt(c) => cmp(v, c) == Ordering::Greater,
            Bound::Le(c) => cmp(v, c) != Ordering::Greater,
            Bound::Lt(c) => cmp(v, c) == Ordering::Less,
            Bound::Eq(c) => cmp(v, c) == Ordering::Equal,
            Bound::Ne(c) => cmp(v, c) != Ordering::Equal,
            Bound::Outside(lo, hi) => cmp(v, lo) == Ordering::Less || cmp(v, hi) != Ordering::Less,
            Bound::Any => true,
        }
    }
}

/// SemVer precedence (build metadata ignored), as Masterminds compares.
pub fn cmp_precedence(a: &Version, b: &Version) -> Ordering {
    (a.major, a.minor, a.patch)
        .cmp(&(b.major, b.minor, b.patch))
        .then_with(|| a.pre.cmp(&b.pre))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Comparator {
    bounds: Vec<Bound>,
    /// Whether the comparator's own version named a pre-release.
    allows_pre: bool,
}

impl Comparator {
    fn check(&self, v: &Version) -> bool {
        if !v.pre.is_empty() && !self.allows_pre {
            return false;
        }
        self.bounds.iter().all(|b| b.check(v))
    }
}

/// A parsed range: OR of AND-groups of comparators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    source: String,
    groups: Vec<Vec<Comparator>>,
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Range {
    pub fn parse(text: &str) -> Result<Self, RangeError> {
        let err = |reason: String| RangeError {
            range: text.to_string(),
            reason,
        };
        if text.trim().is_empty() {
            return Err(err(
                "empty range; use e.g. \">=1.0.0 <2.0.0\" or \"*\"".into()
            ));
        }
        let mut groups = Vec::new();
        for group in text.split("||") {
            let tokens = tokenize(group);
            if tokens.is_empty() {
                return Err(err("empty alternative around `||`".into()));
            }
            let mut comparators = Vec::new();
            let mut i = 0;
            while i < tokens.len() {
                // Hyphen range: `A - B`.
                if i + 2 < tokens.len() && tokens[i + 1] == "-" {
                    let lo = parse_partial(&tokens[i])
                        .ok_or_else(|| err(format!("{:?} is not a version", tokens[i])))?;
                    let hi = parse_partial(&tokens[i + 2])
                        .ok_or_else(|| err(format!("{:?} is not a version", tokens[i + 2])))?;
                    comparators.push(Comparator {
                        allows_pre: !lo.pre.is_empty() || !hi.pre.is_empty(),
                        bounds: vec![Bound::Ge(lo.to_version()), le_bound(&hi)],
                    });
                    i += 3;
                    continue;
                }
                comparators.push(parse_comparator(&tokens[i]).map_err(err)?);
                i += 1;
            }
            groups.push(comparators);
        }
        Ok(Self {
            source: text.trim().to_string(),
            groups,
        })
    }

    pub fn matches(&self, v: &Version) -> bool {
        self.groups
            .iter()
            .any(|group| group.iter().all(|c| c.check(v)))
    }
}

/// Split an AND-group on commas and whitespace, gluing an operator to the version after it
/// (`>= 1.2` is one comparator), and keeping a lone `-` for hyphen ranges.
fn tokenize(group: &str) -> Vec<String> {
    let raw: Vec<&str> = group
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .collect();
    let mut out: Vec<String> = Vec::new();
    let mut pending_op: Option<String> = None;
    for token in raw {
        if token.chars().all(|c| "<>=!~^".contains(c)) {
            pending_op = Some(token.to_string());
            continue;
        }
        match pending_op.take() {
            Some(op) => out.push(format!("{op}{token}")),
            None => out.push(token.to_string()),
        }
    }
    if let Some(op) = pending_op {
        out.push(op);
    }
    out
}

/// `<= partial`: with wildcards, everything up to the next increment (exclusive).
fn le_bound(p: &Partial) -> Bound {
    match (p.major, p.minor, p.patch) {
        (None, _, _) => Bound::Any,
        (Some(ma), None, _) => Bound::Lt(Version::new(ma + 1, 0, 0)),
        (Some(ma), Some(mi), None) => Bound::Lt(Version::new(ma, mi + 1, 0)),
        _ => Bound::Le(p.to_version()),
    }
}

/// The half-open interval a partial version stands for (`1.2` → [1.2.0, 1.3.0)).
fn wildcard_interval(p: &Partial) -> Option<(Version, Version)> {
    match (p.major, p.minor, p.patch) {
        (None, _, _) => None,
        (Some(ma), None, _) => Some((Version::new(ma, 0, 0), Version::new(ma + 1, 0, 0))),
        (Some(ma), Some(mi), None) => Some((Version::new(ma, mi, 0), Version::new(ma, mi + 1, 0))),
        _ => None,
    }
}

fn parse_comparator(token: &str) -> Result<Comparator, String> {
    let op_len = token
        .find(|c: char| !"<>=!~^".contains(c))
        .ok_or_else(|| format!("operator {token:?} has no version after it"))?;
    let (op, version) = token.split_at(op_len);
    let p = parse_partial(version).ok_or_else(|| {
        format!("{version:?} is not a version (expected e.g. 1.2.3, v1.2, 1.2.x)")
    })?;
    let allows_pre = !p.pre.is_empty();
    let v = p.to_version();
    let bounds = match op {
        "" | "=" | "==" => match wildcard_interval(&p) {
            Some((lo, hi)) => vec![Bound::Ge(lo), Bound::Lt(hi)],
            None if p.major.is_none() => vec![Bound::Any],
            None => vec![Bound::Eq(v)],
        },
        "!=" => match wildcard_interval(&p) {
            Some((lo, hi)) => vec![Bound::Outside(lo, hi)],
            None if p.major.is_none() => return Err("`!=*` matches nothing".into()),
            None => vec![Bound::Ne(v)],
        },
        ">" => match wildcard_interval(&p) {
            Some((_, hi)) => vec![Bound::Ge(hi)],
            None if p.major.is_none() => return Err("`>*` matches nothing".into()),
            None => vec![Bound::Gt(v)],
        },
        ">=" | "=>" => vec![Bound::Ge(v)],
        "<" => vec![Bound::Lt(v)],
        "<=" | "=<" => vec![le_bound(&p)],
        "~" | "~>" => {
            let major = p.major.ok_or("`~` needs a major version")?;
            let upper = match p.minor {
                Some(minor) => Version::new(major, minor + 1, 0),
                None => Version::new(major + 1, 0, 0),
            };
            vec![Bound::Ge(v), Bound::Lt(upper)]
        }
        "^" => {
            let major = p.major.ok_or("`^` needs a major version")?;
            let upper = match (major, p.minor, p.patch) {
                (0, None, _) => Version::new(1, 0, 0),
                (0, Some(0), None) => Version::new(0, 1, 0),
                (0, Some(0), Some(patch)) => Version::new(0, 0, patch + 1),
                (0, Some(minor), _) => Version::new(0, minor + 1, 0),
                (major, _, _) => Version::new(major + 1, 0, 0),
            };
            vec![Bound::Ge(v), Bound::Lt(upper)]
        }
        other => return Err(format!("unknown operator {other:?}")),
    };
    Ok(Comparator { bounds, allows_pre })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(range: &str, version: &str) -> bool {
        let r = Range::parse(range).unwrap();
        r.matches(&parse_version(version).unwrap())
    }

    #[test]
    fn lenient_versions() {
        assert_eq!(parse_version("v1.2").unwrap(), Version::new(1, 2, 0));
        assert_eq!(parse_version("1").unwrap(), Version::new(1, 0, 0));
        assert_eq!(
            parse_version("1.2.3-rc.1+build.5").unwrap().pre.as_str(),
            "rc.1"
        );
        assert!(parse_version("latest").is_none());
        assert!(parse_version("1.2.3.4").is_none());
        assert!(parse_version("main-123").is_none());
    }

    #[test]
    fn and_or_ranges() {
        assert!(ok(">=1.0 <2.0", "1.9.9"));
        assert!(!ok(">=1.0 <2.0", "2.0.0"));
        assert!(ok(">=1.0, <2.0", "1.0.0"));
        assert!(ok(">= 1.0, < 2.0", "1.5.0"));
        assert!(ok("<1.0 || >=3.0", "3.1.0"));
        assert!(!ok("<1.0 || >=3.0", "2.0.0"));
    }

    #[test]
    fn tilde_caret_wildcards() {
        assert!(ok("~1.2", "1.2.9"));
        assert!(!ok("~1.2", "1.3.0"));
        assert!(ok("~1.2.3", "1.2.4"));
        assert!(!ok("~1.2.3", "1.2.2"));
        assert!(ok("~1", "1.9.0"));
        assert!(ok("^1.2", "1.9.0"));
        assert!(!ok("^1.2", "2.0.0"));
        assert!(ok("^0.2.3", "0.2.9"));
        assert!(!ok("^0.2.3", "0.3.0"));
        assert!(!ok("^0.0.3", "0.0.4"));
        assert!(ok("1.2.x", "1.2.7"));
        assert!(!ok("1.2.x", "1.3.0"));
        assert!(ok("*", "7.0.0"));
        assert!(ok("v1.x", "v1.4.0"));
        assert!(ok("1.2 - 1.4.5", "1.4.5"));
        assert!(!ok("1.2 - 1.4.5", "1.4.6"));
        assert!(ok("1.2 - 1.4", "1.4.9"));
        assert!(ok(">1.2", "1.3.0"));
        assert!(!ok(">1.2", "1.2.9"));
        assert!(ok("<=1.2", "1.2.9"));
        assert!(ok("!=1.2.3", "1.2.4"));
        assert!(!ok("!=1.2.x", "1.2.4"));
    }

    #[test]
    fn prereleases_follow_masterminds() {
        // A range without a pre-release excludes pre-release versions...
        assert!(!ok(">=1.0.0", "1.5.0-rc.1"));
        assert!(!ok("*", "1.0.0-alpha"));
        // ...one with a pre-release includes them (the Flux idiom `>=1.0.0-0`).
        assert!(ok(">=1.0.0-0", "1.5.0-rc.1"));
        assert!(ok(">=1.0.0-0", "1.5.0"));
        assert!(ok("^1.0.0-0", "1.2.0-beta.2"));
        // Per comparator, as in Masterminds: `<2.0.0` has none, so this excludes them.
        assert!(!ok(">=1.0.0-0 <2.0.0", "1.5.0-rc.1"));
        assert!(ok(">=1.0.0-0 <2.0.0-0", "1.5.0-rc.1"));
        assert!(!ok(">=1.0.0-0", "0.9.0-rc.1"));
    }

    #[test]
    fn errors_name_the_problem() {
        let e = Range::parse(">=banana").unwrap_err();
        assert!(e.to_string().contains("banana"), "{e}");
        assert!(Range::parse("").is_err());
        assert!(Range::parse("1.0 ||").is_err());
        assert!(Range::parse("%1.0").is_err());
    }
}
