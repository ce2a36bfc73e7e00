//! Helm post-render: the chart's output plus the user's kustomization (`helm.postRender`,
//! `--post-render`) built by kustomize in a private temp dir, with the same checks as a
//! kustomize app (no helm, no plugins, no remote loading unless allowed). While objects sit on
//! disk, Secret data and values that came from decryption are replaced by placeholders.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::super::config::{Context, KUSTOMIZATION_FILES};
use super::super::kustomize::{self, Graph, Use};
use super::super::safety;
use crate::{Error, Manifest, Result};

/// Apply the kustomization in `dir` on top of the chart's `manifests`.
pub fn apply(ctx: &mut Context<'_>, manifests: Vec<Manifest>, dir: &Path) -> Result<Vec<Manifest>> {
    let shown = ctx.relative(dir);
    let Some(kustomization) = kustomize::find_kustomization(dir) else {
        return Err(Error::Source {
            path: shown,
            message: "post-render directory has no kustomization.yaml".into(),
        });
    };
    if dir.starts_with(&ctx.root) {
        // The same checks as a kustomize app (no helm, no plugins, no remote loading unless
        // allowed); the result of that walk (encrypted files) is not needed here.
        Graph::new(ctx).check(dir, Use::Kustomization, &mut Vec::new())?;
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
    let mut doc: Value = serde_saphyr::from_str_with_options(&text, crate::yaml::options())
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
    let (stdout, mut ahead) = kustomize::build(ctx, work.path(), &shown)?;
    let origin = PathBuf::from(format!("post-render {}", shown.display()));
    let mut out =
        crate::yaml::parse_bytes_with(&stdout, &origin, Some(&mut ahead)).map_err(|err| {
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
