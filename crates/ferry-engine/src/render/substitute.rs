//! Flux-style post-build variable substitution on rendered objects: `${VAR}`,
//! `${VAR:=default}` / `${VAR:-default}` (used when unset or empty), `${VAR=default}` /
//! `${VAR-default}` (used when unset), and `$${VAR}` for a literal `${VAR}`. Objects annotated
//! or labelled `ferry.dev/substitute: disabled` (or Flux's
//! `kustomize.toolkit.fluxcd.io/substitute: disabled`) are left alone.
//!
//! Substitution works on the string leaves (and keys) of each object, never on YAML text, so a
//! variable value cannot inject structure. To match Flux, a leaf that is exactly one reference
//! (`replicas: ${REPLICAS}`) takes the YAML type of its value (`3` → number, `true` → bool);
//! a value quoted as `"3"` stays a string.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::{Error, Manifest, Result};

pub const DISABLE_KEYS: [&str; 2] = [
    "ferry.dev/substitute",
    "kustomize.toolkit.fluxcd.io/substitute",
];

/// The variables and mode for one render.
#[derive(Debug, Clone, Default)]
pub struct Substitution {
    pub vars: BTreeMap<String, String>,
    /// Undefined variables without a default are errors (else they become empty, like Flux).
    pub strict: bool,
}

/// True for a valid variable name (`[_a-zA-Z][_a-zA-Z0-9]*`).
pub fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Why a `--var` is not usable, or a strict substitution failed. The caller names the flag,
/// file or object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubstituteError {
    /// The whole `--var` text (a variable name and value the operator typed, not a secret).
    #[error("{0:?} is not KEY=VALUE")]
    NotAssignment(String),
    #[error(
        "{0:?} is not a valid variable name (letters, digits and _, not starting with a digit)"
    )]
    InvalidName(String),
    /// Strict substitution: `${NAME}` has no value and no default.
    #[error(
        "variable ${{{0}}} is not defined and has no default (strict substitution); define it with --var {0}=..., a vars file or `substitute:` in ferry.yaml, or write ${{{0}:=default}}"
    )]
    Undefined(String),
}

/// Parse `K=V` (from `--var`).
pub fn parse_assignment(text: &str) -> std::result::Result<(String, String), SubstituteError> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| SubstituteError::NotAssignment(text.to_string()))?;
    if !is_var_name(key) {
        return Err(SubstituteError::InvalidName(key.to_string()));
    }
    Ok((key.to_string(), value.to_string()))
}

/// Read a vars file: `.yaml`/`.yml`/`.json` as a flat mapping of scalars, anything else as
/// dotenv lines (`KEY=VALUE`, `export KEY=VALUE`, `#` comments, optional quotes).
pub fn read_vars_file(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, String>> {
    let fail = |message: String| Error::Source {
        path: path.to_path_buf(),
        message,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| fail("vars file is not UTF-8".into()))?;
    let mut vars = BTreeMap::new();
    let is_yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    );
    if is_yaml {
        let map: BTreeMap<String, Value> =
            serde_saphyr::from_str_with_options(text, crate::yaml::options()).map_err(|err| {
                fail(format!(
                    "expected a mapping of variable names to values: {}",
                    err.without_snippet()
                ))
            })?;
        for (key, value) in map {
            if !is_var_name(&key) {
                return Err(fail(format!("{key:?} is not a valid variable name")));
            }
            let value = match value {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => String::new(),
                _ => {
                    return Err(fail(format!(
                        "variable {key}: only scalar values are allowed"
                    )));
                }
            };
            vars.insert(key, value);
        }
        return Ok(vars);
    }
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (key, value) =
            parse_assignment(line).map_err(|err| fail(format!("line {}: {err}", index + 1)))?;
        let value = value.trim();
        let value = strip_quotes(value).unwrap_or(value);
        vars.insert(key.trim().to_string(), value.to_string());
    }
    Ok(vars)
}

fn strip_quotes(value: &str) -> Option<&str> {
    let bytes = value.as_bytes();
    if bytes.len() >= 2
        && (bytes[0] == b'"' || bytes[0] == b'\'')
        && bytes[bytes.len() - 1] == bytes[0]
    {
        Some(&value[1..value.len() - 1])
    } else {
        None
    }
}

/// Whether an object opted out via annotation or label.
pub fn is_disabled(manifest: &Manifest) -> bool {
    let meta = &manifest.object.metadata;
    DISABLE_KEYS.iter().any(|key| {
        [meta.annotations.as_ref(), meta.labels.as_ref()]
            .into_iter()
            .flatten()
            .any(|map| map.get(*key).is_some_and(|v| v == "disabled"))
    })
}

/// Substitute every manifest in place (those that did not opt out).
pub fn apply(manifests: &mut [Manifest], subst: &Substitution) -> Result<()> {
    for manifest in manifests.iter_mut() {
        if is_disabled(manifest) {
            continue;
        }
        let name = || format!("{} (from {})", manifest.key(), manifest.origin);
        let mut value = serde_json::to_value(&manifest.object).map_err(|err| Error::Render {
            path: manifest.origin.file.clone(),
            message: format!("{}: {err}", name()),
        })?;
        let mut changed = false;
        substitute_value(&mut value, subst, &mut changed).map_err(|err| Error::Render {
            path: manifest.origin.file.clone(),
            message: format!("{}: {err}", name()),
        })?;
        if changed {
            manifest.object = serde_json::from_value(value).map_err(|err| Error::Render {
                path: manifest.origin.file.clone(),
                message: format!(
                    "{}: after variable substitution the object is no longer valid: {err}",
                    name()
                ),
            })?;
        }
    }
    Ok(())
}

/// Walks a JSON tree; fails on an undefined variable in strict mode.
fn substitute_value(
    value: &mut Value,
    subst: &Substitution,
    changed: &mut bool,
) -> std::result::Result<(), SubstituteError> {
    match value {
        Value::String(text) => {
            if let Some(new) = substitute_leaf(text, subst)? {
                *value = new;
                *changed = true;
            }
        }
        Value::Array(items) => {
            for item in items {
                substitute_value(item, subst, changed)?;
            }
        }
        Value::Object(map) => {
            let needs_key_change = map.keys().any(|k| k.contains("${"));
            if needs_key_change {
                let old = std::mem::take(map);
                for (key, mut item) in old {
                    let key = match substitute_str(&key, subst)? {
                        Some(new) => {
                            *changed = true;
                            new
                        }
                        None => key,
                    };
                    substitute_value(&mut item, subst, changed)?;
                    map.insert(key, item);
                }
            } else {
                for item in map.values_mut() {
                    substitute_value(item, subst, changed)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// A leaf: `None` when unchanged. A leaf that is exactly one reference takes its value's type.
fn substitute_leaf(
    text: &str,
    subst: &Substitution,
) -> std::result::Result<Option<Value>, SubstituteError> {
    if !text.contains("${") {
        return Ok(None);
    }
    let whole_reference = text.starts_with("${")
        && text.ends_with('}')
        && text[2..].find('}') == Some(text.len() - 3);
    match substitute_str(text, subst)? {
        None => Ok(None),
        Some(new) if whole_reference => Ok(Some(typed_scalar(new))),
        Some(new) => Ok(Some(Value::String(new))),
    }
}

/// How a plain YAML scalar would read: numbers and booleans keep their type, quotes make a
/// string. Nothing else (no mappings, no YAML 1.1 `yes`/`on`), so values cannot add structure.
/// Public so that the agent's `valuesFrom` `targetPath` types a flat value by the same rule.
pub fn typed_scalar(text: String) -> Value {
    if let Some(inner) = strip_quotes(&text) {
        return Value::String(inner.to_string());
    }
    match text.as_str() {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    let numeric = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'))
        && text.chars().any(|c| c.is_ascii_digit())
        // Leading zeros stay strings (YAML 1.2 and kubectl agree, and so do zip codes).
        && !(text.len() > 1 && text.starts_with('0') && !text.starts_with("0."));
    if numeric {
        if let Ok(n) = text.parse::<i64>() {
            return Value::from(n);
        }
        if let Ok(f) = text.parse::<f64>()
            && f.is_finite()
            && let Some(n) = serde_json::Number::from_f64(f)
        {
            return Value::Number(n);
        }
    }
    Value::String(text)
}

/// Substitute references in one string; `None` when nothing changed.
pub fn substitute_str(
    text: &str,
    subst: &Substitution,
) -> std::result::Result<Option<String>, SubstituteError> {
    if !text.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$${") {
            // Escape: `$${X}` → literal `${X}`.
            out.push_str("${");
            rest = after;
            changed = true;
            continue;
        }
        if let Some(body_start) = tail.strip_prefix("${")
            && let Some(end) = body_start.find('}')
            && let Some(replacement) = evaluate(&body_start[..end], subst)?
        {
            out.push_str(&replacement);
            rest = &body_start[end + 1..];
            changed = true;
            continue;
        }
        // Not a reference we understand (`$HOME`, `${{ x }}`, `${a.b}`): keep it verbatim.
        out.push('$');
        rest = &tail[1..];
    }
    out.push_str(rest);
    Ok(changed.then_some(out))
}

/// The value of one `${...}` body; `Ok(None)` when the body is not a reference we handle.
fn evaluate(
    body: &str,
    subst: &Substitution,
) -> std::result::Result<Option<String>, SubstituteError> {
    let name_end = body
        .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
        .unwrap_or(body.len());
    let (name, op) = body.split_at(name_end);
    if !is_var_name(name) {
        return Ok(None);
    }
    let value = subst.vars.get(name);
    let result = if op.is_empty() {
        match value {
            Some(v) => v.clone(),
            None if subst.strict => return Err(SubstituteError::Undefined(name.to_string())),
            None => String::new(),
        }
    } else if let Some(default) = op.strip_prefix(":=").or_else(|| op.strip_prefix(":-")) {
        match value {
            Some(v) if !v.is_empty() => v.clone(),
            _ => default.to_string(),
        }
    } else if let Some(default) = op.strip_prefix('=').or_else(|| op.strip_prefix('-')) {
        match value {
            Some(v) => v.clone(),
            None => default.to_string(),
        }
    } else {
        return Ok(None);
    };
    Ok(Some(result))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subst(pairs: &[(&str, &str)], strict: bool) -> Substitution {
        Substitution {
            vars: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            strict,
        }
    }

    #[test]
    fn references_defaults_and_escapes() {
        let s = subst(&[("A", "x"), ("EMPTY", "")], false);
        let run = |t: &str| {
            substitute_str(t, &s)
                .unwrap()
                .unwrap_or_else(|| t.to_string())
        };
        assert_eq!(run("a-${A}-b"), "a-x-b");
        assert_eq!(run("${MISSING:=dflt}"), "dflt");
        assert_eq!(run("${EMPTY:=dflt}|${EMPTY=dflt}"), "dflt|");
        assert_eq!(run("$${A} stays"), "${A} stays");
        assert_eq!(
            run("$HOME ${{ github }} ${a.b}"),
            "$HOME ${{ github }} ${a.b}"
        );
        assert_eq!(run("${MISSING}"), "");
    }

    #[test]
    fn strict_mode_names_the_variable() {
        let s = subst(&[], true);
        assert_eq!(
            substitute_str("x ${NOPE} y", &s),
            Err(SubstituteError::Undefined("NOPE".to_string()))
        );
        assert_eq!(
            substitute_str("${NOPE:=ok}", &s),
            Ok(Some("ok".to_string()))
        );
    }

    #[test]
    fn whole_references_take_the_value_type() {
        let s = subst(
            &[("N", "3"), ("Q", "\"3\""), ("B", "true"), ("Z", "0123")],
            false,
        );
        assert_eq!(substitute_leaf("${N}", &s).unwrap(), Some(Value::from(3)));
        assert_eq!(substitute_leaf("${Q}", &s).unwrap(), Some(Value::from("3")));
        assert_eq!(
            substitute_leaf("${B}", &s).unwrap(),
            Some(Value::Bool(true))
        );
        assert_eq!(
            substitute_leaf("${Z}", &s).unwrap(),
            Some(Value::from("0123"))
        );
        assert_eq!(
            substitute_leaf("v${N}", &s).unwrap(),
            Some(Value::from("v3"))
        );
        assert_eq!(
            substitute_leaf("${N}-${N}", &s).unwrap(),
            Some(Value::from("3-3"))
        );
    }

    #[test]
    fn dotenv_and_yaml_vars_files() {
        let env =
            read_vars_file(Path::new("vars.env"), b"# c\nexport A=1\nB=\"two words\"\n").unwrap();
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "two words");
        let yaml = read_vars_file(Path::new("vars.yaml"), b"A: 1\nB: text\n").unwrap();
        assert_eq!(yaml["A"], "1");
        let err = read_vars_file(Path::new("v.env"), b"1BAD=x\n").unwrap_err();
        assert!(err.to_string().contains("v.env"), "{err}");
    }
}
