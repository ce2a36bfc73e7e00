//! Diff: a server-side dry-run apply of every planned object, compared with the live object as a
//! unified diff of normalised YAML. Secret data and every decrypted value are redacted on both
//! sides, while the action (change or not) is decided on the real values.
//!
//! Drift ([`ResourceManager::drift_of`]) is the same comparison reduced to the JSON pointers
//! that differ: the fields ferry would change if it applied now, never their values.

use futures::StreamExt;
use kube::api::Patch;
use serde_json::Value;

use super::ResourceManager;
use super::apply::apply_params;
use super::delete::{Candidate, is_destructive};
use super::live::reconcile_disabled;
use crate::cluster::api_for;
use crate::cluster::kube_error::{describe_kube_error, status_code};
use crate::ownership::{
    ANNOTATION_HASH, ANNOTATION_OWNER, ANNOTATION_PRUNE, ANNOTATION_REVISION,
    PRUNE_ALLOW_DESTRUCTIVE,
};
use crate::pipeline::drift::{
    IgnoreRule, ignored_paths, remove_pointer, set_pointer, strip_ignored,
};
use crate::plan::PlannedObject;
use crate::report::redact::{REDACTED, Redactor};
use crate::report::{DiffAction, ObjectDiff};
use crate::{Error, ObjectKey, Result};

impl ResourceManager {
    /// Dry-run apply each planned object and diff the answer against the live object, in plan
    /// order. Fails on the first object the server refuses, or that another ferry app owns.
    /// Fields `ignore` names (`spec.drift.ignore`) show the live value on both sides; an object
    /// opted out (`ferry.dev/reconcile: disabled`) shows no change.
    pub async fn diff_planned(
        &self,
        planned: &[PlannedObject],
        redactor: &Redactor,
        ignore: &[IgnoreRule],
    ) -> Result<Vec<ObjectDiff>> {
        let mut params = apply_params().dry_run();
        if self.force_conflicts {
            params = params.force();
        }
        let results: Vec<Result<ObjectDiff>> = // Over indices (see `apply_batch`).
            futures::stream::iter(0..planned.len())
            .map(|i| {
                let p = &planned[i];
                let params = params.clone();
                async move {
                    let api = api_for(
                        self.client(),
                        &p.resolved_kind(),
                        p.key.namespace.as_deref(),
                    );
                    let live = match api.get_opt(&p.key.name).await {
                        Ok(live) => live,
                        Err(err) if status_code(&err) == Some(404) => None,
                        Err(err) => {
                            return Err(Error::Object {
                                object: p.key.to_string(),
                                message: describe_kube_error(&err),
                            });
                        }
                    };
                    if let Some(live) = &live
                        && let Some(other) = live
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(ANNOTATION_OWNER))
                        && !self.owner().is_own_id(other)
                    {
                        return Err(Error::Object {
                            object: p.key.to_string(),
                            message: format!(
                                "already owned by ferry app {other:?}; applying would fail"
                            ),
                        });
                    }
                    // An existing object is sent without the ignored fields, as apply sends it
                    // (else another manager's value there would be a conflict).
                    let stripped = live
                        .as_ref()
                        .filter(|_| !ignored_paths(ignore, &p.key).is_empty())
                        .map(|_| {
                            let mut manifest = p.manifest.clone();
                            strip_ignored(&mut manifest, &p.key, ignore);
                            manifest
                        });
                    let sent = stripped.as_ref().unwrap_or(&p.manifest);
                    let desired = match api
                        .patch(&p.key.name, &params, &Patch::Apply(&sent.object))
                        .await
                    {
                        Ok(obj) => serde_json::to_value(&obj).unwrap_or(Value::Null),
                        // Namespace or CRD created by this same apply: show the intent itself.
                        Err(err) if status_code(&err) == Some(404) && live.is_none() => {
                            serde_json::to_value(&p.manifest.object).unwrap_or(Value::Null)
                        }
                        Err(err) => {
                            return Err(Error::Object {
                                object: p.key.to_string(),
                                message: format!(
                                    "dry-run apply failed: {}",
                                    describe_kube_error(&err)
                                ),
                            });
                        }
                    };
                    let live = live.map(|l| serde_json::to_value(&l).unwrap_or(Value::Null));
                    let desired = match &live {
                        Some(live) => left_to_others(p, live, desired, ignore),
                        None => desired,
                    };
                    Ok(diff_object_redacted(
                        &p.key,
                        live.as_ref(),
                        Some(&desired),
                        redactor,
                    ))
                }
            })
            .buffered(self.concurrency())
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Which fields of the live object ferry would change by applying `p` now, as JSON
    /// pointers (at most [`MAX_DRIFT_PATHS`]; values never included): a server-side dry-run
    /// apply (as the agent applies: `force`) compared with the live object, both normalised as
    /// for `ferry diff`. `None`: the object does not exist.
    pub async fn drift_of(&self, p: &PlannedObject) -> Result<Option<Vec<String>>> {
        let api = api_for(
            self.client(),
            &p.resolved_kind(),
            p.key.namespace.as_deref(),
        );
        let object_error = |err: &kube::Error| Error::Object {
            object: p.key.to_string(),
            message: describe_kube_error(err),
        };
        let live = match api.get_opt(&p.key.name).await {
            Ok(Some(live)) => live,
            Ok(None) => return Ok(None),
            Err(err) => return Err(object_error(&err)),
        };
        let params = apply_params().dry_run().force();
        let desired = api
            .patch(&p.key.name, &params, &Patch::Apply(&p.manifest.object))
            .await
            .map_err(|err| object_error(&err))?;
        let live = normalize(&serde_json::to_value(&live).unwrap_or(Value::Null));
        let desired = normalize(&serde_json::to_value(&desired).unwrap_or(Value::Null));
        let mut paths = Vec::new();
        changed_paths(Some(&live), Some(&desired), &mut String::new(), &mut paths);
        Ok(Some(paths))
    }

    /// What pruning `candidates` would delete, as diffs: objects prune would keep (not ours,
    /// opted out, destructive without opt-in) and objects already gone are left out.
    pub async fn diff_pruned(
        &self,
        candidates: Vec<Candidate>,
        redactor: &Redactor,
    ) -> Vec<ObjectDiff> {
        let mut out = Vec::new();
        for c in candidates {
            let api = api_for(self.client(), &c.kind, c.entry.key.namespace.as_deref());
            let Ok(Some(live)) = api.get_opt(&c.entry.key.name).await else {
                continue;
            };
            let annotations = live.metadata.annotations.as_ref();
            let prune_annotation = annotations
                .and_then(|a| a.get(ANNOTATION_PRUNE))
                .map(String::as_str);
            if !self
                .owner()
                .owns(live.metadata.labels.as_ref(), annotations)
                || prune_annotation == Some("disabled")
                || super::live::reconcile_disabled(annotations)
                || (is_destructive(&c.entry.key.group, &c.entry.key.kind)
                    && prune_annotation != Some(PRUNE_ALLOW_DESTRUCTIVE))
            {
                continue;
            }
            let live = serde_json::to_value(&live).unwrap_or(Value::Null);
            out.push(diff_object_redacted(
                &c.entry.key,
                Some(&live),
                None,
                redactor,
            ));
        }
        out
    }
}

/// What ferry would write to an existing object, minus what it leaves to others: the whole
/// object when it is opted out (`ferry.dev/reconcile: disabled`, live or in the source), and
/// the live value (or absence) at every pointer `ignore` names for it.
fn left_to_others(p: &PlannedObject, live: &Value, desired: Value, ignore: &[IgnoreRule]) -> Value {
    let live_annotations = live
        .pointer("/metadata/annotations")
        .and_then(|a| serde_json::from_value(a.clone()).ok());
    if reconcile_disabled(live_annotations.as_ref())
        || reconcile_disabled(p.manifest.object.metadata.annotations.as_ref())
    {
        return live.clone();
    }
    let mut desired = desired;
    for pointer in ignored_paths(ignore, &p.key) {
        match live.pointer(pointer) {
            Some(value) => {
                set_pointer(&mut desired, pointer, value.clone());
            }
            None => {
                remove_pointer(&mut desired, pointer);
            }
        }
    }
    desired
}

/// Diff one object. `live == None`: create; `desired == None`: prune. Secret data is redacted;
/// see [`diff_object_redacted`] for other decrypted values.
pub fn diff_object(key: &ObjectKey, live: Option<&Value>, desired: Option<&Value>) -> ObjectDiff {
    diff_object_redacted(key, live, desired, &Redactor::new())
}

/// [`diff_object`], also hiding every value `redactor` knows wherever it is in the object
/// (ConfigMap data, env values, custom resource fields, map keys). The action (change or not)
/// is decided on the real values, so a rotated secret still shows as a change.
pub fn diff_object_redacted(
    key: &ObjectKey,
    live: Option<&Value>,
    desired: Option<&Value>,
    redactor: &Redactor,
) -> ObjectDiff {
    let is_secret = key.group.is_empty() && key.kind == "Secret";
    let mut live = live.map(normalize);
    let mut desired = desired.map(normalize);
    let changed = live != desired;
    if is_secret {
        redact_secret(live.as_mut(), desired.as_mut());
    }
    redact_decrypted(live.as_mut(), desired.as_mut(), redactor);
    let to_yaml = |v: &Option<Value>| v.as_ref().map(yaml).unwrap_or_default();
    let (old, new) = (to_yaml(&live), to_yaml(&desired));
    let action = match (&live, &desired) {
        (None, _) => DiffAction::Create,
        (_, None) => DiffAction::Prune,
        _ if !changed => DiffAction::Unchanged,
        _ => DiffAction::Change,
    };
    let diff = if action == DiffAction::Unchanged {
        String::new()
    } else {
        similar::TextDiff::from_lines(&old, &new)
            .unified_diff()
            .context_radius(3)
            .header(&format!("live/{key}"), &format!("desired/{key}"))
            .to_string()
    };
    ObjectDiff {
        key: key.clone(),
        action,
        diff,
        hook: None,
    }
}

/// At most this many changed paths are collected per object.
pub const MAX_DRIFT_PATHS: usize = 100;

/// The JSON pointers (RFC 6901) at which `live` and `desired` differ, leaves first where both
/// sides have the same shape; a list of another length, or a value of another type, is one
/// pointer. Values are never part of the result.
pub fn changed_paths(
    live: Option<&Value>,
    desired: Option<&Value>,
    at: &mut String,
    out: &mut Vec<String>,
) {
    if out.len() >= MAX_DRIFT_PATHS || live == desired {
        return;
    }
    match (live, desired) {
        (Some(Value::Object(l)), Some(Value::Object(d))) => {
            let keys: std::collections::BTreeSet<&String> = l.keys().chain(d.keys()).collect();
            for key in keys {
                let len = at.len();
                at.push('/');
                at.push_str(&key.replace('~', "~0").replace('/', "~1"));
                changed_paths(l.get(key), d.get(key), at, out);
                at.truncate(len);
            }
        }
        (Some(Value::Array(l)), Some(Value::Array(d))) if l.len() == d.len() => {
            for (i, (lv, dv)) in l.iter().zip(d).enumerate() {
                let len = at.len();
                at.push_str(&format!("/{i}"));
                changed_paths(Some(lv), Some(dv), at, out);
                at.truncate(len);
            }
        }
        _ => out.push(if at.is_empty() {
            "/".to_string()
        } else {
            at.clone()
        }),
    }
}

fn yaml(value: &Value) -> String {
    serde_saphyr::to_string(value)
        .unwrap_or_else(|_| serde_json::to_string_pretty(value).unwrap_or_default())
}

/// Strip server-populated and ferry bookkeeping fields so that only intent differences show.
fn normalize(value: &Value) -> Value {
    let mut v = value.clone();
    if let Some(obj) = v.as_object_mut() {
        obj.remove("status");
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in [
                "managedFields",
                "resourceVersion",
                "uid",
                "generation",
                "creationTimestamp",
                "selfLink",
            ] {
                meta.remove(field);
            }
            if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
                for a in [
                    "kubectl.kubernetes.io/last-applied-configuration",
                    "deployment.kubernetes.io/revision",
                    ANNOTATION_HASH,
                    ANNOTATION_REVISION,
                ] {
                    annotations.remove(a);
                }
                if annotations.is_empty() {
                    meta.remove("annotations");
                }
            }
        }
    }
    v
}

/// Hide decrypted values in both sides of a diff, pairing leaves by path: where the desired
/// leaf shows a decrypted value, the live leaf at the same path is taken to be an earlier
/// version of the same secret and is hidden whole (a rotated password must not appear as the
/// `-` line); a hidden leaf that changed is marked so the diff still shows a change.
fn redact_decrypted(live: Option<&mut Value>, desired: Option<&mut Value>, redactor: &Redactor) {
    const CHANGED: &str = "<redacted, changed>";
    if redactor.is_empty() {
        return;
    }
    match (live, desired) {
        (Some(live), Some(desired)) => pair(live, desired, redactor),
        (Some(only), None) | (None, Some(only)) => redactor.redact_value(only),
        (None, None) => {}
    }
    fn pair(live: &mut Value, desired: &mut Value, redactor: &Redactor) {
        match (&mut *live, &mut *desired) {
            (Value::Object(l), Value::Object(d)) => {
                for (key, dv) in d.iter_mut() {
                    match l.get_mut(key) {
                        Some(lv) => pair(lv, dv, redactor),
                        None => redactor.redact_value(dv),
                    }
                }
                for (key, lv) in l.iter_mut() {
                    if !d.contains_key(key) {
                        redactor.redact_value(lv);
                    }
                }
                // Keys themselves (rare, but a decrypted value can become a map key).
                for map in [l, d] {
                    if map.keys().any(|k| redactor.reveals(k)) {
                        let old = std::mem::take(map);
                        for (k, v) in old {
                            map.insert(redactor.redact(&k), v);
                        }
                    }
                }
            }
            (Value::Array(l), Value::Array(d)) => {
                let common = l.len().min(d.len());
                for (lv, dv) in l.iter_mut().zip(d.iter_mut()) {
                    pair(lv, dv, redactor);
                }
                l[common..]
                    .iter_mut()
                    .for_each(|v| redactor.redact_value(v));
                d[common..]
                    .iter_mut()
                    .for_each(|v| redactor.redact_value(v));
            }
            _ => {
                let before = desired.clone();
                redactor.redact_value(desired);
                if *desired != before {
                    // The desired value shows a secret: hide the live one whole.
                    if *live == before {
                        *live = desired.clone();
                    } else {
                        *live = Value::String(REDACTED.to_string());
                        if desired.as_str() == Some(REDACTED) {
                            *desired = Value::String(CHANGED.to_string());
                        }
                    }
                } else {
                    redactor.redact_value(live);
                }
            }
        }
    }
}

/// Replace Secret values: unchanged keys show `<redacted>` on both sides, changed keys show
/// `<redacted, changed>` on the desired side, so a diff line appears without the value.
fn redact_secret(live: Option<&mut Value>, desired: Option<&mut Value>) {
    const SAME: &str = "<redacted>";
    const CHANGED: &str = "<redacted, changed>";
    let live_data: serde_json::Map<String, Value> = live
        .as_ref()
        .and_then(|l| l.get("data"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(desired) = desired {
        for field in ["data", "stringData"] {
            if let Some(map) = desired.get_mut(field).and_then(Value::as_object_mut) {
                for (k, v) in map.iter_mut() {
                    let same = field == "data" && live_data.get(k) == Some(v);
                    *v = Value::String(if same { SAME } else { CHANGED }.to_string());
                }
            }
        }
    }
    if let Some(live) = live {
        for field in ["data", "stringData"] {
            if let Some(map) = live.get_mut(field).and_then(Value::as_object_mut) {
                for v in map.values_mut() {
                    *v = Value::String(SAME.to_string());
                }
            }
        }
    }
}
