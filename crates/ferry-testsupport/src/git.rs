//! Git and registry fixtures every crate's integration tests share: the git CLI with a fixed
//! identity, a repository on the testenv's smart-HTTP git server with a working copy to commit
//! from ([`Repo`]), and an image pushed to the testenv registry ([`push_empty_image`]).
//! Before these lived here, each crate's tests/common held its own copy.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::TestEnv;

/// The identity of test commits (a human's, as opposed to an automation's).
const AUTHOR_NAME: &str = "ferry-test";
const AUTHOR_EMAIL: &str = "test@ferry.invalid";

/// Run `git args` in `dir` with a fixed identity and no prompts; stdout, untrimmed (file
/// contents keep their final newline). Panics with git's stderr on failure.
pub fn git_raw(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", AUTHOR_NAME)
        .env("GIT_AUTHOR_EMAIL", AUTHOR_EMAIL)
        .env("GIT_COMMITTER_NAME", AUTHOR_NAME)
        .env("GIT_COMMITTER_EMAIL", AUTHOR_EMAIL)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap_or_else(|e| panic!("running git {args:?}: {e}"));
    assert!(
        out.status.success(),
        "git {args:?} in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// [`git_raw`], trimmed (a SHA, a branch name).
pub fn git(dir: &Path, args: &[&str]) -> String {
    git_raw(dir, args).trim().to_string()
}

/// A repository `<name>.git` on the testenv git server (smart HTTP, basic auth, pushes
/// accepted) and a local working copy to commit from.
pub struct Repo {
    pub name: String,
    /// http URL without credentials (what a GitSource names, with a secretRef).
    pub url: String,
    /// The server's bare repository on disk (read what a push landed without fetching).
    pub bare: PathBuf,
    pub work: tempfile::TempDir,
    push_url: String,
}

impl Repo {
    /// Create `<name>.git` under `FERRY_GIT_ROOT` and an empty working copy on `main`.
    pub fn create(env: &TestEnv, name: &str) -> Self {
        let bare = PathBuf::from(env.var("FERRY_GIT_ROOT")).join(format!("{name}.git"));
        let bare_text = bare.to_string_lossy().to_string();
        git(
            Path::new("/"),
            &["init", "-q", "--bare", "--initial-branch=main", &bare_text],
        );
        // Let http-backend accept pushes.
        git(&bare, &["config", "http.receivepack", "true"]);
        let base = env.var("FERRY_GIT_URL");
        let (scheme, rest) = base
            .split_once("://")
            .unwrap_or_else(|| panic!("FERRY_GIT_URL {base:?} has no scheme"));
        let push_url = format!(
            "{scheme}://{}:{}@{rest}/{name}.git",
            env.var("FERRY_GIT_USER"),
            env.var("FERRY_GIT_PASSWORD")
        );
        let work = tempfile::tempdir().expect("a working copy directory");
        git(work.path(), &["init", "-q", "--initial-branch=main"]);
        Self {
            name: name.to_string(),
            url: format!("{base}/{name}.git"),
            bare,
            work,
            push_url,
        }
    }

    /// The URL with the testenv's credentials in it (for the git CLI; never for a GitSource).
    pub fn push_url(&self) -> &str {
        &self.push_url
    }

    /// The bare repository as a `file://` URL.
    pub fn file_url(&self, env: &TestEnv) -> String {
        format!("file://{}/{}.git", env.var("FERRY_GIT_ROOT"), self.name)
    }

    /// Write `files` (path → content; `None` deletes), commit on top of the server's current
    /// `main` (an automation may have pushed since) and push; returns the commit SHA.
    pub fn commit(&self, files: &[(&str, Option<&str>)], message: &str) -> String {
        let work = self.work.path();
        if !self.head().is_empty() {
            git(work, &["fetch", "-q", &self.push_url, "main"]);
            git(work, &["reset", "-q", "--hard", "FETCH_HEAD"]);
        }
        for (path, change) in files {
            let full = work.join(path);
            match change {
                Some(text) => {
                    if let Some(parent) = full.parent() {
                        std::fs::create_dir_all(parent)
                            .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
                    }
                    std::fs::write(&full, text)
                        .unwrap_or_else(|e| panic!("write {}: {e}", full.display()));
                }
                None => {
                    let _ = std::fs::remove_file(&full);
                }
            }
        }
        git(work, &["add", "-A"]);
        git(work, &["commit", "-q", "--allow-empty", "-m", message]);
        git(
            work,
            &["push", "-q", &self.push_url, "HEAD:refs/heads/main"],
        );
        git(work, &["rev-parse", "HEAD"])
    }

    /// [`Repo::commit`] of files that are all written (none deleted).
    pub fn commit_files(&self, files: &[(&str, &str)], message: &str) -> String {
        let changes: Vec<(&str, Option<&str>)> = files
            .iter()
            .map(|(path, text)| (*path, Some(*text)))
            .collect();
        self.commit(&changes, message)
    }

    /// Tag the working copy's HEAD and push the tag.
    pub fn tag(&self, name: &str) {
        git(self.work.path(), &["tag", name]);
        git(
            self.work.path(),
            &["push", "-q", &self.push_url, &format!("refs/tags/{name}")],
        );
    }

    /// The server's head of `branch` ("" when there is none).
    pub fn head_of(&self, branch: &str) -> String {
        let out = Command::new("git")
            .args([
                "rev-parse",
                "--verify",
                "-q",
                &format!("refs/heads/{branch}"),
            ])
            .current_dir(&self.bare)
            .output()
            .expect("git rev-parse");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The server's head of `main` ("" before the first push).
    pub fn head(&self) -> String {
        self.head_of("main")
    }

    /// A file at the server's head of `main`.
    pub fn file(&self, path: &str) -> String {
        git_raw(&self.bare, &["show", &format!("main:{path}")])
    }

    /// Author and message of a commit on the server.
    pub fn log_message(&self, rev: &str) -> String {
        git(&self.bare, &["log", "-1", "--format=%an <%ae>%n%B", rev])
    }

    /// What a commit on the server changed, with the changed lines only.
    pub fn diff(&self, rev: &str) -> String {
        git(&self.bare, &["show", "--format=", "--unified=0", rev])
    }
}

/// Push an image with one empty layer to the testenv registry as `reference`
/// (`registry/path:tag`) with `crane append`; `docker_config` is a `$DOCKER_CONFIG` directory
/// for registries that need credentials. Returns the digest crane prints.
pub fn push_empty_image(env: &TestEnv, reference: &str, docker_config: Option<&Path>) -> String {
    let empty = tempfile::NamedTempFile::new().expect("a temporary file");
    let status = Command::new("tar")
        .arg("cf")
        .arg(empty.path())
        .args(["-T", "/dev/null"])
        .status()
        .expect("running tar");
    assert!(status.success(), "tar of an empty layer failed");
    let mut crane = Command::new(env.tool("crane"));
    crane
        .args(["append", "--insecure", "-f"])
        .arg(empty.path())
        .args(["-t", reference]);
    if let Some(dir) = docker_config {
        crane.env("DOCKER_CONFIG", dir);
    }
    let out = crane.output().expect("running crane");
    assert!(
        out.status.success(),
        "crane append {reference} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let digest = stdout
        .trim()
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(digest.starts_with("sha256:"), "crane printed {stdout:?}");
    digest
}

/// `crane args...` against the testenv registry; panics with crane's stderr on failure.
pub fn crane(env: &TestEnv, args: &[&str]) {
    let out = Command::new(env.tool("crane"))
        .args(args)
        .output()
        .expect("running crane");
    assert!(
        out.status.success(),
        "crane {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_runs_with_the_fixed_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        git(dir.path(), &["init", "-q", "--initial-branch=main"]);
        git(
            dir.path(),
            &["commit", "-q", "--allow-empty", "-m", "first"],
        );
        assert_eq!(
            git(dir.path(), &["log", "-1", "--format=%an <%ae> %s"]),
            "ferry-test <test@ferry.invalid> first"
        );
        assert_eq!(
            git_raw(dir.path(), &["log", "-1", "--format=%s"]),
            "first\n"
        );
    }
}
