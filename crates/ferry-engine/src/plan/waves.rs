//! Sync waves of ordinary (non-hook) objects: which wave an object is in and the order of the
//! apply steps. Pure, no client.
//!
//! An object's wave is the integer in `ferry.dev/wave`, else Argo CD's
//! `argocd.argoproj.io/sync-wave` (may be negative; default 0). The main objects are applied as:
//!
//! 1. the foundation (Namespaces, CRDs), whatever their wave: every wave may need them, and they
//!    have no health to wait for beyond a CRD being Established;
//! 2. then wave by wave, lowest first; inside a wave by kind order (configuration, Services,
//!    workloads, admission), as Argo CD orders by phase, then wave, then kind.
//!
//! With waiting on (`--wait`, a Release's `spec.wait`), a wave must be healthy before the next
//! one is applied; a wave that is not stops the run there.

use crate::render::helm::hooks::ARGO_SYNC_WAVE;
use crate::{Error, Manifest, Result};

use super::{Phase, PlannedObject};

/// ferry's own wave annotation; wins over Argo CD's when both are set.
pub const ANNOTATION_WAVE: &str = "ferry.dev/wave";

/// The wave of a manifest: `ferry.dev/wave`, else `argocd.argoproj.io/sync-wave`, else 0. A value
/// that is not an integer is an error naming the object, the annotation and the file.
pub fn wave_of(manifest: &Manifest) -> Result<i32> {
    let annotations = manifest.object.metadata.annotations.as_ref();
    let Some((name, value)) = [ANNOTATION_WAVE, ARGO_SYNC_WAVE]
        .into_iter()
        .find_map(|a| annotations.and_then(|m| m.get(a)).map(|v| (a, v)))
    else {
        return Ok(0);
    };
    value.trim().parse::<i32>().map_err(|_| Error::Source {
        path: manifest.origin.file.clone(),
        message: format!(
            "{}: annotation {name} of {} must be an integer (like \"-1\", \"0\" or \"3\"), not {value:?}",
            super::origin_position(&manifest.origin),
            manifest.key()
        ),
    })
}

/// One apply step: a set of objects applied concurrently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Step {
    /// `None` for the foundation step, which comes before every wave.
    pub wave: Option<i32>,
    pub phase: Phase,
}

impl Step {
    /// The step an object is applied in.
    pub fn of(object: &PlannedObject) -> Self {
        Self {
            wave: (object.phase != Phase::Foundation).then_some(object.wave),
            phase: object.phase,
        }
    }
}

/// Group objects (in any order) into steps, in apply order; source order is kept inside a step.
pub fn steps<'a>(objects: &[&'a PlannedObject]) -> Vec<(Step, Vec<&'a PlannedObject>)> {
    let mut steps: std::collections::BTreeMap<Step, Vec<&'a PlannedObject>> = Default::default();
    for object in objects {
        steps.entry(Step::of(object)).or_default().push(*object);
    }
    steps.into_iter().collect()
}

/// The waves (not the foundation) that have objects, lowest first.
pub fn waves(objects: &[&PlannedObject]) -> Vec<i32> {
    let mut waves: Vec<i32> = objects
        .iter()
        .filter_map(|o| Step::of(o).wave)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    waves.dedup();
    waves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(annotations: &str) -> Manifest {
        let yaml = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  annotations: {{{annotations}}}\n"
        );
        crate::yaml::parse_bytes(yaml.as_bytes(), std::path::Path::new("app/cm.yaml"))
            .expect("parse")
            .remove(0)
    }

    #[test]
    fn the_wave_comes_from_ferry_then_argo_and_defaults_to_zero() {
        assert_eq!(wave_of(&manifest("")).unwrap(), 0);
        assert_eq!(
            wave_of(&manifest("argocd.argoproj.io/sync-wave: '-2'")).unwrap(),
            -2
        );
        assert_eq!(wave_of(&manifest("ferry.dev/wave: ' 3 '")).unwrap(), 3);
        assert_eq!(
            wave_of(&manifest(
                "ferry.dev/wave: '1', argocd.argoproj.io/sync-wave: '5'"
            ))
            .unwrap(),
            1,
            "ferry's annotation wins"
        );
    }

    #[test]
    fn an_invalid_wave_names_object_annotation_and_file() {
        for bad in ["'one'", "'1.5'", "''", "'99999999999'"] {
            let err = wave_of(&manifest(&format!("ferry.dev/wave: {bad}")))
                .expect_err(bad)
                .to_string();
            assert!(err.contains("ferry.dev/wave"), "{err}");
            assert!(err.contains("ConfigMap"), "{err}");
            assert!(err.contains("settings"), "{err}");
            assert!(err.contains("app/cm.yaml"), "{err}");
        }
        let err = wave_of(&manifest("argocd.argoproj.io/sync-wave: 'x'"))
            .expect_err("argo")
            .to_string();
        assert!(err.contains("argocd.argoproj.io/sync-wave"), "{err}");
    }
}
