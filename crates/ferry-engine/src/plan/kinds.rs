//! Kind resolution: the table from `apiVersion` + `kind` to API resource and scope. Pure: the
//! table is filled from a discovery result that `cluster::discovery` fetched (and caches), plus
//! the CRDs in the source, whose kinds are not served until they are applied.

use std::collections::HashMap;
use std::sync::Arc;

use kube::api::ApiResource;
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};

use crate::Manifest;
use crate::inventory::Entry;

/// How to reach one kind: its API resource and whether it is namespaced.
#[derive(Debug, Clone)]
pub struct ResolvedKind {
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// Resolves `apiVersion`+`kind` to API resources using discovery, plus the CRDs in the source
/// (their kinds are not served until they are applied). Works with any identity: discovery is
/// readable by every authenticated user.
pub struct Resolver {
    /// Shared with `cluster::discovery::DiscoveryCache` when the run uses one.
    discovery: Arc<Discovery>,
    from_crds: HashMap<(String, String, String), ResolvedKind>,
}

impl Resolver {
    /// A resolver over an already-run discovery (`cluster::discovery` runs and caches it).
    pub fn from_discovery(discovery: Arc<Discovery>) -> Self {
        Self {
            discovery,
            from_crds: HashMap::new(),
        }
    }

    /// Whether the cluster or a CRD in the source serves every manifest's kind.
    pub fn resolves_all(&self, manifests: &[Manifest]) -> bool {
        manifests.iter().all(|m| {
            let api_version = m.api_version();
            let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
            self.resolve(group, version, m.kind()).is_some()
        })
    }

    /// Register the kinds that CRDs in the source will serve.
    pub fn learn_crds(&mut self, manifests: &[Manifest]) {
        for m in manifests {
            if m.group() != "apiextensions.k8s.io" || m.kind() != "CustomResourceDefinition" {
                continue;
            }
            let spec = &m.object.data["spec"];
            let (Some(group), Some(kind), Some(plural)) = (
                spec["group"].as_str(),
                spec["names"]["kind"].as_str(),
                spec["names"]["plural"].as_str(),
            ) else {
                continue;
            };
            let namespaced = spec["scope"].as_str() != Some("Cluster");
            for version in spec["versions"].as_array().into_iter().flatten() {
                let Some(version) = version["name"].as_str() else {
                    continue;
                };
                let gvk = GroupVersionKind::gvk(group, version, kind);
                let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
                self.from_crds.insert(
                    (group.to_string(), version.to_string(), kind.to_string()),
                    ResolvedKind {
                        resource,
                        namespaced,
                    },
                );
            }
        }
    }

    /// Resolve `group/version` + `kind`; `None` if neither the cluster nor a CRD in the source
    /// serves it.
    pub fn resolve(&self, group: &str, version: &str, kind: &str) -> Option<ResolvedKind> {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        if let Some((resource, caps)) = self.discovery.resolve_gvk(&gvk) {
            return Some(ResolvedKind {
                resource,
                namespaced: caps.scope == Scope::Namespaced,
            });
        }
        self.from_crds
            .get(&(group.to_string(), version.to_string(), kind.to_string()))
            .cloned()
    }

    /// Resolve a group+kind at any served version (for inventory entries whose recorded version
    /// may have been removed since).
    pub fn resolve_any_version(
        &self,
        group: &str,
        version: &str,
        kind: &str,
    ) -> Option<ResolvedKind> {
        self.resolve(group, version, kind).or_else(|| {
            let (resource, caps) = self.discovery.get(group)?.recommended_kind(kind)?;
            Some(ResolvedKind {
                resource,
                namespaced: caps.scope == Scope::Namespaced,
            })
        })
    }

    /// Versions the cluster serves for a group, for error messages.
    pub fn served_versions(&self, group: &str, kind: &str) -> Vec<String> {
        let Some(api_group) = self.discovery.get(group) else {
            return Vec::new();
        };
        api_group
            .versions()
            .filter(|v| {
                api_group
                    .versioned_resources(v)
                    .iter()
                    .any(|(r, _)| r.kind == kind)
            })
            .map(str::to_string)
            .collect()
    }
}

impl Resolver {
    /// Swap in a newer discovery result (a refreshed cache); the kinds learned from CRDs in the
    /// source stay.
    pub fn replace_discovery(&mut self, discovery: Arc<Discovery>) {
        self.discovery = discovery;
    }

    /// Whether an inventory entry's kind resolves at any served version.
    pub fn resolves_entry(&self, entry: &Entry) -> bool {
        self.resolve_any_version(&entry.key.group, entry_version(entry), &entry.key.kind)
            .is_some()
    }

    /// Resolve inventory entries; entries whose kind is no longer served come back apart.
    pub fn resolve_entries(&self, entries: Vec<Entry>) -> (Vec<(Entry, ResolvedKind)>, Vec<Entry>) {
        let mut resolved = Vec::new();
        let mut unresolved = Vec::new();
        for entry in entries {
            match self.resolve_any_version(&entry.key.group, entry_version(&entry), &entry.key.kind)
            {
                Some(kind) => resolved.push((entry, kind)),
                None => unresolved.push(entry),
            }
        }
        (resolved, unresolved)
    }
}

/// The version part of an entry's recorded `apiVersion`.
fn entry_version(entry: &Entry) -> &str {
    entry.api_version.rsplit('/').next().unwrap_or_default()
}
