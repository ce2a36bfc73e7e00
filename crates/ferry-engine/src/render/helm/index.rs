//! A Helm HTTP repository's `index.yaml`, as `helm repo add` stored it in the private helm
//! home: which version of a chart a requested version or range means (Helm's rule: an exact
//! string match first, else the highest version the range allows; no range means the highest
//! stable version) and the digest the repository lists for it (the chart cache's check).
//! The index is repository input: read within the render's size limit and the YAML budget.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::super::safety::Limits;

/// The chart version an index resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub version: String,
    /// `sha256` hex of the archive, when the index lists one.
    pub digest: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot read the repository index: {0}")]
    Read(#[source] std::io::Error),
    #[error("the repository index is larger than the render limit of {0} bytes")]
    TooLarge(u64),
    #[error("the repository index is not valid YAML{0}")]
    Invalid(String),
    #[error("the repository has no chart named {0:?}")]
    NoChart(String),
    #[error("no version of chart {chart:?} matches {range:?} (the repository has {available})")]
    NoMatch {
        chart: String,
        range: String,
        available: String,
    },
    #[error(transparent)]
    Range(#[from] super::super::names::NameError),
}

#[derive(Debug, Deserialize)]
struct Index {
    #[serde(default)]
    entries: BTreeMap<String, Vec<IndexEntry>>,
}

#[derive(Debug, Deserialize)]
struct IndexEntry {
    #[serde(default)]
    version: String,
    #[serde(default)]
    digest: Option<String>,
}

/// Resolve `chart` at `range` (exact, range or `None`) in the index at `path`.
pub fn resolve(
    path: &Path,
    chart: &str,
    range: Option<&str>,
    limits: &Limits,
) -> Result<Found, IndexError> {
    let meta = std::fs::metadata(path).map_err(IndexError::Read)?;
    if meta.len() > limits.max_total_bytes {
        return Err(IndexError::TooLarge(limits.max_total_bytes));
    }
    let text = std::fs::read_to_string(path).map_err(IndexError::Read)?;
    let index: Index =
        serde_saphyr::from_str_with_options(&text, crate::yaml::options()).map_err(|err| {
            IndexError::Invalid(
                err.location()
                    .map(|l| format!(" at line {}", l.line()))
                    .unwrap_or_default(),
            )
        })?;
    let entries = index
        .entries
        .get(chart)
        .ok_or_else(|| IndexError::NoChart(chart.to_string()))?;
    pick(entries, chart, range)
}

fn pick(entries: &[IndexEntry], chart: &str, range: Option<&str>) -> Result<Found, IndexError> {
    let found = |e: &IndexEntry| Found {
        version: e.version.clone(),
        digest: e.digest.clone().filter(|d| !d.is_empty()),
    };
    if let Some(exact) = range.and_then(|r| entries.iter().find(|e| e.version == r)) {
        return Ok(found(exact));
    }
    let constraint = super::version::parse_constraint(range.unwrap_or("*"))?;
    let best = entries
        .iter()
        .filter_map(|e| {
            semver::Version::parse(e.version.trim_start_matches('v'))
                .ok()
                .map(|v| (v, e))
        })
        .filter(|(v, _)| constraint.matches(v))
        .max_by(|(a, _), (b, _)| a.cmp(b));
    match best {
        Some((_, e)) => Ok(found(e)),
        None => {
            let mut versions: Vec<&str> = entries.iter().map(|e| e.version.as_str()).collect();
            versions.truncate(10);
            Err(IndexError::NoMatch {
                chart: chart.to_string(),
                range: range.unwrap_or("*").to_string(),
                available: if versions.is_empty() {
                    "no versions".to_string()
                } else {
                    versions.join(", ")
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(versions: &[&str]) -> Vec<IndexEntry> {
        versions
            .iter()
            .map(|v| IndexEntry {
                version: v.to_string(),
                digest: Some(format!("d-{v}")),
            })
            .collect()
    }

    #[test]
    fn picks_like_helm() {
        let all = entries(&["1.3.0-rc.1", "1.2.7", "1.2.0", "1.10.0", "2.0.0"]);
        let version = |range| pick(&all, "web", range).map(|f| f.version);
        assert_eq!(version(None).unwrap(), "2.0.0", "highest stable");
        assert_eq!(version(Some("~1.2")).unwrap(), "1.2.7");
        assert_eq!(
            version(Some("^1.2")).unwrap(),
            "1.10.0",
            "numeric, not text order"
        );
        assert_eq!(
            version(Some("1.3.0-rc.1")).unwrap(),
            "1.3.0-rc.1",
            "exact match"
        );
        assert_eq!(
            pick(&all, "web", Some("1.2.0")).unwrap().digest.as_deref(),
            Some("d-1.2.0")
        );
        let err = version(Some(">=3")).unwrap_err().to_string();
        assert!(err.contains(">=3") && err.contains("1.2.7"), "{err}");
    }
}
