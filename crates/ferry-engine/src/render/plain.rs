//! Plain YAML/JSON renderer: a file or a directory (recursive, sorted, hidden entries skipped) of
//! multi-document `.yaml`/`.yml`/`.json` files, read with [`crate::yaml`] (`kind: List`
//! expanded like kubectl, every manifest recording its file, document index and starting line).
//! The app's own configuration (ferry.yaml, the values and vars files it names) is not a
//! manifest. A SOPS-encrypted file is handed to the decrypt stage as written: its MAC covers
//! the documents' field order, so it is decrypted before its documents become typed objects.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::config::{self, Context};
use crate::decrypt::{Rendered, sops};
use crate::{Error, Result};

/// Render `ctx.app.render_path` (a file or a directory) as plain YAML.
pub fn render(ctx: &mut Context<'_>) -> Result<Rendered> {
    let target = ctx.app.render_path.clone();
    if target.is_dir() {
        ctx.guard.scan_dir(&target)?;
    } else {
        ctx.guard.check_file(&target)?;
    }
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
    let mut rendered = Rendered::default();
    for file in manifest_files(&target)? {
        let canonical = file.canonicalize().unwrap_or_else(|_| file.clone());
        if excluded.contains(&canonical) {
            continue;
        }
        let bytes = std::fs::read(&file).map_err(|err| Error::Source {
            path: file.clone(),
            message: format!("cannot read: {err}"),
        })?;
        let rel = ctx.relative(&file);
        match sops_documents(&bytes, &rel)? {
            Some(documents) => rendered.push_encrypted_file(rel, documents),
            None => rendered.push_objects(crate::yaml::parse_bytes(&bytes, &rel)?),
        }
    }
    Ok(rendered)
}

/// The documents of a SOPS-encrypted manifest file, as written; `None` for any other file.
fn sops_documents(bytes: &[u8], rel: &Path) -> Result<Option<Vec<Value>>> {
    if !sops::looks_encrypted(bytes) {
        return Ok(None);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| Error::Source {
        path: rel.to_path_buf(),
        message: "not UTF-8 text".into(),
    })?;
    let documents: Vec<Value> =
        serde_saphyr::from_str_multiple_with_options(text, crate::yaml::options()).map_err(
            |err| Error::Source {
                path: rel.to_path_buf(),
                message: format!("invalid YAML: {}", err.without_snippet()),
            },
        )?;
    Ok(documents
        .iter()
        .any(sops::is_encrypted_value)
        .then_some(documents))
}

/// The manifest files under `path`: the file itself, or every `.yaml`/`.yml`/`.json` below a
/// directory in sorted order (stable output and apply order), skipping hidden entries (`.git`).
pub fn manifest_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let walker = walkdir::WalkDir::new(path)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        let entry = entry.map_err(|err| Error::Source {
            path: err
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| path.to_path_buf()),
            message: format!("cannot list: {err}"),
        })?;
        if entry.file_type().is_file() && is_manifest_name(entry.path()) {
            files.push(entry.into_path());
        }
    }
    Ok(files)
}

fn is_manifest_name(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_walk_is_sorted_and_skips_hidden() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join("b.yaml"), "").unwrap();
        std::fs::write(dir.path().join("sub/a.yml"), "").unwrap();
        std::fs::write(dir.path().join(".git/c.yaml"), "").unwrap();
        std::fs::write(dir.path().join("README.md"), "").unwrap();
        let files = manifest_files(dir.path()).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| f.strip_prefix(dir.path()).unwrap().to_path_buf())
            .collect();
        assert_eq!(
            names,
            vec![PathBuf::from("b.yaml"), PathBuf::from("sub/a.yml")]
        );
    }
}
