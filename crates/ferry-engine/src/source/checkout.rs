//! Writing a git tree to disk safely: every tree entry name is validated, and every file,
//! directory and symlink is created relative to a directory descriptor that was opened without
//! following links, with `O_EXCL`/`O_NOFOLLOW`, so a hostile tree can never write outside the
//! checkout (not through `..`, not through a symlink written earlier in the same walk, not into a
//! `.git` directory), and the size and file count of a checkout are bounded.
//!
//! Why our own writer rather than libgit2's checkout: libgit2's checkout does reject `..` and
//! `.git` entries, but it needs an index and a work tree, reports problems as generic errors that
//! do not name the entry, and has no size or file-count budget. Writing with `openat`-style calls
//! makes the "never follow a link" property hold by construction (the kernel refuses), not by a
//! check that could race, and lets the error name the offending entry.

// Link-safe writes need the *at syscalls (openat, mkdirat, symlinkat), which std does not
// offer; the crate root denies unsafe code everywhere else. Every block has a SAFETY comment.
#![allow(unsafe_code)]

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use git2::{ObjectType, Oid, Repository, Tree};

/// Bounds on one checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckoutLimits {
    /// Total bytes of all files (blob contents) in the checkout.
    pub max_bytes: u64,
    /// Number of files, symlinks and directories.
    pub max_entries: u64,
    /// Directory nesting depth.
    pub max_depth: usize,
}

impl Default for CheckoutLimits {
    fn default() -> Self {
        Self {
            max_bytes: 1024 * 1024 * 1024,
            max_entries: 100_000,
            max_depth: 128,
        }
    }
}

/// Why a tree entry name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadName {
    #[error("empty name")]
    Empty,
    #[error("`.` or `..` would leave its directory")]
    DotOrDotDot,
    #[error("contains `/`, `\\` or NUL")]
    Separator,
    #[error(
        "is `.git` (in some spelling: case, trailing dots/spaces, an NTFS stream, `GIT~1` or ignorable Unicode)"
    )]
    DotGit,
}

/// What went wrong while writing a checkout. `path` is the entry's path in the tree.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error(
        "the tree entry {path:?} is refused: {reason}; the repository was not checked out (fix or remove that entry in the repository)"
    )]
    BadEntry { path: String, reason: BadName },
    #[error(
        "the tree entry {path:?} appears twice in its directory (a hostile or corrupt tree); the repository was not checked out"
    )]
    Duplicate { path: String },
    #[error(
        "the checkout is larger than the agent's limit of {limit} bytes (at {path:?}); raise --git-max-checkout-bytes or make the repository smaller"
    )]
    TooLarge { path: String, limit: u64 },
    #[error(
        "the checkout has more than the agent's limit of {limit} files and directories (at {path:?}); raise --git-max-checkout-files or make the repository smaller"
    )]
    TooManyEntries { path: String, limit: u64 },
    #[error(
        "the tree is nested deeper than {limit} directories (at {path:?}); the repository was not checked out"
    )]
    TooDeep { path: String, limit: usize },
    #[error("cannot read {what} {oid} from the fetched repository: {message}")]
    Read {
        what: &'static str,
        oid: Oid,
        message: String,
    },
    #[error("writing {path:?}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Code points that HFS+ ignores when comparing names (git's `is_hfs_dotgit` list): a name that
/// is `.git` once these are removed is `.git` on a Mac.
fn hfs_ignorable(c: char) -> bool {
    matches!(c,
        '\u{200c}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{206a}'..='\u{206f}' | '\u{feff}')
}

/// Is `name` some spelling of `.git` that a case-insensitive, HFS+ or NTFS file system would
/// treat as the repository directory (the checks git does under core.protectHFS/protectNTFS)?
fn is_dot_git(name: &str) -> bool {
    let folded: String = name
        .chars()
        .filter(|c| !hfs_ignorable(*c))
        .collect::<String>()
        .to_ascii_lowercase();
    // NTFS: `.git::$INDEX_ALLOCATION` and `.git:stream` name the same directory.
    let before_stream = folded.split(':').next().unwrap_or_default();
    // NTFS drops trailing dots and spaces.
    let trimmed = before_stream.trim_end_matches(['.', ' ']);
    trimmed == ".git" || trimmed == "git~1"
}

/// Validate one tree entry name (one path component). Accepted names can be joined to a
/// directory and stay a single normal component inside it.
pub fn validate_component(name: &[u8]) -> Result<(), BadName> {
    if name.is_empty() {
        return Err(BadName::Empty);
    }
    if name == b"." || name == b".." {
        return Err(BadName::DotOrDotDot);
    }
    if name.iter().any(|b| matches!(b, b'/' | b'\\' | 0)) {
        return Err(BadName::Separator);
    }
    if is_dot_git(&String::from_utf8_lossy(name)) {
        return Err(BadName::DotGit);
    }
    Ok(())
}

struct Budget {
    limits: CheckoutLimits,
    bytes: u64,
    entries: u64,
}

/// Write the tree of commit `oid` into `root`, which must be an empty directory this process
/// just created (a fresh temp dir). Symlinks in the repository are kept as symlinks (kustomize
/// and helm charts use them; the render stage refuses ones that leave the checkout), but nothing
/// is ever written through one.
pub fn write_tree(
    repo: &Repository,
    oid: Oid,
    root: &Path,
    limits: CheckoutLimits,
) -> Result<(), CheckoutError> {
    let tree = repo
        .find_commit(oid)
        .and_then(|c| c.tree())
        .map_err(|e| CheckoutError::Read {
            what: "commit",
            oid,
            message: e.message().to_string(),
        })?;
    let root_fd = open_dir(None, root.as_os_str().as_encoded_bytes()).map_err(|source| {
        CheckoutError::Io {
            path: root.display().to_string(),
            source,
        }
    })?;
    let mut budget = Budget {
        limits,
        bytes: 0,
        entries: 0,
    };
    write_dir(repo, &tree, &root_fd, "", 0, &mut budget)
}

fn write_dir(
    repo: &Repository,
    tree: &Tree<'_>,
    dir: &OwnedFd,
    prefix: &str,
    depth: usize,
    budget: &mut Budget,
) -> Result<(), CheckoutError> {
    if depth > budget.limits.max_depth {
        return Err(CheckoutError::TooDeep {
            path: prefix.to_string(),
            limit: budget.limits.max_depth,
        });
    }
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    for entry in tree.iter() {
        let name = entry.name_bytes();
        let path = format!("{prefix}{}", String::from_utf8_lossy(name));
        validate_component(name).map_err(|reason| CheckoutError::BadEntry {
            path: path.clone(),
            reason,
        })?;
        // Two entries of one name (e.g. a symlink `link` and a directory `link/`) cannot both
        // exist in a well-formed tree; the second would land on or through the first.
        if !seen.insert(name.to_vec()) {
            return Err(CheckoutError::Duplicate { path });
        }
        let kind = entry.kind();
        if matches!(kind, Some(ObjectType::Tree) | Some(ObjectType::Blob)) {
            budget.entries += 1;
            if budget.entries > budget.limits.max_entries {
                return Err(CheckoutError::TooManyEntries {
                    path,
                    limit: budget.limits.max_entries,
                });
            }
        }
        let cname = CString::new(name).map_err(|_| CheckoutError::BadEntry {
            path: path.clone(),
            reason: BadName::Separator,
        })?;
        let io = |source| CheckoutError::Io {
            path: path.clone(),
            source,
        };
        match kind {
            Some(ObjectType::Tree) => {
                let sub = repo
                    .find_tree(entry.id())
                    .map_err(|e| CheckoutError::Read {
                        what: "tree",
                        oid: entry.id(),
                        message: e.message().to_string(),
                    })?;
                mkdir_at(dir, &cname).map_err(io)?;
                let sub_fd = open_dir(Some(dir), cname.as_bytes()).map_err(io)?;
                write_dir(repo, &sub, &sub_fd, &format!("{path}/"), depth + 1, budget)?;
            }
            Some(ObjectType::Blob) => {
                let blob = repo
                    .find_blob(entry.id())
                    .map_err(|e| CheckoutError::Read {
                        what: "blob",
                        oid: entry.id(),
                        message: e.message().to_string(),
                    })?;
                budget.bytes += blob.size() as u64;
                if budget.bytes > budget.limits.max_bytes {
                    return Err(CheckoutError::TooLarge {
                        path,
                        limit: budget.limits.max_bytes,
                    });
                }
                match entry.filemode() {
                    0o120000 => {
                        let target =
                            CString::new(blob.content()).map_err(|_| CheckoutError::BadEntry {
                                path: path.clone(),
                                reason: BadName::Separator,
                            })?;
                        symlink_at(&target, dir, &cname).map_err(io)?;
                    }
                    mode => {
                        let perm = if mode == 0o100755 { 0o755 } else { 0o644 };
                        let fd = create_file_at(dir, &cname, perm).map_err(io)?;
                        let mut file = std::fs::File::from(fd);
                        file.write_all(blob.content()).map_err(io)?;
                    }
                }
            }
            // Submodules (commits) are not followed, like a plain fetch.
            _ => {}
        }
    }
    Ok(())
}

fn cvt(ret: libc::c_int) -> std::io::Result<libc::c_int> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Open a directory without following a symlink in its last component (`O_NOFOLLOW`), relative
/// to `parent` (or the current directory for an absolute/relative root path).
pub(crate) fn open_dir(parent: Option<&OwnedFd>, name: &[u8]) -> std::io::Result<OwnedFd> {
    let cname = CString::new(name).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let dirfd = parent.map_or(libc::AT_FDCWD, |p| p.as_raw_fd());
    // SAFETY: `cname` is a valid NUL-terminated string; the returned fd is owned by us.
    let fd = cvt(unsafe {
        libc::openat(
            dirfd,
            cname.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` was just returned by openat and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `mkdirat` never follows a symlink in the last component; it fails with EEXIST instead.
pub(crate) fn mkdir_at(dir: &OwnedFd, name: &CStr) -> std::io::Result<()> {
    // SAFETY: valid fd and NUL-terminated name.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) }).map(|_| ())
}

/// `symlinkat` creates the link itself; it fails with EEXIST if anything is already there.
pub(crate) fn symlink_at(target: &CStr, dir: &OwnedFd, name: &CStr) -> std::io::Result<()> {
    // SAFETY: valid fd and NUL-terminated strings.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(|_| ())
}

/// Create a new file: `O_CREAT|O_EXCL` refuses an existing name (symlink included) and
/// `O_NOFOLLOW` is belt and braces.
pub(crate) fn create_file_at(
    dir: &OwnedFd,
    name: &CStr,
    mode: libc::mode_t,
) -> std::io::Result<OwnedFd> {
    // SAFETY: valid fd and NUL-terminated name; the returned fd is owned by us.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: `fd` was just returned by openat and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Component;

    #[test]
    fn names_git_refuses_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a\\b",
            "a\0b",
            ".git",
            ".GIT",
            ".Git",
            ".git.",
            ".git ",
            ".git. . ",
            ".git::$INDEX_ALLOCATION",
            "git~1",
            "GIT~1",
            ".g\u{200c}it",
            "\u{feff}.git",
        ] {
            assert!(validate_component(bad.as_bytes()).is_err(), "{bad:?}");
        }
        for good in [
            "a",
            ".gitignore",
            ".github",
            "..a",
            "a..",
            "git",
            ".gitkeep",
            "kustomization.yaml",
            "…",
            "a:b",
        ] {
            assert!(validate_component(good.as_bytes()).is_ok(), "{good:?}");
        }
    }

    /// A raw tree object with exactly these entries, in this order (no validation: this is the
    /// hostile server's side).
    fn raw_tree(repo: &Repository, entries: &[(&str, &[u8], Oid)]) -> Oid {
        let mut bytes = Vec::new();
        for (mode, name, oid) in entries {
            bytes.extend_from_slice(mode.as_bytes());
            bytes.push(b' ');
            bytes.extend_from_slice(name);
            bytes.push(0);
            bytes.extend_from_slice(oid.as_bytes());
        }
        repo.odb().unwrap().write(ObjectType::Tree, &bytes).unwrap()
    }

    /// A raw commit of `tree` (written directly, so a tree libgit2 cannot parse still gets one).
    fn commit_of(repo: &Repository, tree: Oid) -> Oid {
        let text = format!(
            "tree {tree}\nauthor t <t@example.invalid> 0 +0000\ncommitter t <t@example.invalid> 0 +0000\n\nhostile\n"
        );
        repo.odb()
            .unwrap()
            .write(ObjectType::Commit, text.as_bytes())
            .unwrap()
    }

    #[test]
    fn hostile_trees_write_nothing_outside() {
        let sandbox = tempfile::tempdir().unwrap();
        let victim = sandbox.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        let repo = Repository::init_bare(sandbox.path().join("repo.git")).unwrap();
        let blob = repo.blob(b"pwned\n").unwrap();
        let ok = repo.blob(b"a: 1\n").unwrap();
        let link_target = repo.blob(victim.as_os_str().as_encoded_bytes()).unwrap();
        let inner = raw_tree(&repo, &[("100644", b"file", blob)]);
        let hooks = raw_tree(&repo, &[("100755", b"x", blob)]);
        let dot_git = raw_tree(&repo, &[("40000", b"hooks", hooks)]);
        let cases: Vec<(&str, Oid)> = vec![
            (
                "..",
                raw_tree(
                    &repo,
                    &[("100644", b"ok.yaml", ok), ("40000", b"..", inner)],
                ),
            ),
            (".git", raw_tree(&repo, &[("40000", b".git", dot_git)])),
            (".GIT", raw_tree(&repo, &[("40000", b".GIT", dot_git)])),
            (
                "link",
                raw_tree(
                    &repo,
                    &[("120000", b"link", link_target), ("40000", b"link", inner)],
                ),
            ),
            (
                "a/../../victim",
                raw_tree(&repo, &[("100644", b"a/../../victim/file", blob)]),
            ),
            (
                "abs",
                raw_tree(
                    &repo,
                    &[(
                        "100644",
                        victim.join("file").as_os_str().as_encoded_bytes(),
                        blob,
                    )],
                ),
            ),
        ];
        for (what, tree) in cases {
            let commit = commit_of(&repo, tree);
            let root = sandbox
                .path()
                .join(format!("out-{}", what.replace('/', "_")));
            std::fs::create_dir(&root).unwrap();
            let err = write_tree(&repo, commit, &root, CheckoutLimits::default()).unwrap_err();
            let message = err.to_string();
            assert!(
                matches!(
                    err,
                    CheckoutError::BadEntry { .. } | CheckoutError::Duplicate { .. }
                ),
                "{what}: {message}"
            );
            assert!(
                message.contains("refused") || message.contains("twice"),
                "{what}: {message}"
            );
            assert_eq!(
                std::fs::read_dir(&victim).unwrap().count(),
                0,
                "{what}: wrote into the victim dir"
            );
            assert!(!sandbox.path().join("file").exists(), "{what}");
        }
    }

    #[test]
    fn limits_and_a_normal_tree() {
        let sandbox = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(sandbox.path().join("repo.git")).unwrap();
        let big = repo.blob(&vec![b'x'; 4096]).unwrap();
        let link = repo.blob(b"a.yaml").unwrap();
        let sub = raw_tree(&repo, &[("100755", b"run.sh", big)]);
        let tree = raw_tree(
            &repo,
            &[
                ("100644", b"a.yaml", big),
                ("120000", b"l.yaml", link),
                ("40000", b"sub", sub),
            ],
        );
        let commit = commit_of(&repo, tree);
        let root = sandbox.path().join("ok");
        std::fs::create_dir(&root).unwrap();
        write_tree(&repo, commit, &root, CheckoutLimits::default()).unwrap();
        assert_eq!(std::fs::read(root.join("a.yaml")).unwrap().len(), 4096);
        assert_eq!(
            std::fs::read_link(root.join("l.yaml")).unwrap(),
            Path::new("a.yaml")
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(root.join("sub/run.sh"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        let small = CheckoutLimits {
            max_bytes: 5000,
            ..CheckoutLimits::default()
        };
        let root = sandbox.path().join("small");
        std::fs::create_dir(&root).unwrap();
        let err = write_tree(&repo, commit, &root, small).unwrap_err();
        assert!(
            matches!(err, CheckoutError::TooLarge { limit: 5000, .. }),
            "{err}"
        );
        let few = CheckoutLimits {
            max_entries: 2,
            ..CheckoutLimits::default()
        };
        let root = sandbox.path().join("few");
        std::fs::create_dir(&root).unwrap();
        let err = write_tree(&repo, commit, &root, few).unwrap_err();
        assert!(
            matches!(err, CheckoutError::TooManyEntries { limit: 2, .. }),
            "{err}"
        );
    }

    /// A random tree for the checkout fuzzer: names from a hostile alphabet, symlinks to the
    /// victim, to `..` and inside the tree, duplicates, nesting.
    #[derive(Debug, Clone)]
    enum Node {
        File(Vec<u8>, bool),
        Link(&'static str),
        Dir(Vec<(&'static str, Node)>),
    }

    // Mostly plain names, so that trees often get written and a link and a directory of one
    // name meet; sometimes a name git refuses.
    const GOOD_NAMES: &[&str] = &["link", "a", "b"];
    const BAD_NAMES: &[&str] = &[
        "..", ".", ".git", ".GIT", "git~1", "a/b", "../x", "", "x\\y", ".git.",
    ];
    const TARGETS: &[&str] = &["VICTIM", "VICTIM", "..", "../..", "a", "/", "link/a"];

    fn name() -> impl proptest::strategy::Strategy<Value = &'static str> {
        use proptest::prelude::*;
        prop_oneof![
            12 => proptest::sample::select(GOOD_NAMES),
            1 => proptest::sample::select(BAD_NAMES),
        ]
    }

    fn node() -> impl proptest::strategy::Strategy<Value = Node> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            (proptest::collection::vec(any::<u8>(), 0..8), any::<bool>())
                .prop_map(|(c, x)| Node::File(c, x)),
            proptest::sample::select(TARGETS).prop_map(Node::Link),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            proptest::collection::vec((name(), inner), 0..4).prop_map(Node::Dir)
        })
    }

    fn build(repo: &Repository, node: &Node, victim: &Path) -> (&'static str, Oid) {
        match node {
            Node::File(content, exec) => (
                if *exec { "100755" } else { "100644" },
                repo.blob(content).unwrap(),
            ),
            Node::Link(target) => {
                let target = if *target == "VICTIM" {
                    victim.display().to_string()
                } else {
                    target.to_string()
                };
                ("120000", repo.blob(target.as_bytes()).unwrap())
            }
            Node::Dir(entries) => {
                let built: Vec<(&str, &[u8], Oid)> = entries
                    .iter()
                    .map(|(name, child)| {
                        let (mode, oid) = build(repo, child, victim);
                        (mode, name.as_bytes(), oid)
                    })
                    .collect();
                ("40000", raw_tree(repo, &built))
            }
        }
    }

    /// Every path under `dir`, symlinks not followed.
    fn all_paths(dir: &Path) -> Vec<std::path::PathBuf> {
        walkdir::WalkDir::new(dir)
            .follow_links(false)
            .into_iter()
            .flatten()
            .map(|e| e.into_path())
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(128)
        ))]

        /// Fuzz the checkout: whatever tree a server sends, either it is written entirely inside
        /// the root, or the write fails; nothing ever appears outside the root (the victim
        /// directory, the sandbox), and no directory in the root is a followed link.
        #[test]
        fn random_hostile_trees_stay_inside(entries in proptest::collection::vec(
            (name(), node()), 0..6)) {
            let sandbox = tempfile::tempdir().unwrap();
            let victim = sandbox.path().join("victim");
            std::fs::create_dir(&victim).unwrap();
            let repo = Repository::init_bare(sandbox.path().join("repo.git")).unwrap();
            let (_, tree) = build(&repo, &Node::Dir(entries), &victim);
            let commit = commit_of(&repo, tree);
            let root = sandbox.path().join("root");
            std::fs::create_dir(&root).unwrap();
            let before: Vec<_> = all_paths(sandbox.path()).into_iter().filter(|p| !p.starts_with(&root)).collect();
            let _ = write_tree(&repo, commit, &root, CheckoutLimits::default());
            let after: Vec<_> = all_paths(sandbox.path()).into_iter().filter(|p| !p.starts_with(&root)).collect();
            proptest::prop_assert_eq!(before, after);
            proptest::prop_assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
            for path in all_paths(&root) {
                let rel = path.strip_prefix(&root).unwrap();
                for c in rel.components() {
                    proptest::prop_assert!(matches!(c, Component::Normal(_)), "{}", rel.display());
                    proptest::prop_assert!(!is_dot_git(&c.as_os_str().to_string_lossy()));
                }
            }
        }
    }

    proptest::proptest! {
        /// Any accepted component joined to a base is exactly one normal component inside it.
        #[test]
        fn accepted_components_stay_inside(name in proptest::collection::vec(proptest::num::u8::ANY, 0..12)) {
            use std::os::unix::ffi::OsStrExt;
            if validate_component(&name).is_ok() {
                let base = Path::new("/base/dir");
                let joined = base.join(std::ffi::OsStr::from_bytes(&name));
                proptest::prop_assert!(joined.starts_with(base));
                let rest: Vec<Component<'_>> = joined.strip_prefix(base).unwrap().components().collect();
                proptest::prop_assert_eq!(rest.len(), 1);
                proptest::prop_assert!(matches!(rest[0], Component::Normal(_)));
                proptest::prop_assert!(!is_dot_git(&String::from_utf8_lossy(&name)));
            }
        }

        /// Names built from the characters that matter (dots, slashes, `git`, case, spaces)
        /// reach the interesting cases far more often than random bytes.
        #[test]
        fn crafted_components_stay_inside(parts in proptest::collection::vec(
            proptest::sample::select(vec![".", "..", "/", "\\", "git", "GIT", "~1", " ", ":", "a", "\u{200c}", "\0"]), 0..6)) {
            use std::os::unix::ffi::OsStrExt;
            let name = parts.concat();
            if validate_component(name.as_bytes()).is_ok() {
                let base = Path::new("/base");
                let joined = base.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
                let rest: Vec<Component<'_>> = joined.strip_prefix(base).unwrap().components().collect();
                proptest::prop_assert_eq!(rest.len(), 1);
                proptest::prop_assert!(matches!(rest[0], Component::Normal(_)));
                proptest::prop_assert!(!is_dot_git(&name));
            }
        }
    }
}
