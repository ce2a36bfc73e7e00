//! Stage 2, render: turns a source path into manifests.
//!
//! [`render`] is the single entry point both drivers call. It confines reads to
//! [`RenderRequest::root`], lets [`app`] pick the renderer from `ferry.yaml`, detection or flags
//! ([`plain`] YAML files, [`kustomize`] or [`helm`]), then runs the steps every render shares:
//! SOPS decryption (stage 3), the app's default namespace, `${VAR}` substitution
//! ([`substitute`]) and `--set-image` overrides ([`set_image`]). Every renderer reads YAML
//! through [`crate::yaml`].
//!
//! The default namespace for objects of apps without one is *not* filled in here: whether an
//! object is namespaced is only known from discovery, so the plan stage does it. Renderers that
//! need it themselves (helm `--namespace`) read [`RenderRequest::default_namespace`].

pub mod app;
pub mod config;
pub mod helm;
pub mod image_ref;
pub mod kustomize;
pub mod names;
pub mod overrides;
pub mod plain;
pub mod process;
pub mod safety;
pub mod set_image;
pub mod substitute;
pub mod values;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

pub use set_image::ImageOverride;
// The YAML reader and its helpers moved to `crate::yaml`; the old paths keep working for
// callers outside the engine until they import them from there.
pub use crate::yaml::parallel;

use crate::decrypt::{self, Rendered};
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

/// Render one source path into the final manifests (before namespace defaulting, see module doc).
pub fn render(req: &RenderRequest) -> Result<Vec<Manifest>> {
    render_collecting(req, &mut safety::Redactor::new())
}

/// [`render`], also adding every value that came from decryption (and repository passwords)
/// to `redactor`, for the stages that show objects or messages: `pipeline::diff`, reports,
/// errors, agent status. A failed render's error is already redacted.
///
/// The stages in order: the renderer (stage 2, output possibly still encrypted), decrypt
/// (stage 3, [`crate::decrypt::decrypt`]), then the post-build steps on plaintext (the app's
/// namespace, `${VAR}` substitution, `--set-image`).
pub fn render_collecting(
    req: &RenderRequest,
    redactor: &mut safety::Redactor,
) -> Result<Vec<Manifest>> {
    let mut manifests = if req.is_stdin() {
        let bytes = match &req.stdin {
            Some(bytes) => bytes.clone(),
            None => read_stdin()?,
        };
        let rendered = Rendered::from(crate::yaml::parse_bytes(&bytes, Path::new("-"))?);
        let mut keys = decrypt::Keys::new(req.age_keys.clone());
        let decrypted =
            decrypt::decrypt(rendered, &mut keys, redactor).and_then(|mut manifests| {
                app::finish_stdin(req, &mut manifests)?;
                Ok(manifests)
            });
        decrypted.map_err(|err| redactor.redact_error(err))?
    } else {
        let path = req.resolved_path()?;
        let mut ctx = app::open(req, &path)?;
        let result = render_app(&mut ctx, req);
        redactor.extend(&ctx.redactor);
        result.map_err(|err| redactor.redact_error(err))?
    };
    set_image::apply_overrides(&mut manifests, &req.set_images)
        .map_err(|err| redactor.redact_error(err))?;
    Ok(manifests)
}

/// An app directory through the stages: its renderer (ferry.yaml, detection or flags pick
/// plain, kustomize or helm), decrypt, then the app's post-build steps.
fn render_app(ctx: &mut config::Context<'_>, req: &RenderRequest) -> Result<Vec<Manifest>> {
    let rendered = app::render(ctx)?;
    let mut manifests = decrypt::decrypt(rendered, &mut ctx.keys, &mut ctx.redactor)?;
    app::finish(ctx, req, &mut manifests)?;
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
