//! The content layer of an OCI artifact: packing a directory into a reproducible tar+gzip
//! (`ferry push artifact`) and unpacking an untrusted one safely (OCISource).
//!
//! Packing: entries sorted by path, mtime 0, uid/gid 0 without names, modes normalised to
//! 0644/0755 (files) and 0755 (directories), gzip without a name or time in its header: the
//! same directory gives the same bytes, hence the same digest, on any machine. `.git` is never
//! packed; a `.sourceignore` file (Flux's name) with simple patterns excludes more.
//!
//! Unpacking treats the tarball as hostile. Only regular files, directories and symlinks whose
//! target stays inside the artifact are written; hard links, devices, FIFOs, absolute paths,
//! `..`, `.git` and duplicate names are refused with an error naming the entry. Every file,
//! directory and link is created relative to a directory descriptor opened without following
//! links (the checkout writer's `openat` helpers), so nothing is ever written through a link.
//! Total bytes, each file's bytes, the number of entries and the nesting depth are bounded, and
//! the bounds are enforced on the bytes actually read, not on what the headers claim.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::source::checkout::{
    BadName, create_file_at, mkdir_at, open_dir, symlink_at, validate_component,
};

/// The ignore file read from the root of a packed directory (Flux's name for it).
pub const IGNORE_FILE: &str = ".sourceignore";

/// Bounds on one unpacked artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Total bytes of all files.
    pub max_bytes: u64,
    /// Bytes of any one file.
    pub max_file_bytes: u64,
    /// Files, directories and symlinks.
    pub max_entries: u64,
    /// Directory nesting depth.
    pub max_depth: usize,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024 * 1024,
            max_file_bytes: 64 * 1024 * 1024,
            max_entries: 20_000,
            max_depth: 64,
        }
    }
}

/// Why an artifact's content was refused or could not be unpacked. `path` is the entry's
/// path inside the tarball.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("the entry {path:?} is refused: {reason}")]
    BadName { path: String, reason: BadName },
    #[error("the entry {path:?} has an absolute path; artifact paths must be relative")]
    Absolute { path: String },
    #[error(
        "the entry {path:?} is a {kind}; only regular files, directories and symlinks inside the artifact are unpacked"
    )]
    Unsupported { path: String, kind: &'static str },
    #[error(
        "the symlink {path:?} points to {target:?}, outside the artifact; only relative links that stay inside are unpacked"
    )]
    LinkOutside { path: String, target: String },
    #[error(
        "the entry {path:?} lies under a symlink or a file of the artifact; nothing is written through a link"
    )]
    ThroughLink { path: String },
    #[error("the entry {path:?} appears twice in the artifact")]
    Duplicate { path: String },
    #[error(
        "the file {path:?} is larger than the limit of {limit} bytes per file (no manifest, overlay or chart file is that large); make the file smaller"
    )]
    FileTooLarge { path: String, limit: u64 },
    #[error(
        "the artifact unpacks to more than the limit of {limit} bytes (at {path:?}); make the artifact smaller, or raise the agent's --git-max-checkout-bytes (the limit on any source's files)"
    )]
    TooLarge { path: String, limit: u64 },
    #[error(
        "the artifact has more than the limit of {limit} files and directories (at {path:?}); make the artifact smaller, or raise the agent's --git-max-checkout-files (the limit on any source's files)"
    )]
    TooManyEntries { path: String, limit: u64 },
    #[error("the entry {path:?} is nested deeper than {limit} directories")]
    TooDeep { path: String, limit: usize },
    #[error("the layer is not a valid tar+gzip stream: {source}")]
    Corrupt {
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path:?}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why a directory could not be packed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is a symlink to {target:?}, which leaves the directory being packed; replace it with the file or remove it"
    )]
    LinkOutside { path: PathBuf, target: String },
    #[error("{path}: {reason}; rename it (artifact paths are UTF-8 without `\\`)")]
    BadName { path: PathBuf, reason: String },
    #[error(
        "{file}:{line}: {reason}; ferry reads simple patterns only (`name`, `*.ext`, `dir/`, `/anchored/path`, `#` comments)"
    )]
    Ignore {
        file: PathBuf,
        line: usize,
        reason: String,
    },
}

/// Lexically resolve `target` from the directory `parent` (components inside the root):
/// `None` when it would leave the root or is absolute.
pub fn link_stays_inside(parent: &[&str], target: &str) -> bool {
    if target.starts_with('/') || target.is_empty() {
        return false;
    }
    let mut depth = parent.len();
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                if depth == 0 {
                    return false;
                }
                depth -= 1;
            }
            _ => depth += 1,
        }
    }
    true
}

/// One simple ignore pattern of a `.sourceignore`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IgnorePattern {
    /// Glob over one name (`*`, `?`), or over the whole relative path when anchored.
    glob: String,
    anchored: bool,
    dir_only: bool,
}

fn glob_match(glob: &[u8], text: &[u8]) -> bool {
    match (glob.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&glob[1..], text)
                || (!text.is_empty() && text[0] != b'/' && glob_match(glob, &text[1..]))
        }
        (Some(b'?'), Some(c)) if *c != b'/' => glob_match(&glob[1..], &text[1..]),
        (Some(g), Some(c)) if g == c => glob_match(&glob[1..], &text[1..]),
        _ => false,
    }
}

fn parse_ignore(file: &Path, text: &str) -> Result<Vec<IgnorePattern>, PackError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fail = |reason: &str| PackError::Ignore {
            file: file.to_path_buf(),
            line: i + 1,
            reason: reason.to_string(),
        };
        if line.starts_with('!') {
            return Err(fail("negation (`!`) is not supported"));
        }
        if line.contains("**") || line.contains('[') || line.contains('\\') {
            return Err(fail(
                "`**`, character classes and escapes are not supported",
            ));
        }
        let dir_only = line.ends_with('/');
        let body = line.trim_end_matches('/');
        let anchored = body.contains('/');
        let glob = body.trim_start_matches('/').to_string();
        if glob.is_empty() {
            return Err(fail("the pattern is empty"));
        }
        out.push(IgnorePattern {
            glob,
            anchored,
            dir_only,
        });
    }
    Ok(out)
}

fn ignored(patterns: &[IgnorePattern], rel: &str, is_dir: bool) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    patterns.iter().any(|p| {
        (!p.dir_only || is_dir)
            && if p.anchored {
                glob_match(p.glob.as_bytes(), rel.as_bytes())
            } else {
                glob_match(p.glob.as_bytes(), name.as_bytes())
            }
    })
}

/// Pack `dir` into a reproducible tar+gzip (see the module docs). Symlinks are packed as links
/// when they stay inside `dir`, refused otherwise.
pub fn pack(dir: &Path) -> Result<Vec<u8>, PackError> {
    let read_err = |path: &Path, source| PackError::Read {
        path: path.to_path_buf(),
        source,
    };
    let ignore_path = dir.join(IGNORE_FILE);
    let patterns = match std::fs::read_to_string(&ignore_path) {
        Ok(text) => parse_ignore(&ignore_path, &text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(read_err(&ignore_path, e)),
    };
    let mut entries: Vec<(String, PathBuf, std::fs::FileType)> = Vec::new();
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| {
            let rel = e.path().strip_prefix(dir).unwrap_or(e.path());
            let rel = rel.to_string_lossy();
            e.file_name() != ".git" && !ignored(&patterns, &rel, e.file_type().is_dir())
        });
    for entry in walker {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(dir).to_path_buf();
            read_err(&path, std::io::Error::other(e.to_string()))
        })?;
        let rel = entry
            .path()
            .strip_prefix(dir)
            .map_err(|e| read_err(entry.path(), std::io::Error::other(e.to_string())))?;
        let rel_str = rel.to_str().ok_or_else(|| PackError::BadName {
            path: entry.path().to_path_buf(),
            reason: "the name is not UTF-8".into(),
        })?;
        for component in rel_str.split('/') {
            validate_component(component.as_bytes()).map_err(|reason| PackError::BadName {
                path: entry.path().to_path_buf(),
                reason: reason.to_string(),
            })?;
        }
        entries.push((
            rel_str.to_string(),
            entry.path().to_path_buf(),
            entry.file_type(),
        ));
    }
    // Byte order of the whole path, not walkdir's per-directory order, so the result does not
    // depend on how names sort against `/`.
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let gz = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for (rel, path, file_type) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if file_type.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            tar.append_data(&mut header, format!("{rel}/"), std::io::empty())
                .map_err(|e| read_err(&path, e))?;
        } else if file_type.is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| read_err(&path, e))?;
            let target_str = target.to_string_lossy().to_string();
            let parent: Vec<&str> = rel.split('/').collect();
            if !link_stays_inside(&parent[..parent.len() - 1], &target_str) {
                return Err(PackError::LinkOutside {
                    path,
                    target: target_str,
                });
            }
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            tar.append_link(&mut header, &rel, &target)
                .map_err(|e| read_err(&path, e))?;
        } else {
            let mut file = std::fs::File::open(&path).map_err(|e| read_err(&path, e))?;
            let meta = file.metadata().map_err(|e| read_err(&path, e))?;
            use std::os::unix::fs::PermissionsExt;
            let executable = meta.permissions().mode() & 0o111 != 0;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if executable { 0o755 } else { 0o644 });
            header.set_size(meta.len());
            tar.append_data(&mut header, &rel, &mut file)
                .map_err(|e| read_err(&path, e))?;
        }
    }
    let gz = tar.into_inner().map_err(|e| read_err(dir, e))?;
    gz.finish().map_err(|e| read_err(dir, e))
}

struct Budget {
    limits: ExtractLimits,
    bytes: u64,
    entries: u64,
}

/// Unpack the tar+gzip `layer` into `root`, an empty directory this process just created.
/// On error, `root` may hold part of the content: the caller removes it.
pub fn extract(layer: impl Read, root: &Path, limits: ExtractLimits) -> Result<(), ExtractError> {
    let root_fd = open_dir(None, root.as_os_str().as_encoded_bytes()).map_err(|source| {
        ExtractError::Write {
            path: root.display().to_string(),
            source,
        }
    })?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(layer));
    let mut budget = Budget {
        limits,
        bytes: 0,
        entries: 0,
    };
    let corrupt = |source| ExtractError::Corrupt { source };
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw_path = entry.path_bytes().into_owned();
        let path = String::from_utf8_lossy(&raw_path).to_string();
        let kind = entry.header().entry_type();
        let label = match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => None,
            tar::EntryType::Directory | tar::EntryType::Symlink => None,
            // Metadata for the entries that follow (the tar crate applies PAX paths itself).
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
            tar::EntryType::Link => Some("hard link"),
            tar::EntryType::Char => Some("character device"),
            tar::EntryType::Block => Some("block device"),
            tar::EntryType::Fifo => Some("FIFO"),
            tar::EntryType::GNUSparse => Some("sparse file"),
            _ => Some("special entry"),
        };
        if let Some(kind) = label {
            return Err(ExtractError::Unsupported { path, kind });
        }
        if raw_path.first() == Some(&b'/') {
            return Err(ExtractError::Absolute { path });
        }
        // `./a/b` and `a//b` name `a/b`; the archive root itself (`.`, `./`) is skipped.
        let components: Vec<&[u8]> = raw_path
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        let Some((last, parents)) = components.split_last() else {
            continue;
        };
        for component in &components {
            validate_component(component).map_err(|reason| ExtractError::BadName {
                path: path.clone(),
                reason,
            })?;
        }
        if components.len() > budget.limits.max_depth {
            return Err(ExtractError::TooDeep {
                path,
                limit: budget.limits.max_depth,
            });
        }
        budget.entries += 1;
        if budget.entries > budget.limits.max_entries {
            return Err(ExtractError::TooManyEntries {
                path,
                limit: budget.limits.max_entries,
            });
        }
        let dir = open_parents(&root_fd, parents, &path)?;
        let name = CString::new(*last).map_err(|_| ExtractError::BadName {
            path: path.clone(),
            reason: BadName::Separator,
        })?;
        let write_err = |source: std::io::Error| ExtractError::Write {
            path: path.clone(),
            source,
        };
        let exists = |e: &std::io::Error| e.kind() == std::io::ErrorKind::AlreadyExists;
        match kind {
            tar::EntryType::Directory => match mkdir_at(&dir, &name) {
                Ok(()) => {}
                // A directory named again (or created for an earlier file): fine if it is
                // one; anything else of that name is a duplicate.
                Err(e) if exists(&e) => {
                    open_dir(Some(&dir), name.as_bytes())
                        .map_err(|_| ExtractError::Duplicate { path: path.clone() })?;
                }
                Err(e) => return Err(write_err(e)),
            },
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let target_str = String::from_utf8_lossy(&target).to_string();
                let parent_names: Vec<String> = parents
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).to_string())
                    .collect();
                let parent_refs: Vec<&str> = parent_names.iter().map(String::as_str).collect();
                if !link_stays_inside(&parent_refs, &target_str) || target.contains(&0) {
                    return Err(ExtractError::LinkOutside {
                        path,
                        target: target_str,
                    });
                }
                let ctarget = CString::new(target).map_err(|_| ExtractError::LinkOutside {
                    path: path.clone(),
                    target: target_str.clone(),
                })?;
                symlink_at(&ctarget, &dir, &name).map_err(|e| {
                    if exists(&e) {
                        ExtractError::Duplicate { path: path.clone() }
                    } else {
                        write_err(e)
                    }
                })?;
            }
            _ => {
                // The header's size is a claim; the copy below counts what is really read.
                if entry.header().size().unwrap_or(u64::MAX) > budget.limits.max_file_bytes {
                    return Err(ExtractError::FileTooLarge {
                        path,
                        limit: budget.limits.max_file_bytes,
                    });
                }
                let mode = entry.header().mode().unwrap_or(0o644);
                let perm = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                let fd = create_file_at(&dir, &name, perm).map_err(|e| {
                    if exists(&e) {
                        ExtractError::Duplicate { path: path.clone() }
                    } else {
                        write_err(e)
                    }
                })?;
                let mut file = std::fs::File::from(fd);
                copy_bounded(&mut entry, &mut file, &path, &mut budget)?;
            }
        }
    }
    Ok(())
}

/// Open (creating when missing) each parent directory below `root`, never following a link:
/// `O_NOFOLLOW|O_DIRECTORY` fails on a symlink or a file, which is reported as such.
fn open_parents(root: &OwnedFd, parents: &[&[u8]], path: &str) -> Result<OwnedFd, ExtractError> {
    let mut current: Option<OwnedFd> = None;
    for component in parents {
        let parent = current.as_ref().unwrap_or(root);
        let name = CString::new(*component).map_err(|_| ExtractError::BadName {
            path: path.to_string(),
            reason: BadName::Separator,
        })?;
        match mkdir_at(parent, &name) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(ExtractError::Write {
                    path: path.to_string(),
                    source,
                });
            }
        }
        let next =
            open_dir(Some(parent), name.as_bytes()).map_err(|_| ExtractError::ThroughLink {
                path: path.to_string(),
            })?;
        current = Some(next);
    }
    match current {
        Some(fd) => Ok(fd),
        None => root.try_clone().map_err(|source| ExtractError::Write {
            path: path.to_string(),
            source,
        }),
    }
}

fn copy_bounded(
    from: &mut impl Read,
    to: &mut std::fs::File,
    path: &str,
    budget: &mut Budget,
) -> Result<(), ExtractError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut written: u64 = 0;
    loop {
        let n = from
            .read(&mut buf)
            .map_err(|source| ExtractError::Corrupt { source })?;
        if n == 0 {
            return Ok(());
        }
        written += n as u64;
        budget.bytes += n as u64;
        if written > budget.limits.max_file_bytes {
            return Err(ExtractError::FileTooLarge {
                path: path.to_string(),
                limit: budget.limits.max_file_bytes,
            });
        }
        if budget.bytes > budget.limits.max_bytes {
            return Err(ExtractError::TooLarge {
                path: path.to_string(),
                limit: budget.limits.max_bytes,
            });
        }
        to.write_all(&buf[..n])
            .map_err(|source| ExtractError::Write {
                path: path.to_string(),
                source,
            })?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_inside_and_out() {
        assert!(link_stays_inside(&[], "a.yaml"));
        assert!(link_stays_inside(&["a", "b"], "../c"));
        assert!(link_stays_inside(&["a"], "../c"));
        assert!(!link_stays_inside(&["a"], "../../c"));
        assert!(!link_stays_inside(&[], "../x"));
        assert!(!link_stays_inside(&[], "/etc/passwd"));
        assert!(!link_stays_inside(&[], ""));
    }

    #[test]
    fn ignore_patterns() {
        let p = parse_ignore(
            Path::new(".sourceignore"),
            "# c\n*.md\nbuild/\n/docs/x.yaml\n",
        )
        .unwrap();
        assert!(ignored(&p, "README.md", false));
        assert!(ignored(&p, "sub/NOTES.md", false));
        assert!(ignored(&p, "build", true));
        assert!(!ignored(&p, "build", false));
        assert!(ignored(&p, "docs/x.yaml", false));
        assert!(!ignored(&p, "other/docs/x.yaml", false));
        assert!(!ignored(&p, "app.yaml", false));
        let err = parse_ignore(Path::new(".sourceignore"), "a\n!b\n").unwrap_err();
        assert!(err.to_string().contains(".sourceignore:2"), "{err}");
    }

    #[test]
    fn pack_is_reproducible_and_skips_git() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join(".git/config"), "secret").unwrap();
        std::fs::write(dir.path().join("b.yaml"), "b: 1\n").unwrap();
        std::fs::write(dir.path().join("sub/a.yaml"), "a: 1\n").unwrap();
        std::fs::write(dir.path().join("NOTES.md"), "n").unwrap();
        std::fs::write(dir.path().join(IGNORE_FILE), "*.md\n").unwrap();
        std::os::unix::fs::symlink("b.yaml", dir.path().join("link.yaml")).unwrap();
        let first = pack(dir.path()).unwrap();
        // Other mtimes, same bytes.
        std::fs::write(dir.path().join("b.yaml"), "b: 1\n").unwrap();
        assert_eq!(pack(dir.path()).unwrap(), first);
        let out = tempfile::tempdir().unwrap();
        extract(first.as_slice(), out.path(), ExtractLimits::default()).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.path().join("sub/a.yaml")).unwrap(),
            "a: 1\n"
        );
        assert!(!out.path().join(".git").exists());
        assert!(!out.path().join("NOTES.md").exists());
        assert_eq!(
            std::fs::read_link(out.path().join("link.yaml")).unwrap(),
            Path::new("b.yaml")
        );
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("out.yaml")).unwrap();
        let err = pack(dir.path()).unwrap_err().to_string();
        assert!(err.contains("out.yaml") && err.contains("leaves"), "{err}");
    }
}
