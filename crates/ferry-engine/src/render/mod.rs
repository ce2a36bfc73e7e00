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
pub mod release;
pub mod request;
pub mod safety;
pub mod set_image;
pub mod substitute;
pub mod values;

use std::path::{Component, Path, PathBuf};

pub use request::RenderRequest;
pub use set_image::ImageOverride;

use crate::decrypt::{self, Rendered};
use crate::{Error, Manifest, Result};

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
