//! A fast path for the YAML that manifests are made of: builds a `serde_json::Value` straight
//! from the events of granit-parser, the parser serde-saphyr itself runs on, without the serde
//! layer on top (about half of parse time on renderer output).
//!
//! It only ever answers for documents whose meaning is unambiguous, and returns `None` for
//! everything else, which is then parsed by serde-saphyr exactly as before:
//! - `%YAML` directives, tags, anchors, aliases, merge keys (`<<`), non-string or duplicate keys;
//! - nesting deeper than 48, more than 100,000 nodes, or 64 MiB of text (serde-saphyr's
//!   budget decides those);
//! - syntax errors (serde-saphyr reports them, with its messages and lines);
//! - any plain scalar that might resolve to something other than a string, except the
//!   unambiguous `true`, `false`, null spellings and plain decimal integers (a scalar with two
//!   or more dots, like a `3.3.6` version, is never a number, so it is a string).
//!
//! So a `Some` is always the value serde-saphyr would produce; `fast_path_agrees_with_serde_saphyr`
//! checks that over scalar spellings and real manifests.

use granit_parser::{Event, Options, Parser, ScalarStyle};
use serde_json::{Map, Value};

const MAX_DEPTH: usize = 48;
const MAX_NODES: usize = 100_000;

enum Frame {
    Map {
        map: Map<String, Value>,
        key: Option<String>,
    },
    Seq(Vec<Value>),
}

/// The value of one YAML document, or `None` when serde-saphyr must decide (see module doc).
pub fn parse(doc: &str) -> Option<Value> {
    // serde-saphyr's scalar-bytes budget; scalars are never longer than their source text.
    if doc.len() >= serde_saphyr::Budget::default().max_total_scalar_bytes {
        return None;
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut root = None;
    let mut nodes = 0usize;
    let mut documents = 0usize;
    let mut options = Options::default();
    options.set_emit_comments(false);
    for event in Parser::new_from_str_with_options(doc, options) {
        let (event, _) = event.ok()?;
        let value = match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => continue,
            // A `%YAML` directive may change how serde-saphyr resolves scalars.
            Event::DocumentStart(_, Some(_)) => return None,
            Event::DocumentStart(_, None) => {
                documents += 1;
                if documents > 1 {
                    return None;
                }
                continue;
            }
            Event::Scalar(text, style, anchor, tag) => {
                if anchor != 0 || tag.is_some() {
                    return None;
                }
                match style {
                    ScalarStyle::Plain => plain_scalar(&text)?,
                    _ => Value::String(text.into_owned()),
                }
            }
            Event::SequenceStart(_, anchor, tag) => {
                if anchor != 0 || tag.is_some() || stack.len() >= MAX_DEPTH {
                    return None;
                }
                stack.push(Frame::Seq(Vec::new()));
                continue;
            }
            Event::MappingStart(_, anchor, tag) => {
                if anchor != 0 || tag.is_some() || stack.len() >= MAX_DEPTH {
                    return None;
                }
                stack.push(Frame::Map {
                    map: Map::new(),
                    key: None,
                });
                continue;
            }
            Event::SequenceEnd => match stack.pop()? {
                Frame::Seq(items) => Value::Array(items),
                Frame::Map { .. } => return None,
            },
            Event::MappingEnd => match stack.pop()? {
                Frame::Map { map, key: None } => Value::Object(map),
                _ => return None,
            },
            // Aliases and anything else: serde-saphyr's resolution and budgets apply.
            _ => return None,
        };
        nodes += 1;
        if nodes > MAX_NODES {
            return None;
        }
        match stack.last_mut() {
            None => {
                if root.replace(value).is_some() {
                    return None;
                }
            }
            Some(Frame::Seq(items)) => items.push(value),
            Some(Frame::Map { map, key }) => match key.take() {
                None => match value {
                    Value::String(name) if name != "<<" => *key = Some(name),
                    _ => return None,
                },
                Some(name) => {
                    if map.insert(name, value).is_some() {
                        return None;
                    }
                }
            },
        }
    }
    if !stack.is_empty() {
        return None;
    }
    root
}

/// A plain (unquoted) scalar: `None` unless its meaning is certain.
fn plain_scalar(text: &str) -> Option<Value> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        "true" => return Some(Value::Bool(true)),
        "false" => return Some(Value::Bool(false)),
        _ => {}
    }
    let first = *text.as_bytes().first()?;
    if first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.') {
        if let Some(number) = decimal_integer(text) {
            return Some(number);
        }
        // Every number serde-saphyr resolves has at most one `.` (it parses floats with Rust's
        // `f64::from_str`), so a version like `3.3.6`, common in chart labels, is a string.
        if text.bytes().filter(|byte| *byte == b'.').count() >= 2 {
            return Some(Value::String(text.to_string()));
        }
        // Could be a float, a radix or underscored integer, a sexagesimal or `.inf`: those are
        // serde-saphyr's to resolve. A character no number has (`128Mi`, `10m`, `1.2.3-rc`)
        // makes it a string.
        if text.bytes().all(could_be_in_a_number) {
            return None;
        }
        return Some(Value::String(text.to_string()));
    }
    // YAML 1.1 booleans in any case, other null and non-finite spellings.
    const RESERVED: [&str; 12] = [
        "true", "false", "yes", "no", "y", "n", "on", "off", "null", "inf", "infinity", "nan",
    ];
    if text.len() <= 8 && RESERVED.iter().any(|word| text.eq_ignore_ascii_case(word)) {
        return None;
    }
    Some(Value::String(text.to_string()))
}

/// `0`, `[1-9][0-9]*` or `-[1-9][0-9]*` within 18 digits: the same number in every resolver.
fn decimal_integer(text: &str) -> Option<Value> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let bytes = digits.as_bytes();
    if bytes.is_empty() || bytes.len() > 18 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if bytes[0] == b'0' && (bytes.len() > 1 || negative) {
        return None;
    }
    let magnitude: i64 = digits.parse().ok()?;
    Some(if negative {
        Value::from(-magnitude)
    } else {
        Value::from(magnitude as u64)
    })
}

fn could_be_in_a_number(byte: u8) -> bool {
    byte.is_ascii_hexdigit()
        || matches!(
            byte,
            b'x' | b'X'
                | b'o'
                | b'O'
                | b'i'
                | b'I'
                | b'n'
                | b'N'
                | b'.'
                | b'_'
                | b'+'
                | b'-'
                | b':'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saphyr(doc: &str) -> Option<Value> {
        serde_saphyr::from_str_with_options(doc, crate::yaml::options()).ok()
    }

    /// Wherever the fast path answers, it answers what serde-saphyr does.
    fn assert_agrees(doc: &str) -> bool {
        match parse(doc) {
            Some(fast) => {
                assert_eq!(Some(&fast), saphyr(doc).as_ref(), "document:\n{doc}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn fast_path_agrees_with_serde_saphyr() {
        let scalars = [
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
            "False",
            "yes",
            "Yes",
            "no",
            "NO",
            "on",
            "On",
            "off",
            "y",
            "Y",
            "n",
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
            "3.3.6",
            "0.0.0",
            "1.2.3.4",
            "1..2",
            "..",
            "...",
            ".1.2",
            "1.2.",
            "-1.2.3",
            "+1.2.3",
            "1.2.3e5",
            "1e3.4.5",
            "1_0.2.3",
            "0x1.2.3",
            ".inf.0",
            "-.nan.1",
            "1.2.3:4",
            "1e3",
            "1E3",
            "1e+3",
            "1.5e-3",
            "-1.5",
            "0x1F",
            "0X1F",
            "0o17",
            "0O17",
            "0b101",
            "1_000",
            "1:30",
            "190:20:30",
            "123456789012345678",
            "1234567890123456789",
            "99999999999999999999",
            "-9223372036854775808",
            ".inf",
            "-.inf",
            "+.inf",
            ".Inf",
            ".INF",
            ".nan",
            ".NaN",
            "-.nan",
            "inf",
            "nan",
            "Infinity",
            "-inf",
            "1e999",
            "128Mi",
            "1Gi",
            "2Ki",
            "100m",
            "1n",
            "0.25",
            "1.2.3",
            "1.2.3-rc.1",
            "v1.2.3",
            "2001-12-14",
            "2001-12-14t21:59:43.10-05:00",
            "12:00",
            "nginx:1.25",
            "=",
            "<<",
            "-",
            "--",
            "-a",
            "+a",
            ".a",
            "a b",
            "hello world",
            "/healthz",
            "http://x:8080/y",
            "$(VAR)",
            "${VAR}",
            "a:b",
            "0xZZ",
            "1e",
            "e1",
            "abc",
            "ABC",
            "deg",
            "30deg",
            "1.0.0",
            "0.0.0.0",
            "10.0.0.1/8",
            "-1e3",
            "+.5",
            "0.",
            "00",
            "-00",
            "1__0",
            "0x_1",
            "TCP",
            "Always",
            "IfNotPresent",
        ];
        let mut answered = 0;
        for scalar in scalars {
            for doc in [
                format!("k: {scalar}\n"),
                format!("{scalar}: v\n"),
                format!("- {scalar}\n- x\n"),
                format!("a:\n  b: [{scalar}, 1]\n"),
            ] {
                answered += usize::from(assert_agrees(&doc));
            }
        }
        assert!(
            answered > 100,
            "the fast path answered only {answered} documents"
        );
        // Quoted and block scalars keep their text.
        for doc in [
            "k: \"true\"\n",
            "k: '010'\n",
            "k: |\n  line\n  next\n",
            "k: >-\n  folded\n  text\n",
            "k: |+\n  kept\n\n",
            "k: \"esc\\taped\\u00e9\"\n",
            "k: plain\n  continued\n",
            "{a: 1, b: [x, {c: d}]}\n",
            "# comment\nk: v # trailing\n",
        ] {
            assert!(assert_agrees(doc), "fast path declined:\n{doc}");
        }
        // Left to serde-saphyr.
        for doc in [
            "a: &x 1\nb: *x\n",
            "base: &b {x: 1}\nk:\n  <<: *b\n",
            "k: !!str 1\n",
            "k: 1\nk: 2\n",
            "? [a]\n: v\n",
            "k: [unclosed\n",
            "a: 1\n---\nb: 2\n",
            "%YAML 1.1\n---\nk: v\n",
        ] {
            assert!(parse(doc).is_none(), "fast path answered:\n{doc}");
        }
        let deep = format!("{}x{}", "[".repeat(60), "]".repeat(60));
        assert!(parse(&deep).is_none());
    }

    /// Every YAML document in the repository's examples and test data parses the same way.
    #[test]
    fn real_manifests_parse_the_same() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut answered = 0;
        for dir in ["deploy", "samples", "docs", "bench", "testenv"] {
            for entry in walkdir::WalkDir::new(root.join(dir))
                .into_iter()
                .filter_map(|e| e.ok())
                .filter(|e| !e.path().components().any(|c| c.as_os_str() == "target"))
            {
                let is_yaml = matches!(
                    entry.path().extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml")
                );
                let Ok(text) = std::fs::read_to_string(entry.path()) else {
                    continue;
                };
                if !is_yaml || text.contains("{{") {
                    continue;
                }
                for doc in text.split("\n---\n") {
                    answered += usize::from(assert_agrees(doc));
                }
            }
        }
        assert!(answered > 8, "only {answered} documents took the fast path");
    }
}
