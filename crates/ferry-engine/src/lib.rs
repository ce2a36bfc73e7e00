//! ferry-engine: the one engine behind both triggers.
//!
//! The pipeline runs `source → render → decrypt → plan → apply → prune → health → report`.
//! The `ferry` CLI (push) and the `ferry-agent` (pull) are thin drivers over [`pipeline`].
//!
//! Render side, no Kubernetes client: [`source`] (paths, stdin, git), [`render`] (plain,
//! kustomize, helm), [`decrypt`] (SOPS, Sealed Secrets), [`yaml`] (the shared reader).
//!
//! Pure core, no client either: [`plan`] (kinds, phases, intent hash), [`ownership`] (labels,
//! annotations, owner ids), [`inventory`] (what an app owns, as set operations; its ConfigMap
//! store apart in `inventory::store`), [`health`]
//! (readiness rules), [`progress`], [`report`] (data and redaction).
//!
//! Cluster side, the only code that talks to the API server: [`cluster`] — connecting, request
//! counting, discovery, and the `ResourceManager` with one file per verb (apply, diff, delete,
//! wait, status, hooks). [`pipeline`] composes both halves into apply, diff, delete and status,
//! each a short list of named steps.
#![deny(unsafe_code)]

pub mod cluster;
pub mod decrypt;
pub mod error;
pub mod health;
pub mod inventory;
pub mod manifest;
pub mod ownership;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod render;
pub mod report;
pub mod source;
pub mod yaml;

pub use error::{Error, Result};
pub use manifest::{Manifest, ObjectKey, Origin};

/// The field manager ferry uses for server-side apply.
pub const FIELD_MANAGER: &str = "ferry";

/// Install the process-wide rustls crypto provider (aws-lc-rs). Call once at startup in every
/// binary and test; repeated calls are harmless.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
