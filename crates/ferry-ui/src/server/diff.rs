//! The diff between git and the cluster for one Release, computed when the user asks (the
//! "Show the diff" button), never on a page load: the engine's `pipeline::release_diff`, the
//! same path as `ferry diff release NAME`, run here as the user (their client, so the API server
//! applies their RBAC to the Release, its GitSource, the Secrets and the dry-run apply). Bounded
//! by [`DIFF_TIMEOUT`], and at most [`CONCURRENT_DIFFS`] run at once (a fetch and a render each).
//! Its report has Secret and decrypted values redacted by the engine before it gets here.

use std::time::Duration;

use ferry_api::Release;
use ferry_engine::cluster::kube_error::describe_kube_error;
use ferry_engine::pipeline::release_diff::{ReleaseDiff, diff_release};
use kube::{Api, Client};
use tokio::sync::Semaphore;

use crate::model::AppKey;

/// How long one diff may take, waiting for a slot included (the fetch has the GitSource's own
/// timeout inside this).
pub const DIFF_TIMEOUT: Duration = Duration::from_secs(60);

/// Diffs running at once; more wait for a slot (within their timeout).
pub const CONCURRENT_DIFFS: usize = 2;

/// The slots.
pub fn limiter() -> Semaphore {
    Semaphore::new(CONCURRENT_DIFFS)
}

/// Diff Release `key` as `client`'s identity. The error is a message for the page: it names the
/// object and what to do (a Secret the user may not read: which one, and that nothing was
/// fetched).
pub async fn run(
    client: &Client,
    slots: &Semaphore,
    key: &AppKey,
    latest: bool,
) -> Result<ReleaseDiff, String> {
    let what = format!("Release {}/{}", key.namespace, key.name);
    let work = async {
        let _slot = slots
            .acquire()
            .await
            .map_err(|_| "the dashboard is stopping".to_string())?;
        let api: Api<Release> = Api::namespaced(client.clone(), &key.namespace);
        let release = api
            .get_opt(&key.name)
            .await
            .map_err(|e| format!("cannot read {what}: {}", describe_kube_error(&e)))?
            .ok_or_else(|| format!("{what} not found"))?;
        diff_release(client, &release, latest, "ferry ui")
            .await
            .map_err(|e| format!("{e:#}"))
    };
    match tokio::time::timeout(DIFF_TIMEOUT, work).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "the diff of {what} took longer than {} s and was stopped; try again, or run `ferry diff release {} -n {}`",
            DIFF_TIMEOUT.as_secs(),
            key.name,
            key.namespace
        )),
    }
}
