//! `--set-image` overrides: rewrite container images in every pod template of the rendered
//! objects without editing files, like `kustomize edit set image`.
//!
//! Forms: `NAME=NEWNAME[:TAG][@DIGEST]`, `NAME=:TAG`, `NAME=@DIGEST`, `NAME:TAG`, `NAME@DIGEST`.
//! NAME matches the image name without tag/digest (e.g. `nginx`, `ghcr.io/org/app`). A new tag
//! replaces a pinned digest and vice versa, so the result always says exactly what was asked.
//! Every part follows the one image reference grammar of [`super::image_ref`], the same as
//! `ferry set-image` and image automation; the images already in the manifests are matched as
//! written.

use std::str::FromStr;

use serde_json::Value;

pub use super::image_ref::{ImageRef, OverrideError};
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

/// The forms `--set-image` accepts.
pub const OVERRIDE_FORMS: &str = "NAME=NEWNAME[:TAG][@DIGEST], NAME=:TAG, NAME=@DIGEST, NAME:TAG or NAME@DIGEST, e.g. nginx=registry.example/nginx:1.27";

const WHAT: &str = "--set-image";

impl FromStr for ImageOverride {
    type Err = OverrideError;

    /// The forms of [`OVERRIDE_FORMS`]; NAME, NEWNAME, TAG and DIGEST follow the one image
    /// reference grammar ([`super::image_ref`]).
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let reference = |source| OverrideError::Reference {
            what: WHAT,
            input: s.to_string(),
            source,
        };
        let Some((name, new)) = s.split_once('=') else {
            // NAME:TAG or NAME@DIGEST
            let parsed = ImageRef::parse(s).map_err(reference)?;
            if parsed.tag.is_none() && parsed.digest.is_none() {
                return Err(OverrideError::Form {
                    what: WHAT,
                    input: s.to_string(),
                    forms: OVERRIDE_FORMS,
                });
            }
            return Ok(Self {
                name: parsed.repository,
                new_name: None,
                tag: parsed.tag,
                digest: parsed.digest,
            });
        };
        if name.is_empty() {
            return Err(OverrideError::Name {
                what: WHAT,
                input: s.to_string(),
                problem: "is empty; it is the image name to replace, e.g. nginx",
            });
        }
        let name = ImageRef::parse(name).map_err(reference)?;
        if name.tag.is_some() || name.digest.is_some() {
            return Err(OverrideError::Name {
                what: WHAT,
                input: s.to_string(),
                problem: "must be an image name without tag or digest (it matches every tag of that image)",
            });
        }
        let new = if new.starts_with([':', '@']) {
            // NAME=:TAG[@DIGEST] or NAME=@DIGEST: keep the name, validate the rest as part of
            // a reference on that name (so the message shows what the image would be).
            let whole = format!("{}{new}", name.repository);
            let parsed = ImageRef::parse(&whole).map_err(reference)?;
            ImageRef {
                repository: String::new(),
                ..parsed
            }
        } else {
            ImageRef::parse(new).map_err(reference)?
        };
        Ok(Self {
            name: name.repository,
            new_name: (!new.repository.is_empty()).then_some(new.repository),
            tag: new.tag,
            digest: new.digest,
        })
    }
}

impl ImageOverride {
    /// The new image string for `image`, or `None` if this override does not match it.
    pub fn rewrite(&self, image: &str) -> Option<String> {
        // What a manifest holds is matched as written, never refused.
        let current = ImageRef::split(image);
        if current.repository != self.name {
            return None;
        }
        let mut next = current.clone();
        if let Some(new_name) = &self.new_name {
            next.repository = new_name.clone();
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
            v.parse().map_err(|e: OverrideError| Error::Source {
                path: "--set-image".into(),
                message: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse_bytes;
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
    fn refuses_what_the_reference_grammar_refuses() {
        for (input, needle) in [
            ("nginx=mirror/nginx:1.27 ", "whitespace"),
            ("nginx=mirror/nginx:1.27\nx", "whitespace"),
            ("nginx =mirror/nginx:1.27", "whitespace"),
            ("nginx=Mirror/nginx:1.27", "upper-case"),
            ("nginx=mirror/../nginx:1.27", "path component \"..\""),
            ("nginx=mirror/nginx:", "tag \"\""),
            ("nginx=:", "tag \"\""),
            ("nginx=@nodigest", "digest"),
            ("nginx:1.25=nginx:1.27", "without tag or digest"),
            ("nginx", "expected NAME=NEWNAME"),
            ("=x:1", "NAME before `=` is empty"),
            ("nginx=mirror:99999/nginx:1", "registry"),
        ] {
            let err = input.parse::<ImageOverride>().unwrap_err().to_string();
            assert!(err.contains(needle), "{input:?}: {err}");
            assert!(err.starts_with("invalid --set-image"), "{input:?}: {err}");
        }
        let long = format!("nginx=mirror/{}:1", "n".repeat(300));
        let err = long.parse::<ImageOverride>().unwrap_err().to_string();
        assert!(err.contains("at most 255"), "{err}");
        let err = parse_all(&["nginx=a b:1".into()]).unwrap_err().to_string();
        assert!(
            err.contains("--set-image") && err.contains("whitespace"),
            "{err}"
        );
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
