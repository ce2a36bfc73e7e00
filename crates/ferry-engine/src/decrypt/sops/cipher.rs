//! One SOPS value: `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`, AES-256-GCM with SOPS's
//! 32-byte IV and the key path as AAD. aws-lc-rs only offers 96-bit GCM nonces, so this uses the
//! RustCrypto `aes-gcm` crate, which supports the longer nonce SOPS chose.

use std::fmt;

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce, Tag};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

type SopsGcm = AesGcm<Aes256, U32>;

const IV_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// A decrypted leaf. `Debug` never shows the value.
#[derive(Clone, PartialEq)]
pub(crate) enum Plain {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Bytes(Vec<u8>),
    Comment(String),
}

impl fmt::Debug for Plain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Plain::Str(_) => "str",
            Plain::Int(_) => "int",
            Plain::Float(_) => "float",
            Plain::Bool(_) => "bool",
            Plain::Bytes(_) => "bytes",
            Plain::Comment(_) => "comment",
        };
        write!(f, "Plain::{kind}(<redacted>)")
    }
}

impl Plain {
    /// The bytes SOPS encrypts and feeds into the MAC for this value (Go's `ToBytes`).
    pub(crate) fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(match self {
            Plain::Str(s) | Plain::Comment(s) => s.as_bytes().to_vec(),
            Plain::Int(i) => i.to_string().into_bytes(),
            Plain::Float(f) => go_format_float(*f).into_bytes(),
            Plain::Bool(true) => b"True".to_vec(),
            Plain::Bool(false) => b"False".to_vec(),
            Plain::Bytes(b) => b.clone(),
        })
    }

    fn type_name(&self) -> &'static str {
        match self {
            Plain::Str(_) => "str",
            Plain::Int(_) => "int",
            Plain::Float(_) => "float",
            Plain::Bool(_) => "bool",
            Plain::Bytes(_) => "bytes",
            Plain::Comment(_) => "comment",
        }
    }
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: shortest round-trip digits, never an exponent.
/// Rust's `Display` for `f64` has the same contract for finite values.
pub(crate) fn go_format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{f}")
    }
}

/// Why a value could not be decrypted. Carries no plaintext and no ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CipherError {
    #[error("is not a SOPS encrypted value (expected ENC[AES256_GCM,data:…,iv:…,tag:…,type:…])")]
    Format,
    #[error("has an invalid {0} field (not base64 of the right length)")]
    Field(&'static str),
    #[error("failed authentication (tampered value, or it was moved to another key)")]
    Auth,
    #[error("decrypts to something that is not a valid {0}")]
    Type(String),
    #[error("has unknown type {0:?}")]
    UnknownType(String),
}

/// True if `value` has the shape of an encrypted SOPS value.
#[cfg(test)]
pub(crate) fn is_enc(value: &str) -> bool {
    value.starts_with("ENC[AES256_GCM,data:") && value.ends_with(']')
}

struct Parts<'a> {
    data: &'a str,
    iv: &'a str,
    tag: &'a str,
    kind: &'a str,
}

fn parse(value: &str) -> Result<Parts<'_>, CipherError> {
    let inner = value
        .strip_prefix("ENC[AES256_GCM,")
        .and_then(|v| v.strip_suffix(']'))
        .ok_or(CipherError::Format)?;
    // Base64 never contains ',' so splitting on ",iv:" etc. is unambiguous.
    let rest = inner.strip_prefix("data:").ok_or(CipherError::Format)?;
    let (data, rest) = rest.split_once(",iv:").ok_or(CipherError::Format)?;
    let (iv, rest) = rest.split_once(",tag:").ok_or(CipherError::Format)?;
    let (tag, kind) = rest.split_once(",type:").ok_or(CipherError::Format)?;
    Ok(Parts {
        data,
        iv,
        tag,
        kind,
    })
}

/// Decrypt one value with the data key and its AAD (`a:b:c:`). An empty string stays empty:
/// SOPS does not encrypt empty strings.
pub(crate) fn decrypt(value: &str, key: &[u8; 32], aad: &str) -> Result<Plain, CipherError> {
    if value.is_empty() {
        return Ok(Plain::Str(String::new()));
    }
    let parts = parse(value)?;
    let mut buf = Zeroizing::new(
        STANDARD
            .decode(parts.data)
            .map_err(|_| CipherError::Field("data"))?,
    );
    let iv = STANDARD
        .decode(parts.iv)
        .map_err(|_| CipherError::Field("iv"))?;
    let tag = STANDARD
        .decode(parts.tag)
        .map_err(|_| CipherError::Field("tag"))?;
    if iv.len() != IV_LEN {
        return Err(CipherError::Field("iv"));
    }
    if tag.len() != TAG_LEN {
        return Err(CipherError::Field("tag"));
    }
    let cipher = SopsGcm::new(key.into());
    cipher
        .decrypt_in_place_detached(
            Nonce::<U32>::from_slice(&iv),
            aad.as_bytes(),
            &mut buf,
            Tag::from_slice(&tag),
        )
        .map_err(|_| CipherError::Auth)?;
    let text = || -> Result<String, CipherError> {
        String::from_utf8(buf.to_vec()).map_err(|_| CipherError::Type(parts.kind.to_string()))
    };
    let bad = || CipherError::Type(parts.kind.to_string());
    Ok(match parts.kind {
        "str" => Plain::Str(text()?),
        "int" | "int64" => Plain::Int(text()?.parse().map_err(|_| bad())?),
        "float" => Plain::Float(text()?.parse().map_err(|_| bad())?),
        "bool" => Plain::Bool(parse_go_bool(&text()?).ok_or_else(bad)?),
        "bytes" => Plain::Bytes(buf.to_vec()),
        "comment" => Plain::Comment(text()?),
        other => return Err(CipherError::UnknownType(other.to_string())),
    })
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Encrypt one value with a fresh random IV. Empty strings stay empty, as SOPS does.
pub(crate) fn encrypt(plain: &Plain, key: &[u8; 32], aad: &str) -> Result<String, CipherError> {
    if matches!(plain, Plain::Str(s) if s.is_empty()) {
        return Ok(String::new());
    }
    let mut iv = [0u8; IV_LEN];
    aws_lc_rs::rand::fill(&mut iv).map_err(|_| CipherError::Field("iv"))?;
    let mut buf = plain.to_bytes();
    let cipher = SopsGcm::new(key.into());
    let tag = cipher
        .encrypt_in_place_detached(Nonce::<U32>::from_slice(&iv), aad.as_bytes(), &mut buf)
        .map_err(|_| CipherError::Auth)?;
    Ok(format!(
        "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{}]",
        STANDARD.encode(buf.as_slice()),
        STANDARD.encode(iv),
        STANDARD.encode(tag),
        plain.type_name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_each_type_and_aad_binding() {
        let key = [7u8; 32];
        for plain in [
            Plain::Str("line1\nline2".into()),
            Plain::Int(-42),
            Plain::Float(1.25),
            Plain::Bool(false),
            Plain::Bytes(vec![0, 1, 2]),
        ] {
            let enc = encrypt(&plain, &key, "a:b:").expect("encrypt");
            assert!(is_enc(&enc), "{enc}");
            assert_eq!(decrypt(&enc, &key, "a:b:").expect("decrypt"), plain);
            // Moving a value to another key path must fail authentication.
            assert_eq!(decrypt(&enc, &key, "a:c:"), Err(CipherError::Auth));
        }
        assert_eq!(encrypt(&Plain::Str(String::new()), &key, "x:").unwrap(), "");
    }

    #[test]
    fn go_float_format_matches_strconv() {
        assert_eq!(go_format_float(1.0), "1");
        assert_eq!(go_format_float(0.1), "0.1");
        assert_eq!(go_format_float(1e21), "1000000000000000000000");
        assert_eq!(go_format_float(-2.5), "-2.5");
    }

    #[test]
    fn debug_redacts() {
        let shown = format!("{:?}", Plain::Str("hunter2".into()));
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
