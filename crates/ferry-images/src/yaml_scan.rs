//! A lossless, line-level view of YAML used for format-preserving edits: for each line, where
//! the key, the scalar value and the comment are (byte spans into the file), and which lines are
//! the content of block scalars (`|`, `>`) and must be left alone. Nothing is re-serialized:
//! edits replace exactly a value's bytes, so comments, quoting, key order and indentation stay.

use std::ops::Range;

/// How a scalar is written, so a replacement keeps the same style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarStyle {
    Plain,
    SingleQuoted,
    DoubleQuoted,
}

/// One line of a YAML file. Spans are absolute byte offsets in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineInfo {
    /// 1-based line number.
    pub number: usize,
    /// The whole line without its line terminator.
    pub span: Range<usize>,
    /// The line including its terminator (for deletions).
    pub full_span: Range<usize>,
    /// Column of the first non-space character.
    pub indent: usize,
    /// Column where the content after any `- ` sequence indicators starts.
    pub content_col: usize,
    /// Number of `- ` indicators at the start of the line.
    pub dashes: usize,
    pub key: Option<String>,
    /// Column of the key (if any).
    pub key_col: usize,
    /// Span of the scalar text (inside the quotes for quoted scalars).
    pub value: Option<Range<usize>>,
    pub style: ScalarStyle,
    /// Text of the comment after `#`, if any.
    pub comment: Option<Range<usize>>,
    /// True for blank lines, comment-only lines, and block-scalar content.
    pub is_blank_or_comment: bool,
    pub in_block_scalar: bool,
}

/// Split a file into analysed lines.
pub fn scan(text: &str) -> Vec<LineInfo> {
    let mut lines = Vec::new();
    let mut offset = 0usize;
    let mut block_parent_indent: Option<usize> = None;
    for (idx, raw) in text.split_inclusive('\n').enumerate() {
        let full_span = offset..offset + raw.len();
        let body = raw.strip_suffix('\n').unwrap_or(raw);
        let body = body.strip_suffix('\r').unwrap_or(body);
        let span = offset..offset + body.len();
        let indent = body.len() - body.trim_start_matches(' ').len();
        let trimmed = body.trim();
        let mut info = LineInfo {
            number: idx + 1,
            span: span.clone(),
            full_span,
            indent,
            content_col: indent,
            dashes: 0,
            key: None,
            key_col: indent,
            value: None,
            style: ScalarStyle::Plain,
            comment: None,
            is_blank_or_comment: trimmed.is_empty() || trimmed.starts_with('#'),
            in_block_scalar: false,
        };
        if let Some(parent) = block_parent_indent {
            if trimmed.is_empty() || indent > parent {
                info.in_block_scalar = true;
                info.is_blank_or_comment = true;
                lines.push(info);
                offset += raw.len();
                continue;
            }
            block_parent_indent = None;
        }
        if trimmed.starts_with('#') {
            let hash = offset + body.find('#').unwrap_or(0);
            info.comment = Some(hash + 1..span.end);
        } else if !trimmed.is_empty() {
            analyse(body, offset, &mut info);
            if let Some(value) = &info.value {
                let v = &text[value.clone()];
                if info.style == ScalarStyle::Plain && is_block_indicator(v) {
                    block_parent_indent = Some(info.indent);
                }
            }
        }
        lines.push(info);
        offset += raw.len();
    }
    lines
}

fn is_block_indicator(value: &str) -> bool {
    let mut chars = value.chars();
    matches!(chars.next(), Some('|' | '>'))
        && chars.all(|c| c.is_ascii_digit() || c == '+' || c == '-')
}

fn analyse(body: &str, offset: usize, info: &mut LineInfo) {
    let bytes = body.as_bytes();
    let mut pos = info.indent;
    // Sequence indicators: `- `, possibly nested (`- - x`).
    while pos < bytes.len()
        && bytes[pos] == b'-'
        && (pos + 1 == bytes.len() || bytes[pos + 1] == b' ')
    {
        info.dashes += 1;
        pos += 1;
        while pos < bytes.len() && bytes[pos] == b' ' {
            pos += 1;
        }
    }
    info.content_col = pos;
    if pos >= bytes.len() {
        return;
    }
    // Key, if this is a `key: value` line.
    let mut value_start = pos;
    if let Some((key, after)) = find_key(body, pos) {
        info.key_col = pos;
        info.key = Some(key);
        value_start = after;
        while value_start < bytes.len()
            && (bytes[value_start] == b' ' || bytes[value_start] == b'\t')
        {
            value_start += 1;
        }
    }
    if value_start >= bytes.len() {
        return;
    }
    if bytes[value_start] == b'#' {
        info.comment = Some(offset + value_start + 1..offset + body.len());
        return;
    }
    let (value, style, rest) = match bytes[value_start] {
        b'"' => match closing_double(body, value_start + 1) {
            Some(end) => (value_start + 1..end, ScalarStyle::DoubleQuoted, end + 1),
            None => return, // multi-line quoted scalar: not editable in place
        },
        b'\'' => match closing_single(body, value_start + 1) {
            Some(end) => (value_start + 1..end, ScalarStyle::SingleQuoted, end + 1),
            None => return,
        },
        _ => {
            let end = plain_comment_start(body, value_start).unwrap_or(body.len());
            let trimmed_end = value_start + body[value_start..end].trim_end().len();
            (value_start..trimmed_end, ScalarStyle::Plain, trimmed_end)
        }
    };
    info.value = Some(offset + value.start..offset + value.end);
    info.style = style;
    if let Some(hash) = body[rest..].find('#') {
        let at = rest + hash;
        if at == rest || bytes[at - 1] == b' ' || bytes[at - 1] == b'\t' {
            info.comment = Some(offset + at + 1..offset + body.len());
        }
    }
}

/// If the content at `pos` is `key:` (followed by space or end), return the key and the index
/// after the colon.
fn find_key(body: &str, pos: usize) -> Option<(String, usize)> {
    let bytes = body.as_bytes();
    match bytes[pos] {
        b'"' => {
            let end = closing_double(body, pos + 1)?;
            let after = end + 1;
            if bytes.get(after) == Some(&b':')
                && matches!(bytes.get(after + 1), None | Some(b' ' | b'\t'))
            {
                return Some((body[pos + 1..end].to_string(), after + 1));
            }
            None
        }
        b'\'' => {
            let end = closing_single(body, pos + 1)?;
            let after = end + 1;
            if bytes.get(after) == Some(&b':')
                && matches!(bytes.get(after + 1), None | Some(b' ' | b'\t'))
            {
                return Some((body[pos + 1..end].replace("''", "'"), after + 1));
            }
            None
        }
        b'[' | b'{' | b'#' | b'|' | b'>' | b'&' | b'*' | b'!' => None,
        _ => {
            let comment = plain_comment_start(body, pos).unwrap_or(body.len());
            let mut i = pos;
            while i < comment {
                if bytes[i] == b':'
                    && (i + 1 == body.len() || bytes[i + 1] == b' ' || bytes[i + 1] == b'\t')
                {
                    return Some((body[pos..i].trim_end().to_string(), i + 1));
                }
                i += 1;
            }
            None
        }
    }
}

/// A plain scalar ends at ` #` (or tab-#).
fn plain_comment_start(body: &str, from: usize) -> Option<usize> {
    let bytes = body.as_bytes();
    (from + 1..bytes.len())
        .find(|&i| bytes[i] == b'#' && (bytes[i - 1] == b' ' || bytes[i - 1] == b'\t'))
}

fn closing_double(body: &str, from: usize) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn closing_single(body: &str, from: usize) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        if bytes[i] == b'\'' {
            if bytes.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The value of a scalar as YAML reads it (quotes removed, simple escapes resolved).
pub fn decode_scalar(raw: &str, style: ScalarStyle) -> String {
    match style {
        ScalarStyle::Plain => raw.to_string(),
        ScalarStyle::SingleQuoted => raw.replace("''", "'"),
        ScalarStyle::DoubleQuoted => raw.replace("\\\"", "\"").replace("\\\\", "\\"),
    }
}

/// Encode `value` for a scalar of `style`. A plain scalar whose new value YAML would read as
/// something other than a string (`1.10` is a float, `on` a bool in YAML 1.1) is double-quoted.
pub fn encode_scalar(value: &str, style: ScalarStyle) -> String {
    match style {
        ScalarStyle::DoubleQuoted => value.replace('\\', "\\\\").replace('"', "\\\""),
        ScalarStyle::SingleQuoted => value.replace('\'', "''"),
        ScalarStyle::Plain if plain_needs_quotes(value) => {
            format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
        }
        ScalarStyle::Plain => value.to_string(),
    }
}

fn plain_needs_quotes(value: &str) -> bool {
    if value.is_empty() || value.contains(": ") || value.contains(" #") || value.ends_with(':') {
        return true;
    }
    let first = value.chars().next().unwrap_or(' ');
    if "-?:,[]{}#&*!|>'\"%@`".contains(first)
        && !(first == '-' && value.len() > 1 && !value[1..].starts_with(' '))
    {
        return true;
    }
    let lower = value.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "true"
            | "false"
            | "yes"
            | "no"
            | "on"
            | "off"
            | "y"
            | "n"
            | "null"
            | "~"
            | ".inf"
            | "-.inf"
            | ".nan"
    ) {
        return true;
    }
    // Numbers as a YAML 1.1 or 1.2 reader resolves them: ints in every radix and with
    // underscores, sexagesimals, floats with or without a dot (`1e-3` is a float: found by
    // fuzzing, docs/fuzzing.md), `.inf`/`.nan`.
    static NUMBER: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"^[-+]?(?:[0-9][0-9_]*|0b[01_]+|0o?[0-7_]+|0x[0-9a-fA-F_]+|[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?|(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.(?i:inf|nan))$",
        )
        .ok()
    });
    match NUMBER.as_ref() {
        Some(number) => number.is_match(value),
        // Cannot happen (a constant pattern); quoting is always safe.
        None => true,
    }
}

/// Apply non-overlapping (span, replacement) edits to `text`.
pub fn apply_edits(text: &str, edits: &mut [(Range<usize>, String)]) -> String {
    edits.sort_by_key(|(span, _)| (span.start, span.end));
    let mut out = String::with_capacity(text.len() + 64);
    let mut at = 0;
    for (span, replacement) in edits.iter() {
        if span.start < at {
            continue; // overlapping edit: the first one wins
        }
        out.push_str(&text[at..span.start]);
        out.push_str(replacement);
        at = span.end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> (LineInfo, String) {
        let info = scan(text).remove(0);
        let value = info
            .value
            .clone()
            .map(|v| text[v].to_string())
            .unwrap_or_default();
        (info, value)
    }

    #[test]
    fn key_value_comment() {
        let (l, v) = line("    image: reg/app:1.0 # {\"$imagepolicy\": \"a:b\"}\n");
        assert_eq!(l.key.as_deref(), Some("image"));
        assert_eq!(v, "reg/app:1.0");
        assert!(l.comment.is_some());
        let (l, v) = line("  - name: \"x # y\"  # c\n");
        assert_eq!(l.dashes, 1);
        assert_eq!(v, "x # y");
        assert_eq!(l.style, ScalarStyle::DoubleQuoted);
        let (l, v) = line("- 'it''s' #c");
        assert_eq!(l.key, None);
        assert_eq!(v, "it''s");
        assert_eq!(decode_scalar(&v, l.style), "it's");
        let (l, v) = line("url: http://x:80/a#frag");
        assert_eq!(v, "http://x:80/a#frag");
        assert!(l.comment.is_none());
    }

    #[test]
    fn block_scalars_are_skipped() {
        let text = "data: |\n  image: x # {\"$imagepolicy\": \"a:b\"}\nnext: y\n";
        let lines = scan(text);
        assert!(lines[1].in_block_scalar);
        assert!(!lines[2].in_block_scalar);
        assert_eq!(lines[2].key.as_deref(), Some("next"));
    }

    #[test]
    fn quoting_rules() {
        assert_eq!(encode_scalar("1.10", ScalarStyle::Plain), "\"1.10\"");
        assert_eq!(encode_scalar("on", ScalarStyle::Plain), "\"on\"");
        assert_eq!(encode_scalar("1.2.3", ScalarStyle::Plain), "1.2.3");
        assert_eq!(encode_scalar("v1.2", ScalarStyle::Plain), "v1.2");
        assert_eq!(
            encode_scalar("reg/app:1.0", ScalarStyle::Plain),
            "reg/app:1.0"
        );
        assert_eq!(encode_scalar("123", ScalarStyle::Plain), "\"123\"");
        assert_eq!(
            encode_scalar("main-123-abc", ScalarStyle::Plain),
            "main-123-abc"
        );
        assert_eq!(encode_scalar("a'b", ScalarStyle::SingleQuoted), "a''b");
        // Found by fuzz_markers: exponents with a sign, no-dot floats, sexagesimals.
        for number in [
            "1e-3", "1E+3", "1e3", "0:30", "1_000", "0x1F", "0o7", "0b1", ".5", "1.",
        ] {
            assert_eq!(
                encode_scalar(number, ScalarStyle::Plain),
                format!("\"{number}\""),
                "{number}"
            );
        }
        for text in ["1.2.3", "1.2.3-rc1", "v1e3", "1e-3-rc", "latest", "0xZZ"] {
            assert_eq!(encode_scalar(text, ScalarStyle::Plain), text);
        }
    }
}
