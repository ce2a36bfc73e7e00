//! The SOPS document tree: the `sops:` metadata block, which leaves are encrypted
//! (`encrypted_regex`, `unencrypted_regex`, `encrypted_suffix`, `unencrypted_suffix`), and the
//! walk over leaves in document order that both decryption and encryption use.
//!
//! The tree is a `serde_json::Value` with `preserve_order`, so map order (which the MAC covers)
//! is the order of the file.

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::SopsError;

/// The default suffix that keeps a key's value in clear, applied when a file sets no rule.
pub(crate) const DEFAULT_UNENCRYPTED_SUFFIX: &str = "_unencrypted";

/// One `sops.age[]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AgeEntry {
    pub recipient: String,
    /// Armored age file wrapping the data key (public ciphertext, safe to show).
    pub enc: String,
}

/// A key group (`sops.key_groups[]`, used for Shamir splitting).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct KeyGroup {
    #[serde(default)]
    pub age: Option<Vec<AgeEntry>>,
}

/// The `sops:` block as stored in files. Field names are SOPS's.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Metadata {
    #[serde(default)]
    pub key_groups: Option<Vec<KeyGroup>>,
    #[serde(default)]
    pub kms: Option<Value>,
    #[serde(default)]
    pub gcp_kms: Option<Value>,
    #[serde(default)]
    pub azure_kv: Option<Value>,
    #[serde(default)]
    pub hc_vault: Option<Value>,
    #[serde(default)]
    pub pgp: Option<Value>,
    #[serde(default)]
    pub age: Option<Vec<AgeEntry>>,
    #[serde(default)]
    pub lastmodified: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub unencrypted_suffix: Option<String>,
    #[serde(default)]
    pub encrypted_suffix: Option<String>,
    #[serde(default)]
    pub unencrypted_regex: Option<String>,
    #[serde(default)]
    pub encrypted_regex: Option<String>,
    #[serde(default)]
    pub unencrypted_comment_regex: Option<String>,
    #[serde(default)]
    pub encrypted_comment_regex: Option<String>,
    #[serde(default)]
    pub mac_only_encrypted: Option<bool>,
}

impl Metadata {
    /// Key types other than age present in the file (for a helpful "no usable key" message).
    pub(crate) fn other_key_types(&self) -> Vec<&'static str> {
        let present = |v: &Option<Value>| matches!(v, Some(Value::Array(a)) if !a.is_empty());
        let mut out = Vec::new();
        for (name, value) in [
            ("pgp", &self.pgp),
            ("kms", &self.kms),
            ("gcp_kms", &self.gcp_kms),
            ("azure_kv", &self.azure_kv),
            ("hc_vault", &self.hc_vault),
        ] {
            if present(value) {
                out.push(name);
            }
        }
        out
    }
}

/// Which leaves are encrypted. At most one of the four selectors may be set; with none,
/// `unencrypted_suffix: _unencrypted` applies (as in SOPS).
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub unencrypted_suffix: Option<String>,
    pub encrypted_suffix: Option<String>,
    pub unencrypted_regex: Option<Regex>,
    pub encrypted_regex: Option<Regex>,
    pub mac_only_encrypted: bool,
}

impl Rules {
    /// Build rules from the textual options, validating the regexes and the one-selector rule.
    pub fn new(
        unencrypted_suffix: Option<String>,
        encrypted_suffix: Option<String>,
        unencrypted_regex: Option<String>,
        encrypted_regex: Option<String>,
        mac_only_encrypted: bool,
    ) -> Result<Self, SopsError> {
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        let unencrypted_suffix = non_empty(unencrypted_suffix);
        let encrypted_suffix = non_empty(encrypted_suffix);
        let unencrypted_regex = non_empty(unencrypted_regex);
        let encrypted_regex = non_empty(encrypted_regex);
        let count = [
            unencrypted_suffix.is_some(),
            encrypted_suffix.is_some(),
            unencrypted_regex.is_some(),
            encrypted_regex.is_some(),
        ]
        .iter()
        .filter(|set| **set)
        .count();
        if count > 1 {
            return Err(SopsError::SeveralSelectors);
        }
        let compile = |field: &'static str,
                       re: Option<String>|
         -> Result<Option<Regex>, SopsError> {
            re.map(|re| Regex::new(&re).map_err(|source| SopsError::InvalidRegex { field, source }))
                .transpose()
        };
        let unencrypted_suffix = if count == 0 {
            Some(DEFAULT_UNENCRYPTED_SUFFIX.to_string())
        } else {
            unencrypted_suffix
        };
        Ok(Self {
            unencrypted_suffix,
            encrypted_suffix,
            unencrypted_regex: compile("unencrypted_regex", unencrypted_regex)?,
            encrypted_regex: compile("encrypted_regex", encrypted_regex)?,
            mac_only_encrypted,
        })
    }

    pub(crate) fn from_metadata(meta: &Metadata) -> Result<Self, SopsError> {
        if meta
            .encrypted_comment_regex
            .as_deref()
            .is_some_and(|s| !s.is_empty())
            || meta
                .unencrypted_comment_regex
                .as_deref()
                .is_some_and(|s| !s.is_empty())
        {
            return Err(SopsError::CommentRegexUnsupported);
        }
        Self::new(
            meta.unencrypted_suffix.clone(),
            meta.encrypted_suffix.clone(),
            meta.unencrypted_regex.clone(),
            meta.encrypted_regex.clone(),
            meta.mac_only_encrypted.unwrap_or(false),
        )
    }

    /// SOPS's `shouldBeEncrypted` for a leaf at `path` (map keys only; list indices are not
    /// part of the path).
    pub(crate) fn should_encrypt(&self, path: &[String]) -> bool {
        let mut encrypted = true;
        if let Some(suffix) = &self.unencrypted_suffix
            && path.iter().any(|p| p.ends_with(suffix.as_str()))
        {
            encrypted = false;
        }
        if let Some(suffix) = &self.encrypted_suffix {
            encrypted = path.iter().any(|p| p.ends_with(suffix.as_str()));
        }
        if let Some(re) = &self.unencrypted_regex
            && path.iter().any(|p| re.is_match(p))
        {
            encrypted = false;
        }
        if let Some(re) = &self.encrypted_regex {
            encrypted = path.iter().any(|p| re.is_match(p));
        }
        encrypted
    }
}

/// Callback of [`walk_leaves`]: the leaf and its key path.
pub(crate) type LeafVisitor<'a, E> = dyn FnMut(&mut Value, &[String]) -> Result<(), E> + 'a;

/// Visit every leaf (string, number, bool) in document order with its key path. Nulls are
/// skipped, as in SOPS. The callback may replace the leaf.
pub(crate) fn walk_leaves<E>(
    value: &mut Value,
    path: &mut Vec<String>,
    visit: &mut LeafVisitor<'_, E>,
) -> Result<(), E> {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                path.push(key.clone());
                let result = walk_leaves(child, path, visit);
                path.pop();
                result?;
            }
            Ok(())
        }
        Value::Array(items) => {
            for item in items {
                walk_leaves(item, path, visit)?;
            }
            Ok(())
        }
        Value::Null => Ok(()),
        leaf => visit(leaf, path),
    }
}

/// The AAD SOPS binds a value to: the key path joined by `:` with a trailing `:`.
pub(crate) fn aad(path: &[String]) -> String {
    let mut out = path.join(":");
    out.push(':');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn selectors_follow_sops_rules() {
        let default = Rules::new(None, None, None, None, false).unwrap();
        assert!(default.should_encrypt(&p(&["a", "b"])));
        assert!(!default.should_encrypt(&p(&["a_unencrypted", "b"])));

        let re = Rules::new(None, None, None, Some("^(data|stringData)$".into()), false).unwrap();
        assert!(re.should_encrypt(&p(&["data", "password"])));
        assert!(!re.should_encrypt(&p(&["metadata", "name"])));

        let suffix = Rules::new(None, Some("_secret".into()), None, None, false).unwrap();
        assert!(suffix.should_encrypt(&p(&["db_secret", "x"])));
        assert!(!suffix.should_encrypt(&p(&["db", "x"])));

        let unre = Rules::new(None, None, Some("^public".into()), None, false).unwrap();
        assert!(!unre.should_encrypt(&p(&["public_key"])));
        assert!(unre.should_encrypt(&p(&["private_key"])));

        assert!(Rules::new(Some("_u".into()), Some("_e".into()), None, None, false).is_err());
        assert!(Rules::new(None, None, None, Some("(".into()), false).is_err());
        assert_eq!(aad(&p(&["a", "b"])), "a:b:");
    }
}
