//! Git sources: shallow fetch with git2 into a cache directory keyed by (url, ref), credentials
//! from basic auth / bearer token / ssh key (+ known_hosts), and an immutable checkout directory
//! per commit that every consumer of the same source shares.
//!
//! Layout under the cache dir: `<key>/repo` (bare repository, shallow) and
//! `<key>/checkouts/<sha>` (plain files of that commit). A checkout is written to a temporary
//! directory and renamed into place, so readers never see half a tree; the two newest checkouts
//! are kept so a render that started on the previous revision can finish.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use git2::{
    CertificateCheckStatus, Cred, CredentialType, FetchOptions, ObjectType, Oid, RemoteCallbacks,
    Repository,
};

use crate::{Error, Result};

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

/// Credentials for a fetch. `Debug` never prints the secret values.
#[derive(Clone, Default)]
pub struct GitAuth {
    pub username: Option<String>,
    pub password: Option<String>,
    pub bearer_token: Option<String>,
    /// SSH private key (OpenSSH or PEM).
    pub ssh_identity: Option<String>,
    /// known_hosts lines; required for ssh URLs.
    pub known_hosts: Option<String>,
}

impl fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "ssh_identity",
                &self.ssh_identity.as_ref().map(|_| "<redacted>"),
            )
            .field("known_hosts", &self.known_hosts.is_some())
            .finish()
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
}

/// The result of a fetch: a directory with the files of one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    pub path: PathBuf,
    /// `<branch|tag>@sha1:<hex>`, or `sha1:<hex>` for a commit reference.
    pub revision: String,
    pub commit: String,
}

/// Remove user info (`user:password@`) from a URL so it can appear in messages.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if let Some((_, host)) = authority.rsplit_once('@') {
            let keep_user = scheme.starts_with("ssh");
            if keep_user {
                // ssh://git@host is a user name, not a secret; still drop a password.
                if let Some((user, _)) = authority.rsplit_once('@') {
                    let user = user.split(':').next().unwrap_or_default();
                    return format!("{scheme}://{user}@{host}{path}");
                }
            }
            return format!("{scheme}://{host}{path}");
        }
    }
    url.to_string()
}

/// Fetch `request` into `cache_dir` and return the checkout of the resolved commit. Blocking:
/// call it from `spawn_blocking` in async code. Concurrent calls for the same (url, ref) are
/// serialised; different sources proceed in parallel.
pub fn fetch(cache_dir: &Path, request: &FetchRequest) -> Result<Checkout> {
    let key = cache_key(&request.url, &request.reference);
    let base = cache_dir.join(&key);
    let lock = key_lock(&base);
    let _guard = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let shown = redact_url(&request.url);
    fetch_locked(&base, request).map_err(|err| Error::Source {
        path: PathBuf::from(&shown),
        message: format!("git fetch of {} failed: {err}", request.reference),
    })
}

fn fetch_locked(base: &Path, request: &FetchRequest) -> std::result::Result<Checkout, String> {
    if request.url.starts_with("file://") {
        let local = request.url.trim_start_matches("file://");
        if !Path::new(local).exists() {
            return Err(format!("{local} does not exist"));
        }
    }
    std::fs::create_dir_all(base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    let repo_dir = base.join("repo");
    let repo = match Repository::open_bare(&repo_dir) {
        Ok(repo) => repo,
        Err(_) => {
            let _ = std::fs::remove_dir_all(&repo_dir);
            Repository::init_bare(&repo_dir)
                .map_err(|e| format!("cannot init cache repo {}: {e}", repo_dir.display()))?
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
            if repo.find_commit(oid).is_err() {
                // Servers only serve arbitrary SHAs with allowReachableSHA1InWant; fall back to
                // a full fetch of all branches, where the commit must be reachable.
                let direct = format!("+{sha}:refs/ferry/commit");
                if fetch_refspecs(&repo, request, &[direct], true, deadline).is_err() {
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
        write_checkout(&repo, oid, &checkouts, &path)?;
        prune_checkouts(&checkouts, &path);
    }
    Ok(Checkout {
        path,
        revision,
        commit,
    })
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

fn fetch_refspecs(
    repo: &Repository,
    request: &FetchRequest,
    refspecs: &[String],
    shallow: bool,
    deadline: Instant,
) -> std::result::Result<(), String> {
    let mut remote = repo
        .remote_anonymous(&request.url)
        .map_err(|e| format!("bad URL: {}", e.message()))?;
    let mut options = FetchOptions::new();
    options.remote_callbacks(callbacks(&request.url, &request.auth, deadline)?);
    // The local (file://) transport cannot do shallow fetches; it is local disk anyway.
    if shallow && !request.url.starts_with("file://") && !is_local_path(&request.url) {
        options.depth(1);
    }
    options.download_tags(git2::AutotagOption::None);
    let header;
    if let Some(token) = &request.auth.bearer_token {
        header = format!("Authorization: Bearer {token}");
        options.custom_headers(&[header.as_str()]);
    }
    remote
        .fetch(refspecs, Some(&mut options), None)
        .map_err(|e| {
            if Instant::now() >= deadline {
                format!("timed out after {:?}", request.timeout)
            } else {
                describe_git_error(&e)
            }
        })
}

fn is_local_path(url: &str) -> bool {
    url.starts_with('/')
}

/// A git2 error message without anything secret (libgit2 never echoes credentials, but URLs
/// with user info may appear).
fn describe_git_error(err: &git2::Error) -> String {
    let msg = redact_in_text(err.message());
    match err.code() {
        git2::ErrorCode::Auth => format!(
            "authentication failed ({msg}); check the credentials in the GitSource's secretRef"
        ),
        git2::ErrorCode::Certificate => format!("host verification failed ({msg})"),
        git2::ErrorCode::NotFound => format!("{msg}; does the ref exist on the remote?"),
        _ => msg,
    }
}

fn redact_in_text(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            if word.contains("://") && word.contains('@') {
                redact_url(word)
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn callbacks<'a>(
    url: &str,
    auth: &'a GitAuth,
    deadline: Instant,
) -> std::result::Result<RemoteCallbacks<'a>, String> {
    let mut callbacks = RemoteCallbacks::new();
    let is_ssh = url.starts_with("ssh://") || (!url.contains("://") && url.contains('@'));
    let mut attempts = 0u32;
    callbacks.credentials(move |_url, username_from_url, allowed| {
        // libgit2 asks again after a rejection; give up instead of looping.
        attempts += 1;
        if attempts > 3 {
            return Err(git2::Error::new(
                git2::ErrorCode::Auth,
                git2::ErrorClass::Http,
                "credentials rejected",
            ));
        }
        if allowed.contains(CredentialType::SSH_KEY)
            && let Some(key) = &auth.ssh_identity
        {
            let user = auth
                .username
                .as_deref()
                .or(username_from_url)
                .unwrap_or("git");
            return Cred::ssh_key_from_memory(user, None, key, auth.password.as_deref());
        }
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(
                auth.username
                    .as_deref()
                    .or(username_from_url)
                    .unwrap_or("git"),
            );
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
            && let (Some(user), Some(pass)) = (&auth.username, &auth.password)
        {
            return Cred::userpass_plaintext(user, pass);
        }
        Err(git2::Error::new(
            git2::ErrorCode::Auth,
            git2::ErrorClass::Http,
            "the server asks for credentials and the GitSource has no usable secretRef",
        ))
    });
    if is_ssh {
        let host = ssh_host(url);
        let known = auth.known_hosts.clone().ok_or_else(|| {
            "ssh URLs need `known_hosts` in the GitSource's secret (host keys are never trusted blindly)"
                .to_string()
        })?;
        callbacks.certificate_check(move |cert, _host| {
            let Some(hostkey) = cert.as_hostkey().and_then(|h| h.hostkey()) else {
                return Err(git2::Error::from_str("ssh server sent no host key"));
            };
            if known_hosts_match(&known, &host, hostkey) {
                Ok(CertificateCheckStatus::CertificateOk)
            } else {
                Err(git2::Error::new(
                    git2::ErrorCode::Certificate,
                    git2::ErrorClass::Ssh,
                    format!("host key of {host} is not in known_hosts"),
                ))
            }
        });
    }
    callbacks.transfer_progress(move |_| Instant::now() < deadline);
    Ok(callbacks)
}

/// `host` or `[host]:port` as it appears in known_hosts.
fn ssh_host(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("ssh://") {
        let authority = rest.split('/').next().unwrap_or_default();
        let hostport = authority.rsplit('@').next().unwrap_or_default();
        return match hostport.split_once(':') {
            Some((host, port)) if port != "22" => format!("[{host}]:{port}"),
            Some((host, _)) => host.to_string(),
            None => hostport.to_string(),
        };
    }
    // scp-like user@host:path
    let after_at = url.rsplit_once('@').map(|(_, h)| h).unwrap_or(url);
    after_at.split(':').next().unwrap_or_default().to_string()
}

/// Does a known_hosts file list `key` (raw SSH wire-format blob) for `host`? Supports plain
/// host patterns (comma-separated) and hashed `|1|salt|hash` entries.
pub fn known_hosts_match(known_hosts: &str, host: &str, key: &[u8]) -> bool {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    for line in known_hosts.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(hosts), Some(_kind), Some(blob)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let host_ok = if let Some(hashed) = hosts.strip_prefix("|1|") {
            let Some((salt, hash)) = hashed.split_once('|') else {
                continue;
            };
            match (b64.decode(salt), b64.decode(hash)) {
                (Ok(salt), Ok(hash)) => {
                    let k = aws_lc_rs::hmac::Key::new(
                        aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
                        &salt,
                    );
                    aws_lc_rs::hmac::verify(&k, host.as_bytes(), &hash).is_ok()
                }
                _ => false,
            }
        } else {
            hosts.split(',').any(|h| h == host)
        };
        if host_ok && b64.decode(blob).is_ok_and(|b| b == key) {
            return true;
        }
    }
    false
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
) -> std::result::Result<(), String> {
    std::fs::create_dir_all(checkouts)
        .map_err(|e| format!("cannot create {}: {e}", checkouts.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempdir_in(checkouts)
        .map_err(|e| format!("cannot create a temp dir in {}: {e}", checkouts.display()))?;
    let tree = repo
        .find_commit(oid)
        .and_then(|c| c.tree())
        .map_err(|e| format!("cannot read commit {oid}: {}", e.message()))?;
    let mut failure: Option<String> = None;
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        let Ok(name) = entry.name() else {
            return git2::TreeWalkResult::Skip;
        };
        let rel = Path::new(dir).join(name);
        let target = tmp.path().join(&rel);
        let result = match entry.kind() {
            Some(ObjectType::Tree) => std::fs::create_dir_all(&target).map_err(|e| e.to_string()),
            Some(ObjectType::Blob) => write_blob(repo, entry, &target),
            // Submodules (commits) are not followed, like a plain fetch.
            _ => Ok(()),
        };
        match result {
            Ok(()) => git2::TreeWalkResult::Ok,
            Err(err) => {
                failure = Some(format!("writing {}: {err}", rel.display()));
                git2::TreeWalkResult::Abort
            }
        }
    })
    .map_err(|e| failure.clone().unwrap_or_else(|| e.message().to_string()))?;
    if let Some(err) = failure {
        return Err(err);
    }
    let tmp_path = tmp.keep();
    std::fs::rename(&tmp_path, final_path).map_err(|e| {
        let _ = std::fs::remove_dir_all(&tmp_path);
        format!("cannot move checkout into {}: {e}", final_path.display())
    })
}

fn write_blob(
    repo: &Repository,
    entry: &git2::TreeEntry<'_>,
    target: &Path,
) -> std::result::Result<(), String> {
    let blob = repo
        .find_blob(entry.id())
        .map_err(|e| e.message().to_string())?;
    let mode = entry.filemode();
    if mode == 0o120000 {
        // Symlinks are recreated as symlinks; the render stage refuses ones leaving the tree.
        let link = String::from_utf8_lossy(blob.content()).to_string();
        #[cfg(unix)]
        return std::os::unix::fs::symlink(link, target).map_err(|e| e.to_string());
        #[cfg(not(unix))]
        return Err(format!("symlink to {link} not supported on this platform"));
    }
    std::fs::write(target, blob.content()).map_err(|e| e.to_string())?;
    #[cfg(unix)]
    if mode == 0o100755 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
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

fn cache_key(url: &str, reference: &GitReference) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{url}\n{reference}").as_bytes(),
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
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("https://user:secret@example.com/repo.git"),
            "https://example.com/repo.git"
        );
        assert_eq!(
            redact_url("ssh://git:pw@example.com/repo.git"),
            "ssh://git@example.com/repo.git"
        );
        assert_eq!(redact_url("file:///tmp/x"), "file:///tmp/x");
    }

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
    fn ssh_hosts_and_known_hosts() {
        use base64::Engine;
        assert_eq!(
            ssh_host("ssh://git@example.com:2222/r.git"),
            "[example.com]:2222"
        );
        assert_eq!(ssh_host("git@example.com:org/r.git"), "example.com");
        let key = b"ssh-ed25519-blob";
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        let known = format!("other.com ssh-ed25519 AAAA\nexample.com,1.2.3.4 ssh-ed25519 {b64}\n");
        assert!(known_hosts_match(&known, "example.com", key));
        assert!(!known_hosts_match(&known, "evil.com", key));
        assert!(!known_hosts_match(&known, "example.com", b"other"));
    }
}
