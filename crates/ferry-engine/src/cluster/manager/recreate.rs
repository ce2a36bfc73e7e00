//! Re-creating an object whose immutable fields changed (a Job's template, a Service's
//! clusterIP, a Deployment's selector): server-side apply cannot change them, so the object is
//! deleted (foreground: its dependents go first), its deletion awaited (bounded by the run's
//! timeout), and it is applied again. Only on request, per object: the annotation
//! `ferry.dev/force: enabled` (or Flux's `kustomize.toolkit.fluxcd.io/force: enabled`), and
//! only an object that is provably this app's. Without the annotation the apply fails naming
//! the object, the immutable field(s) the API server named and the annotation to add.

use std::time::Duration;

use kube::api::{DeleteParams, Preconditions, PropagationPolicy};

use super::ResourceManager;
use super::live::LiveMeta;
use crate::cluster::api_for;
use crate::cluster::kube_error::describe_kube_error;
use crate::plan::PlannedObject;

/// ferry's opt-in to re-create an object when an immutable field changed.
pub const ANNOTATION_FORCE: &str = "ferry.dev/force";
/// Flux's opt-in, accepted as well.
pub const FLUX_ANNOTATION_FORCE: &str = "kustomize.toolkit.fluxcd.io/force";

/// Whether the source asks for re-creation on immutable changes.
pub fn force_requested(obj: &PlannedObject) -> bool {
    let annotations = obj.manifest.object.metadata.annotations.as_ref();
    [ANNOTATION_FORCE, FLUX_ANNOTATION_FORCE].iter().any(|a| {
        annotations
            .and_then(|m| m.get(*a))
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("enabled"))
    })
}

/// The fields an apply refusal says are immutable, or `None` when the refusal is about
/// something else. Kubernetes has no machine-readable code for immutability: its validation
/// reports 422 `Invalid` with causes whose message is one of apimachinery's fixed texts for it
/// (`FieldImmutableErrorMsg` "field is immutable", and the "may not change"/"cannot change"
/// texts of some kinds); those constants are what is matched, not free text.
pub fn immutable_fields(err: &kube::Error) -> Option<Vec<String>> {
    let kube::Error::Api(status) = err else {
        return None;
    };
    if status.code != 422 {
        return None;
    }
    let says_immutable = |text: &str| {
        [
            "field is immutable",
            "may not change",
            "cannot change",
            "cannot be changed",
        ]
        .iter()
        .any(|fixed| text.contains(fixed))
    };
    let causes = status
        .details
        .as_ref()
        .map(|d| d.causes.as_slice())
        .unwrap_or_default();
    let mut fields: Vec<String> = causes
        .iter()
        .filter(|c| says_immutable(&c.message))
        .map(|c| c.field.clone())
        .filter(|f| !f.is_empty())
        .collect();
    fields.dedup();
    if fields.is_empty() && !says_immutable(&status.message) {
        return None;
    }
    Some(fields)
}

/// The failure message without the opt-in: object, fields, and what to add.
pub fn explain_without_force(obj: &PlannedObject, fields: &[String], server: &str) -> String {
    let what = if fields.is_empty() {
        "an immutable field".to_string()
    } else {
        format!("immutable field(s) {}", fields.join(", "))
    };
    format!(
        "{} cannot be updated in place: {what} changed ({server}). To delete and re-create it, annotate it in the source with `{ANNOTATION_FORCE}: enabled` (or `{FLUX_ANNOTATION_FORCE}: enabled`)",
        obj.key
    )
}

impl ResourceManager {
    /// Delete `obj` (this exact live object: UID precondition; foreground propagation) and
    /// wait until it is gone, at most the run's timeout. The caller then applies it again.
    pub(super) async fn delete_for_recreate(
        &self,
        obj: &PlannedObject,
        live: &LiveMeta,
    ) -> Result<(), String> {
        if !self
            .owner()
            .owns(live.meta.labels.as_ref(), live.meta.annotations.as_ref())
        {
            return Err(format!(
                "{} is not provably {}'s (label and owner annotation); it is not deleted. Delete it yourself, or remove the change of its immutable field",
                obj.key,
                self.owner().describe()
            ));
        }
        let api = api_for(
            self.client(),
            &obj.resolved_kind(),
            obj.key.namespace.as_deref(),
        );
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            preconditions: Some(Preconditions {
                uid: live.meta.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&obj.key.name, &params).await {
            Ok(_) => {}
            Err(err) if crate::cluster::kube_error::status_code(&err) == Some(404) => return Ok(()),
            Err(err) => {
                return Err(format!(
                    "cannot delete it to re-create it: {}",
                    describe_kube_error(&err)
                ));
            }
        }
        let deadline = tokio::time::Instant::now() + self.timeout();
        let mut delay = Duration::from_millis(100);
        loop {
            match api.get_metadata_opt(&obj.key.name).await {
                Ok(None) => return Ok(()),
                Ok(Some(now)) if now.metadata.uid != live.meta.uid => return Ok(()),
                Ok(Some(_)) => {}
                Err(err) => return Err(describe_kube_error(&err)),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(format!(
                    "deleted to re-create it, but still present {}s later (finalizers, or dependents that do not go away); it is re-created on the next run once gone",
                    self.timeout().as_secs()
                ));
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::response::{Status, StatusCause, StatusDetails};

    fn refusal(code: u16, message: &str, causes: &[(&str, &str)]) -> kube::Error {
        let mut status = Status::failure(message, "Invalid");
        status.code = code;
        status.details = Some(StatusDetails {
            causes: causes
                .iter()
                .map(|(field, message)| StatusCause {
                    reason: "FieldValueInvalid".into(),
                    message: message.to_string(),
                    field: field.to_string(),
                })
                .collect(),
            name: String::new(),
            group: String::new(),
            kind: String::new(),
            uid: String::new(),
            retry_after_seconds: 0,
        });
        kube::Error::Api(status.boxed())
    }

    #[test]
    fn immutable_refusals_name_their_fields() {
        let err = refusal(
            422,
            "Job.batch \"migrate\" is invalid: spec.template: Invalid value: ...: field is immutable",
            &[("spec.template", "Invalid value: ...: field is immutable")],
        );
        assert_eq!(
            immutable_fields(&err),
            Some(vec!["spec.template".to_string()])
        );
        let err = refusal(
            422,
            "Service \"web\" is invalid: spec.clusterIPs[0]: Invalid value: []string{\"10.0.0.9\"}: may not change once set",
            &[(
                "spec.clusterIPs[0]",
                "Invalid value: ...: may not change once set",
            )],
        );
        assert_eq!(
            immutable_fields(&err),
            Some(vec!["spec.clusterIPs[0]".to_string()])
        );
        let other = refusal(
            422,
            "Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            &[(
                "spec.replicas",
                "Invalid value: -1: must be greater than or equal to 0",
            )],
        );
        assert_eq!(
            immutable_fields(&other),
            None,
            "other validation errors are not recreated"
        );
        let conflict = refusal(409, "field is immutable", &[]);
        assert_eq!(immutable_fields(&conflict), None, "only 422 refusals");
    }

    fn planned(annotations: &str) -> PlannedObject {
        let manifest = crate::yaml::parse_bytes(
            format!("apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate\n  annotations: {{{annotations}}}\n").as_bytes(),
            std::path::Path::new("job.yaml"),
        )
        .unwrap()
        .remove(0);
        let key = crate::ObjectKey {
            group: "batch".into(),
            kind: "Job".into(),
            namespace: Some("ns".into()),
            name: "migrate".into(),
        };
        PlannedObject {
            resource: kube::api::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
                "batch", "v1", "Job",
            )),
            namespaced: true,
            phase: crate::plan::Phase::Workload,
            wave: 0,
            hash: String::new(),
            key,
            manifest,
        }
    }

    #[test]
    fn force_is_opted_in_per_object_with_either_annotation() {
        assert!(!force_requested(&planned("")));
        assert!(force_requested(&planned("ferry.dev/force: enabled")));
        assert!(force_requested(&planned(
            "kustomize.toolkit.fluxcd.io/force: Enabled"
        )));
        assert!(!force_requested(&planned("ferry.dev/force: disabled")));
        let message = explain_without_force(
            &planned(""),
            &["spec.template".into()],
            "field is immutable",
        );
        assert!(message.contains("Job"), "{message}");
        assert!(message.contains("migrate"), "{message}");
        assert!(message.contains("spec.template"), "{message}");
        assert!(message.contains("ferry.dev/force: enabled"), "{message}");
    }
}
