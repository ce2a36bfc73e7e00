//! Native SOPS (getsops) decryption and encryption for YAML and JSON files with age keys.
//!
//! Compatible with files written by the `sops` binary: values are
//! `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]` bound to their key path, the `sops:` block wraps
//! the data key for age recipients, and the MAC (SHA-512 over the plaintext leaves in document
//! order, stored encrypted) is verified, so a tampered, reordered or truncated file is rejected.
//!
//! Entry points:
//! - [`is_encrypted`] / [`is_encrypted_value`]: does this carry a SOPS `sops:` block?
//! - [`decrypt`]: encrypted file bytes → plaintext bytes in the same format.
//! - [`decrypt_documents`] / [`decrypt_document`]: the same on parsed documents, for renderers
//!   that already hold `serde_json::Value`s (call it *before* converting to a typed object: the
//!   MAC covers the file's key order).
//! - [`decrypt_manifest`]: a [`Manifest`] that carries a `sops` key (Flux-style per object).
//! - the `_with` variants of these hand every decrypted leaf (key path and plaintext) to a
//!   [`PlaintextSink`], which is how the decrypt stage (and the helm renderer, for values files)
//!   registers exactly the values that were encrypted with the
//!   [`crate::report::redact::Redactor`] (docs/secrets.md, "Redaction").
//! - [`encrypt`]: plaintext bytes → a file that `sops -d` opens.
//!
//! Plaintext only ever lives in memory; errors name the file and key path, never a value.
//! YAML comments are not read (so they are not carried to the output); SOPS leaves them out of
//! the MAC, so files with comments still verify.

mod cipher;
pub mod config;
mod error;
mod keys;
mod tree;

use std::path::{Path, PathBuf};

use serde_json::Value;
use zeroize::Zeroizing;

pub use error::SopsError;
pub use keys::AgeKeys;
pub use tree::Rules;

use crate::{Error, Manifest, Result};
use cipher::Plain;
use keys::{DataKey, UnwrapError};
use tree::{Metadata, aad, walk_leaves};

/// The SOPS version ferry writes into files it encrypts (the format version it follows).
pub const SOPS_FORMAT_VERSION: &str = "3.9.0";

/// Prefix of the MAC-only-encrypted initialisation bytes (`sha256("sops")`), from SOPS.
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// File formats SOPS documents come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML, possibly several `---` documents (each carrying the same `sops:` block, as `sops`
    /// writes them, or each its own).
    Yaml,
    /// One JSON object.
    Json,
}

impl Format {
    /// `.json` → JSON, anything else → YAML (what manifests and Helm values use).
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Yaml,
        }
    }
}

fn err(path: &Path, message: impl Into<String>) -> Error {
    Error::Decrypt {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Cheap byte-level test: could these bytes be a SOPS file? No false negatives for files
/// written by `sops` or ferry; use [`is_encrypted`] to be sure.
pub fn looks_encrypted(bytes: &[u8]) -> bool {
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    has(b"sops") && has(b"lastmodified") && has(b"ENC[AES256_GCM,")
}

/// True if the bytes parse as YAML or JSON documents and one of them has a top-level `sops`
/// block with a `mac`.
pub fn is_encrypted(bytes: &[u8]) -> bool {
    if !looks_encrypted(bytes) {
        return false;
    }
    // JSON is YAML, so the YAML parser covers both.
    match serde_saphyr::from_slice_multiple::<Value>(bytes) {
        Ok(docs) => docs.iter().any(is_encrypted_value),
        Err(_) => serde_json::from_slice::<Value>(bytes)
            .map(|doc| is_encrypted_value(&doc))
            .unwrap_or(false),
    }
}

/// True if a parsed document has a top-level `sops` map with a `mac` (what Flux checks).
pub fn is_encrypted_value(doc: &Value) -> bool {
    doc.get("sops")
        .and_then(Value::as_object)
        .is_some_and(|sops| sops.contains_key("mac"))
}

/// Decrypt a SOPS file's bytes into plaintext bytes in the same format. `path` is only used in
/// error messages. Returns the plaintext in a buffer that is wiped on drop.
pub fn decrypt(
    bytes: &[u8],
    format: Format,
    path: &Path,
    keys: &AgeKeys,
) -> Result<Zeroizing<Vec<u8>>> {
    let mut docs = parse(bytes, format, path)?;
    decrypt_documents(&mut docs, path, keys)?;
    emit(&docs, format, path)
}

/// Receives each leaf that was encrypted, once decrypted: its key path and plaintext value.
pub type PlaintextSink<'a> = dyn FnMut(&[String], &Value) + 'a;

/// A sink that drops what it is given (callers that do not show objects).
fn ignore(_: &[String], _: &Value) {}

/// Decrypt parsed documents in place (all documents of one file). Documents that share one
/// `sops:` block (as `sops` writes multi-document YAML) are verified with one MAC over all of
/// them; documents with different blocks are each decrypted alone; documents without a block
/// are left as they are. Errors when none of the documents is encrypted.
pub fn decrypt_documents(docs: &mut [Value], path: &Path, keys: &AgeKeys) -> Result<()> {
    decrypt_documents_with(docs, path, keys, &mut ignore)
}

/// [`decrypt_documents`], handing every decrypted leaf to `sink`.
pub fn decrypt_documents_with(
    docs: &mut [Value],
    path: &Path,
    keys: &AgeKeys,
    sink: &mut PlaintextSink<'_>,
) -> Result<()> {
    let blocks: Vec<Option<Value>> = docs
        .iter()
        .map(|d| is_encrypted_value(d).then(|| d["sops"].clone()))
        .collect();
    let first = blocks
        .iter()
        .flatten()
        .next()
        .cloned()
        .ok_or_else(|| err(path, "has no sops metadata (not a SOPS-encrypted file)"))?;
    let shared = blocks.iter().all(|b| b.as_ref() == Some(&first));
    if shared {
        let meta = parse_metadata(&first, path)?;
        decrypt_tree(docs, &meta, path, keys, sink)
    } else {
        let many = docs.len() > 1;
        for (index, doc) in docs.iter_mut().enumerate() {
            if blocks[index].is_some() {
                let doc_path = if many {
                    PathBuf::from(format!("{} (document {})", path.display(), index + 1))
                } else {
                    path.to_path_buf()
                };
                decrypt_document_with(doc, &doc_path, keys, sink)?;
            }
        }
        Ok(())
    }
}

/// Decrypt one parsed document in place. Returns `false` (and leaves it alone) when it carries
/// no `sops` block.
pub fn decrypt_document(doc: &mut Value, path: &Path, keys: &AgeKeys) -> Result<bool> {
    decrypt_document_with(doc, path, keys, &mut ignore)
}

/// [`decrypt_document`], handing every decrypted leaf to `sink`.
pub fn decrypt_document_with(
    doc: &mut Value,
    path: &Path,
    keys: &AgeKeys,
    sink: &mut PlaintextSink<'_>,
) -> Result<bool> {
    if !is_encrypted_value(doc) {
        return Ok(false);
    }
    let meta = parse_metadata(&doc["sops"], path)?;
    decrypt_tree(std::slice::from_mut(doc), &meta, path, keys, sink)?;
    Ok(true)
}

/// Decrypt a manifest that carries a top-level `sops` key (Flux decrypts kustomize output this
/// way). Returns `false` when it has none. The MAC covers the original key order, so this only
/// verifies if the object still has its file's field order; renderers holding the parsed YAML
/// should prefer [`decrypt_document`] before building the [`Manifest`].
pub fn decrypt_manifest(manifest: &mut Manifest, keys: &AgeKeys) -> Result<bool> {
    decrypt_manifest_with(manifest, keys, &mut ignore)
}

/// [`decrypt_manifest`], handing every decrypted leaf to `sink`.
pub fn decrypt_manifest_with(
    manifest: &mut Manifest,
    keys: &AgeKeys,
    sink: &mut PlaintextSink<'_>,
) -> Result<bool> {
    let path = manifest.origin.file.clone();
    let mut doc = serde_json::to_value(&manifest.object)
        .map_err(|e| err(&path, format!("cannot read object {}: {e}", manifest.key())))?;
    if !decrypt_document_with(&mut doc, &path, keys, sink)? {
        return Ok(false);
    }
    manifest.object = serde_json::from_value(doc).map_err(|e| {
        // serde_json's message names a field or type, never a value.
        err(
            &path,
            format!("decrypted object is not a valid Kubernetes object: {e}"),
        )
    })?;
    Ok(true)
}

fn parse_metadata(block: &Value, path: &Path) -> Result<Metadata> {
    serde_json::from_value(block.clone())
        .map_err(|e| err(path, format!("invalid sops metadata block: {e}")))
}

/// Find the data key: try every age entry (top-level or in a single key group).
fn data_key(meta: &Metadata, path: &Path, keys: &AgeKeys) -> Result<DataKey> {
    let groups = meta.key_groups.as_deref().unwrap_or_default();
    if groups.len() > 1 {
        return Err(err(
            path,
            "uses several key groups (Shamir secret sharing), which ferry does not support; \
             re-encrypt with a single group of age recipients",
        ));
    }
    let entries: Vec<&tree::AgeEntry> = meta
        .age
        .iter()
        .flatten()
        .chain(groups.iter().flat_map(|g| g.age.iter().flatten()))
        .collect();
    if entries.is_empty() {
        let others = meta.other_key_types();
        let what = if others.is_empty() {
            "has no age recipients".to_string()
        } else {
            format!(
                "is encrypted only for {} keys; ferry decrypts age keys only — add an age \
                 recipient with `sops updatekeys` or `sops -r --add-age`",
                others.join(", ")
            )
        };
        return Err(err(path, what));
    }
    if keys.is_empty() {
        return Err(err(
            path,
            format!(
                "no age key available; this file is encrypted for {}. Provide the matching key \
                 via SOPS_AGE_KEY_FILE, SOPS_AGE_KEY or ~/.config/sops/age/keys.txt (agent: the \
                 decryption Secret)",
                recipients(&entries)
            ),
        ));
    }
    let mut malformed = false;
    for entry in &entries {
        match keys.unwrap_data_key(&entry.enc) {
            Ok(key) => return Ok(key),
            Err(UnwrapError::NoMatchingKey) => {}
            Err(UnwrapError::Malformed) => malformed = true,
        }
    }
    let mut message = format!(
        "none of the {} available age key(s) can decrypt this file; it is encrypted for {}",
        keys.len(),
        recipients(&entries)
    );
    if malformed {
        message.push_str(" (some age entries are corrupt)");
    }
    Err(err(path, message))
}

fn recipients(entries: &[&tree::AgeEntry]) -> String {
    entries
        .iter()
        .map(|e| e.recipient.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The running MAC: SHA-512 over leaf bytes.
struct Mac(aws_lc_rs::digest::Context);

impl Mac {
    fn new(mac_only_encrypted: bool) -> Self {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA512);
        if mac_only_encrypted {
            ctx.update(&MAC_ONLY_ENCRYPTED_INIT);
        }
        Self(ctx)
    }

    fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish_hex(self) -> String {
        hex::encode_upper(self.0.finish().as_ref())
    }
}

/// Decrypt all documents sharing `meta` and verify the MAC over them.
fn decrypt_tree(
    docs: &mut [Value],
    meta: &Metadata,
    path: &Path,
    keys: &AgeKeys,
    sink: &mut PlaintextSink<'_>,
) -> Result<()> {
    let rules = Rules::from_metadata(meta).map_err(|e| err(path, e.to_string()))?;
    let lastmodified = meta
        .lastmodified
        .as_deref()
        .ok_or_else(|| err(path, "sops metadata has no lastmodified"))?;
    let stored_mac = meta
        .mac
        .as_deref()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| err(path, "sops metadata has no mac"))?;
    let key = data_key(meta, path, keys)?;

    let mut mac = Mac::new(rules.mac_only_encrypted);
    for doc in docs.iter_mut() {
        if let Value::Object(map) = doc {
            map.shift_remove("sops");
        }
        let mut visit = |leaf: &mut Value, keypath: &[String]| -> Result<()> {
            let encrypted = rules.should_encrypt(keypath);
            let plain = if encrypted {
                let Value::String(enc) = &*leaf else {
                    return Err(err(
                        path,
                        format!(
                            "value at {} should be encrypted but is not a SOPS value; the file \
                             was edited without sops",
                            show_path(keypath)
                        ),
                    ));
                };
                let plain = cipher::decrypt(enc, &key, &aad(keypath))
                    .map_err(|e| err(path, format!("value at {} {e}", show_path(keypath))))?;
                *leaf = plain_to_value(&plain);
                sink(keypath, leaf);
                plain
            } else {
                value_to_plain(leaf)
            };
            if !rules.mac_only_encrypted || encrypted {
                mac.update(&plain.to_bytes());
            }
            Ok(())
        };
        walk_leaves(doc, &mut Vec::new(), &mut visit)?;
    }

    let computed = mac.finish_hex();
    let stored = match cipher::decrypt(stored_mac, &key, lastmodified) {
        Ok(Plain::Str(s)) => s,
        Ok(_) => {
            return Err(err(
                path,
                "the stored MAC has the wrong type; the file was tampered with",
            ));
        }
        Err(_) => {
            return Err(err(
                path,
                "the stored MAC cannot be decrypted (sops.mac or sops.lastmodified was changed); \
                 the file was tampered with",
            ));
        }
    };
    if aws_lc_rs::constant_time::verify_slices_are_equal(stored.as_bytes(), computed.as_bytes())
        .is_err()
    {
        return Err(err(
            path,
            "MAC mismatch: the file's values or their order were changed after encryption \
             (tampered, or edited without sops); refusing to use it",
        ));
    }
    Ok(())
}

fn show_path(keypath: &[String]) -> String {
    if keypath.is_empty() {
        "(root)".into()
    } else {
        keypath.join(".")
    }
}

/// A decrypted value as a JSON value.
fn plain_to_value(plain: &Plain) -> Value {
    match plain {
        Plain::Str(s) | Plain::Comment(s) => Value::String(s.clone()),
        Plain::Int(i) => Value::from(*i),
        Plain::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(cipher::go_format_float(*f))),
        Plain::Bool(b) => Value::Bool(*b),
        Plain::Bytes(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
    }
}

/// A clear leaf as SOPS would type it (for the MAC and for encryption).
fn value_to_plain(leaf: &Value) -> Plain {
    match leaf {
        Value::String(s) => Plain::Str(s.clone()),
        Value::Bool(b) => Plain::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Plain::Int(i),
            // u64 beyond i64: Go's yaml would give a float; keep the digits.
            (None, Some(u)) => Plain::Str(u.to_string()),
            _ => Plain::Float(n.as_f64().unwrap_or_default()),
        },
        // Maps, lists and nulls are never leaves (see walk_leaves).
        _ => Plain::Str(String::new()),
    }
}

/// Parse a file into documents. Parse errors give a position only, never content.
pub(crate) fn parse(bytes: &[u8], format: Format, path: &Path) -> Result<Vec<Value>> {
    match format {
        Format::Json => serde_json::from_slice::<Value>(bytes)
            .map(|doc| vec![doc])
            .map_err(|e| {
                err(
                    path,
                    format!("invalid JSON at line {} column {}", e.line(), e.column()),
                )
            }),
        Format::Yaml => {
            let docs = serde_saphyr::from_slice_multiple::<Value>(bytes).map_err(|e| {
                let at = e
                    .location()
                    .map(|l| format!(" at line {} column {}", l.line(), l.column()))
                    .unwrap_or_default();
                err(path, format!("invalid YAML{at}"))
            })?;
            Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
        }
    }
}

/// Serialise documents back to bytes (YAML keeps key order; JSON is pretty-printed).
pub(crate) fn emit(docs: &[Value], format: Format, path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    match format {
        Format::Json => {
            let doc = docs.first().cloned().unwrap_or(Value::Null);
            let mut out = serde_json::to_vec_pretty(&json_numbers(doc))
                .map_err(|e| err(path, format!("cannot write JSON: {e}")))?;
            out.push(b'\n');
            Ok(Zeroizing::new(out))
        }
        Format::Yaml => {
            let mut out = String::new();
            for (index, doc) in docs.iter().enumerate() {
                if index > 0 {
                    out.push_str("---\n");
                }
                let text = serde_saphyr::to_string_with_options(doc, yaml_options())
                    .map_err(|e| err(path, format!("cannot write YAML: {e}")))?;
                out.push_str(&text);
                if !out.ends_with('\n') {
                    out.push('\n');
                }
            }
            Ok(Zeroizing::new(out.into_bytes()))
        }
    }
}

/// YAML output style: literal blocks for multi-line strings, but never folded (`>`) scalars
/// for long single-line values such as `ENC[…]` strings, so files stay greppable.
pub fn yaml_options() -> serde_saphyr::SerializerOptions {
    let mut options = serde_saphyr::SerializerOptions::default();
    options.folded_wrap_chars = usize::MAX;
    options
}

/// SOPS reads every JSON number as a float; print integral ones without a fraction, as Go's
/// `json.Marshal` does.
fn json_numbers(value: Value) -> Value {
    match value {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(json_numbers).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, json_numbers(v))).collect())
        }
        other => other,
    }
}

/// How to encrypt: recipients and which values to encrypt.
#[derive(Debug, Clone, Default)]
pub struct EncryptOptions {
    /// age recipients (`age1…`); at least one.
    pub age_recipients: Vec<String>,
    /// Which leaves to encrypt (default: all but keys ending in `_unencrypted`).
    pub rules: Rules,
    /// Raw selector strings, written back into the `sops:` block (SOPS stores the regex text).
    pub selectors: Selectors,
}

/// The textual selector options as they appear in `.sops.yaml` and the `sops:` block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors {
    pub unencrypted_suffix: Option<String>,
    pub encrypted_suffix: Option<String>,
    pub unencrypted_regex: Option<String>,
    pub encrypted_regex: Option<String>,
    pub mac_only_encrypted: bool,
}

impl EncryptOptions {
    /// Validate selectors and build options.
    pub fn new(
        age_recipients: Vec<String>,
        selectors: Selectors,
    ) -> std::result::Result<Self, SopsError> {
        if age_recipients.is_empty() {
            return Err(SopsError::NoRecipient);
        }
        let rules = Rules::new(
            selectors.unencrypted_suffix.clone(),
            selectors.encrypted_suffix.clone(),
            selectors.unencrypted_regex.clone(),
            selectors.encrypted_regex.clone(),
            selectors.mac_only_encrypted,
        )?;
        Ok(Self {
            age_recipients,
            rules,
            selectors,
        })
    }
}

/// Encrypt plaintext YAML/JSON into a SOPS file that `sops -d` opens. Refuses input that is
/// already encrypted.
pub fn encrypt(
    plaintext: &[u8],
    format: Format,
    path: &Path,
    options: &EncryptOptions,
) -> Result<Vec<u8>> {
    let mut docs = parse(plaintext, format, path)?;
    if docs.iter().any(is_encrypted_value) {
        return Err(err(path, "is already SOPS-encrypted"));
    }
    if docs.is_empty() {
        return Err(err(path, "is empty; nothing to encrypt"));
    }
    for doc in &docs {
        if !doc.is_object() {
            return Err(err(
                path,
                "SOPS can only encrypt documents that are maps (key: value) at the top level",
            ));
        }
    }
    let rules = &options.rules;
    let mut key = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(key.as_mut_slice())
        .map_err(|_| err(path, "cannot generate a data key (no system randomness)"))?;

    let mut mac = Mac::new(rules.mac_only_encrypted);
    for doc in docs.iter_mut() {
        let mut visit = |leaf: &mut Value, keypath: &[String]| -> Result<()> {
            let mut plain = value_to_plain(leaf);
            // SOPS's JSON store reads every number as a float.
            if format == Format::Json
                && let Plain::Int(i) = plain
            {
                plain = Plain::Float(i as f64);
            }
            let encrypted = rules.should_encrypt(keypath);
            if !rules.mac_only_encrypted || encrypted {
                mac.update(&plain.to_bytes());
            }
            if encrypted {
                let enc = cipher::encrypt(&plain, &key, &aad(keypath)).map_err(|e| {
                    err(
                        path,
                        format!("cannot encrypt value at {}: {e}", show_path(keypath)),
                    )
                })?;
                *leaf = Value::String(enc);
            }
            Ok(())
        };
        walk_leaves(doc, &mut Vec::new(), &mut visit)?;
    }

    let lastmodified = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mac_enc = cipher::encrypt(&Plain::Str(mac.finish_hex()), &key, &lastmodified)
        .map_err(|e| err(path, format!("cannot encrypt the MAC: {e}")))?;

    let mut age = Vec::new();
    for recipient in &options.age_recipients {
        let enc = keys::wrap_data_key(&key, recipient).map_err(|e| err(path, e.to_string()))?;
        age.push(serde_json::json!({ "recipient": recipient, "enc": enc }));
    }
    let mut block = serde_json::Map::new();
    block.insert("age".into(), Value::Array(age));
    block.insert("lastmodified".into(), Value::String(lastmodified));
    block.insert("mac".into(), Value::String(mac_enc));
    let sel = &options.selectors;
    for (name, value) in [
        ("unencrypted_suffix", &sel.unencrypted_suffix),
        ("encrypted_suffix", &sel.encrypted_suffix),
        ("unencrypted_regex", &sel.unencrypted_regex),
        ("encrypted_regex", &sel.encrypted_regex),
    ] {
        if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
            block.insert(name.into(), Value::String(v.clone()));
        }
    }
    if sel.unencrypted_suffix.is_none()
        && sel.encrypted_suffix.is_none()
        && sel.unencrypted_regex.is_none()
        && sel.encrypted_regex.is_none()
    {
        block.insert(
            "unencrypted_suffix".into(),
            Value::String(tree::DEFAULT_UNENCRYPTED_SUFFIX.into()),
        );
    }
    if sel.mac_only_encrypted {
        block.insert("mac_only_encrypted".into(), Value::Bool(true));
    }
    block.insert("version".into(), Value::String(SOPS_FORMAT_VERSION.into()));
    for doc in docs.iter_mut() {
        if let Value::Object(map) = doc {
            map.insert("sops".into(), Value::Object(block.clone()));
        }
    }
    // The output holds only ciphertext, so it may leave the zeroizing buffer.
    Ok(emit(&docs, format, path)?.to_vec())
}
