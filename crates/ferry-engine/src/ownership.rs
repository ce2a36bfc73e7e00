//! Ownership: the labels and annotations ferry stamps on what it applies, and app identity —
//! which app owns an object and an inventory, encoded so that two different apps can never share
//! one. Pure: no client; the cluster side (`cluster::manager`) and the inventory read these.
//!
//! Every applied object gets the label `ferry.dev/app=<app>` ([`LABEL_APP`]) and the annotation
//! `ferry.dev/owner=<owner id>` ([`ANNOTATION_OWNER`]); both must match before ferry prunes or
//! deletes anything. `ferry.dev/intent-hash` ([`ANNOTATION_HASH`]) is a hash of what ferry
//! applies (see `plan::intent_hash`).
//!
//! There are two kinds of app, in separate name spaces:
//!
//! - a **push app** (`ferry apply --app web -n shop`): owner id `shop/web`, label
//!   `ferry.dev/app=web`, inventory `ferry-inventory-web`. Push app names are validated to
//!   `[a-z0-9-]{1,63}`, so the id has exactly one `/`. This is the format every earlier ferry
//!   wrote, kept unchanged so that upgrading needs no migration for push apps.
//! - a **Release** `team/web.v1` deploying into namespace `shop`: owner id
//!   `shop/release/team/web.v1` (three `/`; namespace and Release names cannot contain one),
//!   inventory `ferry-release-web-v1-<hash>`, where `<hash>` is 16 hex digits of SHA-256 over
//!   `release/team/web.v1`. The readable part is lossy (`.` becomes `-`, long names are cut); the
//!   hash and, above all, the exact id stored in the inventory and on every object make the
//!   identity injective. The label `ferry.dev/app` keeps the readable name it always had
//!   ([`legacy_release_app`]: `team-web-v1` here, `web-v1` when deploying into its own namespace)
//!   so that selectors keep working across the upgrade; a label is for selecting, never for
//!   deciding ownership, and two apps may share a label value.
//!
//! Ownership is decided on the exact owner id (`ferry.dev/owner` annotation, and the `owner`
//! stored in the inventory), never on a derived name: a hash collision on a name can only make
//! ferry refuse, never make it prune another app's objects.
//!
//! Earlier versions named a Release's app after its name with `.` replaced by `-` (prefixed by its
//! namespace when it deployed elsewhere), so `web.v1`/`web-v1`, `a`+`b-c`/`a-b`+`c` and a push app
//! of the same name shared one identity. [`legacy_release_app`] is that old name; the pipeline
//! adopts an inventory written under it once (see `pipeline::apply` and docs/push.md).

use std::collections::BTreeMap;

use crate::{Error, Result};

/// The app label: a push app's name, or a Release's readable name. For selecting, never for
/// deciding ownership (two apps may share a value).
pub const LABEL_APP: &str = "ferry.dev/app";
/// The exact owner id ([`Owner::id`]) of an applied object.
pub const ANNOTATION_OWNER: &str = "ferry.dev/owner";
/// Hash of what ferry applied (`plan::intent_hash`): an unchanged re-apply sends no write.
pub const ANNOTATION_HASH: &str = "ferry.dev/intent-hash";
/// The git revision that last changed the object.
pub const ANNOTATION_REVISION: &str = "ferry.dev/revision";
/// Per-object opt-out from pruning and `ferry delete`: `ferry.dev/prune: disabled`.
pub const ANNOTATION_PRUNE: &str = "ferry.dev/prune";
/// The value of [`ANNOTATION_PRUNE`] that allows pruning a destructive kind.
pub const PRUNE_ALLOW_DESTRUCTIVE: &str = "allow-destructive";

/// Validate an app name: it becomes a label value and part of the inventory's name.
pub fn validate_app_name(app: &str) -> Result<()> {
    let ok = !app.is_empty()
        && app.len() <= 63
        && app
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !app.starts_with('-')
        && !app.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "app name {app:?} is not valid: use at most 63 lowercase letters, digits and '-' (pass --app NAME)"
        )))
    }
}

/// A Release, by its own namespace and name (not where it deploys).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReleaseRef {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ReleaseRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Who owns what: the app, and the namespace its inventory lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The `ferry.dev/app` label value: the push app's name, or a Release's readable name.
    /// Readable, not the identity (two apps may share it): see [`Owner::id`].
    pub app: String,
    /// Namespace of the inventory (the app's default namespace).
    pub namespace: String,
    /// Set for a Release; `None` for a push app.
    pub release: Option<ReleaseRef>,
    /// A pre-upgrade app name whose identity (`<namespace>/<legacy>`, label `<legacy>`) this
    /// app adopted after verifying the old inventory (see `inventory::read_legacy`). Objects
    /// carrying it count as this app's until they are re-applied under the new identity.
    pub legacy: Option<String>,
}

impl Owner {
    /// A push app (`ferry apply --app NAME`).
    pub fn push(app: &str, namespace: &str) -> Result<Owner> {
        validate_app_name(app)?;
        Ok(Owner {
            app: app.to_string(),
            namespace: namespace.to_string(),
            release: None,
            legacy: None,
        })
    }

    /// A Release deploying into `namespace`.
    pub fn release(release: &ReleaseRef, namespace: &str) -> Result<Owner> {
        validate_release(release)?;
        Ok(Owner {
            app: legacy_release_app(release, namespace),
            namespace: namespace.to_string(),
            release: Some(release.clone()),
            legacy: None,
        })
    }

    /// The exact identity: the `ferry.dev/owner` annotation value and the inventory's `owner`.
    pub fn id(&self) -> String {
        match &self.release {
            None => format!("{}/{}", self.namespace, self.app),
            Some(r) => format!("{}/release/{}/{}", self.namespace, r.namespace, r.name),
        }
    }

    /// The pre-upgrade identity this app adopted, if any. For a Release handed over to a push
    /// app ([`release_handover_key`] `release/<ns>/<name>`) this is that Release's exact id,
    /// `<namespace>/release/<ns>/<name>`, by the same formula.
    pub fn legacy_id(&self) -> Option<String> {
        self.legacy
            .as_ref()
            .map(|l| format!("{}/{l}", self.namespace))
    }

    /// The `ferry.dev/app` label of the adopted identity: the legacy app name, or the handed-over
    /// Release's readable label.
    fn legacy_label(&self) -> Option<String> {
        let legacy = self.legacy.as_ref()?;
        Some(match parse_release_handover_key(legacy) {
            Some(release) => legacy_release_app(&release, &self.namespace),
            None => legacy.clone(),
        })
    }

    /// Whether an owner annotation value is this app's (its id, or an adopted legacy id).
    pub fn is_own_id(&self, id: &str) -> bool {
        id == self.id() || self.legacy_id().as_deref() == Some(id)
    }

    /// The inventory ConfigMap's name.
    pub fn inventory_name(&self) -> String {
        match &self.release {
            None => format!("ferry-inventory-{}", self.app),
            Some(r) => format!(
                "ferry-release-{}-{}",
                readable(&r.name, 63 - "ferry-release-".len() - 1 - HASH_HEX),
                tuple_hash(r)
            ),
        }
    }

    /// For messages: `app web` or `Release team/web.v1`.
    pub fn describe(&self) -> String {
        match &self.release {
            None => format!("app {}", self.app),
            Some(r) => format!("Release {r}"),
        }
    }

    /// Whether live metadata says this owner owns the object: the label **and** the exact owner
    /// annotation, both of this identity (or both of the adopted legacy identity).
    pub fn owns(
        &self,
        labels: Option<&BTreeMap<String, String>>,
        annotations: Option<&BTreeMap<String, String>>,
    ) -> bool {
        let label = labels.and_then(|l| l.get(LABEL_APP));
        let annotation = annotations.and_then(|a| a.get(ANNOTATION_OWNER));
        if label == Some(&self.app) && annotation == Some(&self.id()) {
            return true;
        }
        match (self.legacy_label(), self.legacy_id()) {
            (Some(legacy), Some(legacy_id)) => {
                label == Some(&legacy) && annotation == Some(&legacy_id)
            }
            _ => false,
        }
    }
}

const HASH_HEX: usize = 16;

/// 16 hex digits (64 bits) of SHA-256 over the exact tuple `release/<namespace>/<name>`: enough
/// that nobody can choose a Release name whose inventory name collides with another's (and if
/// one did, the stored owner id makes ferry refuse rather than share).
fn tuple_hash(r: &ReleaseRef) -> String {
    use aws_lc_rs::digest::{SHA256, digest};
    let tuple = format!("release/{}/{}", r.namespace, r.name);
    hex::encode(&digest(&SHA256, tuple.as_bytes()).as_ref()[..HASH_HEX / 2])
}

/// A readable stem: lowercase alphanumerics and `-`, at most `max` characters, no `-` at the
/// ends. Lossy on purpose; never used alone as an identity.
fn readable(name: &str, max: usize) -> String {
    let mapped: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let cut: String = mapped.chars().take(max).collect();
    let trimmed = cut.trim_matches('-');
    if trimmed.is_empty() {
        "r".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Namespace: a DNS label; Release name: a DNS subdomain. The API server guarantees both for a
/// stored Release; checked again because the id's injectivity rests on neither holding a `/`.
fn validate_release(r: &ReleaseRef) -> Result<()> {
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    let subdomain = |s: &str| s.len() <= 253 && s.split('.').all(label);
    if label(&r.namespace) && subdomain(&r.name) {
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "Release {:?}/{:?} is not a valid namespace/name pair (namespace: DNS label, name: DNS subdomain)",
            r.namespace, r.name
        )))
    }
}

/// What a push app names to take over a Release's app (`ferry apply --adopt-release NS/NAME`,
/// the pull-to-push hand-over): `release/<ns>/<name>`. Used where a legacy app name goes
/// ([`Owner::legacy`], `inventory::Legacy::app`); it holds `/`, so it is never a push app's
/// name, and `<namespace>/<key>` is exactly the Release's owner id.
pub fn release_handover_key(release: &ReleaseRef) -> String {
    format!("release/{}/{}", release.namespace, release.name)
}

/// The Release a [`release_handover_key`] names, if `key` is one (and names a valid Release).
pub fn parse_release_handover_key(key: &str) -> Option<ReleaseRef> {
    let rest = key.strip_prefix("release/")?;
    let (namespace, name) = rest.split_once('/')?;
    let release = ReleaseRef {
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    validate_release(&release).ok()?;
    Some(release)
}

/// What to do when an object to apply is owned by `other` (an owner id) instead of `own`: the
/// hand-over between push and pull when that is what it is, else removing it from one app.
pub fn conflict_hint(own: &Owner, other: &str) -> String {
    let other_is_release = other.contains("/release/");
    match (&own.release, other_is_release) {
        (Some(_), false) => {
            let app = other.rsplit('/').next().unwrap_or(other);
            format!(
                "to hand the push app over to this Release, annotate the Release ferry.dev/adopt-push-app: {app}; else remove the object from one of the apps, or `ferry delete` the other app first"
            )
        }
        (None, true) => {
            let release = other
                .split_once("/release/")
                .map(|(_, r)| r)
                .unwrap_or(other);
            format!(
                "to hand that Release's app over to this push app, delete the Release with spec.deletionPolicy: Orphan (or suspend it) and run ferry apply --adopt-release {release}; else remove the object from one of the apps"
            )
        }
        _ => "remove it from one of the apps, or `ferry delete` the other app first".to_string(),
    }
}

/// The app name ferry used for a Release before identities were injective (its name with
/// `.` → `-`, prefixed by its namespace when it deploys into another one, cut with a hash over
/// the conflated name past 63 characters): still its readable `ferry.dev/app` label, and the
/// name of its pre-upgrade inventory. Not injective: never an identity.
pub fn legacy_release_app(release: &ReleaseRef, target_namespace: &str) -> String {
    let base = if target_namespace == release.namespace {
        release.name.replace('.', "-")
    } else {
        format!("{}-{}", release.namespace, release.name).replace('.', "-")
    };
    if base.len() <= 63 {
        return base;
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, base.as_bytes());
    let suffix = hex::encode(&digest.as_ref()[..4]);
    format!("{}-{suffix}", base[..54].trim_end_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(ns: &str, name: &str) -> ReleaseRef {
        ReleaseRef {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn conflated_release_names_get_distinct_identities() {
        let pairs = [
            (rel("a", "web.v1"), rel("a", "web-v1"), "a"),
            (rel("a", "b-c"), rel("a-b", "c"), "x"),
            (rel("x", "a-b"), rel("a", "b"), "x"),
        ];
        for (one, two, target) in pairs {
            let (o1, o2) = (
                Owner::release(&one, target).unwrap(),
                Owner::release(&two, target).unwrap(),
            );
            // The old encoding conflated them...
            assert_eq!(
                legacy_release_app(&one, target),
                legacy_release_app(&two, target)
            );
            // ...the new one does not, in any of its parts.
            assert_ne!(o1.id(), o2.id());
            assert_ne!(o1.inventory_name(), o2.inventory_name());
            // The readable label may coincide; ownership never rests on it.
            let labels = BTreeMap::from([(LABEL_APP.to_string(), o1.app.clone())]);
            let theirs = BTreeMap::from([(ANNOTATION_OWNER.to_string(), o2.id())]);
            assert!(!o1.owns(Some(&labels), Some(&theirs)));
        }
    }

    #[test]
    fn push_and_release_never_share() {
        let push = Owner::push("web-v1", "a").unwrap();
        let release = Owner::release(&rel("a", "web-v1"), "a").unwrap();
        assert_eq!(
            push.id(),
            "a/web-v1",
            "push ids keep their pre-upgrade format"
        );
        assert_eq!(release.id(), "a/release/a/web-v1");
        assert_ne!(push.inventory_name(), release.inventory_name());
        assert!(!push.is_own_id(&release.id()) && !release.is_own_id(&push.id()));
        // A push app cannot be given a name that looks like a Release id.
        assert!(Owner::push("release/a/web-v1", "a").is_err());
    }

    #[test]
    fn names_fit_kubernetes_limits() {
        let long = format!("{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63));
        let o = Owner::release(&rel(&"n".repeat(63), &long), &"t".repeat(63)).unwrap();
        assert!(o.app.len() <= 63, "{}", o.app);
        assert!(o.inventory_name().len() <= 63, "{}", o.inventory_name());
        assert!(o.app.chars().next().unwrap().is_ascii_alphanumeric());
        assert!(!o.inventory_name().contains(".."));
        // Stable: the same Release always gets the same names.
        let again = Owner::release(&rel(&"n".repeat(63), &long), &"t".repeat(63)).unwrap();
        assert_eq!(o, again);
    }

    #[test]
    fn invalid_release_refs_are_refused() {
        assert!(Owner::release(&rel("a/b", "c"), "a").is_err());
        assert!(Owner::release(&rel("a", "b/c"), "a").is_err());
        assert!(Owner::release(&rel("a", ""), "a").is_err());
    }

    #[test]
    fn ownership_needs_label_and_exact_id() {
        let mut owner = Owner::release(&rel("a", "web.v1"), "a").unwrap();
        let labels = BTreeMap::from([(LABEL_APP.to_string(), owner.app.clone())]);
        let ours = BTreeMap::from([(ANNOTATION_OWNER.to_string(), owner.id())]);
        let sibling = Owner::release(&rel("a", "web-v1"), "a").unwrap();
        let theirs = BTreeMap::from([(ANNOTATION_OWNER.to_string(), sibling.id())]);
        assert!(owner.owns(Some(&labels), Some(&ours)));
        assert!(!owner.owns(Some(&labels), Some(&theirs)));
        assert!(!owner.owns(None, Some(&ours)));
        // The legacy identity counts only once adopted.
        let old_labels = BTreeMap::from([(LABEL_APP.to_string(), "web-v1".to_string())]);
        let old = BTreeMap::from([(ANNOTATION_OWNER.to_string(), "a/web-v1".to_string())]);
        assert!(!owner.owns(Some(&old_labels), Some(&old)));
        owner.legacy = Some("web-v1".into());
        assert!(owner.owns(Some(&old_labels), Some(&old)));
    }

    #[test]
    fn a_push_app_takes_over_a_release_only_by_its_exact_key() {
        let team_web = rel("team", "web.v1");
        let release = Owner::release(&team_web, "shop").unwrap();
        let key = release_handover_key(&team_web);
        assert_eq!(key, "release/team/web.v1");
        assert_eq!(parse_release_handover_key(&key), Some(team_web.clone()));
        for bad in [
            "release/team",
            "release//web",
            "release/a/b/c",
            "push/team/web",
            "web",
        ] {
            assert_eq!(parse_release_handover_key(bad), None, "{bad}");
        }
        let labels = BTreeMap::from([(LABEL_APP.to_string(), release.app.clone())]);
        let theirs = BTreeMap::from([(ANNOTATION_OWNER.to_string(), release.id())]);
        let mut push = Owner::push("web", "shop").unwrap();
        assert!(!push.owns(Some(&labels), Some(&theirs)));
        assert!(!push.is_own_id(&release.id()));
        push.legacy = Some(key);
        assert_eq!(push.legacy_id(), Some(release.id()));
        assert!(push.is_own_id(&release.id()));
        assert!(push.owns(Some(&labels), Some(&theirs)));
        // Another Release of a similar name is still not ours.
        let sibling = Owner::release(&rel("team", "web-v1"), "shop").unwrap();
        let sibling_id = BTreeMap::from([(ANNOTATION_OWNER.to_string(), sibling.id())]);
        assert!(!push.owns(Some(&labels), Some(&sibling_id)));
    }

    #[test]
    fn conflicts_say_how_to_hand_over() {
        let push = Owner::push("web", "shop").unwrap();
        let release = Owner::release(&rel("team", "web"), "shop").unwrap();
        assert!(conflict_hint(&release, &push.id()).contains("ferry.dev/adopt-push-app: web"));
        assert!(conflict_hint(&push, &release.id()).contains("--adopt-release team/web"));
        let other = Owner::push("api", "shop").unwrap();
        assert!(!conflict_hint(&push, &other.id()).contains("adopt"));
    }
}
