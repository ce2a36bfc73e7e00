//! Engine-wide error type. Every variant names the file, object or URL it is about and, where
//! there is one, what the user can do about it. Secret values never appear in messages.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A source file could not be read or parsed.
    #[error("{path}: {message}")]
    Source { path: PathBuf, message: String },

    /// A renderer (plain YAML, kustomize, helm, substitution) failed.
    #[error("render {path}: {message}")]
    Render { path: PathBuf, message: String },

    /// Decryption (SOPS, Sealed Secrets) failed. Never carries plaintext.
    #[error("decrypt {path}: {message}")]
    Decrypt { path: PathBuf, message: String },

    /// Anything the Kubernetes API refused or could not be reached for, about one object.
    #[error("{object}: {message}")]
    Object { object: String, message: String },

    /// Cluster connection/configuration problems.
    #[error("cluster: {0}")]
    Cluster(String),

    /// Refused for safety (empty source with prune, foreign owner, path escape ...).
    #[error("refused: {0}")]
    Refused(String),

    /// An optimistic-concurrency conflict: another writer changed the object (an app's
    /// inventory) since this run read it; nothing was overwritten.
    #[error("{object}: {message}")]
    Conflict { object: String, message: String },

    #[error(transparent)]
    Kube(#[from] kube::Error),

    #[error(transparent)]
    Other(#[from] anyhow::Error),
}
