//! Stage 1, source: where the files come from (a local path, stdin, a git checkout, or an OCI
//! artifact from a registry).

pub mod checkout;
pub mod git;
pub mod oci;
pub mod registry;

use std::path::Path;

/// The commit checked out at `path` if it is inside a git working tree (`HEAD`'s commit id),
/// used as the default `--revision`. A dirty tree gets a `-dirty` suffix so the recorded
/// revision never claims to be exactly a commit it is not.
pub fn git_revision(path: &Path) -> Option<String> {
    // Initialising libgit2 loads the system CA bundle (about 20 ms); skip it outside checkouts.
    git_workdir(path)?;
    let repo = git2::Repository::discover(path).ok()?;
    let head = repo.head().ok()?.peel_to_commit().ok()?;
    let mut options = git2::StatusOptions::new();
    options.include_untracked(false).include_ignored(false);
    let dirty = repo
        .statuses(Some(&mut options))
        .map(|s| !s.is_empty())
        .unwrap_or(false);
    Some(format!(
        "{}{}",
        head.id(),
        if dirty { "-dirty" } else { "" }
    ))
}

/// The working tree root of the git checkout containing `path`, if any (the default source root):
/// the nearest ancestor (or `path` itself) holding a `.git` directory or `.git` file (worktrees
/// and submodules). Found by walking up rather than through libgit2, whose initialisation alone
/// costs more than a whole small render. `GIT_DIR` and ceiling directories are not consulted.
pub fn git_workdir(path: &Path) -> Option<std::path::PathBuf> {
    path.ancestors()
        .find(|dir| {
            let dot_git = dir.join(".git");
            dot_git.is_dir() || dot_git.is_file()
        })
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_of_a_checkout() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(git_revision(dir.path()), None);
        let repo = git2::Repository::init(dir.path()).unwrap();
        std::fs::write(dir.path().join("a.yaml"), "x: 1\n").unwrap();
        let mut index = repo.index().unwrap();
        index.add_path(Path::new("a.yaml")).unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        let commit = repo
            .commit(Some("HEAD"), &sig, &sig, "c", &tree, &[])
            .unwrap();
        assert_eq!(git_revision(dir.path()), Some(commit.to_string()));
        std::fs::write(dir.path().join("a.yaml"), "x: 2\n").unwrap();
        assert_eq!(git_revision(dir.path()), Some(format!("{commit}-dirty")));
    }

    #[test]
    fn workdir_is_the_nearest_checkout() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        std::fs::create_dir_all(&nested).unwrap();
        assert_eq!(git_workdir(&nested), None);
        git2::Repository::init(dir.path()).unwrap();
        assert_eq!(git_workdir(&nested).as_deref(), Some(dir.path()));
        // A worktree or submodule has a `.git` file instead of a directory.
        std::fs::write(dir.path().join("a/.git"), "gitdir: elsewhere\n").unwrap();
        assert_eq!(git_workdir(&nested), Some(dir.path().join("a")));
    }
}
