//! Helm values as ferry handles them before helm sees them: a values file's text parsed into a
//! mapping (never echoing its text: it may be decrypted), and helm's merge of successive
//! values layers. Shared by the helm renderer and ferry.yaml layering (`spec.render`).

use std::path::Path;

use serde_json::Value;

use crate::{Error, Result};

/// A values file's bytes → a mapping (an empty file is an empty mapping). `path` names it in
/// errors, which never quote the text.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Value> {
    let fail = |message: String| Error::Source {
        path: path.to_path_buf(),
        message,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| fail("values file is not UTF-8".into()))?;
    if text.trim().is_empty() {
        return Ok(empty());
    }
    // Never include parser snippets: this may be decrypted text.
    let value: Value =
        serde_saphyr::from_str_with_options(text, crate::yaml::options()).map_err(|err| {
            let line = err
                .location()
                .map(|l| format!(" at line {}", l.line()))
                .unwrap_or_default();
            fail(format!("values are not valid YAML{line}"))
        })?;
    match value {
        Value::Object(_) => {
            let mut value = value;
            // A decrypted file still carries its `sops:` block only if decryption kept it.
            if let Some(map) = value.as_object_mut() {
                map.remove("sops");
            }
            Ok(value)
        }
        Value::Null => Ok(empty()),
        _ => Err(fail("values must be a mapping".into())),
    }
}

pub fn empty() -> Value {
    Value::Object(serde_json::Map::new())
}

/// Helm's merge of successive `-f` files: maps merge recursively, anything else replaces. Also
/// how `spec.render` values are layered over ferry.yaml's.
pub fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge(existing, value)
                    }
                    _ => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_is_helms() {
        let mut base = serde_json::json!({"a": {"b": 1, "c": [1]}, "d": 1});
        merge(
            &mut base,
            serde_json::json!({"a": {"c": [2], "e": true}, "d": {"x": 1}}),
        );
        assert_eq!(
            base,
            serde_json::json!({"a": {"b": 1, "c": [2], "e": true}, "d": {"x": 1}})
        );
    }
}
