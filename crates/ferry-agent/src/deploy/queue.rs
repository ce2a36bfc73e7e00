//! One deploy at a time per Release: a request waits while another for the same Release runs,
//! and a newer request supersedes one that is still waiting (its caller is told at once, and
//! its commit is never applied). The running request is never interrupted: its apply finishes
//! and reports, then the newest waiting request runs.
//!
//! This orders the requests one agent replica receives. Across replicas the Release's
//! `ferry.dev/deploy-request` annotation is the arbiter (last writer wins, and the handler
//! whose request was overwritten reports it superseded).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedMutexGuard, watch};

/// Per-Release lanes.
#[derive(Default)]
pub struct DeployQueue {
    lanes: Mutex<HashMap<(String, String), Lane>>,
}

#[derive(Clone)]
struct Lane {
    /// Held by the running request.
    running: Arc<tokio::sync::Mutex<()>>,
    /// The ticket of the newest request; a waiter whose ticket is older gives up.
    newest: watch::Sender<u64>,
}

/// The right to deploy a Release; the next request runs when it is dropped.
#[derive(Debug)]
pub struct Turn {
    _running: OwnedMutexGuard<()>,
}

/// A newer request for the same Release arrived while this one waited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "superseded: a newer deploy request for this Release arrived while this one waited; this commit was not applied"
)]
pub struct Superseded;

impl DeployQueue {
    /// Wait for the Release's turn. Returns at once with a turn when nothing runs, waits while
    /// another request runs, and fails as soon as a newer request enters behind this one.
    /// `on_wait` is called once if the request has to wait (to tell the caller it is queued).
    pub async fn enter(
        &self,
        namespace: &str,
        release: &str,
        on_wait: impl FnOnce(),
    ) -> Result<Turn, Superseded> {
        let (lane, ticket) = {
            let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
            let lane = lanes
                .entry((namespace.to_string(), release.to_string()))
                .or_insert_with(|| Lane {
                    running: Arc::default(),
                    newest: watch::channel(0).0,
                })
                .clone();
            let ticket = *lane.newest.borrow() + 1;
            lane.newest.send_replace(ticket);
            (lane, ticket)
        };
        if let Ok(guard) = lane.running.clone().try_lock_owned() {
            return Ok(Turn { _running: guard });
        }
        on_wait();
        let mut newest = lane.newest.subscribe();
        let acquire = lane.running.clone().lock_owned();
        tokio::pin!(acquire);
        loop {
            tokio::select! {
                guard = &mut acquire => {
                    // Between the lock opening and this task running, a newer one may have come.
                    if *newest.borrow() != ticket {
                        return Err(Superseded);
                    }
                    return Ok(Turn { _running: guard });
                }
                changed = newest.changed() => {
                    if changed.is_err() || *newest.borrow_and_update() != ticket {
                        return Err(Superseded);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn requests_for_one_release_run_one_at_a_time_and_the_newest_waiter_wins() {
        let queue = Arc::new(DeployQueue::default());
        let first = queue.enter("ns", "web", || {}).await.expect("runs at once");
        // Another Release is not held up.
        let other = queue.enter("ns", "db", || {}).await.expect("other release");
        drop(other);
        let (waited_tx, mut waited_rx) = tokio::sync::mpsc::unbounded_channel();
        let q = queue.clone();
        let tx = waited_tx.clone();
        let second = tokio::spawn(async move {
            q.enter("ns", "web", move || {
                let _ = tx.send(2);
            })
            .await
            .map(|_| ())
        });
        assert_eq!(
            waited_rx.recv().await,
            Some(2),
            "the second request is told it waits"
        );
        let q = queue.clone();
        let tx = waited_tx.clone();
        let third = tokio::spawn(async move {
            let turn = q
                .enter("ns", "web", move || {
                    let _ = tx.send(3);
                })
                .await;
            turn.map(|t| {
                drop(t);
                "ran"
            })
        });
        assert_eq!(waited_rx.recv().await, Some(3));
        // The second is superseded by the third while the first still runs.
        let second = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("second answered at once")
            .expect("task");
        assert_eq!(second, Err(Superseded));
        assert!(!third.is_finished(), "the third waits for the first");
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("third runs once the first is done")
            .expect("task");
        assert_eq!(third, Ok("ran"));
        // Free again.
        let again = queue.enter("ns", "web", || panic!("must not wait")).await;
        assert!(again.is_ok());
    }
}
