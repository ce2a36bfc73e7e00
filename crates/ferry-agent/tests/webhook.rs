//! Webhook receivers against the real agent HTTP server: a signed GitHub push makes the
//! GitSource fetch at once (its interval is an hour), forged/unsigned/oversized requests are
//! rejected and trigger nothing.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ferry_api::{GitSource, Receiver, Release};
use ferry_testsupport::{TestEnv, TestNamespace};
use kube::api::Api;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_push_triggers_fetch_at_once_and_forgeries_are_rejected() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "agent-hook").await;
    let repo = Repo::create(&env, &ns.name);
    let first = repo.commit(
        &[("app/a.yaml", Some(&configmap_yaml("a", "one")))],
        "first",
    );
    let (agent, _cache) = start_agent(&env, &[&ns.name], |o| {
        // Also run the Sealed Secrets unsealer, keys in the test namespace.
        o.namespace = ns.name.clone();
        o.sealed_secrets = true;
    })
    .await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    secret(&client, &ns.name, "hook-token", &[("token", "hook-s3cret")]).await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1h"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release("app", "repo", "app", serde_json::json!({"interval": "1h"})),
    )
    .await;
    create::<Receiver>(
        &client,
        &ns.name,
        serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "Receiver",
            "metadata": {"name": "github"},
            "spec": {"type": "github", "secretRef": {"name": "hook-token"}},
        }),
    )
    .await;
    wait_release_applied(&client, &ns.name, "app", &first, Duration::from_secs(60)).await;
    let path = format!("/hook/{}/github", ns.name);
    let payload = |sha: &str| {
        serde_json::to_vec(&serde_json::json!({
            "ref": "refs/heads/main", "after": sha,
            "repository": {"clone_url": repo.url, "full_name": format!("test/{}", ns.name)},
        }))
        .expect("json")
    };

    // Forged signature and missing signature: 401, nothing fetched.
    let second = repo.commit(
        &[("app/a.yaml", Some(&configmap_yaml("a", "two")))],
        "second",
    );
    let body = payload(&second);
    let (status, _) = http(
        agent.http_addr,
        "POST",
        &path,
        &[
            ("X-GitHub-Event", "push".into()),
            ("X-Hub-Signature-256", github_signature("wrong", &body)),
        ],
        &body,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = http(
        agent.http_addr,
        "POST",
        &path,
        &[("X-GitHub-Event", "push".into())],
        &body,
    )
    .await;
    assert_eq!(status, 401);
    // Oversized payload: 413.
    let big = vec![b'x'; 2 * 1024 * 1024];
    let (status, _) = http(
        agent.http_addr,
        "POST",
        &path,
        &[("X-Hub-Signature-256", github_signature("hook-s3cret", &big))],
        &big,
    )
    .await;
    assert_eq!(status, 413);
    let sources: Api<GitSource> = Api::namespaced(client.clone(), &ns.name);
    let gs = sources.get("repo").await.expect("source");
    assert!(
        gs.status
            .unwrap_or_default()
            .revision
            .unwrap_or_default()
            .ends_with(&first),
        "rejected requests fetched nothing"
    );

    // A correctly signed push: applied within seconds although the interval is an hour.
    let started = Instant::now();
    let (status, reply) = http(
        agent.http_addr,
        "POST",
        &path,
        &[
            ("X-GitHub-Event", "push".into()),
            (
                "X-Hub-Signature-256",
                github_signature("hook-s3cret", &body),
            ),
        ],
        &body,
    )
    .await;
    assert_eq!(status, 200, "reply: {reply}");
    assert!(
        reply.contains("repo"),
        "reply names the triggered source: {reply}"
    );
    wait_release_applied(&client, &ns.name, "app", &second, Duration::from_secs(20)).await;
    let latency = started.elapsed();
    eprintln!("webhook commit-to-applied latency: {latency:?}");
    assert!(latency < Duration::from_secs(10), "latency {latency:?}");

    // Metrics count the outcomes.
    // /metrics is on its own port (--metrics-addr), not the webhook port.
    let (status, metrics) = http(agent.metrics_addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("ferry_webhook_requests_total"),
        "{metrics}"
    );
    assert!(metrics.contains("result=\"unauthorized\""));
    assert!(metrics.contains("ferry_reconcile_total"));
    for name in [
        "ferry_reconcile_duration_seconds",
        "ferry_source_fetch_duration_seconds",
        "ferry_queue_depth",
        "ferry_api_requests_total",
    ] {
        assert!(metrics.contains(name), "metrics expose {name}");
    }
    let (status, _) = http(agent.http_addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(status, 200);
    // The unsealer's certificate is served for `ferry seal` / kubeseal.
    let addr = agent.http_addr;
    let pem = ferry_testsupport::wait_for(
        "sealing certificate served",
        Duration::from_secs(60),
        || async move {
            let (status, body) = http(addr, "GET", "/v1/cert.pem", &[], b"").await;
            Ok((status == 200).then_some(body))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(pem.contains("BEGIN CERTIFICATE"), "{pem}");
    agent.stop().await.expect("agent stops");
}
