//! `ferry status --app`: an app's inventory (source, revision, when applied) and the health of
//! every object in it.
//!
//! Steps: read the inventory → resolve its kinds → read each object's health.

use kube::Client;

use super::{StatusOptions, no_inventory, owner_for, resolve_entries};
use crate::Result;
use crate::cluster::discovery;
use crate::cluster::manager::ResourceManager;
use crate::cluster::requests::{RequestCounter, counted};
use crate::health;
use crate::inventory;
use crate::ownership::ReleaseRef;
use crate::report::{ObjectStatus, StatusReport};

/// `ferry status --app`: the inventory, last revision/time, and the health of every object.
pub async fn status(
    client: &Client,
    app: &str,
    namespace: Option<&str>,
    concurrency: usize,
) -> Result<StatusReport> {
    status_of(client, app, None, namespace, concurrency).await
}

/// [`status`] of a push app or (with `release`) of a Release's app.
pub async fn status_of(
    client: &Client,
    app: &str,
    release: Option<&ReleaseRef>,
    namespace: Option<&str>,
    concurrency: usize,
) -> Result<StatusReport> {
    status_with(
        client,
        &StatusOptions {
            app: app.to_string(),
            release: release.cloned(),
            namespace: namespace.map(str::to_string),
            concurrency,
            discovery: None,
        },
    )
    .await
}

/// The status of an app: its inventory (source, revision, when applied) and the health of every
/// object in it, with conditions and recent events for the ones that are not Current.
pub async fn status_with(client: &Client, opts: &StatusOptions) -> Result<StatusReport> {
    let concurrency = opts.concurrency;
    let owner = owner_for(
        client,
        &opts.app,
        opts.release.as_ref(),
        opts.namespace.as_deref(),
    )?;
    // Every request of this run is counted once, by the client itself.
    let counter = RequestCounter::default();
    let counted_client = counted(client, &counter);
    let client = &counted_client;
    let Some(inv) = inventory::read(client, &owner).await?.map(|s| s.inventory) else {
        return Err(no_inventory(
            &owner,
            "it was never applied there (check --app and --namespace)",
        ));
    };
    let mut resolver = discovery::resolver_for(opts.discovery.as_ref(), client, &[]).await?;
    resolver.refresh_for_entries(client, &inv.objects).await?;
    let (candidates, unresolved) = resolve_entries(&resolver, inv.objects.clone());
    let manager = ResourceManager::new(client.clone(), owner.clone()).with_concurrency(concurrency);
    let mut objects = manager.status(candidates).await;
    objects.extend(unresolved.into_iter().map(|e| ObjectStatus {
        key: e.key,
        api_version: e.api_version,
        health: health::Health::not_found(),
    }));
    Ok(StatusReport {
        app: owner.app.clone(),
        namespace: owner.namespace,
        source: inv.source,
        revision: inv.revision,
        applied_at: inv.applied_at,
        objects,
    })
}
