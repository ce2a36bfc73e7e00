//! File-tree image edits shared by `ferry set-image` (push mode) and the automation (pull mode):
//! walk the YAML files under a path, plan byte-span edits (markers, kustomization `images:`,
//! plain `image:` fields), check that every edited file still parses, and write.
//!
//! Symlinks are never followed, read or written through: a repository (or a tenant's
//! `spec.update.path`) could point one at another tenant's clone, the agent's cache or any file
//! the agent can write. The path to edit must be inside the root with no symlink on the way,
//! symlinks met while walking are skipped (and reported), and a changed file is replaced by
//! writing a new file next to it and renaming it over the old one, which replaces a link rather
//! than writing to its target.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::kustomize::{self, KUSTOMIZATION_FILES, SetImage};
use crate::markers::{self, MarkerField, PolicyRef};
use crate::reference::ImageRef;
use crate::yaml_scan;

#[derive(Debug, Error)]
pub enum TreeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} does not exist; give a file or directory inside the checkout")]
    Missing { path: PathBuf },
    #[error(
        "{path} is a symlink; image references are never edited through symlinks (they can point outside the repository); give the real path"
    )]
    Symlink { path: PathBuf },
    #[error("{path} is outside {root}; give a path inside the repository")]
    Outside { path: PathBuf, root: PathBuf },
}

/// Check that `path` is `root` or below it, with no `..` and no symlink between them, and
/// that it really resolves inside `root`.
pub fn check_inside(root: &Path, path: &Path) -> Result<(), TreeError> {
    let outside = || TreeError::Outside {
        path: path.to_path_buf(),
        root: root.to_path_buf(),
    };
    let rel = path.strip_prefix(root).map_err(|_| outside())?;
    let mut current = root.to_path_buf();
    for component in rel.components() {
        match component {
            std::path::Component::Normal(part) => current.push(part),
            std::path::Component::CurDir => continue,
            _ => return Err(outside()),
        }
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(TreeError::Symlink { path: current });
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TreeError::Missing {
                    path: path.to_path_buf(),
                });
            }
            Err(source) => {
                return Err(TreeError::Io {
                    path: current,
                    source,
                });
            }
        }
    }
    let io = |source| TreeError::Io {
        path: path.to_path_buf(),
        source,
    };
    // `ferry set-image app.yaml` has the root `` (the current directory).
    let dot = |p: &Path| {
        if p.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            p.to_path_buf()
        }
    };
    let real_root = std::fs::canonicalize(dot(root)).map_err(io)?;
    let real = std::fs::canonicalize(dot(path)).map_err(io)?;
    if !real.starts_with(&real_root) {
        return Err(outside());
    }
    Ok(())
}

/// Replace `file` with `text` without following a symlink: write a new sibling (`create_new`
/// refuses an existing name, link included) with the old file's permissions and rename it over
/// `file`.
fn replace_file(file: &Path, text: &str) -> Result<(), TreeError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| TreeError::Io {
        path: file.to_path_buf(),
        source,
    };
    let meta = std::fs::symlink_metadata(file).map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(TreeError::Symlink {
            path: file.to_path_buf(),
        });
    }
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = file.with_file_name(format!(".{name}.ferry-{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(meta.permissions().mode() & 0o7777)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, file));
    if let Err(source) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(source));
    }
    Ok(())
}

/// One changed value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ValueChange {
    /// Path relative to the walked root.
    pub file: PathBuf,
    pub line: usize,
    /// What was edited: `marker apps:app:tag`, `kustomization images[app].newTag`, `image`.
    pub what: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// The policy behind the change (automation only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyRef>,
}

/// Something that could not be done in one file; other files and values are still processed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileIssue {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for FileIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct TreeReport {
    pub changes: Vec<ValueChange>,
    pub issues: Vec<FileIssue>,
    pub files_changed: Vec<PathBuf>,
    /// Number of markers / kustomization entries / image fields that matched, changed or not.
    pub matched: usize,
}

/// What one file edit produced.
#[derive(Debug, Default)]
pub struct FileEdit {
    pub new_text: Option<String>,
    pub changes: Vec<ValueChange>,
    pub issues: Vec<FileIssue>,
    pub matched: usize,
}

/// YAML files under `path` (a file or a directory), sorted, skipping hidden directories and
/// symlinks.
pub fn yaml_files(path: &Path) -> Result<Vec<PathBuf>, TreeError> {
    walk_yaml(path).map(|(files, _)| files)
}

/// YAML files under `path`, and the symlinks skipped on the way.
fn walk_yaml(path: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), TreeError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(TreeError::Missing {
                path: path.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(TreeError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if meta.file_type().is_symlink() {
        return Err(TreeError::Symlink {
            path: path.to_path_buf(),
        });
    }
    if meta.is_file() {
        return Ok((vec![path.to_path_buf()], Vec::new()));
    }
    let mut files = Vec::new();
    let mut links = Vec::new();
    for entry in walkdir::WalkDir::new(path)
        .follow_links(false)
        .follow_root_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'))
    {
        let entry = entry.map_err(|e| TreeError::Io {
            path: e
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| path.to_path_buf()),
            source: e.into(),
        })?;
        let name = entry.file_name().to_string_lossy();
        let yaml = name.ends_with(".yaml") || name.ends_with(".yml") || name == "Kustomization";
        if entry.file_type().is_symlink() {
            // Worth a warning when it would have been edited: a YAML name or a directory.
            let dir = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir());
            if yaml || dir {
                links.push(entry.into_path());
            }
        } else if entry.file_type().is_file() && yaml {
            files.push(entry.into_path());
        }
    }
    Ok((files, links))
}

/// Run `edit` on every YAML file under `path`; write changed files unless `dry_run`. A file
/// whose edited text no longer parses as YAML is not written (reported as an issue).
pub fn edit_tree<F>(
    root: &Path,
    path: &Path,
    dry_run: bool,
    mut edit: F,
) -> Result<TreeReport, TreeError>
where
    F: FnMut(&Path, &str) -> FileEdit,
{
    let mut report = TreeReport::default();
    check_inside(root, path)?;
    let (files, links) = walk_yaml(path)?;
    for link in links {
        report.issues.push(FileIssue {
            file: link.strip_prefix(root).unwrap_or(&link).to_path_buf(),
            line: None,
            message: "symlink; skipped (image references are never edited through symlinks)".into(),
        });
    }
    for file in files {
        let rel = file.strip_prefix(root).unwrap_or(&file).to_path_buf();
        let bytes = std::fs::read(&file).map_err(|source| TreeError::Io {
            path: file.clone(),
            source,
        })?;
        let Ok(text) = String::from_utf8(bytes) else {
            report.issues.push(FileIssue {
                file: rel,
                line: None,
                message: "not UTF-8; skipped".into(),
            });
            continue;
        };
        let result = edit(&rel, &text);
        report.matched += result.matched;
        report.issues.extend(result.issues);
        let Some(new_text) = result.new_text.filter(|t| *t != text) else {
            continue;
        };
        if parses(&text) && !parses(&new_text) {
            report.issues.push(FileIssue {
                file: rel,
                line: None,
                message:
                    "the edit would make the file invalid YAML; left unchanged (please report this)"
                        .into(),
            });
            continue;
        }
        if !dry_run {
            replace_file(&file, &new_text)?;
        }
        report.changes.extend(result.changes);
        report.files_changed.push(rel);
    }
    Ok(report)
}

fn parses(text: &str) -> bool {
    serde_saphyr::from_str_multiple::<serde_json::Value, Vec<_>>(text).is_ok()
}

pub fn is_kustomization(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| KUSTOMIZATION_FILES.contains(&n))
}

/// The image a reference becomes when `update` is applied: the repository is replaced; the tag
/// and digest are replaced when `update` has them (a new tag drops an old digest).
pub fn merge_image(current: &ImageRef, update: &ImageRef) -> ImageRef {
    let (tag, digest) = match (&update.tag, &update.digest) {
        (None, None) => (current.tag.clone(), current.digest.clone()),
        (Some(tag), digest) => (Some(tag.clone()), digest.clone()),
        (None, Some(digest)) => (current.tag.clone(), Some(digest.clone())),
    };
    ImageRef {
        repository: update.repository.clone(),
        tag,
        digest,
    }
}

/// `ferry set-image NAME=IMAGE`: the per-file edit. NAME matches
/// - a marker whose policy is `NAME` or `ns:NAME`, or whose current image/name has repository NAME;
/// - a kustomization `images:` entry with `name: NAME`;
/// - an unmarked `image:` field whose repository is NAME.
pub fn set_image_edit(name: &str, image: &ImageRef, file: &Path, text: &str) -> FileEdit {
    let mut out = FileEdit::default();
    let mut edits = Vec::new();
    let issue = |line: Option<usize>, message: String| FileIssue {
        file: file.to_path_buf(),
        line,
        message,
    };
    let (found, marker_issues) = markers::scan_markers(text);
    let marker_lines: Vec<usize> = found.iter().map(|m| m.line).collect();
    for marker in found {
        let current_repo = ImageRef::parse(&marker.current).ok().map(|r| r.repository);
        let by_policy = marker.policy.name == name || marker.policy.to_string() == name;
        let by_repo = matches!(marker.field, MarkerField::Image | MarkerField::Name)
            && (current_repo.as_deref() == Some(name) || marker.current == name);
        if !by_policy && !by_repo {
            continue;
        }
        out.matched += 1;
        let to = match marker.field {
            MarkerField::Image => match ImageRef::parse(&marker.current) {
                Ok(current) => Some(merge_image(&current, image).to_string()),
                Err(_) => Some(image.to_string()),
            },
            MarkerField::Name => Some(image.repository.clone()),
            MarkerField::Tag => image.tag.as_ref().map(|t| match &image.digest {
                Some(d) => format!("{t}@{d}"),
                None => t.clone(),
            }),
            MarkerField::Digest => image.digest.clone(),
        };
        if let Some(to) = to.filter(|to| *to != marker.current) {
            edits.push((
                marker.span.clone(),
                yaml_scan::encode_scalar(&to, marker.style),
            ));
            out.changes.push(ValueChange {
                file: file.to_path_buf(),
                line: marker.line,
                what: format!("marker {}", marker_label(&marker.policy, marker.field)),
                from: Some(marker.current),
                to: Some(to),
                policy: None,
            });
        }
    }
    out.issues.extend(
        marker_issues
            .into_iter()
            .map(|i| issue(Some(i.line), i.message)),
    );
    // Unmarked `image:` fields.
    for line in yaml_scan::scan(text) {
        if line.in_block_scalar
            || line.key.as_deref() != Some("image")
            || marker_lines.contains(&line.number)
        {
            continue;
        }
        let Some(span) = line.value.clone() else {
            continue;
        };
        let current = yaml_scan::decode_scalar(&text[span.clone()], line.style);
        let Ok(current_ref) = ImageRef::parse(&current) else {
            continue;
        };
        if current_ref.repository != name {
            continue;
        }
        out.matched += 1;
        let to = merge_image(&current_ref, image).to_string();
        if to != current {
            edits.push((span, yaml_scan::encode_scalar(&to, line.style)));
            out.changes.push(ValueChange {
                file: file.to_path_buf(),
                line: line.number,
                what: "image".into(),
                from: Some(current),
                to: Some(to),
                policy: None,
            });
        }
    }
    if !edits.is_empty() {
        out.new_text = Some(yaml_scan::apply_edits(text, &mut edits));
    }
    // Kustomization entries (applied on top of the marker edits; their lines do not overlap
    // because kustomization entries carrying markers were handled above and match by name only).
    if is_kustomization(file) {
        let base = out.new_text.clone().unwrap_or_else(|| text.to_string());
        let update = kustomize_update(name, image);
        match kustomize::set_image(&base, name, &update) {
            Ok(Some((new_text, changes))) => {
                out.matched += 1;
                for c in changes {
                    out.changes.push(ValueChange {
                        file: file.to_path_buf(),
                        line: c.line,
                        what: format!("kustomization images[{name}].{}", c.field),
                        from: c.from,
                        to: c.to,
                        policy: None,
                    });
                }
                if new_text != base {
                    out.new_text = Some(new_text);
                }
            }
            Ok(None) => {}
            Err(message) => out.issues.push(issue(None, message)),
        }
    }
    out
}

/// How `NAME=IMAGE` maps to a kustomization entry (like `kustomize edit set image`): newName
/// when the repository differs from NAME; a tag alone drops a digest and a digest alone drops
/// the tag, so the entry never pins a stale half.
pub fn kustomize_update(name: &str, image: &ImageRef) -> SetImage {
    SetImage {
        new_name: if image.repository != name {
            Some(Some(image.repository.clone()))
        } else {
            Some(None)
        },
        new_tag: match (&image.tag, &image.digest) {
            (Some(t), _) => Some(Some(t.clone())),
            (None, Some(_)) => Some(None),
            (None, None) => None,
        },
        digest: match (&image.tag, &image.digest) {
            (_, Some(d)) => Some(Some(d.clone())),
            (Some(_), None) => Some(None),
            (None, None) => None,
        },
    }
}

pub fn marker_label(policy: &PolicyRef, field: MarkerField) -> String {
    let suffix = match field {
        MarkerField::Image => "",
        MarkerField::Tag => ":tag",
        MarkerField::Name => ":name",
        MarkerField::Digest => ":digest",
    };
    format!("{policy}{suffix}")
}

/// Parse `NAME=IMAGE[:TAG][@DIGEST]` (`ferry set-image`): the engine's one image reference
/// grammar, shared with `ferry apply --set-image`.
pub use ferry_engine::render::image_ref::parse_assignment;

/// Group marker-bearing files by policy, for reports: policy → files.
pub fn policies_in(text: &str) -> BTreeMap<PolicyRef, usize> {
    let mut out = BTreeMap::new();
    for m in markers::scan_markers(text).0 {
        *out.entry(m.policy).or_insert(0) += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn set_image_edits_markers_fields_and_kustomization() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let deploy = "spec:\n  containers:\n    - image: reg.example/app:1.0.0 # {\"$imagepolicy\": \"apps:app\"}\n    - image: 'reg.example/app:0.9'\n    - image: other/thing:1\n";
        let values = "image:\n  repository: reg.example/app # {\"$imagepolicy\": \"apps:app:name\"}\n  tag: \"1.0.0\" # {\"$imagepolicy\": \"apps:app:tag\"}\n";
        let kust = "resources: [deploy.yaml]\nimages:\n  - name: reg.example/app\n    newTag: 1.0.0 # pinned by CI\n";
        std::fs::create_dir_all(root.join("chart")).unwrap();
        std::fs::write(root.join("deploy.yaml"), deploy).unwrap();
        std::fs::write(root.join("chart/values.yaml"), values).unwrap();
        std::fs::write(root.join("kustomization.yaml"), kust).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join(".git/x.yaml"), deploy).unwrap();

        let image = img("reg.example/app:1.2.3");
        let report = edit_tree(root, root, false, |f, t| {
            set_image_edit("reg.example/app", &image, f, t)
        })
        .unwrap();
        assert!(report.issues.is_empty(), "{:?}", report.issues);
        assert_eq!(report.files_changed.len(), 2);
        assert_eq!(
            std::fs::read_to_string(root.join("deploy.yaml")).unwrap(),
            deploy
                .replace("app:1.0.0 #", "app:1.2.3 #")
                .replace("'reg.example/app:0.9'", "'reg.example/app:1.2.3'")
        );
        // `:name` matched by repository; `:tag` lines need the policy name to match.
        assert_eq!(
            std::fs::read_to_string(root.join("chart/values.yaml")).unwrap(),
            values
        );
        assert_eq!(
            std::fs::read_to_string(root.join("kustomization.yaml")).unwrap(),
            kust.replace("newTag: 1.0.0 #", "newTag: 1.2.3 #")
        );
        assert_eq!(
            std::fs::read_to_string(root.join(".git/x.yaml")).unwrap(),
            deploy
        );

        let report = edit_tree(root, root, false, |f, t| {
            set_image_edit("app", &image, f, t)
        })
        .unwrap();
        assert_eq!(
            report.files_changed,
            vec![PathBuf::from("chart/values.yaml")]
        );
        assert!(
            std::fs::read_to_string(root.join("chart/values.yaml"))
                .unwrap()
                .contains("tag: \"1.2.3\" #")
        );
    }

    #[test]
    fn assignments() {
        let (n, i) = parse_assignment("app=reg/app@sha256:abc").unwrap();
        assert_eq!(n, "app");
        assert_eq!(i.digest.as_deref(), Some("sha256:abc"));
        assert!(
            parse_assignment("app")
                .unwrap_err()
                .to_string()
                .contains("NAME=IMAGE")
        );
        assert!(parse_assignment("=x").is_err());
    }

    #[test]
    fn merge_rules() {
        let cur = img("r/a:1@sha256:old");
        assert_eq!(merge_image(&cur, &img("r/a:2")).to_string(), "r/a:2");
        assert_eq!(
            merge_image(&cur, &img("r/a@sha256:new")).to_string(),
            "r/a:1@sha256:new"
        );
        assert_eq!(
            merge_image(&cur, &img("q/a")).to_string(),
            "q/a:1@sha256:old"
        );
    }

    #[test]
    fn symlinks_are_never_followed() {
        let sandbox = tempfile::tempdir().unwrap();
        let victim = sandbox.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        let marked = "image: r/app:1.0 # {\"$imagepolicy\": \"apps:app\"}\n";
        std::fs::write(victim.join("v.yaml"), marked).unwrap();
        let root = sandbox.path().join("repo");
        std::fs::create_dir_all(root.join("apps")).unwrap();
        std::os::unix::fs::symlink(&victim, root.join("apps/link")).unwrap();
        std::os::unix::fs::symlink(victim.join("v.yaml"), root.join("apps/file.yaml")).unwrap();
        std::fs::write(root.join("apps/real.yaml"), marked).unwrap();
        let image = img("r/app:2.0");
        let edit = |f: &Path, t: &str| set_image_edit("r/app", &image, f, t);
        // Walking the directory edits the real file and skips (and reports) both links.
        let report = edit_tree(&root, &root.join("apps"), false, edit).unwrap();
        assert_eq!(report.files_changed, vec![PathBuf::from("apps/real.yaml")]);
        assert_eq!(report.issues.len(), 2, "{:?}", report.issues);
        assert!(report.issues.iter().all(|i| i.message.contains("symlink")));
        // Naming a link (or a path through one) is refused.
        for path in ["apps/link", "apps/link/v.yaml", "apps/file.yaml"] {
            let err = edit_tree(&root, &root.join(path), false, edit).unwrap_err();
            assert!(matches!(err, TreeError::Symlink { .. }), "{path}: {err}");
        }
        let err = edit_tree(&root, &root.join("apps/../.."), false, edit).unwrap_err();
        assert!(matches!(err, TreeError::Outside { .. }), "{err}");
        assert_eq!(
            std::fs::read_to_string(victim.join("v.yaml")).unwrap(),
            marked
        );
        // The edited file kept being a regular file with its permissions.
        let meta = std::fs::symlink_metadata(root.join("apps/real.yaml")).unwrap();
        assert!(meta.file_type().is_file());
    }
}
