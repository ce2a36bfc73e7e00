//! Helm (and Argo CD) hook annotations → deploy phases. ferry renders hooks with the chart and
//! the apply pipeline runs them in order: `PreDeploy` objects are applied and awaited before
//! the rest, `PostDeploy` after. Test hooks and hooks for events ferry has no equivalent of
//! (delete, rollback) are dropped at render time.

use serde::Serialize;

use crate::Manifest;

pub const HELM_HOOK: &str = "helm.sh/hook";
pub const HELM_HOOK_WEIGHT: &str = "helm.sh/hook-weight";
pub const HELM_HOOK_DELETE_POLICY: &str = "helm.sh/hook-delete-policy";
pub const ARGO_HOOK: &str = "argocd.argoproj.io/hook";
pub const ARGO_HOOK_DELETE_POLICY: &str = "argocd.argoproj.io/hook-delete-policy";
pub const ARGO_SYNC_WAVE: &str = "argocd.argoproj.io/sync-wave";

/// When an object is applied relative to the rest of the app.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum HookPhase {
    /// `pre-install`/`pre-upgrade` (Argo `PreSync`): applied and awaited first.
    PreDeploy,
    /// Everything that is not a hook.
    #[default]
    Main,
    /// `post-install`/`post-upgrade` (Argo `PostSync`): applied after the rest is healthy.
    PostDeploy,
}

/// `helm.sh/hook-delete-policy` values (Argo's are mapped onto them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum HookDeletePolicy {
    /// Delete the previous object before creating the hook again (Helm's default).
    BeforeHookCreation,
    /// Delete once the hook succeeded (Job complete, or any other object applied).
    HookSucceeded,
    /// Delete if the hook failed.
    HookFailed,
}

/// What a manifest's hook annotations say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookClass {
    /// Not a hook.
    None,
    /// A hook to run in this phase.
    Deploy(HookPhase),
    /// A hook ferry does not run (test, delete, rollback, Argo `Skip`): dropped, with the reason.
    Dropped(String),
}

fn annotation<'a>(manifest: &'a Manifest, key: &str) -> Option<&'a str> {
    manifest
        .object
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// Classify by `helm.sh/hook` (comma-separated events) or `argocd.argoproj.io/hook`.
pub fn classify(manifest: &Manifest) -> HookClass {
    if let Some(events) = annotation(manifest, HELM_HOOK) {
        let events: Vec<&str> = events
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        if events
            .iter()
            .any(|e| matches!(*e, "pre-install" | "pre-upgrade"))
        {
            return HookClass::Deploy(HookPhase::PreDeploy);
        }
        if events
            .iter()
            .any(|e| matches!(*e, "post-install" | "post-upgrade"))
        {
            return HookClass::Deploy(HookPhase::PostDeploy);
        }
        if events.is_empty() {
            return HookClass::None;
        }
        return HookClass::Dropped(format!(
            "helm hook {:?} (ferry runs only install/upgrade hooks)",
            events.join(",")
        ));
    }
    if let Some(events) = annotation(manifest, ARGO_HOOK) {
        let events: Vec<&str> = events.split(',').map(str::trim).collect();
        if events.contains(&"PreSync") {
            return HookClass::Deploy(HookPhase::PreDeploy);
        }
        if events.contains(&"Sync") {
            return HookClass::Deploy(HookPhase::Main);
        }
        if events.contains(&"PostSync") {
            return HookClass::Deploy(HookPhase::PostDeploy);
        }
        return HookClass::Dropped(format!("argo hook {:?}", events.join(",")));
    }
    HookClass::None
}

/// The deploy phase of a manifest (`Main` for non-hooks).
pub fn phase(manifest: &Manifest) -> HookPhase {
    match classify(manifest) {
        HookClass::Deploy(phase) => phase,
        _ => HookPhase::Main,
    }
}

/// Which deploy a run is, in Helm's terms: the first install of an app (no inventory yet, or
/// one whose first install never finished) or an upgrade of an installed one. Helm runs
/// `pre-install`/`post-install` hooks only on the first, `pre-upgrade`/`post-upgrade` only on
/// the second; Argo CD's `PreSync`/`Sync`/`PostSync` run on every sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum DeployEvent {
    Install,
    Upgrade,
}

/// The phase `manifest` runs in on `event`: `Some(Main)` for non-hooks, the hook's phase when
/// one of its events is `event`, `None` for a hook that does not run on `event` (it is neither
/// applied nor pruned this time). A hook listing both (`pre-install,post-upgrade`) gets the
/// phase of the event that matches.
pub fn phase_for(manifest: &Manifest, event: DeployEvent) -> Option<HookPhase> {
    let Some(events) = annotation(manifest, HELM_HOOK) else {
        return match classify(manifest) {
            HookClass::Deploy(phase) => Some(phase),
            HookClass::None => Some(HookPhase::Main),
            HookClass::Dropped(_) => None,
        };
    };
    let (pre, post) = match event {
        DeployEvent::Install => ("pre-install", "post-install"),
        DeployEvent::Upgrade => ("pre-upgrade", "post-upgrade"),
    };
    let events: Vec<&str> = events.split(',').map(str::trim).collect();
    if events.iter().all(|e| e.is_empty()) {
        return Some(HookPhase::Main);
    }
    if events.contains(&pre) {
        Some(HookPhase::PreDeploy)
    } else if events.contains(&post) {
        Some(HookPhase::PostDeploy)
    } else {
        None
    }
}

/// Order within a phase: `helm.sh/hook-weight` or `argocd.argoproj.io/sync-wave`, default 0.
pub fn weight(manifest: &Manifest) -> i64 {
    annotation(manifest, HELM_HOOK_WEIGHT)
        .or_else(|| annotation(manifest, ARGO_SYNC_WAVE))
        .and_then(|w| w.trim().parse().ok())
        .unwrap_or(0)
}

/// Delete policies of a hook; Helm's default (`before-hook-creation`) when a hook sets none.
/// Empty for non-hooks.
pub fn delete_policies(manifest: &Manifest) -> Vec<HookDeletePolicy> {
    if !matches!(classify(manifest), HookClass::Deploy(_)) {
        return Vec::new();
    }
    let text = annotation(manifest, HELM_HOOK_DELETE_POLICY)
        .or_else(|| annotation(manifest, ARGO_HOOK_DELETE_POLICY));
    let Some(text) = text else {
        return vec![HookDeletePolicy::BeforeHookCreation];
    };
    let mut policies = Vec::new();
    for policy in text.split(',').map(str::trim) {
        let policy = match policy {
            "before-hook-creation" | "BeforeHookCreation" => HookDeletePolicy::BeforeHookCreation,
            "hook-succeeded" | "HookSucceeded" => HookDeletePolicy::HookSucceeded,
            "hook-failed" | "HookFailed" => HookDeletePolicy::HookFailed,
            _ => continue,
        };
        if !policies.contains(&policy) {
            policies.push(policy);
        }
    }
    policies
}

/// Drop test/delete/rollback hooks from rendered output, logging each at debug level.
pub fn drop_unsupported(manifests: &mut Vec<Manifest>) {
    manifests.retain(|m| match classify(m) {
        HookClass::Dropped(reason) => {
            tracing::debug!(object = %m.key(), %reason, "skipping hook");
            false
        }
        _ => true,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Origin;

    fn manifest(annotations: &[(&str, &str)]) -> Manifest {
        let ann: serde_json::Map<String, serde_json::Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        let object = serde_json::from_value(serde_json::json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "j", "annotations": ann}
        }))
        .unwrap();
        Manifest {
            object,
            origin: Origin::default(),
        }
    }

    #[test]
    fn helm_events_map_to_phases() {
        assert_eq!(
            phase(&manifest(&[(HELM_HOOK, "pre-install,pre-upgrade")])),
            HookPhase::PreDeploy
        );
        assert_eq!(
            phase(&manifest(&[(HELM_HOOK, "post-upgrade")])),
            HookPhase::PostDeploy
        );
        assert_eq!(phase(&manifest(&[])), HookPhase::Main);
        assert!(matches!(
            classify(&manifest(&[(HELM_HOOK, "test")])),
            HookClass::Dropped(_)
        ));
        assert!(matches!(
            classify(&manifest(&[(HELM_HOOK, "pre-delete")])),
            HookClass::Dropped(_)
        ));
        assert_eq!(
            phase(&manifest(&[(ARGO_HOOK, "PostSync")])),
            HookPhase::PostDeploy
        );
    }

    #[test]
    fn install_hooks_run_on_install_and_upgrade_hooks_on_upgrades() {
        use DeployEvent::{Install, Upgrade};
        let pre_install = manifest(&[(HELM_HOOK, "pre-install")]);
        assert_eq!(phase_for(&pre_install, Install), Some(HookPhase::PreDeploy));
        assert_eq!(phase_for(&pre_install, Upgrade), None);
        let post_upgrade = manifest(&[(HELM_HOOK, "post-upgrade")]);
        assert_eq!(phase_for(&post_upgrade, Install), None);
        assert_eq!(
            phase_for(&post_upgrade, Upgrade),
            Some(HookPhase::PostDeploy)
        );
        let both = manifest(&[(HELM_HOOK, "pre-install, pre-upgrade")]);
        assert_eq!(phase_for(&both, Install), Some(HookPhase::PreDeploy));
        assert_eq!(phase_for(&both, Upgrade), Some(HookPhase::PreDeploy));
        let mixed = manifest(&[(HELM_HOOK, "pre-install,post-upgrade")]);
        assert_eq!(phase_for(&mixed, Install), Some(HookPhase::PreDeploy));
        assert_eq!(phase_for(&mixed, Upgrade), Some(HookPhase::PostDeploy));
        // Argo CD hooks run on every sync; non-hooks are main objects either way.
        let presync = manifest(&[(ARGO_HOOK, "PreSync")]);
        assert_eq!(phase_for(&presync, Upgrade), Some(HookPhase::PreDeploy));
        assert_eq!(phase_for(&manifest(&[]), Install), Some(HookPhase::Main));
    }

    #[test]
    fn delete_policies_default_like_helm() {
        let hook = manifest(&[(HELM_HOOK, "pre-install")]);
        assert_eq!(
            delete_policies(&hook),
            vec![HookDeletePolicy::BeforeHookCreation]
        );
        let hook = manifest(&[
            (HELM_HOOK, "pre-install"),
            (HELM_HOOK_DELETE_POLICY, "hook-succeeded,hook-failed"),
        ]);
        assert_eq!(
            delete_policies(&hook),
            vec![
                HookDeletePolicy::HookSucceeded,
                HookDeletePolicy::HookFailed
            ]
        );
        assert!(delete_policies(&manifest(&[])).is_empty());
        assert_eq!(weight(&manifest(&[(HELM_HOOK_WEIGHT, "-5")])), -5);
    }
}
