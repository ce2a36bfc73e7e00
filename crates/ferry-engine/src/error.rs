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

    /// The API server refused a request about one object, or the object is not one ferry may
    /// touch. `message` is the server's own message, described (`cluster::kube_error`) and
    /// redacted: refusals echo field values, so the raw `kube::Error` is not kept.
    #[error("{object}: {message}")]
    Object { object: String, message: String },

    /// The cluster configuration cannot be loaded or used: kubeconfig, context, in-cluster
    /// config. Names the file or context and what to pass instead.
    #[error("cluster: {message}")]
    Config { message: String },

    /// The API server could not be reached (connection refused or reset, TLS, timeout): nothing
    /// was refused, and a later run may succeed.
    #[error("cluster: {message}")]
    Unreachable { message: String },

    /// Discovery failed: without the kinds the cluster serves nothing can be planned. `code` is
    /// the HTTP status of a refusal (`None` for other failures).
    #[error("cluster: discovery failed (cannot list the API server's kinds): {message}")]
    Discovery { message: String, code: Option<u16> },

    /// A request to the cluster outside an app run failed (the unsealer's key store, looking
    /// for a bitnami controller).
    #[error("cluster: {0}")]
    Cluster(String),

    /// The app has no inventory in that namespace: it was never applied there, or under another
    /// `--namespace`. Callers that delete treat this as "nothing to do".
    #[error("refused: no inventory for {owner} in namespace {namespace}: {hint}")]
    NoInventory {
        /// The app's `ferry.dev/app` name.
        app: String,
        /// For messages: `app web` or `Release team/web.v1`.
        owner: String,
        namespace: String,
        /// What the user can check.
        hint: String,
    },

    /// Refused for safety (empty source with prune, foreign owner, path escape ...); the message
    /// is the reason and what to do.
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

impl Error {
    /// Whether the error is about reaching or using the cluster as a whole (configuration,
    /// connection, discovery) rather than about one object or the source: a driver names the
    /// API server and the kubeconfig it used.
    pub fn is_about_the_cluster(&self) -> bool {
        matches!(
            self,
            Self::Config { .. }
                | Self::Unreachable { .. }
                | Self::Discovery { .. }
                | Self::Cluster(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_inventory_reads_as_before() {
        let err = Error::NoInventory {
            app: "web".into(),
            owner: "app web".into(),
            namespace: "shop".into(),
            hint: "it was never applied there (check --app and --namespace)".into(),
        };
        assert_eq!(
            err.to_string(),
            "refused: no inventory for app web in namespace shop: it was never applied there (check --app and --namespace)"
        );
        assert!(!err.is_about_the_cluster());
        let err = Error::Discovery {
            message: "forbidden".into(),
            code: Some(403),
        };
        assert_eq!(
            err.to_string(),
            "cluster: discovery failed (cannot list the API server's kinds): forbidden"
        );
        assert!(err.is_about_the_cluster());
    }
}
