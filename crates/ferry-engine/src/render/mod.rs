//! Stage 2, render: turns a source path into manifests.
//!
//! [`render`] is the single entry point both drivers call. It confines reads to
//! [`RenderRequest::root`], picks a [`Renderer`] for the path (plain YAML today; kustomize, helm
//! and the `ferry.yaml` app config plug in as further renderers), then runs the post-render
//! stages every renderer shares: decryption (stage 3) and `--set-image` overrides.
//!
//! The default namespace is *not* filled in here: whether an object is namespaced is only known
//! from discovery, so the plan stage does it. Renderers that need it themselves (helm
//! `--namespace`) read [`RenderRequest::default_namespace`].

pub mod app;
pub mod config;
pub mod fast_yaml;
pub mod helm;
pub mod kustomize;
pub mod names;
pub mod overrides;
pub mod parallel;
pub mod plain;
pub mod process;
pub mod safety;
pub mod set_image;
pub mod substitute;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

pub use set_image::ImageOverride;

use crate::{Error, Manifest, Result};

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

/// One way of turning a directory or file into manifests. Implementations live next to this
/// module (plain YAML here; kustomize, helm, app config elsewhere) and are tried in the order of
/// [`renderers`]; the first that [`Renderer::detects`] the path wins.
pub trait Renderer: Sync {
    /// Short name for messages ("plain", "kustomize", "helm").
    fn name(&self) -> &'static str;
    /// Whether this renderer handles `path` (an existing, resolved file or directory).
    fn detects(&self, path: &Path) -> bool;
    /// Render `path` (resolved, inside the root).
    fn render(&self, req: &RenderRequest, path: &Path) -> Result<Vec<Manifest>>;
}

/// Renderers in priority order; plain YAML is last and detects everything.
pub fn renderers() -> Vec<&'static dyn Renderer> {
    vec![&plain::PlainYaml]
}

/// Render one source path into the final manifests (before namespace defaulting, see module doc).
pub fn render(req: &RenderRequest) -> Result<Vec<Manifest>> {
    render_collecting(req, &mut safety::Redactor::new())
}

/// [`render`], also adding every value that came from decryption (and repository passwords)
/// to `redactor`, for the stages that show objects or messages: `pipeline::diff`, reports,
/// errors, agent status. A failed render's error is already redacted.
pub fn render_collecting(
    req: &RenderRequest,
    redactor: &mut safety::Redactor,
) -> Result<Vec<Manifest>> {
    let mut manifests = if req.is_stdin() {
        let bytes = match &req.stdin {
            Some(bytes) => bytes.clone(),
            None => read_stdin()?,
        };
        let mut manifests = plain::parse_bytes(&bytes, Path::new("-"))?;
        app::finish_stdin(req, &mut manifests, redactor)
            .map_err(|err| redactor.redact_error(err))?;
        manifests
    } else {
        // ferry.yaml / detection / flags pick plain, kustomize or helm; app also runs stage 3
        // (SOPS decryption) and `${VAR}` substitution.
        let path = req.resolved_path()?;
        app::render_path(req, &path, redactor)?
    };
    set_image::apply_overrides(&mut manifests, &req.set_images)
        .map_err(|err| redactor.redact_error(err))?;
    Ok(manifests)
}

fn read_stdin() -> Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .map_err(|err| Error::Source {
            path: PathBuf::from("-"),
            message: format!("cannot read stdin: {err}"),
        })?;
    Ok(bytes)
}

/// True if `path` has no `..` components (for renderers validating relative references).
pub fn is_contained(path: &Path) -> bool {
    !path.components().any(|c| matches!(c, Component::ParentDir))
}
