//! `ferry ui` in a real browser (headless Chromium from Debian, driven by chromiumoxide) against
//! the real test environment: an app deployed from git by the in-process agent; the list and
//! the resource tree match the cluster; sync, suspend, resume, roll back and undo work through
//! the page and are refused when the user's RBAC says no; live updates arrive over SSE without
//! a reload; no Secret value reaches a page or an SSE payload; in drift detect mode a hand edit
//! is shown in the "Git and cluster" panel (status.drift) and in the diff computed on request,
//! Secret values redacted. Screenshots go to target/ui-screenshots/.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use ferry_api::Release;
use ferry_api::common::RECONCILE_REQUESTED_AT;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};

const WAIT: Duration = Duration::from_secs(30);

/// The cluster's own tree under Deployment `web`: ReplicaSet and Pod names by owner uid.
async fn cluster_tree(client: &kube::Client, ns: &str) -> BTreeSet<String> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), ns)
        .get("web")
        .await
        .expect("deployment");
    let uid = deployment.metadata.uid.clone().expect("uid");
    let rss = Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("rs");
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("pods");
    let owned_by = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
                    uid: &str| {
        meta.owner_references.iter().flatten().any(|o| o.uid == uid)
    };
    let mut names = BTreeSet::new();
    for rs in rss.items.iter().filter(|rs| owned_by(&rs.metadata, &uid)) {
        names.insert(format!(
            "ReplicaSet/{}",
            rs.metadata.name.clone().unwrap_or_default()
        ));
        let rs_uid = rs.metadata.uid.clone().unwrap_or_default();
        for pod in pods.items.iter().filter(|p| owned_by(&p.metadata, &rs_uid)) {
            names.insert(format!(
                "Pod/{}",
                pod.metadata.name.clone().unwrap_or_default()
            ));
        }
    }
    names
}

async fn wait_pods_running(client: &kube::Client, ns: &str, n: usize) {
    ferry_testsupport::wait_for("2 pods running", Duration::from_secs(60), || {
        let api = Api::<Pod>::namespaced(client.clone(), ns);
        async move {
            let pods = api.list(&ListParams::default().labels("app=web")).await?;
            let running = pods
                .items
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            if running == n {
                Ok(Some(()))
            } else {
                anyhow::bail!("{running} running")
            }
        }
    })
    .await
    .expect("pods running");
}

/// Click the element `selector` finds, found and clicked in one step in the page: a live panel
/// reload can replace the node between a DevTools lookup and a click on it.
async fn click(page: &chromiumoxide::page::Page, selector: &str) {
    let found = serde_json::to_string(selector).expect("selector");
    wait_js(
        page,
        &format!("(() => {{ const e = document.querySelector({found}); if (!e || e.disabled) return false; e.click(); return true; }})()"),
        &format!("{selector} to click"),
        WAIT,
    )
    .await;
}

fn assert_no_secret(what: &str, text: &str) {
    assert!(
        !text.contains(&planted_secret()),
        "{what} contains the planted Secret value"
    );
    assert!(
        !text.contains(SECRET_B64_PLANTED),
        "{what} contains the planted Secret value (base64)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_the_cluster_live_and_its_actions_work() {
    let fx = deploy("ui-browser").await;
    let ns = fx.ns.name.clone();
    wait_pods_running(&fx.client, &ns, 2).await;
    let ui = start_ui(fx.env.kubeconfig(), &[&ns]).await;
    let chrome = Chrome::launch().await;

    // The printed URL logs in: the token becomes a cookie and leaves the address bar.
    let page = chrome
        .browser
        .new_page(ui.url.as_str())
        .await
        .expect("page");
    let row = format!("app--release--{ns}--web");
    wait_js(
        &page,
        &format!("document.getElementById('{row}') !== null"),
        "the Release's row",
        WAIT,
    )
    .await;
    let url = page.url().await.expect("url").unwrap_or_default();
    assert!(
        !url.contains("token="),
        "token left in the address bar: {url}"
    );
    let row_text: String = js(
        &page,
        &format!("document.getElementById('{row}').innerText"),
    )
    .await;
    assert!(
        row_text.contains("Synced") && row_text.contains("Healthy"),
        "row: {row_text}"
    );
    assert!(
        row_text.contains(&fx.first[..7]),
        "row shows the applied revision: {row_text}"
    );
    wait_js(
        &page,
        "document.getElementById('conn').textContent.includes('on')",
        "the SSE connection",
        WAIT,
    )
    .await;
    // Landmarks and labels (the accessibility basics the page promises).
    let landmarks: bool = js(&page, "!!document.querySelector('header nav[aria-label]') && !!document.querySelector('main#main') && !!document.querySelector('a.skip[href=\"#main\"]') && [...document.querySelectorAll('form.filters select, form.filters input')].every(e => e.closest('label'))").await;
    assert!(landmarks, "landmarks, skip link and labelled filters");
    screenshot(&page, "apps").await;

    // Live: a change made elsewhere (kubectl, another user) arrives without a reload.
    run_js(&page, "window.__noReload = 1").await;
    let releases: Api<Release> = Api::namespaced(fx.client.clone(), &ns);
    releases
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"suspend": true}})),
        )
        .await
        .expect("suspend from outside");
    wait_js(&page, &format!("document.getElementById('{row}').dataset.sync === 'suspended' && window.__noReload === 1"), "the live row update", WAIT).await;
    releases
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"suspend": false}})),
        )
        .await
        .expect("resume from outside");
    wait_js(
        &page,
        &format!("document.getElementById('{row}').dataset.sync !== 'suspended'"),
        "the row resumed",
        WAIT,
    )
    .await;

    // Filtering as you type hides the row, clearing shows it.
    run_js(&page, "(() => { const q = document.querySelector('input[name=q]'); q.value = 'no-such-app'; q.dispatchEvent(new Event('input', {bubbles: true})); return null; })()").await;
    wait_js(&page, &format!("document.getElementById('{row}').hidden === true && document.getElementById('shown').textContent === '0'"), "the filter hides the row", WAIT).await;
    run_js(&page, "(() => { const q = document.querySelector('input[name=q]'); q.value = ''; q.dispatchEvent(new Event('input', {bubbles: true})); return null; })()").await;
    wait_js(
        &page,
        &format!("document.getElementById('{row}').hidden === false"),
        "the filter cleared",
        WAIT,
    )
    .await;

    // The app's page: its tree matches the cluster's owner references.
    // A live update can replace the row between finding its link and clicking it (the node id
    // is then gone): find it again, a bounded number of times.
    let mut clicked = Err(String::new());
    for _ in 0..5 {
        clicked = match page.find_element(format!("#{row} a")).await {
            Ok(link) => link.click().await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if clicked.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    clicked.expect("click the row's link");
    wait_js(&page, "document.querySelector('h1') && document.querySelector('h1').textContent.startsWith('Release')", "the Release page", WAIT).await;
    wait_js(
        &page,
        "document.getElementById('conn').textContent.includes('on')",
        "the page's SSE connection",
        WAIT,
    )
    .await;
    let shown: Vec<String> = js(&page, "[...document.querySelectorAll('#tree li[data-kind=Deployment] li')].map(li => li.dataset.kind + '/' + li.dataset.name)").await;
    let shown: BTreeSet<String> = shown.into_iter().collect();
    let cluster = cluster_tree(&fx.client, &ns).await;
    assert_eq!(shown, cluster, "the tree under Deployment web");
    assert_eq!(shown.iter().filter(|n| n.starts_with("Pod/")).count(), 2);
    let roots: Vec<String> = js(&page, "[...document.querySelectorAll('#tree > li')].map(li => li.dataset.kind + '/' + li.dataset.name + '/' + li.dataset.state)").await;
    assert_eq!(
        roots.iter().cloned().collect::<BTreeSet<_>>(),
        [
            "ConfigMap/settings/current",
            "Deployment/web/current",
            "Secret/creds/current"
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        "inventory roots with health"
    );
    let secret_note: String = js(
        &page,
        "document.querySelector('#tree li[data-kind=Secret]').innerText",
    )
    .await;
    assert!(secret_note.contains("not read"), "{secret_note}");
    let source_text: String = js(
        &page,
        "document.getElementById('h-source').parentElement.innerText",
    )
    .await;
    assert!(
        source_text.contains(&fx.first),
        "the source section shows the fetched commit: {source_text}"
    );
    assert_no_secret("the Release page", &page.content().await.expect("content"));
    screenshot(&page, "release").await;

    // Sync now: the annotation `ferry sync` writes, set as the user.
    page.find_element("form.action[action$='/sync'] button")
        .await
        .expect("sync button")
        .click()
        .await
        .expect("click");
    wait_js(
        &page,
        "document.getElementById('result').textContent.includes('Sync requested')",
        "the sync result",
        WAIT,
    )
    .await;
    let r = releases.get("web").await.expect("release");
    assert!(
        r.metadata
            .annotations
            .unwrap_or_default()
            .contains_key(RECONCILE_REQUESTED_AT),
        "sync annotation set"
    );

    // Suspend, then Resume: the panel follows live (the button changes).
    page.find_element("form.action[action$='/suspend'] button")
        .await
        .expect("suspend button")
        .click()
        .await
        .expect("click");
    wait_js(
        &page,
        "!!document.querySelector(\"form.action[action$='/resume']\")",
        "the Resume button",
        WAIT,
    )
    .await;
    assert!(
        releases.get("web").await.expect("release").spec.suspend,
        "suspended"
    );
    page.find_element("form.action[action$='/resume'] button")
        .await
        .expect("resume button")
        .click()
        .await
        .expect("click");
    wait_js(
        &page,
        "!!document.querySelector(\"form.action[action$='/suspend']\")",
        "the Suspend button",
        WAIT,
    )
    .await;
    assert!(
        !releases.get("web").await.expect("release").spec.suspend,
        "resumed"
    );

    // A second commit; the page's history grows live; roll back to the first, then undo.
    let second = fx.repo.commit(
        &[("app/settings.yaml", Some(&configmap_yaml("two")))],
        "second",
    );
    wait_applied(&fx.client, &ns, &second).await;
    wait_js(&page, &format!("[...document.querySelectorAll('#history button')].some(b => b.getAttribute('aria-label').includes('{}'))", fx.first), "the rollback button of the first commit", WAIT).await;
    run_js(&page, &format!("(() => {{ [...document.querySelectorAll('#history button')].find(b => b.getAttribute('aria-label').includes('{}')).click(); return null; }})()", fx.first)).await;
    wait_js(
        &page,
        "document.getElementById('result').textContent.includes('Rolled back')",
        "the rollback result",
        WAIT,
    )
    .await;
    let r = releases.get("web").await.expect("release");
    assert_eq!(r.spec.source_ref.name, "web-rollback");
    wait_applied(&fx.client, &ns, &fx.first).await;
    let cms: Api<ConfigMap> = Api::namespaced(fx.client.clone(), &ns);
    let value = cms
        .get("settings")
        .await
        .expect("settings")
        .data
        .unwrap_or_default()
        .remove("value");
    assert_eq!(
        value.as_deref(),
        Some("one"),
        "the first commit's content is back"
    );
    wait_js(
        &page,
        "!!document.getElementById('rolled-back')",
        "the rolled-back notice",
        WAIT,
    )
    .await;
    screenshot(&page, "rolled-back").await;
    page.find_element("form.action[action$='/undo'] button")
        .await
        .expect("undo button")
        .click()
        .await
        .expect("click");
    wait_js(
        &page,
        "document.getElementById('result').textContent.includes('undone')",
        "the undo result",
        WAIT,
    )
    .await;
    assert_eq!(
        releases
            .get("web")
            .await
            .expect("release")
            .spec
            .source_ref
            .name,
        "repo"
    );
    wait_applied(&fx.client, &ns, &second).await;

    // No Secret value in any page or SSE payload: the list, the page, its panel, both feeds
    // while something changes.
    let token = token_of(&ui);
    let cookie = ("Cookie", format!("ferry_ui_{}={token}", ui.addr.port()));
    let paths = [
        "/".to_string(),
        format!("/apps/release/{ns}/web"),
        format!("/apps/release/{ns}/web/panel"),
    ];
    for path in &paths {
        let (status, _, body) = http(
            ui.addr,
            "GET",
            path,
            std::slice::from_ref(&cookie),
            "",
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(status, 200, "{path}");
        assert_no_secret(path, &body);
    }
    let feeds = [
        format!("/events/apps/release/{ns}/web"),
        "/events/apps".to_string(),
    ];
    let readers: Vec<_> = feeds
        .iter()
        .map(|path| {
            let (addr, cookie, path) = (ui.addr, cookie.clone(), path.clone());
            tokio::spawn(async move {
                http(addr, "GET", &path, &[cookie], "", Duration::from_secs(6)).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    releases
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"suspend": true}})),
        )
        .await
        .expect("a visible change while the feeds are read");
    for (reader, path) in readers.into_iter().zip(feeds) {
        let (status, _, body) = reader.await.expect("reader");
        assert_eq!(status, 200, "{path}");
        assert!(
            body.contains("event: row") || body.contains("event: refresh"),
            "{path} sent the change: {body}"
        );
        assert_no_secret(&path, &body);
    }

    chrome.close().await;
    ui.stop().await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn actions_are_refused_when_the_users_rbac_says_no() {
    let fx = deploy("ui-rbac").await;
    let ns = fx.ns.name.clone();
    wait_pods_running(&fx.client, &ns, 2).await;
    // A read-only user of this namespace: may see Releases and the app, may not patch.
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testenv/mint-kubeconfig");
    let out = std::process::Command::new(&script)
        .args([ns.as_str(), "viewer"])
        .output()
        .expect("mint-kubeconfig");
    assert!(
        out.status.success(),
        "mint-kubeconfig: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kubeconfig =
        std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(fx.client.clone(), &ns);
    let role = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "viewer"},
        "rules": [
            {"apiGroups": ["ferry.dev"], "resources": ["releases", "gitsources"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["configmaps", "pods", "events"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["apps"], "resources": ["deployments", "replicasets"], "verbs": ["get", "list", "watch"]},
        ],
    });
    roles
        .patch(
            "viewer",
            &PatchParams::apply("ferry-ui-tests").force(),
            &Patch::Apply(&role),
        )
        .await
        .expect("role");
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(fx.client.clone(), &ns);
    let binding = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "viewer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "viewer"},
        "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": ns}],
    });
    bindings
        .patch(
            "viewer",
            &PatchParams::apply("ferry-ui-tests").force(),
            &Patch::Apply(&binding),
        )
        .await
        .expect("binding");

    // No namespace given: the viewer may not list all namespaces, so the dashboard falls
    // back to the context's namespace and says so.
    let ui = start_ui(kubeconfig, &[]).await;
    let chrome = Chrome::launch().await;
    let page = chrome
        .browser
        .new_page(ui.url.as_str())
        .await
        .expect("page");
    let row = format!("app--release--{ns}--web");
    wait_js(
        &page,
        &format!("document.getElementById('{row}') !== null"),
        "the Release's row as the viewer",
        WAIT,
    )
    .await;
    let header: String = js(&page, "document.querySelector('header').innerText").await;
    assert!(
        header.contains(&format!("system:serviceaccount:{ns}:viewer")),
        "the header names the user: {header}"
    );
    assert!(header.contains("may not list all namespaces"), "{header}");

    page.goto(format!("http://{}/apps/release/{ns}/web", ui.addr))
        .await
        .expect("goto");
    wait_js(
        &page,
        "!!document.querySelector(\"form.action[action$='/sync'] button\")",
        "the Release page",
        WAIT,
    )
    .await;
    // The Secret is not even readable for this user; the tree says so without failing.
    let tree: Vec<String> = js(
        &page,
        "[...document.querySelectorAll('#tree li')].map(li => li.dataset.kind)",
    )
    .await;
    assert!(
        tree.contains(&"Pod".to_string()),
        "the viewer sees the pods: {tree:?}"
    );
    for action in ["sync", "suspend"] {
        click(&page, &format!("form.action[action$='/{action}'] button")).await;
        wait_js(&page, "document.getElementById('result').classList.contains('error') && document.getElementById('result').textContent.includes('forbidden')", "the refusal", WAIT).await;
        let text: String = js(&page, "document.getElementById('result').textContent").await;
        assert!(
            text.contains(&format!("{action} of Release {ns}/web refused")),
            "{text}"
        );
        run_js(&page, "(() => { const r = document.getElementById('result'); r.textContent = ''; r.classList.remove('error'); return null; })()").await;
    }
    // The diff needs the GitSource's Secret, which this user may not read: the page says which
    // Secret, and nothing is fetched.
    click(&page, "form.diff button").await;
    wait_js(
        &page,
        "!!document.getElementById('diff-error')",
        "the diff's refusal",
        Duration::from_secs(70),
    )
    .await;
    let refusal: String = js(&page, "document.getElementById('diff-error').innerText").await;
    assert!(
        refusal.contains(&format!("Secret {ns}/git-auth"))
            && refusal.contains("your kubeconfig")
            && refusal.contains("nothing was fetched"),
        "{refusal}"
    );
    screenshot(&page, "refused").await;
    let r: Release = Api::namespaced(fx.client.clone(), &ns)
        .get("web")
        .await
        .expect("release");
    assert!(!r.spec.suspend, "nothing changed");
    assert!(
        !r.metadata
            .annotations
            .unwrap_or_default()
            .contains_key(RECONCILE_REQUESTED_AT),
        "no sync annotation"
    );

    chrome.close().await;
    ui.stop().await;
    fx.stop().await;
}

/// A hand edit's value for Secret `creds` (plain and base64): never in a page either.
const HAND_SECRET: &str = "ui-hand-edited-s3cret-4b9a";
const HAND_SECRET_B64: &str = "dWktaGFuZC1lZGl0ZWQtczNjcmV0LTRiOWE=";

fn assert_no_secret_at_all(what: &str, text: &str) {
    assert_no_secret(what, text);
    for value in [HAND_SECRET, HAND_SECRET_B64] {
        assert!(
            !text.contains(value),
            "{what} contains the hand-edited Secret value"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drift_in_detect_mode_is_shown_with_the_diff_and_no_secret_value() {
    // detect: the agent reports hand edits and leaves them; the replica count is left to others.
    let fx = deploy_with(
        "ui-drift",
        serde_json::json!({"drift": {"mode": "detect", "ignore": [
            {"target": {"kind": "Deployment"}, "paths": ["/spec/replicas"]}]}}),
    )
    .await;
    let ns = fx.ns.name.clone();
    // Hand edits: a ConfigMap value and a Secret value.
    let cms: Api<ConfigMap> = Api::namespaced(fx.client.clone(), &ns);
    cms.patch(
        "settings",
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({"data": {"value": "hand-edit"}})),
    )
    .await
    .expect("edit the ConfigMap by hand");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(fx.client.clone(), &ns);
    secrets
        .patch(
            "creds",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"stringData": {"password": HAND_SECRET}})),
        )
        .await
        .expect("edit the Secret by hand");
    // The agent reports both in status.drift (and leaves them).
    let releases: Api<Release> = Api::namespaced(fx.client.clone(), &ns);
    ferry_testsupport::wait_for(
        "status.drift lists the ConfigMap and the Secret",
        Duration::from_secs(60),
        || {
            let releases = releases.clone();
            async move {
                let r = releases.get("web").await?;
                let drift = r.status.and_then(|s| s.drift);
                let names: BTreeSet<String> = drift
                    .iter()
                    .flat_map(|d| d.objects.iter().map(|o| o.name.clone()))
                    .collect();
                if names.contains("settings") && names.contains("creds") {
                    Ok(Some(()))
                } else {
                    anyhow::bail!("status.drift: {drift:?}")
                }
            }
        },
    )
    .await
    .expect("drift reported");
    let value = cms
        .get("settings")
        .await
        .expect("settings")
        .data
        .unwrap_or_default()
        .remove("value");
    assert_eq!(value.as_deref(), Some("hand-edit"), "detect mode left it");

    let ui = start_ui(fx.env.kubeconfig(), &[&ns]).await;
    let chrome = Chrome::launch().await;
    let page = chrome
        .browser
        .new_page(ui.url.as_str())
        .await
        .expect("page");
    wait_js(
        &page,
        "!!document.getElementById('apps')",
        "the apps page",
        WAIT,
    )
    .await;
    page.goto(format!("http://{}/apps/release/{ns}/web", ui.addr))
        .await
        .expect("goto");
    // The panel: the policy as it is, the objects and fields status.drift lists.
    wait_js(
        &page,
        "!!document.querySelector('#drift tr[data-kind=ConfigMap][data-name=settings]')",
        "the drift findings",
        WAIT,
    )
    .await;
    let fields: String = js(
        &page,
        "document.querySelector('#drift tr[data-kind=ConfigMap][data-name=settings]').innerText",
    )
    .await;
    assert!(fields.contains("/data/value"), "{fields}");
    let secret_fields: String = js(
        &page,
        "document.querySelector('#drift tr[data-kind=Secret][data-name=creds]').innerText",
    )
    .await;
    assert!(secret_fields.contains("/data/password"), "{secret_fields}");
    let sync: String = js(&page, "document.getElementById('sync-state').innerText").await;
    assert_eq!(
        sync.trim(),
        "Out of sync",
        "detect-mode drift left in place"
    );
    let mode: String = js(
        &page,
        "document.getElementById('drift-mode').dataset.mode + ' ' + document.getElementById('drift-mode').innerText",
    )
    .await;
    assert!(
        mode.starts_with("detect ") && mode.contains("not corrected"),
        "{mode}"
    );
    let summary: String = js(&page, "document.getElementById('drift-summary').innerText").await;
    assert!(
        summary.contains("differs from git") && summary.contains("not corrected"),
        "{summary}"
    );
    for wrong in ["has what git has", "matches git", "corrects drift"] {
        assert!(!summary.contains(wrong), "{summary}");
    }
    let ignored: String = js(&page, "document.getElementById('drift-ignored').innerText").await;
    assert!(
        ignored.contains("Deployment") && ignored.contains("/spec/replicas"),
        "{ignored}"
    );
    // Not computed on a page load: only when asked.
    let before: String = js(&page, "document.getElementById('diff-result').innerHTML").await;
    assert!(before.trim().is_empty(), "diff computed unasked: {before}");
    click(&page, "form.diff button").await;
    wait_js(
        &page,
        "!!document.querySelector('#diff-result .diff-outcome')",
        "the diff",
        Duration::from_secs(70),
    )
    .await;
    let state: String = js(
        &page,
        "document.querySelector('#diff-result .diff-outcome').dataset.state + ': ' + document.getElementById('diff-result').innerText",
    )
    .await;
    assert!(state.starts_with("changes: "), "{state}");
    let cm_diff: bool = js(&page, "(() => { const a = document.querySelector('#diff-result article[data-kind=ConfigMap][data-name=settings]'); return !!a && a.dataset.action === 'change' && [...a.querySelectorAll('.del')].some(s => s.textContent.includes('value: hand-edit')) && [...a.querySelectorAll('.add')].some(s => s.textContent.includes('value: one')); })()").await;
    assert!(
        cm_diff,
        "the ConfigMap's diff: - the hand edit, + git's value: {state}"
    );
    let secret_diff: String = js(
        &page,
        "(document.querySelector('#diff-result article[data-kind=Secret][data-name=creds]') || {innerText: ''}).innerText",
    )
    .await;
    assert!(secret_diff.contains("redacted"), "{secret_diff}");
    assert!(
        !state.contains("replicas"),
        "an ignored field is not in the diff: {state}"
    );
    assert_no_secret_at_all(
        "the page with its diff",
        &page.content().await.expect("content"),
    );
    screenshot(&page, "drift").await;

    // The same as a page of its own (no script) and at git's latest revision; no Secret value
    // in either.
    let token = token_of(&ui);
    let cookie = ("Cookie", format!("ferry_ui_{}={token}", ui.addr.port()));
    for (path, expect) in [
        (
            format!("/apps/release/{ns}/web/diff"),
            "the applied revision",
        ),
        (
            format!("/apps/release/{ns}/web/diff?latest=1"),
            "latest revision",
        ),
    ] {
        let (status, _, body) = http(
            ui.addr,
            "GET",
            &path,
            std::slice::from_ref(&cookie),
            "",
            Duration::from_secs(70),
        )
        .await;
        assert_eq!(status, 200, "{path}");
        assert!(
            body.contains(expect) && body.contains("value: hand-edit"),
            "{path}: {body}"
        );
        assert_no_secret_at_all(&path, &body);
    }

    chrome.close().await;
    ui.stop().await;
    fx.stop().await;
}
