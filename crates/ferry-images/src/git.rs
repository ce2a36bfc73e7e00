//! Git write-back: fetch the branch, apply the edits in a work tree, commit, push; on a
//! non-fast-forward rejection fetch again and re-apply the edits on top of the new upstream
//! (the edits are recomputed from the files, so nobody's commit is clobbered). A commit that
//! cannot be pushed (e.g. no write permission) stays on a local branch of the cached clone.
//!
//! The remote is a tenant's choice and may be hostile: local URLs are refused unless allowed,
//! redirects to another host are never followed (credentials and the bearer header stay with the
//! configured host), the fetched pack size is bounded, and connections have connect/read
//! timeouts. Credentials, SSH host key checking against known_hosts, the rule that credentials
//! only go to the configured host and port, and redaction are the source stage's own
//! (`ferry_engine::source::git::auth`): a GitSource's secret works the same for fetching and
//! for writing back, over HTTPS and SSH. The work tree is written
//! by libgit2's own checkout, which refuses `..` and `.git` entries (case-insensitively, and the
//! NTFS spellings: core.protectNTFS is on by default) and removes a symlink standing where a
//! directory must be created instead of following it; the edits then never follow symlinks
//! (see `setimage`).

use std::path::{Path, PathBuf};

use ferry_engine::source::git::auth;
use git2::{FetchOptions, Oid, PushOptions, RemoteRedirect, Repository, Signature};
use thiserror::Error;

pub use ferry_engine::source::git::auth::{GitAuth, redact_url};

/// Local branch holding a commit that could not be pushed.
pub const PENDING_BRANCH: &str = "ferry-pending";

#[derive(Debug, Error)]
pub enum GitError {
    #[error("git fetch of {branch} from {url} failed: {reason}")]
    Fetch {
        url: String,
        branch: String,
        reason: String,
    },
    #[error("branch {branch} does not exist in {url}; create it or fix spec.git.checkoutBranch")]
    NoBranch { url: String, branch: String },
    #[error(
        "push to {branch} of {url} was refused: {reason}. The commit {commit} is kept in the agent's clone on branch {PENDING_BRANCH}; grant write access (or fix the credentials) and it is pushed on the next run"
    )]
    PushRefused {
        url: String,
        branch: String,
        commit: String,
        reason: String,
    },
    #[error(
        "push to {branch} of {url} kept failing as non-fast-forward after {attempts} attempts (others keep pushing); will retry"
    )]
    Contention {
        url: String,
        branch: String,
        attempts: u32,
    },
    #[error("the image edits failed: {0}")]
    Edit(String),
    #[error(
        "{url}: local git URLs (file://, paths) are refused for image updates (they write to the agent's own disk); use an https:// or ssh:// URL, or start the agent with --allow-local-git-sources"
    )]
    LocalUrl { url: String },
    #[error(
        "commit {commit} of {url} has more than the limit of {limit} bytes of files; not checked out (raise --git-max-checkout-bytes)"
    )]
    CheckoutTooLarge {
        url: String,
        commit: String,
        limit: u64,
    },
    #[error(
        "git fetch of {branch} from {url} received more than the limit of {limit} bytes and was aborted (raise --git-max-fetch-bytes)"
    )]
    TooLarge {
        url: String,
        branch: String,
        limit: u64,
    },
    #[error("git: {0}")]
    Git(String),
}

impl From<git2::Error> for GitError {
    fn from(e: git2::Error) -> Self {
        GitError::Git(e.message().to_string())
    }
}

#[derive(Debug, Clone)]
pub struct WriteBackSpec {
    pub url: String,
    pub auth: GitAuth,
    pub checkout_branch: String,
    /// May be the same as `checkout_branch`.
    pub push_branch: String,
    pub author_name: String,
    pub author_email: String,
    /// Persistent clone used between runs.
    pub work_dir: PathBuf,
    /// Attempts on non-fast-forward.
    pub max_attempts: u32,
    /// Allow `file://` URLs and local paths (the agent's `--allow-local-git-sources`).
    pub allow_local: bool,
    /// Most pack bytes one fetch may receive.
    pub max_fetch_bytes: u64,
    /// Most bytes of files in the work tree (checked before checking out, so a small pack of
    /// highly compressible blobs cannot fill the disk).
    pub max_checkout_bytes: u64,
}

/// Is `url` a local repository (`file://`, a path) rather than a network remote? The same
/// classification as the source stage's; an unknown scheme counts as local (refused unless
/// allowed, and then libgit2 names what it cannot open).
pub fn is_local_url(url: &str) -> bool {
    auth::url_kind(url) != auth::UrlKind::Network
}

/// What the edit callback reports for one attempt.
#[derive(Debug, Clone, Default)]
pub struct EditOutcome {
    /// Commit message; `None` when nothing changed.
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteBackResult {
    /// Nothing to change; the upstream head that was checked.
    NoChange { head: String },
    Pushed {
        commit: String,
        branch: String,
        attempts: u32,
    },
}

/// Run the write-back (blocking; call from `spawn_blocking`). `edit` gets the work tree root at
/// the base commit and edits files in place; it may be called more than once (once per attempt).
pub fn write_back<F>(spec: &WriteBackSpec, mut edit: F) -> Result<WriteBackResult, GitError>
where
    F: FnMut(&Path) -> Result<EditOutcome, String>,
{
    if !spec.allow_local && is_local_url(&spec.url) {
        return Err(GitError::LocalUrl {
            url: redact_url(&spec.url),
        });
    }
    auth::ensure_network_timeouts();
    std::fs::create_dir_all(&spec.work_dir)
        .map_err(|e| GitError::Git(format!("creating {}: {e}", spec.work_dir.display())))?;
    let repo = match Repository::open(&spec.work_dir) {
        Ok(repo) => repo,
        Err(_) => Repository::init(&spec.work_dir)?,
    };
    // Connections made without explicit options (none today) follow no off-site redirect either.
    if let Ok(mut config) = repo.config() {
        let _ = config.set_str("http.followRedirects", "false");
    }
    match repo.find_remote("origin") {
        Ok(remote) if remote.url().ok() == Some(spec.url.as_str()) => {}
        Ok(_) => repo.remote_set_url("origin", &spec.url)?,
        Err(_) => {
            repo.remote("origin", &spec.url)?;
        }
    }
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (base, base_branch) = fetch_base(&repo, spec)?;
        let base_commit = repo.find_commit(base)?;
        if tree_size(&repo, base_commit.tree_id(), spec.max_checkout_bytes)?
            > spec.max_checkout_bytes
        {
            return Err(GitError::CheckoutTooLarge {
                url: redact_url(&spec.url),
                commit: base.to_string(),
                limit: spec.max_checkout_bytes,
            });
        }
        // A clean work tree at the base commit.
        repo.set_head_detached(base)?;
        repo.checkout_tree(
            base_commit.as_object(),
            Some(
                git2::build::CheckoutBuilder::new()
                    .force()
                    .remove_untracked(true),
            ),
        )?;
        let outcome = edit(&spec.work_dir).map_err(GitError::Edit)?;
        let mut index = repo.index()?;
        index.add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)?;
        index.update_all(["*"].iter(), None)?;
        index.write()?;
        let tree_id = index.write_tree()?;
        let Some(message) = outcome.message else {
            return Ok(WriteBackResult::NoChange {
                head: base.to_string(),
            });
        };
        if tree_id == base_commit.tree_id() {
            return Ok(WriteBackResult::NoChange {
                head: base.to_string(),
            });
        }
        let tree = repo.find_tree(tree_id)?;
        let sig = Signature::now(&spec.author_name, &spec.author_email)?;
        let commit = repo.commit(None, &sig, &sig, &message, &tree, &[&base_commit])?;
        tracing::debug!(%commit, base = %base, from = %base_branch, "committed image update");
        match push(&repo, spec, commit) {
            Ok(()) => {
                // Keep the remote-tracking ref in step so the next run starts from here.
                repo.reference(
                    &format!("refs/remotes/origin/{}", spec.push_branch),
                    commit,
                    true,
                    "ferry: pushed",
                )?;
                let _ = delete_pending(&repo);
                return Ok(WriteBackResult::Pushed {
                    commit: commit.to_string(),
                    branch: spec.push_branch.clone(),
                    attempts,
                });
            }
            Err(PushError::NonFastForward) if attempts < spec.max_attempts => {
                tracing::info!(branch = %spec.push_branch, attempts, "push rejected as non-fast-forward; re-applying on the new upstream");
                continue;
            }
            Err(PushError::NonFastForward) => {
                return Err(GitError::Contention {
                    url: redact_url(&spec.url),
                    branch: spec.push_branch.clone(),
                    attempts,
                });
            }
            Err(PushError::Refused(reason)) => {
                let commit_obj = repo.find_commit(commit)?;
                repo.branch(PENDING_BRANCH, &commit_obj, true)?;
                return Err(GitError::PushRefused {
                    url: redact_url(&spec.url),
                    branch: spec.push_branch.clone(),
                    commit: commit.to_string(),
                    reason,
                });
            }
        }
    }
}

/// Total size of the blobs under `tree` (each entry counted; a blob listed twice is written
/// twice), from object headers only; stops counting once past `limit`.
fn tree_size(repo: &Repository, tree: Oid, limit: u64) -> Result<u64, GitError> {
    let odb = repo.odb()?;
    let mut total = 0u64;
    let mut pending = vec![tree];
    while let Some(id) = pending.pop() {
        let tree = repo.find_tree(id)?;
        for entry in tree.iter() {
            match entry.kind() {
                Some(git2::ObjectType::Tree) => pending.push(entry.id()),
                Some(git2::ObjectType::Blob) => {
                    let (size, _) = odb.read_header(entry.id())?;
                    total = total.saturating_add(size as u64);
                    if total > limit {
                        return Ok(total);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(total)
}

fn delete_pending(repo: &Repository) -> Result<(), git2::Error> {
    repo.find_branch(PENDING_BRANCH, git2::BranchType::Local)?
        .delete()
}

/// Fetch the checkout and push branches; the base is the push branch when it exists and
/// differs from the checkout branch (updates stack there), else the checkout branch.
fn fetch_base(repo: &Repository, spec: &WriteBackSpec) -> Result<(Oid, String), GitError> {
    let mut remote = repo.find_remote("origin")?;
    let headers: Vec<String> = auth::bearer_header(&spec.auth).into_iter().collect();
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let mut refspecs = vec![format!(
        "+refs/heads/{b}:refs/remotes/origin/{b}",
        b = spec.checkout_branch
    )];
    if spec.push_branch != spec.checkout_branch {
        refspecs.push(format!(
            "+refs/heads/{b}:refs/remotes/origin/{b}",
            b = spec.push_branch
        ));
    }
    // The push branch may not exist yet: fetch each refspec on its own and tolerate a missing
    // push branch.
    for (i, refspec) in refspecs.iter().enumerate() {
        let mut options = FetchOptions::new();
        let too_large = std::rc::Rc::new(std::cell::Cell::new(false));
        // An ssh URL without known_hosts fails here, before connecting.
        let mut cbs =
            auth::remote_callbacks(&spec.url, &spec.auth).map_err(|e| GitError::Fetch {
                url: redact_url(&spec.url),
                branch: spec.checkout_branch.clone(),
                reason: e.to_string(),
            })?;
        let flag = too_large.clone();
        let limit = spec.max_fetch_bytes;
        cbs.transfer_progress(move |progress| {
            let over = progress.received_bytes() as u64 > limit;
            flag.set(over);
            !over
        });
        options.remote_callbacks(cbs);
        options.custom_headers(&header_refs);
        options.follow_redirects(RemoteRedirect::None);
        options.prune(git2::FetchPrune::Off);
        if let Err(e) = remote.fetch(&[refspec.as_str()], Some(&mut options), None) {
            if too_large.get() {
                return Err(GitError::TooLarge {
                    url: redact_url(&spec.url),
                    branch: spec.checkout_branch.clone(),
                    limit,
                });
            }
            let message = e.message();
            let missing = message.contains("couldn't find remote ref")
                || message.contains("not found")
                || e.code() == git2::ErrorCode::NotFound;
            if i > 0 && missing {
                continue;
            }
            return Err(GitError::Fetch {
                url: redact_url(&spec.url),
                branch: spec.checkout_branch.clone(),
                reason: auth::describe_error(&e, &spec.auth),
            });
        }
    }
    let tracking = |b: &str| repo.refname_to_id(&format!("refs/remotes/origin/{b}")).ok();
    if spec.push_branch != spec.checkout_branch
        && let Some(oid) = tracking(&spec.push_branch)
    {
        return Ok((oid, spec.push_branch.clone()));
    }
    match tracking(&spec.checkout_branch) {
        Some(oid) => Ok((oid, spec.checkout_branch.clone())),
        None => Err(GitError::NoBranch {
            url: redact_url(&spec.url),
            branch: spec.checkout_branch.clone(),
        }),
    }
}

enum PushError {
    NonFastForward,
    Refused(String),
}

fn push(repo: &Repository, spec: &WriteBackSpec, commit: Oid) -> Result<(), PushError> {
    let mut remote = repo
        .find_remote("origin")
        .map_err(|e| PushError::Refused(e.message().to_string()))?;
    let rejected: std::cell::RefCell<Option<String>> = std::cell::RefCell::new(None);
    // What the server printed (`remote: …`), e.g. why a hook refused the push.
    let remote_said: std::cell::RefCell<String> = std::cell::RefCell::new(String::new());
    let headers: Vec<String> = auth::bearer_header(&spec.auth).into_iter().collect();
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let result = {
        let mut cbs = auth::remote_callbacks(&spec.url, &spec.auth)
            .map_err(|e| PushError::Refused(e.to_string()))?;
        cbs.push_update_reference(|_refname, status| {
            if let Some(status) = status {
                *rejected.borrow_mut() = Some(status.to_string());
            }
            Ok(())
        });
        cbs.sideband_progress(|data| {
            let mut said = remote_said.borrow_mut();
            if said.len() < 2000 {
                said.push_str(&String::from_utf8_lossy(data));
            }
            true
        });
        let mut options = PushOptions::new();
        options.remote_callbacks(cbs);
        options.custom_headers(&header_refs);
        options.follow_redirects(RemoteRedirect::None);
        // Not forced: a concurrent push makes this fail as non-fast-forward, never overwrites.
        let refspec = format!("{commit}:refs/heads/{}", spec.push_branch);
        remote.push(&[refspec.as_str()], Some(&mut options))
    };
    let said = remote_said.into_inner();
    let said: Vec<&str> = said
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let with_remote = |message: &str| {
        if said.is_empty() {
            message.to_string()
        } else {
            format!(
                "{message} (remote: {})",
                auth::redact_text(&said.join(" / "), &spec.auth)
            )
        }
    };
    let classify = |message: &str| {
        let lower = message.to_ascii_lowercase();
        // A concurrent push that won the race shows up as a non-fast-forward, or, when both
        // passed the server's check at once, as a failed ref lock.
        let said_lower = said.join(" ").to_ascii_lowercase();
        if lower.contains("non-fast-forward")
            || said_lower.contains("cannot lock ref")
            || lower.contains("failed to update ref")
            || lower.contains("stale info")
            || lower.contains("fetch first")
            || lower.contains("not present locally")
            || lower.contains("cannot push because a reference that you are trying to update on the remote contains commits")
        {
            PushError::NonFastForward
        } else {
            PushError::Refused(with_remote(message))
        }
    };
    if let Err(e) = result {
        return Err(classify(&auth::redact_text(e.message(), &spec.auth)));
    }
    if let Some(status) = rejected.into_inner() {
        return Err(classify(&auth::redact_text(&status, &spec.auth)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_engine::source::git::auth::AuthError;

    /// A bare repository on disk as the remote (file URL): real git, no server needed for the
    /// retry logic. The server path (smart HTTP, auth) is covered by the integration tests.
    fn setup() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("remote.git");
        Repository::init_bare(&bare).unwrap();
        let seed = dir.path().join("seed");
        let repo = Repository::init(&seed).unwrap();
        std::fs::write(
            seed.join("app.yaml"),
            "image: r/app:1.0 # {\"$imagepolicy\": \"ns:app\"}\nother: x\n",
        )
        .unwrap();
        commit_all(&repo, "seed");
        let url = format!("file://{}", bare.display());
        repo.remote("origin", &url).unwrap();
        repo.find_remote("origin")
            .unwrap()
            .push(&["HEAD:refs/heads/main"], None)
            .unwrap();
        (dir, url)
    }

    fn commit_all(repo: &Repository, message: &str) -> Oid {
        let mut index = repo.index().unwrap();
        index
            .add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = Signature::now("t", "t@example.com").unwrap();
        let parents: Vec<git2::Commit> = repo
            .head()
            .ok()
            .and_then(|h| h.peel_to_commit().ok())
            .into_iter()
            .collect();
        let parents: Vec<&git2::Commit> = parents.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .unwrap()
    }

    fn spec(dir: &Path, url: &str, name: &str) -> WriteBackSpec {
        WriteBackSpec {
            url: url.to_string(),
            auth: GitAuth::default(),
            checkout_branch: "main".into(),
            push_branch: "main".into(),
            author_name: "ferry".into(),
            author_email: "ferry@example.com".into(),
            work_dir: dir.join(name),
            max_attempts: 5,
            // These unit tests use a bare repository on disk as the remote.
            allow_local: true,
            max_fetch_bytes: 1 << 30,
            max_checkout_bytes: 1 << 30,
        }
    }

    fn replace_in(root: &Path, file: &str, from: &str, to: &str) -> Result<EditOutcome, String> {
        let path = root.join(file);
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        if !text.contains(from) {
            return Ok(EditOutcome { message: None });
        }
        std::fs::write(&path, text.replace(from, to)).map_err(|e| e.to_string())?;
        Ok(EditOutcome {
            message: Some(format!("{from} -> {to}")),
        })
    }

    fn remote_file(dir: &Path, url: &str, file: &str) -> String {
        let check = dir.join(format!("check-{}", rand_suffix()));
        let repo = git2::build::RepoBuilder::new()
            .branch("main")
            .clone(url, &check)
            .unwrap();
        let _ = repo;
        std::fs::read_to_string(check.join(file)).unwrap()
    }

    fn rand_suffix() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("https://bob:s3cret@git.example/x.git"),
            "https://git.example/x.git"
        );
        assert_eq!(
            redact_url("https://git.example/x.git"),
            "https://git.example/x.git"
        );
        assert_eq!(redact_url("git@host:org/x.git"), "git@host:org/x.git");
    }

    #[test]
    fn pushes_and_reports_no_change_the_second_time() {
        let (dir, url) = setup();
        let s = spec(dir.path(), &url, "work");
        let r = write_back(&s, |root| {
            replace_in(root, "app.yaml", "r/app:1.0", "r/app:1.1")
        })
        .unwrap();
        assert!(
            matches!(r, WriteBackResult::Pushed { attempts: 1, .. }),
            "{r:?}"
        );
        let r = write_back(&s, |root| {
            replace_in(root, "app.yaml", "r/app:1.0", "r/app:1.1")
        })
        .unwrap();
        assert!(matches!(r, WriteBackResult::NoChange { .. }), "{r:?}");
        assert!(remote_file(dir.path(), &url, "app.yaml").contains("r/app:1.1"));
    }

    #[test]
    fn non_fast_forward_is_reapplied_on_top() {
        let (dir, url) = setup();
        let a = spec(dir.path(), &url, "a");
        let b = spec(dir.path(), &url, "b");
        // b fetches first (stale), then a pushes, then b's first push is rejected and retried.
        let mut first = true;
        let r = write_back(&b, |root| {
            if first {
                first = false;
                let r = write_back(&a, |root| {
                    replace_in(root, "app.yaml", "other: x", "other: y")
                })
                .unwrap();
                assert!(matches!(r, WriteBackResult::Pushed { .. }));
            }
            replace_in(root, "app.yaml", "r/app:1.0", "r/app:2.0")
        })
        .unwrap();
        assert!(
            matches!(r, WriteBackResult::Pushed { attempts: 2, .. }),
            "{r:?}"
        );
        let text = remote_file(dir.path(), &url, "app.yaml");
        assert!(
            text.contains("r/app:2.0") && text.contains("other: y"),
            "{text}"
        );
    }

    #[test]
    fn separate_push_branch_stacks_and_missing_branch_is_clear() {
        let (dir, url) = setup();
        let mut s = spec(dir.path(), &url, "w");
        s.push_branch = "images".into();
        let r = write_back(&s, |root| {
            replace_in(root, "app.yaml", "r/app:1.0", "r/app:1.1")
        })
        .unwrap();
        assert!(matches!(r, WriteBackResult::Pushed { ref branch, .. } if branch == "images"));
        // The second update starts from the push branch.
        let r = write_back(&s, |root| {
            replace_in(root, "app.yaml", "r/app:1.1", "r/app:1.2")
        })
        .unwrap();
        assert!(matches!(r, WriteBackResult::Pushed { .. }), "{r:?}");
        s.checkout_branch = "nope".into();
        s.push_branch = "nope".into();
        let err = write_back(&s, |_| Ok(EditOutcome::default())).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn local_urls_and_other_origins_are_refused() {
        for url in ["file:///x", "/x", "x", "ext::sh -c id"] {
            assert!(is_local_url(url), "{url}");
        }
        for url in ["https://h/x", "ssh://git@h/x", "git@h:o/x"] {
            assert!(!is_local_url(url), "{url}");
        }
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path(), "file:///tmp", "w");
        s.allow_local = false;
        let err = write_back(&s, |_| Ok(EditOutcome::default())).unwrap_err();
        assert!(matches!(err, GitError::LocalUrl { .. }), "{err}");
        // The same-origin rule for credentials is the engine's (unit-tested there).
        // An scp-like "host" starting with `-` would be an ssh option: it is no network URL.
        assert!(is_local_url("-oProxyCommand=x@h:r"));
    }

    #[test]
    fn ssh_write_back_needs_known_hosts() {
        // Refused before any connection: the host key could not be checked.
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path(), "ssh://git@127.0.0.1:1/team/app.git", "w");
        s.allow_local = false;
        s.auth.ssh_identity = Some("not used".into());
        let err = write_back(&s, |_| Ok(EditOutcome::default())).unwrap_err();
        assert!(
            matches!(&err, GitError::Fetch { reason, .. }
                if *reason == AuthError::MissingKnownHosts.to_string()),
            "{err}"
        );
        assert!(err.to_string().contains("known_hosts"), "{err}");
    }

    #[test]
    fn oversized_work_trees_are_not_checked_out() {
        let (dir, url) = setup();
        let mut s = spec(dir.path(), &url, "small");
        s.max_checkout_bytes = 10;
        let err = write_back(&s, |_| Ok(EditOutcome::default())).unwrap_err();
        assert!(
            matches!(err, GitError::CheckoutTooLarge { limit: 10, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("--git-max-checkout-bytes"));
        assert!(!dir.path().join("small/app.yaml").exists());
    }
}
