//! The cluster side: the only code that talks to the API server. [`connect`] builds clients the
//! way kubectl does, [`kube_error`] turns refusals into messages, [`requests`] counts what a run
//! sends, [`discovery`] learns which kinds the cluster serves, and [`manager`] applies, diffs,
//! deletes, waits for and reads the status of an app's objects.

pub mod capabilities;
pub mod connect;
pub mod discovery;
pub mod kube_error;
pub mod manager;
pub mod requests;

pub use connect::{ClusterInfo, ClusterOptions, client_from_config, connect, load_config};

use kube::Client;
use kube::api::{Api, DynamicObject};

use crate::plan::ResolvedKind;

/// The dynamic API for one resolved kind: namespaced when the kind is and a namespace is given,
/// cluster-wide otherwise.
pub fn api_for(
    client: &Client,
    kind: &ResolvedKind,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match (kind.namespaced, namespace) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &kind.resource),
        _ => Api::all_with(client.clone(), &kind.resource),
    }
}
