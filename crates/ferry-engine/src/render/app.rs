//! One app directory rendered the way its `ferry.yaml` (or detection, or flags) says: [`open`]
//! resolves the app, [`render`] runs its renderer (stage 2; the output may still be encrypted),
//! and after the decrypt stage [`finish`] runs the post-build steps on plaintext: the app's
//! default namespace, then `${VAR}` substitution (Flux's kustomize-controller also decrypts
//! before its `postBuild` substitution, so substituted text is never ciphertext and decrypted
//! values may hold `${VAR}`s). [`super::render`] composes them.

use std::collections::BTreeMap;
use std::path::Path;

use super::config::{self, Context, RendererKind};
use super::request::RenderRequest;
use super::substitute::{self, Substitution};
use super::{helm, kustomize, plain, safety};
use crate::decrypt::Rendered;
use crate::{Error, Manifest, Result};

/// Resolve the app at `path` (resolved, inside the root): its ferry.yaml, overrides and
/// `spec.render` layered, limits, and the render context.
pub fn open<'a>(req: &'a RenderRequest, path: &Path) -> Result<Context<'a>> {
    let root = req.root.canonicalize().map_err(|err| Error::Source {
        path: req.root.clone(),
        message: format!("cannot open the source root: {err}"),
    })?;
    let app = config::resolve(&root, path, &req.overrides, req.spec.as_ref())?;
    let mut ctx = Context::new(
        &root,
        app,
        &req.overrides,
        req.policy.clone(),
        req.default_namespace.clone(),
        req.age_keys.clone(),
    )?;
    ctx.chart_credentials = req.chart_credentials.clone();
    ctx.capabilities = req.capabilities.clone();
    ctx.chart_cache = req.chart_cache.clone();
    Ok(ctx)
}

/// Which renderer the request's app uses (its ferry.yaml, `spec.render`, flags, detection),
/// without running it: drivers gather renderer-specific inputs (helm's chart credentials and
/// capabilities) only for apps that need them.
pub fn kind_of(req: &RenderRequest) -> Result<RendererKind> {
    if req.is_stdin() {
        return Ok(RendererKind::Plain);
    }
    let path = req.resolved_path()?;
    let root = req.root.canonicalize().map_err(|err| Error::Source {
        path: req.root.clone(),
        message: format!("cannot open the source root: {err}"),
    })?;
    Ok(config::resolve(&root, &path, &req.overrides, req.spec.as_ref())?.kind)
}

/// Run the app's renderer. Values that came from decryption (helm values files) and
/// repository passwords are in `ctx.redactor` afterwards, also when it fails.
pub fn render(ctx: &mut Context<'_>) -> Result<Rendered> {
    tracing::debug!(
        renderer = ctx.app.kind.name(),
        path = %ctx.app.render_path.display(),
        config = ?ctx.app.config_file,
        "rendering app"
    );
    match ctx.app.kind {
        RendererKind::Plain => plain::render(ctx),
        RendererKind::Kustomize => kustomize::render(ctx),
        RendererKind::Helm => helm::render(ctx).map(Rendered::from),
    }
}

/// The post-build steps for stdin input (no app directory, no ferry.yaml).
pub fn finish_stdin(req: &RenderRequest, manifests: &mut [Manifest]) -> Result<()> {
    if let Some(subst) = substitution(req, None, None)? {
        substitute::apply(manifests, &subst)?;
    }
    Ok(())
}

/// The post-build steps on the decrypted manifests: the app's namespace, `${VAR}` substitution.
pub fn finish(ctx: &Context<'_>, req: &RenderRequest, manifests: &mut [Manifest]) -> Result<()> {
    if req.default_namespace.is_none()
        && let Some(namespace) = &ctx.app.config.namespace
    {
        for manifest in manifests.iter_mut() {
            if manifest.namespace().is_none_or(str::is_empty) && !is_cluster_scoped(manifest) {
                manifest.object.metadata.namespace = Some(namespace.clone());
            }
        }
    }
    if let Some(subst) = substitution(req, Some(ctx), ctx.app.config_file.as_deref())? {
        substitute::apply(manifests, &subst)?;
    }
    Ok(())
}

/// The substitution for this render, if any is configured: ferry.yaml `substitute` and
/// `substituteFrom`, then `--vars-file`s, then `--var`s (later wins).
fn substitution(
    req: &RenderRequest,
    ctx: Option<&Context<'_>>,
    config_file: Option<&Path>,
) -> Result<Option<Substitution>> {
    let config = ctx.map(|c| &c.app.config);
    let configured = config.is_some_and(|c| c.substitution_configured())
        || !req.vars.is_empty()
        || !req.overrides.vars_files.is_empty()
        || req.overrides.strict_substitute.is_some();
    if !configured {
        return Ok(None);
    }
    let mut vars = BTreeMap::new();
    if let (Some(ctx), Some(config)) = (ctx, config) {
        let declared = config_file.unwrap_or(&ctx.app.base_dir);
        for file in &config.substitute_from {
            let path =
                safety::resolve_inside(&ctx.root, &ctx.app.base_dir, file, "vars file", declared)?;
            vars.extend(read_vars(&path, &ctx.limits)?);
        }
        if let Some(inline) = &config.substitute {
            vars.extend(inline.clone());
        }
    }
    let limits = ctx.map(|c| c.limits.clone()).unwrap_or_default();
    for file in &req.overrides.vars_files {
        vars.extend(read_vars(file, &limits)?);
    }
    for (key, value) in &req.vars {
        if !substitute::is_var_name(key) {
            return Err(Error::Source {
                path: "--var".into(),
                message: format!("{key:?} is not a valid variable name"),
            });
        }
        vars.insert(key.clone(), value.clone());
    }
    let strict = req
        .overrides
        .strict_substitute
        .or_else(|| config.and_then(|c| c.strict_substitute))
        .unwrap_or(false);
    Ok(Some(Substitution { vars, strict }))
}

fn read_vars(path: &Path, limits: &safety::Limits) -> Result<BTreeMap<String, String>> {
    let meta = std::fs::metadata(path).map_err(|err| Error::Source {
        path: path.to_path_buf(),
        message: format!("cannot read vars file: {err}"),
    })?;
    if meta.len() > limits.max_file_bytes {
        return Err(Error::Refused(format!(
            "{}: vars file is over the per-file limit of {} bytes",
            path.display(),
            limits.max_file_bytes
        )));
    }
    let bytes = std::fs::read(path).map_err(|err| Error::Source {
        path: path.to_path_buf(),
        message: format!("cannot read vars file: {err}"),
    })?;
    substitute::read_vars_file(path, &bytes)
}

/// Kinds that never take a namespace, so the app's default namespace is not stamped on them
/// (the plan stage also drops it for any cluster-scoped kind it discovers).
fn is_cluster_scoped(manifest: &Manifest) -> bool {
    matches!(
        (manifest.group(), manifest.kind()),
        ("", "Namespace" | "Node" | "PersistentVolume")
            | (
                "rbac.authorization.k8s.io",
                "ClusterRole" | "ClusterRoleBinding"
            )
            | ("apiextensions.k8s.io", "CustomResourceDefinition")
            | ("storage.k8s.io", "StorageClass" | "CSIDriver")
            | ("scheduling.k8s.io", "PriorityClass")
            | ("networking.k8s.io", "IngressClass")
            | (
                "admissionregistration.k8s.io",
                "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration"
            )
            | ("apiregistration.k8s.io", "APIService")
    )
}
