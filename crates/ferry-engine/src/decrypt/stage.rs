//! Stage 3 on a render's output: what the renderers produced, in order and some of it still
//! SOPS ciphertext ([`Rendered`]), becomes plaintext [`Manifest`]s. Every decrypted leaf is
//! registered with the caller's [`Redactor`] (docs/secrets.md, "Redaction").
//!
//! Three shapes of encrypted output, because the SOPS MAC covers a file's leaves in their
//! written order and must be verified against exactly that:
//! - [`Rendered::push_encrypted_file`]: a manifest file as written (plain renderer), decrypted
//!   as one SOPS file before its documents become typed objects;
//! - [`Rendered::push_build_output`]: a build that re-sorted fields (kustomize): its encrypted
//!   source files are verified and decrypted as written, and their plaintext is matched to the
//!   output by ciphertext (a ciphertext not found in them was changed by the build and is
//!   refused); objects from nowhere known are decrypted in place;
//! - objects that still carry a `sops:` block ([`Rendered::push_objects`]: helm output, stdin,
//!   Flux-style per-object encryption) are decrypted in place.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::sops::{self, AgeKeys};
use crate::report::redact::Redactor;
use crate::{Error, Manifest, Origin, Result};

/// A render's output on its way to decryption, in output order.
#[derive(Debug, Default)]
pub struct Rendered {
    parts: Vec<Part>,
}

#[derive(Debug)]
enum Part {
    /// Typed objects; any that still carries a `sops:` block is decrypted in place.
    Objects(Vec<Manifest>),
    /// Every document of one SOPS-encrypted manifest file, as written.
    EncryptedFile {
        file: PathBuf,
        documents: Vec<Value>,
    },
    /// A build's output with SOPS objects in it, and the encrypted files it was built from.
    BuildOutput {
        origin: PathBuf,
        documents: Vec<Value>,
        sources: Vec<EncryptedSource>,
    },
}

/// A SOPS-encrypted file a build read: its bytes as written, and its name for messages.
#[derive(Debug, Clone)]
pub struct EncryptedSource {
    pub shown: PathBuf,
    pub bytes: Vec<u8>,
}

impl From<Vec<Manifest>> for Rendered {
    fn from(manifests: Vec<Manifest>) -> Self {
        let mut rendered = Self::default();
        rendered.push_objects(manifests);
        rendered
    }
}

impl Rendered {
    /// Typed objects (plaintext, or carrying a per-object `sops:` block).
    pub fn push_objects(&mut self, manifests: impl IntoIterator<Item = Manifest>) {
        if let Some(Part::Objects(last)) = self.parts.last_mut() {
            last.extend(manifests);
        } else {
            self.parts
                .push(Part::Objects(manifests.into_iter().collect()));
        }
    }

    /// The documents of a SOPS-encrypted manifest file as written (`file` as shown to users).
    pub fn push_encrypted_file(&mut self, file: PathBuf, documents: Vec<Value>) {
        self.parts.push(Part::EncryptedFile { file, documents });
    }

    /// A build's output documents that carry `sops:` blocks, and the encrypted source files
    /// the build read (see the module doc).
    pub fn push_build_output(
        &mut self,
        origin: PathBuf,
        documents: Vec<Value>,
        sources: Vec<EncryptedSource>,
    ) {
        self.parts.push(Part::BuildOutput {
            origin,
            documents,
            sources,
        });
    }
}

/// The age keys for one render: the caller's, else what `sops` would use (`SOPS_AGE_KEY`,
/// `SOPS_AGE_KEY_FILE`, the default key file), loaded only when something is encrypted.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    loaded: Option<AgeKeys>,
}

impl Keys {
    pub fn new(given: Option<AgeKeys>) -> Self {
        Self { loaded: given }
    }

    pub fn get(&mut self) -> Result<&AgeKeys> {
        if self.loaded.is_none() {
            self.loaded = Some(AgeKeys::from_env()?);
        }
        Ok(self.loaded.get_or_insert_with(AgeKeys::empty))
    }
}

/// Decrypt a render's output into plaintext manifests, in order. Every decrypted leaf goes to
/// `redactor`, also when a later part fails.
pub fn decrypt(
    rendered: Rendered,
    keys: &mut Keys,
    redactor: &mut Redactor,
) -> Result<Vec<Manifest>> {
    let mut parts = rendered.parts.into_iter();
    // The usual case, nothing encrypted in a file or a build: the one list, as it is.
    let mut manifests = match parts.next() {
        Some(Part::Objects(manifests)) => manifests,
        Some(other) => decrypt_part(other, keys, redactor)?,
        None => Vec::new(),
    };
    for part in parts {
        match part {
            Part::Objects(objects) => manifests.extend(objects),
            other => manifests.extend(decrypt_part(other, keys, redactor)?),
        }
    }
    for manifest in manifests.iter_mut().filter(|m| carries_sops(m)) {
        let keys = keys.get()?;
        sops::decrypt_manifest_with(manifest, keys, &mut |keypath, value| {
            redactor.add_object_leaf(keypath, value)
        })?;
    }
    Ok(manifests)
}

fn decrypt_part(part: Part, keys: &mut Keys, redactor: &mut Redactor) -> Result<Vec<Manifest>> {
    match part {
        Part::Objects(manifests) => Ok(manifests),
        Part::EncryptedFile { file, documents } => decrypt_file(&file, documents, keys, redactor),
        Part::BuildOutput {
            origin,
            documents,
            sources,
        } => decrypt_build_output(&origin, documents, &sources, keys, redactor),
    }
}

fn carries_sops(manifest: &Manifest) -> bool {
    manifest
        .object
        .data
        .get("sops")
        .is_some_and(|s| s.get("mac").is_some())
}

/// A SOPS-encrypted manifest file's documents → manifests.
fn decrypt_file(
    file: &Path,
    mut documents: Vec<Value>,
    keys: &mut Keys,
    redactor: &mut Redactor,
) -> Result<Vec<Manifest>> {
    let keys = keys.get()?;
    sops::decrypt_documents_with(&mut documents, file, keys, &mut |keypath, value| {
        redactor.add_object_leaf(keypath, value)
    })?;
    let mut manifests = Vec::new();
    for (document, mut doc) in documents.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        if let Some(map) = doc.as_object_mut() {
            map.remove("sops");
        }
        let origin = Origin {
            file: file.to_path_buf(),
            document,
            line: None,
        };
        manifests.push(crate::yaml::to_manifest(doc, &origin)?);
    }
    Ok(manifests)
}

/// Plaintext of encrypted source documents: `sops.mac` → (ciphertext string → plaintext).
type SourcePlaintext = HashMap<String, HashMap<String, Value>>;

/// Verify and decrypt a build's SOPS source files as written (MAC in their own field order).
fn decrypt_sources(
    sources: &[EncryptedSource],
    keys: &mut Keys,
    redactor: &mut Redactor,
) -> Result<SourcePlaintext> {
    let mut by_mac = SourcePlaintext::new();
    for EncryptedSource { shown, bytes } in sources {
        let text = std::str::from_utf8(bytes).map_err(|_| Error::Source {
            path: shown.clone(),
            message: "not UTF-8".into(),
        })?;
        let docs: Vec<Value> =
            serde_saphyr::from_str_multiple_with_options(text, crate::yaml::options()).map_err(
                |err| Error::Source {
                    path: shown.clone(),
                    message: format!("invalid YAML: {}", err.without_snippet()),
                },
            )?;
        if !docs.iter().any(sops::is_encrypted_value) {
            continue;
        }
        let mut plain = docs.clone();
        let keys = keys.get()?;
        sops::decrypt_documents_with(&mut plain, shown, keys, &mut |keypath, value| {
            redactor.add_object_leaf(keypath, value)
        })?;
        for (encrypted, decrypted) in docs.iter().zip(&plain) {
            let Some(mac) = encrypted.pointer("/sops/mac").and_then(Value::as_str) else {
                continue;
            };
            let entry = by_mac.entry(mac.to_string()).or_default();
            pair_leaves(encrypted, decrypted, entry);
        }
    }
    Ok(by_mac)
}

fn pair_leaves(encrypted: &Value, plain: &Value, out: &mut HashMap<String, Value>) {
    match (encrypted, plain) {
        (Value::String(cipher), plain) if cipher.starts_with("ENC[") => {
            out.insert(cipher.clone(), plain.clone());
        }
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a.iter().filter(|(k, _)| k.as_str() != "sops") {
                if let Some(other) = b.get(key) {
                    pair_leaves(value, other, out);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (x, y) in a.iter().zip(b) {
                pair_leaves(x, y, out);
            }
        }
        _ => {}
    }
}

/// Replace ciphertext leaves with their verified plaintext; the first unknown one, if any.
fn substitute_plaintext(value: &mut Value, plain: &HashMap<String, Value>) -> Option<String> {
    match value {
        Value::String(cipher) if cipher.starts_with("ENC[") => match plain.get(cipher.as_str()) {
            Some(p) => {
                *value = p.clone();
                None
            }
            None => Some(String::from("a value")),
        },
        Value::Array(items) => items
            .iter_mut()
            .filter_map(|v| substitute_plaintext(v, plain))
            .next_back(),
        Value::Object(map) => {
            let mut missing = None;
            for (key, v) in map.iter_mut().filter(|(k, _)| k.as_str() != "sops") {
                if let Some(m) = substitute_plaintext(v, plain) {
                    missing = Some(if m == "a value" {
                        key.clone()
                    } else {
                        format!("{key}.{m}")
                    });
                }
            }
            missing
        }
        _ => None,
    }
}

/// A build's output documents → manifests, decrypting those with a `sops:` block: from their
/// verified source documents when known, else in place.
fn decrypt_build_output(
    origin_file: &Path,
    documents: Vec<Value>,
    sources: &[EncryptedSource],
    keys: &mut Keys,
    redactor: &mut Redactor,
) -> Result<Vec<Manifest>> {
    let source_plaintext = decrypt_sources(sources, keys, redactor)?;
    let mut manifests = Vec::new();
    for (document, mut doc) in documents.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let origin = Origin {
            file: origin_file.to_path_buf(),
            document,
            line: None,
        };
        if sops::is_encrypted_value(&doc) {
            let path = origin_file.join(object_name(&doc));
            let known = doc
                .pointer("/sops/mac")
                .and_then(Value::as_str)
                .and_then(|mac| source_plaintext.get(mac));
            if let Some(plain) = known {
                if let Some(field) = substitute_plaintext(&mut doc, plain) {
                    return Err(Error::Decrypt {
                        path,
                        message: format!(
                            "encrypted field {field} does not come from the encrypted source file (changed by a kustomize patch?); encrypt the final value instead"
                        ),
                    });
                }
            } else {
                let keys = keys.get()?;
                sops::decrypt_document_with(&mut doc, &path, keys, &mut |keypath, value| {
                    redactor.add_object_leaf(keypath, value)
                })?;
            }
            if let Some(map) = doc.as_object_mut() {
                map.remove("sops");
            }
        }
        manifests.push(crate::yaml::to_manifest(doc, &origin)?);
    }
    Ok(manifests)
}

fn object_name(doc: &Value) -> String {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("object");
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    format!("{kind}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decrypt::sops::{EncryptOptions, Format, Selectors};

    const SECRET: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: hunter2-s3cret\n";

    fn encrypted(keys: &AgeKeys, plain: &str) -> String {
        let options = EncryptOptions::new(
            keys.recipients(),
            Selectors {
                encrypted_regex: Some("^(data|stringData)$".to_string()),
                ..Selectors::default()
            },
        )
        .expect("options");
        let bytes = sops::encrypt(
            plain.as_bytes(),
            Format::Yaml,
            Path::new("s.yaml"),
            &options,
        )
        .expect("encrypt");
        String::from_utf8(bytes).expect("utf-8")
    }

    fn documents(text: &str) -> Vec<Value> {
        serde_saphyr::from_str_multiple_with_options(text, crate::yaml::options()).expect("yaml")
    }

    fn config_map(name: &str) -> Manifest {
        let text = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n");
        crate::yaml::parse_bytes(text.as_bytes(), Path::new("cm.yaml"))
            .expect("parse")
            .remove(0)
    }

    /// Parts come out in render order; an encrypted file is decrypted, loses its `sops:`
    /// block, and its plaintext is registered for redaction.
    #[test]
    fn parts_keep_their_order_and_plaintext_is_registered() {
        let age = AgeKeys::generate();
        let mut rendered = Rendered::from(vec![config_map("first")]);
        rendered.push_encrypted_file(
            PathBuf::from("secret.yaml"),
            documents(&encrypted(&age, SECRET)),
        );
        rendered.push_objects([config_map("last")]);
        let mut redactor = Redactor::new();
        let manifests =
            decrypt(rendered, &mut Keys::new(Some(age)), &mut redactor).expect("decrypt");
        let names: Vec<&str> = manifests.iter().map(|m| m.name()).collect();
        assert_eq!(names, ["first", "db", "last"]);
        let secret = &manifests[1].object.data;
        assert_eq!(secret["stringData"]["password"], "hunter2-s3cret");
        assert!(secret.get("sops").is_none());
        assert_eq!(manifests[1].origin.file, PathBuf::from("secret.yaml"));
        assert_eq!(redactor.redact("pw hunter2-s3cret"), "pw [REDACTED]");
    }

    /// A build's output takes its plaintext from the verified source file, matched by
    /// ciphertext; a ciphertext the source does not hold (a patch changed it) is refused with
    /// the object named and no value shown.
    #[test]
    fn build_output_pairs_ciphertext_with_its_source() {
        let age = AgeKeys::generate();
        let source = encrypted(&age, SECRET);
        let sources = vec![EncryptedSource {
            shown: PathBuf::from("base/secret.yaml"),
            bytes: source.clone().into_bytes(),
        }];
        // kustomize re-sorts fields and adds a namespace: the MAC over the output would fail.
        let mut built = documents(&source).remove(0);
        built["metadata"]["namespace"] = Value::from("prod");
        let mut rendered = Rendered::default();
        rendered.push_build_output(
            PathBuf::from("kustomize build ."),
            vec![built.clone()],
            sources.clone(),
        );
        let mut keys = Keys::new(Some(age));
        let manifests = decrypt(rendered, &mut keys, &mut Redactor::new()).expect("decrypt");
        assert_eq!(manifests[0].namespace(), Some("prod"));
        assert_eq!(
            manifests[0].object.data["stringData"]["password"],
            "hunter2-s3cret"
        );

        let other = documents(&encrypted(&keys.get().expect("keys").clone(), SECRET)).remove(0);
        built["stringData"]["password"] = other["stringData"]["password"].clone();
        let mut rendered = Rendered::default();
        rendered.push_build_output(PathBuf::from("kustomize build ."), vec![built], sources);
        let err = decrypt(rendered, &mut keys, &mut Redactor::new())
            .expect_err("changed ciphertext")
            .to_string();
        assert!(err.contains("Secret/db"), "{err}");
        assert!(err.contains("stringData.password"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
