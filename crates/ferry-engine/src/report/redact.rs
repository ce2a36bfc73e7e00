//! Redaction of decrypted values: the one set of "values that came from decryption" (SOPS
//! files and values files, repository passwords) that every output path — diff, reports,
//! errors, logs, agent status and events — passes its text or objects through.
//!
//! What is registered, and how it is matched (docs/secrets.md, "Redaction", is the user-facing
//! version of this):
//! - every leaf SOPS decrypted, except booleans and boolean/null words as strings (one bit,
//!   and blanking every `true` would make output useless) and, in Kubernetes objects, `apiVersion`, `kind` and `metadata` (object
//!   identity is shown by every command and stored in inventories, events and status anyway);
//! - for each value also its base64 encoding (Secret `data`, helm `b64enc`), its base64 decoding
//!   when it is base64 of text, its JSON/Go-quoted form (API server errors quote values with
//!   escapes) and each line of a multi-line value (a PEM key split over diff lines);
//! - values of [`SHORT`] characters or more are matched anywhere (substring); shorter ones
//!   (`1`, `on`, `abc`) only as a whole word in text and a whole word or whole scalar in
//!   objects, so that a decrypted `1` does not blank every digit of a diff.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, LazyLock, OnceLock, RwLock};

use serde_json::Value;

/// What a redacted value is replaced with in text and objects.
pub const REDACTED: &str = "[REDACTED]";

/// Values with at least this many characters are redacted wherever they occur, even inside a
/// longer string; shorter values only as whole words or whole scalars.
pub const SHORT: usize = 4;

/// Lines of a multi-line value are registered on their own only from this length: short lines
/// of a JSON or PEM value (`}`, `],`) are structure, not secret.
const MIN_LINE: usize = 8;

/// Known decrypted values and the matchers built from them.
///
/// `Debug` prints only how many values it holds: the values themselves must never reach a log.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Matched as substrings, longest first (a secret containing another is replaced whole).
    /// A sorted set: a values file with thousands of leaves registers in O(n log n).
    long: Needles,
    /// Matched as whole words / whole scalars only.
    short: Needles,
    /// Built on first use after the last `add`.
    matchers: OnceLock<Matchers>,
}

/// Longest first, then lexicographic (for a stable regex).
type Needles = BTreeSet<(Reverse<usize>, String)>;

fn strings(needles: &Needles) -> impl Iterator<Item = &String> {
    needles.iter().map(|(_, s)| s)
}

#[derive(Clone)]
struct Matchers {
    /// Alternation of the long values; `None` when there are none or the regex would be too
    /// large (then a plain replace loop is used).
    long: Option<regex::Regex>,
    short: Option<regex::Regex>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("values", &(self.long.len() + self.short.len()))
            .finish()
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a secret value and the forms it is commonly shown in (see the module doc).
    pub fn add(&mut self, secret: &str) {
        use base64::Engine as _;
        let engine = &base64::engine::general_purpose::STANDARD;
        let trimmed = secret.trim();
        if trimmed.is_empty() || is_flag_word(trimmed) {
            return;
        }
        let mut forms: Vec<String> = vec![trimmed.to_string()];
        if trimmed != secret {
            forms.push(secret.to_string());
        }
        forms.push(engine.encode(secret));
        if trimmed != secret {
            forms.push(engine.encode(trimmed));
        }
        // Base64 of text (Secret `data`): its plaintext is the secret too.
        if trimmed.len() >= SHORT
            && let Ok(bytes) = engine.decode(trimmed)
            && let Ok(text) = String::from_utf8(bytes)
            && !text
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            forms.push(text.trim().to_string());
            forms.extend(lines_of(&text));
        }
        // Quoted with escapes, as API server and Go errors print values.
        if let Ok(quoted) = serde_json::to_string(secret) {
            let inner = &quoted[1..quoted.len() - 1];
            if inner != secret {
                forms.push(inner.to_string());
            }
        }
        forms.extend(lines_of(secret));
        for form in forms {
            self.push(form);
        }
    }

    fn push(&mut self, needle: String) {
        let length = needle.chars().count();
        if length == 0 {
            return;
        }
        let entry = (Reverse(needle.len()), needle);
        let added = if length >= SHORT {
            self.long.insert(entry)
        } else {
            // A short value of punctuation only (`-`, `{}`) cannot be told from structure.
            entry.1.chars().any(is_word_char) && self.short.insert(entry)
        };
        if added {
            self.matchers = OnceLock::new();
        }
    }

    /// Register every string and number leaf of a decrypted document (booleans and nulls are
    /// not secrets worth hiding).
    pub fn add_leaves(&mut self, value: &Value) {
        match value {
            Value::String(s) => self.add(s),
            Value::Number(n) => self.add(&n.to_string()),
            Value::Array(items) => items.iter().for_each(|v| self.add_leaves(v)),
            Value::Object(map) => map.values().for_each(|v| self.add_leaves(v)),
            _ => {}
        }
    }

    /// Register one decrypted leaf of a Kubernetes object at `keypath`: everything but the
    /// object's identity (`apiVersion`, `kind`, `metadata`), which ferry shows and stores in
    /// any case.
    pub fn add_object_leaf(&mut self, keypath: &[String], value: &Value) {
        if keypath
            .first()
            .is_some_and(|k| matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
        {
            return;
        }
        self.add_leaves(value);
    }

    /// Take over every value another redactor knows.
    pub fn extend(&mut self, other: &Redactor) {
        for needle in strings(&other.long).chain(strings(&other.short)) {
            self.push(needle.clone());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.long.is_empty() && self.short.is_empty()
    }

    /// The known secret strings (and their other forms), long ones first, each longest first.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        strings(&self.long)
            .chain(strings(&self.short))
            .map(String::as_str)
    }

    fn matchers(&self) -> &Matchers {
        self.matchers.get_or_init(|| {
            let build = |needles: &Needles| {
                if needles.is_empty() {
                    return None;
                }
                let pattern = strings(needles)
                    .map(|n| regex::escape(n))
                    .collect::<Vec<_>>()
                    .join("|");
                regex::RegexBuilder::new(&pattern)
                    .size_limit(64 << 20)
                    .build()
                    .ok()
            };
            Matchers {
                long: build(&self.long),
                short: build(&self.short),
            }
        })
    }

    /// Replace every known value in free text (messages, errors, renderer output).
    pub fn redact(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_string();
        }
        let out = self.redact_substrings(text);
        self.redact_words(&out)
    }

    /// Only the long values, wherever they occur: for text where short words are structure
    /// (the `@@ -1,3 +1,4 @@` lines of a unified diff).
    pub fn redact_substrings(&self, text: &str) -> String {
        if self.long.is_empty() {
            return text.to_string();
        }
        match &self.matchers().long {
            Some(re) => re.replace_all(text, REDACTED).into_owned(),
            None => {
                let mut out = text.to_string();
                for needle in strings(&self.long) {
                    if out.contains(needle.as_str()) {
                        out = out.replace(needle.as_str(), REDACTED);
                    }
                }
                out
            }
        }
    }

    /// Short values as whole words: not preceded or followed by a letter, digit or `_`.
    fn redact_words(&self, text: &str) -> String {
        if self.short.is_empty() {
            return text.to_string();
        }
        let whole = |start: usize, end: usize| {
            !text[..start].chars().next_back().is_some_and(is_word_char)
                && !text[end..].chars().next().is_some_and(is_word_char)
        };
        let mut spans: Vec<(usize, usize)> = Vec::new();
        match &self.matchers().short {
            Some(re) => {
                // Overlapping candidates matter (`ab` inside `aab ab`): search from every
                // position a rejected match started at.
                let mut at = 0;
                while let Some(m) = re.find_at(text, at) {
                    if whole(m.start(), m.end()) {
                        spans.push((m.start(), m.end()));
                        at = m.end();
                    } else {
                        at = m.start() + text[m.start()..].chars().next().map_or(1, char::len_utf8);
                    }
                    if at >= text.len() {
                        break;
                    }
                }
            }
            None => {
                for needle in strings(&self.short) {
                    for (start, _) in text.match_indices(needle.as_str()) {
                        if whole(start, start + needle.len()) {
                            spans.push((start, start + needle.len()));
                        }
                    }
                }
                spans.sort_unstable();
            }
        }
        if spans.is_empty() {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for (start, end) in spans {
            if start < last {
                continue;
            }
            out.push_str(&text[last..start]);
            out.push_str(REDACTED);
            last = end;
        }
        out.push_str(&text[last..]);
        out
    }

    /// True if `text` shows any known value.
    pub fn reveals(&self, text: &str) -> bool {
        !self.is_empty() && self.redact(text) != text
    }

    /// Redact an object in place: string leaves and map keys as text, numbers that equal a
    /// known value wholly (a decrypted `5432`) become the string `[REDACTED]`.
    pub fn redact_value(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => {
                let redacted = self.redact(s);
                if redacted != *s {
                    *s = redacted;
                }
            }
            Value::Number(n) => {
                let text = n.to_string();
                if self.redact(&text) != text {
                    *value = Value::String(REDACTED.to_string());
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_value(v)),
            Value::Object(map) => {
                let leaked = map.keys().any(|k| self.reveals(k));
                if leaked {
                    let old = std::mem::take(map);
                    for (key, mut child) in old {
                        self.redact_value(&mut child);
                        map.insert(self.redact(&key), child);
                    }
                } else {
                    map.values_mut().for_each(|v| self.redact_value(v));
                }
            }
            Value::Bool(_) | Value::Null => {}
        }
    }

    /// The same error with every known value taken out of its message. Errors that show no
    /// value come back unchanged (typed); the rest become the same variant with redacted text,
    /// or [`crate::Error::Other`] for errors that carry a foreign source.
    pub fn redact_error(&self, err: crate::Error) -> crate::Error {
        use crate::Error;
        if self.is_empty() {
            return err;
        }
        let r = |s: String| self.redact(&s);
        match err {
            Error::Source { path, message } => Error::Source {
                path,
                message: r(message),
            },
            Error::Render { path, message } => Error::Render {
                path,
                message: r(message),
            },
            Error::Decrypt { path, message } => Error::Decrypt {
                path,
                message: r(message),
            },
            Error::Object { object, message } => Error::Object {
                object,
                message: r(message),
            },
            Error::Cluster(message) => Error::Cluster(r(message)),
            Error::Config { message } => Error::Config {
                message: r(message),
            },
            Error::Unreachable { message } => Error::Unreachable {
                message: r(message),
            },
            Error::Discovery { message, code } => Error::Discovery {
                message: r(message),
                code,
            },
            Error::Conflict { object, message } => Error::Conflict {
                object: r(object),
                message: r(message),
            },
            Error::Refused(message) => Error::Refused(r(message)),
            other => {
                let mut shown = other.to_string();
                let mut source = std::error::Error::source(&other);
                while let Some(cause) = source {
                    shown.push_str(": ");
                    shown.push_str(&cause.to_string());
                    source = cause.source();
                }
                let redacted = self.redact(&shown);
                if redacted == shown {
                    other
                } else {
                    Error::Other(anyhow::anyhow!(redacted))
                }
            }
        }
    }
}

/// Values to take out of log output, for the whole process. A log writer cannot be handed the
/// redactor of the render that caused a log line (kube-client, for one, logs the API server's
/// refusal, value and all, at debug level), so drivers publish theirs here under a key: the
/// CLI under one key, the agent one per Release, replaced on every render so the set stays
/// bounded by what is currently deployed.
#[derive(Default)]
struct LogValues {
    by_key: HashMap<String, Redactor>,
    /// The union of `by_key`, rebuilt on first use after a change.
    merged: Option<Arc<Redactor>>,
}

static LOG_VALUES: LazyLock<RwLock<LogValues>> = LazyLock::new(RwLock::default);

/// Make every log line written through [`LogWriter`] hide `redactor`'s values, replacing what
/// was published under `key` before.
pub fn publish_for_logs(key: &str, redactor: &Redactor) {
    let Ok(mut values) = LOG_VALUES.write() else {
        return;
    };
    if redactor.is_empty() && !values.by_key.contains_key(key) {
        return;
    }
    values.by_key.insert(key.to_string(), redactor.clone());
    values.merged = None;
}

/// Forget what was published under `key` (a deleted Release).
pub fn unpublish_for_logs(key: &str) {
    if let Ok(mut values) = LOG_VALUES.write()
        && values.by_key.remove(key).is_some()
    {
        values.merged = None;
    }
}

fn log_redactor() -> Option<Arc<Redactor>> {
    if let Ok(values) = LOG_VALUES.read() {
        if values.by_key.is_empty() {
            return None;
        }
        if let Some(merged) = &values.merged {
            return Some(merged.clone());
        }
    }
    let mut values = LOG_VALUES.write().ok()?;
    let mut merged = Redactor::new();
    for redactor in values.by_key.values() {
        merged.extend(redactor);
    }
    let merged = Arc::new(merged);
    values.merged = Some(merged.clone());
    Some(merged)
}

/// A writer for `tracing_subscriber::fmt().with_writer(|| LogWriter::new(std::io::stderr()))`:
/// collects one log record (the subscriber makes one writer per event) and writes it with every
/// published value redacted when dropped.
pub struct LogWriter<W: std::io::Write> {
    inner: W,
    buffer: Vec<u8>,
}

impl<W: std::io::Write> LogWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            buffer: Vec::new(),
        }
    }

    fn emit(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let record = std::mem::take(&mut self.buffer);
        match log_redactor() {
            Some(redactor) => {
                let text = String::from_utf8_lossy(&record);
                self.inner.write_all(redactor.redact(&text).as_bytes())
            }
            None => self.inner.write_all(&record),
        }
    }
}

impl<W: std::io::Write> std::io::Write for LogWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.emit()?;
        self.inner.flush()
    }
}

impl<W: std::io::Write> Drop for LogWriter<W> {
    fn drop(&mut self) {
        let _ = self.emit();
        let _ = self.inner.flush();
    }
}

/// `true`, `off`, `null`…: a boolean or null spelled as a string (`stringData: {tls: "true"}`)
/// hides nothing worth hiding, like a boolean, and blanking every `true` of a diff would make
/// it unreadable.
fn is_flag_word(value: &str) -> bool {
    const WORDS: [&str; 10] = [
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~",
    ];
    WORDS.iter().any(|w| value.eq_ignore_ascii_case(w))
}

/// The lines of a multi-line value long enough to be worth matching on their own.
fn lines_of(value: &str) -> Vec<String> {
    if !value.contains('\n') {
        return Vec::new();
    }
    value
        .lines()
        .map(str::trim)
        .filter(|line| line.chars().count() >= MIN_LINE)
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_base64_and_quoted_forms() {
        let mut r = Redactor::new();
        r.add("hunter22");
        r.add("ab");
        r.add("line \"one\"\nsecond-line-here");
        let text = "error: value hunter22 / aHVudGVyMjI= in abc and ab here";
        let out = r.redact(text);
        assert!(!out.contains("hunter22"));
        assert!(!out.contains("aHVudGVyMjI="));
        assert!(out.contains("abc"), "{out}");
        assert!(out.contains("and [REDACTED] here"), "{out}");
        let quoted = r#"Invalid value: "line \"one\"\nsecond-line-here""#;
        assert!(!r.redact(quoted).contains("second-line-here"), "{quoted}");
        assert!(!r.redact(quoted).contains(r#"line \"one\""#));
        assert!(r.redact("x: |\n  second-line-here\n").contains(REDACTED));
    }

    #[test]
    fn short_values_only_as_whole_words_or_scalars() {
        let mut r = Redactor::new();
        r.add("1");
        r.add("-");
        assert_eq!(
            r.redact("replicas 10, 21, 1"),
            "replicas 10, 21, [REDACTED]"
        );
        assert_eq!(
            r.redact("a-b"),
            "a-b",
            "punctuation alone is never registered"
        );
        let mut v = json!({"a": 1, "b": 11, "c": "1", "d": "x1"});
        r.redact_value(&mut v);
        assert_eq!(v, json!({"a": REDACTED, "b": 11, "c": REDACTED, "d": "x1"}));
        assert_eq!(r.redact("aab ab"), "aab ab");
        let mut r = Redactor::new();
        r.add("ab");
        assert_eq!(r.redact("aab ab"), "aab [REDACTED]");
    }

    #[test]
    fn base64_of_text_registers_its_plaintext() {
        let mut r = Redactor::new();
        r.add("cGFzc3dvcmQtMTIz"); // "password-123"
        assert_eq!(r.redact("url=u:password-123@h"), "url=u:[REDACTED]@h");
    }

    #[test]
    fn object_identity_is_not_registered() {
        let mut r = Redactor::new();
        r.add_object_leaf(&["metadata".into(), "name".into()], &json!("web"));
        r.add_object_leaf(&["kind".into()], &json!("ConfigMap"));
        r.add_object_leaf(&["data".into(), "x".into()], &json!(true));
        r.add_object_leaf(&["stringData".into(), "tls".into()], &json!("True"));
        assert!(r.is_empty());
        r.add_object_leaf(&["spec".into(), "token".into()], &json!("tok-12345"));
        let mut v = json!({"env": [{"name": "T", "value": "Bearer tok-12345"}], "tok-12345": 1});
        r.redact_value(&mut v);
        assert_eq!(
            v,
            json!({"env": [{"name": "T", "value": "Bearer [REDACTED]"}], REDACTED: 1})
        );
        assert!(!format!("{r:?}").contains("tok"));
    }

    #[test]
    fn diff_hides_rotated_values_and_keeps_the_action() {
        use crate::ObjectKey;
        use crate::cluster::manager::diff::diff_object_redacted;
        use crate::report::DiffAction;
        let mut r = Redactor::new();
        r.add("new-pass-123");
        let key = ObjectKey {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: Some("ns".into()),
            name: "db".into(),
        };
        let cm = |pw: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db"}, "data": {"url": format!("postgres://u:{pw}@h"), "n": "1"}});
        let rotated = diff_object_redacted(
            &key,
            Some(&cm("old-pass-456")),
            Some(&cm("new-pass-123")),
            &r,
        );
        assert_eq!(rotated.action, DiffAction::Change);
        assert!(!rotated.diff.contains("old-pass-456"), "{}", rotated.diff);
        assert!(!rotated.diff.contains("new-pass-123"), "{}", rotated.diff);
        assert!(
            rotated.diff.contains("postgres://u:[REDACTED]@h"),
            "{}",
            rotated.diff
        );
        let same = diff_object_redacted(
            &key,
            Some(&cm("new-pass-123")),
            Some(&cm("new-pass-123")),
            &r,
        );
        assert_eq!(same.action, DiffAction::Unchanged);
        assert!(same.diff.is_empty());
        let created = diff_object_redacted(&key, None, Some(&cm("new-pass-123")), &r);
        assert_eq!(created.action, DiffAction::Create);
        assert!(!created.diff.contains("new-pass-123"), "{}", created.diff);
        assert!(created.diff.contains("[REDACTED]"), "{}", created.diff);
    }

    /// A large SOPS values file: thousands of values, a large text, one pass each.
    #[test]
    fn many_values() {
        let mut r = Redactor::new();
        let values: Vec<String> = (0..5000).map(|i| format!("value-{i:05}-x")).collect();
        for v in &values {
            r.add(v);
        }
        let text: String = values.iter().map(|v| format!("k: {v}\n")).collect();
        let started = std::time::Instant::now();
        let out = r.redact(&text);
        assert_eq!(out.matches(REDACTED).count(), values.len());
        assert!(!out.contains("value-"));
        // Generous: a regression to one pass per value would take minutes in a debug build.
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }

    #[test]
    fn log_writer_redacts_published_values() {
        use std::io::Write as _;
        let mut r = Redactor::new();
        r.add("log-secret-value-1");
        publish_for_logs("test/log-writer", &r);
        let mut out = Vec::new();
        {
            let mut w = LogWriter::new(&mut out);
            write!(w, "DEBUG Unsuccessful: Status {{ message: \"log-secret-").expect("write");
            writeln!(w, "value-1 is invalid\" }}").expect("write");
        }
        unpublish_for_logs("test/log-writer");
        let text = String::from_utf8(out).expect("utf8");
        assert!(!text.contains("log-secret-value-1"), "{text}");
        assert!(text.contains(REDACTED), "{text}");
    }

    #[test]
    fn errors_keep_their_variant() {
        let mut r = Redactor::new();
        r.add("s3cr3t-value");
        let err = r.redact_error(crate::Error::Object {
            object: "ConfigMap/x".into(),
            message: "invalid: s3cr3t-value".into(),
        });
        assert!(
            matches!(&err, crate::Error::Object { message, .. } if message == "invalid: [REDACTED]")
        );
        let err = r.redact_error(crate::Error::Other(anyhow::anyhow!("boom s3cr3t-value")));
        assert!(!err.to_string().contains("s3cr3t"));
        // The cluster-wide variants keep their shape (callers match on them) and their typed
        // fields; only the described server message is redacted.
        let err = r.redact_error(crate::Error::Discovery {
            message: "forbidden: s3cr3t-value".into(),
            code: Some(403),
        });
        assert!(
            matches!(&err, crate::Error::Discovery { message, code: Some(403) } if message == "forbidden: [REDACTED]"),
            "{err}"
        );
        let err = r.redact_error(crate::Error::Unreachable {
            message: "cannot reach the API server: s3cr3t-value".into(),
        });
        assert!(
            matches!(&err, crate::Error::Unreachable { .. }) && !err.to_string().contains("s3cr3t")
        );
        let err = r.redact_error(crate::Error::Conflict {
            object: "inventory ConfigMap ns/x".into(),
            message: "changed s3cr3t-value".into(),
        });
        assert!(
            matches!(&err, crate::Error::Conflict { .. }) && !err.to_string().contains("s3cr3t")
        );
    }
}
