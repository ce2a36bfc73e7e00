//! Flux-compatible setter markers: `image: reg/app:1.0.0 # {"$imagepolicy": "ns:policy"}` and
//! the `:tag`, `:name`, `:digest` variants. Finds them in a YAML file and computes byte-span
//! edits of the marked scalars only, so every other byte of the file stays as it was.

use std::fmt;
use std::ops::Range;

use crate::reference::ImageRef;
use crate::yaml_scan::{self, ScalarStyle};

/// Which part of the policy's latest image a marker sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarkerField {
    /// `repo:tag` (or `repo:tag@digest` when the policy pins digests).
    Image,
    /// `tag` (or `tag@digest` when the policy pins digests, as Flux does).
    Tag,
    /// `repo`.
    Name,
    /// `sha256:…`; needs a policy that resolves digests.
    Digest,
}

/// The policy a marker names: `namespace:name`, or `name` meaning the namespace of the
/// automation (a ferry extension; Flux always writes the namespace).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct PolicyRef {
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}:{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// 1-based line number.
    pub line: usize,
    /// Byte span of the scalar's text (inside quotes, if quoted).
    pub span: Range<usize>,
    pub style: ScalarStyle,
    /// The current (decoded) value of the scalar.
    pub current: String,
    pub policy: PolicyRef,
    pub field: MarkerField,
}

/// A marker that could not be used; the rest of the file is still processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerIssue {
    pub line: usize,
    pub message: String,
}

/// Find every `$imagepolicy` marker. Lines that mention `$imagepolicy` in a comment but are not
/// a valid marker are reported as issues with their line number.
pub fn scan_markers(text: &str) -> (Vec<Marker>, Vec<MarkerIssue>) {
    let mut markers = Vec::new();
    let mut issues = Vec::new();
    for line in yaml_scan::scan(text) {
        if line.in_block_scalar {
            continue;
        }
        let Some(comment) = &line.comment else {
            continue;
        };
        let comment_text = text[comment.clone()].trim();
        if !comment_text.contains("$imagepolicy") {
            continue;
        }
        let issue = |message: String| MarkerIssue {
            line: line.number,
            message,
        };
        let setter = match parse_setter(comment_text) {
            Ok(s) => s,
            Err(message) => {
                issues.push(issue(message));
                continue;
            }
        };
        let Some(span) = line.value.clone() else {
            issues.push(issue(format!(
                "marker `{comment_text}` is not on the same line as a scalar value; put it after \
                 the value, e.g. `image: reg/app:1.0 # {{\"$imagepolicy\": \"ns:policy\"}}`"
            )));
            continue;
        };
        let raw = &text[span.clone()];
        if line.style == ScalarStyle::Plain && (raw.starts_with('[') || raw.starts_with('{')) {
            issues.push(issue(format!(
                "marker on a flow collection `{raw}`; markers go on a scalar value"
            )));
            continue;
        }
        let (policy, field) = setter;
        markers.push(Marker {
            line: line.number,
            span,
            style: line.style,
            current: yaml_scan::decode_scalar(raw, line.style),
            policy,
            field,
        });
    }
    (markers, issues)
}

/// Parse the comment text `{"$imagepolicy": "ns:policy[:tag|:name|:digest]"}`.
fn parse_setter(comment: &str) -> Result<(PolicyRef, MarkerField), String> {
    let hint = "expected {\"$imagepolicy\": \"<namespace>:<policy>\"} optionally ending in :tag, :name or :digest";
    let value: serde_json::Value = serde_json::from_str(comment)
        .map_err(|e| format!("marker `{comment}` is not valid JSON ({e}); {hint}"))?;
    let setter = value
        .get("$imagepolicy")
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("marker `{comment}` has no string \"$imagepolicy\"; {hint}"))?;
    let parts: Vec<&str> = setter.split(':').collect();
    let field_of = |s: &str| match s {
        "tag" => Some(MarkerField::Tag),
        "name" => Some(MarkerField::Name),
        "digest" => Some(MarkerField::Digest),
        _ => None,
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    let (namespace, name, field) = match parts.as_slice() {
        [name] => (None, *name, MarkerField::Image),
        // Two parts are always `namespace:policy`, as in Flux.
        [ns, name] => (Some(*ns), *name, MarkerField::Image),
        [ns, name, field] => (
            Some(*ns),
            *name,
            field_of(field).ok_or_else(|| {
                format!(
                    "marker `{comment}` has unknown field `{field}`; use :tag, :name or :digest"
                )
            })?,
        ),
        _ => return Err(format!("marker `{comment}`: too many `:` parts; {hint}")),
    };
    if !valid(name) || namespace.is_some_and(|ns| !valid(ns)) {
        return Err(format!(
            "marker `{comment}` names an invalid policy `{setter}` (names are lowercase DNS labels); {hint}"
        ));
    }
    Ok((
        PolicyRef {
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        },
        field,
    ))
}

/// The value a marker of `field` should hold for `image`, or why it cannot be set (a `:digest`
/// marker whose policy resolved no digest).
pub fn value_for(field: MarkerField, image: &ImageRef) -> Result<String, String> {
    let tag = image.tag.clone().unwrap_or_else(|| "latest".to_string());
    Ok(match field {
        MarkerField::Image => image.to_string(),
        MarkerField::Name => image.repository.clone(),
        MarkerField::Tag => match &image.digest {
            Some(d) => format!("{tag}@{d}"),
            None => tag,
        },
        MarkerField::Digest => image.digest.clone().ok_or_else(|| {
            "a :digest marker needs a policy with `digestReflection: Always` (no digest resolved)"
                .to_string()
        })?,
    })
}

/// A planned change of one scalar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub line: usize,
    pub span: Range<usize>,
    pub from: String,
    pub to: String,
    pub style: ScalarStyle,
}

impl Change {
    pub fn edit(&self) -> (Range<usize>, String) {
        (
            self.span.clone(),
            yaml_scan::encode_scalar(&self.to, self.style),
        )
    }
}

/// Plan the marker changes for one file: `resolve` returns the latest image of a policy (or
/// an error message, e.g. "policy not found"), keyed by the marker's policy.
pub fn plan_changes<F>(text: &str, mut resolve: F) -> (Vec<(Marker, Change)>, Vec<MarkerIssue>)
where
    F: FnMut(&PolicyRef) -> Option<Result<ImageRef, String>>,
{
    let (markers, mut issues) = scan_markers(text);
    let mut changes = Vec::new();
    for marker in markers {
        let image = match resolve(&marker.policy) {
            None => continue, // not a policy this automation handles
            Some(Err(message)) => {
                issues.push(MarkerIssue {
                    line: marker.line,
                    message,
                });
                continue;
            }
            Some(Ok(image)) => image,
        };
        match value_for(marker.field, &image) {
            Ok(to) if to != marker.current => {
                let change = Change {
                    line: marker.line,
                    span: marker.span.clone(),
                    from: marker.current.clone(),
                    to,
                    style: marker.style,
                };
                changes.push((marker, change));
            }
            Ok(_) => {}
            Err(message) => issues.push(MarkerIssue {
                line: marker.line,
                message: format!("policy {}: {message}", marker.policy),
            }),
        }
    }
    (changes, issues)
}

/// Apply planned changes to the text.
pub fn apply_changes(text: &str, changes: &[Change]) -> String {
    let mut edits: Vec<_> = changes.iter().map(Change::edit).collect();
    yaml_scan::apply_edits(text, &mut edits)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOY: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: app   # keep this comment
spec:
  template:
    spec:
      containers:
        - name: app
          image: "reg.example/app:1.0.0" # {"$imagepolicy": "flux-system:app"}
        - name: sidecar
          image: reg.example/side:2.0   # {"$imagepolicy": "flux-system:side"}
"#;

    const VALUES: &str = "image:\n  repository: reg.example/app # {\"$imagepolicy\": \"apps:app:name\"}\n  tag: 1.0.0 # {\"$imagepolicy\": \"apps:app:tag\"}\n  digest: 'sha256:old' # {\"$imagepolicy\": \"apps:app:digest\"}\nbroken: x # {\"$imagepolicy\": \"apps:app:sha\"}\nalso: y # {\"$imagepolicy\": apps}\n";

    fn img(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn rewrites_only_the_marked_scalars() {
        let (changes, issues) = plan_changes(DEPLOY, |p| match p.name.as_str() {
            "app" => Some(Ok(img("reg.example/app:1.1.0"))),
            _ => None,
        });
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(changes.len(), 1);
        let changes: Vec<Change> = changes.into_iter().map(|(_, c)| c).collect();
        let out = apply_changes(DEPLOY, &changes);
        assert_eq!(
            out,
            DEPLOY.replace("\"reg.example/app:1.0.0\"", "\"reg.example/app:1.1.0\"")
        );
    }

    #[test]
    fn no_change_when_up_to_date() {
        let (changes, issues) = plan_changes(DEPLOY, |_| Some(Ok(img("reg.example/side:2.0"))));
        // app gets side's image, side is already current: exactly one change, on line 10.
        assert!(issues.is_empty());
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].1.line, 10);
    }

    #[test]
    fn field_variants_and_malformed_markers() {
        let (changes, issues) = plan_changes(VALUES, |_| {
            Some(Ok(img("reg.example/app2:1.10@sha256:new")))
        });
        let by_line: Vec<(usize, &str)> = changes
            .iter()
            .map(|(_, c)| (c.line, c.to.as_str()))
            .collect();
        assert_eq!(
            by_line,
            vec![
                (2, "reg.example/app2"),
                (3, "1.10@sha256:new"),
                (4, "sha256:new")
            ]
        );
        assert_eq!(issues.len(), 2, "{issues:?}");
        assert_eq!(issues[0].line, 5);
        assert!(issues[0].message.contains("unknown field `sha`"));
        assert_eq!(issues[1].line, 6);
        assert!(issues[1].message.contains("not valid JSON"));
        let changes: Vec<Change> = changes.into_iter().map(|(_, c)| c).collect();
        let out = apply_changes(VALUES, &changes);
        assert!(out.contains("tag: 1.10@sha256:new # {"));
        assert!(out.contains("digest: 'sha256:new' # {"));
        assert!(out.contains("broken: x # {"));
    }

    #[test]
    fn tag_marker_that_looks_like_a_number_gets_quoted() {
        let text = "tag: 1.9 # {\"$imagepolicy\": \"a:b:tag\"}\n";
        let (changes, _) = plan_changes(text, |_| Some(Ok(img("r/a:1.10"))));
        let changes: Vec<Change> = changes.into_iter().map(|(_, c)| c).collect();
        assert_eq!(
            apply_changes(text, &changes),
            "tag: \"1.10\" # {\"$imagepolicy\": \"a:b:tag\"}\n"
        );
    }

    #[test]
    fn digest_marker_without_digest_is_an_issue() {
        let text = "d: x # {\"$imagepolicy\": \"a:b:digest\"}\nimage: r/a:1 # {\"$imagepolicy\": \"a:b\"}\n";
        let (changes, issues) = plan_changes(text, |_| Some(Ok(img("r/a:2"))));
        assert_eq!(changes.len(), 1);
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].line, 1);
        assert!(issues[0].message.contains("digestReflection"));
    }

    #[test]
    fn marker_without_value_and_list_items() {
        let text =
            "images:\n  # {\"$imagepolicy\": \"a:b\"}\n  - r/a:1 # {\"$imagepolicy\": \"a:b\"}\n";
        let (markers, issues) = scan_markers(text);
        assert_eq!(markers.len(), 1);
        assert_eq!(markers[0].line, 3);
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].line, 2);
    }
}
