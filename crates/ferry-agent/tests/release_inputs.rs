//! A Release's `valuesFrom` (Helm values from ConfigMaps and Secrets, Flux HelmRelease style) and
//! `postBuild.substitute`/`substituteFrom` (Flux Kustomization style), through the real agent,
//! the real git server, the real `helm` and the real API server's RBAC and validation:
//! - values keep their YAML types, merge in order, inline values win; `targetPath` and
//!   `optional` work; variables come from ConfigMaps and Secrets, inline wins;
//! - attacks: a Secret the Release's service account may not read is refused naming it (and read
//!   once granted); a missing non-optional ConfigMap or Secret is an error naming it (and picked
//!   up once created); a reference to another namespace is refused even with
//!   `--allow-cross-namespace-refs`; a hostile `targetPath` is an invalid spec; substituted
//!   values cannot add YAML documents or keys; values from Secrets that the API server echoes in
//!   its refusal never reach status or Events.

mod common;

use std::time::Duration;

use common::*;
use ferry_api::{GitSource, Release};
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams};

const VALUES_PASSWORD: &str = "s3cr3t-from-values-9d8c";
const VALUES_USER: &str = "admin-from-secret-7a6b";
const SUBST_TOKEN: &str = "t0ken-from-secret-5e4f";
const LEAKY_LABEL: &str = "not a label s3cr3t-l4bel-3c2d";
const LEAKY_VALUE: &str = "not a label s3cr3t-v4lue-1a0b";

fn message_of(release: &Release) -> String {
    ready_state(&release.status.clone().unwrap_or_default().conditions)
        .map(|c| c.2)
        .unwrap_or_default()
}

fn stalled(release: &Release) -> bool {
    ferry_api::common::find_condition(
        &release.status.clone().unwrap_or_default().conditions,
        ferry_api::common::STALLED,
    )
    .is_some_and(|c| c.status == "True")
}

async fn config_map(client: &kube::Client, ns: &str, name: &str, data: &[(&str, &str)]) {
    let data: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    create::<ConfigMap>(
        client,
        ns,
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}),
    )
    .await;
}

/// A Role + RoleBinding in `ns` giving service account `sa` exactly `rules`.
async fn role(client: &kube::Client, ns: &str, sa: &str, name: &str, rules: serde_json::Value) {
    create::<k8s_openapi::api::rbac::v1::Role>(
        client,
        ns,
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name}, "rules": rules,
        }),
    )
    .await;
    create::<k8s_openapi::api::rbac::v1::RoleBinding>(
        client,
        ns,
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
        }),
    )
    .await;
}

const CHART_YAML: &str = "apiVersion: v2\nname: web\nversion: 0.1.0\n";
const CHART_VALUES: &str = "replicas: 1\nenabled: false\nimage:\n  tag: repo\n  repo: repo\ndb:\n  password: \"\"\n  user: \"\"\nlabel: ok\n";
/// Shows each value and its Go type (helm's values are JSON: numbers are float64).
const CHART_CONFIGMAP: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: web-values
  labels:
    from-values: {{ .Values.label | quote }}
data:
  replicas: {{ .Values.replicas | quote }}
  replicasKind: {{ kindOf .Values.replicas | quote }}
  enabledKind: {{ kindOf .Values.enabled | quote }}
  tag: {{ .Values.image.tag | quote }}
  repo: {{ .Values.image.repo | quote }}
"#;
const CHART_SECRET: &str = r#"apiVersion: v1
kind: Secret
metadata:
  name: web-db
stringData:
  password: {{ .Values.db.password | quote }}
  user: {{ .Values.db.user | quote }}
"#;
/// A chart with no Secret, for a service account that may not touch Secrets.
const CM_ONLY: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: cm-only
data:
  password: {{ .Values.db.password | quote }}
"#;
const SUBST_CONFIGMAP: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: subst
  labels:
    from-vars: "${LABEL:=ok}"
data:
  greeting: "${GREETING}"
  region: "${REGION}"
  inline: "${INLINE}"
---
apiVersion: v1
kind: Secret
metadata:
  name: subst-token
stringData:
  token: "${TOKEN}"
"#;

fn chart_files() -> Vec<(&'static str, Option<&'static str>)> {
    vec![
        ("chart/Chart.yaml", Some(CHART_YAML)),
        ("chart/values.yaml", Some(CHART_VALUES)),
        ("chart/templates/cm.yaml", Some(CHART_CONFIGMAP)),
        ("chart/templates/secret.yaml", Some(CHART_SECRET)),
        ("subst/all.yaml", Some(SUBST_CONFIGMAP)),
        ("cmchart/Chart.yaml", Some(CHART_YAML)),
        ("cmchart/values.yaml", Some(CHART_VALUES)),
        ("cmchart/templates/cm.yaml", Some(CM_ONLY)),
    ]
}

fn decode(secret: &Secret, key: &str) -> String {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn values_and_variables_from_the_cluster_reach_the_render() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "inputs-ok").await;
    let repo = Repo::create(&env, &ns.name);
    let sha = repo.commit(&chart_files(), "chart and substituted manifests");
    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    // Values: a ConfigMap (types: a number and a boolean), a Secret document, a Secret's flat
    // value at a targetPath, a missing optional ConfigMap; then the Release's inline values.
    config_map(
        &client,
        &ns.name,
        "web-values-a",
        &[(
            "values.yaml",
            "replicas: 3\nenabled: true\nimage:\n  tag: from-configmap\n  repo: from-configmap\n",
        )],
    )
    .await;
    secret(
        &client,
        &ns.name,
        "web-values-b",
        &[(
            "secret-values.yaml",
            &format!("db:\n  password: {VALUES_PASSWORD}\nimage:\n  repo: from-secret\n"),
        )],
    )
    .await;
    secret(&client, &ns.name, "web-user", &[("user", VALUES_USER)]).await;
    // Variables: a ConfigMap, then a Secret; the inline ones win.
    config_map(
        &client,
        &ns.name,
        "vars",
        &[("GREETING", "hello"), ("REGION", "eu"), ("INLINE", "cm")],
    )
    .await;
    secret(&client, &ns.name, "secret-vars", &[("TOKEN", SUBST_TOKEN)]).await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1m"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release(
            "web",
            "repo",
            "chart",
            serde_json::json!({
                "valuesFrom": [
                    {"kind": "ConfigMap", "name": "web-values-a"},
                    {"kind": "Secret", "name": "web-values-b", "valuesKey": "secret-values.yaml"},
                    {"kind": "Secret", "name": "web-user", "valuesKey": "user", "targetPath": "db.user"},
                    {"kind": "ConfigMap", "name": "absent", "optional": true},
                ],
                "render": {"helm": {"values": {"image": {"tag": "inline"}}}},
            }),
        ),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release(
            "subst",
            "repo",
            "subst",
            serde_json::json!({
                "postBuild": {
                    "substitute": {"INLINE": "post-build"},
                    "substituteFrom": [
                        {"kind": "ConfigMap", "name": "vars"},
                        {"kind": "Secret", "name": "secret-vars"},
                        {"kind": "Secret", "name": "absent", "optional": true},
                    ],
                },
            }),
        ),
    )
    .await;
    let web = wait_release_applied(&client, &ns.name, "web", &sha, Duration::from_secs(120)).await;
    let subst =
        wait_release_applied(&client, &ns.name, "subst", &sha, Duration::from_secs(120)).await;

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let values = cms
        .get("web-values")
        .await
        .expect("chart ConfigMap")
        .data
        .unwrap_or_default();
    let get = |k: &str| values.get(k).cloned().unwrap_or_default();
    assert_eq!(get("replicas"), "3", "{values:?}");
    // Typed as YAML, not strings (`--set-string` would make both "string").
    assert_eq!(get("replicasKind"), "float64", "{values:?}");
    assert_eq!(get("enabledKind"), "bool", "{values:?}");
    // Inline beats valuesFrom; a later valuesFrom entry beats an earlier one.
    assert_eq!(get("tag"), "inline", "{values:?}");
    assert_eq!(get("repo"), "from-secret", "{values:?}");
    let db = secrets.get("web-db").await.expect("chart Secret");
    assert_eq!(decode(&db, "password"), VALUES_PASSWORD);
    assert_eq!(decode(&db, "user"), VALUES_USER);

    let vars = cms
        .get("subst")
        .await
        .expect("substituted ConfigMap")
        .data
        .unwrap_or_default();
    assert_eq!(vars.get("greeting").map(String::as_str), Some("hello"));
    assert_eq!(vars.get("region").map(String::as_str), Some("eu"));
    assert_eq!(vars.get("inline").map(String::as_str), Some("post-build"));
    let token = secrets
        .get("subst-token")
        .await
        .expect("substituted Secret");
    assert_eq!(decode(&token, "token"), SUBST_TOKEN);

    // No Secret value in either Release's status.
    for release in [&web, &subst] {
        let status = serde_json::to_string(&release.status).expect("json");
        for secret in [VALUES_PASSWORD, VALUES_USER, SUBST_TOKEN] {
            assert!(!status.contains(secret), "status shows {secret}: {status}");
        }
    }

    // A changed ConfigMap is picked up at the next sync (here: asked for).
    let patch = serde_json::json!({"data": {"GREETING": "bonjour"}});
    cms.patch(
        "vars",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .expect("patch vars");
    let releases: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    let ask = serde_json::json!({"metadata": {"annotations": {ferry_api::common::RECONCILE_REQUESTED_AT: "1"}}});
    releases
        .patch(
            "subst",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&ask),
        )
        .await
        .expect("request a sync");
    wait_for("the new greeting", Duration::from_secs(60), || {
        let cms = cms.clone();
        async move {
            let data = cms.get("subst").await?.data.unwrap_or_default();
            Ok((data.get("greeting").map(String::as_str) == Some("bonjour")).then_some(()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    agent.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secret_values_the_api_server_echoes_never_reach_status_or_events() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "inputs-leak").await;
    let repo = Repo::create(&env, &ns.name);
    let sha = repo.commit(&chart_files(), "chart and substituted manifests");
    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    // Each value is an invalid label value: the API server refuses the object and quotes it.
    secret(
        &client,
        &ns.name,
        "leaky-values",
        &[("values.yaml", &format!("label: {LEAKY_VALUE}\n"))],
    )
    .await;
    secret(&client, &ns.name, "leaky-vars", &[("LABEL", LEAKY_LABEL)]).await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1m"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release(
            "web",
            "repo",
            "chart",
            serde_json::json!({"valuesFrom": [{"kind": "Secret", "name": "leaky-values"}]}),
        ),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release(
            "subst",
            "repo",
            "subst",
            serde_json::json!({"postBuild": {"substituteFrom": [{"kind": "Secret", "name": "leaky-vars"}]}}),
        ),
    )
    .await;
    for name in ["web", "subst"] {
        let failed = wait_release_reason(
            &client,
            &ns.name,
            name,
            "ApplyFailed",
            Duration::from_secs(120),
        )
        .await;
        let status = serde_json::to_string(&failed.status).expect("json");
        for secret in [LEAKY_LABEL, LEAKY_VALUE, "s3cr3t"] {
            assert!(
                !status.contains(secret),
                "{name}: status shows {secret}: {status}"
            );
        }
        assert!(
            status.contains("[REDACTED]") && status.contains(&sha[..7]),
            "{name}: the API server's refusal is kept, the value hidden: {status}"
        );
    }
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), &ns.name);
    let notes = wait_for(
        "Warning events for both Releases",
        Duration::from_secs(60),
        || {
            let events = events.clone();
            async move {
                let list = events.list(&ListParams::default()).await?;
                let notes: Vec<(String, String)> = list
                    .items
                    .iter()
                    .filter_map(|e| {
                        let name = e.regarding.as_ref()?.name.clone()?;
                        Some((name, e.note.clone()?))
                    })
                    .collect();
                let both = ["web", "subst"].iter().all(|n| {
                    notes
                        .iter()
                        .any(|(name, note)| name == n && note.contains("[REDACTED]"))
                });
                Ok(both.then_some(notes))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    for (name, note) in &notes {
        assert!(
            !note.contains("s3cr3t"),
            "event on {name} shows a value: {note}"
        );
    }
    agent.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_secret_the_service_account_cannot_read_is_refused_by_name() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "inputs-rbac").await;
    // `deployer` may manage ConfigMaps (its app and the inventory) and nothing else: no Secrets.
    create::<k8s_openapi::api::core::v1::ServiceAccount>(
        &client,
        &ns.name,
        serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "deployer"}}),
    )
    .await;
    role(
        &client,
        &ns.name,
        "deployer",
        "deployer-apply",
        serde_json::json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]),
    )
    .await;
    let repo = Repo::create(&env, &ns.name);
    let sha = repo.commit(&chart_files(), "chart");
    let (agent, _cache) = start_agent_bare(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    role(
        &client,
        &ns.name,
        "default",
        "default-git-auth",
        serde_json::json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["git-auth"], "verbs": ["get"]}]),
    )
    .await;
    secret(
        &client,
        &ns.name,
        "db-values",
        &[(
            "values.yaml",
            &format!("db:\n  password: {VALUES_PASSWORD}\n"),
        )],
    )
    .await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1m"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release(
            "web",
            "repo",
            "cmchart",
            serde_json::json!({
                "serviceAccountName": "deployer",
                "valuesFrom": [{"kind": "Secret", "name": "db-values"}],
            }),
        ),
    )
    .await;
    let refused = wait_release_reason(
        &client,
        &ns.name,
        "web",
        "ValuesFromFailed",
        Duration::from_secs(90),
    )
    .await;
    let message = message_of(&refused);
    assert!(
        message.contains(&format!("Secret {}/db-values", ns.name)),
        "names the Secret: {message}"
    );
    assert!(message.contains("forbidden"), "{message}");
    assert!(
        message.contains(&format!("system:serviceaccount:{}:deployer", ns.name)),
        "names the identity: {message}"
    );
    assert!(
        message.contains("spec.valuesFrom[0]"),
        "names the field: {message}"
    );
    assert!(
        !stalled(&refused),
        "a grant can fix it: retried, not stalled"
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        cms.get_opt("cm-only").await.expect("get").is_none(),
        "nothing applied"
    );

    // Control: once it may read that one Secret, the same Release renders with it.
    role(
        &client,
        &ns.name,
        "deployer",
        "deployer-db-values",
        serde_json::json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["db-values"], "verbs": ["get"]}]),
    )
    .await;
    wait_release_applied(&client, &ns.name, "web", &sha, Duration::from_secs(90)).await;
    let applied = cms
        .get("cm-only")
        .await
        .expect("applied")
        .data
        .unwrap_or_default();
    assert_eq!(
        applied.get("password").map(String::as_str),
        Some(VALUES_PASSWORD)
    );
    agent.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_foreign_and_malformed_references_are_refused() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "inputs-refs").await;
    let other = TestNamespace::create(&client, "inputs-victim").await;
    // The other namespace really has what the reference names.
    config_map(&client, &other.name, "vars", &[("GREETING", "stolen")]).await;
    config_map(
        &client,
        &other.name,
        "web-values",
        &[("values.yaml", "replicas: 9\n")],
    )
    .await;
    let repo = Repo::create(&env, &ns.name);
    let sha = repo.commit(&chart_files(), "chart");
    // Cross-namespace references allowed for sources: still refused for ConfigMaps/Secrets.
    let (agent, _cache) = start_agent(&env, &[&ns.name, &other.name], |o| {
        o.allow_cross_namespace_refs = true;
    })
    .await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1m"),
    )
    .await;
    // Present before the Releases, so that each first failure is the one asserted.
    config_map(&client, &ns.name, "keyless", &[("other", "x")]).await;
    config_map(&client, &ns.name, "badvars", &[("not-a-var", "x")]).await;
    let make =
        |name: &str, path: &str, extra: serde_json::Value| release(name, "repo", path, extra);
    for (name, path, extra) in [
        (
            "missing-cm",
            "chart",
            serde_json::json!({"valuesFrom": [{"kind": "ConfigMap", "name": "late-values"}]}),
        ),
        (
            "missing-key",
            "chart",
            serde_json::json!({"valuesFrom": [{"kind": "ConfigMap", "name": "keyless"}]}),
        ),
        (
            "missing-secret",
            "subst",
            serde_json::json!({"postBuild": {"substituteFrom": [{"kind": "Secret", "name": "late-vars"}]}}),
        ),
        (
            "foreign-vars",
            "subst",
            serde_json::json!({"postBuild": {"substituteFrom": [{"kind": "ConfigMap", "name": "vars", "namespace": other.name}]}}),
        ),
        (
            "foreign-values",
            "chart",
            serde_json::json!({"valuesFrom": [{"kind": "ConfigMap", "name": "web-values", "namespace": other.name}]}),
        ),
        (
            "bad-path",
            "chart",
            serde_json::json!({"valuesFrom": [{"kind": "ConfigMap", "name": "keyless", "valuesKey": "other", "targetPath": "a[99999999]"}]}),
        ),
        (
            "bad-var",
            "subst",
            serde_json::json!({"postBuild": {"substituteFrom": [{"kind": "ConfigMap", "name": "badvars"}]}}),
        ),
    ] {
        create::<Release>(&client, &ns.name, make(name, path, extra)).await;
    }

    let cases = [
        (
            "missing-cm",
            "ValuesFromFailed",
            format!("ConfigMap {}/late-values does not exist", ns.name),
            false,
        ),
        (
            "missing-key",
            "ValuesFromFailed",
            format!("ConfigMap {}/keyless has no key \"values.yaml\"", ns.name),
            false,
        ),
        (
            "missing-secret",
            "SubstituteFromFailed",
            format!("Secret {}/late-vars does not exist", ns.name),
            false,
        ),
        (
            "foreign-vars",
            ferry_api::CROSS_NAMESPACE_REF_DENIED,
            format!("ConfigMap {}/vars is in another namespace", other.name),
            true,
        ),
        (
            "foreign-values",
            ferry_api::CROSS_NAMESPACE_REF_DENIED,
            format!(
                "ConfigMap {}/web-values is in another namespace",
                other.name
            ),
            true,
        ),
        (
            "bad-path",
            "InvalidSpec",
            "spec.valuesFrom[0].targetPath".to_string(),
            true,
        ),
        (
            "bad-var",
            "SubstituteFromFailed",
            "key \"not-a-var\" is not a valid variable name".to_string(),
            false,
        ),
    ];
    for (name, reason, expected, is_stalled) in &cases {
        let refused =
            wait_release_reason(&client, &ns.name, name, reason, Duration::from_secs(90)).await;
        let message = message_of(&refused);
        assert!(message.contains(expected), "{name}: {message}");
        assert_eq!(stalled(&refused), *is_stalled, "{name}: stalled? {message}");
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    for applied in ["web-values", "subst"] {
        assert!(
            cms.get_opt(applied).await.expect("get").is_none(),
            "{applied} was applied"
        );
    }

    // The missing objects appear: the Releases that waited for them apply (retried, not stalled).
    config_map(
        &client,
        &ns.name,
        "late-values",
        &[("values.yaml", "replicas: 4\n")],
    )
    .await;
    secret(
        &client,
        &ns.name,
        "late-vars",
        &[("GREETING", "late"), ("REGION", "r"), ("INLINE", "i")],
    )
    .await;
    wait_release_applied(
        &client,
        &ns.name,
        "missing-cm",
        &sha,
        Duration::from_secs(90),
    )
    .await;
    wait_release_applied(
        &client,
        &ns.name,
        "missing-secret",
        &sha,
        Duration::from_secs(90),
    )
    .await;
    let values = cms
        .get("web-values")
        .await
        .expect("chart ConfigMap")
        .data
        .unwrap_or_default();
    assert_eq!(values.get("replicas").map(String::as_str), Some("4"));
    let vars = cms
        .get("subst")
        .await
        .expect("substituted")
        .data
        .unwrap_or_default();
    assert_eq!(
        vars.get("greeting").map(String::as_str),
        Some("late"),
        "never the other namespace's"
    );
    agent.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn substituted_values_cannot_add_documents_or_keys() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "inputs-inject").await;
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: target\ndata:\n  doc: ${DOC}\n  keys: \"${KEYS}\"\n  flow: ${FLOW}\n  quoted: '${QUOTE}'\n";
    let repo = Repo::create(&env, &ns.name);
    let sha = repo.commit(&[("app/cm.yaml", Some(manifest))], "substituted");
    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    let doc = "x\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: injected\n";
    let keys = "a\nextra: key\nmore: \"keys\"";
    let flow = "{evil: true, name: injected}";
    let quote = "x'\n  injected: 'y";
    config_map(
        &client,
        &ns.name,
        "vars",
        &[("DOC", doc), ("KEYS", keys), ("FLOW", flow)],
    )
    .await;
    secret(&client, &ns.name, "secret-vars", &[("QUOTE", quote)]).await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1m"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release(
            "app",
            "repo",
            "app",
            serde_json::json!({"postBuild": {"substituteFrom": [
                {"kind": "ConfigMap", "name": "vars"},
                {"kind": "Secret", "name": "secret-vars"},
            ]}}),
        ),
    )
    .await;
    let applied =
        wait_release_applied(&client, &ns.name, "app", &sha, Duration::from_secs(90)).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let target = cms
        .get("target")
        .await
        .expect("target")
        .data
        .unwrap_or_default();
    // Each value landed as one string, byte for byte; no key or object was added.
    assert_eq!(target.get("doc").map(String::as_str), Some(doc));
    assert_eq!(target.get("keys").map(String::as_str), Some(keys));
    assert_eq!(target.get("flow").map(String::as_str), Some(flow));
    assert_eq!(target.get("quoted").map(String::as_str), Some(quote));
    let mut found: Vec<&String> = target.keys().collect();
    found.sort();
    assert_eq!(found, ["doc", "flow", "keys", "quoted"]);
    assert!(
        cms.get_opt("injected").await.expect("get").is_none(),
        "no injected document"
    );
    let inventory = applied.status.unwrap_or_default().inventory;
    assert_eq!(inventory.len(), 1, "one object applied: {inventory:?}");
    agent.stop().await.expect("agent stops");
}
