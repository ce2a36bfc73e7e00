//! The inventory: what an app owns — every object it applied (with the fingerprint ferry saw
//! after its last write), the hooks that ran, the source, the git revision and when it last
//! changed. This module is the data and the PURE set operations on it (no client; unit-tested
//! below); [`store`] keeps it in a ConfigMap.
//!
//! Crash safety: before applying, the inventory is [`widen`]ed to the union of the previous and
//! the new object set; only after every object applied is it narrowed ([`narrow`]) to the new
//! set plus what was kept. A run that dies half-way therefore leaves every object it may
//! have created in the inventory, and the next run prunes correctly.

pub mod store;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ObjectKey;

pub use store::{
    LABEL_INVENTORY, Legacy, Stored, Version, delete, delete_legacy, read, read_legacy, write,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub api_version: String,
    #[serde(flatten)]
    pub key: ObjectKey,
    /// Live fingerprint after ferry's last write (see `apply`); absent until applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// The `ferry.dev/app` label value (readable; not the identity).
    pub app: String,
    /// The exact owner id ([`Owner::id`]). Absent in inventories written before ferry stored it
    /// (push apps only: their naming did not change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// While a migration is under way: the pre-upgrade app name whose inventory this one adopted
    /// (see [`store::read_legacy`]). Cleared by the first run that finishes without failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted_from: Option<String>,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// RFC 3339 time of the last apply that changed the inventory.
    pub applied_at: String,
    pub objects: Vec<Entry>,
    /// Intent hashes of the hooks the last run ran successfully (see `cluster::manager::hooks`): a hook
    /// deleted by its delete policy is no longer in `objects`, but a changed hook must still
    /// be run again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookRecord>,
    /// The app's first install has not finished yet (written by the first run, cleared by the
    /// first run that ends without a failure): until then its runs are installs in Helm's
    /// sense (`pre-install`/`post-install` hooks, see `render::helm::hooks::DeployEvent`).
    /// Absent in inventories of apps installed before ferry recorded it: they are installed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub install_pending: bool,
}

/// A hook that ran, and the intent hash it ran with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookRecord {
    #[serde(flatten)]
    pub key: ObjectKey,
    pub hash: String,
}

impl Inventory {
    /// The name a push app's inventory has always had (and a pre-upgrade Release's had).
    pub fn name(app: &str) -> String {
        format!("ferry-inventory-{app}")
    }

    pub fn entries_by_key(&self) -> BTreeMap<ObjectKey, Entry> {
        self.objects
            .iter()
            .map(|e| (e.key.clone(), e.clone()))
            .collect()
    }

    /// Same content apart from the timestamp (used to skip no-op writes).
    pub fn same_content(&self, other: &Inventory) -> bool {
        let mut a = self.clone();
        let mut b = other.clone();
        a.applied_at.clear();
        b.applied_at.clear();
        a.objects.sort_by(|x, y| x.key.cmp(&y.key));
        b.objects.sort_by(|x, y| x.key.cmp(&y.key));
        a.hooks.sort_by(|x, y| x.key.cmp(&y.key));
        b.hooks.sort_by(|x, y| x.key.cmp(&y.key));
        a == b
    }
}

/// Merge a pre-upgrade inventory (`legacy`, written under the conflated app name `legacy_app`)
/// into this app's: the app's own entries win, the legacy ones it does not list are added, and
/// the result remembers where it came from until a run finishes without failures.
pub fn adopt(own: Option<Inventory>, legacy: Inventory, legacy_app: &str) -> Inventory {
    let mut adopted = own.unwrap_or_else(|| legacy.clone());
    let known: BTreeSet<ObjectKey> = adopted.objects.iter().map(|e| e.key.clone()).collect();
    adopted.objects.extend(
        legacy
            .objects
            .into_iter()
            .filter(|e| !known.contains(&e.key)),
    );
    adopted.adopted_from = Some(legacy_app.to_string());
    adopted
}

/// The inventory to write before applying: `previous` (or `first` when the app has none) plus an
/// entry for every object about to be applied that it does not list yet. The second value says
/// whether it gained entries.
pub fn widen<'a>(
    previous: Option<&Inventory>,
    first: Inventory,
    applying: impl IntoIterator<Item = &'a Entry>,
) -> (Inventory, bool) {
    let mut widened = previous.cloned().unwrap_or(first);
    let known: BTreeSet<ObjectKey> = widened.objects.iter().map(|e| e.key.clone()).collect();
    let before = widened.objects.len();
    for entry in applying {
        if !known.contains(&entry.key) {
            widened.objects.push(Entry {
                fingerprint: None,
                ..entry.clone()
            });
        }
    }
    let grew = widened.objects.len() != before;
    (widened, grew)
}

/// Entries of `previous` whose objects are no longer in the source (`planned`), in key order:
/// the candidates for pruning.
pub fn gone_from_source(
    previous: Option<&Inventory>,
    planned: &BTreeSet<&ObjectKey>,
) -> Vec<Entry> {
    let by_key: BTreeMap<ObjectKey, Entry> =
        previous.map(Inventory::entries_by_key).unwrap_or_default();
    by_key
        .into_values()
        .filter(|e| !planned.contains(&e.key))
        .collect()
}

/// When hooks did not run this time: what the previous run recorded about the hooks still in the
/// source (their entries and their hook records) is kept as it was.
pub fn kept_hooks(
    previous: Option<&Inventory>,
    hooks_in_source: &BTreeMap<ObjectKey, String>,
) -> (Vec<Entry>, Vec<HookRecord>) {
    let Some(previous) = previous else {
        return (Vec::new(), Vec::new());
    };
    let entries = previous
        .objects
        .iter()
        .filter(|e| hooks_in_source.contains_key(&e.key))
        .cloned()
        .collect();
    let records = previous
        .hooks
        .iter()
        .filter(|h| hooks_in_source.contains_key(&h.key))
        .cloned()
        .collect();
    (entries, records)
}

/// What the app owns after a successful run, apart from who wrote it.
#[derive(Debug, Clone, Default)]
pub struct Narrowed {
    /// Objects applied this run (with their new fingerprints), in plan order.
    pub applied: Vec<Entry>,
    /// Hooks still in the cluster, or kept from the previous run when hooks did not run.
    pub hooks: Vec<Entry>,
    /// Hooks that ran to success (or the previous records, when hooks did not run).
    pub hook_records: Vec<HookRecord>,
    /// Entries gone from the source that stay: not pruned (no `--prune`, kept by policy, failed
    /// deletes, kinds no longer served).
    pub kept: Vec<Entry>,
}

/// The inventory to write after the run: exactly what the app now owns. A pending legacy
/// adoption (`previous.adopted_from`) is finished (dropped) unless something failed.
pub fn narrow(
    template: &Inventory,
    previous: Option<&Inventory>,
    owned: Narrowed,
    failed: bool,
) -> Inventory {
    let mut objects = owned.applied;
    objects.extend(owned.hooks);
    objects.extend(owned.kept);
    Inventory {
        adopted_from: previous
            .and_then(|p| p.adopted_from.clone())
            .filter(|_| failed),
        objects,
        hooks: owned.hook_records,
        install_pending: failed && previous.is_none_or(|p| p.install_pending),
        ..template.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: &str, name: &str) -> ObjectKey {
        ObjectKey {
            group: String::new(),
            kind: kind.into(),
            namespace: Some("ns".into()),
            name: name.into(),
        }
    }

    fn entry(name: &str, fingerprint: Option<&str>) -> Entry {
        Entry {
            api_version: "v1".into(),
            key: key("ConfigMap", name),
            fingerprint: fingerprint.map(str::to_string),
        }
    }

    fn inventory(entries: Vec<Entry>) -> Inventory {
        Inventory {
            app: "web".into(),
            owner: Some("ns/web".into()),
            source: "./app".into(),
            applied_at: "2026-01-01T00:00:00Z".into(),
            objects: entries,
            ..Default::default()
        }
    }

    #[test]
    fn widening_keeps_the_old_set_and_adds_the_new() {
        let previous = inventory(vec![entry("a", Some("g1")), entry("b", Some("g2"))]);
        let applying = [entry("b", Some("g9")), entry("c", Some("g3"))];
        let (widened, grew) = widen(Some(&previous), Inventory::default(), &applying);
        assert!(grew);
        let names: Vec<&str> = widened
            .objects
            .iter()
            .map(|e| e.key.name.as_str())
            .collect();
        assert_eq!(
            names,
            ["a", "b", "c"],
            "old entries stay, new ones are added"
        );
        assert_eq!(
            widened.objects[1].fingerprint.as_deref(),
            Some("g2"),
            "known entries keep their recorded fingerprint"
        );
        assert_eq!(
            widened.objects[2].fingerprint, None,
            "a new entry has none until it is applied"
        );
        let (same, grew) = widen(Some(&previous), Inventory::default(), &[entry("a", None)]);
        assert!(!grew);
        assert_eq!(same.objects, previous.objects);
    }

    #[test]
    fn the_first_run_widens_from_the_template() {
        let first = inventory(Vec::new());
        let (widened, grew) = widen(None, first.clone(), &[entry("a", None)]);
        assert!(grew);
        assert_eq!(widened.app, "web");
        assert_eq!(widened.objects, vec![entry("a", None)]);
        let (empty, grew) = widen(None, first, &[]);
        assert!(!grew && empty.objects.is_empty());
    }

    #[test]
    fn gone_is_what_left_the_source_in_key_order() {
        let previous = inventory(vec![entry("c", None), entry("a", None), entry("b", None)]);
        let b = key("ConfigMap", "b");
        let planned: BTreeSet<&ObjectKey> = [&b].into();
        let gone: Vec<String> = gone_from_source(Some(&previous), &planned)
            .into_iter()
            .map(|e| e.key.name)
            .collect();
        assert_eq!(gone, ["a", "c"]);
        assert!(gone_from_source(None, &planned).is_empty());
    }

    #[test]
    fn narrowing_keeps_only_what_the_app_owns() {
        let template = inventory(Vec::new());
        let mut previous = inventory(vec![entry("old", None), entry("kept", None)]);
        previous.adopted_from = Some("legacy".into());
        let owned = Narrowed {
            applied: vec![entry("new", Some("g1"))],
            hooks: vec![entry("hook", Some("g2"))],
            hook_records: vec![HookRecord {
                key: key("ConfigMap", "hook"),
                hash: "h".into(),
            }],
            kept: vec![entry("kept", None)],
        };
        let next = narrow(&template, Some(&previous), owned.clone(), false);
        let names: Vec<&str> = next.objects.iter().map(|e| e.key.name.as_str()).collect();
        assert_eq!(names, ["new", "hook", "kept"], "the pruned entry is gone");
        assert_eq!(next.hooks.len(), 1);
        assert_eq!(next.adopted_from, None, "a clean run finishes a migration");
        let failed = narrow(&template, Some(&previous), owned, true);
        assert_eq!(
            failed.adopted_from.as_deref(),
            Some("legacy"),
            "a failed run keeps it pending"
        );
    }

    #[test]
    fn hooks_that_did_not_run_keep_their_records() {
        let mut previous = inventory(vec![entry("hook", Some("g1")), entry("other", None)]);
        previous.hooks = vec![
            HookRecord {
                key: key("ConfigMap", "hook"),
                hash: "h1".into(),
            },
            HookRecord {
                key: key("ConfigMap", "removed"),
                hash: "h2".into(),
            },
        ];
        let in_source = BTreeMap::from([(key("ConfigMap", "hook"), "h1".to_string())]);
        let (entries, records) = kept_hooks(Some(&previous), &in_source);
        assert_eq!(entries, vec![entry("hook", Some("g1"))]);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].hash, "h1");
        assert_eq!(kept_hooks(None, &in_source), (Vec::new(), Vec::new()));
    }

    #[test]
    fn adoption_adds_only_unknown_legacy_entries() {
        let own = inventory(vec![entry("a", Some("mine"))]);
        let legacy = inventory(vec![entry("a", Some("theirs")), entry("b", None)]);
        let adopted = adopt(Some(own), legacy.clone(), "web-v1");
        assert_eq!(
            adopted.objects,
            vec![entry("a", Some("mine")), entry("b", None)]
        );
        assert_eq!(adopted.adopted_from.as_deref(), Some("web-v1"));
        let fresh = adopt(None, legacy, "web-v1");
        assert_eq!(fresh.objects.len(), 2);
    }

    #[test]
    fn same_content_ignores_time_and_order() {
        let a = inventory(vec![entry("a", None), entry("b", None)]);
        let mut b = inventory(vec![entry("b", None), entry("a", None)]);
        b.applied_at = "later".into();
        assert!(a.same_content(&b));
        b.revision = Some("r2".into());
        assert!(!a.same_content(&b));
    }
}
