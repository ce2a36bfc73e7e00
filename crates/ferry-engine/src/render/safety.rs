//! Render-time safety: source files must stay inside the source root (no `../` or symlink
//! escapes, the class of bug behind Argo CD's and Helm's path-traversal CVEs), size limits per
//! file and in total, YAML alias-bomb budgets, chart-archive decompression-bomb checks, and
//! redaction of decrypted values from anything shown to the user.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

const MIB: u64 = 1024 * 1024;

/// Configurable render limits (`limits:` in ferry.yaml). Defaults suit any sane app. Values
/// above the operator's ceilings (see docs/render.md) are lowered to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Limits {
    /// Largest single source file (bytes). Default 5 MiB.
    pub max_file_bytes: u64,
    /// Largest total of source files read for one app, and largest renderer output (bytes).
    /// Default 100 MiB.
    pub max_total_bytes: u64,
    /// Largest uncompressed size of a chart archive (bytes). Default 100 MiB.
    pub max_chart_bytes: u64,
    /// Most entries in a chart archive. Default 10000.
    pub max_chart_entries: u64,
    /// Seconds a renderer (kustomize, helm) may run before it is killed. Default 60.
    pub timeout_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_bytes: 5 * MIB,
            max_total_bytes: 100 * MIB,
            max_chart_bytes: 100 * MIB,
            max_chart_entries: 10_000,
            timeout_seconds: 60,
        }
    }
}

impl Limits {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }

    /// The default ceilings on what ferry.yaml / `spec.render` may raise their limits to:
    /// 32 MiB per file, 256 MiB in total and per chart, 50000 chart entries, 300 s. The agent
    /// sets its own with `--render-max-*` flags.
    pub fn ceilings() -> Self {
        Self {
            max_file_bytes: 32 * MIB,
            max_total_bytes: 256 * MIB,
            max_chart_bytes: 256 * MIB,
            max_chart_entries: 50_000,
            timeout_seconds: 300,
        }
    }

    /// Each limit lowered to its ceiling (a tenant may only lower limits, never raise them
    /// beyond what the operator allows). A zero timeout means "no time at all", not "none".
    pub fn capped_by(&self, ceilings: &Limits) -> Self {
        Self {
            max_file_bytes: self.max_file_bytes.min(ceilings.max_file_bytes),
            max_total_bytes: self.max_total_bytes.min(ceilings.max_total_bytes),
            max_chart_bytes: self.max_chart_bytes.min(ceilings.max_chart_bytes),
            max_chart_entries: self.max_chart_entries.min(ceilings.max_chart_entries),
            timeout_seconds: self.timeout_seconds.min(ceilings.timeout_seconds),
        }
    }
}

/// Lexically normalise `path` (relative to `base`) without touching the filesystem:
/// `a/./b/../c` → `a/c`. Returns `None` when `..` climbs above `base`.
fn lexical_join(base: &Path, path: &Path) -> Option<PathBuf> {
    let mut out = base.to_path_buf();
    let floor = base.components().count();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if out.components().count() <= floor {
                    return None;
                }
                out.pop();
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Resolve `relative` (as written in `declared_in`, relative to directory `from`) to a real
/// path that must exist and stay inside `root` after following symlinks. `what` names the kind
/// of path for the error ("values file", "chart", ...).
pub fn resolve_inside(
    root: &Path,
    from: &Path,
    relative: &str,
    what: &str,
    declared_in: &Path,
) -> Result<PathBuf> {
    let escape = |detail: &str| {
        Error::Refused(format!(
            "{}: {what} {relative:?} {detail} the source root {}; only paths inside the source directory may be used",
            declared_in.display(),
            root.display()
        ))
    };
    let rel = Path::new(relative);
    if rel.is_absolute() {
        return Err(escape("is an absolute path outside"));
    }
    let root = canonical(root, declared_in)?;
    let from = canonical(from, declared_in)?;
    if !from.starts_with(&root) {
        return Err(escape("is resolved from a directory outside"));
    }
    // Normalise against the root, so `../base` from `overlays/prod` is fine but climbing
    // above the root is not.
    let from_rel = from.strip_prefix(&root).unwrap_or(Path::new(""));
    let joined = lexical_join(&root, &from_rel.join(rel))
        .filter(|p| p.starts_with(&root))
        .ok_or_else(|| escape("leaves"))?;
    let real = std::fs::canonicalize(&joined).map_err(|err| Error::Source {
        path: declared_in.to_path_buf(),
        message: format!("{what} {relative:?} ({}): {err}", joined.display()),
    })?;
    if !real.starts_with(&root) {
        return Err(escape("is a symlink that leaves"));
    }
    Ok(real)
}

fn canonical(path: &Path, declared_in: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(path).map_err(|err| Error::Source {
        path: declared_in.to_path_buf(),
        message: format!("{}: {err}", path.display()),
    })
}

/// Walks source directories once each, enforcing: no symlink pointing outside the root, no
/// file over the per-file limit, and a running total under the total limit.
#[derive(Debug)]
pub struct TreeGuard {
    root: PathBuf,
    limits: Limits,
    seen_dirs: HashSet<PathBuf>,
    seen_files: HashSet<PathBuf>,
    total: u64,
}

impl TreeGuard {
    pub fn new(root: &Path, limits: &Limits) -> Result<Self> {
        Ok(Self {
            root: canonical(root, root)?,
            limits: limits.clone(),
            seen_dirs: HashSet::new(),
            seen_files: HashSet::new(),
            total: 0,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Bytes of source files checked so far.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// Check every entry under `dir` (recursively, `.git` skipped).
    pub fn scan_dir(&mut self, dir: &Path) -> Result<()> {
        let dir = canonical(dir, dir)?;
        if !dir.starts_with(&self.root) {
            return Err(Error::Refused(format!(
                "{} is outside the source root {}",
                dir.display(),
                self.root.display()
            )));
        }
        if self.seen_dirs.iter().any(|seen| dir.starts_with(seen)) {
            return Ok(());
        }
        self.seen_dirs.insert(dir.clone());
        let walker = walkdir::WalkDir::new(&dir)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| e.file_name() != ".git");
        for entry in walker {
            let entry = entry.map_err(|err| Error::Source {
                path: err
                    .path()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| dir.clone()),
                message: err.to_string(),
            })?;
            let path = entry.path();
            if entry.path_is_symlink() {
                self.check_symlink(path)?;
                // A link to a file inside the root still counts toward the limits.
                if let Ok(meta) = std::fs::metadata(path)
                    && meta.is_file()
                {
                    self.count_file_at(path, meta.len(), false)?;
                }
            } else if entry.file_type().is_file() {
                let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
                self.count_file_at(path, len, true)?;
            }
        }
        Ok(())
    }

    /// Check one file (e.g. a values file) against the limits. `path` must be canonical (as
    /// [`resolve_inside`] returns it), so a file also met in a directory scan counts once.
    pub fn check_file(&mut self, path: &Path) -> Result<()> {
        let meta = std::fs::metadata(path).map_err(|err| Error::Source {
            path: path.to_path_buf(),
            message: err.to_string(),
        })?;
        self.count_file_at(path, meta.len(), true)
    }

    fn check_symlink(&self, link: &Path) -> Result<()> {
        let shown = link.strip_prefix(&self.root).unwrap_or(link);
        let refuse = |detail: String| {
            Error::Refused(format!(
                "{}: symlink {detail}; symlinks must stay inside the source root {} (replace it with the file's contents)",
                shown.display(),
                self.root.display()
            ))
        };
        let target = std::fs::read_link(link).map_err(|err| Error::Source {
            path: link.to_path_buf(),
            message: err.to_string(),
        })?;
        match std::fs::canonicalize(link) {
            Ok(real) if real.starts_with(&self.root) => Ok(()),
            Ok(real) => Err(refuse(format!(
                "points to {} outside the source root",
                real.display()
            ))),
            // Dangling: judge the written target lexically so `../../etc` is still refused.
            Err(_) => {
                let parent = link.parent().unwrap_or(&self.root);
                let inside = if target.is_absolute() {
                    target.starts_with(&self.root)
                } else {
                    let parent_rel = parent.strip_prefix(&self.root).unwrap_or(Path::new(""));
                    lexical_join(&self.root, &parent_rel.join(&target))
                        .is_some_and(|p| p.starts_with(&self.root))
                };
                if inside {
                    Ok(())
                } else {
                    Err(refuse(format!(
                        "points to {} outside the source root",
                        target.display()
                    )))
                }
            }
        }
    }

    /// `canonical`: whether `path` is known to be canonical already (a regular file found
    /// walking a canonical directory), which saves a realpath per file on big trees.
    fn count_file_at(&mut self, path: &Path, len: u64, canonical: bool) -> Result<()> {
        let key = if canonical {
            path.to_path_buf()
        } else {
            std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
        };
        if !self.seen_files.insert(key) {
            return Ok(());
        }
        let shown = path.strip_prefix(&self.root).unwrap_or(path);
        if len > self.limits.max_file_bytes {
            return Err(Error::Refused(format!(
                "{}: {len} bytes is over the per-file limit of {} bytes (raise `limits.maxFileBytes` in ferry.yaml if this file is legitimate)",
                shown.display(),
                self.limits.max_file_bytes
            )));
        }
        self.total += len;
        if self.total > self.limits.max_total_bytes {
            return Err(Error::Refused(format!(
                "source files total more than {} bytes (limit reached at {}); raise `limits.maxTotalBytes` in ferry.yaml if the app is legitimately this large",
                self.limits.max_total_bytes,
                shown.display()
            )));
        }
        Ok(())
    }
}

/// Stream a chart archive (`.tgz`) through gzip+tar, counting entries and uncompressed bytes,
/// before helm sees it: refuses decompression bombs, absolute or `..` entry paths, and links.
pub fn check_chart_archive(path: &Path, limits: &Limits) -> Result<()> {
    let refuse =
        |detail: String| Error::Refused(format!("chart archive {}: {detail}", path.display()));
    let file = std::fs::File::open(path).map_err(|err| Error::Source {
        path: path.to_path_buf(),
        message: err.to_string(),
    })?;
    // Cap the decompressed stream itself, so even tar padding or a huge header cannot run on.
    let cap = limits.max_chart_bytes.saturating_add(1024 * 1024);
    let decoder = flate2::read::GzDecoder::new(file).take(cap);
    let mut archive = tar::Archive::new(decoder);
    let entries = archive
        .entries()
        .map_err(|err| refuse(format!("not a gzip-compressed tar archive: {err}")))?;
    let mut total: u64 = 0;
    let mut count: u64 = 0;
    let mut buf = [0u8; 64 * 1024];
    for entry in entries {
        let mut entry = entry.map_err(|err| refuse(format!("corrupt archive: {err}")))?;
        count += 1;
        if count > limits.max_chart_entries {
            return Err(refuse(format!(
                "more than {} entries (raise `limits.maxChartEntries`)",
                limits.max_chart_entries
            )));
        }
        let entry_path = entry
            .path()
            .map_err(|err| refuse(format!("bad entry name: {err}")))?
            .into_owned();
        if entry_path.is_absolute()
            || entry_path
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
        {
            return Err(refuse(format!(
                "entry {} leaves the chart directory",
                entry_path.display()
            )));
        }
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(refuse(format!(
                "entry {} is a link; charts may not contain links",
                entry_path.display()
            )));
        }
        // Count real bytes read, not the header's claim.
        loop {
            let n = entry
                .read(&mut buf)
                .map_err(|err| refuse(format!("corrupt entry {}: {err}", entry_path.display())))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > limits.max_chart_bytes {
                return Err(refuse(format!(
                    "expands to more than {} bytes (decompression bomb?); raise `limits.maxChartBytes` if the chart is legitimately this large",
                    limits.max_chart_bytes
                )));
            }
        }
    }
    if count == 0 {
        return Err(refuse("is empty".to_string()));
    }
    Ok(())
}

/// Redaction of decrypted values lives with the reports that must never show them.
pub use crate::report::redact::Redactor;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_join_refuses_climbing_out() {
        let base = Path::new("/src/app");
        assert_eq!(
            lexical_join(base, Path::new("a/../b")),
            Some(PathBuf::from("/src/app/b"))
        );
        assert_eq!(lexical_join(base, Path::new("../x")), None);
        assert_eq!(lexical_join(base, Path::new("/etc/passwd")), None);
    }
}
