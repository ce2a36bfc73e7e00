//! THE image reference grammar (`[REGISTRY[:PORT]/]PATH[:TAG][@DIGEST]`) and the two override
//! forms built on it: `ferry apply/render --set-image` ([`super::set_image::ImageOverride`]) and
//! `ferry set-image NAME=IMAGE` ([`parse_assignment`]). ferry-images (image automation, registry
//! scans, webhook payloads) uses the same parser, so every command accepts the same references.
//!
//! The grammar is Docker's / the OCI distribution spec's:
//! - REGISTRY is the first `/`-separated component when it contains `.` or `:` or is
//!   `localhost` (else the image is on Docker Hub): a host name, IPv4 address or `[IPv6]`
//!   address, with an optional `:PORT` (1 to 65535).
//! - PATH components are lowercase letters and digits separated by `.`, `_`, `__` or dashes
//!   (so no `..`, no upper case, no empty component); REGISTRY + PATH is at most 255 characters.
//! - TAG is 1 to 128 letters, digits, `_`, `.` or `-`, not starting with `.` or `-`.
//! - DIGEST is `ALGORITHM:ENCODED` (OCI image-spec: `sha256:<hex>`). Its length is not checked
//!   against the algorithm: a registry or the kubelet reports a wrong digest by name.
//! - No whitespace or control characters anywhere (not even around the reference): a reference
//!   with a stray newline is refused rather than trimmed, so what is written is what was typed.
//!
//! Values already in files or manifests are only matched, never refused: [`ImageRef::split`]
//! splits them without validating.

use std::fmt;

/// Docker Hub's canonical name and the host its API is served from.
pub const DOCKER_HUB: &str = "docker.io";
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// Longest REGISTRY + PATH (distribution's limit).
pub const MAX_NAME_LEN: usize = 255;
/// Longest TAG.
pub const MAX_TAG_LEN: usize = 128;
/// What a reference looks like, for messages.
pub const REFERENCE_FORM: &str = "[REGISTRY[:PORT]/]PATH[:TAG][@DIGEST], e.g. ghcr.io/org/app:1.2.3 or registry.example:5000/app@sha256:<hex>";

/// An image reference split into repository (registry + path as written, e.g. `nginx`,
/// `ghcr.io/org/app`, `127.0.0.1:5000/app`), tag and digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// What is wrong with a reference; the message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefProblem {
    #[error("it is empty")]
    Empty,
    #[error("it contains whitespace or a control character; remove it")]
    Whitespace,
    #[error("the image name is missing before the tag or digest")]
    MissingName,
    #[error("the name is {len} characters long; at most {MAX_NAME_LEN} are allowed")]
    TooLong { len: usize },
    #[error("it has an empty path component (`//`, or `/` at the start or end)")]
    EmptyComponent,
    #[error(
        "registry {host:?} is not a host name, IPv4 or [IPv6] address with an optional :PORT (1-65535)"
    )]
    BadRegistry { host: String },
    #[error("path component {component:?} has upper-case letters; image names are lower case")]
    UpperCase { component: String },
    #[error(
        "path component {component:?} must be lower-case letters and digits separated by `.`, `_`, `__` or `-` (no `..`, nothing at either end)"
    )]
    BadComponent { component: String },
    #[error(
        "tag {tag:?} must be 1 to {MAX_TAG_LEN} letters, digits, `_`, `.` or `-`, not starting with `.` or `-`"
    )]
    BadTag { tag: String },
    #[error("digest {digest:?} must be ALGORITHM:HEX, e.g. sha256:<64 hex digits>")]
    BadDigest { digest: String },
}

/// A reference that does not follow the grammar. The reference is quoted (escaped, and cut
/// short when very long) so a stray newline or a huge value stays readable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {}: {problem}; expected {REFERENCE_FORM}", quoted(.reference))]
pub struct ImageRefError {
    pub reference: String,
    #[source]
    pub problem: ImageRefProblem,
}

/// `text` quoted for a message: escaped, at most 200 characters of it.
pub fn quoted(text: &str) -> String {
    const MAX: usize = 200;
    if text.chars().count() <= MAX {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(MAX).collect();
        format!("{head:?}… ({} characters)", text.chars().count())
    }
}

impl ImageRef {
    /// Parse and validate a reference (user input: flags, CRD fields, webhook payloads).
    pub fn parse(text: &str) -> Result<Self, ImageRefError> {
        let fail = |problem| ImageRefError {
            reference: text.to_string(),
            problem,
        };
        if text.is_empty() {
            return Err(fail(ImageRefProblem::Empty));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(fail(ImageRefProblem::Whitespace));
        }
        let split = Self::split_first_colon(text);
        if split.repository.is_empty() {
            return Err(fail(ImageRefProblem::MissingName));
        }
        validate_repository(&split.repository).map_err(fail)?;
        if let Some(tag) = &split.tag {
            validate_tag(tag).map_err(fail)?;
        }
        if let Some(digest) = &split.digest {
            validate_digest(digest).map_err(fail)?;
        }
        Ok(split)
    }

    /// Split without validating, for values already in files and manifests (which are matched,
    /// never refused): the digest after the first `@`, the tag after the last `:` that follows
    /// the last `/` (a `:` before it is a registry port).
    pub fn split(text: &str) -> Self {
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest.to_string())),
            None => (text, None),
        };
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (repository, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                rest[..last_slash + i].to_string(),
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest.to_string(), None),
        };
        Self {
            repository,
            tag,
            digest,
        }
    }

    /// Like [`Self::split`], but the tag starts at the first `:` of the last component, so a
    /// second `:` lands in the tag and is refused there.
    fn split_first_colon(text: &str) -> Self {
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest.to_string())),
            None => (text, None),
        };
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (repository, tag) = match rest[last_slash..].find(':') {
            Some(i) => (
                rest[..last_slash + i].to_string(),
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest.to_string(), None),
        };
        Self {
            repository,
            tag,
            digest,
        }
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

/// Does the first component of a repository name a registry (Docker's rule)?
fn is_registry(first: &str) -> bool {
    first.contains(['.', ':']) || first == "localhost" || first.starts_with('[')
}

/// Validate REGISTRY/PATH (no tag, no digest).
pub fn validate_repository(repository: &str) -> Result<(), ImageRefProblem> {
    if repository.is_empty() {
        return Err(ImageRefProblem::MissingName);
    }
    if repository.len() > MAX_NAME_LEN {
        return Err(ImageRefProblem::TooLong {
            len: repository.len(),
        });
    }
    let components: Vec<&str> = repository.split('/').collect();
    if components.iter().any(|c| c.is_empty()) {
        return Err(ImageRefProblem::EmptyComponent);
    }
    let path = if components.len() > 1 && is_registry(components[0]) {
        validate_registry(components[0])?;
        &components[1..]
    } else {
        &components[..]
    };
    for component in path {
        validate_path_component(component)?;
    }
    Ok(())
}

fn validate_registry(registry: &str) -> Result<(), ImageRefProblem> {
    let bad = || ImageRefProblem::BadRegistry {
        host: registry.to_string(),
    };
    let (host_ok, port) = if let Some(v6) = registry.strip_prefix('[') {
        let (address, after) = v6.split_once(']').ok_or_else(bad)?;
        let ok = !address.is_empty()
            && address.contains(':')
            && address.chars().all(|c| c.is_ascii_hexdigit() || c == ':');
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(bad)?),
        };
        (ok, port)
    } else {
        let (host, port) = match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        };
        let ok = !host.is_empty()
            && host.split('.').all(|label| {
                let bytes = label.as_bytes();
                !bytes.is_empty()
                    && bytes
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
                    && bytes[0] != b'-'
                    && bytes[bytes.len() - 1] != b'-'
            });
        (ok, port)
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n))
    });
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn validate_path_component(component: &str) -> Result<(), ImageRefProblem> {
    if component.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ImageRefProblem::UpperCase {
            component: component.to_string(),
        });
    }
    let bad = || ImageRefProblem::BadComponent {
        component: component.to_string(),
    };
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    let mut expect_alnum = true;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            expect_alnum = false;
            continue;
        }
        if expect_alnum {
            return Err(bad());
        }
        // A separator: `.`, `_`, `__` or one or more `-`.
        let start = i;
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if bytes.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return Err(bad()),
        }
        debug_assert!(i > start);
        expect_alnum = true;
    }
    if expect_alnum {
        // Empty, or ends with a separator.
        return Err(bad());
    }
    Ok(())
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`
pub fn validate_tag(tag: &str) -> Result<(), ImageRefProblem> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_TAG_LEN
        && word(bytes[0])
        && bytes.iter().all(|b| word(*b) || *b == b'.' || *b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ImageRefProblem::BadTag {
            tag: tag.to_string(),
        })
    }
}

/// OCI image-spec: `algorithm ":" encoded`, algorithm `[a-z0-9]+([+._-][a-z0-9]+)*`, encoded
/// `[a-zA-Z0-9=_-]+`.
pub fn validate_digest(digest: &str) -> Result<(), ImageRefProblem> {
    let bad = || ImageRefProblem::BadDigest {
        digest: digest.to_string(),
    };
    let (algorithm, encoded) = digest.split_once(':').ok_or_else(bad)?;
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.split(['+', '.', '_', '-']).all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    let encoded_ok = !encoded.is_empty()
        && encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
    if algorithm_ok && encoded_ok {
        Ok(())
    } else {
        Err(bad())
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

/// Why a `NAME=IMAGE` argument or a `--set-image` value was refused. Every message names the
/// whole input and the form that was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    #[error("invalid {what} {}: expected {forms}", quoted(.input))]
    Form {
        what: &'static str,
        input: String,
        forms: &'static str,
    },
    #[error("invalid {what} {}: NAME before `=` {problem}", quoted(.input))]
    Name {
        what: &'static str,
        input: String,
        problem: &'static str,
    },
    #[error("invalid {what} {}: {source}", quoted(.input))]
    Reference {
        what: &'static str,
        input: String,
        #[source]
        source: ImageRefError,
    },
}

/// The forms `ferry set-image` accepts.
pub const ASSIGNMENT_FORMS: &str = "NAME=IMAGE[:TAG][@DIGEST], e.g. app=registry.example/app:1.2.3 (NAME: a policy name from a $imagepolicy marker, or an image name)";

/// `ferry set-image NAME=IMAGE[:TAG][@DIGEST]`: NAME is a policy name (`name` or
/// `namespace:name`) or an image name, matched as written; IMAGE is a full reference (the
/// repository is what the files get). A tag-only update is `NAME=REPOSITORY:TAG`.
pub fn parse_assignment(text: &str) -> Result<(String, ImageRef), OverrideError> {
    const WHAT: &str = "set-image argument";
    let (name, image) = text.split_once('=').ok_or_else(|| OverrideError::Form {
        what: WHAT,
        input: text.to_string(),
        forms: ASSIGNMENT_FORMS,
    })?;
    let name_problem = if name.is_empty() {
        Some("is empty")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains whitespace or a control character; remove it")
    } else if name.len() > MAX_NAME_LEN {
        Some("is longer than 255 characters")
    } else {
        None
    };
    if let Some(problem) = name_problem {
        return Err(OverrideError::Name {
            what: WHAT,
            input: text.to_string(),
            problem,
        });
    }
    if image.starts_with([':', '@']) {
        return Err(OverrideError::Form {
            what: WHAT,
            input: text.to_string(),
            forms: "NAME=IMAGE[:TAG][@DIGEST] with the image's repository before the tag, e.g. app=registry.example/app:1.2.3",
        });
    }
    let image = ImageRef::parse(image).map_err(|source| OverrideError::Reference {
        what: WHAT,
        input: text.to_string(),
        source,
    })?;
    Ok((name.to_string(), image))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> ImageRef {
        ImageRef::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn problem(text: &str) -> ImageRefProblem {
        match ImageRef::parse(text) {
            Ok(r) => panic!("{text:?} was accepted as {r:?}"),
            Err(e) => e.problem,
        }
    }

    #[test]
    fn registry_port_path_tag_and_digest() {
        let r = ok("127.0.0.1:5000/team/app:1.2.3@sha256:abc");
        assert_eq!(r.repository, "127.0.0.1:5000/team/app");
        assert_eq!(r.tag.as_deref(), Some("1.2.3"));
        assert_eq!(r.digest.as_deref(), Some("sha256:abc"));
        assert_eq!(r.to_string(), "127.0.0.1:5000/team/app:1.2.3@sha256:abc");
        let r = ok("127.0.0.1:5000/app");
        assert_eq!((r.repository.as_str(), r.tag), ("127.0.0.1:5000/app", None));
        for text in [
            "nginx",
            "nginx:1.27",
            "library/nginx:latest",
            "docker.io/library/nginx",
            "ghcr.io/org/sub/app:v1.2.3-rc.1",
            "localhost/app",
            "localhost:5000/app:1",
            "[::1]:5000/app:1",
            "Registry.Example.COM/app",
            "my-registry.example:443/a.b_c__d---e/f:_x",
            "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "app:1.0@sha512:abc",
            "app@multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
        ] {
            assert_eq!(ok(text).to_string(), text);
        }
        let long_tag = "t".repeat(MAX_TAG_LEN);
        ok(&format!("app:{long_tag}"));
        let long_name = format!("a/{}", "b".repeat(MAX_NAME_LEN - 2));
        ok(&long_name);
    }

    #[test]
    fn hostile_and_malformed_references_are_refused() {
        use ImageRefProblem as P;
        assert_eq!(problem(""), P::Empty);
        for text in [
            " nginx",
            "nginx ",
            "ngi nx",
            "nginx\n",
            "nginx:1\nimage: evil",
            "nginx\t:1",
            "app:1\r",
            "app\u{0}",
            "app\u{85}",
        ] {
            assert_eq!(problem(text), P::Whitespace, "{text:?}");
        }
        assert_eq!(problem(":1.0"), P::MissingName);
        assert_eq!(problem("@sha256:abc"), P::MissingName);
        assert_eq!(problem("a//b"), P::EmptyComponent);
        assert_eq!(problem("/a"), P::EmptyComponent);
        assert_eq!(problem("a/"), P::EmptyComponent);
        for text in [
            "a/../b",
            "reg.example/../etc",
            "a/..",
            "..",
            "a/.b",
            "a/b.",
            "a/b-",
            "-a",
            "a/b___c",
            "a/b_-c",
            "a/b!",
        ] {
            assert!(
                matches!(problem(text), P::BadComponent { .. }),
                "{text:?}: {:?}",
                problem(text)
            );
        }
        for text in ["MyApp", "org/App:1", "ghcr.io/Org/app"] {
            assert!(matches!(problem(text), P::UpperCase { .. }), "{text:?}");
        }
        for text in [
            "reg..example/app",
            "-reg.example/app",
            "reg.example:/app",
            "reg.example:0/app",
            "reg.example:65536/app",
            "reg.example:5000:1/app",
            "reg.example:port/app",
            "[::1/app",
            "[zz::1]/app",
            "[::1]x/app",
            "ré.example/app",
            "app:a/b",
        ] {
            assert!(
                matches!(problem(text), P::BadRegistry { .. }),
                "{text:?}: {:?}",
                problem(text)
            );
        }
        for text in ["app:", "app:.x", "app:-x", "app:1:2", "app:é"] {
            assert!(
                matches!(problem(text), P::BadTag { .. }),
                "{text:?}: {:?}",
                problem(text)
            );
        }
        let too_long_tag = format!("app:{}", "t".repeat(MAX_TAG_LEN + 1));
        assert!(matches!(problem(&too_long_tag), P::BadTag { .. }));
        for text in [
            "app@nodigest",
            "app@",
            "app@sha256:",
            "app@:abc",
            "app@SHA256:abc",
            "app@sha256:ab/c",
            "app@sha256:abc@sha256:def",
            "app@sha256..x:abc",
        ] {
            assert!(
                matches!(problem(text), P::BadDigest { .. }),
                "{text:?}: {:?}",
                problem(text)
            );
        }
        let overlong = format!("a/{}", "b".repeat(MAX_NAME_LEN));
        assert_eq!(
            problem(&overlong),
            P::TooLong {
                len: MAX_NAME_LEN + 2
            }
        );
    }

    #[test]
    fn errors_name_the_input_and_the_expected_form() {
        let err = ImageRef::parse("nginx:1\nimage: evil")
            .unwrap_err()
            .to_string();
        assert!(err.contains(r#""nginx:1\nimage: evil""#), "{err}");
        assert!(err.contains("remove it"), "{err}");
        assert!(
            err.contains("[REGISTRY[:PORT]/]PATH[:TAG][@DIGEST]"),
            "{err}"
        );
        // A huge value is cut short in the message.
        let huge = format!("a/{}", "B".repeat(100_000));
        let err = ImageRef::parse(&huge).unwrap_err().to_string();
        assert!(err.len() < 1_000, "{} bytes", err.len());
        assert!(err.contains("100002 characters"), "{err}");
    }

    #[test]
    fn split_never_refuses_what_is_already_in_a_file() {
        let r = ImageRef::split("Weird Name:tag:x@y");
        assert_eq!(r.repository, "Weird Name:tag");
        assert_eq!(r.tag.as_deref(), Some("x"));
        assert_eq!(r.digest.as_deref(), Some("y"));
        let r = ImageRef::split("localhost:5000/a");
        assert_eq!((r.repository.as_str(), r.tag), ("localhost:5000/a", None));
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
        assert_eq!(
            ok("docker.io/nginx:1").registry_and_path(),
            ("registry-1.docker.io".into(), "library/nginx".into())
        );
    }

    #[test]
    fn assignments() {
        let (name, image) = parse_assignment("apps:app=reg.example:5000/app:1.2.3").unwrap();
        assert_eq!(name, "apps:app");
        assert_eq!(image.to_string(), "reg.example:5000/app:1.2.3");
        let (_, image) = parse_assignment("app=reg/app@sha256:abc").unwrap();
        assert_eq!(image.digest.as_deref(), Some("sha256:abc"));
        for (input, needle) in [
            ("app", "expected NAME=IMAGE"),
            ("=reg/app:1", "NAME before `=` is empty"),
            (" app=reg/app:1", "whitespace"),
            ("app=reg/app:1 ", "whitespace"),
            ("app=reg/app:1\n", "whitespace"),
            ("app=:1.2", "repository before the tag"),
            ("app=@sha256:abc", "repository before the tag"),
            ("app=reg/App:1", "upper-case"),
            ("app=reg/../app:1", "path component"),
            ("app=reg/app:", "tag \"\""),
        ] {
            let err = parse_assignment(input).unwrap_err().to_string();
            assert!(err.contains(needle), "{input:?}: {err}");
            assert!(err.contains(&quoted(input)), "{input:?}: {err}");
        }
    }
}
