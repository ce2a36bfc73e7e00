//! Registry webhook payloads (Docker Hub, Harbor, generic HMAC) → the images that changed. The
//! agent's receiver (`ferry-agent/src/webhook.rs`, Receiver types `dockerhub`, `harbor`,
//! `generic`, `generic-hmac`) verifies the request, parses it here and asks the ImageRepositories
//! whose image [`RegistryEvent::names`] to scan now (`ScanTrigger`). Verification helpers
//! compare in constant time; secrets never appear in errors.

use serde_json::Value;
use thiserror::Error;

use crate::reference::{ImageRef, split_repository};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("payload has no {0}; is the webhook type right?")]
    Missing(&'static str),
    #[error(
        "signature header missing or malformed; expected `X-Signature: sha256=<hex hmac of the body>`"
    )]
    BadSignatureHeader,
    #[error("signature does not match")]
    BadSignature,
}

/// One pushed image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEvent {
    /// Repository as users write it (`docker.io/org/app`, `harbor.example/lib/app`).
    pub image: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl RegistryEvent {
    /// Registry host + path as the API sees them (for matching ImageRepositories).
    pub fn canonical(&self) -> String {
        canonical(&self.image)
    }

    /// Whether this event is about `image` (an ImageRepository's `spec.image`): the same
    /// registry host and path once defaults are filled in, so `nginx`,
    /// `docker.io/library/nginx` and `index.docker.io/library/nginx` are one image. Registry
    /// hosts compare case-insensitively.
    pub fn names(&self, image: &str) -> bool {
        self.canonical() == canonical(image)
    }
}

/// `host/path` with Docker Hub defaults filled in and the host lowercased.
fn canonical(image: &str) -> String {
    let (host, path) = split_repository(image.trim());
    format!("{}/{path}", host.to_ascii_lowercase())
}

fn json(body: &[u8]) -> Result<Value, WebhookError> {
    serde_json::from_slice(body).map_err(|e| WebhookError::NotJson(e.to_string()))
}

/// Docker Hub: `{"push_data": {"tag": …}, "repository": {"repo_name": "org/app"}}`.
/// Docker Hub does not sign webhooks: keep the receiver URL secret (as Flux does).
pub fn parse_dockerhub(body: &[u8]) -> Result<Vec<RegistryEvent>, WebhookError> {
    let v = json(body)?;
    let repo = v
        .pointer("/repository/repo_name")
        .and_then(Value::as_str)
        .ok_or(WebhookError::Missing("repository.repo_name"))?;
    let tag = v
        .pointer("/push_data/tag")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(vec![RegistryEvent {
        image: format!("docker.io/{repo}"),
        tag,
        digest: None,
    }])
}

/// Harbor: `{"type": "PUSH_ARTIFACT", "event_data": {"resources": [{"resource_url":
/// "harbor.example/lib/app:1.0", "tag", "digest"}]}}`. Other event types yield nothing.
pub fn parse_harbor(body: &[u8]) -> Result<Vec<RegistryEvent>, WebhookError> {
    let v = json(body)?;
    let kind = v.get("type").and_then(Value::as_str).unwrap_or_default();
    if !kind.eq_ignore_ascii_case("PUSH_ARTIFACT") && !kind.eq_ignore_ascii_case("pushImage") {
        return Ok(Vec::new());
    }
    let resources = v
        .pointer("/event_data/resources")
        .and_then(Value::as_array)
        .ok_or(WebhookError::Missing("event_data.resources"))?;
    let mut out = Vec::new();
    for r in resources {
        let Some(url) = r.get("resource_url").and_then(Value::as_str) else {
            continue;
        };
        let Ok(parsed) = ImageRef::parse(url) else {
            continue;
        };
        out.push(RegistryEvent {
            image: parsed.repository,
            tag: r
                .get("tag")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or(parsed.tag),
            digest: r
                .get("digest")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or(parsed.digest),
        });
    }
    if out.is_empty() {
        return Err(WebhookError::Missing("event_data.resources[].resource_url"));
    }
    Ok(out)
}

/// Generic: optional `{"image": "reg/app[:tag]"}`; anything else means "scan everything the
/// receiver lists" (an empty result).
pub fn parse_generic(body: &[u8]) -> Result<Vec<RegistryEvent>, WebhookError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let v = json(body)?;
    let Some(image) = v.get("image").and_then(Value::as_str) else {
        return Ok(Vec::new());
    };
    let parsed = ImageRef::parse(image).map_err(|_| WebhookError::Missing("a valid `image`"))?;
    Ok(vec![RegistryEvent {
        image: parsed.repository,
        tag: parsed.tag,
        digest: parsed.digest,
    }])
}

/// Verify `X-Signature: <alg>=<hex>` (sha1, sha256, sha512) over the body.
pub fn verify_hmac(key: &[u8], body: &[u8], header: Option<&str>) -> Result<(), WebhookError> {
    use aws_lc_rs::hmac;
    let header = header.ok_or(WebhookError::BadSignatureHeader)?;
    let (alg, hex_sig) = header
        .trim()
        .split_once('=')
        .ok_or(WebhookError::BadSignatureHeader)?;
    let algorithm = match alg.to_ascii_lowercase().as_str() {
        "sha1" => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        "sha256" => hmac::HMAC_SHA256,
        "sha512" => hmac::HMAC_SHA512,
        _ => return Err(WebhookError::BadSignatureHeader),
    };
    let signature = hex::decode(hex_sig.trim()).map_err(|_| WebhookError::BadSignatureHeader)?;
    hmac::verify(&hmac::Key::new(algorithm, key), body, &signature)
        .map_err(|_| WebhookError::BadSignature)
}

/// Harbor sends the configured "auth header" value verbatim in `Authorization` (`Bearer ` in
/// front is optional). The comparison takes the same time whatever the lengths: both sides are
/// HMACed under a fixed key and the digests compared in constant time.
pub fn verify_harbor(token: &[u8], authorization: Option<&str>) -> Result<(), WebhookError> {
    let got = authorization
        .ok_or(WebhookError::BadSignatureHeader)?
        .trim();
    let got = got.strip_prefix("Bearer ").unwrap_or(got).as_bytes();
    if constant_time_eq(got, token) {
        Ok(())
    } else {
        Err(WebhookError::BadSignature)
    }
}

/// Equal byte strings, in time independent of where (or whether) they differ and of their
/// lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use aws_lc_rs::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"ferry-token-compare");
    let tag = hmac::sign(&key, a);
    hmac::verify(&key, b, tag.as_ref()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerhub() {
        let body = br#"{"callback_url":"https://registry.hub.docker.com/u/o/a/hook/x/","push_data":{"pushed_at":1,"pusher":"o","tag":"1.2.3"},"repository":{"name":"app","namespace":"org","repo_name":"org/app"}}"#;
        let e = parse_dockerhub(body).unwrap();
        assert_eq!(e[0].image, "docker.io/org/app");
        assert_eq!(e[0].tag.as_deref(), Some("1.2.3"));
        assert_eq!(e[0].canonical(), "registry-1.docker.io/org/app");
        assert!(e[0].names("org/app"));
        assert!(e[0].names("index.docker.io/org/app"));
        assert!(!e[0].names("ghcr.io/org/app"));
        assert!(!e[0].names("org/app2"));
        assert_eq!(
            parse_dockerhub(b"{}").unwrap_err(),
            WebhookError::Missing("repository.repo_name")
        );
    }

    #[test]
    fn harbor() {
        let body = br#"{"type":"PUSH_ARTIFACT","occur_at":1,"operator":"admin","event_data":{"resources":[{"digest":"sha256:abc","tag":"v2","resource_url":"harbor.example.com/library/app:v2"}],"repository":{"name":"app","namespace":"library","repo_full_name":"library/app","repo_type":"private"}}}"#;
        let e = parse_harbor(body).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].image, "harbor.example.com/library/app");
        assert_eq!(e[0].digest.as_deref(), Some("sha256:abc"));
        assert!(
            parse_harbor(br#"{"type":"DELETE_ARTIFACT"}"#)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn generic_hmac() {
        use aws_lc_rs::hmac;
        let body = br#"{"image":"127.0.0.1:5000/app:1.0"}"#;
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"k3y");
        let sig = format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()));
        verify_hmac(b"k3y", body, Some(&sig)).unwrap();
        assert_eq!(
            verify_hmac(b"other", body, Some(&sig)),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify_hmac(b"k3y", body, None),
            Err(WebhookError::BadSignatureHeader)
        );
        assert_eq!(
            verify_hmac(b"k3y", body, Some("md5=00")),
            Err(WebhookError::BadSignatureHeader)
        );
        let e = parse_generic(body).unwrap();
        assert_eq!(e[0].image, "127.0.0.1:5000/app");
        assert!(parse_generic(b"").unwrap().is_empty());
        verify_harbor(b"tok", Some("tok")).unwrap();
        verify_harbor(b"tok", Some("Bearer tok")).unwrap();
        assert!(verify_harbor(b"tok", Some("nope")).is_err());
        assert!(verify_harbor(b"tok", Some("tok2")).is_err());
        assert!(verify_harbor(b"tok", None).is_err());
        assert!(e[0].names("127.0.0.1:5000/app"));
        assert!(e[0].names("127.0.0.1:5000/app "));
    }
}
