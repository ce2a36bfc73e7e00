//! The multi-document YAML (and JSON) reader every renderer's output and every plain manifest
//! file goes through: splits a stream on `---` lines (so each document's starting line is
//! known), parses documents on several threads when the stream is large ([`parallel`]), takes
//! the fast path ([`fast`]) where its answer is certain, expands `kind: List` like kubectl, and
//! checks each object has what ferry applies by (apiVersion, kind, metadata.name). Also the
//! serde-saphyr [`options`] (alias-bomb budgets) every other YAML read in the engine uses.
//!
//! Not a renderer: the plain-directory renderer (`render::plain`), kustomize and helm call it.

pub mod fast;
pub mod parallel;

use std::path::Path;

use kube::api::DynamicObject;
use serde_json::Value;

use crate::{Error, Manifest, Origin, Result};

const MIB: usize = 1024 * 1024;

/// Parser options for every YAML document ferry reads: serde-saphyr's budget with tighter alias
/// limits, so a "billion laughs" document fails fast instead of exhausting memory.
pub fn options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    let mut budget = serde_saphyr::Budget::default();
    budget.max_aliases = 10_000;
    budget.max_recorded_anchor_events = 200_000;
    budget.max_recorded_anchor_bytes = 16 * MIB;
    budget.max_documents = 100_000;
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = 200_000;
    options
}

/// Split a YAML stream into documents: `(first line (1-based), text)`, borrowing from `text`.
/// Done by hand (on `---` lines at column 0) so each document's starting line is known for
/// error messages.
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start_line = 1;
    let mut start_byte = 0;
    let mut offset = 0;
    for (index, raw) in text.split_inclusive('\n').enumerate() {
        let line = raw.trim_end_matches(['\n', '\r']);
        let line_start = offset;
        offset += raw.len();
        if !is_document_marker(line) {
            continue;
        }
        docs.push((start_line, &text[start_byte..line_start]));
        start_line = index + 2;
        start_byte = offset;
        // `--- {inline: doc}` carries content on the marker line.
        if let Some(rest) = line.strip_prefix("---")
            && !rest.trim().is_empty()
        {
            start_line = index + 1;
            start_byte = line_start + 3;
        }
    }
    docs.push((start_line, &text[start_byte..]));
    docs
}

/// A line that ends one document and starts the next, wherever it appears: YAML forbids these
/// at column 0 inside content, so splitting on them needs no parsing.
fn is_document_marker(line: &str) -> bool {
    line == "---"
        || line.starts_with("--- ")
        || line.starts_with("---\t")
        || line == "..."
        || line.starts_with("... ")
}

/// Byte offset of the last document marker line in `text`, if any.
fn last_marker_start(text: &str) -> Option<usize> {
    let mut offset = 0;
    let mut last = None;
    for raw in text.split_inclusive('\n') {
        if raw.ends_with('\n') && is_document_marker(raw.trim_end_matches(['\n', '\r'])) {
            last = Some(offset);
        }
        offset += raw.len();
    }
    last
}

/// Parses a renderer's output while the renderer is still running, into a [`ParsedAhead`].
///
/// Documents before the last marker line are final. The document after it is parsed too when
/// the output so far ends at a line end (it usually is the last one, and the renderer is only
/// exiting); if more follows, its text changes and that value is simply never taken.
#[derive(Debug, Default)]
pub struct StreamParse {
    ahead: ParsedAhead,
    /// Where the first document not yet known to be final starts.
    settled: usize,
}

impl StreamParse {
    /// Look at the whole output so far (a prefix of what the next call sees).
    pub fn observe(&mut self, output: &[u8]) {
        let text = match std::str::from_utf8(output) {
            Ok(text) => text,
            // A chunk may end inside a character; what precedes it is what counts now.
            Err(err) => std::str::from_utf8(&output[..err.valid_up_to()]).unwrap_or_default(),
        };
        let Some(pending) = text.get(self.settled..) else {
            return;
        };
        if let Some(marker) = last_marker_start(pending) {
            self.ahead.add_stream(&pending[..marker]);
            self.settled += marker;
        }
        if text.ends_with('\n') {
            self.ahead.add_stream(&text[self.settled..]);
        }
    }

    /// Documents parsed ahead elsewhere (e.g. a chart's CRD files), kept alongside.
    pub fn absorb(&mut self, other: ParsedAhead) {
        self.ahead.absorb(other);
    }

    pub fn into_parsed(self) -> ParsedAhead {
        self.ahead
    }
}

/// Streams at least this large are parsed on several threads (documents are independent).
/// Charts with CRDs produce megabytes of YAML, and parsing is most of ferry's own render time.
const PARALLEL_PARSE_BYTES: usize = 256 * 1024;

/// Documents parsed ahead of time, keyed by their text, for a stream that will contain them
/// verbatim: the CRD files a chart ships are parsed while `helm template` runs, then taken from
/// here instead of being parsed again from helm's output.
///
/// Only successful parses are kept, made by the same parser with the same options as
/// [`parse_bytes`], and a document is matched only by its exact text (after leading comment and
/// blank lines, which carry no content), so a hit yields the very value parsing would. Anything
/// else, including a document whose text differs by a single byte, is simply parsed.
#[derive(Debug, Default)]
pub struct ParsedAhead {
    // Keys are whole documents (hundreds of KB for a chart's CRDs); foldhash hashes those
    // several times faster than the default SipHash, and is still seeded per process.
    values: std::collections::HashMap<String, Value, foldhash::fast::RandomState>,
    bytes: usize,
}

impl ParsedAhead {
    /// Parse every document of `text` (a file as a renderer will print it) and keep the values.
    /// Large streams are parsed on several threads, as in [`parse_bytes_with`].
    pub fn add_stream(&mut self, text: &str) {
        let mut todo = Vec::new();
        let mut todo_bytes = 0;
        for (_, doc) in split_documents(text) {
            let key = content_start(doc);
            if !key.is_empty() && !self.values.contains_key(key) {
                todo_bytes += key.len();
                todo.push(key);
            }
        }
        let parts = parallel::map_parts(todo, todo_bytes >= PARALLEL_PARSE_BYTES, |part| {
            part.into_iter()
                .map(|key| (key, parse_document(key).ok()))
                .collect::<Vec<_>>()
        });
        // A panicked worker's documents are simply not parsed ahead.
        for (key, value) in parts.into_iter().flatten().flatten() {
            if let Some(value) = value
                && let std::collections::hash_map::Entry::Vacant(slot) =
                    self.values.entry(key.to_string())
            {
                self.bytes += key.len();
                slot.insert(value);
            }
        }
    }

    /// Keep `other`'s documents too (this one's win where both have the same text).
    pub fn absorb(&mut self, other: ParsedAhead) {
        for (key, value) in other.values {
            if let std::collections::hash_map::Entry::Vacant(slot) = self.values.entry(key) {
                self.bytes += slot.key().len();
                slot.insert(value);
            }
        }
    }

    /// Bytes of document text held.
    pub fn len_bytes(&self) -> usize {
        self.bytes
    }

    /// Documents parsed ahead and not (yet) taken.
    pub fn len_unused(&self) -> usize {
        self.values.len()
    }

    fn take(&mut self, doc: &str) -> Option<Value> {
        if self.values.is_empty() {
            return None;
        }
        let key = content_start(doc);
        if key.is_empty() {
            return None;
        }
        self.values.remove(key)
    }
}

/// `doc` from its first line that is neither blank nor a plain comment (helm prefixes each file
/// with a `# Source:` line); `""` if there is none. Strict on purpose: a blank line holds only
/// spaces and tabs, and a comment only printable characters that no YAML version reads as a
/// line break, so the lines skipped here cannot change what the rest parses to.
fn content_start(doc: &str) -> &str {
    let mut offset = 0;
    for line in doc.split_inclusive('\n') {
        let body = line.strip_suffix('\n').unwrap_or(line);
        let body = body.strip_suffix('\r').unwrap_or(body);
        let body = body.trim_start_matches([' ', '\t']);
        let skippable =
            body.is_empty() || (body.starts_with('#') && body.chars().all(is_plain_comment_char));
        if !skippable {
            return &doc[offset..];
        }
        offset += line.len();
    }
    ""
}

fn is_plain_comment_char(c: char) -> bool {
    matches!(c, '\t' | ' '..='~')
        || (c >= '\u{a0}'
            && !matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
            ))
}

/// True for a document with nothing but blank and comment lines (skipped, like kubectl).
fn is_empty_document(doc: &str) -> bool {
    doc.lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
}

/// Parse a multi-document YAML (or JSON) byte stream into manifests; `file` names it in errors.
pub fn parse_bytes(bytes: &[u8], file: &Path) -> Result<Vec<Manifest>> {
    parse_bytes_with(bytes, file, None)
}

/// [`parse_bytes`], taking documents found in `ahead` instead of parsing them again.
pub fn parse_bytes_with(
    bytes: &[u8],
    file: &Path,
    mut ahead: Option<&mut ParsedAhead>,
) -> Result<Vec<Manifest>> {
    let text = std::str::from_utf8(bytes).map_err(|err| Error::Source {
        path: file.to_path_buf(),
        message: format!("not UTF-8 text: {err}"),
    })?;
    let mut documents = Vec::new();
    let mut unparsed_bytes = 0;
    for (start_line, doc) in split_documents(text) {
        if is_empty_document(doc) {
            continue;
        }
        let origin = Origin {
            file: file.to_path_buf(),
            document: documents.len(),
            line: Some(start_line),
        };
        let parsed = ahead.as_deref_mut().and_then(|ahead| ahead.take(doc));
        if parsed.is_none() {
            unparsed_bytes += doc.len();
        }
        documents.push(Document {
            origin,
            text: doc,
            parsed,
        });
    }
    let parsed = parallel::map_parts(
        documents,
        unparsed_bytes >= PARALLEL_PARSE_BYTES,
        parse_documents,
    );
    // Chunks are in document order, so the first error is the first bad document's.
    let mut manifests = Vec::new();
    for part in parsed {
        let part = part.unwrap_or_else(|| {
            Err(Error::Source {
                path: file.to_path_buf(),
                message: "the YAML parser panicked".to_string(),
            })
        });
        manifests.extend(part?);
    }
    Ok(manifests)
}

/// One document of a stream: where it starts, its text, and its value if parsed ahead.
struct Document<'a> {
    origin: Origin,
    text: &'a str,
    parsed: Option<Value>,
}

/// The one YAML parse every document goes through (plain files, renderer output, ahead):
/// the fast path where it is certain, serde-saphyr for everything else and for every error.
fn parse_document(doc: &str) -> std::result::Result<Value, serde_saphyr::Error> {
    if let Some(value) = fast::parse(doc) {
        return Ok(value);
    }
    serde_saphyr::from_str_with_options(doc, options())
}

fn parse_documents(documents: Vec<Document<'_>>) -> Result<Vec<Manifest>> {
    let mut manifests = Vec::new();
    for Document {
        origin,
        text: doc,
        parsed,
    } in documents
    {
        if let Some(value) = parsed {
            push_value(value, &origin, &mut manifests)?;
            continue;
        }
        let start_line = origin.line.unwrap_or(1);
        let value: Value = parse_document(doc).map_err(|err| {
            let line = err
                .location()
                .map(|l| start_line + l.line().saturating_sub(1) as usize)
                .unwrap_or(start_line);
            Error::Source {
                path: origin.file.clone(),
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
    let object = into_dynamic_object(value)
        .map_err(|err| fail(format!("{kind} {name} is not a valid object: {err}")))?;
    Ok(Manifest {
        object,
        origin: origin.clone(),
    })
}

/// Split a checked object into a [`DynamicObject`] by hand: deserialising one from a `Value`
/// goes through serde's buffered `flatten` path, which was a large part of parsing big streams.
fn into_dynamic_object(value: Value) -> std::result::Result<DynamicObject, serde_json::Error> {
    let Value::Object(mut map) = value else {
        return serde_json::from_value(value);
    };
    let metadata = match map.shift_remove("metadata") {
        Some(metadata) => serde_json::from_value(metadata)?,
        None => Default::default(),
    };
    let text = |v: Option<Value>| match v {
        Some(Value::String(s)) => s,
        _ => String::new(),
    };
    let types = kube::api::TypeMeta {
        api_version: text(map.shift_remove("apiVersion")),
        kind: text(map.shift_remove("kind")),
    };
    Ok(DynamicObject {
        types: Some(types),
        metadata,
        data: Value::Object(map),
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

    /// A stream large enough to be parsed on several threads keeps document order, lines,
    /// and reports the first bad document.
    #[test]
    fn large_streams_parse_in_order_with_lines() {
        let doc = |i: usize| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n  blob: \"{}\"\n",
                "x".repeat(200)
            )
        };
        let count = 2000;
        let yaml: String = (0..count).map(|i| format!("---\n{}", doc(i))).collect();
        assert!(yaml.len() > PARALLEL_PARSE_BYTES);
        let manifests = parse_bytes(yaml.as_bytes(), Path::new("big.yaml")).unwrap();
        assert_eq!(manifests.len(), count);
        for (i, m) in manifests.iter().enumerate() {
            assert_eq!(m.name(), format!("cm-{i}"));
            assert_eq!(m.origin.document, i);
            assert_eq!(m.origin.line, Some(i * 7 + 2));
        }
        let mut broken: Vec<String> = (0..count).map(doc).collect();
        broken[1500] = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n".into();
        broken[1800] = "apiVersion: v1\nkind: ConfigMap\n".into();
        let yaml: String = broken.iter().map(|d| format!("---\n{d}")).collect();
        let err = parse_bytes(yaml.as_bytes(), Path::new("big.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("document 1501"), "{err}");
    }

    /// Documents parsed ahead are used only on an exact text match, and give what parsing
    /// the stream would: a renderer's `# Source:` line is ignored, a changed byte is not.
    #[test]
    fn parsed_ahead_documents_match_by_exact_text() {
        let crd = "# license header\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\ndata:\n  keep: |+\n    text\n";
        let mut ahead = ParsedAhead::default();
        ahead.add_stream(&format!("{crd}\n"));
        assert_eq!(ahead.values.len(), 2);
        // As helm prints it: a `# Source:` line first and a newline after the file; then a
        // template whose text is not among the parsed ones.
        let output = format!(
            "---\n# Source: chart/crds/a.yaml\n{crd}\n---\n# Source: chart/templates/c.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n"
        );
        let plain = parse_bytes(output.as_bytes(), Path::new("out")).unwrap();
        let reused =
            parse_bytes_with(output.as_bytes(), Path::new("out"), Some(&mut ahead)).unwrap();
        assert!(ahead.values.is_empty(), "both CRD documents were taken");
        assert_eq!(plain.len(), 3);
        for (a, b) in plain.iter().zip(&reused) {
            assert_eq!(a.object, b.object);
            assert_eq!(a.origin, b.origin);
        }
        assert_eq!(reused[1].object.data["data"]["keep"], "text\n\n");

        // Parsed without the newline helm adds, `|+` keeps one blank line less: no match, so
        // the output's own text is parsed.
        let mut ahead = ParsedAhead::default();
        ahead.add_stream(crd);
        let reused =
            parse_bytes_with(output.as_bytes(), Path::new("out"), Some(&mut ahead)).unwrap();
        assert_eq!(reused[1].object.data["data"]["keep"], "text\n\n");
        assert_eq!(
            ahead.values.len(),
            1,
            "the last document was parsed, not taken"
        );
        // Lines that only look like comments or blanks to a lenient reader (a bare `\r` line
        // break, NBSP, U+0085, control characters) are content: no key skips them.
        for prefix in [
            "# c\rfoo: bar\n",
            "\u{a0}# x\n",
            "\u{85}\n",
            "# a\u{1}b\n",
            "\u{b}# x\n",
        ] {
            let doc = format!("{prefix}apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: z\n");
            assert_eq!(content_start(&doc), doc, "{prefix:?}");
        }
        assert_eq!(content_start("  # ok\r\n\t\nk: v\n"), "k: v\n");
        // A document that fails to parse ahead is not kept; the stream reports it as usual.
        let mut ahead = ParsedAhead::default();
        ahead.add_stream("metadata: [unclosed\n");
        assert!(ahead.values.is_empty());
    }

    /// However a renderer's output is cut into reads, parsing it as it arrives gives exactly
    /// what parsing it whole gives; a speculatively parsed last document that then grew is
    /// parsed again, not taken.
    #[test]
    fn stream_parse_matches_a_whole_parse_for_every_cut() {
        let output = "---\n# Source: c/templates/a.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: \"é—x\"\n--- {apiVersion: v1, kind: ConfigMap, metadata: {name: inline}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\ndata:\n  keep: |+\n    text\n\n...\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: last\n";
        let whole = parse_bytes(output.as_bytes(), Path::new("out")).unwrap();
        assert_eq!(whole.len(), 4);
        let bytes = output.as_bytes();
        for first_cut in 1..bytes.len() {
            for second_cut in [first_cut, (first_cut + 7).min(bytes.len()), bytes.len()] {
                let mut stream = StreamParse::default();
                stream.observe(&bytes[..first_cut]);
                stream.observe(&bytes[..second_cut]);
                stream.observe(bytes);
                let mut ahead = stream.into_parsed();
                let streamed = parse_bytes_with(bytes, Path::new("out"), Some(&mut ahead)).unwrap();
                assert_eq!(streamed.len(), whole.len(), "cut at {first_cut}");
                for (a, b) in whole.iter().zip(&streamed) {
                    assert_eq!(a.object, b.object, "cut at {first_cut}/{second_cut}");
                    assert_eq!(a.origin, b.origin);
                }
            }
        }
        // Output that stops at a line end mid-document: the part seen is parsed, and when
        // the rest arrives the document is parsed again from its whole text.
        let cut = output.find("  name: last").unwrap();
        let mut stream = StreamParse::default();
        stream.observe(&bytes[..cut]);
        let mut ahead = stream.into_parsed();
        assert_eq!(
            ahead.len_unused(),
            4,
            "three whole documents and a partial last one"
        );
        let streamed = parse_bytes_with(bytes, Path::new("out"), Some(&mut ahead)).unwrap();
        assert_eq!(streamed[3].name(), "last");
        assert_eq!(ahead.len_unused(), 1, "the partial document was not taken");
    }

    #[test]
    fn inline_document_on_the_marker_line() {
        let yaml = "--- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n--- \napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\r\n";
        let manifests = parse_bytes(yaml.as_bytes(), Path::new("x.yaml")).unwrap();
        let names: Vec<&str> = manifests.iter().map(|m| m.name()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(manifests[0].origin.line, Some(1));
        assert_eq!(manifests[1].origin.line, Some(3));
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
}
