//! Progress callbacks for long runs: the CLI draws a bar, the agent logs or ignores them. The
//! stages report here; nothing here knows who listens.

use crate::ObjectKey;
use crate::report::Action;

/// Receives [`ProgressEvent`]s. `Send + Sync`: events come from concurrent requests, and the
/// engine's futures stay `Send` with a `&dyn Progress` in them.
pub trait Progress: Send + Sync {
    fn event(&self, event: ProgressEvent<'_>);
}

#[derive(Debug, Clone, Copy)]
pub enum ProgressEvent<'a> {
    /// The plan is ready: `total` objects to apply.
    Planned {
        total: usize,
    },
    Applied {
        key: &'a ObjectKey,
        action: Action,
    },
    Waiting {
        pending: usize,
        total: usize,
    },
    Pruned {
        key: &'a ObjectKey,
        action: Action,
    },
}

/// Ignores progress.
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _event: ProgressEvent<'_>) {}
}
