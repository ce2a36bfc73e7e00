//! Sealed Secrets (`bitnami.com/v1alpha1`), compatible with kubeseal and the bitnami controller.
//!
//! - [`seal_secret`]: a Secret → a SealedSecret for a certificate's public key (`ferry seal`).
//! - [`unseal`]: a SealedSecret → the Secret it stands for, given the key ring.
//! - [`find_bitnami_controller`]: whether a bitnami sealed-secrets controller serves the cluster
//!   (then neither `ferry install --sealed-secrets` nor the agent starts ferry's unsealer). The
//!   unsealer controller itself runs in the agent (`ferry-agent/src/controllers/unsealer.rs`).
//! - [`fetch_certificate`]: read a certificate from a file or an `http://` URL.

pub mod bitnami;
pub mod crypto;
pub mod keys;
pub mod types;

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

pub use bitnami::{BITNAMI_CONTROLLER_SELECTORS, find_bitnami_controller};
pub use crypto::Scope;
pub use keys::{KeyBits, KeyRing, SealingKey, public_key_from_certificate_pem};
pub use types::{SealedSecret, SealedSecretSpec, SealedSecretStatus, SecretTemplateSpec, crd_yaml};

/// Annotation that keeps the unsealer from setting an owner reference on the Secret (bitnami's).
pub const SKIP_OWNER_REFERENCES_ANNOTATION: &str =
    "sealedsecrets.bitnami.com/skip-set-owner-references";

/// Why sealing failed. Never contains secret values.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the Secret has no metadata.name; set one (the name is part of a strict seal)")]
    NoName,
    #[error(
        "Secret {0} has no metadata.namespace; set it or pass --namespace (strict and namespace-wide seals are bound to a namespace)"
    )]
    NoNamespace(String),
    #[error("sealing {key}: {source}")]
    Crypto {
        key: String,
        source: crypto::CryptoError,
    },
}

/// Why unsealing failed. Never contains secret values.
#[derive(Debug, thiserror::Error)]
pub enum UnsealError {
    #[error("SealedSecret has no name or namespace")]
    NoIdentity,
    #[error(
        "spec.data (the pre-v0.7 single-blob format) is not supported; re-seal with ferry seal or a recent kubeseal"
    )]
    LegacyData,
    #[error("spec.template.data (templated keys) is not supported by ferry's unsealer")]
    TemplateData,
    #[error("encryptedData.{key} is not base64")]
    Base64 { key: String },
    #[error("encryptedData.{key}: {source} [scope {scope}]")]
    Crypto {
        key: String,
        scope: Scope,
        source: crypto::CryptoError,
    },
    #[error("no sealing keys are loaded yet")]
    NoKeys,
}

/// The values of a Secret: `data` merged with `stringData` (which wins, as the API server does).
fn secret_values(secret: &Secret) -> BTreeMap<String, zeroize::Zeroizing<Vec<u8>>> {
    let mut values = BTreeMap::new();
    for (key, value) in secret.data.iter().flatten() {
        values.insert(key.clone(), zeroize::Zeroizing::new(value.0.clone()));
    }
    for (key, value) in secret.string_data.iter().flatten() {
        values.insert(
            key.clone(),
            zeroize::Zeroizing::new(value.as_bytes().to_vec()),
        );
    }
    values
}

/// Seal a Secret for `public_key` under `scope`, kubeseal-style: the SealedSecret has the
/// Secret's name and namespace, and `spec.template` keeps its labels, annotations and type.
/// `default_namespace` is used when the Secret has none.
pub fn seal_secret(
    secret: &Secret,
    public_key: &aws_lc_rs::rsa::PublicEncryptingKey,
    scope: Scope,
    default_namespace: Option<&str>,
) -> Result<SealedSecret, SealError> {
    let name = secret.metadata.name.clone().ok_or(SealError::NoName)?;
    let namespace = match (&secret.metadata.namespace, default_namespace) {
        (Some(ns), _) => ns.clone(),
        (None, Some(ns)) => ns.to_string(),
        (None, None) if scope == Scope::ClusterWide => String::new(),
        (None, None) => return Err(SealError::NoNamespace(name)),
    };
    let label = scope.label(&namespace, &name);
    let mut encrypted_data = BTreeMap::new();
    for (key, value) in secret_values(secret) {
        let blob = crypto::hybrid_encrypt(public_key, &value, &label).map_err(|source| {
            SealError::Crypto {
                key: key.clone(),
                source,
            }
        })?;
        encrypted_data.insert(key, STANDARD.encode(blob));
    }

    let mut annotations = secret.metadata.annotations.clone().unwrap_or_default();
    // kubectl's bookkeeping annotation would carry the plaintext Secret into the template.
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    if let Some(annotation) = scope.annotation() {
        annotations.insert(annotation.to_string(), "true".to_string());
    }
    let annotations = (!annotations.is_empty()).then_some(annotations);
    let namespace = (!namespace.is_empty()).then_some(namespace);
    let template_meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: namespace.clone(),
        labels: secret.metadata.labels.clone(),
        annotations: annotations.clone(),
        ..Default::default()
    };
    let mut sealed = SealedSecret::new(
        &name,
        SealedSecretSpec {
            template: SecretTemplateSpec {
                metadata: template_meta,
                type_: secret.type_.clone(),
                immutable: secret.immutable,
                data: BTreeMap::new(),
            },
            encrypted_data,
            data: None,
        },
    );
    sealed.metadata.namespace = namespace;
    sealed.metadata.annotations = scope
        .annotation()
        .map(|a| BTreeMap::from([(a.to_string(), "true".to_string())]));
    Ok(sealed)
}

/// Unseal a SealedSecret into the Secret it describes (name and namespace of the SealedSecret,
/// template labels/annotations/type, owner reference to the SealedSecret unless skipped).
pub fn unseal(sealed: &SealedSecret, ring: &KeyRing) -> Result<Secret, UnsealError> {
    let name = sealed
        .metadata
        .name
        .clone()
        .ok_or(UnsealError::NoIdentity)?;
    let namespace = sealed
        .metadata
        .namespace
        .clone()
        .ok_or(UnsealError::NoIdentity)?;
    if sealed.spec.data.as_deref().is_some_and(|d| !d.is_empty()) {
        return Err(UnsealError::LegacyData);
    }
    if !sealed.spec.template.data.is_empty() {
        return Err(UnsealError::TemplateData);
    }
    if ring.is_empty() {
        return Err(UnsealError::NoKeys);
    }
    let scope = Scope::from_annotations(sealed.metadata.annotations.as_ref());
    let label = scope.label(&namespace, &name);
    let mut data = BTreeMap::new();
    for (key, value) in &sealed.spec.encrypted_data {
        let blob = STANDARD
            .decode(value.trim())
            .map_err(|_| UnsealError::Base64 { key: key.clone() })?;
        let plain =
            crypto::hybrid_decrypt(ring.private_keys(), &blob, &label).map_err(|source| {
                UnsealError::Crypto {
                    key: key.clone(),
                    scope,
                    source,
                }
            })?;
        data.insert(key.clone(), ByteString(plain.to_vec()));
    }

    let template = &sealed.spec.template;
    let mut metadata = ObjectMeta {
        name: Some(name),
        namespace: Some(namespace),
        labels: template.metadata.labels.clone(),
        annotations: template.metadata.annotations.clone(),
        ..Default::default()
    };
    let skip_owner = sealed
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SKIP_OWNER_REFERENCES_ANNOTATION))
        .is_some_and(|v| v == "true");
    if !skip_owner && let Some(uid) = sealed.metadata.uid.clone() {
        metadata.owner_references = Some(vec![OwnerReference {
            api_version: SealedSecret::api_version(&()).into_owned(),
            kind: SealedSecret::kind(&()).into_owned(),
            name: sealed.metadata.name.clone().unwrap_or_default(),
            uid,
            controller: Some(true),
            block_owner_deletion: None,
        }]);
    }
    Ok(Secret {
        metadata,
        data: Some(data),
        type_: Some(template.type_.clone().unwrap_or_else(|| "Opaque".into())),
        immutable: template.immutable,
        ..Default::default()
    })
}

/// Read a sealing certificate from a file path or an `http://` URL (the agent's
/// `/v1/cert.pem`). The result is checked to be a PEM certificate with an RSA key.
pub async fn fetch_certificate(location: &str) -> crate::Result<String> {
    let text = if location.starts_with("http://") {
        http_get(location).await?
    } else if location.starts_with("https://") {
        return Err(crate::Error::Source {
            path: location.into(),
            message: "https certificate URLs are not supported; fetch it with `curl -o cert.pem` \
                      (verifying the server) and pass --cert cert.pem, or use an http:// URL \
                      through `kubectl port-forward`"
                .into(),
        });
    } else {
        std::fs::read_to_string(Path::new(location)).map_err(|e| crate::Error::Source {
            path: location.into(),
            message: format!("cannot read the certificate: {e}"),
        })?
    };
    public_key_from_certificate_pem(text.as_bytes()).map_err(|e| crate::Error::Source {
        path: location.into(),
        message: format!("{e}"),
    })?;
    Ok(text)
}

/// A minimal HTTP/1.1 GET (the certificate is public; no TLS needed on a port-forward).
async fn http_get(url: &str) -> crate::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fail = |message: String| crate::Error::Source {
        path: url.into(),
        message,
    };
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let address = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let connect = tokio::net::TcpStream::connect(&address);
    let mut stream = tokio::time::timeout(std::time::Duration::from_secs(10), connect)
        .await
        .map_err(|_| fail("timed out connecting".into()))?
        .map_err(|e| fail(format!("cannot connect: {e}")))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nAccept: application/x-pem-file\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| fail(format!("cannot send request: {e}")))?;
    let mut response = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.take(1 << 20).read_to_end(&mut response),
    )
    .await
    .map_err(|_| fail("timed out reading the response".into()))?
    .map_err(|e| fail(format!("cannot read the response: {e}")))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| fail("malformed HTTP response".into()))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(fail(format!("server answered {status:?}; expected 200")));
    }
    if head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    }) {
        return Ok(dechunk(body));
    }
    Ok(body.to_string())
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}
