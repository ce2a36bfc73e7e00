//! A commit fetched WITH its history, for deploy requests (`ferry deploy`): the requested commit
//! is checked out like any other, and the history answers the two questions a deploy policy
//! asks: is the commit reachable from the allowed branch or tag, and does it descend from the
//! commit deployed now (or would it roll back)?
//!
//! Kept apart from [`super::fetch`]: that one fetches shallow (depth 1), where ancestry cannot be
//! told. This cache is full-depth, one per owner (`<owner>#history`) and URL, fetched
//! incrementally, under the same limits (pack bytes, checkout size, deadline) and the same
//! credential and redirect rules.

use std::path::Path;
use std::time::Instant;

use git2::{Oid, Repository};

use super::{
    Checkout, FetchFailure, FetchRequest, GitError, GitReference, cache_key, check_url, evict,
    fetch_refspecs, key_lock, prune_checkouts, redact_url, touch, write_checkout,
};

/// Where the commit must be reachable from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    Branch(String),
    Tag(String),
    /// Any branch of the repository.
    AnyBranch,
    /// Any commit the server serves (no reachability rule).
    AnyCommit,
}

impl std::fmt::Display for Reach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reach::Branch(b) => write!(f, "branch {b}"),
            Reach::Tag(t) => write!(f, "tag {t}"),
            Reach::AnyBranch => f.write_str("any branch"),
            Reach::AnyCommit => f.write_str("any commit"),
        }
    }
}

/// How the requested commit relates to the deployed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// The same commit (a re-deploy).
    Same,
    /// A descendant: moving forward.
    Descendant,
    /// An ancestor, or on another line of history: a rollback.
    NotDescendant,
    /// The deployed commit is not in the repository any more (force-pushed away).
    DeployedUnknown,
}

/// What [`fetch_commit`] found.
#[derive(Debug, Clone)]
pub struct HistoryCheckout {
    pub checkout: Checkout,
    /// Whether the commit is reachable as [`Reach`] requires.
    pub reachable: bool,
    /// `None` when nothing is deployed yet.
    pub relation: Option<Relation>,
}

/// Fetch `commit` (40 hex digits) of `request.url` with history (`request.reference` is not
/// used) and answer reachability from `reach` and the relation to `deployed`. Blocking.
pub fn fetch_commit(
    cache_dir: &Path,
    request: &FetchRequest,
    commit: &str,
    reach: &Reach,
    deployed: Option<&str>,
) -> Result<HistoryCheckout, GitError> {
    check_url(&request.url, request.allow_local)?;
    super::ensure_network_timeouts();
    let failed = |source: FetchFailure| GitError::Fetch {
        url: redact_url(&request.url),
        reference: format!("commit {commit}"),
        source,
    };
    let oid = full_sha(commit).map_err(|m| failed(m.into()))?;
    let deployed = deployed.and_then(|d| full_sha(d).ok());
    let refspecs = refspecs(reach).map_err(|m| failed(m.into()))?;
    let key = cache_key(
        &format!("{}#history", request.owner),
        &request.url,
        &GitReference::Branch("*".to_string()),
    );
    let base = cache_dir.join(key);
    let lock = key_lock(&base);
    let result = {
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        locked(&base, request, oid, &refspecs, reach, deployed).map_err(failed)?
    };
    if let Some(max) = request.limits.max_cache_bytes {
        evict(cache_dir, &base, max);
    }
    Ok(result)
}

/// A full commit SHA-1: git2 would zero-pad a short one into a different commit id.
fn full_sha(text: &str) -> Result<Oid, String> {
    if text.len() != 40 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{text:?} is not a full 40-digit commit SHA-1"));
    }
    Oid::from_str(text).map_err(|e| e.message().to_string())
}

/// The refspecs that bring the history `reach` needs. Branch and tag names come from a policy a
/// tenant writes: they must be plain ref names (no `*`, no `:`), never a refspec of their own.
fn refspecs(reach: &Reach) -> Result<Vec<String>, String> {
    let plain = |kind: &str, name: &str| {
        let full = format!("refs/{kind}/{name}");
        if name.contains(['*', ':', '^', '~', '?', '[', '\\'])
            || name.starts_with('-')
            || !git2::Reference::is_valid_name(&full)
        {
            Err(format!("{name:?} is not a valid {kind} name"))
        } else {
            Ok(format!("+{full}:refs/ferry/{kind}/{name}"))
        }
    };
    Ok(match reach {
        Reach::Branch(b) => vec![plain("heads", b)?],
        Reach::Tag(t) => vec![plain("tags", t)?],
        Reach::AnyBranch | Reach::AnyCommit => {
            vec!["+refs/heads/*:refs/ferry/heads/*".to_string()]
        }
    })
}

fn locked(
    base: &Path,
    request: &FetchRequest,
    oid: Oid,
    refspecs: &[String],
    reach: &Reach,
    deployed: Option<Oid>,
) -> Result<HistoryCheckout, FetchFailure> {
    std::fs::create_dir_all(base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    touch(&base.join("last-used"));
    let repo_dir = base.join("repo");
    let repo = match Repository::open_bare(&repo_dir) {
        Ok(repo) => repo,
        Err(_) => {
            let _ = std::fs::remove_dir_all(&repo_dir);
            let repo = Repository::init_bare(&repo_dir)
                .map_err(|e| format!("cannot init cache repo {}: {e}", repo_dir.display()))?;
            if let Ok(mut config) = repo.config() {
                let _ = config.set_str("http.followRedirects", "false");
            }
            repo
        }
    };
    let deadline = Instant::now() + request.timeout;
    // Full depth: ancestry needs the history. Always fetched (never served from the cache
    // alone), so the source's credentials are proven on every request.
    super::fetch_refspecs(&repo, request, refspecs, false, deadline)?;
    if repo.find_commit(oid).is_err() && *reach == Reach::AnyCommit {
        let direct = format!("+{oid}:refs/ferry/commit");
        fetch_refspecs(&repo, request, &[direct], false, deadline)?;
    }
    if repo.find_commit(oid).is_err() {
        return Err(FetchFailure::Git(format!(
            "commit {oid} is not reachable from {reach} of the repository"
        )));
    }
    let tips: Vec<Oid> = match reach {
        Reach::AnyCommit => Vec::new(),
        _ => {
            let glob = match reach {
                Reach::Branch(b) => format!("refs/ferry/heads/{b}"),
                Reach::Tag(t) => format!("refs/ferry/tags/{t}"),
                _ => "refs/ferry/heads/*".to_string(),
            };
            repo.references_glob(&glob)
                .map_err(|e| e.message().to_string())?
                .flatten()
                .filter_map(|r| r.peel_to_commit().ok().map(|c| c.id()))
                .collect()
        }
    };
    let reachable = *reach == Reach::AnyCommit
        || tips
            .iter()
            .any(|tip| *tip == oid || repo.graph_descendant_of(*tip, oid).unwrap_or(false));
    let relation = deployed.map(|deployed| {
        if deployed == oid {
            return Relation::Same;
        }
        if repo.find_commit(deployed).is_err() {
            // Not on the fetched refs: maybe on another branch. One direct try, errors ignored
            // (the answer is then "unknown", which only a rollback-allowing policy accepts).
            let direct = format!("+{deployed}:refs/ferry/deployed");
            let _ = fetch_refspecs(&repo, request, &[direct], false, deadline);
        }
        if repo.find_commit(deployed).is_err() {
            Relation::DeployedUnknown
        } else if repo.graph_descendant_of(oid, deployed).unwrap_or(false) {
            Relation::Descendant
        } else {
            Relation::NotDescendant
        }
    });
    let commit = oid.to_string();
    let checkouts = base.join("checkouts");
    let path = checkouts.join(&commit);
    if !path.is_dir() {
        write_checkout(&repo, oid, &checkouts, &path, request.limits.checkout)?;
        prune_checkouts(&checkouts, &path);
    }
    Ok(HistoryCheckout {
        checkout: Checkout {
            path,
            revision: format!("sha1:{commit}"),
            commit,
        },
        reachable,
        relation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local repository: main a1 - a2 - a3, branch side from a1: s1; tag v1 at a2.
    fn repo(dir: &Path) -> (Vec<String>, String) {
        let repo = Repository::init_bare(dir).expect("init");
        let sig = git2::Signature::now("t", "t@example.invalid").expect("sig");
        let commit = |update: Option<&str>, parent: Option<Oid>, content: &str| {
            let blob = repo.blob(content.as_bytes()).expect("blob");
            let mut builder = repo.treebuilder(None).expect("tb");
            builder.insert("f.yaml", blob, 0o100644).expect("insert");
            let tree = repo
                .find_tree(builder.write().expect("tree"))
                .expect("tree");
            let parents: Vec<git2::Commit<'_>> = parent
                .map(|p| repo.find_commit(p).expect("parent"))
                .into_iter()
                .collect();
            let refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
            repo.commit(update, &sig, &sig, content, &tree, &refs)
                .expect("commit")
        };
        let a1 = commit(None, None, "a1");
        let a2 = commit(None, Some(a1), "a2");
        let a3 = commit(None, Some(a2), "a3");
        let s1 = commit(None, Some(a1), "s1");
        repo.reference("refs/heads/main", a3, true, "")
            .expect("main");
        repo.reference("refs/heads/side", s1, true, "")
            .expect("side");
        repo.reference("refs/tags/v1", a2, true, "").expect("tag");
        let ids = [a1, a2, a3].iter().map(|o| o.to_string()).collect();
        (ids, s1.to_string())
    }

    fn request(url: &str) -> FetchRequest {
        let mut r = FetchRequest::new("team/app", url, GitReference::Branch("main".into()));
        r.allow_local = true;
        r
    }

    #[test]
    fn reachability_and_rollback_are_told_from_history() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (main, side) = repo(&tmp.path().join("origin.git"));
        let url = format!("file://{}", tmp.path().join("origin.git").display());
        let cache = tmp.path().join("cache");
        let req = request(&url);
        let main_rule = Reach::Branch("main".into());
        // Forward on main.
        let got = fetch_commit(&cache, &req, &main[2], &main_rule, Some(&main[1])).expect("a3");
        assert!(got.reachable);
        assert_eq!(got.relation, Some(Relation::Descendant));
        assert_eq!(got.checkout.commit, main[2]);
        assert_eq!(
            std::fs::read_to_string(got.checkout.path.join("f.yaml")).expect("file"),
            "a3"
        );
        // Back to an ancestor: a rollback.
        let back = fetch_commit(&cache, &req, &main[0], &main_rule, Some(&main[2])).expect("a1");
        assert!(back.reachable);
        assert_eq!(back.relation, Some(Relation::NotDescendant));
        // The same commit again.
        let same = fetch_commit(&cache, &req, &main[2], &main_rule, Some(&main[2])).expect("same");
        assert_eq!(same.relation, Some(Relation::Same));
        // The side branch is not reachable from main (but from any branch it is).
        // (A local fetch may copy every object, so the commit can be present and still not
        // reachable; over the network it is not even fetched.)
        match fetch_commit(&cache, &req, &side, &main_rule, None) {
            Ok(got) => assert!(!got.reachable, "side is not on main"),
            Err(err) => assert!(
                err.to_string().contains("not reachable from branch main"),
                "{err}"
            ),
        }
        let any = fetch_commit(&cache, &req, &side, &Reach::AnyBranch, Some(&main[2]))
            .expect("any branch");
        assert!(any.reachable);
        assert_eq!(any.relation, Some(Relation::NotDescendant));
        // The tag rule: a2 is reachable from v1, a3 is not.
        let tag = Reach::Tag("v1".into());
        assert!(
            fetch_commit(&cache, &req, &main[1], &tag, None)
                .expect("a2")
                .reachable
        );
        let a3 = fetch_commit(&cache, &req, &main[2], &tag, None);
        // a3 is already in the cache (fetched for main), so it is found but not reachable.
        assert!(!a3.expect("cached").reachable);
    }

    #[test]
    fn names_from_policies_never_become_refspecs() {
        for bad in ["main:refs/heads/x", "*", "a..b", "-x", "main^", ""] {
            assert!(refspecs(&Reach::Branch(bad.into())).is_err(), "{bad}");
        }
        assert!(refspecs(&Reach::Tag("v1.2.3".into())).is_ok());
        assert!(full_sha("abc").is_err(), "short ids are refused");
        assert!(full_sha(&"g".repeat(40)).is_err());
        assert!(full_sha(&"a".repeat(40)).is_ok());
    }
}
