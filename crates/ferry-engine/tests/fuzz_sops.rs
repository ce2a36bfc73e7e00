//! Property-based fuzzing of the native SOPS parser and decryptor
//! (`decrypt::sops`): arbitrary and mutated SOPS documents never panic, every accepted
//! document decrypts to exactly what was encrypted (a tamper is never silently accepted), and
//! tampered values, removed leaves and reordered keys fail MAC (or AES-GCM) verification with a
//! decrypt error that shows no plaintext.
//!
//! `cargo test` runs 256 cases per property; longer runs: see docs/fuzzing.md
//! (`PROPTEST_CASES=100000 cargo test -p ferry-engine --test fuzz_sops`).

use std::path::Path;
use std::sync::LazyLock;

use ferry_engine::Error;
use ferry_engine::decrypt::sops::{self, AgeKeys, EncryptOptions, Format, Selectors};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// One age key for the whole run (generating one per case would only slow the run down).
static KEYS: LazyLock<AgeKeys> = LazyLock::new(AgeKeys::generate);

fn options() -> EncryptOptions {
    EncryptOptions::new(KEYS.recipients(), Selectors::default()).expect("options")
}

fn path() -> &'static Path {
    Path::new("fuzz.enc.yaml")
}

/// Plaintext leaves: never empty (SOPS's MAC cannot see an empty value, so removing one is not
/// a detectable tamper in any SOPS implementation) and never a YAML boolean/number spelling.
fn leaf() -> impl Strategy<Value = Value> {
    "[a-z]{1,6}-[a-zA-Z0-9 ]{0,12}".prop_map(Value::String)
}

fn tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 1..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,6}(_unencrypted)?", inner, 1..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A top-level map (SOPS only encrypts maps) with at least two keys, always one encrypted
/// (`secret`) and one kept in clear by the default `_unencrypted` suffix (`note_unencrypted`),
/// so that every property has something to tamper with without rejecting cases.
fn document() -> impl Strategy<Value = Value> {
    (
        proptest::collection::btree_map("[a-z]{1,6}(_unencrypted)?", tree(), 0..5),
        tree(),
        leaf(),
    )
        .prop_map(|(mut m, secret, note)| {
            m.insert("secret".to_string(), secret);
            m.insert("note_unencrypted".to_string(), note);
            Value::Object(m.into_iter().collect::<Map<_, _>>())
        })
}

fn encrypt(doc: &Value) -> String {
    let yaml = serde_saphyr::to_string(doc).expect("yaml");
    let bytes = sops::encrypt(yaml.as_bytes(), Format::Yaml, path(), &options()).expect("encrypt");
    String::from_utf8(bytes).expect("utf8")
}

fn parse(text: &str) -> Value {
    serde_saphyr::from_str::<Value>(text).expect("parses")
}

/// What a decrypted document must equal: the original, ignoring entries SOPS's MAC cannot see
/// (nulls, empty strings, empty collections), which an attacker can add without detection in
/// every SOPS implementation.
fn visible(value: &Value) -> Value {
    fn empty(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(m) => m.is_empty(),
            _ => false,
        }
    }
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "sops")
                .map(|(k, v)| (k.clone(), visible(v)))
                .filter(|(_, v)| !empty(v))
                .collect(),
        ),
        Value::Array(items) => {
            Value::Array(items.iter().map(visible).filter(|v| !empty(v)).collect())
        }
        other => other.clone(),
    }
}

/// The part of a document SOPS authenticates: (encrypted leaves with their key paths, the
/// concatenation of all leaf values in order).
fn authenticated(value: &Value) -> (Vec<(String, String)>, String) {
    fn walk(value: &Value, path: &mut Vec<String>, out: &mut (Vec<(String, String)>, String)) {
        match value {
            Value::Object(map) => {
                for (k, v) in map.iter().filter(|(k, _)| k.as_str() != "sops") {
                    path.push(k.clone());
                    walk(v, path, out);
                    path.pop();
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, path, out)),
            Value::Null => {}
            leaf => {
                let text = match leaf {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if !path.iter().any(|p| p.ends_with("_unencrypted")) {
                    out.0.push((path.join(":"), text.clone()));
                }
                out.1.push_str(&text);
            }
        }
    }
    let mut out = (Vec::new(), String::new());
    walk(value, &mut Vec::new(), &mut out);
    out
}

/// Every plaintext string leaf, to check that errors never show one.
fn plaintexts(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| plaintexts(v, out)),
        Value::Object(map) => map.values().for_each(|v| plaintexts(v, out)),
        _ => {}
    }
}

fn assert_refused(
    result: ferry_engine::Result<bool>,
    original: &Value,
) -> Result<(), TestCaseError> {
    match result {
        Err(err @ Error::Decrypt { .. }) => {
            let shown = err.to_string();
            let mut secrets = Vec::new();
            plaintexts(original, &mut secrets);
            for secret in secrets.iter().filter(|s| s.len() >= 6) {
                prop_assert!(
                    !shown.contains(secret.as_str()),
                    "error shows plaintext: {}",
                    shown
                );
            }
            Ok(())
        }
        Err(other) => Err(TestCaseError::fail(format!("not a decrypt error: {other}"))),
        Ok(_) => Err(TestCaseError::fail("tampered document was accepted")),
    }
}

/// Every leaf path (keys and list indices) of a tree, in document order.
fn leaf_paths(value: &Value, prefix: &mut Vec<PathPart>, out: &mut Vec<Vec<PathPart>>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "sops" {
                    continue;
                }
                prefix.push(PathPart::Key(k.clone()));
                leaf_paths(v, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                prefix.push(PathPart::Index(i));
                leaf_paths(v, prefix, out);
                prefix.pop();
            }
        }
        _ => out.push(prefix.clone()),
    }
}

#[derive(Debug, Clone)]
enum PathPart {
    Key(String),
    Index(usize),
}

fn at<'a>(value: &'a mut Value, path: &[PathPart]) -> Option<&'a mut Value> {
    let mut current = value;
    for part in path {
        current = match part {
            PathPart::Key(k) => current.get_mut(k.as_str())?,
            PathPart::Index(i) => current.get_mut(*i)?,
        };
    }
    Some(current)
}

fn is_clear(path: &[PathPart]) -> bool {
    path.iter()
        .any(|p| matches!(p, PathPart::Key(k) if k.ends_with("_unencrypted")))
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        // `prop_assume!` only skips rare degenerate cases; never abort a long run on them.
        max_global_rejects: u32::MAX,
        ..ProptestConfig::default()
    })]

    /// What ferry encrypts, ferry decrypts to the same document.
    #[test]
    fn round_trip(doc in document()) {
        let mut encrypted = parse(&encrypt(&doc));
        prop_assert!(sops::decrypt_document(&mut encrypted, path(), &KEYS).expect("decrypts"));
        prop_assert_eq!(visible(&encrypted), visible(&doc));
    }

    /// A clear (`_unencrypted`) value changed after encryption fails the MAC.
    #[test]
    fn changed_clear_value_fails_the_mac(doc in document(), pick in any::<prop::sample::Index>(), text in "[a-z]{1,6}-x") {
        let mut encrypted = parse(&encrypt(&doc));
        let mut paths = Vec::new();
        leaf_paths(&encrypted, &mut Vec::new(), &mut paths);
        let clear: Vec<_> = paths.into_iter().filter(|p| is_clear(p)).collect();
        prop_assume!(!clear.is_empty());
        let target = &clear[pick.index(clear.len())];
        let leaf = at(&mut encrypted, target).expect("leaf");
        prop_assume!(leaf.as_str() != Some(text.as_str()));
        *leaf = Value::String(text);
        assert_refused(sops::decrypt_document(&mut encrypted, path(), &KEYS), &doc)?;
    }

    /// Removing any leaf, or swapping two values, is refused (AES-GCM binds a value to its key
    /// path; the MAC covers the order of the values within a list).
    #[test]
    fn removed_or_swapped_values_are_refused(doc in document(), a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>(), remove in any::<bool>()) {
        let mut encrypted = parse(&encrypt(&doc));
        let mut paths = Vec::new();
        leaf_paths(&encrypted, &mut Vec::new(), &mut paths);
        let first = paths[a.index(paths.len())].clone();
        if remove {
            let (last, parent) = first.split_last().expect("non-empty path");
            match (at(&mut encrypted, parent).expect("parent"), last) {
                (Value::Object(map), PathPart::Key(k)) => { map.shift_remove(k.as_str()); }
                (Value::Array(items), PathPart::Index(i)) => { items.remove(*i); }
                _ => unreachable!("paths come from the tree"),
            }
        } else {
            let second = paths[b.index(paths.len())].clone();
            let swap = |value: &mut Value| {
                let x = at(value, &first).expect("leaf").clone();
                let y = at(value, &second).expect("leaf").clone();
                *at(value, &first).expect("leaf") = y;
                *at(value, &second).expect("leaf") = x;
            };
            // The swapped plaintext must differ in what the MAC hashes (the values in order,
            // without separators): swapping equal values, or values whose concatenation is the
            // same either way, changes nothing a reader could see.
            let mut swapped_plain = doc.clone();
            swap(&mut swapped_plain);
            let (mut before, mut after) = (Vec::new(), Vec::new());
            plaintexts(&doc, &mut before);
            plaintexts(&swapped_plain, &mut after);
            prop_assume!(before.concat() != after.concat());
            swap(&mut encrypted);
        }
        assert_refused(sops::decrypt_document(&mut encrypted, path(), &KEYS), &doc)?;
    }

    /// Reordering the top-level keys changes the MAC's input order.
    #[test]
    fn reordered_keys_fail_the_mac(doc in document()) {
        let encrypted = parse(&encrypt(&doc));
        let mut entries: Vec<(String, Value)> = encrypted
            .as_object()
            .expect("map")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let sops_block = entries.iter().position(|(k, _)| k == "sops").map(|i| entries.remove(i));
        prop_assume!(entries.len() >= 2);
        let concat = |entries: &[(String, Value)], plain: &Value| -> String {
            let mut out = Vec::new();
            for (k, _) in entries {
                plaintexts(&plain[k.as_str()], &mut out);
            }
            out.concat()
        };
        let before = concat(&entries, &doc);
        entries.reverse();
        prop_assume!(concat(&entries, &doc) != before);
        let mut reordered: Map<String, Value> = entries.into_iter().collect();
        if let Some((k, v)) = sops_block {
            reordered.insert(k, v);
        }
        let mut tampered = Value::Object(reordered);
        assert_refused(sops::decrypt_document(&mut tampered, path(), &KEYS), &doc)?;
    }

    /// Random edits of the file's bytes: never a panic, and whatever is accepted decrypts to
    /// the original document.
    #[test]
    fn mutated_files_never_panic_nor_pass_a_tamper(
        doc in document(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<char>()), 1..4),
    ) {
        let mut text = encrypt(&doc);
        for (pos, op, c) in edits {
            let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
            let i = boundaries[pos.index(boundaries.len())];
            let next = text[i..].chars().next().map_or(i, |ch| i + ch.len_utf8());
            match op {
                0 => text.insert(i, c),
                1 => text.replace_range(i..next, ""),
                _ => text.replace_range(i..next, &c.to_string()),
            }
        }
        let _ = sops::is_encrypted(text.as_bytes());
        if let Ok(plain) = sops::decrypt(text.as_bytes(), Format::Yaml, path(), &KEYS) {
            let docs: Vec<Value> = serde_saphyr::from_slice_multiple(&plain).expect("ferry's own output parses");
            prop_assert_eq!(docs.len(), 1, "one document in, one out");
            // What SOPS authenticates, and so what an accepted file must keep: every encrypted
            // value at its key path (AES-GCM with the path as AAD), and the sequence of all
            // values (the MAC). Names of keys holding only clear values are not authenticated
            // by the format (found by this property; docs/fuzzing.md).
            let (got, want) = (authenticated(&docs[0]), authenticated(&doc));
            prop_assert_eq!(got, want, "accepted a tampered file:\n{}", text);
        }
    }

    /// Garbage in an `ENC[...]` value (the cipher parser) is a decrypt error, never a panic.
    #[test]
    fn garbage_enc_values_are_refused(
        doc in document(),
        pick in any::<prop::sample::Index>(),
        data in "[A-Za-z0-9+/=]{0,40}",
        iv in "[A-Za-z0-9+/=]{0,48}",
        tag in "[A-Za-z0-9+/=]{0,28}",
        kind in prop_oneof![Just("str".to_string()), Just("int".to_string()), Just("float".to_string()), Just("bool".to_string()), Just("bytes".to_string()), "[a-z]{0,6}"],
        shape in 0u8..4,
    ) {
        let mut encrypted = parse(&encrypt(&doc));
        let mut paths = Vec::new();
        leaf_paths(&encrypted, &mut Vec::new(), &mut paths);
        let targets: Vec<_> = paths.into_iter().filter(|p| !is_clear(p)).collect();
        prop_assume!(!targets.is_empty());
        let target = &targets[pick.index(targets.len())];
        let value = match shape {
            0 => format!("ENC[AES256_GCM,data:{data},iv:{iv},tag:{tag},type:{kind}]"),
            1 => format!("ENC[AES256_GCM,data:{data},iv:{iv},type:{kind}]"),
            2 => format!("ENC[AES256_GCM,iv:{iv},tag:{tag},data:{data},type:{kind},]"),
            _ => format!("ENC[{data}{iv}"),
        };
        *at(&mut encrypted, target).expect("leaf") = Value::String(value);
        assert_refused(sops::decrypt_document(&mut encrypted, path(), &KEYS), &doc)?;
    }

    /// Arbitrary bytes: never a panic, never "decrypted".
    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = sops::is_encrypted(&bytes);
        let _ = sops::looks_encrypted(&bytes);
        prop_assert!(sops::decrypt(&bytes, Format::Yaml, path(), &KEYS).is_err());
        prop_assert!(sops::decrypt(&bytes, Format::Json, path(), &KEYS).is_err());
    }
}
