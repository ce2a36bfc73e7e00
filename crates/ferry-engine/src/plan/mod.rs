//! Stage 4, plan (pure, no client): resolve kinds ([`kinds`], filled by `cluster::discovery`), default namespaces, stamp ownership metadata,
//! hash the intent, and order objects into apply phases. [`diff`] compares the plan with the
//! live cluster for `ferry diff` (see `pipeline::diff`).
//!
//! Ownership: every applied object gets the label `ferry.dev/app=<app>` and the annotation
//! `ferry.dev/owner=<owner id>` (`ownership`); both must match before ferry prunes or deletes
//! anything. `ferry.dev/intent-hash` is a hash of what ferry applies; a re-apply of an unchanged
//! object with an unchanged live fingerprint sends no write (see `apply`).

pub mod kinds;
pub mod waves;

use std::collections::HashMap;

use kube::api::ApiResource;
use serde_json::Value;

pub use kinds::{ResolvedKind, Resolver};

use crate::{Error, Manifest, ObjectKey, Result};

use crate::ownership::{ANNOTATION_HASH, ANNOTATION_OWNER, ANNOTATION_REVISION, LABEL_APP, Owner};

/// Apply order. Lower phases are applied (and, for CRDs, established) before higher ones;
/// objects within a phase are applied concurrently. Prune and delete go in reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Phase {
    /// Namespaces and CRDs: everything else may live in or be an instance of them.
    Foundation = 0,
    /// Identity, policy and configuration that workloads reference.
    Config = 1,
    /// Services before workloads, so environment variables and DNS exist at pod start.
    Network = 2,
    /// Workloads and everything else, including custom resources.
    Workload = 3,
    /// Admission webhooks and API services last: applying them early could block the rest
    /// while their backing workload is not running yet.
    Admission = 4,
}

impl Phase {
    pub fn of(group: &str, kind: &str) -> Self {
        match (group, kind) {
            ("", "Namespace") | ("apiextensions.k8s.io", "CustomResourceDefinition") => {
                Self::Foundation
            }
            (
                "",
                "ServiceAccount"
                | "Secret"
                | "ConfigMap"
                | "ResourceQuota"
                | "LimitRange"
                | "PersistentVolume"
                | "PersistentVolumeClaim",
            )
            | (
                "rbac.authorization.k8s.io",
                "ClusterRole" | "Role" | "ClusterRoleBinding" | "RoleBinding",
            )
            | ("scheduling.k8s.io", "PriorityClass")
            | ("storage.k8s.io", "StorageClass")
            | ("node.k8s.io", "RuntimeClass")
            | ("networking.k8s.io", "NetworkPolicy" | "IngressClass")
            | ("policy", "PodDisruptionBudget") => Self::Config,
            ("", "Service" | "Endpoints") | ("discovery.k8s.io", "EndpointSlice") => Self::Network,
            (
                "admissionregistration.k8s.io",
                "MutatingWebhookConfiguration"
                | "ValidatingWebhookConfiguration"
                | "ValidatingAdmissionPolicy"
                | "ValidatingAdmissionPolicyBinding"
                | "MutatingAdmissionPolicy"
                | "MutatingAdmissionPolicyBinding",
            )
            | ("apiregistration.k8s.io", "APIService") => Self::Admission,
            _ => Self::Workload,
        }
    }

    pub const ALL: [Phase; 5] = [
        Self::Foundation,
        Self::Config,
        Self::Network,
        Self::Workload,
        Self::Admission,
    ];
}

/// One object ready to apply.
#[derive(Debug, Clone)]
pub struct PlannedObject {
    pub manifest: Manifest,
    pub resource: ApiResource,
    pub namespaced: bool,
    pub key: ObjectKey,
    pub phase: Phase,
    /// Sync wave (`waves::wave_of`); orders the main objects after the foundation.
    pub wave: i32,
    /// Hash of the applied intent (also stamped as `ferry.dev/intent-hash`).
    pub hash: String,
}

impl PlannedObject {
    pub fn api_version(&self) -> String {
        self.resource.api_version.clone()
    }

    /// How to reach this object's kind.
    pub fn resolved_kind(&self) -> ResolvedKind {
        ResolvedKind {
            resource: self.resource.clone(),
            namespaced: self.namespaced,
        }
    }
}

/// Order hooks like Helm: by weight (`helm.sh/hook-weight`, Argo's sync wave), then kind order
/// (the plan's phase), then source order.
pub fn order_hooks(mut hooks: Vec<&PlannedObject>) -> Vec<&PlannedObject> {
    hooks.sort_by_key(|p| (crate::render::helm::hooks::weight(&p.manifest), p.phase));
    hooks
}

/// Resolve, default, stamp, hash and order the manifests. Fails before anything is applied if
/// any kind is unknown or the same object appears twice.
pub fn plan(
    manifests: Vec<Manifest>,
    resolver: &Resolver,
    default_namespace: &str,
    owner: &Owner,
    revision: Option<&str>,
) -> Result<Vec<PlannedObject>> {
    let mut planned = Vec::with_capacity(manifests.len());
    let mut seen: HashMap<ObjectKey, crate::Origin> = HashMap::new();
    for mut manifest in manifests {
        let api_version = manifest.api_version().to_string();
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api_version.clone()),
        };
        let kind = manifest.kind().to_string();
        let Some(resolved) = resolver.resolve(&group, &version, &kind) else {
            let served = resolver.served_versions(&group, &kind);
            let hint = if served.is_empty() {
                "the cluster does not serve this kind: install its CRD first or add the CRD to the source".to_string()
            } else {
                format!(
                    "the cluster serves {kind} only as {}",
                    served
                        .iter()
                        .map(|v| if group.is_empty() {
                            v.clone()
                        } else {
                            format!("{group}/{v}")
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(Error::Source {
                path: manifest.origin.file.clone(),
                message: format!(
                    "{}: unknown kind {kind} (apiVersion {api_version}) for {:?}: {hint}",
                    origin_position(&manifest.origin),
                    manifest.name()
                ),
            });
        };
        if resolved.namespaced {
            if manifest
                .object
                .metadata
                .namespace
                .as_deref()
                .unwrap_or("")
                .is_empty()
            {
                manifest.object.metadata.namespace = Some(default_namespace.to_string());
            }
        } else if manifest.object.metadata.namespace.take().is_some() {
            tracing::debug!(object = %manifest.key(), "dropping namespace of a cluster-scoped object");
        }
        let key = ObjectKey {
            group: group.clone(),
            kind: kind.clone(),
            namespace: manifest.object.metadata.namespace.clone(),
            name: manifest.name().to_string(),
        };
        if let Some(previous) = seen.insert(key.clone(), manifest.origin.clone()) {
            return Err(Error::Source {
                path: manifest.origin.file.clone(),
                message: format!(
                    "{}: {key} is also defined at {previous}; each object may appear only once",
                    origin_position(&manifest.origin)
                ),
            });
        }
        let wave = waves::wave_of(&manifest)?;
        stamp_ownership(&mut manifest, owner);
        let hash = intent_hash(&manifest);
        let annotations = manifest.object.metadata.annotations.get_or_insert_default();
        annotations.insert(ANNOTATION_HASH.to_string(), hash.clone());
        if let Some(revision) = revision {
            annotations.insert(ANNOTATION_REVISION.to_string(), revision.to_string());
        }
        planned.push(PlannedObject {
            phase: Phase::of(&group, &kind),
            wave,
            manifest,
            resource: resolved.resource,
            namespaced: resolved.namespaced,
            key,
            hash,
        });
    }
    // Stable order: by phase, then source order (sort_by_key is stable).
    planned.sort_by_key(|p| p.phase);
    Ok(planned)
}

fn origin_position(origin: &crate::Origin) -> String {
    match origin.line {
        Some(line) => format!("line {line} (document {})", origin.document + 1),
        None => format!("document {}", origin.document + 1),
    }
}

fn stamp_ownership(manifest: &mut Manifest, owner: &Owner) {
    let meta = &mut manifest.object.metadata;
    meta.labels
        .get_or_insert_default()
        .insert(LABEL_APP.to_string(), owner.app.clone());
    meta.annotations
        .get_or_insert_default()
        .insert(ANNOTATION_OWNER.to_string(), owner.id());
    // Server-populated fields must not be sent with an apply.
    meta.resource_version = None;
    meta.uid = None;
    meta.managed_fields = None;
    meta.creation_timestamp = None;
}

/// SHA-256 over the canonical JSON of the object (without the hash and revision annotations).
/// For Secrets the hash sits on the Secret itself, readable only by those who can read its data.
pub fn intent_hash(manifest: &Manifest) -> String {
    use aws_lc_rs::digest::{SHA256, digest};
    let mut value = serde_json::to_value(&manifest.object).unwrap_or(Value::Null);
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut)
        && let Some(annotations) = metadata
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
    {
        annotations.remove(ANNOTATION_HASH);
        annotations.remove(ANNOTATION_REVISION);
        if annotations.is_empty() {
            metadata.remove("annotations");
        }
    }
    let canonical = canonical_json(&value);
    hex::encode(&digest(&SHA256, canonical.as_bytes()).as_ref()[..16])
}

/// JSON with object keys sorted, independent of map ordering features.
fn canonical_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical_json(&map[k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(canonical_json)
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ownership::validate_app_name;
    use std::collections::BTreeMap;

    #[test]
    fn phases_order_dependencies_first() {
        assert!(Phase::of("", "Namespace") < Phase::of("", "ServiceAccount"));
        assert!(Phase::of("rbac.authorization.k8s.io", "Role") < Phase::of("apps", "Deployment"));
        assert!(Phase::of("", "Service") < Phase::of("apps", "Deployment"));
        assert!(
            Phase::of("example.com", "Widget")
                > Phase::of("apiextensions.k8s.io", "CustomResourceDefinition")
        );
        assert!(
            Phase::of(
                "admissionregistration.k8s.io",
                "ValidatingWebhookConfiguration"
            ) > Phase::of("apps", "Deployment")
        );
    }

    #[test]
    fn app_names() {
        assert!(validate_app_name("web-1").is_ok());
        assert!(validate_app_name("Web").is_err());
        assert!(validate_app_name("").is_err());
        assert!(validate_app_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn ownership_needs_label_and_annotation() {
        let owner = Owner::push("a", "ns").unwrap();
        let labels = BTreeMap::from([(LABEL_APP.to_string(), "a".to_string())]);
        let ours = BTreeMap::from([(ANNOTATION_OWNER.to_string(), "ns/a".to_string())]);
        let other = BTreeMap::from([(ANNOTATION_OWNER.to_string(), "other/a".to_string())]);
        assert!(owner.owns(Some(&labels), Some(&ours)));
        assert!(!owner.owns(Some(&labels), Some(&other)));
        assert!(!owner.owns(None, Some(&ours)));
    }

    #[test]
    fn hash_ignores_key_order_and_revision() {
        let a = crate::yaml::parse_bytes(
            b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, annotations: {ferry.dev/revision: r1}}\ndata: {a: '1', b: '2'}\n",
            std::path::Path::new("a"),
        )
        .unwrap();
        let b = crate::yaml::parse_bytes(
            b"kind: ConfigMap\napiVersion: v1\nmetadata: {name: x}\ndata: {b: '2', a: '1'}\n",
            std::path::Path::new("b"),
        )
        .unwrap();
        assert_eq!(intent_hash(&a[0]), intent_hash(&b[0]));
        let c = crate::yaml::parse_bytes(
            b"kind: ConfigMap\napiVersion: v1\nmetadata: {name: x}\ndata: {b: '3', a: '1'}\n",
            std::path::Path::new("c"),
        )
        .unwrap();
        assert_ne!(intent_hash(&a[0]), intent_hash(&c[0]));
    }
}
