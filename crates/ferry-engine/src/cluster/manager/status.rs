//! Status: the health of an inventory's objects as they are now, one read each, with conditions
//! and recent events for the ones that are neither Current nor gone.

use futures::StreamExt;

use super::ResourceManager;
use super::delete::Candidate;
use super::wait::{self, Target};
use crate::health::HealthState;
use crate::report::ObjectStatus;

impl ResourceManager {
    /// The health of every candidate, in their order.
    pub async fn status(&self, candidates: Vec<Candidate>) -> Vec<ObjectStatus> {
        let client = self.client();
        futures::stream::iter(candidates)
            .map(|c| async move {
                let target = Target {
                    key: c.entry.key.clone(),
                    kind: c.kind,
                };
                let mut health = wait::check(client, &target, self.health_checks()).await;
                if !matches!(health.state, HealthState::Current | HealthState::NotFound) {
                    let detail = wait::explain(client, &target).await;
                    if !detail.is_empty() {
                        health.message = format!("{}\n{detail}", health.message);
                    }
                }
                ObjectStatus {
                    key: c.entry.key,
                    api_version: c.entry.api_version,
                    health,
                }
            })
            .buffered(self.concurrency())
            .collect()
            .await
    }
}
