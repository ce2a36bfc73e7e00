//! Image references (`[registry/]path[:tag][@digest]`): parsing, Docker Hub defaults, and the
//! registry host used for API calls.

use std::fmt;

use thiserror::Error;

/// Docker Hub's canonical name and the host its API is served from.
pub const DOCKER_HUB: &str = "docker.io";
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ReferenceError {
    pub reference: String,
    pub reason: String,
}

/// A parsed image reference. `repository` is what users write without tag/digest
/// (e.g. `nginx`, `ghcr.io/org/app`, `127.0.0.1:5000/app`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(text: &str) -> Result<Self, ReferenceError> {
        let err = |reason: &str| ReferenceError {
            reference: text.to_string(),
            reason: reason.to_string(),
        };
        let text_trim = text.trim();
        if text_trim.is_empty() {
            return Err(err("empty"));
        }
        if text_trim.chars().any(|c| c.is_whitespace()) {
            return Err(err("contains whitespace"));
        }
        let (rest, digest) = match text_trim.split_once('@') {
            Some((rest, digest)) => {
                if !digest.contains(':') {
                    return Err(err("digest must look like sha256:<hex>"));
                }
                (rest, Some(digest.to_string()))
            }
            None => (text_trim, None),
        };
        // A ':' after the last '/' separates the tag (a ':' before it is a registry port).
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (repository, tag) = match rest[last_slash..].find(':') {
            Some(i) => {
                let split = last_slash + i;
                (&rest[..split], Some(rest[split + 1..].to_string()))
            }
            None => (rest, None),
        };
        if repository.is_empty() {
            return Err(err("missing repository name"));
        }
        if let Some(tag) = &tag
            && (tag.is_empty() || tag.len() > 128)
        {
            return Err(err("tag must be 1 to 128 characters"));
        }
        if repository.ends_with('/') || repository.contains("//") {
            return Err(err("empty path component"));
        }
        Ok(Self {
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// Registry host and repository path as the distribution API sees them.
    pub fn registry_and_path(&self) -> (String, String) {
        split_repository(&self.repository)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Split `repository` into (registry host, path) with Docker's rules: the first component is a
/// registry when it contains '.' or ':' or is `localhost`; otherwise the image is on Docker Hub
/// and single-component names live under `library/`.
pub fn split_repository(repository: &str) -> (String, String) {
    let (first, rest) = match repository.split_once('/') {
        Some((first, rest)) => (first, Some(rest)),
        None => (repository, None),
    };
    match rest {
        Some(rest) if first.contains('.') || first.contains(':') || first == "localhost" => {
            let host = if first == DOCKER_HUB || first == "index.docker.io" {
                DOCKER_HUB_API.to_string()
            } else {
                first.to_string()
            };
            let path = if host == DOCKER_HUB_API && !rest.contains('/') {
                format!("library/{rest}")
            } else {
                rest.to_string()
            };
            (host, path)
        }
        Some(_) => (DOCKER_HUB_API.to_string(), repository.to_string()),
        None => (DOCKER_HUB_API.to_string(), format!("library/{repository}")),
    }
}

/// Whether a registry host is on the loopback interface, where (like Docker) plain HTTP is
/// allowed without `insecure: true`.
pub fn is_loopback_host(host: &str) -> bool {
    let name = host
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map(|(name, _)| name)
        .unwrap_or(host);
    name == "localhost" || name.starts_with("127.") || name == "[::1]"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registry_port_tag_and_digest() {
        let r = ImageRef::parse("127.0.0.1:5000/team/app:1.2.3@sha256:abc").unwrap();
        assert_eq!(r.repository, "127.0.0.1:5000/team/app");
        assert_eq!(r.tag.as_deref(), Some("1.2.3"));
        assert_eq!(r.digest.as_deref(), Some("sha256:abc"));
        assert_eq!(r.to_string(), "127.0.0.1:5000/team/app:1.2.3@sha256:abc");
        let r = ImageRef::parse("127.0.0.1:5000/app").unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.repository, "127.0.0.1:5000/app");
    }

    #[test]
    fn docker_hub_defaults() {
        assert_eq!(
            split_repository("nginx"),
            ("registry-1.docker.io".into(), "library/nginx".into())
        );
        assert_eq!(
            split_repository("bitnami/redis"),
            ("registry-1.docker.io".into(), "bitnami/redis".into())
        );
        assert_eq!(
            split_repository("docker.io/nginx"),
            ("registry-1.docker.io".into(), "library/nginx".into())
        );
        assert_eq!(
            split_repository("ghcr.io/org/app"),
            ("ghcr.io".into(), "org/app".into())
        );
        assert_eq!(
            split_repository("localhost/app"),
            ("localhost".into(), "app".into())
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(ImageRef::parse("").is_err());
        assert!(ImageRef::parse("app:").is_err());
        assert!(ImageRef::parse("app@nodigest").is_err());
        assert!(ImageRef::parse("a b").is_err());
    }

    #[test]
    fn loopback() {
        assert!(is_loopback_host("127.0.0.1:15000"));
        assert!(is_loopback_host("localhost"));
        assert!(!is_loopback_host("ghcr.io"));
    }
}
