//! The one place that decides a ferry object's kstatus conditions (`Reconciling`, `Stalled`,
//! `Ready`) from the outcome of a reconcile; every controller of the agent calls [`set_outcome`].
//!
//! The conventions (kstatus, as Flux follows them), so that `kubectl wait`, Flux, Argo CD and
//! other kstatus readers judge ferry objects right:
//!
//! | outcome | `Reconciling` | `Stalled` | `Ready` | kstatus says |
//! |---|---|---|---|---|
//! | [`Outcome::Progressing`] (working on a new generation or revision) | `True` | — | `Unknown` | InProgress |
//! | [`Outcome::Retrying`] (failed, retrying may help: network, a source not ready yet, apply or health failure) | `True` (`ProgressingWithRetry`) | — | `False` | InProgress |
//! | [`Outcome::Stalled`] (failed, only a change can help: invalid spec, render error, refused reference) | — | `True` | `False` | Failed |
//! | [`Outcome::Ready`] | — | — | `True` | Current |
//!
//! `Ready` is decided last and kept last in the list (readers that show one condition show the
//! summary), every condition carries the generation it describes, and a condition whose status
//! did not change keeps its `lastTransitionTime`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::common::{READY, RECONCILING, STALLED, find_condition, remove_condition};

/// Reason on `Reconciling=True` while a new generation or revision is being worked on.
pub const PROGRESSING: &str = "Progressing";
/// Reason on `Reconciling=True` after a failure that is retried (Flux's name).
pub const PROGRESSING_WITH_RETRY: &str = "ProgressingWithRetry";

/// What a reconcile came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// Work has started on a new generation or revision; nothing is known yet.
    Progressing { message: &'a str },
    /// Done: the object is what its spec asks for.
    Ready { reason: &'a str, message: &'a str },
    /// Failed, and the next attempt may succeed without any change (a network error, a source
    /// or dependency not ready yet, an object not healthy yet, a refused write the tenant may
    /// still be granted).
    Retrying { reason: &'a str, message: &'a str },
    /// Failed, and only a change of the object or its input can fix it (invalid spec, a
    /// revision that does not render, a refused cross-namespace reference).
    Stalled { reason: &'a str, message: &'a str },
}

/// Set the three conditions for `outcome`, with `generation` as their observedGeneration.
pub fn set_outcome(conditions: &mut Vec<Condition>, outcome: Outcome<'_>, generation: Option<i64>) {
    let put = |conditions: &mut Vec<Condition>,
               type_: &str,
               status: &str,
               reason: &str,
               message: &str| {
        put_condition(conditions, type_, status, reason, message, generation)
    };
    match outcome {
        Outcome::Progressing { message } => {
            put(conditions, RECONCILING, "True", PROGRESSING, message);
            remove_condition(conditions, STALLED);
            put(conditions, READY, "Unknown", PROGRESSING, message);
        }
        Outcome::Ready { reason, message } => {
            remove_condition(conditions, RECONCILING);
            remove_condition(conditions, STALLED);
            put(conditions, READY, "True", reason, message);
        }
        Outcome::Retrying { reason, message } => {
            put(
                conditions,
                RECONCILING,
                "True",
                PROGRESSING_WITH_RETRY,
                message,
            );
            remove_condition(conditions, STALLED);
            put(conditions, READY, "False", reason, message);
        }
        Outcome::Stalled { reason, message } => {
            remove_condition(conditions, RECONCILING);
            put(conditions, STALLED, "True", reason, message);
            put(conditions, READY, "False", reason, message);
        }
    }
    // Ready last.
    if let Some(i) = conditions.iter().position(|c| c.type_ == READY) {
        let ready = conditions.remove(i);
        conditions.push(ready);
    }
}

/// The outcome for a failure: stalled or retrying.
pub fn failure<'a>(reason: &'a str, message: &'a str, stalled: bool) -> Outcome<'a> {
    if stalled {
        Outcome::Stalled { reason, message }
    } else {
        Outcome::Retrying { reason, message }
    }
}

/// What a kstatus reader concludes from the conditions (for tests and `ferry` itself): the
/// same order as kstatus' generic rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    InProgress,
    Failed,
    Current,
}

/// Read conditions the way kstatus does for a custom resource whose status is current with its
/// generation: `Reconciling=True` is InProgress, `Stalled=True` Failed, else `Ready` decides
/// (`True` or absent: Current).
pub fn read(conditions: &[Condition]) -> Reading {
    let is_true = |type_| find_condition(conditions, type_).is_some_and(|c| c.status == "True");
    if is_true(RECONCILING) {
        Reading::InProgress
    } else if is_true(STALLED) {
        Reading::Failed
    } else {
        match find_condition(conditions, READY) {
            Some(c) if c.status != "True" => Reading::InProgress,
            _ => Reading::Current,
        }
    }
}

fn put_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
) {
    let transition = match find_condition(conditions, type_) {
        Some(old) if old.status == status => old.last_transition_time.clone(),
        _ => Time(k8s_openapi::jiff::Timestamp::now()),
    };
    let condition = Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation,
        last_transition_time: transition,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(slot) => *slot = condition,
        None => conditions.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(conditions: &[Condition], type_: &str) -> Option<String> {
        find_condition(conditions, type_).map(|c| c.status.clone())
    }

    #[test]
    fn each_outcome_reads_as_kstatus_expects() {
        let mut c = Vec::new();
        set_outcome(
            &mut c,
            Outcome::Progressing {
                message: "applying r2",
            },
            Some(2),
        );
        assert_eq!(read(&c), Reading::InProgress);
        assert_eq!(status_of(&c, READY).as_deref(), Some("Unknown"));

        set_outcome(
            &mut c,
            Outcome::Retrying {
                reason: "SourceNotReady",
                message: "git server unreachable",
            },
            Some(2),
        );
        assert_eq!(
            read(&c),
            Reading::InProgress,
            "a retried failure is not healthy"
        );
        let reconciling = find_condition(&c, RECONCILING).unwrap();
        assert_eq!(reconciling.reason, PROGRESSING_WITH_RETRY);
        assert_eq!(status_of(&c, READY).as_deref(), Some("False"));
        assert_eq!(status_of(&c, STALLED), None);

        set_outcome(
            &mut c,
            Outcome::Stalled {
                reason: "RenderFailed",
                message: "bad yaml",
            },
            Some(3),
        );
        assert_eq!(read(&c), Reading::Failed);
        assert_eq!(status_of(&c, RECONCILING), None);
        assert!(c.iter().all(|c| c.observed_generation == Some(3)));

        set_outcome(
            &mut c,
            Outcome::Ready {
                reason: "ReconciliationSucceeded",
                message: "applied r3",
            },
            Some(3),
        );
        assert_eq!(read(&c), Reading::Current);
        assert_eq!(c.len(), 1, "only Ready is left: {c:?}");
    }

    #[test]
    fn ready_is_last_and_keeps_its_transition_time() {
        let mut c = Vec::new();
        set_outcome(
            &mut c,
            Outcome::Ready {
                reason: "A",
                message: "one",
            },
            Some(1),
        );
        let first = c[0].last_transition_time.clone();
        set_outcome(&mut c, failure("Broken", "render", true), Some(1));
        assert_eq!(c.last().map(|c| c.type_.as_str()), Some(READY));
        set_outcome(&mut c, failure("Net", "timeout", false), Some(1));
        assert_eq!(c.last().map(|c| c.type_.as_str()), Some(READY));
        assert_eq!(c.len(), 2);
        set_outcome(
            &mut c,
            Outcome::Ready {
                reason: "A",
                message: "two",
            },
            Some(1),
        );
        assert_ne!(c[0].last_transition_time, first, "False -> True moved it");
        let again = c[0].last_transition_time.clone();
        set_outcome(
            &mut c,
            Outcome::Ready {
                reason: "B",
                message: "three",
            },
            Some(1),
        );
        assert_eq!(c[0].last_transition_time, again, "True -> True keeps it");
    }
}
