//! OCI artifacts as a source: pull (OCISource in the agent) and push (`ferry push artifact`) of
//! a directory of manifests, a kustomize overlay or a chart, in Flux's format, so artifacts
//! made by `flux push artifact` work here and ferry's work in Flux.
//!
//! Format (Flux's, RFC-0003): an OCI image manifest whose config has media type
//! [`FLUX_CONFIG_MEDIA_TYPE`] and whose one layer is a tar+gzip of the directory with media type
//! [`FLUX_CONTENT_MEDIA_TYPE`]; the git origin in the annotations [`ANNOTATION_SOURCE`] and
//! [`ANNOTATION_REVISION`]. Pulling takes the first Flux content layer, or else the first layer
//! whose media type ends in `tar+gzip` (`.tar.gzip` in Docker's spelling), as Flux does for
//! artifacts made by other tools.
//!
//! A registry and its artifacts are untrusted: the manifest is verified against its digest
//! before it is parsed, the layer count and layer size are bounded before anything is
//! downloaded, the layer is hashed while it streams to a temporary file and only a verified
//! layer is unpacked, by [`archive::extract`] with its bounds. Unpacked revisions are cached
//! per source by manifest digest: an unchanged tag costs one manifest request per interval.

pub mod archive;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use archive::{ExtractError, ExtractLimits, PackError};

use crate::render::image_ref::{ImageRef, ImageRefError, validate_tag};
use crate::source::registry::artifacts::{is_sha256_digest, sha256_digest};
use crate::source::registry::{ConnectOptions, Credentials, Registries, RegistryError, Target};

pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST_MEDIA_TYPE: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub const FLUX_CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.flux.config.v1+json";
pub const FLUX_CONTENT_MEDIA_TYPE: &str = "application/vnd.cncf.flux.content.v1.tar+gzip";
pub const ANNOTATION_SOURCE: &str = "org.opencontainers.image.source";
pub const ANNOTATION_REVISION: &str = "org.opencontainers.image.revision";
/// The URL scheme of artifact references (`oci://host/path[:tag]`), as Flux writes them.
pub const SCHEME: &str = "oci://";

/// Manifests asked for: single manifests, and indexes only to say clearly that they are not
/// artifacts.
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Which artifact of the repository to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactRef {
    Tag(String),
    /// A Masterminds/Flux range over the repository's tags; the highest match wins.
    Semver(String),
    /// A manifest digest, `sha256:<hex>`.
    Digest(String),
}

impl std::fmt::Display for ArtifactRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArtifactRef::Tag(t) => write!(f, "tag {t}"),
            ArtifactRef::Semver(r) => write!(f, "semver {r:?}"),
            ArtifactRef::Digest(d) => write!(f, "digest {d}"),
        }
    }
}

/// An `oci://` URL split into registry host, repository path and optional tag/digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciUrl {
    pub host: String,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl OciUrl {
    /// `host/path`, without scheme, tag or digest.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.host, self.path)
    }
}

impl std::fmt::Display for OciUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.host, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong pulling or pushing an artifact. The messages name the
/// artifact and say what to do; none carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{url:?} is not an OCI artifact URL: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid reference in {url}: {source}")]
    Reference {
        url: String,
        #[source]
        source: ImageRefError,
    },
    #[error("{what}: {source}")]
    Registry {
        what: String,
        #[source]
        source: RegistryError,
    },
    #[error("no tag of {repository} matches the semver range {range:?} (tags: {tags})")]
    NoMatchingTag {
        repository: String,
        range: String,
        tags: String,
    },
    #[error("invalid semver range {range:?} in spec.ref.semver: {reason}")]
    BadRange { range: String, reason: String },
    #[error("{artifact} is not an artifact ferry can use: {reason}")]
    NotAnArtifact { artifact: String, reason: String },
    #[error(
        "{artifact} has {count} layers, more than the limit of {limit}; an artifact has one content layer (refused before downloading anything)"
    )]
    TooManyLayers {
        artifact: String,
        count: usize,
        limit: usize,
    },
    #[error(
        "{artifact}: its content layer is {size} bytes compressed, more than the limit of {limit} (refused before downloading); an artifact of manifests, an overlay or a chart is far smaller: check what was pushed"
    )]
    LayerTooLarge {
        artifact: String,
        size: u64,
        limit: u64,
    },
    #[error("{artifact} was refused while unpacking, nothing of it is used: {source}")]
    Extract {
        artifact: String,
        #[source]
        source: ExtractError,
    },
    #[error("cannot pack {dir}: {source}")]
    Pack {
        dir: PathBuf,
        #[source]
        source: PackError,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl OciError {
    /// A short condition reason for status.
    pub fn reason(&self) -> &'static str {
        match self {
            OciError::InvalidUrl { .. }
            | OciError::Reference { .. }
            | OciError::BadRange { .. } => "InvalidSpec",
            OciError::Registry { source, .. } => match source {
                RegistryError::DigestMismatch { .. } => "DigestMismatch",
                RegistryError::TooLarge { .. } => "ArtifactTooLarge",
                RegistryError::OtherHost { .. } => "OtherHost",
                RegistryError::Unauthorized { .. } | RegistryError::Forbidden { .. } => {
                    "AuthenticationFailed"
                }
                _ => "FetchFailed",
            },
            OciError::NoMatchingTag { .. } => "NoMatchingTag",
            OciError::NotAnArtifact { .. } => "NotAnArtifact",
            OciError::TooManyLayers { .. } | OciError::LayerTooLarge { .. } => "ArtifactTooLarge",
            OciError::Extract { source, .. } => match source {
                ExtractError::TooLarge { .. }
                | ExtractError::FileTooLarge { .. }
                | ExtractError::TooManyEntries { .. }
                | ExtractError::TooDeep { .. } => "ArtifactTooLarge",
                ExtractError::Write { .. } => "StorageFailed",
                _ => "UnsafeArtifact",
            },
            OciError::Pack { .. } => "PackFailed",
            OciError::Io { .. } => "StorageFailed",
        }
    }

    /// Whether retrying cannot help until the spec or the artifact changes. Hostile or
    /// oversized content is retried anyway (a new push under the same tag fixes it), so only
    /// spec errors stall.
    pub fn is_spec_error(&self) -> bool {
        self.reason() == "InvalidSpec"
    }
}

/// Parse `oci://host/path[:tag][@digest]` with the image-reference grammar.
pub fn parse_url(url: &str) -> Result<OciUrl, OciError> {
    let Some(rest) = url.strip_prefix(SCHEME) else {
        return Err(OciError::InvalidUrl {
            url: url.to_string(),
            reason: format!("it must start with {SCHEME}, e.g. oci://ghcr.io/org/app"),
        });
    };
    let parsed = ImageRef::parse(rest).map_err(|source| OciError::Reference {
        url: url.to_string(),
        source,
    })?;
    let (host, path) = parsed.registry_and_path();
    // `oci://app` would mean Docker Hub's library/app: almost surely a typo for an artifact.
    if !rest
        .split('/')
        .next()
        .is_some_and(|h| h.contains(['.', ':']) || h == "localhost")
    {
        return Err(OciError::InvalidUrl {
            url: url.to_string(),
            reason: "it must name the registry host, e.g. oci://ghcr.io/org/app".into(),
        });
    }
    if let Some(digest) = &parsed.digest
        && !is_sha256_digest(digest)
    {
        return Err(OciError::InvalidUrl {
            url: url.to_string(),
            reason: "only sha256 digests are accepted".into(),
        });
    }
    Ok(OciUrl {
        host,
        path,
        tag: parsed.tag,
        digest: parsed.digest,
    })
}

/// Validate a reference from a spec (tag syntax, digest form, range grammar).
pub fn validate_ref(reference: &ArtifactRef) -> Result<(), OciError> {
    let invalid = |reason: String| OciError::InvalidUrl {
        url: reference.to_string(),
        reason,
    };
    match reference {
        ArtifactRef::Tag(tag) => validate_tag(tag).map_err(|p| invalid(p.to_string())),
        ArtifactRef::Digest(d) if is_sha256_digest(d) => Ok(()),
        ArtifactRef::Digest(_) => Err(invalid(
            "spec.ref.digest must be sha256:<64 lowercase hex digits>".into(),
        )),
        ArtifactRef::Semver(range) => crate::source::git::parse_semver_range(range)
            .map(|_| ())
            .map_err(|reason| OciError::BadRange {
                range: range.clone(),
                reason,
            }),
    }
}

/// Bounds on one pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullLimits {
    /// Layers in the manifest (Flux artifacts have one).
    pub max_layers: usize,
    /// Compressed size of the content layer.
    pub max_layer_bytes: u64,
    pub extract: ExtractLimits,
}

impl Default for PullLimits {
    fn default() -> Self {
        Self {
            max_layers: 16,
            max_layer_bytes: 128 * 1024 * 1024,
            extract: ExtractLimits::default(),
        }
    }
}

/// One pull.
#[derive(Debug, Clone)]
pub struct PullRequest {
    pub url: OciUrl,
    pub reference: ArtifactRef,
    pub credentials: Credentials,
    /// Plain HTTP (and no certificate checks).
    pub insecure: bool,
    /// Whose cache this is (`namespace/name`): no source is served another's unpacked files.
    pub owner: String,
    pub timeout: Duration,
    pub limits: PullLimits,
}

/// A pulled and unpacked artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledArtifact {
    pub path: PathBuf,
    /// `<tag>@sha256:<hex>` (the manifest digest), or `sha256:<hex>` for a digest reference:
    /// Flux's revision format.
    pub revision: String,
    pub digest: String,
    /// The `org.opencontainers.image.source` and `.revision` annotations, if set.
    pub origin_source: Option<String>,
    pub origin_revision: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: i64,
}

fn is_tar_gzip(media_type: &str) -> bool {
    media_type.ends_with("tar+gzip") || media_type.ends_with("tar.gzip")
}

/// The cache directory of one source (owner and repository), as in the git cache.
fn cache_base(cache_dir: &Path, owner: &str, repository: &str) -> PathBuf {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{owner}\n{repository}").as_bytes(),
    );
    cache_dir
        .join("oci")
        .join(hex::encode(&digest.as_ref()[..12]))
}

/// Resolve, download, verify and unpack `request` under `cache_dir` (see the module docs).
pub async fn pull(
    registries: &Registries,
    cache_dir: &Path,
    request: &PullRequest,
) -> Result<PulledArtifact, OciError> {
    let url = &request.url;
    let target = Target {
        host: url.host.clone(),
        path: url.path.clone(),
        credentials: request.credentials.clone(),
        options: ConnectOptions {
            insecure: request.insecure,
            ca_pem: None,
        },
    };
    let repository = format!("{SCHEME}{}", url.repository());
    let deadline = tokio::time::Instant::now() + request.timeout;
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
    let (label, manifest_ref) = match &request.reference {
        ArtifactRef::Tag(tag) => (Some(tag.clone()), tag.clone()),
        ArtifactRef::Digest(digest) => (None, digest.clone()),
        ArtifactRef::Semver(range) => {
            let tag = highest_tag(registries, &target, &repository, range, left()).await?;
            (Some(tag.clone()), tag)
        }
    };
    let artifact = match &label {
        Some(tag) => format!("{repository}:{tag}"),
        None => format!("{repository}@{manifest_ref}"),
    };
    let fetched = registries
        .manifest(&target, &manifest_ref, ACCEPT, left())
        .await
        .map_err(|source| OciError::Registry {
            what: format!("fetching the manifest of {artifact}"),
            source,
        })?;
    let not_artifact = |reason: String| OciError::NotAnArtifact {
        artifact: artifact.clone(),
        reason,
    };
    let manifest: Manifest = serde_json::from_slice(&fetched.bytes)
        .map_err(|e| not_artifact(format!("the manifest is not valid JSON: {e}")))?;
    let media_type = manifest
        .media_type
        .clone()
        .or(fetched.content_type.clone())
        .unwrap_or_default();
    if media_type == OCI_INDEX_MEDIA_TYPE
        || media_type == DOCKER_LIST_MEDIA_TYPE
        || manifest.manifests.is_some()
    {
        return Err(not_artifact(
            "it is an image index (a multi-platform image), not a single artifact manifest; push the directory with `ferry push artifact` or `flux push artifact`".into(),
        ));
    }
    let layers = manifest.layers.unwrap_or_default();
    if layers.len() > request.limits.max_layers {
        return Err(OciError::TooManyLayers {
            artifact,
            count: layers.len(),
            limit: request.limits.max_layers,
        });
    }
    let layer = layers
        .iter()
        .find(|l| l.media_type == FLUX_CONTENT_MEDIA_TYPE)
        .or_else(|| layers.iter().find(|l| is_tar_gzip(&l.media_type)))
        .cloned()
        .ok_or_else(|| {
            not_artifact(format!(
                "it has no tar+gzip content layer (layers: {}); expected {FLUX_CONTENT_MEDIA_TYPE}",
                layers
                    .iter()
                    .map(|l| l.media_type.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    if !is_sha256_digest(&layer.digest) {
        return Err(not_artifact(format!(
            "its layer digest {:?} is not sha256:<hex>",
            layer.digest
        )));
    }
    let size = u64::try_from(layer.size)
        .map_err(|_| not_artifact(format!("its layer size {} is negative", layer.size)))?;
    if size > request.limits.max_layer_bytes {
        return Err(OciError::LayerTooLarge {
            artifact,
            size,
            limit: request.limits.max_layer_bytes,
        });
    }
    let annotations = manifest.annotations.unwrap_or_default();
    let revision = match &label {
        Some(tag) => format!("{tag}@{}", fetched.digest),
        None => fetched.digest.clone(),
    };
    let io = |what: String| move |source| OciError::Io { what, source };
    let base = cache_base(cache_dir, &request.owner, &url.repository());
    let checkouts = base.join("checkouts");
    let hex = fetched.digest.trim_start_matches("sha256:").to_string();
    let final_path = checkouts.join(&hex);
    if !final_path.is_dir() {
        tokio::fs::create_dir_all(&checkouts)
            .await
            .map_err(io(format!("creating {}", checkouts.display())))?;
        // Download into a temp file next to the checkouts (removed on drop, error or not).
        let blob = tempfile::Builder::new()
            .prefix(".blob-")
            .tempfile_in(&checkouts)
            .map_err(io(format!(
                "creating a temp file in {}",
                checkouts.display()
            )))?;
        let mut file = tokio::fs::File::from_std(
            blob.reopen()
                .map_err(io(format!("opening {}", blob.path().display())))?,
        );
        registries
            .blob_to_file(&target, &layer.digest, size, &mut file, left())
            .await
            .map_err(|source| OciError::Registry {
                what: format!("downloading layer {} of {artifact}", layer.digest),
                source,
            })?;
        drop(file);
        let reader = blob
            .reopen()
            .map_err(io(format!("opening {}", blob.path().display())))?;
        let limits = request.limits.extract;
        let checkouts_for_task = checkouts.clone();
        let final_for_task = final_path.clone();
        let artifact_for_task = artifact.clone();
        let unpacked = tokio::task::spawn_blocking(move || {
            unpack(
                reader,
                &checkouts_for_task,
                &final_for_task,
                limits,
                &artifact_for_task,
            )
        })
        .await
        .map_err(|e| OciError::Io {
            what: format!("unpacking {artifact}"),
            source: std::io::Error::other(e.to_string()),
        })?;
        unpacked?;
        prune_checkouts(&checkouts, &final_path);
    }
    Ok(PulledArtifact {
        path: final_path,
        revision,
        digest: fetched.digest,
        origin_source: annotations.get(ANNOTATION_SOURCE).cloned(),
        origin_revision: annotations.get(ANNOTATION_REVISION).cloned(),
    })
}

/// Unpack into a temp dir beside `final_path`, then rename it into place: a checkout directory
/// that exists is always complete.
fn unpack(
    reader: std::fs::File,
    checkouts: &Path,
    final_path: &Path,
    limits: ExtractLimits,
    artifact: &str,
) -> Result<(), OciError> {
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempdir_in(checkouts)
        .map_err(|source| OciError::Io {
            what: format!("creating a temp dir in {}", checkouts.display()),
            source,
        })?;
    archive::extract(std::io::BufReader::new(reader), tmp.path(), limits).map_err(|source| {
        OciError::Extract {
            artifact: artifact.to_string(),
            source,
        }
    })?;
    let tmp_path = tmp.keep();
    std::fs::rename(&tmp_path, final_path).map_err(|source| {
        let _ = std::fs::remove_dir_all(&tmp_path);
        OciError::Io {
            what: format!("moving the unpacked artifact into {}", final_path.display()),
            source,
        }
    })
}

/// Keep `current` and the newest other checkout (a Release may still be rendering it); remove
/// older ones and leftovers of interrupted pulls.
fn prune_checkouts(checkouts: &Path, current: &Path) {
    let Ok(entries) = std::fs::read_dir(checkouts) else {
        return;
    };
    let mut others: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.path() != current)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    others.sort_by_key(|b| std::cmp::Reverse(b.0));
    for (_, path) in others.into_iter().skip(1) {
        if path.is_dir() {
            let _ = std::fs::remove_dir_all(path);
        } else {
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn highest_tag(
    registries: &Registries,
    target: &Target,
    repository: &str,
    range: &str,
    timeout: Duration,
) -> Result<String, OciError> {
    let req =
        crate::source::git::parse_semver_range(range).map_err(|reason| OciError::BadRange {
            range: range.to_string(),
            reason,
        })?;
    let list = registries
        .list_tags(target, timeout)
        .await
        .map_err(|source| OciError::Registry {
            what: format!("listing the tags of {repository}"),
            source,
        })?;
    let mut best: Option<(semver::Version, String)> = None;
    for tag in &list.tags {
        let Some(version) = ferry_semver::parse_version(tag) else {
            continue;
        };
        if req.matches(&version)
            && best.as_ref().is_none_or(|(b, _)| {
                ferry_semver::cmp_precedence(&version, b) == std::cmp::Ordering::Greater
            })
        {
            best = Some((version, tag.clone()));
        }
    }
    best.map(|(_, tag)| tag)
        .ok_or_else(|| OciError::NoMatchingTag {
            repository: repository.to_string(),
            range: range.to_string(),
            tags: {
                let shown: Vec<&str> = list.tags.iter().take(20).map(String::as_str).collect();
                let more = list.tags.len().saturating_sub(shown.len());
                if more > 0 {
                    format!("{} and {more} more", shown.join(", "))
                } else if shown.is_empty() {
                    "none".into()
                } else {
                    shown.join(", ")
                }
            },
        })
}

/// One push.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// With a tag (the tag pushed).
    pub url: OciUrl,
    pub dir: PathBuf,
    /// The `org.opencontainers.image.source` annotation (e.g. the git remote URL).
    pub source: Option<String>,
    /// The `org.opencontainers.image.revision` annotation (e.g. `main@sha1:<hex>`).
    pub revision: Option<String>,
    pub credentials: Credentials,
    pub insecure: bool,
    pub timeout: Duration,
}

/// What was pushed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pushed {
    /// `oci://host/path:tag`.
    pub url: String,
    /// Manifest digest.
    pub digest: String,
    pub layer_digest: String,
    pub layer_size: u64,
}

/// The manifest, config and layer of an artifact of `dir`, without pushing: the same
/// directory and annotations give the same bytes (and digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltArtifact {
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub layer: Vec<u8>,
}

/// Build the artifact of `dir` (blocking: reads and compresses the directory).
pub fn build(
    dir: &Path,
    source: Option<&str>,
    revision: Option<&str>,
) -> Result<BuiltArtifact, OciError> {
    let layer = archive::pack(dir).map_err(|source| OciError::Pack {
        dir: dir.to_path_buf(),
        source,
    })?;
    let config = b"{}".to_vec();
    let mut annotations = serde_json::Map::new();
    if let Some(source) = source {
        annotations.insert(ANNOTATION_SOURCE.into(), source.into());
    }
    if let Some(revision) = revision {
        annotations.insert(ANNOTATION_REVISION.into(), revision.into());
    }
    let mut manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": FLUX_CONFIG_MEDIA_TYPE,
            "digest": sha256_digest(&config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": FLUX_CONTENT_MEDIA_TYPE,
            "digest": sha256_digest(&layer),
            "size": layer.len(),
        }],
    });
    if !annotations.is_empty()
        && let Some(object) = manifest.as_object_mut()
    {
        object.insert("annotations".into(), serde_json::Value::Object(annotations));
    }
    let manifest = serde_json::to_vec(&manifest).map_err(|e| OciError::Io {
        what: "encoding the manifest".into(),
        source: std::io::Error::other(e),
    })?;
    Ok(BuiltArtifact {
        manifest,
        config,
        layer,
    })
}

/// Pack `request.dir` and push it as `request.url` (which must carry a tag): blobs first, the
/// manifest last.
pub async fn push(registries: &Registries, request: &PushRequest) -> Result<Pushed, OciError> {
    let url = &request.url;
    let Some(tag) = url.tag.clone() else {
        return Err(OciError::InvalidUrl {
            url: url.to_string(),
            reason: "name the tag to push, e.g. oci://ghcr.io/org/app:v1.0.0".into(),
        });
    };
    if url.digest.is_some() {
        return Err(OciError::InvalidUrl {
            url: url.to_string(),
            reason: "a digest cannot be pushed to; name a tag".into(),
        });
    }
    let dir = request.dir.clone();
    let (source, revision) = (request.source.clone(), request.revision.clone());
    let built =
        tokio::task::spawn_blocking(move || build(&dir, source.as_deref(), revision.as_deref()))
            .await
            .map_err(|e| OciError::Io {
                what: "packing".into(),
                source: std::io::Error::other(e.to_string()),
            })??;
    let target = Target {
        host: url.host.clone(),
        path: url.path.clone(),
        credentials: request.credentials.clone(),
        options: ConnectOptions {
            insecure: request.insecure,
            ca_pem: None,
        },
    };
    let shown = url.to_string();
    let registry = |what: &str| {
        let what = format!("{what} {shown}");
        move |source| OciError::Registry { what, source }
    };
    let layer_digest = sha256_digest(&built.layer);
    registries
        .push_blob(&target, &layer_digest, &built.layer, request.timeout)
        .await
        .map_err(registry("uploading the content layer of"))?;
    registries
        .push_blob(
            &target,
            &sha256_digest(&built.config),
            &built.config,
            request.timeout,
        )
        .await
        .map_err(registry("uploading the config of"))?;
    let digest = registries
        .push_manifest(
            &target,
            &tag,
            OCI_MANIFEST_MEDIA_TYPE,
            &built.manifest,
            request.timeout,
        )
        .await
        .map_err(registry("putting the manifest of"))?;
    Ok(Pushed {
        url: shown,
        digest,
        layer_digest,
        layer_size: built.layer.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("oci://127.0.0.1:15000/team/app:v1").unwrap();
        assert_eq!(u.host, "127.0.0.1:15000");
        assert_eq!(u.path, "team/app");
        assert_eq!(u.tag.as_deref(), Some("v1"));
        assert_eq!(u.to_string(), "oci://127.0.0.1:15000/team/app:v1");
        let u = parse_url("oci://ghcr.io/org/app").unwrap();
        assert_eq!((u.tag, u.digest), (None, None));
        for bad in [
            "ghcr.io/org/app",
            "https://ghcr.io/org/app",
            "oci://app",
            "oci://ghcr.io/org/../app",
            "oci://ghcr.io/org/app@sha512:00",
            "oci://ghcr.io/Org/app",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refs() {
        assert!(validate_ref(&ArtifactRef::Tag("v1.0".into())).is_ok());
        assert!(validate_ref(&ArtifactRef::Tag("../x".into())).is_err());
        assert!(validate_ref(&ArtifactRef::Semver(">=1.0.0 <2".into())).is_ok());
        assert!(validate_ref(&ArtifactRef::Semver("nope".into())).is_err());
        assert!(validate_ref(&ArtifactRef::Digest("sha256:abc".into())).is_err());
    }

    #[test]
    fn built_artifacts_are_reproducible_and_flux_shaped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cm.yaml"), "kind: ConfigMap\n").unwrap();
        let a = build(
            dir.path(),
            Some("https://git.example/r"),
            Some("main@sha1:ab"),
        )
        .unwrap();
        let b = build(
            dir.path(),
            Some("https://git.example/r"),
            Some("main@sha1:ab"),
        )
        .unwrap();
        assert_eq!(a, b);
        let m: serde_json::Value = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(m["config"]["mediaType"], FLUX_CONFIG_MEDIA_TYPE);
        assert_eq!(m["layers"][0]["mediaType"], FLUX_CONTENT_MEDIA_TYPE);
        assert_eq!(m["layers"][0]["digest"], sha256_digest(&a.layer));
        assert_eq!(m["annotations"][ANNOTATION_SOURCE], "https://git.example/r");
        assert_eq!(m["annotations"][ANNOTATION_REVISION], "main@sha1:ab");
    }
}
