//! Kustomize renderer: the real `kustomize build` with `--load-restrictor
//! LoadRestrictionsRootOnly`, after ferry has walked the kustomization graph itself: every
//! base/component must be a local directory inside the source root, and every field kustomize
//! reads a file or URL from (generator `files`/`envs`/`env`, patches, replacements, crds,
//! configurations, openapi, transformer/generator/validator configs and their own paths) must
//! name a file inside the root; URLs are refused unless `kustomize.allowRemoteBases` (and the
//! agent's `--no-remote-bases` overrides even that). kustomize's helm inflation and plugins
//! (KRM functions, exec, legacy plugins) are refused. Every directory kustomize will read is
//! checked for escaping symlinks and size limits. SOPS-encrypted objects stay ciphertext through the
//! build and are decrypted afterwards by the decrypt stage, so plaintext never touches disk.
//!
//! The helm post-render step (`helm::post_render`) runs the same checks and build.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::config::{Context, KUSTOMIZATION_FILES};
use super::process::{self, Flag, Run, RunEvent, Tool};
use super::safety;
use crate::decrypt::{EncryptedSource, Rendered, sops};
use crate::yaml::{ParsedAhead, StreamParse};
use crate::{Error, Result};

/// Render `ctx.app.render_path` with kustomize.
pub fn render(ctx: &mut Context<'_>) -> Result<Rendered> {
    let dir = ctx.app.render_path.clone();
    let mut encrypted = Vec::new();
    Graph::new(ctx).check(&dir, Use::Kustomization, &mut encrypted)?;
    let shown = ctx.relative(&dir);
    let (stdout, mut ahead) = build(ctx, &dir, &shown)?;
    let origin = PathBuf::from(format!("kustomize build {}", shown.display()));
    if !sops::looks_encrypted(&stdout) {
        return crate::yaml::parse_bytes_with(&stdout, &origin, Some(&mut ahead))
            .map(Rendered::from);
    }
    // Objects carry `sops:` blocks. kustomize re-sorts fields, which breaks the SOPS MAC, so
    // the decrypt stage verifies the encrypted source files as written and matches their
    // plaintext to the build output by ciphertext.
    let text = std::str::from_utf8(&stdout).map_err(|_| Error::Render {
        path: origin.clone(),
        message: "renderer output is not UTF-8".into(),
    })?;
    let documents: Vec<Value> =
        serde_saphyr::from_str_multiple_with_options(text, crate::yaml::options()).map_err(
            |err| Error::Render {
                path: origin.clone(),
                message: format!("unreadable renderer output: {}", err.without_snippet()),
            },
        )?;
    let sources = encrypted.into_iter().map(|(_, source)| source).collect();
    let mut rendered = Rendered::default();
    rendered.push_build_output(origin, documents, sources);
    Ok(rendered)
}

/// SOPS-encrypted resource files of a kustomization graph, by resolved path, as read.
pub(super) type EncryptedFiles = Vec<(PathBuf, EncryptedSource)>;

/// Whether remote loading is allowed for this app: ferry.yaml (or `spec.render`) may ask for
/// it, an operator flag may allow it, and the agent's `--no-remote-bases` forbids it whatever
/// either says.
fn remote_allowed(ctx: &Context<'_>) -> bool {
    !ctx.policy.forbid_remote_loading
        && ctx
            .app
            .config
            .kustomize
            .as_ref()
            .is_some_and(|k| k.allow_remote_bases)
}

pub(super) fn find_kustomization(dir: &Path) -> Option<PathBuf> {
    KUSTOMIZATION_FILES
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
}

/// What kustomize would treat as remote: URLs, `git@`, `github.com/...`-style refs.
fn looks_remote(entry: &str) -> bool {
    let first = entry.split('/').next().unwrap_or_default();
    entry.contains("://")
        || entry.starts_with("git@")
        || entry.contains("?ref=")
        || entry.contains("//")
        || (entry.contains('/') && !first.starts_with('.') && first.contains('.'))
}

/// Kustomization fields that make kustomize run helm (`--enable-helm`): never done for a
/// repository's kustomization; use ferry's helm renderer with a post-render kustomization.
const HELM_FIELDS: [&str; 3] = ["helmCharts", "helmGlobals", "helmChartInflationGenerator"];

/// Annotations that turn a transformer/generator config into a KRM function (a container or
/// an executable run by kustomize with `--enable-alpha-plugins` / `--enable-exec`).
const FUNCTION_ANNOTATIONS: [&str; 2] = ["config.kubernetes.io/function", "config.k8s.io/function"];

/// How a file or directory is used by the kustomization naming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Use {
    /// A kustomization root, base or component: walked.
    Kustomization,
    /// Transformer / generator / validator configs: each document must be a kustomize
    /// builtin, not a plugin or KRM function; directories are kustomizations of such configs.
    PluginConfig,
}

/// The walk over a kustomization graph: every field kustomize reads a file or URL from is
/// checked before kustomize runs (`LoadRestrictionsRootOnly` covers only part of it, and not
/// URLs at all).
pub(super) struct Graph<'c, 'a> {
    ctx: &'c mut Context<'a>,
    allow_remote: bool,
    visited: HashSet<(PathBuf, bool)>,
}

impl<'c, 'a> Graph<'c, 'a> {
    pub(super) fn new(ctx: &'c mut Context<'a>) -> Self {
        let allow_remote = remote_allowed(ctx);
        Self {
            ctx,
            allow_remote,
            visited: HashSet::new(),
        }
    }

    fn refuse_remote(&self, shown: &Path, field: &str, entry: &str) -> Error {
        let why = if self.ctx.policy.forbid_remote_loading {
            "the agent forbids remote loading (--no-remote-bases), whatever ferry.yaml or spec.render say; vendor it into the repository"
        } else {
            "remote bases are disabled (no remote loading of any kind), so a build only reads what is in the source; vendor it into the repository or set `kustomize: {allowRemoteBases: true}` in ferry.yaml"
        };
        Error::Refused(format!(
            "{}: {field} entry {entry:?} is remote: {why}",
            shown.display()
        ))
    }

    /// Walk the kustomization in `dir` and everything it names.
    pub(super) fn check(
        &mut self,
        dir: &Path,
        usage: Use,
        encrypted: &mut EncryptedFiles,
    ) -> Result<()> {
        let dir = std::fs::canonicalize(dir).map_err(|err| Error::Source {
            path: dir.to_path_buf(),
            message: err.to_string(),
        })?;
        if !self
            .visited
            .insert((dir.clone(), usage == Use::PluginConfig))
        {
            return Ok(());
        }
        self.ctx.guard.scan_dir(&dir)?;
        let Some(file) = find_kustomization(&dir) else {
            return Ok(());
        };
        let shown = self.ctx.relative(&file);
        let bytes = std::fs::read(&file).map_err(|err| Error::Source {
            path: shown.clone(),
            message: err.to_string(),
        })?;
        let text = String::from_utf8_lossy(&bytes);
        let doc: Value = serde_saphyr::from_str_with_options(&text, crate::yaml::options())
            .map_err(|err| Error::Source {
                path: shown.clone(),
                message: format!("invalid kustomization: {}", err.without_snippet()),
            })?;
        for field in HELM_FIELDS {
            if doc.get(field).is_some_and(|v| !v.is_null()) {
                return Err(Error::Refused(format!(
                    "{}: `{field}` makes kustomize run helm with arguments from the repository; ferry never enables kustomize's helm support. Render the chart with ferry's helm renderer (ferry.yaml `helm:`) and put this kustomization under `helm.postRender`",
                    shown.display()
                )));
            }
        }
        // Bases, resources, components: kustomizations or resource files.
        for field in ["resources", "bases", "components"] {
            for entry in strings(&doc, field) {
                let target = if usage == Use::PluginConfig {
                    Use::PluginConfig
                } else {
                    Use::Kustomization
                };
                self.check_entry(&dir, &shown, field, entry, target, encrypted)?;
            }
        }
        for field in ["transformers", "generators", "validators"] {
            for entry in strings(&doc, field) {
                if is_inline(entry) {
                    check_plugin_text(&shown, field, entry)?;
                    self.check_config_fields(&dir, &shown, field, &parse_inline(&shown, entry)?)?;
                } else {
                    self.check_entry(&dir, &shown, field, entry, Use::PluginConfig, encrypted)?;
                }
            }
        }
        // Plain file references.
        for field in ["crds", "configurations"] {
            for entry in strings(&doc, field) {
                self.file(&dir, &shown, field, entry)?;
            }
        }
        for entry in strings(&doc, "patchesStrategicMerge") {
            if !is_inline(entry) {
                self.file(&dir, &shown, "patchesStrategicMerge", entry)?;
            }
        }
        for field in ["patches", "patchesJson6902", "replacements"] {
            for item in items(&doc, field) {
                if let Some(path) = item.get("path").and_then(Value::as_str) {
                    self.file(&dir, &shown, &format!("{field}.path"), path)?;
                }
            }
        }
        if let Some(path) = doc.pointer("/openapi/path").and_then(Value::as_str) {
            self.file(&dir, &shown, "openapi.path", path)?;
        }
        for field in ["configMapGenerator", "secretGenerator"] {
            for item in items(&doc, field) {
                self.check_generator_sources(&dir, &shown, field, item)?;
            }
        }
        Ok(())
    }

    /// A resource/base/component or plugin-config entry: a directory is walked, a file checked.
    fn check_entry(
        &mut self,
        dir: &Path,
        shown: &Path,
        field: &str,
        entry: &str,
        usage: Use,
        encrypted: &mut EncryptedFiles,
    ) -> Result<()> {
        let candidate = dir.join(entry);
        if !candidate.exists() {
            if looks_remote(entry) {
                if self.allow_remote && usage == Use::Kustomization {
                    return Ok(());
                }
                return Err(self.refuse_remote(shown, field, entry));
            }
            return Err(Error::Source {
                path: shown.to_path_buf(),
                message: format!("{field} entry {entry:?} does not exist"),
            });
        }
        let resolved = safety::resolve_inside(&self.ctx.root, dir, entry, field, shown)?;
        if resolved.is_dir() {
            return self.check(&resolved, usage, encrypted);
        }
        self.ctx.guard.check_file(&resolved)?;
        let bytes = std::fs::read(&resolved).map_err(|err| Error::Source {
            path: self.ctx.relative(&resolved),
            message: err.to_string(),
        })?;
        if usage == Use::PluginConfig {
            let file_shown = self.ctx.relative(&resolved);
            let text = String::from_utf8_lossy(&bytes);
            check_plugin_text(&file_shown, field, &text)?;
            let docs: Vec<Value> =
                serde_saphyr::from_str_multiple_with_options(&text, crate::yaml::options())
                    .map_err(|err| Error::Source {
                        path: file_shown.clone(),
                        message: format!("invalid YAML: {}", err.without_snippet()),
                    })?;
            // File paths in a builtin's config are relative to the kustomization naming it
            // (kustomize's loader root), not to the config file.
            for doc in &docs {
                self.check_config_fields(dir, &file_shown, field, doc)?;
            }
        } else if sops::looks_encrypted(&bytes) && !encrypted.iter().any(|(p, _)| *p == resolved) {
            let shown = self.ctx.relative(&resolved);
            encrypted.push((resolved, EncryptedSource { shown, bytes }));
        }
        Ok(())
    }

    /// The file fields of a builtin transformer/generator config (`PatchTransformer.path`,
    /// `ReplacementTransformer.replacements[].path`, `ConfigMapGenerator.files`, ...).
    fn check_config_fields(
        &mut self,
        dir: &Path,
        shown: &Path,
        field: &str,
        doc: &Value,
    ) -> Result<()> {
        if let Some(path) = doc.get("path").and_then(Value::as_str) {
            self.file(dir, shown, &format!("{field} path"), path)?;
        }
        for path in strings(doc, "paths") {
            self.file(dir, shown, &format!("{field} paths"), path)?;
        }
        for item in items(doc, "replacements") {
            if let Some(path) = item.get("path").and_then(Value::as_str) {
                self.file(dir, shown, &format!("{field} replacements.path"), path)?;
            }
        }
        self.check_generator_sources(dir, shown, field, doc)
    }

    /// `files` (`key=path` or `path`), `envs` and `env` of a ConfigMap/Secret generator.
    fn check_generator_sources(
        &mut self,
        dir: &Path,
        shown: &Path,
        field: &str,
        item: &Value,
    ) -> Result<()> {
        for entry in strings(item, "files") {
            let path = entry.split_once('=').map_or(entry, |(_, path)| path);
            self.file(dir, shown, &format!("{field}.files"), path)?;
        }
        for entry in strings(item, "envs") {
            self.file(dir, shown, &format!("{field}.envs"), entry)?;
        }
        if let Some(entry) = item.get("env").and_then(Value::as_str) {
            self.file(dir, shown, &format!("{field}.env"), entry)?;
        }
        Ok(())
    }

    /// A file kustomize's loader reads: a URL (fetched over HTTP by kustomize) only when
    /// remote loading is allowed; otherwise a file inside the source root, within the limits.
    fn file(&mut self, dir: &Path, shown: &Path, field: &str, entry: &str) -> Result<()> {
        if entry.contains("://") || entry.starts_with("git@") {
            let http = entry.starts_with("https://") || entry.starts_with("http://");
            if self.allow_remote && http {
                return Ok(());
            }
            return Err(self.refuse_remote(shown, field, entry));
        }
        let resolved = safety::resolve_inside(&self.ctx.root, dir, entry, field, shown)?;
        if resolved.is_dir() {
            self.ctx.guard.scan_dir(&resolved)
        } else {
            self.ctx.guard.check_file(&resolved)
        }
    }
}

/// String entries of a list field (anything else is kustomize's to reject).
fn strings<'v>(doc: &'v Value, field: &str) -> impl Iterator<Item = &'v str> {
    doc.get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// Mapping entries of a list field.
fn items<'v>(doc: &'v Value, field: &str) -> impl Iterator<Item = &'v Value> {
    doc.get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.is_object())
}

/// kustomize accepts inline YAML in `transformers`/`generators`/`patchesStrategicMerge`.
fn is_inline(entry: &str) -> bool {
    entry.contains('\n')
}

fn parse_inline(shown: &Path, text: &str) -> Result<Value> {
    serde_saphyr::from_str_with_options(text, crate::yaml::options()).map_err(|err| Error::Source {
        path: shown.to_path_buf(),
        message: format!("invalid inline plugin config: {}", err.without_snippet()),
    })
}

/// Transformer/generator/validator configs must be kustomize builtins (`apiVersion: builtin`):
/// plugins and KRM functions (exec or container) run code from the repository and are refused
/// (kustomize runs without `--enable-alpha-plugins`/`--enable-exec` anyway; this says why
/// up front).
fn check_plugin_text(shown: &Path, field: &str, text: &str) -> Result<()> {
    let docs: Vec<Value> =
        serde_saphyr::from_str_multiple_with_options(text, crate::yaml::options()).map_err(
            |err| Error::Source {
                path: shown.to_path_buf(),
                message: format!("invalid YAML in {field}: {}", err.without_snippet()),
            },
        )?;
    for doc in docs.iter().filter(|d| !d.is_null()) {
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
        let api_version = doc
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let annotations = doc.pointer("/metadata/annotations");
        if let Some(annotation) = FUNCTION_ANNOTATIONS
            .iter()
            .find(|a| annotations.and_then(|m| m.get(**a)).is_some())
        {
            return Err(Error::Refused(format!(
                "{}: {field} config {kind:?} is a KRM function ({annotation}): ferry never runs exec or container plugins from a repository; use kustomize builtins",
                shown.display()
            )));
        }
        if kind == "HelmChartInflationGenerator" {
            return Err(Error::Refused(format!(
                "{}: {field} config HelmChartInflationGenerator makes kustomize run helm; render the chart with ferry's helm renderer (ferry.yaml `helm:`) instead",
                shown.display()
            )));
        }
        if api_version != "builtin" {
            return Err(Error::Refused(format!(
                "{}: {field} config {kind:?} (apiVersion {api_version:?}) is not a kustomize builtin (`apiVersion: builtin`); ferry runs kustomize without plugins",
                shown.display()
            )));
        }
    }
    Ok(())
}

/// Run `kustomize build` on `dir`: its stdout, and the documents of it parsed while kustomize
/// was still exiting (see `crate::yaml::StreamParse`).
pub(super) fn build(ctx: &Context<'_>, dir: &Path, shown: &Path) -> Result<(Vec<u8>, ParsedAhead)> {
    let binary = process::find_tool(Tool::Kustomize, ctx.overrides.kustomize_binary.as_deref())
        .map_err(|err| Error::Render {
            path: shown.to_path_buf(),
            message: err.to_string(),
        })?;
    // HOME is a throw-away directory (see process::run): the git kustomize runs for remote
    // bases reads no user configuration or credential helpers.
    let run = Run::new(&binary, ctx.limits.timeout(), ctx.limits.max_total_bytes)
        .command(&["build"])
        .option(Flag::LoadRestrictor, "LoadRestrictionsRootOnly")
        .positional(dir);
    let mut streamed = StreamParse::default();
    // Output with `sops:` blocks is parsed differently (see `render`).
    let mut watch_output = |event: RunEvent<'_>| {
        if let RunEvent::Output(so_far) = event
            && !sops::looks_encrypted(so_far)
        {
            streamed.observe(so_far);
        }
    };
    let run = run.watch(&mut watch_output);
    let fail = |message: String| Error::Render {
        path: shown.to_path_buf(),
        message: ctx.redactor.redact(&message),
    };
    let output = process::run(run).map_err(|err| {
        let stderr = match &err {
            process::RunError::Timeout { stderr, .. } => {
                format!("\n{}", String::from_utf8_lossy(stderr).trim())
            }
            _ => String::new(),
        };
        fail(format!("kustomize build: {err}{stderr}"))
    })?;
    if !output.status.success() {
        return Err(fail(format!(
            "kustomize build failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok((output.stdout, streamed.into_parsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_entries_are_recognised() {
        assert!(looks_remote("https://github.com/org/repo//base?ref=v1"));
        assert!(looks_remote("github.com/org/repo/base?ref=main"));
        assert!(looks_remote("git@github.com:org/repo.git"));
        assert!(!looks_remote("../base"));
        assert!(!looks_remote("deployment.yaml"));
        assert!(!looks_remote("components/extra"));
    }
}
