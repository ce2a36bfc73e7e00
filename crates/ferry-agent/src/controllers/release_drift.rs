//! Drift control of a Release: what the drift watches are told it applied, the policy
//! (`spec.drift`: correct or only detect, JSON pointers to ignore), how drift is reported
//! (status, Events, the `ferry_release_drift_objects` metric), and when a Release at rest needs
//! no API request at all (issue 17).

use std::collections::HashMap;

use ferry_api::drift::{
    DRIFT_OBJECTS_LIMIT, DRIFT_PATHS_LIMIT, DriftMode, DriftStatus, DriftedObject,
};
use ferry_api::{Release, ReleaseStatus};
use ferry_engine::Manifest;
use ferry_engine::pipeline::ApplyOptions;
use ferry_engine::pipeline::drift::{IgnoreRule, ObjectDrift, drift};
use kube::runtime::events::EventType;

use crate::context::{Context, Key, key_of, owner_id, target_namespace};
use crate::drift::{AppliedRecord, MetadataIntent, ObjectId, ReleaseLabels, SignalMark};

/// The labels and annotations a Release applies to each object: the rendered ones plus the
/// ownership annotation the engine stamps (an edit of either is drift).
/// An object without a namespace is recorded under the target namespace (where the engine puts
/// it when its kind is namespaced) and without one (when it is cluster-scoped).
pub fn intents_of(
    release: &Release,
    manifests: &[Manifest],
) -> Vec<(ObjectId, std::sync::Arc<MetadataIntent>)> {
    let owner = owner_id(release);
    let target = target_namespace(release);
    manifests
        .iter()
        .flat_map(|m| {
            let (group, _) = split_api_version(m.api_version());
            let meta = &m.object.metadata;
            let mut annotations = meta.annotations.clone().unwrap_or_default();
            if let Some(owner) = &owner {
                annotations.insert(
                    ferry_engine::ownership::ANNOTATION_OWNER.to_string(),
                    owner.clone(),
                );
            }
            let intent = std::sync::Arc::new(MetadataIntent {
                labels: meta
                    .labels
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                annotations: annotations.into_iter().collect(),
            });
            let namespaces = match meta.namespace.as_deref() {
                Some(ns) if !ns.is_empty() => vec![Some(ns)],
                _ => vec![Some(target.as_str()), None],
            };
            namespaces
                .into_iter()
                .map(|ns| (ObjectId::new(group, m.kind(), ns, m.name()), intent.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `apps/v1` → (`apps`, `v1`); `v1` → (``, `v1`).
fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

/// `spec.drift`, checked: the mode and the ignore rules in the engine's terms (the engine's
/// one reading of a drift policy, shared with push apps' ferry.yaml `drift:`).
pub use ferry_engine::pipeline::drift::DriftPolicy as Policy;

/// Take the ignored fields out of the manifests of objects the Release applied before (they
/// exist: the fields are left to whoever else manages them, e.g. an HPA). A new object is
/// created with them, as the source says.
pub fn strip_ignored(release: &Release, manifests: &mut [Manifest], rules: &[IgnoreRule]) {
    ferry_engine::pipeline::drift::strip_ignored_applied(release, manifests, rules);
}

/// Whether the Release's render reads anything besides its source revision and its own spec:
/// values or variables from ConfigMaps and Secrets, a chart from a repository (a version range
/// moves without the source), kustomize remote bases. Such a Release is rendered and applied
/// at every interval, as before; only the others may rest.
pub fn reads_outside_inputs(release: &Release, app_dir: &std::path::Path) -> bool {
    let spec = serde_json::to_value(&release.spec).unwrap_or_default();
    let non_empty = |v: Option<&serde_json::Value>| {
        v.is_some_and(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
    };
    if non_empty(spec.get("valuesFrom"))
        || non_empty(spec.pointer("/postBuild/substituteFrom"))
        || non_empty(spec.pointer("/render/helm/chart/repo"))
        || non_empty(spec.pointer("/render/helm/chart/oci"))
        || spec.pointer("/render/kustomize/allowRemoteBases")
            == Some(&serde_json::Value::Bool(true))
    {
        return true;
    }
    match ferry_engine::render::config::AppConfig::load(app_dir) {
        Ok(None) => false,
        Ok(Some((_, config))) => {
            config
                .helm
                .as_ref()
                .and_then(|h| h.chart.as_ref())
                .is_some_and(|c| c.repo.is_some() || c.oci.is_some())
                || config
                    .kustomize
                    .as_ref()
                    .is_some_and(|k| k.allow_remote_bases)
        }
        // Unreadable here: the render will say why; do not rest on it.
        Err(_) => true,
    }
}

/// A hash of the Release's annotations (`ferry sync`, an adoption request change them).
pub fn annotations_hash(release: &Release) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    release.metadata.annotations.hash(&mut hasher);
    hasher.finish()
}

/// Whether the Release is at rest: its last successful apply (or drift check) in this process
/// was at this revision and generation with these annotations, no watched object of it sent a
/// drift signal since, no watch lost events, it is Ready, and nothing outside the source feeds
/// its render (see [`reads_outside_inputs`]) or its readiness (`spec.wait`: health can change
/// without a write). Then the interval needs no API request at all.
pub fn at_rest(release: &Release, ctx: &Context, revision: &str) -> bool {
    let key = key_of(release);
    let Some(record) = ctx
        .drift
        .applied
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned()
    else {
        return false;
    };
    let status = release.status.clone().unwrap_or_default();
    record.can_rest
        && record.uid == release.metadata.uid.clone().unwrap_or_default()
        && record.generation == release.metadata.generation
        && record.revision == revision
        && record.annotations == annotations_hash(release)
        && record.mark == ctx.drift.mark(&key)
        && !release.spec.wait
        && status.observed_generation == release.metadata.generation
        && ferry_api::common::is_ready(&status.conditions)
}

/// A digest of the rendered manifests (before the ignored fields are taken out, which depends
/// on what exists already): equal digests at the same generation (which covers `spec.drift`)
/// mean the Release would apply what it applied before.
pub fn digest(manifests: &[Manifest]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for m in manifests {
        serde_json::to_string(&m.object)
            .unwrap_or_default()
            .hash(&mut hasher);
    }
    hasher.finish()
}

/// Whether this reconcile would apply what the last apply (or check) in this process applied.
fn same_intent(release: &Release, ctx: &Context, digest: u64) -> Option<AppliedRecord> {
    ctx.drift
        .applied
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key_of(release))
        .filter(|r| {
            r.uid == release.metadata.uid.clone().unwrap_or_default()
                && r.generation == release.metadata.generation
                && r.digest == digest
        })
        .cloned()
}

/// What a drift check decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    /// `detect`: the drift (if any) was reported; nothing is applied.
    Reported,
    /// `correct`: the apply that follows reverts it (and the finding says what it was).
    Correct,
}

/// The drift check before an apply of the same intent as last time (see [`Checked`]): in
/// `detect` mode always (that is the job), in `correct` mode only after a drift signal (an
/// interval of a Release that cannot rest just re-applies, as before). `None`: no check.
#[allow(clippy::too_many_arguments)]
pub async fn check(
    release: &Release,
    ctx: &Context,
    client: &kube::Client,
    manifests: &[Manifest],
    options: &ApplyOptions,
    policy: &Policy,
    revision: &str,
    digest: u64,
) -> Option<Result<Checked, String>> {
    let key = key_of(release);
    let mark = ctx.drift.mark(&key);
    let record = same_intent(release, ctx, digest)?;
    if policy.mode == DriftMode::Correct && record.mark == mark {
        return None;
    }
    let report = match drift(client, manifests.to_vec(), options, &policy.rules).await {
        Ok(report) => report,
        Err(e) => {
            return Some(Err(format!(
                "cannot compare the objects with {revision}: {e}"
            )));
        }
    };
    tracing::debug!(release = %format!("{}/{}", key.0, key.1), objects = report.objects.len(), reads = report.requests.reads, "drift check");
    ctx.drift.findings.put(
        release,
        Finding {
            mode: policy.mode,
            revision: revision.to_string(),
            objects: report.objects,
        },
    );
    Some(Ok(match policy.mode {
        DriftMode::Detect => {
            // Checked at this mark: the next interval rests until the next signal.
            record_at(ctx, release, AppliedRecord { mark, ..record });
            Checked::Reported
        }
        DriftMode::Correct => Checked::Correct,
    }))
}

fn record_at(ctx: &Context, release: &Release, record: AppliedRecord) {
    ctx.drift
        .applied
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key_of(release), record);
}

/// Remember a successful apply. `can_rest` false (a kind not watched, inputs outside the
/// source): the intent is remembered (drift checks compare it), but every interval still does
/// the full work.
pub fn record(
    ctx: &Context,
    release: &Release,
    revision: &str,
    digest: u64,
    mark: SignalMark,
    can_rest: bool,
) {
    record_at(
        ctx,
        release,
        AppliedRecord {
            uid: release.metadata.uid.clone().unwrap_or_default(),
            generation: release.metadata.generation,
            revision: revision.to_string(),
            annotations: annotations_hash(release),
            digest,
            mark,
            can_rest,
        },
    );
}

/// Forget a Release (a failed apply, or deletion): its next reconcile does the full work.
pub fn forget(ctx: &Context, release: &Release) {
    ctx.drift
        .applied
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&key_of(release));
}

/// What the last drift check found, for the status write that follows (`None`: no check ran
/// in this reconcile; the status keeps what it had unless a new revision was applied).
#[derive(Debug, Clone)]
pub struct Finding {
    pub mode: DriftMode,
    pub revision: String,
    pub objects: Vec<ObjectDrift>,
}

/// The per-reconcile hand-off from the decision to the status write.
#[derive(Default)]
pub struct Findings(std::sync::Mutex<HashMap<Key, Finding>>);

impl Findings {
    pub fn put(&self, release: &Release, finding: Finding) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key_of(release), finding);
    }

    pub fn take(&self, release: &Release) -> Option<Finding> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key_of(release))
    }
}

/// `status.drift` from a finding: bounded (20 objects × 10 paths), with the full count.
pub fn drift_status(finding: &Finding) -> Option<DriftStatus> {
    if finding.objects.is_empty() {
        return None;
    }
    let objects = finding
        .objects
        .iter()
        .take(DRIFT_OBJECTS_LIMIT)
        .map(|o| DriftedObject {
            api_version: o.api_version.clone(),
            kind: o.key.kind.clone(),
            namespace: o.key.namespace.clone(),
            name: o.key.name.clone(),
            missing: o.missing,
            paths: o.paths.iter().take(DRIFT_PATHS_LIMIT).cloned().collect(),
            more_paths: o.paths.len().saturating_sub(DRIFT_PATHS_LIMIT) as u32,
        })
        .collect();
    Some(DriftStatus {
        mode: finding.mode.as_str().to_string(),
        count: finding.objects.len() as u32,
        revision: Some(finding.revision.clone()),
        objects,
    })
}

/// One line for an Event: the first objects and their first fields.
pub fn describe(drift: &DriftStatus) -> String {
    let listed: Vec<String> = drift
        .objects
        .iter()
        .take(5)
        .map(|o| {
            let object = match &o.namespace {
                Some(ns) => format!("{} {ns}/{}", o.kind, o.name),
                None => format!("{} {}", o.kind, o.name),
            };
            if o.missing {
                format!("{object} (deleted)")
            } else {
                let more = o.paths.len().saturating_sub(3) + o.more_paths as usize;
                let mut fields = o
                    .paths
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                if more > 0 {
                    fields.push_str(&format!(" and {more} more"));
                }
                format!("{object} ({fields})")
            }
        })
        .collect();
    let more = (drift.count as usize).saturating_sub(listed.len());
    let mut note = format!(
        "{} object(s) differ from {}: {}",
        drift.count,
        drift.revision.as_deref().unwrap_or("the source"),
        listed.join("; ")
    );
    if more > 0 {
        note.push_str(&format!("; and {more} more"));
    }
    note
}

/// Put this reconcile's finding into the status about to be written, with its Event and
/// metrics. `applied_new`: a new revision or spec was applied (any old finding is stale).
pub fn update_status(
    ctx: &Context,
    release: &Release,
    status: &mut ReleaseStatus,
    events: &mut Vec<(EventType, &'static str, String)>,
    applied_new: bool,
) {
    let (ns, name) = key_of(release);
    let labels = ReleaseLabels {
        namespace: ns,
        name,
    };
    let Some(finding) = ctx.drift.findings.take(release) else {
        if applied_new && status.drift.take().is_some() {
            ctx.drift.drift_objects.get_or_create(&labels).set(0);
        }
        return;
    };
    let found = drift_status(&finding);
    let left = match finding.mode {
        DriftMode::Detect => finding.objects.len() as i64,
        DriftMode::Correct => 0,
    };
    ctx.drift.drift_objects.get_or_create(&labels).set(left);
    if finding.mode == DriftMode::Correct && !finding.objects.is_empty() {
        ctx.drift
            .corrected
            .get_or_create(&labels)
            .inc_by(finding.objects.len() as u64);
    }
    if let Some(drift) = &found
        && (finding.mode == DriftMode::Correct || status.drift.as_ref() != Some(drift))
    {
        let (type_, reason) = match finding.mode {
            DriftMode::Detect => (EventType::Warning, "DriftDetected"),
            DriftMode::Correct => (EventType::Normal, "DriftCorrected"),
        };
        events.push((type_, reason, describe(drift)));
    }
    status.drift = found;
}
