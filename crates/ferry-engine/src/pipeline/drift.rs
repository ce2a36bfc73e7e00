//! Drift: which objects of an app differ from what ferry would apply now, and in which fields
//! (JSON pointers, never values), without writing anything. The agent runs it when its watches
//! saw an owned object change while the source did not move, to report drift
//! (`spec.drift.mode: detect`) or to say what it corrected. The policy ([`DriftPolicy`]: mode
//! and [`IgnoreRule`]s) is read here for both drivers: a Release's `spec.drift` and a push
//! app's ferry.yaml `drift:`; `ferry apply` strips ignored fields
//! ([`strip_ignored_planned`]) and, in `detect` mode, leaves hand-edited objects alone
//! ([`detect_edited`]).
//!
//! Steps: plan → the inventory's fingerprints and the live metadata (one LIST per kind and
//! namespace) → objects the apply would skip are in sync; each other one is dry-run applied and
//! compared ([`ResourceManager::drift_of`]) → paths under an [`IgnoreRule`] are dropped.
//! Objects opted out (`ferry.dev/reconcile: disabled`) and hooks are never drift.

use std::collections::HashMap;

use ferry_api::drift::DriftMode;
use kube::Client;
use serde::Serialize;
use serde_json::Value;

use super::ApplyOptions;
use crate::cluster::discovery;
use crate::cluster::manager::ResourceManager;
use crate::cluster::manager::apply::is_unchanged;
use crate::cluster::manager::live::reconcile_disabled;
use crate::cluster::requests::{RequestCounter, counted};
use crate::inventory;
use crate::ownership::ANNOTATION_HASH;
use crate::plan::{self, PlannedObject};
use crate::render::helm::hooks::{self as hook_class, HookPhase};
use crate::report::RequestCounts;
use crate::{Manifest, ObjectKey, Result};

/// Fields of some objects that ferry leaves to others (Argo CD's `ignoreDifferences`
/// `jsonPointers`): e.g. `/spec/replicas` of Deployments scaled by an HPA. A target field left
/// out matches every value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoreRule {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// JSON pointers (RFC 6901), e.g. `/spec/replicas`, `/metadata/annotations/a~1b`.
    pub paths: Vec<String>,
}

impl IgnoreRule {
    /// A Release's `spec.drift.ignore`, checked: a malformed pointer or an empty `paths` is the
    /// tenant's error, named by its place (`spec.drift.ignore[i].paths[j]`).
    pub fn from_spec(spec: &ferry_api::drift::DriftSpec) -> std::result::Result<Vec<Self>, String> {
        Self::from_spec_at(spec, "spec.drift")
    }

    /// [`Self::from_spec`] for a policy written at `field` (`spec.drift` of a Release,
    /// `drift` of a ferry.yaml): errors name `<field>.ignore[i].paths[j]`.
    pub fn from_spec_at(
        spec: &ferry_api::drift::DriftSpec,
        field: &str,
    ) -> std::result::Result<Vec<Self>, String> {
        let mut rules = Vec::new();
        for (i, ignore) in spec.ignore.iter().enumerate() {
            if ignore.paths.is_empty() {
                return Err(format!(
                    "{field}.ignore[{i}].paths is empty; name the fields to leave to others, e.g. /spec/replicas"
                ));
            }
            for (j, path) in ignore.paths.iter().enumerate() {
                check_pointer(path).map_err(|e| format!("{field}.ignore[{i}].paths[{j}]: {e}"))?;
            }
            let t = &ignore.target;
            rules.push(IgnoreRule {
                group: t.group.clone(),
                kind: t.kind.clone(),
                namespace: t.namespace.clone(),
                name: t.name.clone(),
                paths: ignore.paths.clone(),
            });
        }
        Ok(rules)
    }

    /// Whether the rule is about `key`. A rule without a namespace matches every namespace.
    pub fn matches(&self, key: &ObjectKey) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.group, &key.group)
            && eq(&self.kind, &key.kind)
            && eq(&self.name, &key.name)
            && eq(
                &self.namespace,
                key.namespace.as_deref().unwrap_or_default(),
            )
    }
}

/// Every pointer the rules ignore for `key`.
pub fn ignored_paths<'a>(rules: &'a [IgnoreRule], key: &ObjectKey) -> Vec<&'a str> {
    rules
        .iter()
        .filter(|r| r.matches(key))
        .flat_map(|r| r.paths.iter().map(String::as_str))
        .collect()
}

/// Whether `path` is `ignored` or lies below it (`/spec/replicas` covers itself;
/// `/spec/template` covers `/spec/template/spec/containers/0/image`).
pub fn is_ignored(path: &str, ignored: &[&str]) -> bool {
    ignored
        .iter()
        .any(|i| path == *i || (path.starts_with(i) && path.as_bytes().get(i.len()) == Some(&b'/')))
}

/// Check a pointer a tenant wrote: RFC 6901 syntax (starts with `/`, `~` only as `~0`/`~1`)
/// and not the object's identity (`/apiVersion`, `/kind`, `/metadata/name`,
/// `/metadata/namespace`), which no one else can own.
pub fn check_pointer(pointer: &str) -> std::result::Result<(), String> {
    if !pointer.starts_with('/') || pointer == "/" {
        return Err(format!(
            "{pointer:?} is not a JSON pointer to a field (e.g. /spec/replicas)"
        ));
    }
    let mut chars = pointer.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "{pointer:?}: `~` must be written ~0 and `/` inside a key ~1 (RFC 6901)"
            ));
        }
    }
    for identity in [
        "/apiVersion",
        "/kind",
        "/metadata",
        "/metadata/name",
        "/metadata/namespace",
    ] {
        if pointer == identity {
            return Err(format!(
                "{pointer:?} identifies the object and cannot be left to another manager"
            ));
        }
    }
    Ok(())
}

/// Remove the field at `pointer` from `value`; false when it is not there.
pub fn remove_pointer(value: &mut Value, pointer: &str) -> bool {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return false;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    let target = if parent.is_empty() {
        Some(value)
    } else {
        value.pointer_mut(parent)
    };
    match target {
        Some(Value::Object(map)) => map.remove(&last).is_some(),
        Some(Value::Array(items)) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// Put `value` at `pointer` in `target`, creating missing parent objects; false when a parent
/// is not an object (or an array index out of range).
pub fn set_pointer(target: &mut Value, pointer: &str, value: Value) -> bool {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return false;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    let mut at = target;
    for token in parent.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        at = match at {
            Value::Object(map) => map
                .entry(token)
                .or_insert_with(|| Value::Object(serde_json::Map::new())),
            Value::Array(items) => match token.parse::<usize>().ok().and_then(|i| items.get_mut(i))
            {
                Some(item) => item,
                None => return false,
            },
            _ => return false,
        };
    }
    match at {
        Value::Object(map) => {
            map.insert(last, value);
            true
        }
        Value::Array(items) => match last.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
            Some(item) => {
                *item = value;
                true
            }
            None => false,
        },
        _ => false,
    }
}

/// A drift policy in the engine's terms: what to do about objects edited in the cluster
/// (`mode`) and the fields left to others (`rules`). A Release's `spec.drift` and a push app's
/// ferry.yaml `drift:` are read into this one type, by [`DriftPolicy::from_spec`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriftPolicy {
    pub mode: DriftMode,
    pub rules: Vec<IgnoreRule>,
}

impl DriftPolicy {
    /// The policy written at `field` (`spec.drift`, or `drift` in a ferry.yaml), checked; the
    /// error names the field (`drift.ignore[0].paths[1]: ...`).
    pub fn from_spec(
        spec: &ferry_api::drift::DriftSpec,
        field: &str,
    ) -> std::result::Result<Self, String> {
        Ok(Self {
            mode: spec.mode,
            rules: IgnoreRule::from_spec_at(spec, field)?,
        })
    }

    /// A Release's `spec.drift` (none: correct, nothing ignored).
    pub fn of_release(release: &ferry_api::Release) -> std::result::Result<Self, String> {
        match &release.spec.drift {
            Some(spec) => Self::from_spec(spec, "spec.drift"),
            None => Ok(Self::default()),
        }
    }

    /// The push app's policy from the ferry.yaml files of the app directories in `dirs` (the
    /// paths of one `ferry apply`): their ignore rules together, and the one mode they state;
    /// two different modes are an error naming both files.
    pub fn from_app_dirs(dirs: &[std::path::PathBuf]) -> Result<Self> {
        let mut policy = Self::default();
        let mut stated: Option<std::path::PathBuf> = None;
        for dir in dirs.iter().filter(|d| d.is_dir()) {
            let Some((path, config)) = crate::render::config::AppConfig::load(dir)? else {
                continue;
            };
            let Some(drift) = &config.drift else {
                continue;
            };
            let found = Self::from_spec(&drift.to_spec(), "drift").map_err(|message| {
                crate::Error::Source {
                    path: path.clone(),
                    message,
                }
            })?;
            if let Some(first) = &stated
                && found.mode != policy.mode
            {
                return Err(crate::Error::Source {
                    path,
                    message: format!(
                        "drift.mode is {} here but {} in {}: the paths of one `ferry apply` are one app with one mode",
                        found.mode.as_str(),
                        policy.mode.as_str(),
                        first.display()
                    ),
                });
            }
            stated.get_or_insert(path);
            policy.mode = found.mode;
            policy.rules.extend(found.rules);
        }
        Ok(policy)
    }
}

/// Take the ignored fields out of the planned objects that exist in the cluster (`exists`),
/// re-hashing what changed: the fields are left to whoever else manages them, and the intent
/// hash is that of what ferry sends. A new object is created with them, as the source says.
pub fn strip_ignored_planned(
    planned: &mut [PlannedObject],
    exists: impl Fn(&ObjectKey) -> bool,
    rules: &[IgnoreRule],
) {
    if rules.is_empty() {
        return;
    }
    for p in planned.iter_mut().filter(|p| exists(&p.key)) {
        if strip_ignored(&mut p.manifest, &p.key, rules) {
            p.hash = crate::plan::intent_hash(&p.manifest);
            p.manifest
                .object
                .metadata
                .annotations
                .get_or_insert_default()
                .insert(ANNOTATION_HASH.to_string(), p.hash.clone());
        }
    }
}

/// `drift.mode: detect` for a push app: which of `main` were edited in the cluster since
/// ferry's last apply while their intent did not change (the live `ferry.dev/intent-hash` is
/// the planned one, but [`is_unchanged`] fails: the fingerprint moved, or a label or
/// annotation ferry applies is gone), with the fields that differ (JSON pointers, ignored ones
/// left out, run through `redactor`). Those are reported and not written. Objects whose intent
/// changed, new ones, deleted ones (nothing to keep) and opted-out ones are not looked at. An
/// object that cannot be compared is returned with the error, and is not written either.
pub async fn detect_edited(
    manager: &ResourceManager,
    main: &[&PlannedObject],
    live: &HashMap<ObjectKey, crate::cluster::manager::live::LiveMeta>,
    recorded: &HashMap<ObjectKey, String>,
    rules: &[IgnoreRule],
    redactor: &crate::report::redact::Redactor,
) -> HashMap<ObjectKey, std::result::Result<Vec<String>, String>> {
    let mut found = HashMap::new();
    for p in main {
        let Some(meta) = live.get(&p.key) else {
            continue;
        };
        if meta.annotation(ANNOTATION_HASH) != Some(p.hash.as_str())
            || meta.reconcile_disabled()
            || reconcile_disabled(p.manifest.object.metadata.annotations.as_ref())
            || is_unchanged(p, Some(meta), recorded.get(&p.key).map(String::as_str))
        {
            continue;
        }
        let ignored = ignored_paths(rules, &p.key);
        match manager.drift_of(p).await {
            Ok(Some(paths)) => {
                let paths: Vec<String> = paths
                    .into_iter()
                    .filter(|path| !is_ignored(path, &ignored))
                    .map(|path| redactor.redact(&path))
                    .collect();
                if !paths.is_empty() {
                    found.insert(p.key.clone(), Ok(paths));
                }
            }
            // Deleted meanwhile: applied (re-created) as usual.
            Ok(None) => {}
            Err(e) => {
                found.insert(
                    p.key.clone(),
                    Err(redactor.redact(&format!(
                        "not applied: cannot compare with the live object (drift.mode: detect): {e}"
                    ))),
                );
            }
        }
    }
    found
}

/// Take the ignored fields out of the manifests of objects `release` applied before (its
/// `status.inventory` lists them: the fields are left to whoever else manages them, e.g. an
/// HPA). A new object is created with them, as the source says. The agent and
/// `ferry diff release` both do this.
pub fn strip_ignored_applied(
    release: &ferry_api::Release,
    manifests: &mut [Manifest],
    rules: &[IgnoreRule],
) {
    if rules.is_empty() {
        return;
    }
    let target = crate::render::release::target_namespace(release);
    let inventory = release
        .status
        .as_ref()
        .map(|s| s.inventory.as_slice())
        .unwrap_or_default();
    for manifest in manifests {
        let group = manifest
            .api_version()
            .split_once('/')
            .map_or("", |(g, _)| g)
            .to_string();
        let namespace = manifest
            .namespace()
            .filter(|n| !n.is_empty())
            .unwrap_or(&target)
            .to_string();
        let applied = inventory.iter().find(|e| {
            e.api_version.split_once('/').map_or("", |(g, _)| g) == group
                && e.kind == manifest.kind()
                && e.name == manifest.name()
                && e.namespace.as_deref().unwrap_or(&target) == namespace
        });
        let Some(entry) = applied else {
            continue;
        };
        let key = ObjectKey {
            group,
            kind: entry.kind.clone(),
            namespace: entry.namespace.clone(),
            name: entry.name.clone(),
        };
        strip_ignored(manifest, &key, rules);
    }
}

/// Take the fields `rules` ignore out of a manifest (for an object that exists already: the
/// fields are left to whoever else manages them). Returns whether anything was removed.
pub fn strip_ignored(manifest: &mut Manifest, key: &ObjectKey, rules: &[IgnoreRule]) -> bool {
    let ignored = ignored_paths(rules, key);
    if ignored.is_empty() {
        return false;
    }
    let Ok(mut value) = serde_json::to_value(&manifest.object) else {
        return false;
    };
    let mut removed = false;
    for pointer in ignored {
        removed |= remove_pointer(&mut value, pointer);
    }
    if removed && let Ok(object) = serde_json::from_value(value) {
        manifest.object = object;
    }
    removed
}

/// One object that differs from the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectDrift {
    #[serde(flatten)]
    pub key: ObjectKey,
    pub api_version: String,
    /// The object was deleted.
    pub missing: bool,
    /// The fields that differ (JSON pointers), in order; empty when missing.
    pub paths: Vec<String>,
}

/// What [`drift`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DriftReport {
    pub objects: Vec<ObjectDrift>,
    pub requests: RequestCounts,
}

/// Which planned objects differ from the cluster, and where (see the module docs). Sends no
/// write except server-side dry runs. Paths run through `opts.redactor` (a decrypted value
/// could be a map key).
pub async fn drift(
    client: &Client,
    manifests: Vec<Manifest>,
    opts: &ApplyOptions,
    rules: &[IgnoreRule],
) -> Result<DriftReport> {
    let counter = RequestCounter::default();
    let counted_client = counted(client, &counter);
    let client = &counted_client;
    let owner = opts.owner(client)?;
    let resolver = discovery::resolver_for(opts.discovery.as_ref(), client, &manifests).await?;
    let planned = plan::plan(
        manifests,
        &resolver,
        &owner.namespace,
        &owner,
        opts.revision.as_deref(),
    )?;
    let main: Vec<_> = planned
        .iter()
        .filter(|p| hook_class::phase(&p.manifest) == HookPhase::Main)
        .collect();
    let manager =
        ResourceManager::new(client.clone(), owner.clone()).with_concurrency(opts.concurrency);
    let kinds: Vec<_> = main
        .iter()
        .map(|p| (p.key.clone(), p.resolved_kind()))
        .collect();
    let (stored, live) = tokio::try_join!(
        inventory::read(manager.client(), manager.owner()),
        manager.live_index(&kinds),
    )?;
    let recorded: HashMap<ObjectKey, String> = stored
        .iter()
        .flat_map(|s| s.inventory.objects.iter())
        .filter_map(|e| e.fingerprint.clone().map(|f| (e.key.clone(), f)))
        .collect();
    let mut objects = Vec::new();
    for p in main {
        let meta = live.get(&p.key);
        if reconcile_disabled(p.manifest.object.metadata.annotations.as_ref())
            || meta.is_some_and(|m| m.reconcile_disabled())
        {
            continue;
        }
        if is_unchanged(p, meta, recorded.get(&p.key).map(String::as_str)) {
            continue;
        }
        let ignored = ignored_paths(rules, &p.key);
        let found = match meta {
            None => None,
            Some(_) => manager
                .drift_of(p)
                .await
                .map_err(|e| opts.redactor.redact_error(e))?,
        };
        let drifted = match found {
            None => ObjectDrift {
                key: p.key.clone(),
                api_version: p.api_version().to_string(),
                missing: true,
                paths: Vec::new(),
            },
            Some(paths) => {
                let paths: Vec<String> = paths
                    .into_iter()
                    .filter(|path| !is_ignored(path, &ignored))
                    .map(|path| opts.redactor.redact(&path))
                    .collect();
                if paths.is_empty() {
                    continue;
                }
                ObjectDrift {
                    key: p.key.clone(),
                    api_version: p.api_version().to_string(),
                    missing: false,
                    paths,
                }
            }
        };
        objects.push(drifted);
    }
    Ok(DriftReport {
        objects,
        requests: counter.snapshot(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: &str, ns: Option<&str>, name: &str) -> ObjectKey {
        ObjectKey {
            group: if kind == "Deployment" { "apps" } else { "" }.to_string(),
            kind: kind.to_string(),
            namespace: ns.map(str::to_string),
            name: name.to_string(),
        }
    }

    #[test]
    fn rules_match_by_every_field_they_set() {
        let rule = IgnoreRule {
            group: Some("apps".into()),
            kind: Some("Deployment".into()),
            paths: vec!["/spec/replicas".into()],
            ..IgnoreRule::default()
        };
        assert!(rule.matches(&key("Deployment", Some("a"), "web")));
        assert!(!rule.matches(&key("ConfigMap", Some("a"), "web")));
        let named = IgnoreRule {
            name: Some("web".into()),
            namespace: Some("a".into()),
            ..rule.clone()
        };
        assert!(named.matches(&key("Deployment", Some("a"), "web")));
        assert!(!named.matches(&key("Deployment", Some("b"), "web")));
        assert!(!named.matches(&key("Deployment", Some("a"), "api")));
    }

    #[test]
    fn ignored_pointers_cover_their_subtree_only() {
        let ignored = ["/spec/replicas", "/spec/template"];
        assert!(is_ignored("/spec/replicas", &ignored));
        assert!(is_ignored(
            "/spec/template/spec/containers/0/image",
            &ignored
        ));
        assert!(!is_ignored("/spec/replicasX", &ignored));
        assert!(!is_ignored("/spec", &ignored));
    }

    #[test]
    fn pointers_are_removed_with_escapes_and_checked() {
        let mut v = serde_json::json!({
            "metadata": {"annotations": {"a/b": "1", "c": "2"}},
            "spec": {"replicas": 3, "list": [1, 2, 3]}
        });
        assert!(remove_pointer(&mut v, "/spec/replicas"));
        assert!(remove_pointer(&mut v, "/metadata/annotations/a~1b"));
        assert!(remove_pointer(&mut v, "/spec/list/1"));
        assert!(!remove_pointer(&mut v, "/spec/missing"));
        assert_eq!(
            v,
            serde_json::json!({"metadata": {"annotations": {"c": "2"}}, "spec": {"list": [1, 3]}})
        );
        assert!(check_pointer("/spec/replicas").is_ok());
        assert!(check_pointer("/metadata/labels/app.kubernetes.io~1name").is_ok());
        assert!(check_pointer("spec/replicas").is_err());
        assert!(check_pointer("/a~2b").is_err());
        assert!(check_pointer("/metadata/name").is_err());
        assert!(check_pointer("/").is_err());
        let mut v = serde_json::json!({"spec": {"list": [1]}});
        assert!(set_pointer(&mut v, "/spec/replicas", serde_json::json!(3)));
        assert!(set_pointer(
            &mut v,
            "/metadata/annotations/a~1b",
            serde_json::json!("x")
        ));
        assert!(set_pointer(&mut v, "/spec/list/0", serde_json::json!(2)));
        assert!(!set_pointer(&mut v, "/spec/list/5", serde_json::json!(2)));
        assert_eq!(
            v,
            serde_json::json!({"metadata": {"annotations": {"a/b": "x"}}, "spec": {"list": [2], "replicas": 3}})
        );
    }

    #[test]
    fn changed_paths_name_fields_not_values() {
        use crate::cluster::manager::diff::changed_paths;
        let live = serde_json::json!({
            "metadata": {"labels": {"app.kubernetes.io/name": "x", "tier": "hand"}},
            "spec": {"replicas": 5, "ports": [{"port": 80}], "same": [1]},
            "data": {"password": "hunter2"}
        });
        let desired = serde_json::json!({
            "metadata": {"labels": {"app.kubernetes.io/name": "x", "tier": "web"}},
            "spec": {"replicas": 1, "ports": [{"port": 80}, {"port": 81}], "same": [1]},
            "data": {"password": "s3cret"}
        });
        let mut out = Vec::new();
        changed_paths(Some(&live), Some(&desired), &mut String::new(), &mut out);
        assert_eq!(
            out,
            [
                "/data/password",
                "/metadata/labels/tier",
                "/spec/ports",
                "/spec/replicas"
            ]
        );
        assert!(
            !out.iter()
                .any(|p| p.contains("hunter2") || p.contains("s3cret"))
        );
    }
}
