//! Attack tests for webhooks (issue 11, item 14) against the real agent HTTP server and the real
//! control plane. The attacker is this test: it replays a captured GitHub delivery (verbatim and
//! with a fresh delivery id), replays and back-dates a generic-hmac request, probes receiver
//! names (unknown receiver vs wrong signature), looks for `/metrics` on the webhook port and
//! sends oversized and trickling bodies and never-ending headers.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use ferry_agent::Agent;
use ferry_api::common::RECONCILE_REQUESTED_AT;
use ferry_api::{GitSource, Receiver};
use ferry_testsupport::{TestEnv, TestNamespace};
use kube::api::Api;
use kube::{Client, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "hook-s3cret-attack";

/// A raw HTTP request; the whole response with the `date` header removed (so that two answers
/// can be compared byte for byte).
async fn raw(addr: SocketAddr, path: &str, headers: &[(&str, String)], body: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to agent");
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write body");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out)
        .split("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("date:"))
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// Namespace, agent, a GitSource `repo` (interval 1h) and Receivers `github` (type github) and
/// `generic` (type generic-hmac), both targeting `repo`.
async fn setup(prefix: &str) -> (TestEnv, Client, TestNamespace, Agent, tempfile::TempDir) {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, prefix).await;
    let repo = Repo::create(&env, &ns.name);
    repo.commit(
        &[("app/a.yaml", Some(&configmap_yaml("a", "one")))],
        "first",
    );
    let (agent, cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    secret(&client, &ns.name, "hook-token", &[("token", TOKEN)]).await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1h"),
    )
    .await;
    for (name, kind) in [("github", "github"), ("generic", "generic-hmac")] {
        create::<Receiver>(
            &client,
            &ns.name,
            serde_json::json!({
                "apiVersion": "ferry.dev/v1alpha1", "kind": "Receiver",
                "metadata": {"name": name},
                "spec": {"type": kind, "secretRef": {"name": "hook-token"}, "resources": ["repo"]},
            }),
        )
        .await;
    }
    // The agent knows the receiver once a signed ping is accepted (it loads Receivers and
    // their Secrets in the background, not per request).
    let addr = agent.http_addr;
    let path = format!("/hook/{}/github", ns.name);
    ferry_testsupport::wait_for("receiver loaded", Duration::from_secs(30), || {
        let path = path.clone();
        async move {
            let body = format!("{{\"zen\":\"{}\"}}", ferry_testsupport::unique_name("ping"));
            let (status, _) = http(
                addr,
                "POST",
                &path,
                &[
                    ("X-GitHub-Event", "ping".into()),
                    (
                        "X-Hub-Signature-256",
                        github_signature(TOKEN, body.as_bytes()),
                    ),
                ],
                body.as_bytes(),
            )
            .await;
            Ok((status == 200).then_some(()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    (env, client, ns, agent, cache)
}

async fn requested_at(client: &Client, ns: &str) -> Option<String> {
    let api: Api<GitSource> = Api::namespaced(client.clone(), ns);
    let gs = api.get("repo").await.expect("GitSource");
    gs.annotations().get(RECONCILE_REQUESTED_AT).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replayed_deliveries_and_stale_timestamps_are_rejected() {
    let (_env, client, ns, agent, _cache) = setup("hook-replay").await;
    let path = format!("/hook/{}/github", ns.name);
    let body = serde_json::to_vec(&serde_json::json!({
        "ref": "refs/heads/main", "after": "0123456789abcdef0123456789abcdef01234567",
        "repository": {"clone_url": "https://example.invalid/x.git"},
    }))
    .expect("json");
    let delivery = |id: &str| {
        vec![
            ("X-GitHub-Event", "push".to_string()),
            ("X-GitHub-Delivery", id.to_string()),
            ("X-Hub-Signature-256", github_signature(TOKEN, &body)),
        ]
    };
    let (status, reply) = http(
        agent.http_addr,
        "POST",
        &path,
        &delivery("72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        &body,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("repo"), "{reply}");
    let first = requested_at(&client, &ns.name).await;
    assert!(first.is_some(), "the genuine delivery requested a fetch");

    // The attack: the captured delivery sent again, verbatim, then with a fresh delivery id
    // (the id is not covered by GitHub's signature, the body is).
    for id in [
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "00000000-0000-0000-0000-000000000001",
    ] {
        let (status, reply) = http(agent.http_addr, "POST", &path, &delivery(id), &body).await;
        assert_eq!(status, 409, "replay {id} rejected: {reply}");
        assert!(reply.contains("already accepted"), "{reply}");
    }
    assert_eq!(
        requested_at(&client, &ns.name).await,
        first,
        "replays triggered nothing"
    );

    // generic-hmac with a signed timestamp: a fresh one is accepted once; a replay and a
    // back-dated (correctly signed) one are rejected.
    let generic = format!("/hook/{}/generic", ns.name);
    let signed = |ts: i64, body: &[u8]| {
        let mut msg = ts.to_string().into_bytes();
        msg.push(b'.');
        msg.extend_from_slice(body);
        vec![
            ("X-Timestamp", ts.to_string()),
            ("X-Signature", github_signature(TOKEN, &msg)),
        ]
    };
    let now = chrono::Utc::now().timestamp();
    let (status, reply) = http(
        agent.http_addr,
        "POST",
        &generic,
        &signed(now, b"{}"),
        b"{}",
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let second = requested_at(&client, &ns.name).await;
    assert_ne!(second, first, "the fresh generic request triggered");
    let (status, _) = http(
        agent.http_addr,
        "POST",
        &generic,
        &signed(now, b"{}"),
        b"{}",
    )
    .await;
    assert_eq!(status, 409, "replayed generic request");
    let stale = now - 3600;
    let (status, reply) = http(
        agent.http_addr,
        "POST",
        &generic,
        &signed(stale, b"{\"x\":1}"),
        b"{\"x\":1}",
    )
    .await;
    assert_eq!(status, 401, "back-dated request: {reply}");
    // A timestamp header whose value was not the one signed: rejected.
    let mut forged = signed(now, b"{\"y\":1}");
    forged[0].1 = (now + 1).to_string();
    let (status, _) = http(agent.http_addr, "POST", &generic, &forged, b"{\"y\":1}").await;
    assert_eq!(status, 401);
    assert_eq!(requested_at(&client, &ns.name).await, second);
    agent.stop().await.expect("agent stops");
}

fn reads(agent: &Agent) -> u64 {
    let text = agent.metrics.encode();
    text.lines()
        .filter(|l| l.starts_with("ferry_api_requests_total{") && l.contains("operation=\"read\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn probing_receivers_learns_nothing_and_metrics_are_not_on_the_webhook_port() {
    let (_env, _client, ns, agent, _cache) = setup("hook-probe").await;
    let body = br#"{"ref":"refs/heads/main"}"#.to_vec();
    let wrong = vec![
        ("X-GitHub-Event", "push".to_string()),
        ("X-Hub-Signature-256", github_signature("guess", &body)),
    ];
    let probes: Vec<(String, Vec<(&str, String)>)> = vec![
        // a receiver that does not exist, in a watched namespace
        (format!("/hook/{}/nope", ns.name), wrong.clone()),
        // a namespace the agent does not watch
        ("/hook/kube-system/github".to_string(), wrong.clone()),
        // the real receiver, wrong signature
        (format!("/hook/{}/github", ns.name), wrong.clone()),
        // the real receiver, no signature
        (
            format!("/hook/{}/github", ns.name),
            vec![("X-GitHub-Event", "push".to_string())],
        ),
        // the generic-hmac receiver, wrong signature
        (format!("/hook/{}/generic", ns.name), {
            let mut h = wrong.clone();
            h.push(("X-Signature", github_signature("guess", &body)));
            h
        }),
    ];
    let reads_before = reads(&agent);
    let mut answers = Vec::new();
    let mut timings: Vec<Vec<Duration>> = vec![Vec::new(); probes.len()];
    for round in 0..20 {
        for (i, (path, headers)) in probes.iter().enumerate() {
            let started = Instant::now();
            let answer = raw(agent.http_addr, path, headers, &body).await;
            timings[i].push(started.elapsed());
            if round == 0 {
                answers.push(answer);
            } else {
                assert_eq!(answer, answers[i], "stable answer for {path}");
            }
        }
    }
    let reads_after = reads(&agent);
    assert!(answers[0].starts_with("HTTP/1.1 401"), "{}", answers[0]);
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(
            answer, &answers[0],
            "probe {i} ({}) is told apart from an unknown receiver",
            probes[i].0
        );
    }
    // Verification reads nothing from the API: 100 requests, (almost) no reads. The agent's
    // controllers may read a little in the background meanwhile, never one per request.
    assert!(
        reads_after - reads_before < 20,
        "API reads during 100 unauthenticated requests: {}",
        reads_after - reads_before
    );
    for (i, t) in timings.iter_mut().enumerate() {
        t.sort();
        eprintln!("probe {i} median {:?}", t[t.len() / 2]);
    }
    // Unknown names are not metric labels (an attacker could otherwise grow them at will).
    let text = agent.metrics.encode();
    assert!(!text.contains("/nope"), "{text}");
    assert!(!text.contains("kube-system/github"), "{text}");
    assert!(text.contains("receiver=\"unknown\""), "{text}");

    // /metrics is not served on the webhook port, only on --metrics-addr.
    let (status, _) = http(agent.http_addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 404, "no /metrics on the webhook port");
    let (status, metrics) = http(agent.metrics_addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("ferry_webhook_requests_total"),
        "{metrics}"
    );
    let (status, _) = http(
        agent.metrics_addr,
        "POST",
        &format!("/hook/{}/github", ns.name),
        &[],
        b"{}",
    )
    .await;
    assert_eq!(status, 404, "no webhooks on the metrics port");
    assert_ne!(agent.http_addr.port(), agent.metrics_addr.port());
    agent.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversize_and_trickling_bodies_are_cut_off() {
    let (_env, client, ns, agent, _cache) = setup("hook-size").await;
    let before = requested_at(&client, &ns.name).await;
    let path = format!("/hook/{}/github", ns.name);

    // Declares 1 GiB, sends 2 MiB: 413 without the agent waiting for (or buffering) the rest.
    let mut stream = tokio::net::TcpStream::connect(agent.http_addr)
        .await
        .expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\nX-Hub-Signature-256: sha256=00\r\nContent-Length: {}\r\n\r\n",
        1u64 << 30
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..32 {
        if stream.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let mut reply = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut reply))
        .await
        .expect("answered without the whole body")
        .expect("read");
    let reply = String::from_utf8_lossy(&reply[..n]).to_string();
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");

    // Chunked, no length, past the cap: 413 as well.
    let mut stream = tokio::net::TcpStream::connect(agent.http_addr)
        .await
        .expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: sha256=00\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    for _ in 0..32 {
        let piece = format!("{:x}\r\n", chunk.len());
        if stream.write_all(piece.as_bytes()).await.is_err()
            || stream.write_all(&chunk).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let mut reply = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut reply))
        .await
        .expect("answered")
        .expect("read");
    let reply = String::from_utf8_lossy(&reply[..n]).to_string();
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");

    // A body that never completes: the request is ended by the server's timeout (408).
    let mut stream = tokio::net::TcpStream::connect(agent.http_addr)
        .await
        .expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: sha256=00\r\nContent-Length: 100\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let started = Instant::now();
    let mut reply = vec![0u8; 1024];
    let n = tokio::time::timeout(
        ferry_agent::http::REQUEST_TIMEOUT + Duration::from_secs(15),
        stream.read(&mut reply),
    )
    .await
    .expect("the server ended the request")
    .expect("read");
    let reply = String::from_utf8_lossy(&reply[..n]).to_string();
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(started.elapsed() >= ferry_agent::http::REQUEST_TIMEOUT - Duration::from_secs(1));
    // Headers that never complete (slowloris): the connection is dropped after the header
    // timeout instead of being held forever.
    let mut stream = tokio::net::TcpStream::connect(agent.http_addr)
        .await
        .expect("connect");
    stream
        .write_all(format!("POST {path} HTTP/1.1\r\nHost: x\r\nX-Slow: ").as_bytes())
        .await
        .expect("partial head");
    let started = Instant::now();
    let mut buf = vec![0u8; 1024];
    let closed = tokio::time::timeout(
        ferry_agent::http::HEADER_TIMEOUT + Duration::from_secs(15),
        async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        },
    )
    .await;
    assert!(closed.is_ok(), "the server dropped the slow connection");
    assert!(started.elapsed() >= ferry_agent::http::HEADER_TIMEOUT - Duration::from_secs(1));
    assert_eq!(
        requested_at(&client, &ns.name).await,
        before,
        "nothing triggered"
    );
    agent.stop().await.expect("agent stops");
}
