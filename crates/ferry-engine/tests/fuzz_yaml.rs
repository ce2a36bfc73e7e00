//! Differential fuzzing of the manifest YAML fast path (`yaml::fast`) against
//! serde-saphyr: for any input, the fast path either defers (`None`) or yields exactly what
//! serde-saphyr yields with ferry's options, and never panics. Inputs: manifest-like documents
//! built from a grammar with the scalar spellings YAML 1.1/1.2 resolvers disagree on, the same
//! documents with random byte edits, and random bytes.
//!
//! `cargo test` runs 256 cases per property; longer runs: see docs/fuzzing.md
//! (`PROPTEST_CASES=100000 cargo test -p ferry-engine --test fuzz_yaml`).

use ferry_engine::yaml;
use proptest::prelude::*;
use serde_json::Value;

fn saphyr(doc: &str) -> Option<Value> {
    serde_saphyr::from_str_with_options(doc, yaml::options()).ok()
}

/// The property: wherever the fast path answers, serde-saphyr answers the same.
fn agrees(doc: &str) -> Result<(), TestCaseError> {
    if let Some(fast) = yaml::fast::parse(doc) {
        let slow = saphyr(doc);
        prop_assert_eq!(
            Some(&fast),
            slow.as_ref(),
            "fast path and serde-saphyr disagree on:\n{}",
            doc
        );
    }
    Ok(())
}

/// Scalar spellings chosen for resolver disagreements: YAML 1.1 booleans, numbers in every
/// radix and notation, versions, quantities, nulls, timestamps, and text that needs quoting.
const TRICKY: &[&str] = &[
    "",
    "~",
    "null",
    "Null",
    "NULL",
    "nULL",
    "true",
    "True",
    "TRUE",
    "false",
    "FALSE",
    "yes",
    "Yes",
    "no",
    "NO",
    "on",
    "Off",
    "y",
    "n",
    "Y",
    "N",
    "0",
    "1",
    "-1",
    "-0",
    "+1",
    "01",
    "007",
    "08",
    "0.5",
    ".5",
    "5.",
    "-.5",
    "1e3",
    "1E3",
    "1e+3",
    "1.5e-3",
    "0x1F",
    "0X1f",
    "0o17",
    "0b101",
    "1_000",
    "12:30",
    "1:20:30",
    "190:20:30",
    ".inf",
    "-.inf",
    ".Inf",
    ".NaN",
    ".nan",
    "inf",
    "nan",
    "3.3.6",
    "0.0.0",
    "1.2.3-rc1",
    "128Mi",
    "10m",
    "0.5Gi",
    "2026-12-02",
    "2026-12-02T03:04:05Z",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "18446744073709551616",
    "123456789012345678",
    "1234567890123456789",
    "+0",
    "-",
    "+",
    ".",
    "..",
    "...",
    "_",
    "0x",
    "0o",
    "1__0",
    "1.",
    "1.0",
    "-1.0",
    "00",
    "0.",
    "e3",
    "1e",
    "0e0",
    "=",
    "<<",
    "!",
    "&a",
    "*a",
    "@x",
    "`x",
    "%x",
    "|",
    ">",
    "'",
    "\"",
    "#",
    "a#b",
    "a #b",
    "a: b",
    "a:b",
    "- a",
    "[a]",
    "{a: b}",
    "http://x:80/y",
    "ghcr.io/acme/web:1.2.3",
    "sha256:abcdef",
    "été",
    "日本",
    "\u{0}",
    "\t",
    " lead",
    "trail ",
    "a\nb",
    "a\\nb",
];

/// One scalar: a tricky spelling or random printable text.
fn scalar_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(TRICKY).prop_map(str::to_string),
        2 => "[a-zA-Z0-9 ._:/@+-]{0,12}",
        1 => any::<String>().prop_map(|s| s.chars().take(12).collect()),
        1 => (any::<i64>()).prop_map(|n| n.to_string()),
        1 => (any::<f64>()).prop_map(|f| f.to_string()),
    ]
}

#[derive(Debug, Clone)]
enum Node {
    /// Text and how it is written: 0 plain, 1 single-quoted, 2 double-quoted, 3 literal block.
    Scalar(String, u8),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = (scalar_text(), 0u8..4).prop_map(|(text, style)| Node::Scalar(text, style));
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Node::Seq),
            proptest::collection::vec((key_text(), inner), 0..6).prop_map(Node::Map),
        ]
    })
}

fn key_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z][a-zA-Z0-9.-]{0,10}",
        1 => proptest::sample::select(TRICKY).prop_map(str::to_string),
        // Duplicate-prone keys.
        1 => proptest::sample::select(&["a", "b", "name", "<<"][..]).prop_map(str::to_string),
    ]
}

fn quote_single(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn quote_double(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

fn write_scalar(text: &str, style: u8, indent: usize, out: &mut String) {
    match style {
        1 if !text.contains('\n') => out.push_str(&quote_single(text)),
        2 => out.push_str(&quote_double(text)),
        3 => {
            out.push_str("|\n");
            for line in text.lines() {
                out.push_str(&" ".repeat(indent + 2));
                out.push_str(line);
                out.push('\n');
            }
            // The caller adds a newline after every scalar.
            if out.ends_with('\n') {
                out.pop();
            }
        }
        // Plain, possibly invalid YAML: the fast path must defer or agree all the same.
        _ => out.push_str(text),
    }
}

fn write_node(node: &Node, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match node {
        Node::Scalar(text, style) => {
            write_scalar(text, *style, indent, out);
            out.push('\n');
        }
        Node::Seq(items) if items.is_empty() => out.push_str("[]\n"),
        Node::Map(entries) if entries.is_empty() => out.push_str("{}\n"),
        Node::Seq(items) => {
            out.push('\n');
            for item in items {
                out.push_str(&pad);
                out.push_str("- ");
                write_node(item, indent + 2, out);
            }
        }
        Node::Map(entries) => {
            out.push('\n');
            for (key, value) in entries {
                out.push_str(&pad);
                out.push_str(key);
                out.push_str(": ");
                write_node(value, indent + 2, out);
            }
        }
    }
}

/// A node in flow style (`{a: [1, "x"]}`), as JSON-ish manifests and helm output write them.
fn write_flow(node: &Node, out: &mut String) {
    match node {
        Node::Scalar(text, style) => match style {
            1 if !text.contains('\n') => out.push_str(&quote_single(text)),
            0 => out.push_str(text),
            _ => out.push_str(&quote_double(text)),
        },
        Node::Seq(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_flow(item, out);
            }
            out.push(']');
        }
        Node::Map(entries) => {
            out.push('{');
            for (i, (key, value)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(key);
                out.push_str(": ");
                write_flow(value, out);
            }
            out.push('}');
        }
    }
}

/// A manifest-shaped document whose top-level fields are the generated trees, each in block
/// or flow style, optionally with comments, a `---` start and a `...` end.
fn manifest() -> impl Strategy<Value = String> {
    (
        "[a-z][a-z0-9-]{0,12}",
        proptest::collection::vec((key_text(), node(), 0u8..4), 0..6),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(name, fields, start, end)| {
            let mut out = String::new();
            if start {
                out.push_str("---\n");
            }
            out.push_str(&format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"
            ));
            for (key, value, form) in &fields {
                out.push_str(key);
                out.push_str(": ");
                match form {
                    0 => {
                        write_flow(value, &mut out);
                        out.push('\n');
                    }
                    1 => {
                        write_flow(value, &mut out);
                        out.push_str("  # a comment: with [brackets]\n");
                    }
                    _ => write_node(value, 2, &mut out),
                }
            }
            if end {
                out.push_str("...\n");
            }
            out
        })
}

/// Random edits of a document: insert, delete or replace bytes (kept valid UTF-8).
fn mutated() -> impl Strategy<Value = String> {
    (
        manifest(),
        proptest::collection::vec(
            (
                any::<prop::sample::Index>(),
                0u8..3,
                proptest::sample::select(
                    &[
                        ":",
                        " ",
                        "\n",
                        "-",
                        "'",
                        "\"",
                        "#",
                        "&",
                        "*",
                        "!",
                        "[",
                        "{",
                        "}",
                        "]",
                        ",",
                        "|",
                        ">",
                        "\t",
                        "0",
                        ".",
                        "<<",
                        "---",
                        "%YAML 1.1\n",
                    ][..],
                ),
            ),
            1..4,
        ),
    )
        .prop_map(|(mut doc, edits)| {
            for (at, op, text) in edits {
                let boundaries: Vec<usize> = doc
                    .char_indices()
                    .map(|(i, _)| i)
                    .chain([doc.len()])
                    .collect();
                let i = boundaries[at.index(boundaries.len())];
                let next = doc[i..].chars().next().map_or(i, |c| i + c.len_utf8());
                match op {
                    0 => doc.insert_str(i, text),
                    1 => doc.replace_range(i..next, ""),
                    _ => doc.replace_range(i..next, text),
                }
            }
            doc
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn manifest_like_documents(doc in manifest()) {
        agrees(&doc)?;
    }

    #[test]
    fn mutated_documents(doc in mutated()) {
        agrees(&doc)?;
    }

    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        agrees(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn one_scalar_in_every_style(text in scalar_text(), style in 0u8..4) {
        let mut doc = String::from("key: ");
        write_scalar(&text, style, 0, &mut doc);
        doc.push('\n');
        agrees(&doc)?;
        // The same scalar as a list item and as a flow value.
        agrees(&format!("- {}\n", doc.trim_start_matches("key: ")))?;
        agrees(&format!("{{k: {}}}\n", quote_double(&text)))?;
    }
}

/// Regression cases found while writing the properties above (docs/fuzzing.md).
#[test]
fn known_cases() {
    for doc in [
        "a: 1\n",
        "a: -0\n",
        "a: 0x1F\n",
        "a: 1_000\n",
        "a: 12:30\n",
        "a: 9223372036854775808\n",
        "a: 1.\n",
        "a: .5\n",
        "a: +1\n",
        "<<: {a: 1}\n",
        "a: 1\na: 2\n",
    ] {
        agrees(doc).unwrap_or_else(|e| panic!("{e}"));
    }
}
