//! Kustomize renderer: the real `kustomize build` with `--load-restrictor
//! LoadRestrictionsRootOnly`, after ferry has walked the kustomization graph itself: every
//! base/component must be a local directory inside the source root (remote bases are refused
//! unless `kustomize.allowRemoteBases`), and every directory kustomize will read is checked for
//! escaping symlinks and size limits. SOPS-encrypted objects stay ciphertext through the build
//! and are decrypted afterwards by the render stage, so plaintext never touches disk.
//!
//! Also the helm post-render step: chart output plus the user's kustomization in a private
//! temp dir, with Secret data and decrypted values replaced by placeholders while on disk.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::config::{Context, KUSTOMIZATION_FILES};
use super::plain::{ParsedAhead, StreamParse};
use super::process::{self, Run, RunEvent, Tool};
use super::safety;
use crate::{Error, Manifest, Result};

/// Render `ctx.app.render_path` with kustomize.
pub fn render(ctx: &mut Context<'_>) -> Result<Vec<Manifest>> {
    let dir = ctx.app.render_path.clone();
    let allow_remote = ctx
        .app
        .config
        .kustomize
        .as_ref()
        .is_some_and(|k| k.allow_remote_bases);
    let mut visited = HashSet::new();
    let mut encrypted = Vec::new();
    check_graph(ctx, &dir, allow_remote, &mut visited, &mut encrypted)?;
    let shown = ctx.relative(&dir);
    let (stdout, mut ahead) = build(ctx, &dir, &shown)?;
    let origin = PathBuf::from(format!("kustomize build {}", shown.display()));
    // Objects may carry `sops:` blocks. kustomize re-sorts fields, which breaks the SOPS MAC,
    // so the encrypted source files are verified and decrypted as written, and their
    // plaintext is matched to the build output by ciphertext.
    super::app::parse_and_decrypt(ctx, &stdout, &origin, &encrypted, Some(&mut ahead))
}

fn find_kustomization(dir: &Path) -> Option<PathBuf> {
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

/// Walk kustomization → bases/components, checking containment and the trees kustomize reads.
fn check_graph(
    ctx: &mut Context<'_>,
    dir: &Path,
    allow_remote: bool,
    visited: &mut HashSet<PathBuf>,
    encrypted: &mut Vec<PathBuf>,
) -> Result<()> {
    let dir = std::fs::canonicalize(dir).map_err(|err| Error::Source {
        path: dir.to_path_buf(),
        message: err.to_string(),
    })?;
    if !visited.insert(dir.clone()) {
        return Ok(());
    }
    ctx.guard.scan_dir(&dir)?;
    let Some(file) = find_kustomization(&dir) else {
        return Ok(());
    };
    let shown = ctx.relative(&file);
    let bytes = std::fs::read(&file).map_err(|err| Error::Source {
        path: shown.clone(),
        message: err.to_string(),
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let doc: Value =
        serde_saphyr::from_str_with_options(&text, safety::yaml_options()).map_err(|err| {
            Error::Source {
                path: shown.clone(),
                message: format!("invalid kustomization: {}", err.without_snippet()),
            }
        })?;
    for field in ["resources", "bases", "components"] {
        let Some(entries) = doc.get(field).and_then(Value::as_array) else {
            continue;
        };
        for entry in entries.iter().filter_map(Value::as_str) {
            let candidate = dir.join(entry);
            if !candidate.exists() {
                if looks_remote(entry) {
                    if allow_remote {
                        continue;
                    }
                    return Err(Error::Refused(format!(
                        "{}: remote {field} entry {entry:?}: remote bases are disabled, so a build only reads what is in the source; vendor it into the repository or set `kustomize: {{allowRemoteBases: true}}` in ferry.yaml",
                        shown.display()
                    )));
                }
                return Err(Error::Source {
                    path: shown.clone(),
                    message: format!("{field} entry {entry:?} does not exist"),
                });
            }
            let resolved = safety::resolve_inside(&ctx.root, &dir, entry, field, &shown)?;
            if resolved.is_dir() {
                check_graph(ctx, &resolved, allow_remote, visited, encrypted)?;
            } else {
                ctx.guard.check_file(&resolved)?;
                let bytes = std::fs::read(&resolved).map_err(|err| Error::Source {
                    path: ctx.relative(&resolved),
                    message: err.to_string(),
                })?;
                if crate::decrypt::sops::looks_encrypted(&bytes) && !encrypted.contains(&resolved) {
                    encrypted.push(resolved);
                }
            }
        }
    }
    Ok(())
}

/// Run `kustomize build` on `dir`: its stdout, and the documents of it parsed while kustomize
/// was still exiting (see `plain::StreamParse`).
fn build(ctx: &Context<'_>, dir: &Path, shown: &Path) -> Result<(Vec<u8>, ParsedAhead)> {
    let binary = process::find_tool(Tool::Kustomize, ctx.overrides.kustomize_binary.as_deref())
        .map_err(|message| Error::Render {
            path: shown.to_path_buf(),
            message,
        })?;
    let run = Run::new(&binary, ctx.limits.timeout(), ctx.limits.max_total_bytes)
        .arg("build")
        .arg(dir)
        .arg("--load-restrictor")
        .arg("LoadRestrictionsRootOnly");
    let mut streamed = StreamParse::default();
    // Output with `sops:` blocks is parsed differently (`parse_and_decrypt`).
    let mut watch_output = |event: RunEvent<'_>| {
        if let RunEvent::Output(so_far) = event
            && !crate::decrypt::sops::looks_encrypted(so_far)
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

/// Apply the kustomization in `dir` on top of `manifests` (helm post-render).
pub fn post_render(
    ctx: &mut Context<'_>,
    manifests: Vec<Manifest>,
    dir: &Path,
) -> Result<Vec<Manifest>> {
    let shown = ctx.relative(dir);
    let Some(kustomization) = find_kustomization(dir) else {
        return Err(Error::Source {
            path: shown,
            message: "post-render directory has no kustomization.yaml".into(),
        });
    };
    if dir.starts_with(&ctx.root) {
        ctx.guard.scan_dir(dir)?;
    }
    // Private (0700) and removed on drop; what is written has secrets masked.
    let work = tempfile::Builder::new()
        .prefix("ferry-post-render-")
        .tempdir()
        .map_err(|err| Error::Render {
            path: shown.clone(),
            message: format!("cannot create a temporary directory: {err}"),
        })?;
    copy_tree(dir, work.path())?;
    let mut masker = Masker::new(&ctx.redactor);
    let mut stream = String::new();
    for manifest in &manifests {
        let mut value = serde_json::to_value(&manifest.object).map_err(|err| Error::Render {
            path: shown.clone(),
            message: format!("{}: {err}", manifest.key()),
        })?;
        masker.mask(&mut value);
        stream.push_str("---\n");
        stream.push_str(&value.to_string());
        stream.push('\n');
    }
    const CHART_OUTPUT: &str = "ferry-chart-output.yaml";
    write(&work.path().join(CHART_OUTPUT), stream.as_bytes())?;
    let text = std::fs::read_to_string(&kustomization).map_err(|err| Error::Source {
        path: shown.clone(),
        message: err.to_string(),
    })?;
    let mut doc: Value = serde_saphyr::from_str_with_options(&text, safety::yaml_options())
        .map_err(|err| Error::Source {
            path: ctx.relative(&kustomization),
            message: format!("invalid kustomization: {}", err.without_snippet()),
        })?;
    let Some(map) = doc.as_object_mut() else {
        return Err(Error::Source {
            path: ctx.relative(&kustomization),
            message: "a kustomization must be a mapping".into(),
        });
    };
    let resources = map
        .entry("resources")
        .or_insert_with(|| Value::Array(Vec::new()));
    match resources {
        Value::Array(items) => items.insert(0, Value::from(CHART_OUTPUT)),
        _ => {
            return Err(Error::Source {
                path: ctx.relative(&kustomization),
                message: "`resources` must be a list".into(),
            });
        }
    }
    for name in KUSTOMIZATION_FILES {
        let _ = std::fs::remove_file(work.path().join(name));
    }
    write(
        &work.path().join("kustomization.yaml"),
        doc.to_string().as_bytes(),
    )?;
    let (stdout, mut ahead) = build(ctx, work.path(), &shown)?;
    let origin = PathBuf::from(format!("post-render {}", shown.display()));
    let mut out =
        super::plain::parse_bytes_with(&stdout, &origin, Some(&mut ahead)).map_err(|err| {
            Error::Render {
                path: shown.clone(),
                message: ctx
                    .redactor
                    .redact(&format!("kustomize produced unreadable output: {err}")),
            }
        })?;
    for manifest in &mut out {
        let mut value = serde_json::to_value(&manifest.object).map_err(|err| Error::Render {
            path: shown.clone(),
            message: format!("{}: {err}", manifest.key()),
        })?;
        if masker.unmask(&mut value) {
            manifest.object = serde_json::from_value(value).map_err(|err| Error::Render {
                path: shown.clone(),
                message: format!("{}: {err}", manifest.key()),
            })?;
        }
    }
    Ok(out)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|err| Error::Render {
        path: path.to_path_buf(),
        message: err.to_string(),
    })
}

/// Copy the user's post-render directory (regular files and directories only).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for entry in walkdir::WalkDir::new(from).follow_links(false) {
        let entry = entry.map_err(|err| Error::Source {
            path: from.to_path_buf(),
            message: err.to_string(),
        })?;
        let rel = entry.path().strip_prefix(from).unwrap_or(entry.path());
        let target = to.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).map_err(|err| Error::Render {
                path: target.clone(),
                message: err.to_string(),
            })?;
        } else if entry.file_type().is_file() {
            std::fs::copy(entry.path(), &target).map_err(|err| Error::Render {
                path: target.clone(),
                message: err.to_string(),
            })?;
        }
    }
    Ok(())
}

/// Swaps Secret `data`/`stringData` values and known decrypted strings for random
/// placeholders while objects sit in the post-render temp dir, and back afterwards.
struct Masker {
    secrets: Vec<String>,
    /// (placeholder, original) pairs.
    pairs: Vec<(String, Value)>,
    nonce: String,
}

impl Masker {
    fn new(redactor: &safety::Redactor) -> Self {
        use rand::Rng;
        let nonce: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(16)
            .map(char::from)
            .collect();
        Self {
            secrets: redactor
                .secrets()
                .filter(|s| s.len() >= 4)
                .map(str::to_string)
                .collect(),
            pairs: Vec::new(),
            nonce,
        }
    }

    /// A placeholder that is valid base64 (Secret `data` must stay decodable).
    fn placeholder(&mut self, original: Value) -> String {
        let placeholder = format!("ferryMASK{}{:07}", self.nonce, self.pairs.len());
        self.pairs.push((placeholder.clone(), original));
        placeholder
    }

    fn mask(&mut self, object: &mut Value) {
        let is_secret = object.get("kind").and_then(Value::as_str) == Some("Secret")
            && object.get("apiVersion").and_then(Value::as_str) == Some("v1");
        if is_secret {
            for field in ["data", "stringData"] {
                if let Some(Value::Object(map)) = object.get_mut(field) {
                    for value in map.values_mut() {
                        let original = std::mem::take(value);
                        *value = Value::from(self.placeholder(original));
                    }
                }
            }
        }
        if !self.secrets.is_empty() {
            self.mask_strings(object);
        }
    }

    fn mask_strings(&mut self, value: &mut Value) {
        match value {
            Value::String(text) => {
                let secrets = self.secrets.clone();
                for secret in &secrets {
                    if text.contains(secret.as_str()) {
                        let placeholder = self.placeholder(Value::from(secret.clone()));
                        *text = text.replace(secret.as_str(), &placeholder);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.mask_strings(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.mask_strings(v)),
            _ => {}
        }
    }

    /// Restore placeholders; true if anything changed.
    fn unmask(&self, value: &mut Value) -> bool {
        if self.pairs.is_empty() {
            return false;
        }
        match value {
            Value::String(text) if text.contains("ferryMASK") => {
                if let Some((_, original)) = self.pairs.iter().find(|(p, _)| p == text) {
                    *value = original.clone();
                    return true;
                }
                let mut changed = false;
                for (placeholder, original) in &self.pairs {
                    if let (true, Some(original)) =
                        (text.contains(placeholder.as_str()), original.as_str())
                    {
                        *text = text.replace(placeholder.as_str(), original);
                        changed = true;
                    }
                }
                changed
            }
            Value::Array(items) => items.iter_mut().fold(false, |c, v| self.unmask(v) | c),
            Value::Object(map) => map.values_mut().fold(false, |c, v| self.unmask(v) | c),
            _ => false,
        }
    }
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

    #[test]
    fn masking_round_trips_and_hides_values() {
        let mut redactor = safety::Redactor::new();
        redactor.add("s3cr3t-password");
        let mut masker = Masker::new(&redactor);
        let original = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"},
            "data": {"k": "c2VjcmV0"},
        });
        let cm =
            serde_json::json!({"kind": "ConfigMap", "data": {"url": "db://u:s3cr3t-password@h"}});
        let mut a = original.clone();
        let mut b = cm.clone();
        masker.mask(&mut a);
        masker.mask(&mut b);
        assert!(!a.to_string().contains("c2VjcmV0"));
        assert!(!b.to_string().contains("s3cr3t-password"));
        assert!(masker.unmask(&mut a));
        assert!(masker.unmask(&mut b));
        assert_eq!(a, original);
        assert_eq!(b, cm);
    }
}
