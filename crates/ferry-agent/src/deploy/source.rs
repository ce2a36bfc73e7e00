//! The git side of a deploy: a Release's GitSource as a fetch request (its URL, its credentials
//! read as the namespace's tenant identity, the agent's limits) and the full-history fetch of the
//! requested commit (`ferry_engine::source::git::history`), used both by the HTTP handler (to
//! check the policy's reachability and rollback rules) and by the Release controller (to apply
//! the pinned commit). Both key the same per-GitSource history cache, so the second fetch of a
//! request is incremental.

use std::time::Duration;

use ferry_api::{GitSource, Release};
use ferry_engine::source::git::history::{self, HistoryCheckout, Reach};
use ferry_engine::source::git::{self, FetchRequest, GitAuth, GitReference};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::context::{Key, TenantClients};
use crate::options::AgentOptions;

/// The GitSource a Release reads (its namespace and name), by the cross-namespace rule.
pub fn source_key(release: &Release, options: &AgentOptions) -> Result<Key, String> {
    let own = release.namespace().unwrap_or_default();
    if release.spec.source_ref.kind != "GitSource" {
        return Err(format!(
            "Release {own}/{} reads a {}; deploy requests need a GitSource",
            release.name_any(),
            release.spec.source_ref.kind
        ));
    }
    let namespace = ferry_api::referenced_namespace(
        options.allow_cross_namespace_refs,
        "Release",
        &own,
        release.spec.source_ref.namespace.as_deref(),
        &format!("GitSource {}", release.spec.source_ref.name),
    )
    .map_err(|refused| refused.to_string())?;
    Ok((namespace, release.spec.source_ref.name.clone()))
}

/// The fetch request for `source` (the reference is not used by history fetches).
pub async fn fetch_request(
    client: &Client,
    tenants: &TenantClients,
    options: &AgentOptions,
    source: &Key,
) -> Result<FetchRequest, String> {
    let api: Api<GitSource> = Api::namespaced(client.clone(), &source.0);
    let gs = api
        .get_opt(&source.1)
        .await
        .map_err(|e| format!("cannot read GitSource {}/{}: {e}", source.0, source.1))?
        .ok_or_else(|| format!("GitSource {}/{} not found", source.0, source.1))?;
    git::check_url(&gs.spec.url, options.allow_local_git_sources)
        .map_err(|e| format!("GitSource {}/{} spec.url: {e}", source.0, source.1))?;
    let auth = match &gs.spec.secret_ref {
        Some(secret) => load_auth(tenants, &source.0, &secret.name).await?,
        None => GitAuth::default(),
    };
    let timeout = gs
        .spec
        .timeout
        .as_deref()
        .and_then(|t| ferry_api::common::parse_duration(t).ok())
        .unwrap_or(Duration::from_secs(60));
    Ok(FetchRequest {
        url: gs.spec.url.clone(),
        reference: GitReference::Branch("*".to_string()),
        auth,
        timeout: options.clamp_timeout(timeout),
        // The same owner as the GitSource's own fetches: this source's credentials only ever
        // serve this source's cache.
        owner: format!("{}/{}", source.0, source.1),
        allow_local: options.allow_local_git_sources,
        limits: git::FetchLimits {
            max_fetch_bytes: options.git_max_fetch_bytes,
            checkout: git::CheckoutLimits {
                max_bytes: options.git_max_checkout_bytes,
                max_entries: options.git_max_checkout_files,
                ..git::CheckoutLimits::default()
            },
            max_cache_bytes: (options.git_cache_max_bytes > 0)
                .then_some(options.git_cache_max_bytes),
        },
    })
}

/// Git credentials from the GitSource's Secret, read as the namespace's tenant identity (never
/// the agent's), like the GitSource controller reads them. Values never reach a message.
async fn load_auth(
    tenants: &TenantClients,
    namespace: &str,
    name: &str,
) -> Result<GitAuth, String> {
    let (reader, identity) = tenants
        .secret_reader(namespace)
        .map_err(|e| e.to_string())?;
    let secrets: Api<Secret> = Api::namespaced(reader, namespace);
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|e| format!("cannot read Secret {namespace}/{name} as {identity}: {e}"))?
        .ok_or_else(|| {
            format!("Secret {namespace}/{name} (the GitSource's secretRef) does not exist")
        })?;
    let data = secret.data.unwrap_or_default();
    let get = |k: &str| {
        data.get(k).map(|v| {
            String::from_utf8_lossy(&v.0)
                .trim_end_matches('\n')
                .to_string()
        })
    };
    Ok(GitAuth {
        username: get("username"),
        password: get("password"),
        bearer_token: get("bearerToken"),
        ssh_identity: get("identity"),
        known_hosts: get("known_hosts"),
    })
}

/// Fetch `commit` with history (blocking work on the blocking pool, with a deadline).
pub async fn fetch_commit(
    cache_dir: &std::path::Path,
    request: FetchRequest,
    commit: &str,
    reach: Reach,
    deployed: Option<String>,
) -> Result<HistoryCheckout, String> {
    let cache_dir = cache_dir.to_path_buf();
    let commit = commit.to_string();
    let timeout = request.timeout;
    let url = git::redact_url(&request.url);
    let task = tokio::task::spawn_blocking(move || {
        history::fetch_commit(&cache_dir, &request, &commit, &reach, deployed.as_deref())
    });
    match tokio::time::timeout(timeout + Duration::from_secs(5), task).await {
        Err(_) => Err(format!("fetch of {url} timed out after {timeout:?}")),
        Ok(Err(join)) => Err(format!("fetch task failed: {join}")),
        Ok(Ok(result)) => result.map_err(|e| e.to_string()),
    }
}

/// The commit of a revision string as the agent records them (`main@sha1:<hex>`, `sha1:<hex>`).
pub fn commit_of(revision: &str) -> Option<&str> {
    let hex = revision.rsplit_once("sha1:").map(|(_, hex)| hex)?;
    (hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

#[cfg(test)]
mod tests {
    use super::commit_of;

    #[test]
    fn recorded_revisions_give_their_commit() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(commit_of(&format!("main@sha1:{sha}")), Some(sha));
        assert_eq!(commit_of(&format!("sha1:{sha}")), Some(sha));
        assert_eq!(commit_of("main@sha1:abc"), None);
        assert_eq!(commit_of("nothing"), None);
    }
}
