//! Git sources: shallow fetch with git2 into a cache directory keyed by the source's identity
//! (`namespace/name`), its URL and its ref, credentials from basic auth / bearer token / ssh key
//! (+ known_hosts), and an immutable checkout directory per commit.
//!
//! Layout under the cache dir: `<key>/repo` (bare repository, shallow), `<key>/checkouts/<sha>`
//! (plain files of that commit) and `<key>/last-used` (touched on every fetch, for eviction). A
//! checkout is written to a temporary directory and renamed into place, so readers never see half
//! a tree; the two newest checkouts are kept so a render that started on the previous revision
//! can finish.
//!
//! Security decisions (docs/agent.md, SECURITY.md):
//! - The cache is never shared between sources: the key includes the source's identity, so one
//!   tenant can neither read another's clone nor be served a commit it could not fetch itself.
//!   A pinned commit found in the cache is still only served after an authenticated connection
//!   to the server (`ls-remote`) succeeds with this source's credentials.
//! - Local repositories (`file://`, paths) and other non-network transports are refused unless
//!   the caller allows them ([`FetchRequest::allow_local`], `--allow-local-git-sources`).
//! - Redirects to another host are never followed (libgit2 `RemoteRedirect::None`), and the
//!   credentials callback only answers for the configured host and port ([`auth`], shared with
//!   ferry-images' write-back).
//! - Fetched pack bytes, checkout bytes and file counts, and the cache volume are bounded.
//! - Tree entries are validated and written without ever following a link (see [`checkout`]).

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use git2::{FetchOptions, ObjectType, Oid, RemoteRedirect, Repository};

pub mod auth;
pub mod history;

pub use super::checkout::{self, BadName, CheckoutError, CheckoutLimits};
// The credential and redaction policy lives in `auth` (shared with ferry-images' write-back);
// these names stay importable from here.
pub use auth::{
    GitAuth, UrlKind, ensure_network_timeouts, known_hosts_match, redact_url, same_origin, url_kind,
};

/// What to follow in the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitReference {
    Branch(String),
    Tag(String),
    /// A semver range over tags (Masterminds-style ranges are accepted: `>=1.0.0 <2.0.0`,
    /// `1.x`, `~1.2`, `^1`); the highest matching tag wins.
    Semver(String),
    /// A full commit SHA-1.
    Commit(String),
}

impl fmt::Display for GitReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GitReference::Branch(b) => write!(f, "branch {b}"),
            GitReference::Tag(t) => write!(f, "tag {t}"),
            GitReference::Semver(r) => write!(f, "semver {r}"),
            GitReference::Commit(c) => write!(f, "commit {c}"),
        }
    }
}

/// Bounds on one fetch and on the cache as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Pack bytes received from the server; the transfer is aborted past this.
    pub max_fetch_bytes: u64,
    /// Size and file count of one checkout.
    pub checkout: CheckoutLimits,
    /// Total bytes of the cache directory; least recently used sources are evicted past this
    /// (`None`: unbounded).
    pub max_cache_bytes: Option<u64>,
}

/// 512 MiB of pack data per fetch.
pub const DEFAULT_MAX_FETCH_BYTES: u64 = 512 * 1024 * 1024;
/// 10 GiB of cache.
pub const DEFAULT_MAX_CACHE_BYTES: u64 = 10 * 1024 * 1024 * 1024;

impl Default for FetchLimits {
    fn default() -> Self {
        Self {
            max_fetch_bytes: DEFAULT_MAX_FETCH_BYTES,
            checkout: CheckoutLimits::default(),
            max_cache_bytes: Some(DEFAULT_MAX_CACHE_BYTES),
        }
    }
}

/// One fetch request.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    pub url: String,
    pub reference: GitReference,
    pub auth: GitAuth,
    /// Whole-operation deadline; the transfer is aborted when it passes.
    pub timeout: Duration,
    /// Who fetches (e.g. `namespace/name` of the GitSource): part of the cache key, so
    /// different sources never share a clone or a checkout.
    pub owner: String,
    /// Allow `file://` URLs and local paths (off in the agent unless
    /// `--allow-local-git-sources`: a tenant must not read the agent's disk).
    pub allow_local: bool,
    pub limits: FetchLimits,
}

impl FetchRequest {
    /// A request with default limits, no credentials, network URLs only.
    pub fn new(owner: &str, url: &str, reference: GitReference) -> Self {
        Self {
            url: url.to_string(),
            reference,
            auth: GitAuth::default(),
            timeout: Duration::from_secs(60),
            owner: owner.to_string(),
            allow_local: false,
            limits: FetchLimits::default(),
        }
    }
}

/// Why a fetch failed. Messages name the URL (without credentials) and the ref.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error(
        "{url}: {kind} git URLs are refused (they read the agent's own disk); use an https:// or ssh:// URL, or start the agent with --allow-local-git-sources"
    )]
    LocalUrl { url: String, kind: &'static str },
    #[error("{url}: unsupported git URL; use https://, http://, ssh:// or user@host:path")]
    UnsupportedUrl { url: String },
    #[error("{url}: git fetch of {reference} failed: {source}")]
    Fetch {
        url: String,
        reference: String,
        #[source]
        source: FetchFailure,
    },
}

/// The cause of a failed fetch.
#[derive(Debug, thiserror::Error)]
pub enum FetchFailure {
    #[error(
        "the server sent more than the agent's limit of {limit} bytes; the fetch was aborted (raise --git-max-fetch-bytes or make the repository smaller)"
    )]
    TooLarge { limit: u64 },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Checkout(#[from] CheckoutError),
    /// The ssh URL cannot be used with these credentials (e.g. no known_hosts).
    #[error(transparent)]
    Credentials(#[from] auth::AuthError),
    /// The server refused the credentials, or asked for some the source does not have
    /// (already redacted).
    #[error("{0}")]
    Auth(String),
    /// Transport and repository errors from libgit2 (already redacted).
    #[error("{0}")]
    Git(String),
}

impl From<String> for FetchFailure {
    fn from(message: String) -> Self {
        FetchFailure::Git(message)
    }
}

/// Refuse local and unknown transports unless `allow_local`.
pub fn check_url(url: &str, allow_local: bool) -> Result<(), GitError> {
    match url_kind(url) {
        UrlKind::Network => Ok(()),
        UrlKind::Local(_) if allow_local => Ok(()),
        UrlKind::Local(kind) => Err(GitError::LocalUrl {
            url: redact_url(url),
            kind,
        }),
        UrlKind::Unsupported => Err(GitError::UnsupportedUrl {
            url: redact_url(url),
        }),
    }
}

/// The result of a fetch: a directory with the files of one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    pub path: PathBuf,
    /// `<branch|tag>@sha1:<hex>`, or `sha1:<hex>` for a commit reference.
    pub revision: String,
    pub commit: String,
}

/// Fetch `request` into `cache_dir` and return the checkout of the resolved commit. Blocking:
/// call it from `spawn_blocking` in async code. Concurrent calls for the same source are
/// serialised; different sources proceed in parallel.
pub fn fetch(cache_dir: &Path, request: &FetchRequest) -> Result<Checkout, GitError> {
    check_url(&request.url, request.allow_local)?;
    ensure_network_timeouts();
    let key = cache_key(&request.owner, &request.url, &request.reference);
    let base = cache_dir.join(&key);
    let lock = key_lock(&base);
    let checkout = {
        let _guard = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        fetch_locked(&base, request).map_err(|source| GitError::Fetch {
            url: redact_url(&request.url),
            reference: request.reference.to_string(),
            source,
        })?
    };
    if let Some(max) = request.limits.max_cache_bytes {
        evict(cache_dir, &base, max);
    }
    Ok(checkout)
}

fn fetch_locked(base: &Path, request: &FetchRequest) -> Result<Checkout, FetchFailure> {
    if let UrlKind::Local(_) = url_kind(&request.url) {
        let local = request.url.trim_start_matches("file://");
        if !Path::new(local).exists() {
            return Err(format!("{local} does not exist").into());
        }
    }
    std::fs::create_dir_all(base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    touch(&base.join("last-used"));
    let repo_dir = base.join("repo");
    let repo = match Repository::open_bare(&repo_dir) {
        Ok(repo) => repo,
        Err(_) => {
            let _ = std::fs::remove_dir_all(&repo_dir);
            let repo = Repository::init_bare(&repo_dir)
                .map_err(|e| format!("cannot init cache repo {}: {e}", repo_dir.display()))?;
            // Also applies to connections that take no FetchOptions (ls-remote).
            if let Ok(mut config) = repo.config() {
                let _ = config.set_str("http.followRedirects", "false");
            }
            repo
        }
    };
    let deadline = Instant::now() + request.timeout;
    let (oid, label) = match &request.reference {
        GitReference::Branch(branch) => {
            let local = format!("refs/ferry/heads/{branch}");
            let spec = format!("+refs/heads/{branch}:{local}");
            fetch_refspecs(&repo, request, &[spec], true, deadline)?;
            (resolve_commit(&repo, &local)?, Some(branch.clone()))
        }
        GitReference::Tag(tag) => {
            let local = format!("refs/ferry/tags/{tag}");
            let spec = format!("+refs/tags/{tag}:{local}");
            fetch_refspecs(&repo, request, &[spec], true, deadline)?;
            (resolve_commit(&repo, &local)?, Some(tag.clone()))
        }
        GitReference::Semver(range) => {
            let req = parse_semver_range(range)?;
            let spec = "+refs/tags/*:refs/ferry/tags/*".to_string();
            fetch_refspecs(&repo, request, &[spec], true, deadline)?;
            let tag = highest_matching_tag(&repo, &req)
                .ok_or_else(|| format!("no tag matches the semver range {range:?}"))?;
            let local = format!("refs/ferry/tags/{tag}");
            (resolve_commit(&repo, &local)?, Some(tag))
        }
        GitReference::Commit(sha) => {
            let oid =
                Oid::from_str(sha).map_err(|_| format!("{sha:?} is not a full commit SHA-1"))?;
            if repo.find_commit(oid).is_ok() {
                // Cached: still prove that this source may read the repository now (its
                // credentials may have been removed) before serving the commit.
                authenticate(&repo, request, deadline)?;
            } else {
                // Servers only serve arbitrary SHAs with allowReachableSHA1InWant; fall back to
                // a full fetch of all branches, where the commit must be reachable.
                let direct = format!("+{sha}:refs/ferry/commit");
                if let Err(err) = fetch_refspecs(&repo, request, &[direct], true, deadline) {
                    // Never retry what the fallback cannot fix (size, time, credentials).
                    if matches!(
                        err,
                        FetchFailure::TooLarge { .. } | FetchFailure::Timeout(_)
                    ) || is_auth_failure(&err)
                    {
                        return Err(err);
                    }
                    let all = "+refs/heads/*:refs/ferry/heads/*".to_string();
                    fetch_refspecs(&repo, request, &[all], false, deadline)?;
                }
            }
            repo.find_commit(oid)
                .map_err(|_| format!("commit {sha} is not reachable from any branch"))?;
            (oid, None)
        }
    };
    let commit = oid.to_string();
    let revision = match label {
        Some(label) => format!("{label}@sha1:{commit}"),
        None => format!("sha1:{commit}"),
    };
    let checkouts = base.join("checkouts");
    let path = checkouts.join(&commit);
    if !path.is_dir() {
        write_checkout(&repo, oid, &checkouts, &path, request.limits.checkout)?;
        prune_checkouts(&checkouts, &path);
    }
    Ok(Checkout {
        path,
        revision,
        commit,
    })
}

fn is_auth_failure(err: &FetchFailure) -> bool {
    matches!(err, FetchFailure::Auth(_) | FetchFailure::Credentials(_))
}

fn resolve_commit(repo: &Repository, reference: &str) -> std::result::Result<Oid, String> {
    let obj = repo
        .revparse_single(reference)
        .map_err(|e| format!("{reference} missing after fetch: {}", e.message()))?;
    let commit = obj
        .peel(ObjectType::Commit)
        .map_err(|e| format!("{reference} does not point to a commit: {}", e.message()))?;
    Ok(commit.id())
}

/// Connect to the remote with this request's credentials and negotiate a fetch of nothing:
/// fails unless the server accepts the source's credentials (or serves it anonymously). Used
/// before serving a pinned commit from the cache. A fetch rather than `connect_auth` + `list`
/// because only a fetch carries the bearer header and the redirect policy.
fn authenticate(
    repo: &Repository,
    request: &FetchRequest,
    deadline: Instant,
) -> Result<(), FetchFailure> {
    fetch_refspecs(repo, request, &[], true, deadline)
}

/// Why the transfer callback stopped a fetch.
#[derive(Debug, Clone, Copy)]
enum Abort {
    Deadline,
    Size,
}

fn fetch_options<'a>(
    request: &'a FetchRequest,
    deadline: Instant,
    aborted: &Rc<Cell<Option<Abort>>>,
) -> Result<FetchOptions<'a>, FetchFailure> {
    let mut options = FetchOptions::new();
    let mut callbacks = auth::remote_callbacks(&request.url, &request.auth)?;
    let max_bytes = request.limits.max_fetch_bytes;
    let aborted = aborted.clone();
    callbacks.transfer_progress(move |progress| {
        if Instant::now() >= deadline {
            aborted.set(Some(Abort::Deadline));
            return false;
        }
        if progress.received_bytes() as u64 > max_bytes {
            aborted.set(Some(Abort::Size));
            return false;
        }
        true
    });
    options.remote_callbacks(callbacks);
    // Same-host redirects only: never send credentials or the bearer header elsewhere.
    options.follow_redirects(RemoteRedirect::None);
    options.download_tags(git2::AutotagOption::None);
    Ok(options)
}

fn fetch_refspecs(
    repo: &Repository,
    request: &FetchRequest,
    refspecs: &[String],
    shallow: bool,
    deadline: Instant,
) -> Result<(), FetchFailure> {
    let mut remote = repo
        .remote_anonymous(&request.url)
        .map_err(|e| format!("bad URL: {}", e.message()))?;
    let aborted = Rc::new(Cell::new(None));
    let mut options = fetch_options(request, deadline, &aborted)?;
    // The local (file://) transport cannot do shallow fetches; it is local disk anyway.
    if shallow && url_kind(&request.url) == UrlKind::Network {
        options.depth(1);
    }
    let header = auth::bearer_header(&request.auth);
    if let Some(header) = &header {
        options.custom_headers(&[header.as_str()]);
    }
    remote
        .fetch(refspecs, Some(&mut options), None)
        .map_err(|e| match aborted.get() {
            Some(Abort::Size) => FetchFailure::TooLarge {
                limit: request.limits.max_fetch_bytes,
            },
            Some(Abort::Deadline) => FetchFailure::Timeout(request.timeout),
            None if Instant::now() >= deadline => FetchFailure::Timeout(request.timeout),
            None if e.code() == git2::ErrorCode::Auth => {
                FetchFailure::Auth(auth::describe_error(&e, &request.auth))
            }
            None => FetchFailure::Git(auth::describe_error(&e, &request.auth)),
        })
}

/// A Masterminds/Flux-style range (`>=1.0.0 <2.0.0`, `1.x`, `^1.2`, `||`), via `ferry-semver`:
/// the same grammar as chart versions and image policies.
pub fn parse_semver_range(range: &str) -> std::result::Result<ferry_semver::Range, String> {
    ferry_semver::Range::parse(range).map_err(|e| format!("{e}; use e.g. \">=1.0.0 <2.0.0\""))
}

fn highest_matching_tag(repo: &Repository, req: &ferry_semver::Range) -> Option<String> {
    let names = repo.references_glob("refs/ferry/tags/*").ok()?;
    let mut best: Option<(semver::Version, String)> = None;
    for reference in names.flatten() {
        let Ok(name) = reference.name() else {
            continue;
        };
        let tag = name.trim_start_matches("refs/ferry/tags/").to_string();
        let Some(version) = ferry_semver::parse_version(&tag) else {
            continue;
        };
        if req.matches(&version)
            && best.as_ref().is_none_or(|(b, _)| {
                ferry_semver::cmp_precedence(&version, b) == std::cmp::Ordering::Greater
            })
        {
            best = Some((version, tag));
        }
    }
    best.map(|(_, tag)| tag)
}

/// Write the files of `oid` into `final_path` through a temporary sibling directory.
fn write_checkout(
    repo: &Repository,
    oid: Oid,
    checkouts: &Path,
    final_path: &Path,
    limits: CheckoutLimits,
) -> Result<(), FetchFailure> {
    std::fs::create_dir_all(checkouts)
        .map_err(|e| format!("cannot create {}: {e}", checkouts.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempdir_in(checkouts)
        .map_err(|e| format!("cannot create a temp dir in {}: {e}", checkouts.display()))?;
    // On error `tmp` is dropped and removed with everything written so far.
    checkout::write_tree(repo, oid, tmp.path(), limits)?;
    let tmp_path = tmp.keep();
    std::fs::rename(&tmp_path, final_path).map_err(|e| {
        let _ = std::fs::remove_dir_all(&tmp_path);
        FetchFailure::Git(format!(
            "cannot move checkout into {}: {e}",
            final_path.display()
        ))
    })
}

/// Keep `current` and the newest other checkout; remove older ones and stale temp dirs.
fn prune_checkouts(checkouts: &Path, current: &Path) {
    let Ok(entries) = std::fs::read_dir(checkouts) else {
        return;
    };
    let mut others: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.path() != current)
        .filter_map(|e| {
            let modified = e.metadata().ok()?.modified().ok()?;
            Some((modified, e.path()))
        })
        .collect();
    others.sort_by_key(|b| std::cmp::Reverse(b.0));
    for (_, path) in others.into_iter().skip(1) {
        let _ = std::fs::remove_dir_all(path);
    }
}

fn touch(path: &Path) {
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()));
}

/// Bytes under `dir`, not following symlinks.
fn dir_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Keep the cache under `max` bytes: remove whole source directories (`<key>/`), least
/// recently used first, never `keep` (the one just fetched). A source whose directory was
/// evicted fetches again on its next interval. Only directories that look like ours (a
/// `last-used` file, or a `repo` from an older version's layout) are touched, so other data in
/// the cache dir (image automation clones) is left alone and counted.
fn evict(cache_dir: &Path, keep: &Path, max: u64) {
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return;
    };
    let mut total = 0u64;
    let mut candidates = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let size = dir_size(&path);
        total += size;
        if path == keep {
            continue;
        }
        let used = match std::fs::metadata(path.join("last-used")).and_then(|m| m.modified()) {
            Ok(used) => used,
            // An entry of an older ferry (keyed by URL + ref only, never used again): first out.
            Err(_) if path.join("repo").is_dir() => SystemTime::UNIX_EPOCH,
            Err(_) => continue,
        };
        candidates.push((used, size, path));
    }
    if total <= max {
        return;
    }
    candidates.sort_by_key(|(used, _, _)| *used);
    for (_, size, path) in candidates {
        if total <= max {
            break;
        }
        // Take the lock of that source so an eviction never races its own fetch.
        let lock = key_lock(&path);
        let Ok(_guard) = lock.try_lock() else {
            continue;
        };
        if std::fs::remove_dir_all(&path).is_ok() {
            tracing::info!(dir = %path.display(), bytes = size, "evicted git cache entry (cache over --git-cache-max-bytes)");
            total = total.saturating_sub(size);
        }
    }
    if total > max {
        tracing::warn!(
            bytes = total,
            limit = max,
            "git cache is over its limit and nothing more can be evicted"
        );
    }
}

fn cache_key(owner: &str, url: &str, reference: &GitReference) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{owner}\n{url}\n{reference}").as_bytes(),
    );
    hex::encode(&digest.as_ref()[..12])
}

fn key_lock(base: &Path) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let locks = LOCKS.get_or_init(Default::default);
    let mut map = locks
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    map.entry(base.to_path_buf()).or_default().clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_ranges_in_flux_syntax() {
        let req = parse_semver_range(">=1.0.0 <2.0.0").unwrap();
        assert!(req.matches(&semver::Version::parse("1.5.0").unwrap()));
        assert!(!req.matches(&semver::Version::parse("2.0.0").unwrap()));
        let req = parse_semver_range("1.x").unwrap();
        assert!(req.matches(&semver::Version::parse("1.9.3").unwrap()));
        assert!(!req.matches(&semver::Version::parse("2.0.0").unwrap()));
        assert!(parse_semver_range("not a range").is_err());
    }

    #[test]
    fn local_urls_need_the_flag() {
        let err = check_url("file:///etc", false).unwrap_err().to_string();
        assert!(err.contains("--allow-local-git-sources"), "{err}");
        assert!(check_url("file:///etc", true).is_ok());
        assert!(check_url("ext::sh", true).is_ok());
        assert!(matches!(
            check_url("ftp://h/r", true),
            Err(GitError::UnsupportedUrl { .. })
        ));
    }

    #[test]
    fn cache_keys_differ_per_owner() {
        let r = GitReference::Commit("a".repeat(40));
        assert_ne!(
            cache_key("a/x", "https://h/r", &r),
            cache_key("b/x", "https://h/r", &r)
        );
    }

    /// A local repository with one commit holding `len` incompressible bytes.
    fn local_repo(dir: &Path, len: usize, seed: u64) -> String {
        let repo = Repository::init_bare(dir).unwrap();
        let mut data = Vec::with_capacity(len);
        let mut x = seed;
        while data.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes());
        }
        let blob = repo.blob(&data).unwrap();
        let mut builder = repo.treebuilder(None).unwrap();
        builder.insert("data.bin", blob, 0o100644).unwrap();
        let tree = repo.find_tree(builder.write().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        repo.commit(Some("refs/heads/main"), &sig, &sig, "c", &tree, &[])
            .unwrap();
        format!("file://{}", dir.display())
    }

    #[test]
    fn cache_is_evicted_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let a = local_repo(&dir.path().join("a.git"), 200_000, 1);
        let b = local_repo(&dir.path().join("b.git"), 200_000, 2);
        let mut request = FetchRequest::new("ns/a", &a, GitReference::Branch("main".into()));
        request.allow_local = true;
        request.limits.max_cache_bytes = Some(1_000_000);
        let first = fetch(&cache, &request).unwrap();
        // Refused without the flag, whatever the cache holds.
        let mut refused = request.clone();
        refused.allow_local = false;
        assert!(matches!(
            fetch(&cache, &refused),
            Err(GitError::LocalUrl { .. })
        ));
        // The same source again is served from its own entry; another owner gets its own.
        let mut other_owner = request.clone();
        other_owner.owner = "other/a".into();
        let second = fetch(&cache, &other_owner).unwrap();
        assert_ne!(first.path, second.path);
        // A third source pushes the cache (about 400 kB per entry) over 1 MB: the least recently used entry goes.
        let mut third = request.clone();
        third.owner = "ns/b".into();
        third.url = b;
        let kept = fetch(&cache, &third).unwrap();
        assert!(kept.path.is_dir());
        assert!(!first.path.exists(), "the oldest entry was evicted");
        assert!(second.path.exists());
        // Fetching the evicted source again works.
        assert!(fetch(&cache, &request).unwrap().path.is_dir());
    }

    #[test]
    fn oversized_fetches_and_checkouts_fail_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let url = local_repo(&dir.path().join("a.git"), 300_000, 3);
        let mut request = FetchRequest::new("ns/a", &url, GitReference::Branch("main".into()));
        request.allow_local = true;
        request.limits.checkout.max_bytes = 100_000;
        let err = fetch(&dir.path().join("cache"), &request).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(
                &err,
                GitError::Fetch {
                    source: FetchFailure::Checkout(CheckoutError::TooLarge { .. }),
                    ..
                }
            ),
            "{message}"
        );
        assert!(message.contains("--git-max-checkout-bytes"), "{message}");
        assert!(
            !dir.path()
                .join("cache")
                .read_dir()
                .unwrap()
                .flatten()
                .any(|e| e
                    .path()
                    .join("checkouts")
                    .read_dir()
                    .is_ok_and(|mut d| d.next().is_some())),
            "no checkout left behind"
        );
    }
}
