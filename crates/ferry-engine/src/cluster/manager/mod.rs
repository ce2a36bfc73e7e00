//! The resource manager: everything ferry does to an app's objects in the cluster, one file per
//! verb — [`apply`] (server-side apply of a staged batch), [`delete`] (owned deletes with UID
//! preconditions, for prune and `ferry delete`), [`wait`] (until Current), [`hooks`] (Helm hook
//! phases) — over the metadata-only [`live`] index.

pub mod apply;
pub mod delete;
pub mod hooks;
pub mod live;
pub mod wait;
