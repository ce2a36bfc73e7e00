//! What one render is asked to do ([`RenderRequest`]): the source root and path, the
//! operator's overrides and policy, a Release's `spec.render`, variables, `--set-image`s and
//! age keys; and the path checks every render starts with (confined to the root).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::config;
use super::set_image::ImageOverride;
use crate::{Error, Result};

/// Everything a render needs. Build with [`RenderRequest::new`] and the `with_*` methods, or a
/// struct literal with `..Default::default()`; new fields always get a neutral default.
#[derive(Debug, Clone, Default)]
pub struct RenderRequest {
    /// The source root (a checkout or the CI workspace). Nothing outside it is read.
    pub root: PathBuf,
    /// A file or directory inside `root` (absolute, or relative to `root`), or `-` for stdin.
    pub path: PathBuf,
    /// Namespace for namespaced objects that have none (applied by the plan stage).
    pub default_namespace: Option<String>,
    /// `--set-image` overrides, applied to every pod template after rendering.
    pub set_images: Vec<ImageOverride>,
    /// Bytes to use instead of reading the process's stdin when `path` is `-` (tests, agent).
    pub stdin: Option<Vec<u8>>,
    /// Variables for later substitution stages (`${VAR}`), empty means none.
    pub vars: BTreeMap<String, String>,
    /// Command-line (or agent) settings layered over the app's `ferry.yaml`: renderer, chart,
    /// values, `--set`, vars files, post-render, binaries, credentials. See [`config::Overrides`].
    pub overrides: config::Overrides,
    /// age keys for SOPS; `None` loads what `sops` would use (env, default key file) when
    /// something encrypted is found.
    pub age_keys: Option<crate::decrypt::sops::AgeKeys>,
    /// A Release's `spec.render`: layered over the app's ferry.yaml as untrusted config, checked
    /// exactly like it (never as [`config::Overrides`], which are the operator's own).
    pub spec: Option<config::SpecLayer>,
    /// The operator's policy: forbid remote loading, ceilings on ferry.yaml `limits`.
    pub policy: config::RenderPolicy,
    /// Chart repository / registry credentials a driver read for this render (the agent: the
    /// Secret a Release's `spec.render.helm.chart.secretRef` names), bound to one host: helm
    /// gets them only when the chart (or a dependency) is on that host.
    pub chart_credentials: Option<ChartCredentials>,
    /// The cluster's API versions and Kubernetes version, from discovery, for helm's
    /// `.Capabilities` (plain data: the render side has no cluster client). `None` renders as
    /// `helm template` does offline.
    pub capabilities: Option<Capabilities>,
    /// Where remote charts are kept between renders (keyed by repository, chart and version,
    /// verified by digest). `None` pulls on every render.
    pub chart_cache: Option<std::sync::Arc<super::helm::cache::ChartCache>>,
}

/// Credentials for one chart repository or OCI registry host.
#[derive(Clone)]
pub struct ChartCredentials {
    /// `host[:port]` the credentials belong to (the repository URL's or the registry's).
    pub host: String,
    pub username: String,
    pub password: String,
    /// Where they came from, for messages (`Secret team-a/charts`).
    pub origin: String,
}

impl std::fmt::Debug for ChartCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChartCredentials")
            .field("host", &self.host)
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("origin", &self.origin)
            .finish()
    }
}

/// What helm's `.Capabilities` should say about the target cluster (`helm install` asks the
/// cluster; `helm template` needs `--kube-version` / `--api-versions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `v1.35.4`-style server version.
    pub kube_version: Option<String>,
    /// `group/version` and `group/version/Kind` of everything the cluster serves (`v1`,
    /// `v1/ConfigMap` for the core group), as helm's own discovery lists them.
    pub api_versions: Vec<String>,
}

impl RenderRequest {
    pub fn new(root: impl Into<PathBuf>, path: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            path: path.into(),
            ..Default::default()
        }
    }

    pub fn with_default_namespace(mut self, namespace: Option<String>) -> Self {
        self.default_namespace = namespace;
        self
    }

    pub fn with_set_images(mut self, images: Vec<ImageOverride>) -> Self {
        self.set_images = images;
        self
    }

    pub fn with_stdin(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(bytes);
        self
    }

    /// True when the request reads stdin instead of a path.
    pub fn is_stdin(&self) -> bool {
        self.path.as_os_str() == "-"
    }

    /// The absolute path to render, checked to stay inside `root` (after resolving symlinks).
    pub fn resolved_path(&self) -> Result<PathBuf> {
        let root = self.root.canonicalize().map_err(|err| Error::Source {
            path: self.root.clone(),
            message: format!("cannot open the source root: {err}"),
        })?;
        let joined = if self.path.is_absolute() {
            self.path.clone()
        } else {
            root.join(&self.path)
        };
        let resolved = joined.canonicalize().map_err(|err| Error::Source {
            path: self.path.clone(),
            message: format!("cannot open: {err}; check the path"),
        })?;
        if !resolved.starts_with(&root) {
            return Err(Error::Refused(format!(
                "{} is outside the source root {}; only files under the root are read",
                self.path.display(),
                root.display()
            )));
        }
        Ok(resolved)
    }

    /// `path` relative to the root, for [`crate::Origin`]s and messages.
    pub fn relative(&self, root: &Path, path: &Path) -> PathBuf {
        match path.strip_prefix(root) {
            Ok(rel) if rel.as_os_str().is_empty() => PathBuf::from("."),
            Ok(rel) => rel.to_path_buf(),
            Err(_) => path.to_path_buf(),
        }
    }
}
