//! The pull-to-push hand-over of `ferry apply --adopt-release NAMESPACE/NAME`: an app an agent
//! Release deployed becomes a push app with nothing re-created (its inventory and ownership are
//! adopted by the engine, see `ferry_engine::ownership::release_handover_key`). The reverse,
//! push to pull, is the Release annotation `ferry.dev/adopt-push-app` (docs/push.md).
//!
//! Decision: the Release must be out of the way first — deleted with `deletionPolicy: Orphan`,
//! or suspended — otherwise the agent would keep applying the same objects and the two drivers
//! would fight. The CLI checks that before it applies anything.

use anyhow::{Result, bail};
use ferry_api::Release;
use ferry_engine::inventory::Legacy;
use ferry_engine::ownership::{ReleaseRef, release_handover_key};
use kube::{Api, Client};

/// Parse `NAMESPACE/NAME` (what `--adopt-release` takes).
pub fn parse_release(text: &str) -> Result<ReleaseRef> {
    let Some((namespace, name)) = text.split_once('/') else {
        bail!("--adopt-release {text:?}: expected NAMESPACE/NAME of the Release to take over");
    };
    let release = ReleaseRef {
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    // The same check the engine makes on every Release identity.
    if ferry_engine::ownership::parse_release_handover_key(&release_handover_key(&release))
        .is_none()
    {
        bail!(
            "--adopt-release {text:?}: not a valid Release NAMESPACE/NAME (namespace: DNS label, name: DNS subdomain)"
        );
    }
    Ok(release)
}

/// The adoption to hand the engine, after checking that the Release no longer applies: it is
/// gone (or being deleted) or suspended.
pub async fn adopt_release(client: &Client, text: &str) -> Result<Legacy> {
    let release = parse_release(text)?;
    let api: Api<Release> = Api::namespaced(client.clone(), &release.namespace);
    match api.get_opt(&release.name).await {
        Ok(Some(live)) if live.metadata.deletion_timestamp.is_none() && !live.spec.suspend => {
            bail!(
                "Release {release} still exists and is not suspended: the agent would keep applying the objects this apply takes over. \
                 Hand it over first: `kubectl -n {ns} patch release {name} --type merge -p '{{\"spec\":{{\"deletionPolicy\":\"Orphan\"}}}}' && kubectl -n {ns} delete release {name}` \
                 (or `ferry suspend {name} -n {ns}`), then run this again",
                ns = release.namespace,
                name = release.name
            );
        }
        Ok(_) => {}
        // No Release CRD in this cluster: no agent can be applying it.
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(err) => bail!(
            "--adopt-release {release}: cannot check that the Release no longer applies: {err}; this identity needs `get` on releases.ferry.dev in {}",
            release.namespace
        ),
    }
    Ok(Legacy {
        app: release_handover_key(&release),
        source_prefix: None,
        push_takeover: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_names_are_checked() {
        assert_eq!(
            parse_release("team/web.v1").expect("valid"),
            ReleaseRef {
                namespace: "team".into(),
                name: "web.v1".into()
            }
        );
        for bad in [
            "web",
            "team/",
            "/web",
            "team/web/x",
            "Team/web",
            "team/web v1",
        ] {
            let err = parse_release(bad).expect_err(bad).to_string();
            assert!(err.contains("--adopt-release"), "{err}");
        }
    }
}
