//! The one result type of the manager's verbs: what apply, delete and the hook phases did to
//! each object — its report line, the fingerprint ferry saw after writing it, and whether it
//! stays in the app's inventory.

use std::collections::HashMap;

use crate::ObjectKey;
use crate::report::{Action, ObjectResult};

/// What one verb did to one object.
#[derive(Debug, Clone)]
pub struct Change {
    pub key: ObjectKey,
    /// The report line; `None` when there is nothing to report (a delete of an object that was
    /// already gone).
    pub result: Option<ObjectResult>,
    /// The live fingerprint after a real write (apply), recorded in the inventory so that the
    /// next run can tell whether anyone wrote the object since.
    pub fingerprint: Option<String>,
    /// Whether the object stays in the inventory: applied objects do; a delete keeps what it
    /// did not delete (kept by policy, failed, dry run).
    pub stays: bool,
}

impl Change {
    pub fn action(&self) -> Option<Action> {
        self.result.as_ref().map(|r| r.action)
    }

    pub fn failed(&self) -> bool {
        self.action() == Some(Action::Failed)
    }
}

/// The changes of one verb call, in the order they finished.
#[derive(Debug, Clone, Default)]
pub struct ChangeSet {
    pub changes: Vec<Change>,
}

impl ChangeSet {
    /// Whether any object failed.
    pub fn failed(&self) -> bool {
        self.changes.iter().any(Change::failed)
    }

    /// The report lines.
    pub fn results(&self) -> impl Iterator<Item = &ObjectResult> {
        self.changes.iter().filter_map(|c| c.result.as_ref())
    }

    /// The changes by object.
    pub fn into_map(self) -> HashMap<ObjectKey, Change> {
        self.changes
            .into_iter()
            .map(|c| (c.key.clone(), c))
            .collect()
    }
}

impl FromIterator<Change> for ChangeSet {
    fn from_iter<I: IntoIterator<Item = Change>>(iter: I) -> Self {
        Self {
            changes: iter.into_iter().collect(),
        }
    }
}

impl Extend<Change> for ChangeSet {
    fn extend<I: IntoIterator<Item = Change>>(&mut self, iter: I) {
        self.changes.extend(iter);
    }
}
