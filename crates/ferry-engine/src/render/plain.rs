//! Plain YAML/JSON renderer: a file or a directory (recursive, sorted, hidden entries skipped) of
//! multi-document `.yaml`/`.yml`/`.json` files. `kind: List` documents are expanded like kubectl.
//! Every manifest records its file, document index and starting line.

use std::path::{Path, PathBuf};

use kube::api::DynamicObject;
use serde_json::Value;

use super::{RenderRequest, Renderer};
use crate::{Error, Manifest, Origin, Result};

/// The plain YAML renderer; detects everything, so it is tried last.
pub struct PlainYaml;

impl Renderer for PlainYaml {
    fn name(&self) -> &'static str {
        "plain"
    }

    fn detects(&self, _path: &Path) -> bool {
        true
    }

    fn render(&self, req: &RenderRequest, path: &Path) -> Result<Vec<Manifest>> {
        let root = req.root.canonicalize().unwrap_or_else(|_| req.root.clone());
        let mut manifests = Vec::new();
        for file in manifest_files(path)? {
            let bytes = std::fs::read(&file).map_err(|err| Error::Source {
                path: file.clone(),
                message: format!("cannot read: {err}"),
            })?;
            let rel = req.relative(&root, &file);
            manifests.extend(parse_bytes(&bytes, &rel)?);
        }
        Ok(manifests)
    }
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

/// Split a YAML stream into documents: `(first line (1-based), text)`. Done by hand (on `---`
/// lines at column 0) so each document's starting line is known for error messages.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (index, line) in text.lines().enumerate() {
        let is_marker = line == "---"
            || line.starts_with("--- ")
            || line.starts_with("---\t")
            || line == "..."
            || line.starts_with("... ");
        if is_marker {
            docs.push((start, std::mem::take(&mut current)));
            start = index + 2;
            // `--- {inline: doc}` carries content on the marker line.
            if let Some(rest) = line.strip_prefix("---")
                && !rest.trim().is_empty()
            {
                start = index + 1;
                current.push_str(rest);
                current.push('\n');
            }
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs.push((start, current));
    docs
}

/// Parse a multi-document YAML (or JSON) byte stream into manifests; `file` names it in errors.
pub fn parse_bytes(bytes: &[u8], file: &Path) -> Result<Vec<Manifest>> {
    let text = std::str::from_utf8(bytes).map_err(|err| Error::Source {
        path: file.to_path_buf(),
        message: format!("not UTF-8 text: {err}"),
    })?;
    let mut manifests = Vec::new();
    let mut document = 0;
    for (start_line, doc) in split_documents(text) {
        if doc
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            continue;
        }
        let origin = Origin {
            file: file.to_path_buf(),
            document,
            line: Some(start_line),
        };
        document += 1;
        let value: Value = serde_saphyr::from_str(&doc).map_err(|err| {
            let line = err
                .location()
                .map(|l| start_line + l.line().saturating_sub(1) as usize)
                .unwrap_or(start_line);
            Error::Source {
                path: file.to_path_buf(),
                message: format!(
                    "line {line}: invalid YAML in document {}: {}",
                    origin.document + 1,
                    first_line(&err.without_snippet().to_string())
                ),
            }
        })?;
        push_value(value, &origin, &mut manifests)?;
    }
    Ok(manifests)
}

fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or(message)
}

fn push_value(value: Value, origin: &Origin, out: &mut Vec<Manifest>) -> Result<()> {
    match value {
        Value::Null => Ok(()),
        Value::Object(ref map)
            if map.get("kind").and_then(Value::as_str) == Some("List")
                && map.get("items").is_some_and(Value::is_array) =>
        {
            if let Some(Value::Array(items)) = value.get("items") {
                for item in items {
                    out.push(to_manifest(item.clone(), origin)?);
                }
            }
            Ok(())
        }
        Value::Object(_) => {
            out.push(to_manifest(value, origin)?);
            Ok(())
        }
        other => Err(Error::Source {
            path: origin.file.clone(),
            message: format!(
                "{}: expected a Kubernetes object (a mapping with apiVersion and kind), found {}",
                where_(origin),
                kind_of(&other)
            ),
        }),
    }
}

fn where_(origin: &Origin) -> String {
    match origin.line {
        Some(line) => format!("line {line} (document {})", origin.document + 1),
        None => format!("document {}", origin.document + 1),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Validate the required fields and convert to a [`Manifest`].
pub fn to_manifest(value: Value, origin: &Origin) -> Result<Manifest> {
    let fail = |message: String| Error::Source {
        path: origin.file.clone(),
        message: format!("{}: {message}", where_(origin)),
    };
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version.is_empty() || kind.is_empty() {
        let missing: Vec<&str> = [("apiVersion", api_version), ("kind", kind)]
            .iter()
            .filter(|(_, v)| v.is_empty())
            .map(|(k, _)| *k)
            .collect();
        return Err(fail(format!(
            "the document has no {}; every object needs apiVersion and kind",
            missing.join(" and ")
        )));
    }
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() {
        return Err(fail(format!(
            "{kind} has no metadata.name; ferry applies by name (generateName is not supported)"
        )));
    }
    let (kind, name) = (kind.to_string(), name.to_string());
    let object: DynamicObject = serde_json::from_value(value)
        .map_err(|err| fail(format!("{kind} {name} is not a valid object: {err}")))?;
    Ok(Manifest {
        object,
        origin: origin.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_with_lines() {
        let yaml = "# leading comment\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: b}\n";
        let manifests = parse_bytes(yaml.as_bytes(), Path::new("x.yaml")).unwrap();
        assert_eq!(manifests.len(), 2);
        assert_eq!(manifests[0].name(), "a");
        assert_eq!(manifests[0].origin.line, Some(1));
        assert_eq!(manifests[1].kind(), "Secret");
        assert_eq!(manifests[1].origin.line, Some(8));
        assert_eq!(manifests[1].origin.document, 1);
    }

    #[test]
    fn malformed_yaml_names_file_and_line() {
        let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n";
        let err = parse_bytes(yaml.as_bytes(), Path::new("dir/bad.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("dir/bad.yaml: line "), "{err}");
        let line: usize = err["dir/bad.yaml: line ".len()..]
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((9..=10).contains(&line), "{err}");
    }

    #[test]
    fn missing_kind_is_named() {
        let yaml = "apiVersion: v1\nmetadata:\n  name: a\n";
        let err = parse_bytes(yaml.as_bytes(), Path::new("a.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("a.yaml") && err.contains("no kind"), "{err}");
        let yaml = "kind: ConfigMap\nmetadata:\n  name: a\n";
        let err = parse_bytes(yaml.as_bytes(), Path::new("a.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no apiVersion"), "{err}");
    }

    #[test]
    fn json_documents_parse() {
        let json =
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"j"},"data":{"k":"010"}}"#;
        let manifests = parse_bytes(json.as_bytes(), Path::new("a.json")).unwrap();
        assert_eq!(manifests[0].object.data["data"]["k"], "010");
    }

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
