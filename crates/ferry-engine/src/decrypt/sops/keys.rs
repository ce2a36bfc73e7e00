//! age identities for SOPS: where they come from (`SOPS_AGE_KEY`, `SOPS_AGE_KEY_FILE`, the
//! default `~/.config/sops/age/keys.txt`, or key text from a Kubernetes Secret) and unwrapping a
//! file's data key with them. Key material never appears in `Debug` output or error messages,
//! and is wiped from memory after use: key text is only held in [`Zeroizing`] buffers, the
//! parsed identities are x25519-dalek `StaticSecret`s (zeroized on drop), and unwrapped data
//! keys are [`DataKey`]s.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use zeroize::Zeroizing;

use super::error::SopsError;
use crate::{Error, Result};

/// The 32-byte SOPS data key; wiped from memory on drop.
pub(crate) type DataKey = Zeroizing<[u8; 32]>;

/// A set of age X25519 identities able to open SOPS files.
///
/// Build it with [`AgeKeys::from_env`] (the CLI: what `sops` itself would use),
/// [`AgeKeys::from_text`] (the agent: the text of a Secret key, e.g. `age.agekey`),
/// or [`AgeKeys::from_file`]; combine sets with [`AgeKeys::extend`].
#[derive(Clone, Default)]
pub struct AgeKeys {
    identities: Vec<age::x25519::Identity>,
    /// Where the identities came from (file names, "SOPS_AGE_KEY"), for messages only.
    sources: Vec<String>,
}

impl fmt::Debug for AgeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print identities: only how many there are and where they came from.
        f.debug_struct("AgeKeys")
            .field("identities", &self.identities.len())
            .field("sources", &self.sources)
            .finish()
    }
}

impl AgeKeys {
    /// No keys at all (decryption will fail with a message saying how to provide one).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Parse age identity text: one `AGE-SECRET-KEY-1…` per line, `#` comments and blank lines
    /// ignored (the format of `age-keygen` output and of SOPS key files).
    pub fn from_text(text: &str) -> Result<Self> {
        Self::parse(text, "age key text")
    }

    /// The identities in a Kubernetes Secret's data: every value whose key ends in `.agekey`
    /// (Flux's convention). `source` (e.g. `Secret team-a/sops-keys`) names it in messages. The
    /// values are copied into a zeroizing buffer; the caller should wipe its own copy of the
    /// Secret's data (see [`AgeKeys::wipe_secret_data`]).
    pub fn from_secret_data<'a>(
        source: &str,
        data: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Self> {
        let mut text = Zeroizing::new(String::new());
        let mut found = false;
        for (key, value) in data {
            if !key.ends_with(".agekey") {
                continue;
            }
            found = true;
            // Non-UTF-8 bytes cannot be a key line; lossy conversion only affects such lines
            // (it copies them: the copy is dropped at once and holds no valid identity).
            text.push_str(&String::from_utf8_lossy(value));
            text.push('\n');
        }
        if !found {
            return Err(Error::Decrypt {
                path: PathBuf::from(source),
                message:
                    "has no `*.agekey` entries (expected e.g. `age.agekey: AGE-SECRET-KEY-1…`)"
                        .into(),
            });
        }
        Self::parse(&text, source)
    }

    /// Overwrite the bytes of a Secret's data values (after [`AgeKeys::from_secret_data`]), so
    /// the key text does not linger in freed memory.
    pub fn wipe_secret_data<'a>(values: impl IntoIterator<Item = &'a mut Vec<u8>>) {
        use zeroize::Zeroize;
        for value in values {
            value.zeroize();
        }
    }

    /// Read an age identity file (like `SOPS_AGE_KEY_FILE`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let mut text = Zeroizing::new(String::new());
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(|err| Error::Source {
                path: path.to_path_buf(),
                message: format!("cannot read age key file: {err}"),
            })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The keys `sops` would use: `SOPS_AGE_KEY` (key text), `SOPS_AGE_KEY_FILE`, and the
    /// default key file (`$XDG_CONFIG_HOME/sops/age/keys.txt`, else
    /// `~/.config/sops/age/keys.txt`) when it exists. All that are present are combined.
    pub fn from_env() -> Result<Self> {
        let mut keys = Self::empty();
        if let Ok(text) = std::env::var("SOPS_AGE_KEY") {
            let text = Zeroizing::new(text);
            keys.extend(Self::parse(&text, "SOPS_AGE_KEY")?);
        }
        if let Some(file) = std::env::var_os("SOPS_AGE_KEY_FILE") {
            keys.extend(Self::from_file(Path::new(&file))?);
        }
        if let Some(default) = default_key_file()
            && default.is_file()
        {
            keys.extend(Self::from_file(&default)?);
        }
        Ok(keys)
    }

    /// Add the identities of `other`.
    pub fn extend(&mut self, other: AgeKeys) {
        self.identities.extend(other.identities);
        self.sources.extend(other.sources);
    }

    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
    }

    pub fn len(&self) -> usize {
        self.identities.len()
    }

    /// The public recipients (`age1…`) of these identities.
    pub fn recipients(&self) -> Vec<String> {
        self.identities
            .iter()
            .map(|id| id.to_public().to_string())
            .collect()
    }

    fn parse(text: &str, source: &str) -> Result<Self> {
        let mut identities = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // The line is secret: say where it is, never what it is.
            let identity = age::x25519::Identity::from_str(line).map_err(|_| Error::Decrypt {
                path: PathBuf::from(source),
                message: format!(
                    "line {} is not an age identity (expected AGE-SECRET-KEY-1…, as written by age-keygen)",
                    index + 1
                ),
            })?;
            identities.push(identity);
        }
        if identities.is_empty() {
            return Err(Error::Decrypt {
                path: PathBuf::from(source),
                message: "contains no age identity (expected a line AGE-SECRET-KEY-1…)".into(),
            });
        }
        Ok(Self {
            identities,
            sources: vec![source.to_string()],
        })
    }

    /// Open one `enc` entry (an armored age file wrapping the data key). `None` when none of
    /// our identities is a recipient of it.
    pub(crate) fn unwrap_data_key(&self, enc: &str) -> std::result::Result<DataKey, UnwrapError> {
        let armored = age::armor::ArmoredReader::new(enc.as_bytes());
        let decryptor = age::Decryptor::new(armored).map_err(|_| UnwrapError::Malformed)?;
        let mut reader = match decryptor.decrypt(
            self.identities
                .iter()
                .map(|identity| identity as &dyn age::Identity),
        ) {
            Ok(reader) => reader,
            Err(age::DecryptError::NoMatchingKeys) => return Err(UnwrapError::NoMatchingKey),
            Err(_) => return Err(UnwrapError::Malformed),
        };
        let mut plain = Zeroizing::new(Vec::with_capacity(32));
        reader
            .read_to_end(&mut plain)
            .map_err(|_| UnwrapError::Malformed)?;
        let key: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| UnwrapError::Malformed)?;
        Ok(Zeroizing::new(key))
    }

    /// Text form of the identities (for writing a key file in tests and `ferry secrets` tools).
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::new());
        for identity in &self.identities {
            out.push_str(identity.to_string().expose_secret());
            out.push('\n');
        }
        out
    }

    /// A fresh random identity (for tests and `ferry secrets` key generation).
    pub fn generate() -> Self {
        Self {
            identities: vec![age::x25519::Identity::generate()],
            sources: vec!["generated".into()],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnwrapError {
    NoMatchingKey,
    Malformed,
}

/// Wrap a data key for age recipients, armored, as `sops` stores it in `sops.age[].enc`.
pub(crate) fn wrap_data_key(
    key: &[u8; 32],
    recipient: &str,
) -> std::result::Result<String, SopsError> {
    let parsed = age::x25519::Recipient::from_str(recipient).map_err(|reason| {
        SopsError::InvalidRecipient {
            recipient: recipient.to_string(),
            reason,
        }
    })?;
    let wrap = |source: Box<dyn std::error::Error + Send + Sync>| SopsError::WrapDataKey { source };
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&parsed as &dyn age::Recipient))
            .map_err(|err| wrap(Box::new(err)))?;
    let mut out = Vec::new();
    let armored = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
        .map_err(|err| wrap(Box::new(err)))?;
    let mut writer = encryptor
        .wrap_output(armored)
        .map_err(|err| wrap(Box::new(err)))?;
    std::io::Write::write_all(&mut writer, key).map_err(|err| wrap(Box::new(err)))?;
    writer
        .finish()
        .and_then(|armored| armored.finish())
        .map_err(|err| wrap(Box::new(err)))?;
    String::from_utf8(out).map_err(|err| wrap(Box::new(err)))
}

fn default_key_file() -> Option<PathBuf> {
    let config = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(config.join("sops").join("age").join("keys.txt"))
}

#[cfg(test)]
mod secret_data_tests {
    use super::*;

    #[test]
    fn keys_come_only_from_agekey_entries_and_errors_never_show_them() {
        let key = AgeKeys::generate();
        let text = key.to_text();
        let keys = AgeKeys::from_secret_data(
            "Secret a/keys",
            [
                ("age.agekey", text.as_bytes()),
                ("other", b"not a key".as_slice()),
            ],
        )
        .expect("keys");
        assert_eq!(keys.recipients(), key.recipients());
        let err = AgeKeys::from_secret_data("Secret a/keys", [("x", text.as_bytes())])
            .expect_err("no agekey entry");
        assert!(err.to_string().contains("Secret a/keys"), "{err}");
        let bad = AgeKeys::from_secret_data(
            "Secret a/keys",
            [("age.agekey", b"AGE-SECRET-KEY-1NOTAKEY".as_slice())],
        )
        .expect_err("not a key");
        assert!(!bad.to_string().contains("NOTAKEY"), "{bad}");
        let mut values = [text.as_bytes().to_vec()];
        AgeKeys::wipe_secret_data(values.iter_mut());
        assert!(values[0].is_empty());
    }
}
