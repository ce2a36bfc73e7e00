//! `images:` entries of kustomization.yaml (`name`, `newName`, `newTag`, `digest`): find an
//! entry by name and set its fields with byte-span edits (a missing field is inserted as one new
//! line under the entry, a field that must go is removed as one line), like
//! `kustomize edit set image` but keeping the rest of the file byte for byte.

use std::ops::Range;

use crate::yaml_scan::{self, LineInfo, ScalarStyle};

/// File names kustomize accepts.
pub const KUSTOMIZATION_FILES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub line: usize,
    pub value: Range<usize>,
    pub style: ScalarStyle,
    pub current: String,
    /// The whole line, for removal.
    pub full_span: Range<usize>,
}

/// One entry of the `images:` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub line: usize,
    pub name: String,
    pub new_name: Option<Field>,
    pub new_tag: Option<Field>,
    pub digest: Option<Field>,
    /// Column where the entry's keys start (for inserted lines).
    pub key_col: usize,
    /// Byte offset just after the entry's last line (insertion point).
    pub end: usize,
    /// Line terminator used by the file.
    pub newline: &'static str,
}

/// Find the entries of the top-level `images:` list. Flow-style entries (`- {name: x}`) are
/// reported as errors naming the line.
pub fn entries(text: &str) -> Result<Vec<Entry>, String> {
    let lines = yaml_scan::scan(text);
    let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let Some(start) = lines
        .iter()
        .position(|l| l.indent == 0 && l.dashes == 0 && l.key.as_deref() == Some("images"))
    else {
        return Ok(Vec::new());
    };
    let mut out: Vec<Entry> = Vec::new();
    let mut item_indent: Option<usize> = None;
    let mut current: Option<Entry> = None;
    for line in &lines[start + 1..] {
        if line.is_blank_or_comment {
            continue;
        }
        if line.dashes == 0 && line.indent == 0 {
            break; // next top-level key
        }
        let is_item = line.dashes > 0 && item_indent.is_none_or(|i| line.indent == i);
        if is_item {
            item_indent.get_or_insert(line.indent);
            if let Some(entry) = current.take() {
                out.push(entry);
            }
            if line.key.is_none() {
                return Err(format!(
                    "line {}: an `images:` entry in flow style or without keys; write it as \
                     `- name: <image>` with newName/newTag/digest on their own lines",
                    line.number
                ));
            }
            current = Some(Entry {
                line: line.number,
                name: String::new(),
                new_name: None,
                new_tag: None,
                digest: None,
                key_col: line.content_col,
                end: line.full_span.end,
                newline,
            });
        } else if item_indent.is_some_and(|i| line.indent <= i) {
            break;
        }
        if let Some(entry) = current.as_mut() {
            entry.end = line.full_span.end;
            record_field(text, line, entry);
        }
    }
    if let Some(entry) = current {
        out.push(entry);
    }
    Ok(out)
}

fn record_field(text: &str, line: &LineInfo, entry: &mut Entry) {
    let (Some(key), Some(value)) = (&line.key, &line.value) else {
        return;
    };
    let field = Field {
        line: line.number,
        value: value.clone(),
        style: line.style,
        current: yaml_scan::decode_scalar(&text[value.clone()], line.style),
        full_span: line.full_span.clone(),
    };
    match key.as_str() {
        "name" => entry.name = field.current,
        "newName" => entry.new_name = Some(field),
        "newTag" => entry.new_tag = Some(field),
        "digest" => entry.digest = Some(field),
        _ => {}
    }
}

/// What to set on an entry. `None` leaves a field alone; `Some(None)` removes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetImage {
    pub new_name: Option<Option<String>>,
    pub new_tag: Option<Option<String>>,
    pub digest: Option<Option<String>>,
}

/// A described change, for reports and commit messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryChange {
    pub line: usize,
    pub field: &'static str,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// Edits that set `update` on `entry`, with their descriptions. Unchanged fields give no edit.
pub fn plan_entry(
    entry: &Entry,
    update: &SetImage,
) -> (Vec<(Range<usize>, String)>, Vec<EntryChange>) {
    let mut edits = Vec::new();
    let mut changes = Vec::new();
    let fields = [
        ("newName", &entry.new_name, &update.new_name),
        ("newTag", &entry.new_tag, &update.new_tag),
        ("digest", &entry.digest, &update.digest),
    ];
    let mut inserted = String::new();
    for (key, existing, wanted) in fields {
        let Some(wanted) = wanted else { continue };
        match (existing, wanted) {
            (Some(f), Some(v)) if &f.current != v => {
                edits.push((f.value.clone(), yaml_scan::encode_scalar(v, f.style)));
                changes.push(EntryChange {
                    line: f.line,
                    field: key,
                    from: Some(f.current.clone()),
                    to: Some(v.clone()),
                });
            }
            (Some(f), None) => {
                edits.push((f.full_span.clone(), String::new()));
                changes.push(EntryChange {
                    line: f.line,
                    field: key,
                    from: Some(f.current.clone()),
                    to: None,
                });
            }
            (None, Some(v)) => {
                inserted.push_str(&format!(
                    "{}{key}: {}{}",
                    " ".repeat(entry.key_col),
                    yaml_scan::encode_scalar(v, ScalarStyle::Plain),
                    entry.newline
                ));
                changes.push(EntryChange {
                    line: entry.line,
                    field: key,
                    from: None,
                    to: Some(v.clone()),
                });
            }
            _ => {}
        }
    }
    if !inserted.is_empty() {
        edits.push((entry.end..entry.end, inserted));
    }
    (edits, changes)
}

/// Set the entry named `name` in a kustomization. Returns the new text and the changes, or
/// `Ok(None)` when the file has no entry of that name.
pub fn set_image(
    text: &str,
    name: &str,
    update: &SetImage,
) -> Result<Option<(String, Vec<EntryChange>)>, String> {
    let entries = entries(text)?;
    let mut edits = Vec::new();
    let mut changes = Vec::new();
    let mut found = false;
    for entry in entries.iter().filter(|e| e.name == name) {
        found = true;
        let (e, c) = plan_entry(entry, update);
        edits.extend(e);
        changes.extend(c);
    }
    if !found {
        return Ok(None);
    }
    // A file without a final newline: an insertion after the last line needs one first.
    let mut text_owned;
    let mut base = text;
    if !text.ends_with('\n')
        && edits
            .iter()
            .any(|(span, _)| span.start == text.len() && span.is_empty())
    {
        text_owned = text.to_string();
        text_owned.push('\n');
        for (span, _) in edits.iter_mut() {
            if span.start == text.len() {
                *span = text_owned.len()..text_owned.len();
            }
        }
        base = &text_owned;
        let out = yaml_scan::apply_edits(base, &mut edits);
        return Ok(Some((out, changes)));
    }
    let out = yaml_scan::apply_edits(base, &mut edits);
    Ok(Some((out, changes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - deploy.yaml\nimages:\n  # the app\n  - name: app\n    newName: reg.example/app   # moved registry\n    newTag: \"1.0.0\"\n  - name: db\n    digest: sha256:aaa\nnamePrefix: x-\n";

    #[test]
    fn finds_entries() {
        let e = entries(K).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].name, "app");
        assert_eq!(e[0].new_tag.as_ref().unwrap().current, "1.0.0");
        assert_eq!(e[1].digest.as_ref().unwrap().line, 11);
        assert_eq!(e[0].key_col, 4);
    }

    #[test]
    fn sets_tag_keeping_everything_else() {
        let update = SetImage {
            new_tag: Some(Some("1.1.0".into())),
            digest: Some(None),
            ..Default::default()
        };
        let (out, changes) = set_image(K, "app", &update).unwrap().unwrap();
        assert_eq!(out, K.replace("\"1.0.0\"", "\"1.1.0\""));
        assert_eq!(changes.len(), 1);
    }

    #[test]
    fn inserts_and_removes_lines() {
        let update = SetImage {
            new_name: Some(Some("reg.example/db".into())),
            new_tag: Some(Some("16.1".into())),
            digest: Some(None),
        };
        let (out, changes) = set_image(K, "db", &update).unwrap().unwrap();
        assert_eq!(
            out,
            K.replace(
                "    digest: sha256:aaa\n",
                "    newName: reg.example/db\n    newTag: \"16.1\"\n"
            )
        );
        assert_eq!(changes.len(), 3);
        assert!(set_image(K, "nope", &update).unwrap().is_none());
    }

    #[test]
    fn flow_entries_are_refused_with_line() {
        let text = "images:\n- {name: app, newTag: x}\n";
        let err = entries(text).unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn dash_at_key_indent_and_no_final_newline() {
        let text = "images:\n- name: app\n  newTag: v1";
        let update = SetImage {
            new_tag: Some(Some("v2".into())),
            digest: Some(Some("sha256:b".into())),
            ..Default::default()
        };
        let (out, _) = set_image(text, "app", &update).unwrap().unwrap();
        assert_eq!(
            out,
            "images:\n- name: app\n  newTag: v2\n  digest: sha256:b\n"
        );
    }
}
