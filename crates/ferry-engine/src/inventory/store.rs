//! The inventory's store: a ConfigMap in the app's namespace (`ferry-inventory-<app>` for a push
//! app, `ferry-release-<name>-<hash>` for a Release, see [`crate::ownership`]). It lives in the
//! app's namespace so a tenant identity that may only write there can keep it; it holds no
//! Secret values.
//!
//! It stores the exact owner id, and [`read`] refuses an inventory whose stored owner is another
//! app's: its name is derived (and, for Releases, hashed), its owner is not.
//!
//! Optimistic concurrency: every write carries the resourceVersion this run read (or creates the
//! ConfigMap, failing if it exists), so two writers for one app (two agents during a Lease
//! hand-over, two pipelines) cannot silently overwrite each other: the later one gets
//! [`Error::Conflict`] and writes nothing.
//!
//! Legacy adoption: [`read_legacy`] finds an inventory a pre-upgrade ferry wrote under the
//! conflated app name, [`delete_legacy`] removes it once its content lives in the new one.
//!
//! Size: the inventory is JSON in `data["inventory.json"]` while that fits comfortably in a
//! ConfigMap (1 MiB for everything); a larger one (~7,000 objects and up) is stored gzipped in
//! `binaryData["inventory.json.gz"]` instead, ~15× smaller, so one app can own ~100,000 objects.
//! Decision: small inventories stay plain so `kubectl get -o yaml` and older ferry versions can
//! still read them. An app too large even compressed is refused before anything is applied.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};

use super::Inventory;
use crate::cluster::kube_error::{describe_kube_error, status_code};
use crate::ownership::{ANNOTATION_OWNER, ANNOTATION_REVISION, Owner};
use crate::{Error, Result};

pub const LABEL_INVENTORY: &str = "ferry.dev/inventory";
const DATA_KEY: &str = "inventory.json";
const COMPRESSED_KEY: &str = "inventory.json.gz";
/// Above this much JSON the inventory is stored compressed (the ConfigMap limit is 1 MiB,
/// labels and annotations included).
const PLAIN_LIMIT: usize = 768 * 1024;
/// What a stored inventory may take, compressed: the API server's own limit, with room for the
/// ConfigMap's metadata.
const STORED_LIMIT: usize = 1_000_000;
/// What a compressed inventory may inflate to when read. The ConfigMap is in the app's (a
/// tenant's) namespace, so a hand-written one could be a gzip bomb.
const INFLATED_LIMIT: u64 = 64 * 1024 * 1024;

/// Where a stored inventory is: what a write or delete must present as its precondition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub resource_version: String,
    pub uid: String,
}

/// An inventory as read, with its version.
#[derive(Debug, Clone)]
pub struct Stored {
    pub inventory: Inventory,
    pub version: Version,
}

fn describe(namespace: &str, name: &str) -> String {
    format!("inventory ConfigMap {namespace}/{name}")
}

async fn get(client: &Client, namespace: &str, name: &str) -> Result<Option<ConfigMap>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name).await.map_err(|err| Error::Object {
        object: describe(namespace, name),
        message: format!("cannot read: {}", describe_kube_error(&err)),
    })
}

/// Why a ConfigMap's inventory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("has neither {DATA_KEY} nor {COMPRESSED_KEY}")]
    Missing,
    #[error("{COMPRESSED_KEY} is not gzip or inflates past {INFLATED_LIMIT} bytes")]
    Compressed(#[source] std::io::Error),
    #[error("its inventory is not valid JSON")]
    Json(#[source] serde_json::Error),
}

/// The inventory a ConfigMap holds, plain or compressed (see the module docs).
pub fn decode(cm: &ConfigMap) -> std::result::Result<Inventory, DecodeError> {
    if let Some(text) = cm.data.as_ref().and_then(|d| d.get(DATA_KEY)) {
        return serde_json::from_str(text).map_err(DecodeError::Json);
    }
    let packed = cm
        .binary_data
        .as_ref()
        .and_then(|d| d.get(COMPRESSED_KEY))
        .ok_or(DecodeError::Missing)?;
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(packed.0.as_slice())
        .take(INFLATED_LIMIT + 1)
        .read_to_end(&mut json)
        .map_err(DecodeError::Compressed)?;
    if json.len() as u64 > INFLATED_LIMIT {
        return Err(DecodeError::Compressed(std::io::Error::other(
            "inflates past the limit",
        )));
    }
    serde_json::from_slice(&json).map_err(DecodeError::Json)
}

/// The ConfigMap fields that hold `inventory`: `(data, binaryData)`, one of them set.
type Encoded = (
    Option<BTreeMap<String, String>>,
    Option<BTreeMap<String, ByteString>>,
);

/// Encode `inventory` for its ConfigMap, compressed when large; an error (naming `object`) when
/// even the compressed form cannot be stored.
fn encode(inventory: &Inventory, object: &str) -> Result<Encoded> {
    let text = serde_json::to_string(inventory).map_err(anyhow::Error::from)?;
    if text.len() <= PLAIN_LIMIT {
        return Ok((Some(BTreeMap::from([(DATA_KEY.to_string(), text)])), None));
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text.as_bytes()).map_err(anyhow::Error::from)?;
    let packed = gz.finish().map_err(anyhow::Error::from)?;
    if packed.len() > STORED_LIMIT {
        return Err(Error::Object {
            object: object.to_string(),
            message: format!(
                "cannot hold {} objects: the inventory is {} bytes even compressed, over the {STORED_LIMIT} a ConfigMap can store; nothing was applied. Split the app into smaller ones",
                inventory.objects.len(),
                packed.len()
            ),
        });
    }
    Ok((
        None,
        Some(BTreeMap::from([(
            COMPRESSED_KEY.to_string(),
            ByteString(packed),
        )])),
    ))
}

fn parse(cm: &ConfigMap, object: &str) -> Result<Inventory> {
    decode(cm).map_err(|err| Error::Object {
        object: object.to_string(),
        message: format!("{err}; it was edited by hand — delete it and re-apply"),
    })
}

fn version_of(cm: &ConfigMap) -> Version {
    Version {
        resource_version: cm.metadata.resource_version.clone().unwrap_or_default(),
        uid: cm.metadata.uid.clone().unwrap_or_default(),
    }
}

fn inventory_label(cm: &ConfigMap) -> Option<&String> {
    cm.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_INVENTORY))
}

/// Read an app's inventory; `None` if the app was never applied here. Refuses an inventory that
/// belongs to another app (its stored owner id differs), so a name collision can never make one
/// app prune from another's inventory.
pub async fn read(client: &Client, owner: &Owner) -> Result<Option<Stored>> {
    let name = owner.inventory_name();
    let object = describe(&owner.namespace, &name);
    let Some(cm) = get(client, &owner.namespace, &name).await? else {
        return Ok(None);
    };
    if inventory_label(&cm) != Some(&owner.app) {
        return Err(Error::Refused(format!(
            "{object} exists but is not {}'s ferry inventory (label {LABEL_INVENTORY} is not {:?}); rename the app with --app or remove that ConfigMap",
            owner.describe(),
            owner.app
        )));
    }
    let inventory = parse(&cm, &object)?;
    match &inventory.owner {
        Some(stored) if *stored == owner.id() => {}
        Some(stored) => {
            return Err(Error::Refused(format!(
                "{object} belongs to ferry owner {stored:?}, not to {} ({:?}); nothing was applied or pruned. Two apps map to the same inventory name: rename one of them",
                owner.describe(),
                owner.id()
            )));
        }
        // Written before ferry stored owners by an agent Release (it recorded `<git URL>//<path>`
        // as source; a push app records local paths): the Release adopts it when it runs under
        // this version. A push app of the same name must not take it (and prune the Release's
        // objects, which still carry the old, shared owner id).
        None if owner.release.is_none() && inventory.source.contains("://") => {
            return Err(Error::Refused(format!(
                "{object} was written for an agent Release (source {}) before ferry kept push apps and Releases apart; nothing was applied or pruned. Let the agent run that Release once (it adopts the inventory), or pick another --app",
                inventory.source
            )));
        }
        // Otherwise only push apps kept their naming, so only a push app may take it as its own
        // (a Release's inventory name did not exist then).
        None if owner.release.is_none() => {}
        None => {
            return Err(Error::Refused(format!(
                "{object} has no stored owner, so it was not written by ferry for {}; remove that ConfigMap",
                owner.describe()
            )));
        }
    }
    Ok(Some(Stored {
        version: version_of(&cm),
        inventory,
    }))
}

/// A pre-upgrade app name to adopt, and how to recognise its inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Legacy {
    /// The app name ferry used before ([`crate::ownership::legacy_release_app`]).
    pub app: String,
    /// If set, the old inventory's recorded source must start with it (the agent passes
    /// `<git URL>//`: what it recorded for the Release) or be empty (`ferry install` and
    /// `ferry bootstrap`, which always applied as the bootstrap Release's app). A push app of
    /// the same name recorded local paths, so its inventory is never taken for a Release's.
    pub source_prefix: Option<String>,
    /// Take over the push app `app` of the same namespace (its inventory as written by this
    /// version, owner `<namespace>/<app>`): the explicit push-to-pull hand-over a Release asks
    /// for with `ferry.dev/adopt-push-app`. Never implied by a name. Also set for the
    /// pull-to-push hand-over, where `app` is a `crate::ownership::release_handover_key`.
    pub push_takeover: bool,
}

/// Read the inventory a pre-upgrade ferry wrote for this app under `legacy.app` (the conflated
/// app name). Returned only if it verifiably is one: label and stored app are `legacy.app`, it
/// has no stored owner (a ConfigMap with an owner was written by this version for a push app
/// of that name, which is not ours to adopt), and its source matches `legacy.source_prefix`.
/// The caller vouches that no other app of its kind maps to the same name (the agent checks
/// its other Releases).
pub async fn read_legacy(
    client: &Client,
    owner: &Owner,
    legacy: &Legacy,
) -> Result<Option<Stored>> {
    if let Some(release) = crate::ownership::parse_release_handover_key(&legacy.app) {
        return read_handed_over_release(client, owner, &release).await;
    }
    let (source_prefix, takeover, legacy) = (
        legacy.source_prefix.as_deref(),
        legacy.push_takeover,
        legacy.app.as_str(),
    );
    if crate::ownership::validate_app_name(legacy).is_err() {
        return Ok(None);
    }
    let name = Inventory::name(legacy);
    let object = describe(&owner.namespace, &name);
    let Some(cm) = get(client, &owner.namespace, &name).await? else {
        return Ok(None);
    };
    if inventory_label(&cm).map(String::as_str) != Some(legacy) {
        return Ok(None);
    }
    let Ok(inventory) = parse(&cm, &object) else {
        return Ok(None);
    };
    let source_matches = source_prefix
        .is_none_or(|prefix| inventory.source.is_empty() || inventory.source.starts_with(prefix));
    let owner_matches = match &inventory.owner {
        None => source_matches,
        Some(stored) => takeover && *stored == format!("{}/{legacy}", owner.namespace),
    };
    if inventory.app != legacy || !owner_matches {
        tracing::info!(inventory = %object, owner = ?inventory.owner, "not adopting: it is not a pre-upgrade inventory of {}", owner.describe());
        return Ok(None);
    }
    Ok(Some(Stored {
        version: version_of(&cm),
        inventory,
    }))
}

/// The pull-to-push hand-over (`ferry apply --adopt-release NS/NAME`): the inventory of that
/// Release's app in this push app's namespace, only if it verifiably is the Release's (label and
/// stored owner are exactly the Release's). Only a push app takes over a Release this way.
async fn read_handed_over_release(
    client: &Client,
    owner: &Owner,
    release: &crate::ownership::ReleaseRef,
) -> Result<Option<Stored>> {
    if owner.release.is_some() {
        return Ok(None);
    }
    let theirs = Owner::release(release, &owner.namespace)?;
    let name = theirs.inventory_name();
    let object = describe(&owner.namespace, &name);
    let Some(cm) = get(client, &owner.namespace, &name).await? else {
        return Ok(None);
    };
    let inventory = parse(&cm, &object)?;
    if inventory_label(&cm) != Some(&theirs.app)
        || inventory.owner.as_deref() != Some(theirs.id().as_str())
    {
        tracing::info!(inventory = %object, owner = ?inventory.owner, "not adopting: it is not the inventory of {}", theirs.describe());
        return Ok(None);
    }
    Ok(Some(Stored {
        version: version_of(&cm),
        inventory,
    }))
}

/// The inventory ConfigMap a [`Legacy`] adoption reads and finally removes.
fn legacy_inventory_name(owner: &Owner, legacy: &Legacy) -> Result<String> {
    match crate::ownership::parse_release_handover_key(&legacy.app) {
        Some(release) => Ok(Owner::release(&release, &owner.namespace)?.inventory_name()),
        None => Ok(Inventory::name(&legacy.app)),
    }
}

fn conflict(object: &str, expected: Option<&Version>, now: Option<&ConfigMap>) -> Error {
    let now = now.map(version_of);
    let message = match (expected, now) {
        (None, Some(now)) => format!(
            "was created by another writer (resourceVersion {}) while this run was applying; nothing was overwritten. Two ferry runs for one app ran at once (two agents during a leader hand-over, two pipelines); the next run starts from the new state",
            now.resource_version
        ),
        (Some(expected), Some(now)) => format!(
            "was changed by another writer since this run read it (resourceVersion {} → {}); nothing was overwritten. Two ferry runs for one app ran at once (two agents during a leader hand-over, two pipelines); the next run starts from the new state",
            expected.resource_version, now.resource_version
        ),
        (Some(expected), None) => format!(
            "was deleted by another writer since this run read it (resourceVersion {}); nothing was overwritten. Two ferry runs for one app ran at once; the next run starts from the new state",
            expected.resource_version
        ),
        (None, None) => "changed under this run; nothing was overwritten".to_string(),
    };
    Error::Conflict {
        object: object.to_string(),
        message,
    }
}

/// Write the inventory ConfigMap with optimistic concurrency: create it when `version` is
/// `None` (failing if it exists), else replace it presenting `version` as the resourceVersion
/// precondition (failing if anyone wrote it since). On success `version` is the new one.
pub async fn write(
    client: &Client,
    owner: &Owner,
    inventory: &Inventory,
    version: &mut Option<Version>,
) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &owner.namespace);
    let name = owner.inventory_name();
    let object = describe(&owner.namespace, &name);
    let mut inventory = inventory.clone();
    inventory.app = owner.app.clone();
    inventory.owner = Some(owner.id());
    let (data, binary_data) = encode(&inventory, &object)?;
    let mut annotations = BTreeMap::from([(ANNOTATION_OWNER.to_string(), owner.id())]);
    if let Some(revision) = &inventory.revision {
        annotations.insert(ANNOTATION_REVISION.to_string(), revision.clone());
    }
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(owner.namespace.clone()),
            labels: Some(BTreeMap::from([
                (LABEL_INVENTORY.to_string(), owner.app.clone()),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "ferry".to_string(),
                ),
            ])),
            annotations: Some(annotations),
            resource_version: version.as_ref().map(|v| v.resource_version.clone()),
            ..Default::default()
        },
        data,
        binary_data,
        ..Default::default()
    };
    let params = PostParams {
        field_manager: Some(crate::FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    let written = match version {
        None => api.create(&params, &cm).await,
        Some(_) => api.replace(&name, &params, &cm).await,
    };
    match written {
        Ok(cm) => {
            *version = Some(version_of(&cm));
            Ok(())
        }
        // 409: AlreadyExists on create, Conflict on a stale resourceVersion; 404: deleted.
        Err(err) if matches!(status_code(&err), Some(409) | Some(404)) => {
            let now = get(client, &owner.namespace, &name).await.ok().flatten();
            Err(conflict(&object, version.as_ref(), now.as_ref()))
        }
        Err(err) => Err(Error::Object {
            object,
            message: format!("cannot write: {}", describe_kube_error(&err)),
        }),
    }
}

/// Delete an inventory ConfigMap by name, only if it is still the version that was read.
async fn delete_named(
    client: &Client,
    namespace: &str,
    name: &str,
    version: Option<&Version>,
) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams {
        preconditions: version.map(|v| Preconditions {
            uid: Some(v.uid.clone()).filter(|u| !u.is_empty()),
            resource_version: Some(v.resource_version.clone()).filter(|r| !r.is_empty()),
        }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(err) if status_code(&err) == Some(404) => Ok(()),
        Err(err) if status_code(&err) == Some(409) => {
            let now = get(client, namespace, name).await.ok().flatten();
            Err(conflict(&describe(namespace, name), version, now.as_ref()))
        }
        Err(err) => Err(Error::Object {
            object: describe(namespace, name),
            message: format!("cannot delete: {}", describe_kube_error(&err)),
        }),
    }
}

/// Delete the inventory ConfigMap (after `ferry delete` removed the objects), only if nobody
/// wrote it since `version` was read.
pub async fn delete(client: &Client, owner: &Owner, version: Option<&Version>) -> Result<()> {
    delete_named(client, &owner.namespace, &owner.inventory_name(), version).await
}

/// Delete the pre-upgrade inventory once its content lives in the new one. `version`: as read by
/// [`read_legacy`] (`None` on a later run that only finishes a migration: then it is re-read and
/// removed only if it still verifies).
pub async fn delete_legacy(
    client: &Client,
    owner: &Owner,
    legacy: &Legacy,
    version: Option<&Version>,
) -> Result<()> {
    let version = match version {
        Some(v) => v.clone(),
        None => match read_legacy(client, owner, legacy).await? {
            Some(stored) => stored.version,
            None => return Ok(()),
        },
    };
    delete_named(
        client,
        &owner.namespace,
        &legacy_inventory_name(owner, legacy)?,
        Some(&version),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ObjectKey;
    use crate::inventory::Entry;

    fn inventory_of(objects: usize) -> Inventory {
        Inventory {
            app: "bench".into(),
            source: "apps/".into(),
            applied_at: "2026-12-03T11:00:00Z".into(),
            objects: (0..objects)
                .map(|i| Entry {
                    api_version: "v1".into(),
                    key: ObjectKey {
                        group: String::new(),
                        kind: "ConfigMap".into(),
                        namespace: Some("team-a".into()),
                        name: format!("app-{i:05}-config"),
                    },
                    fingerprint: Some(format!("{}", 100_000 + i)),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn config_map((data, binary_data): Encoded) -> ConfigMap {
        ConfigMap {
            data,
            binary_data,
            ..Default::default()
        }
    }

    #[test]
    fn a_small_inventory_stays_readable_json() {
        let inventory = inventory_of(10);
        let cm = config_map(encode(&inventory, "cm").unwrap());
        assert!(cm.binary_data.is_none());
        assert!(cm.data.as_ref().unwrap()[DATA_KEY].contains("app-00009-config"));
        assert_eq!(decode(&cm).unwrap(), inventory);
    }

    #[test]
    fn ten_thousand_objects_are_stored_compressed_under_the_configmap_limit() {
        let inventory = inventory_of(10_000);
        let plain = serde_json::to_string(&inventory).unwrap().len();
        assert!(
            plain > PLAIN_LIMIT,
            "the test needs a large inventory ({plain} bytes)"
        );
        let cm = config_map(encode(&inventory, "cm").unwrap());
        assert!(cm.data.is_none());
        let stored = cm.binary_data.as_ref().unwrap()[COMPRESSED_KEY].0.len();
        assert!(stored < STORED_LIMIT / 4, "{stored} bytes compressed");
        assert_eq!(decode(&cm).unwrap(), inventory);
    }

    #[test]
    fn an_app_too_large_even_compressed_is_refused_naming_the_configmap() {
        // Fingerprints that do not compress: random-looking 40-hex strings.
        let mut inventory = inventory_of(40_000);
        for (i, entry) in inventory.objects.iter_mut().enumerate() {
            let mut state = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut hex = String::new();
            for _ in 0..5 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                hex.push_str(&format!("{state:016x}"));
            }
            entry.fingerprint = Some(hex);
        }
        let err = encode(&inventory, "ConfigMap team-a/ferry-inventory-bench").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("team-a/ferry-inventory-bench"), "{text}");
        assert!(
            text.contains("40000 objects") && text.contains("Split the app"),
            "{text}"
        );
    }

    #[test]
    fn a_hand_written_gzip_bomb_is_refused() {
        // 80 MiB of zeros compress to ~80 KB: more than a tenant-written inventory may inflate to.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1024 * 1024];
        for _ in 0..80 {
            gz.write_all(&zeros).unwrap();
        }
        let cm = config_map((
            None,
            Some(BTreeMap::from([(
                COMPRESSED_KEY.to_string(),
                ByteString(gz.finish().unwrap()),
            )])),
        ));
        assert!(matches!(decode(&cm), Err(DecodeError::Compressed(_))));
        let garbage = config_map((
            None,
            Some(BTreeMap::from([(
                COMPRESSED_KEY.to_string(),
                ByteString(b"not gzip".to_vec()),
            )])),
        ));
        assert!(matches!(decode(&garbage), Err(DecodeError::Compressed(_))));
        assert!(matches!(
            decode(&ConfigMap::default()),
            Err(DecodeError::Missing)
        ));
    }
}
