//! `--set-image` overrides: rewrite container images in every pod template of the rendered
//! objects without editing files, like `kustomize edit set image`.
//!
//! Forms: `NAME=NEWNAME[:TAG][@DIGEST]`, `NAME=:TAG`, `NAME=@DIGEST`, `NAME:TAG`, `NAME@DIGEST`.
//! NAME matches the image name without tag/digest (e.g. `nginx`, `ghcr.io/org/app`). A new tag
//! replaces a pinned digest and vice versa, so the result always says exactly what was asked.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use crate::{Error, Manifest, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOverride {
    /// Image name to match (no tag, no digest).
    pub name: String,
    /// Replacement name; `None` keeps the matched name.
    pub new_name: Option<String>,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// An image reference split into name, tag and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub name: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(image: &str) -> Self {
        let (rest, digest) = match image.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest.to_string())),
            None => (image, None),
        };
        // A ':' after the last '/' is a tag; before it, a registry port.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                rest[..last_slash + i].to_string(),
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest.to_string(), None),
        };
        Self { name, tag, digest }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageOverride {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "invalid --set-image {s:?}: expected NAME=NEWNAME:TAG, NAME=NEWNAME@DIGEST, NAME=:TAG or NAME:TAG"
            )
        };
        let (name, new) = match s.split_once('=') {
            Some((name, new)) => (name.to_string(), ImageRef::parse(new)),
            None => {
                let parsed = ImageRef::parse(s);
                if parsed.tag.is_none() && parsed.digest.is_none() {
                    return Err(bad());
                }
                (
                    parsed.name.clone(),
                    ImageRef {
                        name: String::new(),
                        ..parsed
                    },
                )
            }
        };
        if name.is_empty() || name.contains(['@', ' ']) {
            return Err(bad());
        }
        if new.name.is_empty() && new.tag.is_none() && new.digest.is_none() {
            return Err(bad());
        }
        if let Some(digest) = &new.digest
            && !digest.contains(':')
        {
            return Err(format!(
                "invalid --set-image {s:?}: digest {digest:?} must look like sha256:<hex>"
            ));
        }
        Ok(Self {
            name: ImageRef::parse(&name).name,
            new_name: (!new.name.is_empty()).then_some(new.name),
            tag: new.tag.filter(|t| !t.is_empty()),
            digest: new.digest,
        })
    }
}

impl ImageOverride {
    /// The new image string for `image`, or `None` if this override does not match it.
    pub fn rewrite(&self, image: &str) -> Option<String> {
        let current = ImageRef::parse(image);
        if current.name != self.name {
            return None;
        }
        let mut next = current.clone();
        if let Some(new_name) = &self.new_name {
            next.name = new_name.clone();
        }
        if self.tag.is_some() || self.digest.is_some() {
            next.tag = self.tag.clone();
            next.digest = self.digest.clone();
        }
        Some(next.to_string())
    }
}

/// Apply all overrides to every container and initContainer (and ephemeral container) image.
pub fn apply_overrides(manifests: &mut [Manifest], overrides: &[ImageOverride]) -> Result<()> {
    if overrides.is_empty() {
        return Ok(());
    }
    for manifest in manifests.iter_mut() {
        let kind = manifest.kind().to_string();
        let Some(spec) = pod_spec_mut(&mut manifest.object.data, &kind) else {
            continue;
        };
        for field in ["containers", "initContainers", "ephemeralContainers"] {
            let Some(Value::Array(containers)) = spec.get_mut(field) else {
                continue;
            };
            for container in containers {
                let Some(image) = container.get("image").and_then(Value::as_str) else {
                    continue;
                };
                let mut image = image.to_string();
                for o in overrides {
                    if let Some(new) = o.rewrite(&image) {
                        image = new;
                    }
                }
                container["image"] = Value::String(image);
            }
        }
    }
    Ok(())
}

fn pod_spec_mut<'a>(object: &'a mut Value, kind: &str) -> Option<&'a mut Value> {
    let pointer = match kind {
        "Pod" => "/spec",
        "CronJob" => "/spec/jobTemplate/spec/template/spec",
        _ => "/spec/template/spec",
    };
    object.pointer_mut(pointer)
}

/// Parse many `--set-image` values; errors are reported as [`Error::Source`] on the flag.
pub fn parse_all(values: &[String]) -> Result<Vec<ImageOverride>> {
    values
        .iter()
        .map(|v| {
            v.parse().map_err(|message| Error::Source {
                path: "--set-image".into(),
                message,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::plain::parse_bytes;
    use std::path::Path;

    #[test]
    fn parse_forms() {
        let o: ImageOverride = "nginx=registry.local:5000/web:1.27".parse().unwrap();
        assert_eq!(o.name, "nginx");
        assert_eq!(o.new_name.as_deref(), Some("registry.local:5000/web"));
        assert_eq!(o.tag.as_deref(), Some("1.27"));
        let o: ImageOverride = "nginx:1.2".parse().unwrap();
        assert_eq!(
            (o.name.as_str(), o.new_name, o.tag.as_deref()),
            ("nginx", None, Some("1.2"))
        );
        let o: ImageOverride = "app=@sha256:abc".parse().unwrap();
        assert_eq!(o.digest.as_deref(), Some("sha256:abc"));
        assert!("nginx".parse::<ImageOverride>().is_err());
        assert!("=x:1".parse::<ImageOverride>().is_err());
    }

    #[test]
    fn rewrite_matches_name_only() {
        let o: ImageOverride = "ghcr.io/org/app=ghcr.io/org/app:v2".parse().unwrap();
        assert_eq!(
            o.rewrite("ghcr.io/org/app:v1").as_deref(),
            Some("ghcr.io/org/app:v2")
        );
        assert_eq!(
            o.rewrite("ghcr.io/org/app@sha256:1").as_deref(),
            Some("ghcr.io/org/app:v2")
        );
        assert_eq!(o.rewrite("ghcr.io/org/app-other:v1"), None);
        let o: ImageOverride = "localhost:5000/a=:7".parse().unwrap();
        assert_eq!(
            o.rewrite("localhost:5000/a").as_deref(),
            Some("localhost:5000/a:7")
        );
    }

    #[test]
    fn rewrites_all_workload_kinds() {
        let yaml = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  template:
    spec:
      initContainers: [{name: i, image: "busybox:1"}]
      containers: [{name: c, image: "nginx:1.25"}, {name: s, image: "envoy:1"}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: c}
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers: [{name: c, image: nginx}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: x}
data: {image: nginx}
"#;
        let mut manifests = parse_bytes(yaml.as_bytes(), Path::new("a.yaml")).unwrap();
        let overrides = parse_all(&["nginx=mirror/nginx:1.27".into(), "busybox:2".into()]).unwrap();
        apply_overrides(&mut manifests, &overrides).unwrap();
        let d = &manifests[0].object.data["spec"]["template"]["spec"];
        assert_eq!(d["containers"][0]["image"], "mirror/nginx:1.27");
        assert_eq!(d["containers"][1]["image"], "envoy:1");
        assert_eq!(d["initContainers"][0]["image"], "busybox:2");
        let c = &manifests[1].object.data["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(c["containers"][0]["image"], "mirror/nginx:1.27");
        assert_eq!(manifests[2].object.data["data"]["image"], "nginx");
    }
}
