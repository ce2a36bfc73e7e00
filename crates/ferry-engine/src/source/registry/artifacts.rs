//! Manifest and blob transfer on the shared registry client: what OCI artifacts need beyond
//! scanning. Pulls check every byte against the digest they were asked for while it streams
//! (a manifest before it is parsed, a blob before anything is extracted from it) and never read
//! past a declared size; pushes upload blobs monolithically (POST, then PUT to the upload
//! location, which must stay on the registry's own origin) and put the manifest last, so a tag
//! never names a manifest whose blobs are missing. The credential rules are the client's own
//! (see the parent module): credentials only to the registry's origin and its token realm.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header;
use tokio::io::AsyncWriteExt;

use super::{
    Access, Registries, RegistryError, Target, error_body, error_chain, read_capped, same_origin,
};

/// A manifest as the registry sent it, verified against its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedManifest {
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    /// The `Content-Type` the registry gave, if any.
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    format!("sha256:{}", hex::encode(d.as_ref()))
}

/// Whether `s` is a `sha256:` digest of 64 lowercase hex digits (the only algorithm accepted:
/// it is the one every registry computes, and anything else would have to be trusted unverified).
pub fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

async fn with_timeout<T>(
    timeout: Duration,
    what: String,
    fut: impl std::future::Future<Output = Result<T, RegistryError>>,
) -> Result<T, RegistryError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result,
        Err(_) => Err(RegistryError::Timeout {
            repository: what,
            timeout,
        }),
    }
}

impl Registries {
    /// GET the manifest `reference` (a tag or a `sha256:` digest) with `accept`. The body is
    /// capped at the client's manifest limit and hashed; asked by digest, the bytes must have
    /// that digest, and a `Docker-Content-Digest` the registry sends must match them too.
    pub async fn manifest(
        &self,
        target: &Target,
        reference: &str,
        accept: &str,
        timeout: Duration,
    ) -> Result<FetchedManifest, RegistryError> {
        let deadline = Instant::now() + timeout;
        let what = format!("{}:{reference}", target.display());
        with_timeout(timeout, what, async {
            let url = format!("{}/v2/{}/manifests/{reference}", target.base(), target.path);
            let mut requests = 0;
            let response = self
                .send(target, &url, deadline, &mut requests, |c| {
                    c.get(&url).header(header::ACCEPT, accept)
                })
                .await?;
            let status = response.status();
            if !status.is_success() {
                return Err(http_error(target, &url, response).await);
            }
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
            let announced = response
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let bytes =
                read_capped(response, self.inner.limits.max_manifest_body, &target.host).await?;
            let digest = sha256_digest(&bytes);
            let expected = if is_sha256_digest(reference) {
                Some(reference.to_string())
            } else {
                announced.filter(|d| d.starts_with("sha256:"))
            };
            if let Some(expected) = expected
                && expected != digest
            {
                return Err(RegistryError::DigestMismatch {
                    host: target.host.clone(),
                    url,
                    expected,
                    actual: digest,
                });
            }
            Ok(FetchedManifest {
                digest,
                content_type,
                bytes,
            })
        })
        .await
    }

    /// Stream the blob `digest` into `out`, hashing as it goes: more than `size` bytes (the size
    /// its descriptor declares) stops the transfer at once, and a body of another size or
    /// digest is an error. The caller must discard `out` on any error.
    pub async fn blob_to_file(
        &self,
        target: &Target,
        digest: &str,
        size: u64,
        out: &mut tokio::fs::File,
        timeout: Duration,
    ) -> Result<(), RegistryError> {
        let deadline = Instant::now() + timeout;
        let what = format!("{}@{digest}", target.display());
        with_timeout(timeout, what, async {
            let url = format!("{}/v2/{}/blobs/{digest}", target.base(), target.path);
            let mut requests = 0;
            let mut response = self
                .send(target, &url, deadline, &mut requests, |c| c.get(&url))
                .await?;
            if !response.status().is_success() {
                return Err(http_error(target, &url, response).await);
            }
            let too_large = || RegistryError::TooLarge {
                host: target.host.clone(),
                url: url.clone(),
                limit: usize::try_from(size).unwrap_or(usize::MAX),
            };
            if response.content_length().is_some_and(|n| n > size) {
                return Err(too_large());
            }
            let mut hasher = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
            let mut read: u64 = 0;
            while let Some(chunk) = response.chunk().await.map_err(|e| RegistryError::Invalid {
                host: target.host.clone(),
                url: url.clone(),
                reason: format!("reading the blob: {}", error_chain(&e)),
            })? {
                read += chunk.len() as u64;
                if read > size {
                    return Err(too_large());
                }
                hasher.update(&chunk);
                out.write_all(&chunk)
                    .await
                    .map_err(|e| RegistryError::Invalid {
                        host: target.host.clone(),
                        url: url.clone(),
                        reason: format!("writing the blob to disk: {e}"),
                    })?;
            }
            out.flush().await.map_err(|e| RegistryError::Invalid {
                host: target.host.clone(),
                url: url.clone(),
                reason: format!("writing the blob to disk: {e}"),
            })?;
            let actual = format!("sha256:{}", hex::encode(hasher.finish().as_ref()));
            if actual != digest {
                return Err(RegistryError::DigestMismatch {
                    host: target.host.clone(),
                    url,
                    expected: digest.to_string(),
                    actual,
                });
            }
            if read != size {
                return Err(RegistryError::Invalid {
                    host: target.host.clone(),
                    url,
                    reason: format!("the blob has {read} bytes, its descriptor says {size}"),
                });
            }
            Ok(())
        })
        .await
    }

    /// Upload one blob unless the registry has it already (HEAD first). `bytes` must have
    /// `digest` (the caller computed it).
    pub async fn push_blob(
        &self,
        target: &Target,
        digest: &str,
        bytes: &[u8],
        timeout: Duration,
    ) -> Result<(), RegistryError> {
        let deadline = Instant::now() + timeout;
        let what = format!("{}@{digest}", target.display());
        with_timeout(timeout, what, async {
            let mut requests = 0;
            let blob_url = format!("{}/v2/{}/blobs/{digest}", target.base(), target.path);
            match self
                .send_with(
                    target,
                    &blob_url,
                    deadline,
                    &mut requests,
                    Access::Push,
                    |c| c.head(&blob_url),
                )
                .await
            {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(_) | Err(RegistryError::NotFound { .. }) => {}
                Err(err) => return Err(err),
            }
            let start_url = format!("{}/v2/{}/blobs/uploads/", target.base(), target.path);
            let response = self
                .send_with(
                    target,
                    &start_url,
                    deadline,
                    &mut requests,
                    Access::Push,
                    |c| c.post(&start_url).header(header::CONTENT_LENGTH, "0"),
                )
                .await?;
            if response.status() != StatusCode::ACCEPTED {
                return Err(http_error(target, &start_url, response).await);
            }
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| RegistryError::Invalid {
                    host: target.host.clone(),
                    url: start_url.clone(),
                    reason: "the upload was accepted without a Location".into(),
                })?;
            // The upload location is relative to the registry (or absolute); on another origin
            // it would receive the registry's credentials: refused like a Link to another host.
            let mut upload = response
                .url()
                .join(location)
                .map_err(|e| RegistryError::Invalid {
                    host: target.host.clone(),
                    url: start_url.clone(),
                    reason: format!("the upload Location {location:?} is not a URL: {e}"),
                })?;
            let base = reqwest::Url::parse(&target.base()).map_err(|e| RegistryError::Invalid {
                host: target.host.clone(),
                url: start_url.clone(),
                reason: e.to_string(),
            })?;
            if !same_origin(&base, &upload) {
                return Err(RegistryError::OtherHost {
                    host: target.host.clone(),
                    url: upload.to_string(),
                    what: "an upload location at",
                });
            }
            upload.query_pairs_mut().append_pair("digest", digest);
            let upload = upload.to_string();
            let response = self
                .send_with(
                    target,
                    &upload,
                    deadline,
                    &mut requests,
                    Access::Push,
                    |c| {
                        c.put(&upload)
                            .header(header::CONTENT_TYPE, "application/octet-stream")
                            .body(bytes.to_vec())
                    },
                )
                .await?;
            if !response.status().is_success() {
                return Err(http_error(target, &upload, response).await);
            }
            Ok(())
        })
        .await
    }

    /// Put a manifest under `tag`; returns its digest.
    pub async fn push_manifest(
        &self,
        target: &Target,
        tag: &str,
        media_type: &str,
        bytes: &[u8],
        timeout: Duration,
    ) -> Result<String, RegistryError> {
        let deadline = Instant::now() + timeout;
        let what = format!("{}:{tag}", target.display());
        with_timeout(timeout, what, async {
            let mut requests = 0;
            let url = format!("{}/v2/{}/manifests/{tag}", target.base(), target.path);
            let response = self
                .send_with(target, &url, deadline, &mut requests, Access::Push, |c| {
                    c.put(&url)
                        .header(header::CONTENT_TYPE, media_type)
                        .body(bytes.to_vec())
                })
                .await?;
            if !response.status().is_success() {
                return Err(http_error(target, &url, response).await);
            }
            Ok(sha256_digest(bytes))
        })
        .await
    }
}

async fn http_error(target: &Target, url: &str, response: reqwest::Response) -> RegistryError {
    let status = response.status().as_u16();
    RegistryError::Http {
        host: target.host.clone(),
        url: url.to_string(),
        status,
        body: error_body(response).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        let d = sha256_digest(b"");
        assert_eq!(
            d,
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(is_sha256_digest(&d));
        assert!(!is_sha256_digest("sha256:E3B0"));
        assert!(!is_sha256_digest("sha512:00"));
        assert!(!is_sha256_digest(&format!("{d}0")));
        assert!(!is_sha256_digest("sha256:../../etc/passwd"));
    }
}
