//! Rendering one app directory the way its `ferry.yaml` (or detection, or flags) says, and the
//! steps every render shares afterwards: SOPS decryption of objects carrying a `sops:` block,
//! the app's default namespace, and `${VAR}` substitution. Called from [`super::render`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::config::{self, Context, RendererKind};
use super::substitute::{self, Substitution};
use super::{RenderRequest, helm, kustomize, plain, safety};
use crate::decrypt::sops;
use crate::{Error, Manifest, Origin, Result};

/// Render `path` (resolved, inside the root) and run the shared post-render steps. Every value
/// that came from decryption (and every repository password) is added to `redactor`, also when
/// the render fails; the returned error is already redacted.
pub fn render_path(
    req: &RenderRequest,
    path: &Path,
    redactor: &mut safety::Redactor,
) -> Result<Vec<Manifest>> {
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
    let rendered = render_app(&mut ctx, req);
    redactor.extend(&ctx.redactor);
    rendered.map_err(|err| redactor.redact_error(err))
}

fn render_app(ctx: &mut Context<'_>, req: &RenderRequest) -> Result<Vec<Manifest>> {
    tracing::debug!(
        renderer = ctx.app.kind.name(),
        path = %ctx.app.render_path.display(),
        config = ?ctx.app.config_file,
        "rendering app"
    );
    let mut manifests = match ctx.app.kind {
        RendererKind::Plain => {
            let target = ctx.app.render_path.clone();
            if target.is_dir() {
                ctx.guard.scan_dir(&target)?;
            } else {
                ctx.guard.check_file(&target)?;
            }
            render_plain(ctx, &target)?
        }
        RendererKind::Kustomize => kustomize::render(ctx)?,
        RendererKind::Helm => helm::render(ctx)?,
    };
    finish(ctx, req, &mut manifests)?;
    Ok(manifests)
}

/// Plain YAML, minus the app's own configuration: ferry.yaml and the values/vars files it
/// names are not manifests.
fn render_plain(ctx: &mut Context<'_>, target: &Path) -> Result<Vec<Manifest>> {
    let config = &ctx.app.config;
    let mut excluded: Vec<PathBuf> = config::CONFIG_FILES
        .iter()
        .map(|name| ctx.app.base_dir.join(name))
        .collect();
    let named = config
        .substitute_from
        .iter()
        .chain(config.helm.iter().flat_map(|h| h.values_files.iter()));
    excluded.extend(named.map(|file| ctx.app.base_dir.join(file)));
    let excluded: Vec<PathBuf> = excluded
        .iter()
        .filter_map(|p| p.canonicalize().ok())
        .collect();
    let mut manifests = Vec::new();
    for file in plain::manifest_files(target)? {
        let canonical = file.canonicalize().unwrap_or_else(|_| file.clone());
        if excluded.contains(&canonical) {
            continue;
        }
        let bytes = std::fs::read(&file).map_err(|err| Error::Source {
            path: file.clone(),
            message: format!("cannot read: {err}"),
        })?;
        let rel = ctx.relative(&file);
        if sops::looks_encrypted(&bytes) {
            // Decrypt the file's documents as written (the MAC covers their field order),
            // before they become typed objects.
            manifests.extend(decrypt_file(ctx, &bytes, &rel)?);
        } else {
            manifests.extend(plain::parse_bytes(&bytes, &rel)?);
        }
    }
    Ok(manifests)
}

/// A SOPS-encrypted manifest file → manifests, decrypted in memory.
fn decrypt_file(ctx: &mut Context<'_>, bytes: &[u8], rel: &Path) -> Result<Vec<Manifest>> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::Source {
        path: rel.to_path_buf(),
        message: "not UTF-8 text".into(),
    })?;
    let mut docs: Vec<Value> =
        serde_saphyr::from_str_multiple_with_options(text, safety::yaml_options()).map_err(
            |err| Error::Source {
                path: rel.to_path_buf(),
                message: format!("invalid YAML: {}", err.without_snippet()),
            },
        )?;
    if !docs.iter().any(sops::is_encrypted_value) {
        return plain::parse_bytes(bytes, rel);
    }
    let keys = ctx.keys()?.clone();
    let redactor = &mut ctx.redactor;
    sops::decrypt_documents_with(&mut docs, rel, &keys, &mut |keypath, value| {
        redactor.add_object_leaf(keypath, value)
    })?;
    let mut manifests = Vec::new();
    for (document, mut doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        if let Some(map) = doc.as_object_mut() {
            map.remove("sops");
        }
        let origin = Origin {
            file: rel.to_path_buf(),
            document,
            line: None,
        };
        manifests.push(plain::to_manifest(doc, &origin)?);
    }
    Ok(manifests)
}

/// Shared steps for stdin input (no app directory, no ferry.yaml).
pub fn finish_stdin(
    req: &RenderRequest,
    manifests: &mut [Manifest],
    redactor: &mut safety::Redactor,
) -> Result<()> {
    let mut keys = req.age_keys.clone();
    decrypt_remaining(manifests, &mut keys, redactor)?;
    let subst = substitution(req, None, None)?;
    if let Some(subst) = subst {
        substitute::apply(manifests, &subst)?;
    }
    Ok(())
}

fn finish(ctx: &mut Context<'_>, req: &RenderRequest, manifests: &mut [Manifest]) -> Result<()> {
    let mut keys = if manifests.iter().any(carries_sops) {
        Some(ctx.keys()?.clone())
    } else {
        None
    };
    decrypt_remaining(manifests, &mut keys, &mut ctx.redactor)?;
    if req.default_namespace.is_none()
        && let Some(namespace) = &ctx.app.config.namespace
    {
        for manifest in manifests.iter_mut() {
            if manifest.namespace().is_none_or(str::is_empty) && !is_cluster_scoped(manifest) {
                manifest.object.metadata.namespace = Some(namespace.clone());
            }
        }
    }
    let subst = substitution(req, Some(ctx), ctx.app.config_file.clone().as_deref())?;
    if let Some(subst) = subst {
        substitute::apply(manifests, &subst)?;
    }
    Ok(())
}

fn carries_sops(manifest: &Manifest) -> bool {
    manifest
        .object
        .data
        .get("sops")
        .is_some_and(|s| s.get("mac").is_some())
}

/// Objects still carrying a `sops:` block after their renderer (plain files, helm output).
fn decrypt_remaining(
    manifests: &mut [Manifest],
    keys: &mut Option<sops::AgeKeys>,
    redactor: &mut safety::Redactor,
) -> Result<()> {
    for manifest in manifests.iter_mut().filter(|m| carries_sops(m)) {
        if keys.is_none() {
            *keys = Some(sops::AgeKeys::from_env()?);
        }
        if let Some(keys) = keys.as_ref() {
            sops::decrypt_manifest_with(manifest, keys, &mut |keypath, value| {
                redactor.add_object_leaf(keypath, value)
            })?;
        }
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

/// Plaintext of encrypted source documents: `sops.mac` → (ciphertext string → plaintext).
type SourcePlaintext = HashMap<String, HashMap<String, Value>>;

/// Verify and decrypt SOPS source files as written (MAC in their own field order).
fn decrypt_sources(ctx: &mut Context<'_>, files: &[PathBuf]) -> Result<SourcePlaintext> {
    let mut by_mac = SourcePlaintext::new();
    for file in files {
        let shown = ctx.relative(file);
        let bytes = std::fs::read(file).map_err(|err| Error::Source {
            path: shown.clone(),
            message: err.to_string(),
        })?;
        let text = std::str::from_utf8(&bytes).map_err(|_| Error::Source {
            path: shown.clone(),
            message: "not UTF-8".into(),
        })?;
        let docs: Vec<Value> =
            serde_saphyr::from_str_multiple_with_options(text, safety::yaml_options()).map_err(
                |err| Error::Source {
                    path: shown.clone(),
                    message: format!("invalid YAML: {}", err.without_snippet()),
                },
            )?;
        if !docs.iter().any(sops::is_encrypted_value) {
            continue;
        }
        let mut plain = docs.clone();
        let keys = ctx.keys()?.clone();
        let redactor = &mut ctx.redactor;
        sops::decrypt_documents_with(&mut plain, &shown, &keys, &mut |keypath, value| {
            redactor.add_object_leaf(keypath, value)
        })?;
        for (encrypted, decrypted) in docs.iter().zip(&plain) {
            let Some(mac) = encrypted.pointer("/sops/mac").and_then(Value::as_str) else {
                continue;
            };
            let entry = by_mac.entry(mac.to_string()).or_default();
            pair_leaves(encrypted, decrypted, entry);
        }
    }
    Ok(by_mac)
}

fn pair_leaves(encrypted: &Value, plain: &Value, out: &mut HashMap<String, Value>) {
    match (encrypted, plain) {
        (Value::String(cipher), plain) if cipher.starts_with("ENC[") => {
            out.insert(cipher.clone(), plain.clone());
        }
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a.iter().filter(|(k, _)| k.as_str() != "sops") {
                if let Some(other) = b.get(key) {
                    pair_leaves(value, other, out);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (x, y) in a.iter().zip(b) {
                pair_leaves(x, y, out);
            }
        }
        _ => {}
    }
}

/// Replace ciphertext leaves with their verified plaintext; the first unknown one, if any.
fn substitute_plaintext(value: &mut Value, plain: &HashMap<String, Value>) -> Option<String> {
    match value {
        Value::String(cipher) if cipher.starts_with("ENC[") => match plain.get(cipher.as_str()) {
            Some(p) => {
                *value = p.clone();
                None
            }
            None => Some(String::from("a value")),
        },
        Value::Array(items) => items
            .iter_mut()
            .filter_map(|v| substitute_plaintext(v, plain))
            .next_back(),
        Value::Object(map) => {
            let mut missing = None;
            for (key, v) in map.iter_mut().filter(|(k, _)| k.as_str() != "sops") {
                if let Some(m) = substitute_plaintext(v, plain) {
                    missing = Some(if m == "a value" {
                        key.clone()
                    } else {
                        format!("{key}.{m}")
                    });
                }
            }
            missing
        }
        _ => None,
    }
}

/// Parse renderer output into manifests, decrypting documents with a `sops:` block first:
/// from their verified source documents when known (`sources`), else in place.
pub fn parse_and_decrypt(
    ctx: &mut Context<'_>,
    stdout: &[u8],
    origin_file: &Path,
    sources: &[PathBuf],
    ahead: Option<&mut plain::ParsedAhead>,
) -> Result<Vec<Manifest>> {
    if !sops::looks_encrypted(stdout) {
        return plain::parse_bytes_with(stdout, origin_file, ahead);
    }
    let text = std::str::from_utf8(stdout).map_err(|_| Error::Render {
        path: origin_file.to_path_buf(),
        message: "renderer output is not UTF-8".into(),
    })?;
    let docs: Vec<Value> =
        serde_saphyr::from_str_multiple_with_options(text, safety::yaml_options()).map_err(
            |err| Error::Render {
                path: origin_file.to_path_buf(),
                message: format!("unreadable renderer output: {}", err.without_snippet()),
            },
        )?;
    let source_plaintext = decrypt_sources(ctx, sources)?;
    let mut manifests = Vec::new();
    for (document, mut doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let origin = Origin {
            file: origin_file.to_path_buf(),
            document,
            line: None,
        };
        if sops::is_encrypted_value(&doc) {
            let name = object_name(&doc);
            let path = origin_file.join(&name);
            let known = doc
                .pointer("/sops/mac")
                .and_then(Value::as_str)
                .and_then(|mac| source_plaintext.get(mac));
            if let Some(plain) = known {
                if let Some(field) = substitute_plaintext(&mut doc, plain) {
                    return Err(Error::Decrypt {
                        path,
                        message: format!(
                            "encrypted field {field} does not come from the encrypted source file (changed by a kustomize patch?); encrypt the final value instead"
                        ),
                    });
                }
            } else {
                let keys = ctx.keys()?.clone();
                let redactor = &mut ctx.redactor;
                sops::decrypt_document_with(&mut doc, &path, &keys, &mut |keypath, value| {
                    redactor.add_object_leaf(keypath, value)
                })?;
            }
            if let Some(map) = doc.as_object_mut() {
                map.remove("sops");
            }
        }
        manifests.push(plain::to_manifest(doc, &origin)?);
    }
    Ok(manifests)
}

fn object_name(doc: &Value) -> String {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("object");
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    format!("{kind}/{name}")
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
