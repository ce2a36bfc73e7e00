//! The unsealer controller against the real testenv API server: it generates and stores its
//! key, turns a SealedSecret into an owned Secret, restores the Secret when it is edited or
//! deleted, and reports a strict seal moved to another name as not synced, without plaintext
//! (in status and in Events). It runs on the agent's shared Context, counts its reconciles in
//! the agent's metrics, and stops gracefully when told to. The tests start it alone, with a
//! small key and a short renewal period that the agent's flags do not offer; the agent starts
//! it with `--sealed-secrets` (tests/webhook.rs, tests/attack_tenancy.rs).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_agent::AgentOptions;
use ferry_agent::context::{Context, counted_client};
use ferry_agent::controllers::unsealer::{self, CertificateHandle, UnsealerOptions};
use ferry_agent::metrics::Metrics;
use ferry_engine::cluster::{ClusterOptions, load_config};
use ferry_engine::decrypt::sealed::{self, KeyBits, Scope, SealedSecret};
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt, ResourceExt};
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(60);

/// The Context the agent's controllers share, built as the agent builds it for a leadership term
/// (admin kubeconfig, counted client, a stop token), watching only `ns`.
async fn agent_context(env: &TestEnv, ns: &str) -> (Arc<Context>, tempfile::TempDir) {
    let cache = tempfile::tempdir().expect("cache dir");
    let mut options = AgentOptions::for_kubeconfig(env.kubeconfig(), cache.path().to_path_buf());
    options.watch_namespaces = vec![ns.to_string()];
    let config = load_config(&ClusterOptions {
        kubeconfig: Some(env.kubeconfig()),
        context: None,
    })
    .await
    .expect("kubeconfig");
    let metrics = Arc::new(Metrics::new());
    let client = counted_client(config.clone(), metrics.clone()).expect("client");
    let ctx = Context::new(client, config, options, metrics, CancellationToken::new());
    (Arc::new(ctx), cache)
}

/// The unsealer on `ctx` with a 2048-bit key (quick to generate), keys in `ns`; it stops when
/// the Context's stop token is cancelled.
fn start(
    ctx: &Arc<Context>,
    ns: &str,
    renew_period: Option<Duration>,
    key_refresh: Duration,
) -> (
    CertificateHandle,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), unsealer::KeyStoreError>>,
) {
    let handle = CertificateHandle::default();
    let options = UnsealerOptions {
        key_namespace: ns.to_string(),
        watch_namespaces: vec![ns.to_string()],
        key_bits: KeyBits::Rsa2048,
        renew_period,
        key_refresh,
        certificates: handle.clone(),
    };
    let task = tokio::spawn(unsealer::run(ctx.clone(), options));
    (handle, ctx.stop.clone(), task)
}

/// Notes of the Events about `name` with `reason`.
async fn event_notes(client: &Client, ns: &str, name: &str, reason: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let list = events
        .list(&ListParams::default())
        .await
        .expect("list events");
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.note)
        .collect()
}

async fn install_crd(client: &Client) {
    let crd = serde_json::to_value(SealedSecret::crd()).expect("CRD as JSON");
    ferry_testsupport::install_crds(client, &[crd], "ferry-test").await;
}

fn data() -> BTreeMap<String, ByteString> {
    BTreeMap::from([
        (
            "password".to_string(),
            ByteString(b"ctrl-s3cret-77".to_vec()),
        ),
        ("user".to_string(), ByteString(b"app".to_vec())),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsealer_controller_creates_and_resyncs_owned_secrets() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "unseal").await;
    let (ctx, _cache) = agent_context(&env, &ns.name).await;
    let (handle, stop, task) = start(&ctx, &ns.name, None, Duration::from_secs(5));

    let cert = wait_for("the unsealer's certificate", TIMEOUT, || {
        let handle = handle.clone();
        async move { Ok(handle.certificate_pem()) }
    })
    .await
    .expect("certificate");

    // The key is stored bitnami-style.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let keys = secrets
        .list(&ListParams::default().labels("sealedsecrets.bitnami.com/sealed-secrets-key=active"))
        .await
        .expect("list keys");
    assert_eq!(keys.items.len(), 1);
    assert_eq!(keys.items[0].type_.as_deref(), Some("kubernetes.io/tls"));

    // Seal a Secret for this unsealer and create the SealedSecret.
    let public = sealed::public_key_from_certificate_pem(cert.as_bytes()).expect("cert");
    let mut secret = Secret {
        data: Some(data()),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    secret.metadata.name = Some("db".into());
    secret.metadata.namespace = Some(ns.name.clone());
    secret.metadata.labels = Some(BTreeMap::from([("app".into(), "db".into())]));
    let sealed_secret = sealed::seal_secret(&secret, &public, Scope::Strict, None).expect("seal");
    let api: Api<SealedSecret> = Api::namespaced(client.clone(), &ns.name);
    let created = api
        .create(&PostParams::default(), &sealed_secret)
        .await
        .expect("create SealedSecret");
    let uid = created.uid().expect("uid");

    let wait_secret = |what: &'static str| {
        let secrets = secrets.clone();
        let uid = uid.clone();
        async move {
            wait_for(what, TIMEOUT, || {
                let secrets = secrets.clone();
                let uid = uid.clone();
                async move {
                    let Some(s) = secrets.get_opt("db").await? else {
                        return Ok(None);
                    };
                    let owned = s.owner_references().iter().any(|o| {
                        o.uid == uid && o.kind == "SealedSecret" && o.controller == Some(true)
                    });
                    Ok((owned && s.data.as_ref() == Some(&data())).then_some(s))
                }
            })
            .await
        }
    };
    let unsealed = wait_secret("the unsealed Secret")
        .await
        .expect("unsealed Secret");
    assert_eq!(
        unsealed.labels().get("app").map(String::as_str),
        Some("db"),
        "template labels are honoured"
    );

    let synced = wait_for("status Synced=True", TIMEOUT, || {
        let api = api.clone();
        async move {
            let s = api.get("db").await?;
            let ok = s
                .status
                .iter()
                .flat_map(|st| st.conditions.iter())
                .any(|c| c.type_ == "Synced" && c.status == "True");
            Ok(ok.then_some(()))
        }
    })
    .await;
    synced.expect("synced");

    // Deleted → re-created.
    secrets
        .delete("db", &DeleteParams::default())
        .await
        .expect("delete Secret");
    wait_secret("the Secret to be re-created")
        .await
        .expect("re-created");

    // Edited → restored.
    let patch = serde_json::json!({ "data": { "password": "dGFtcGVyZWQ=" } });
    secrets
        .patch("db", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("edit Secret");
    wait_secret("the edited Secret to be restored")
        .await
        .expect("restored");

    // A strict seal copied to another name is refused, with a message free of plaintext.
    let mut moved = sealed_secret.clone();
    moved.metadata.name = Some("copied".into());
    api.create(&PostParams::default(), &moved)
        .await
        .expect("create moved");
    let message = wait_for("status Synced=False on the moved copy", TIMEOUT, || {
        let api = api.clone();
        async move {
            let s = api.get("copied").await?;
            Ok(s.status
                .iter()
                .flat_map(|st| st.conditions.iter())
                .find(|c| c.type_ == "Synced" && c.status == "False")
                .and_then(|c| c.message.clone()))
        }
    })
    .await
    .expect("not synced");
    assert!(message.contains("no key can unseal"), "{message}");
    assert!(!message.contains("ctrl-s3cret-77"), "{message}");
    assert!(
        secrets.get_opt("copied").await.expect("get").is_none(),
        "no Secret for a refused seal"
    );

    // Events, as the agent's other controllers publish them: Normal when unsealed, Warning when
    // not, with the status message (no plaintext).
    let unsealed_notes = wait_for("an Unsealed event for db", TIMEOUT, || {
        let client = client.clone();
        let ns = ns.name.clone();
        async move {
            let notes = event_notes(&client, &ns, "db", "Unsealed").await;
            Ok((!notes.is_empty()).then_some(notes))
        }
    })
    .await
    .expect("Unsealed event");
    assert!(
        unsealed_notes.iter().all(|n| n == "Secret unsealed"),
        "{unsealed_notes:?}"
    );
    let failed_notes = wait_for("an ErrUnsealFailed event for the copy", TIMEOUT, || {
        let client = client.clone();
        let ns = ns.name.clone();
        async move {
            let notes = event_notes(&client, &ns, "copied", "ErrUnsealFailed").await;
            Ok((!notes.is_empty()).then_some(notes))
        }
    })
    .await
    .expect("ErrUnsealFailed event");
    assert!(
        failed_notes
            .iter()
            .all(|n| n.contains("no key can unseal") && !n.contains("ctrl-s3cret-77")),
        "{failed_notes:?}"
    );

    // The agent's reconcile metrics count the unsealer's work by kind and result.
    let metrics = ctx.metrics.encode();
    let counted = |result: &str, name: &str| {
        metrics.lines().any(|l| {
            l.starts_with("ferry_reconcile_total{")
                && l.contains("kind=\"SealedSecret\"")
                && l.contains(&format!("name=\"{name}\""))
                && l.contains(&format!("result=\"{result}\""))
        })
    };
    assert!(counted("success", "db"), "{metrics}");
    assert!(counted("failure", "copied"), "{metrics}");

    // A graceful stop: the controllers and the key loop end by themselves, nothing is aborted.
    stop.cancel();
    let stopped = tokio::time::timeout(TIMEOUT, task)
        .await
        .expect("the unsealer stops when told to")
        .expect("the unsealer task");
    assert!(stopped.is_ok(), "{stopped:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsealer_renews_keys_and_keeps_old_ones_for_unsealing() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "renew").await;
    let (ctx, _cache) = agent_context(&env, &ns.name).await;
    let (handle, stop, task) = start(
        &ctx,
        &ns.name,
        Some(Duration::from_secs(3)),
        Duration::from_secs(1),
    );
    let first = wait_for("the first certificate", TIMEOUT, || {
        let handle = handle.clone();
        async move { Ok(handle.certificate_pem()) }
    })
    .await
    .expect("first certificate");
    let second = wait_for("a renewed certificate", TIMEOUT, || {
        let handle = handle.clone();
        let first = first.clone();
        async move { Ok(handle.certificate_pem().filter(|pem| *pem != first)) }
    })
    .await
    .expect("renewed certificate");
    assert_ne!(first, second);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let keys = secrets
        .list(&ListParams::default().labels("sealedsecrets.bitnami.com/sealed-secrets-key=active"))
        .await
        .expect("list keys");
    assert!(
        keys.items.len() >= 2,
        "old keys are kept: {}",
        keys.items.len()
    );

    // A SealedSecret sealed with the first (now old) certificate still unseals.
    let public = sealed::public_key_from_certificate_pem(first.as_bytes()).expect("cert");
    let mut secret = Secret {
        data: Some(data()),
        ..Default::default()
    };
    secret.metadata.name = Some("old".into());
    secret.metadata.namespace = Some(ns.name.clone());
    let sealed_secret = sealed::seal_secret(&secret, &public, Scope::Strict, None).expect("seal");
    let api: Api<SealedSecret> = Api::namespaced(client.clone(), &ns.name);
    api.create(&PostParams::default(), &sealed_secret)
        .await
        .expect("create");
    wait_for("the Secret sealed with the old key", TIMEOUT, || {
        let secrets = secrets.clone();
        async move {
            let s = secrets.get_opt("old").await?;
            Ok(s.filter(|s| s.data.as_ref() == Some(&data())).map(|_| ()))
        }
    })
    .await
    .expect("old-key secret unsealed");
    stop.cancel();
    let stopped = tokio::time::timeout(TIMEOUT, task)
        .await
        .expect("the unsealer stops when told to")
        .expect("the unsealer task");
    assert!(stopped.is_ok(), "{stopped:?}");
}
