//! Attack tests for issue 11, items 1, 4 and 11, through the real in-process agent: a tenant
//! writes a Release whose `spec.render` tries to inject a helm flag (`releaseName:
//! --post-renderer=/bin/sh`, with a chart whose output is also a shell script), to render a
//! chart from the agent's own disk (a chart name without a repository), and to make kustomize
//! fetch a URL although the agent runs with `--no-remote-bases`. Each Release must fail with a
//! clear status message, and nothing may run, be read or be fetched.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use ferry_api::{GitSource, Release};
use ferry_testsupport::{TestEnv, TestNamespace};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;

/// Hostile HTTP peer standing in for an internal endpoint the agent can reach: counts every
/// connection and serves something a tenant would like to read.
fn hostile_peer() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let body = "INTERNAL=stolen\n";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, hits)
}

async fn wait_failed(client: &kube::Client, ns: &str, name: &str, reason: &str) -> String {
    let release: Release =
        wait_release_reason(client, ns, name, reason, Duration::from_secs(60)).await;
    let (status, _, message) =
        ready_state(&release.status.unwrap_or_default().conditions).expect("Ready condition");
    assert_eq!(status, "False", "{name}: {message}");
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spec_render_cannot_inject_flags_read_the_agents_disk_or_load_remotely() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "attack-spec-render").await;
    let marker_dir = tempfile::tempdir().expect("marker dir");
    let marker = marker_dir.path().join("pwned");
    let (peer, hits) = hostile_peer();
    // A chart on "the agent's disk", outside any checkout.
    let outside = tempfile::tempdir().expect("outside");
    let agent_chart = outside.path().join("agent-chart");
    std::fs::create_dir_all(agent_chart.join("templates")).expect("mkdir");
    std::fs::write(
        agent_chart.join("Chart.yaml"),
        "apiVersion: v2\nname: agent-chart\nversion: 0.1.0\n",
    )
    .expect("write");
    std::fs::write(
        agent_chart.join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-agent-disk}\n",
    )
    .expect("write");

    let repo = Repo::create(&env, &ns.name);
    // `x=1; touch MARKER; y: z` is a mapping key to helm and a command line to /bin/sh: with
    // `--post-renderer=/bin/sh` on helm's argv the marker would appear.
    let shell_template = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shell\n  annotations:\n    x=1; touch {}; y: z\n",
        marker.display()
    );
    let sha = repo.commit(
        &[
            (
                "evil/Chart.yaml",
                Some("apiVersion: v2\nname: evil\nversion: 0.1.0\n"),
            ),
            ("evil/templates/cm.yaml", Some(&shell_template)),
            (
                "good/Chart.yaml",
                Some("apiVersion: v2\nname: good\nversion: 0.1.0\n"),
            ),
            (
                "good/templates/cm.yaml",
                Some(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: good}\ndata:\n  release: {{ .Release.Name }}\n",
                ),
            ),
            (
                "remote/kustomization.yaml",
                Some(&format!(
                    "configMapGenerator:\n- name: stolen\n  files: [{peer}/secret.txt]\n"
                )),
            ),
        ],
        "charts",
    );
    let (_agent, _cache) = start_agent(&env, &[&ns.name], |o| o.no_remote_bases = true).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1m"),
    )
    .await;

    // Item 1: a helm flag through spec.render.helm.releaseName.
    create::<Release>(
        &client,
        &ns.name,
        release(
            "inject",
            "repo",
            "evil",
            serde_json::json!({"render": {"renderer": "helm", "helm": {"releaseName": "--post-renderer=/bin/sh"}}}),
        ),
    )
    .await;
    // Item 4: a chart name without a repository, naming a chart on the agent's disk.
    create::<Release>(
        &client,
        &ns.name,
        release(
            "agent-disk",
            "repo",
            "good",
            serde_json::json!({"render": {"renderer": "helm", "helm": {"chart": {"name": agent_chart.display().to_string()}}}}),
        ),
    )
    .await;
    // Item 11: the tenant allows remote loading; the agent forbids it.
    create::<Release>(
        &client,
        &ns.name,
        release(
            "remote",
            "repo",
            "remote",
            serde_json::json!({"render": {"kustomize": {"allowRemoteBases": true}}}),
        ),
    )
    .await;
    // Control: a legitimate spec.render renders and applies.
    create::<Release>(
        &client,
        &ns.name,
        release(
            "good",
            "repo",
            "good",
            serde_json::json!({"render": {"renderer": "helm", "helm": {"releaseName": "good-release"}}}),
        ),
    )
    .await;

    let message = wait_failed(&client, &ns.name, "inject", "InvalidSpec").await;
    assert!(
        message.contains(&format!("Release {}/inject spec.render", ns.name)),
        "names the object: {message}"
    );
    assert!(message.contains("helm.releaseName"), "{message}");
    assert!(message.contains("is invalid"), "{message}");

    let message = wait_failed(&client, &ns.name, "agent-disk", "InvalidSpec").await;
    assert!(message.contains("spec.render"), "{message}");
    assert!(message.contains("exactly one of"), "{message}");

    let message = wait_failed(&client, &ns.name, "remote", "RenderFailed").await;
    assert!(message.contains("--no-remote-bases"), "{message}");

    wait_release_applied(&client, &ns.name, "good", &sha, Duration::from_secs(60)).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let good = cms.get("good").await.expect("control ConfigMap");
    assert_eq!(
        good.data
            .unwrap_or_default()
            .get("release")
            .map(String::as_str),
        Some("good-release")
    );

    assert!(!marker.exists(), "the post-renderer must never have run");
    for name in ["shell", "from-agent-disk"] {
        assert!(
            cms.get_opt(name).await.expect("get").is_none(),
            "{name} must not have been created"
        );
    }
    assert!(
        cms.list(&Default::default())
            .await
            .expect("list")
            .items
            .iter()
            .all(|cm| !cm
                .metadata
                .name
                .as_deref()
                .unwrap_or_default()
                .starts_with("stolen")),
        "nothing fetched may be applied"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing may be fetched");
}
