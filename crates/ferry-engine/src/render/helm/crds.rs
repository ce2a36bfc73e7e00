//! The CRD files a local chart ships (`crds/` of the chart and of its unpacked subcharts),
//! parsed on a second thread while `helm template` runs.
//!
//! helm prints those files verbatim, so an operator chart's output is mostly CRDs, often
//! megabytes of them, and parsing them after helm exits was most of ferry's time on such
//! charts. Parsed ahead, they are matched against helm's output by exact text
//! ([`ParsedAhead`]): helm's output stays the only source of what is applied, and any document
//! that does not match (a subchart helm left out, a file changed meanwhile) is parsed as usual.

use std::path::{Path, PathBuf};

use crate::yaml::ParsedAhead;

/// Subcharts nested deeper than this are not looked into (their CRDs are parsed after helm).
const MAX_SUBCHART_DEPTH: usize = 8;

/// The `.yaml`/`.yml`/`.json` files under `crds/` of `chart` and of the unpacked subcharts in
/// its `charts/`, up to `max_bytes` in total. The chart tree has been checked by the caller
/// (inside the root, no escaping links, size limits).
pub fn files(chart: &Path, max_bytes: u64) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut total = 0;
    collect(chart, 0, max_bytes, &mut total, &mut found);
    found
}

fn collect(chart: &Path, depth: usize, max_bytes: u64, total: &mut u64, out: &mut Vec<PathBuf>) {
    let crds = chart.join("crds");
    if crds.is_dir() {
        for entry in walkdir::WalkDir::new(&crds)
            .sort_by_file_name()
            .into_iter()
            .filter_map(|entry| entry.ok())
        {
            let is_manifest = matches!(
                entry.path().extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            );
            let size = entry.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
            if !entry.file_type().is_file()
                || !is_manifest
                || total.saturating_add(size) > max_bytes
            {
                continue;
            }
            *total += size;
            out.push(entry.into_path());
        }
    }
    if depth >= MAX_SUBCHART_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(chart.join("charts")) else {
        return;
    };
    let mut subcharts: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .map(|entry| entry.path())
        .filter(|path| path.join("Chart.yaml").is_file())
        .collect();
    subcharts.sort();
    for subchart in subcharts {
        collect(&subchart, depth + 1, max_bytes, total, out);
    }
}

/// Parse `files` as helm prints them (each file's text followed by a newline). Unreadable or
/// invalid files are skipped: helm's output is parsed, and its errors reported, as usual.
pub fn parse_ahead(files: &[PathBuf]) -> ParsedAhead {
    let mut ahead = ParsedAhead::default();
    for file in files {
        let Ok(mut text) = std::fs::read_to_string(file) else {
            continue;
        };
        text.push('\n');
        ahead.add_stream(&text);
    }
    ahead
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_crds_of_the_chart_and_unpacked_subcharts() {
        let dir = tempfile::tempdir().unwrap();
        let chart = dir.path();
        for path in [
            "Chart.yaml",
            "crds/a.yaml",
            "crds/nested/b.yml",
            "crds/README.md",
            "templates/c.yaml",
            "charts/sub/Chart.yaml",
            "charts/sub/crds/d.json",
            "charts/not-a-chart/crds/e.yaml",
        ] {
            let file = chart.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, "kind: X\n").unwrap();
        }
        let found: Vec<PathBuf> = files(chart, u64::MAX)
            .iter()
            .map(|f| f.strip_prefix(chart).unwrap().to_path_buf())
            .collect();
        assert_eq!(
            found,
            ["crds/a.yaml", "crds/nested/b.yml", "charts/sub/crds/d.json"].map(PathBuf::from)
        );
        assert_eq!(files(chart, 10).len(), 1, "the byte budget stops the walk");
    }
}
