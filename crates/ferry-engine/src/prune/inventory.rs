//! The inventory: a ConfigMap `ferry-inventory-<app>` in the app's namespace listing every object
//! the app applied (with the fingerprint ferry saw after its last write), the source, the git
//! revision and when it last changed. It lives in the app's namespace so a tenant identity that
//! may only write there can keep it; it holds no Secret values.
//!
//! Crash safety: before applying, the inventory is widened to the union of the previous and the
//! new object set; only after every object applied is it narrowed to the new set. A run that dies
//! half-way therefore leaves every object it may have created in the inventory, and the next run
//! prunes correctly.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch};
use serde::{Deserialize, Serialize};

use crate::apply::{Requests, describe_kube_error, status_code};
use crate::plan::Owner;
use crate::{Error, ObjectKey, Result};

pub const LABEL_INVENTORY: &str = "ferry.dev/inventory";
const DATA_KEY: &str = "inventory.json";

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
    pub app: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// RFC 3339 time of the last apply that changed the inventory.
    pub applied_at: String,
    pub objects: Vec<Entry>,
    /// Intent hashes of the hooks the last run ran successfully (see `apply::hooks`): a hook
    /// deleted by its delete policy is no longer in `objects`, but a changed hook must still
    /// be run again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookRecord>,
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

/// Read an app's inventory; `None` if the app was never applied here.
pub async fn read(
    client: &Client,
    owner: &Owner,
    requests: &Requests,
) -> Result<Option<Inventory>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &owner.namespace);
    let name = Inventory::name(&owner.app);
    requests.read();
    let cm = match api.get_opt(&name).await {
        Ok(cm) => cm,
        Err(err) => {
            return Err(Error::Object {
                object: format!("inventory ConfigMap {}/{name}", owner.namespace),
                message: format!("cannot read: {}", describe_kube_error(&err)),
            });
        }
    };
    let Some(cm) = cm else { return Ok(None) };
    let object = format!("inventory ConfigMap {}/{name}", owner.namespace);
    if cm
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_INVENTORY))
        != Some(&owner.app)
    {
        return Err(Error::Refused(format!(
            "{object} exists but is not a ferry inventory (label {LABEL_INVENTORY} missing); rename the app with --app or remove that ConfigMap"
        )));
    }
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(DATA_KEY))
        .ok_or_else(|| Error::Object {
            object: object.clone(),
            message: format!("has no {DATA_KEY}; it was edited by hand — delete it and re-apply"),
        })?;
    let inventory: Inventory = serde_json::from_str(text).map_err(|err| Error::Object {
        object,
        message: format!(
            "{DATA_KEY} is not valid: {err}; it was edited by hand — delete it and re-apply"
        ),
    })?;
    Ok(Some(inventory))
}

/// Write (server-side apply) the inventory ConfigMap.
pub async fn write(
    client: &Client,
    owner: &Owner,
    inventory: &Inventory,
    requests: &Requests,
) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &owner.namespace);
    let name = Inventory::name(&owner.app);
    let text = serde_json::to_string(inventory).map_err(anyhow::Error::from)?;
    let mut annotations = BTreeMap::new();
    if let Some(revision) = &inventory.revision {
        annotations.insert(
            crate::plan::ANNOTATION_REVISION.to_string(),
            revision.clone(),
        );
    }
    let cm = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": {
                LABEL_INVENTORY: owner.app,
                "app.kubernetes.io/managed-by": "ferry",
            },
            "annotations": annotations,
        },
        "data": { DATA_KEY: text },
    });
    requests.write();
    api.patch(
        &name,
        &crate::apply::apply_params().force(),
        &Patch::Apply(&cm),
    )
    .await
    .map_err(|err| Error::Object {
        object: format!("inventory ConfigMap {}/{name}", owner.namespace),
        message: format!("cannot write: {}", describe_kube_error(&err)),
    })?;
    Ok(())
}

/// Delete the inventory ConfigMap (after `ferry delete` removed the objects).
pub async fn delete(client: &Client, owner: &Owner, requests: &Requests) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &owner.namespace);
    let name = Inventory::name(&owner.app);
    requests.write();
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(err) if status_code(&err) == Some(404) => Ok(()),
        Err(err) => Err(Error::Object {
            object: format!("inventory ConfigMap {}/{name}", owner.namespace),
            message: format!("cannot delete: {}", describe_kube_error(&err)),
        }),
    }
}
