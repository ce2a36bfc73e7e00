//! The Sealed Secrets value format and scopes.
//!
//! A sealed value is `u16 big-endian length of the RSA ciphertext ‖ RSA-OAEP-SHA256(session key,
//! label) ‖ AES-256-GCM(session key, 12 zero bytes nonce, no AAD)(plaintext)`. The zero nonce is
//! safe because every value gets a fresh session key. The OAEP label binds the value to where
//! it may be unsealed: `namespace/name` (strict), `namespace` (namespace-wide) or nothing
//! (cluster-wide).

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::rsa::{
    OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey, PublicEncryptingKey,
};
use zeroize::Zeroizing;

/// Annotation that marks a SealedSecret namespace-wide.
pub const NAMESPACE_WIDE_ANNOTATION: &str = "sealedsecrets.bitnami.com/namespace-wide";
/// Annotation that marks a SealedSecret cluster-wide.
pub const CLUSTER_WIDE_ANNOTATION: &str = "sealedsecrets.bitnami.com/cluster-wide";

const SESSION_KEY_LEN: usize = 32;

/// Where a sealed value may be unsealed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scope {
    /// Only as the same name in the same namespace (the default).
    #[default]
    Strict,
    /// Under any name in the same namespace.
    NamespaceWide,
    /// Under any name in any namespace.
    ClusterWide,
}

impl Scope {
    /// The OAEP label for a Secret at `namespace/name` under this scope.
    pub fn label(&self, namespace: &str, name: &str) -> Vec<u8> {
        match self {
            Scope::Strict => format!("{namespace}/{name}").into_bytes(),
            Scope::NamespaceWide => namespace.as_bytes().to_vec(),
            Scope::ClusterWide => Vec::new(),
        }
    }

    /// The scope a SealedSecret declares through its annotations (cluster-wide wins).
    pub fn from_annotations(
        annotations: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Self {
        let set = |key: &str| {
            annotations
                .and_then(|a| a.get(key))
                .is_some_and(|v| v == "true")
        };
        if set(CLUSTER_WIDE_ANNOTATION) {
            Scope::ClusterWide
        } else if set(NAMESPACE_WIDE_ANNOTATION) {
            Scope::NamespaceWide
        } else {
            Scope::Strict
        }
    }

    /// The annotation kubeseal sets for this scope, if any.
    pub fn annotation(&self) -> Option<&'static str> {
        match self {
            Scope::Strict => None,
            Scope::NamespaceWide => Some(NAMESPACE_WIDE_ANNOTATION),
            Scope::ClusterWide => Some(CLUSTER_WIDE_ANNOTATION),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Strict => "strict",
            Scope::NamespaceWide => "namespace-wide",
            Scope::ClusterWide => "cluster-wide",
        })
    }
}

/// A scope name that is none of `strict`, `namespace-wide`, `cluster-wide`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?}; use strict, namespace-wide or cluster-wide")]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "strict" => Ok(Scope::Strict),
            "namespace-wide" => Ok(Scope::NamespaceWide),
            "cluster-wide" => Ok(Scope::ClusterWide),
            other => Err(UnknownScope(other.to_string())),
        }
    }
}

/// Why a value could not be sealed or unsealed. Never carries plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("sealed value is truncated or malformed")]
    Malformed,
    #[error(
        "no key can unseal it (sealed for another cluster or key, or for another name/namespace under its scope)"
    )]
    NoKey,
    #[error("the sealed data failed authentication (tampered)")]
    Tampered,
    #[error("encryption failed: {0}")]
    Encrypt(&'static str),
}

/// Seal `plaintext` for `public_key` with an OAEP `label`.
pub fn hybrid_encrypt(
    public_key: &PublicEncryptingKey,
    plaintext: &[u8],
    label: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut session_key = Zeroizing::new([0u8; SESSION_KEY_LEN]);
    aws_lc_rs::rand::fill(session_key.as_mut_slice())
        .map_err(|_| CryptoError::Encrypt("no system randomness"))?;
    let oaep = OaepPublicEncryptingKey::new(public_key.clone())
        .map_err(|_| CryptoError::Encrypt("unsupported RSA key"))?;
    let mut rsa_out = vec![0u8; oaep.ciphertext_size()];
    let rsa_len = oaep
        .encrypt(
            &OAEP_SHA256_MGF1SHA256,
            session_key.as_slice(),
            &mut rsa_out,
            Some(label),
        )
        .map_err(|_| CryptoError::Encrypt("RSA-OAEP failed"))?
        .len();
    let rsa_len_u16 =
        u16::try_from(rsa_len).map_err(|_| CryptoError::Encrypt("RSA key too large"))?;

    let mut body = plaintext.to_vec();
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, session_key.as_slice())
            .map_err(|_| CryptoError::Encrypt("AES key"))?,
    );
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key([0u8; 12]),
        Aad::empty(),
        &mut body,
    )
    .map_err(|_| CryptoError::Encrypt("AES-GCM failed"))?;

    let mut out = Vec::with_capacity(2 + rsa_len + body.len());
    out.extend_from_slice(&rsa_len_u16.to_be_bytes());
    out.extend_from_slice(&rsa_out[..rsa_len]);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Unseal with the first of `keys` that opens the session key under `label`.
pub fn hybrid_decrypt<'a>(
    keys: impl IntoIterator<Item = &'a PrivateDecryptingKey>,
    blob: &[u8],
    label: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if blob.len() < 2 {
        return Err(CryptoError::Malformed);
    }
    let rsa_len = u16::from_be_bytes([blob[0], blob[1]]) as usize;
    let rest = &blob[2..];
    if rest.len() < rsa_len {
        return Err(CryptoError::Malformed);
    }
    let (rsa_part, aes_part) = rest.split_at(rsa_len);
    for private in keys {
        let Ok(oaep) = OaepPrivateDecryptingKey::new(private.clone()) else {
            continue;
        };
        let mut session = Zeroizing::new(vec![0u8; oaep.min_output_size()]);
        let Ok(opened) = oaep.decrypt(&OAEP_SHA256_MGF1SHA256, rsa_part, &mut session, Some(label))
        else {
            continue;
        };
        if opened.len() != SESSION_KEY_LEN {
            continue;
        }
        let session_key = Zeroizing::new(opened.to_vec());
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &session_key).map_err(|_| CryptoError::Malformed)?,
        );
        let mut buf = Zeroizing::new(aes_part.to_vec());
        let plain_len = key
            .open_in_place(
                Nonce::assume_unique_for_key([0u8; 12]),
                Aad::empty(),
                &mut buf,
            )
            .map_err(|_| CryptoError::Tampered)?
            .len();
        buf.truncate(plain_len);
        return Ok(buf);
    }
    Err(CryptoError::NoKey)
}
