//! Sealing keys: an RSA key pair plus the self-signed certificate kubeseal reads, their PEM and
//! Kubernetes Secret forms (type `kubernetes.io/tls`, label
//! `sealedsecrets.bitnami.com/sealed-secrets-key=active`, so keys move freely between ferry and
//! the bitnami controller), and the key ring used for unsealing.

use std::collections::BTreeMap;
use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey, PublicEncryptingKey};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

/// Label that marks a Secret as a sealing key (bitnami-compatible).
pub const KEY_LABEL: &str = "sealedsecrets.bitnami.com/sealed-secrets-key";
/// Value of [`KEY_LABEL`] for keys in use.
pub const KEY_LABEL_ACTIVE: &str = "active";
/// Default name prefix of key Secrets (bitnami's).
pub const KEY_NAME_PREFIX: &str = "sealed-secrets-key";

/// RSA modulus size for generated keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeyBits {
    /// Faster to generate; for tests and small clusters.
    Rsa2048,
    /// What kubeseal's controller generates.
    #[default]
    Rsa4096,
}

/// Why a key or certificate could not be loaded or made. Never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> KeyError {
    KeyError::Invalid(message.into())
}

/// One sealing key: private key, certificate, and where it is stored.
#[derive(Clone)]
pub struct SealingKey {
    private: PrivateDecryptingKey,
    certificate_pem: String,
    /// Name of the Secret holding it (empty until stored).
    pub secret_name: String,
    /// When it was created (the Secret's creationTimestamp, or generation time).
    pub created: chrono::DateTime<chrono::Utc>,
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealingKey")
            .field("secret_name", &self.secret_name)
            .field("created", &self.created)
            .field("bits", &self.private.key_size_bits())
            .finish_non_exhaustive()
    }
}

impl SealingKey {
    /// Generate a new RSA key and a self-signed certificate for it (CN and O `sealed-secret`,
    /// valid ten years, as the bitnami controller makes them).
    pub fn generate(bits: KeyBits) -> Result<Self, KeyError> {
        let size = match bits {
            KeyBits::Rsa2048 => KeySize::Rsa2048,
            KeyBits::Rsa4096 => KeySize::Rsa4096,
        };
        let private = PrivateDecryptingKey::generate(size)
            .map_err(|_| invalid("RSA key generation failed"))?;
        let certificate_pem = self_signed_certificate(&private)?;
        Ok(Self {
            private,
            certificate_pem,
            secret_name: String::new(),
            created: chrono::Utc::now(),
        })
    }

    /// Load from PEM: the private key (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`) and
    /// the certificate. The certificate's key must match the private key.
    pub fn from_pem(key_pem: &[u8], certificate_pem: &[u8]) -> Result<Self, KeyError> {
        let private = private_key_from_pem(key_pem)?;
        let cert_public = public_key_from_certificate_pem(certificate_pem)?;
        let ours = private
            .public_key()
            .as_der()
            .map_err(|_| invalid("cannot encode public key"))?;
        let theirs = cert_public
            .as_der()
            .map_err(|_| invalid("cannot encode certificate key"))?;
        if ours.as_ref() != theirs.as_ref() {
            return Err(invalid(
                "the certificate does not belong to the private key (tls.crt and tls.key differ)",
            ));
        }
        let certificate_pem = String::from_utf8(certificate_pem.to_vec())
            .map_err(|_| invalid("certificate PEM is not text"))?;
        Ok(Self {
            private,
            certificate_pem,
            secret_name: String::new(),
            created: chrono::Utc::now(),
        })
    }

    /// Load from a key Secret (`tls.key`, `tls.crt`).
    pub fn from_secret(secret: &Secret) -> Result<Self, KeyError> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let data = secret.data.as_ref();
        let get = |key: &str| {
            data.and_then(|d| d.get(key))
                .map(|b| b.0.as_slice())
                .ok_or_else(|| {
                    invalid(format!(
                        "key Secret {name} has no {key}; expected a kubernetes.io/tls Secret"
                    ))
                })
        };
        let mut key = Self::from_pem(get("tls.key")?, get("tls.crt")?)
            .map_err(|KeyError::Invalid(m)| invalid(format!("key Secret {name}: {m}")))?;
        key.secret_name = name;
        if let Some(ts) = &secret.metadata.creation_timestamp {
            key.created = to_chrono(&ts.0);
        }
        Ok(key)
    }

    /// The Secret that stores this key (to create with `generateName`).
    pub fn to_secret(&self, namespace: &str) -> Result<Secret, KeyError> {
        let mut data = BTreeMap::new();
        data.insert(
            "tls.crt".to_string(),
            ByteString(self.certificate_pem.as_bytes().to_vec()),
        );
        data.insert(
            "tls.key".to_string(),
            ByteString(self.private_key_pem()?.as_bytes().to_vec()),
        );
        let mut secret = Secret {
            data: Some(data),
            type_: Some("kubernetes.io/tls".into()),
            ..Default::default()
        };
        secret.metadata.namespace = Some(namespace.to_string());
        if self.secret_name.is_empty() {
            secret.metadata.generate_name = Some(format!("{KEY_NAME_PREFIX}-"));
        } else {
            secret.metadata.name = Some(self.secret_name.clone());
        }
        secret.metadata.labels = Some(BTreeMap::from([(
            KEY_LABEL.to_string(),
            KEY_LABEL_ACTIVE.to_string(),
        )]));
        Ok(secret)
    }

    /// The certificate in PEM form (what `kubeseal --cert` and `ferry seal --cert` read).
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The private key as PKCS#8 PEM (for backups and `kubeseal --recovery-private-key`).
    pub fn private_key_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        let der = self
            .private
            .as_der()
            .map_err(|_| invalid("cannot encode private key"))?;
        Ok(Zeroizing::new(pem_encode("PRIVATE KEY", der.as_ref())))
    }

    pub fn public_key(&self) -> PublicEncryptingKey {
        self.private.public_key()
    }

    pub(crate) fn private_key(&self) -> &PrivateDecryptingKey {
        &self.private
    }
}

/// Parse an RSA private key from PEM (PKCS#1 or PKCS#8).
fn private_key_from_pem(pem: &[u8]) -> Result<PrivateDecryptingKey, KeyError> {
    let parsed = PrivateKeyDer::from_pem_slice(pem).map_err(|_| {
        invalid("private key is not a PEM RSA key (RSA PRIVATE KEY or PRIVATE KEY)")
    })?;
    let pkcs8: Zeroizing<Vec<u8>> = match parsed {
        PrivateKeyDer::Pkcs8(der) => Zeroizing::new(der.secret_pkcs8_der().to_vec()),
        PrivateKeyDer::Pkcs1(der) => {
            let pair = aws_lc_rs::rsa::KeyPair::from_der(der.secret_pkcs1_der())
                .map_err(|_| invalid("RSA PRIVATE KEY is not a valid RSA key"))?;
            let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair)
                .map_err(|_| invalid("cannot convert RSA key"))?;
            Zeroizing::new(der.as_ref().to_vec())
        }
        _ => return Err(invalid("private key is not an RSA key")),
    };
    PrivateDecryptingKey::from_pkcs8(&pkcs8)
        .map_err(|_| invalid("private key is not an RSA key of 2048 to 8192 bits"))
}

/// The RSA public key inside a PEM certificate (kubeseal's `--cert` input).
pub fn public_key_from_certificate_pem(pem: &[u8]) -> Result<PublicEncryptingKey, KeyError> {
    let der = CertificateDer::from_pem_slice(pem)
        .map_err(|_| invalid("not a PEM certificate (-----BEGIN CERTIFICATE-----)"))?;
    let cert = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| invalid(format!("cannot parse the certificate: {e}")))?;
    let spki = cert.subject_public_key_info();
    PublicEncryptingKey::from_der(spki.as_ref())
        .map_err(|_| invalid("the certificate's key is not an RSA key of 2048 to 8192 bits"))
}

fn self_signed_certificate(private: &PrivateDecryptingKey) -> Result<String, KeyError> {
    let der = private
        .as_der()
        .map_err(|_| invalid("cannot encode private key"))?;
    let pkcs8 = PrivatePkcs8KeyDer::from(der.as_ref().to_vec());
    let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256)
        .map_err(|e| invalid(format!("cannot use the RSA key for signing: {e}")))?;
    let mut params = rcgen::CertificateParams::default();
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, "sealed-secret");
    name.push(rcgen::DnType::OrganizationName, "sealed-secret");
    params.distinguished_name = name;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(3650);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| invalid(format!("cannot make the certificate: {e}")))?;
    Ok(cert.pem())
}

/// k8s-openapi timestamps are `jiff`; the key ring orders by `chrono`.
pub(crate) fn to_chrono(ts: &k8s_openapi::jiff::Timestamp) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(ts.as_second(), ts.subsec_nanosecond().max(0) as u32)
        .unwrap_or_default()
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// All keys able to unseal, newest last; the newest seals.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: Vec<SealingKey>,
}

impl KeyRing {
    pub fn new(mut keys: Vec<SealingKey>) -> Self {
        keys.sort_by_key(|k| k.created);
        Self { keys }
    }

    pub fn push(&mut self, key: SealingKey) {
        self.keys.push(key);
        self.keys.sort_by_key(|k| k.created);
    }

    /// The sealing key: the newest.
    pub fn current(&self) -> Option<&SealingKey> {
        self.keys.last()
    }

    pub fn keys(&self) -> &[SealingKey] {
        &self.keys
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Private keys to try, newest first.
    pub fn private_keys(&self) -> impl Iterator<Item = &PrivateDecryptingKey> {
        self.keys.iter().rev().map(|k| k.private_key())
    }
}
