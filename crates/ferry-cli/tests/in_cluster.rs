//! The agent as a real pod (issue 12, part 3): `ferry install` (the real CLI) runs the agent
//! image from the test registry on the testenv's real node (kubelet, containerd, runc), where it
//! talks to the API server the in-cluster way with the shipped RBAC only, fetches from the git
//! server through the node address (`FERRY_GIT_URL_FROM_PODS`, testenv/node-up's
//! gitserver-forward) and deploys a tenant's Release; a replacement pod takes over when the
//! agent pod is deleted, and answers a webhook sent through the agent's Service. `ferry logs`
//! and `ferry version` are tested here too: they read those agent pods.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_api::Release;
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

/// Run a command; (exit code, stdout, stderr).
fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ferry(env: &TestEnv) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.env_remove("CI")
        .env("NO_COLOR", "1")
        .env("KUBECONFIG", env.kubeconfig())
        .env("PATH", env.path_env());
    cmd
}

/// The agent image: `$FERRY_AGENT_IMAGE`, else `$FERRY_REGISTRY/ferry/ferry-agent:<version>`
/// (what `scripts/image --push` publishes), as `repository@digest`. Panics (never skips) with the
/// command that publishes it.
fn agent_image(env: &TestEnv) -> (String, String) {
    let reference = std::env::var("FERRY_AGENT_IMAGE").unwrap_or_else(|_| {
        format!(
            "{}/ferry/ferry-agent:{}",
            env.var("FERRY_REGISTRY"),
            env!("CARGO_PKG_VERSION")
        )
    });
    let (code, out, err) =
        run(Command::new(env.tool("crane")).args(["digest", "--insecure", &reference]));
    assert_eq!(
        code, 0,
        "no agent image at {reference} ({err}): publish it with `scripts/image --push {reference}`"
    );
    let repository = reference
        .rsplit_once(':')
        .map(|(repo, _)| repo.to_string())
        .unwrap_or(reference.clone());
    let digest = out.trim().to_string();
    (format!("{repository}@{digest}"), digest)
}

/// Deletes the cluster-scoped objects `ferry install --namespace <ns>` creates (its ClusterRole
/// and both ClusterRoleBindings, one of them to cluster-admin; their names carry the namespace)
/// when dropped, also when the test fails. Runs kubectl (blocking): the runtime may be stopping.
struct ClusterScoped {
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    namespace: String,
}

impl Drop for ClusterScoped {
    fn drop(&mut self) {
        let ns = &self.namespace;
        let result = Command::new(&self.kubectl)
            .args([
                "delete",
                "--ignore-not-found",
                "--wait=false",
                &format!("clusterrole/ferry-agent-{ns}"),
                &format!("clusterrolebinding/ferry-agent-{ns}"),
                &format!("clusterrolebinding/ferry-admin-{ns}"),
            ])
            .env("KUBECONFIG", &self.kubeconfig)
            .output();
        if let Ok(out) = result
            && !out.status.success()
        {
            eprintln!(
                "warning: cleaning up the cluster-scoped objects of {ns}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let (code, out, err) = run(Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@ferry.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@ferry.invalid")
        .env("GIT_TERMINAL_PROMPT", "0"));
    assert_eq!(code, 0, "git {args:?}: {err}");
    out.trim().to_string()
}

/// A repository `<name>.git` on the testenv git server (pushed to from the host); removed from
/// the server when dropped.
struct Repo {
    name: String,
    bare: PathBuf,
    work: tempfile::TempDir,
    push_url: String,
}

impl Drop for Repo {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.bare) {
            eprintln!(
                "warning: removing the test repository {}: {e}",
                self.bare.display()
            );
        }
    }
}

impl Repo {
    fn create(env: &TestEnv, name: &str) -> Self {
        let bare_dir = PathBuf::from(env.var("FERRY_GIT_ROOT")).join(format!("{name}.git"));
        let bare = bare_dir.to_str().expect("utf-8 path");
        git(
            Path::new("/"),
            &["init", "--bare", "--initial-branch=main", bare],
        );
        git(Path::new(bare), &["config", "http.receivepack", "true"]);
        let work = tempfile::tempdir().expect("work dir");
        git(work.path(), &["init", "--initial-branch=main"]);
        let base = env.var("FERRY_GIT_URL");
        let (scheme, rest) = base.split_once("://").expect("FERRY_GIT_URL has a scheme");
        let push_url = format!(
            "{scheme}://{}:{}@{rest}/{name}.git",
            env.var("FERRY_GIT_USER"),
            env.var("FERRY_GIT_PASSWORD")
        );
        Self {
            name: name.to_string(),
            bare: bare_dir,
            work,
            push_url,
        }
    }

    /// Write the files, commit, push; the commit's SHA.
    fn commit(&self, files: &[(&str, &str)]) -> String {
        for (path, text) in files {
            let full = self.work.path().join(path);
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(&full, text).expect("write");
        }
        git(self.work.path(), &["add", "-A"]);
        git(self.work.path(), &["commit", "-q", "-m", "app"]);
        git(
            self.work.path(),
            &["push", "-q", &self.push_url, "HEAD:refs/heads/main"],
        );
        git(self.work.path(), &["rev-parse", "HEAD"])
    }
}

/// Server-side apply a JSON object with the admin client (test setup).
async fn apply_object(client: &kube::Client, object: Value) {
    let gvk = GroupVersionKind::try_from(&kube::api::TypeMeta {
        api_version: object["apiVersion"]
            .as_str()
            .expect("apiVersion")
            .to_string(),
        kind: object["kind"].as_str().expect("kind").to_string(),
    })
    .expect("gvk");
    let plural = format!("{}s", gvk.kind.to_lowercase());
    let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
    let ns = object["metadata"]["namespace"].as_str().expect("namespace");
    let name = object["metadata"]["name"].as_str().expect("name");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    api.patch(
        name,
        &PatchParams::apply("ferry-in-cluster-test").force(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap_or_else(|e| panic!("{plural} {name}: {e}"));
}

fn app_files(value: &str) -> [(&'static str, String); 2] {
    [
        (
            "app/config.yaml",
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\ndata:\n  value: \"{value}\"\n"
            ),
        ),
        (
            "app/deployment.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: app}\n  template:\n    metadata:\n      labels: {app: app}\n    spec:\n      containers:\n      - name: app\n        image: registry.invalid/app:1\n"
                .to_string(),
        ),
    ]
}

/// Wait until the Release is Ready with `lastAppliedRevision` at `sha`.
async fn wait_release_at(releases: &Api<Release>, sha: &str, timeout: Duration) -> Release {
    wait_for(&format!("Release app Ready at {sha}"), timeout, || {
        let releases = releases.clone();
        async move {
            let r = releases.get("app").await?;
            let status = r.status.clone().unwrap_or_default();
            let at = status
                .last_applied_revision
                .as_deref()
                .is_some_and(|rev| rev.ends_with(sha));
            if at && ferry_api::common::is_ready(&status.conditions) {
                return Ok(Some(r));
            }
            anyhow::bail!(
                "lastApplied={:?} conditions={:?}",
                status.last_applied_revision,
                status.conditions
            )
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Wait until `count` agent pods (the Deployment's selector) on the real node, none of them in
/// `exclude`, are Ready and not terminating; each with the seconds from its creation to its
/// Ready condition, as the API server recorded them.
async fn ready_agent_pods(
    pods: &Api<Pod>,
    node: &str,
    exclude: &[String],
    count: usize,
    timeout: Duration,
) -> Vec<(Pod, i64)> {
    wait_for(
        &format!("{count} Ready agent pods on the real node"),
        timeout,
        || {
            let pods = pods.clone();
            async move {
                let list = pods
                    .list(&ListParams::default().labels("app.kubernetes.io/name=ferry-agent"))
                    .await?;
                let (mut ready_pods, mut seen) = (Vec::new(), Vec::new());
                for pod in list.items {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    let terminating = pod.metadata.deletion_timestamp.is_some();
                    let ready = pod
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status == "True"))
                        .and_then(|c| c.last_transition_time.clone());
                    let on_node =
                        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node);
                    match ready {
                        Some(ready_at) if !terminating && on_node && !exclude.contains(&name) => {
                            let created = pod
                                .metadata
                                .creation_timestamp
                                .clone()
                                .map(|t| t.0.as_second())
                                .unwrap_or_default();
                            ready_pods.push((pod, ready_at.0.as_second() - created));
                        }
                        _ => seen.push((name, pod.status.map(|s| (s.phase, s.container_statuses)))),
                    }
                }
                if ready_pods.len() >= count {
                    return Ok(Some(ready_pods));
                }
                anyhow::bail!("{} Ready; others: {seen:?}", ready_pods.len())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// POST a generic webhook (bearer `token`) to `addr` (the agent's Service); (status, body).
/// Retried only while the connection fails (nothing reached the agent: no replay).
async fn post_hook(addr: &str, path: &str, token: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = b"{}";
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: ferry-agent\r\nConnection: close\r\n\
         Content-Type: application/json\r\nAuthorization: Bearer {token}\r\n\
         X-Delivery-Id: in-cluster-test-1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = wait_for(
        &format!("a connection to the agent's Service at {addr}"),
        Duration::from_secs(30),
        || async move { Ok(Some(tokio::net::TcpStream::connect(addr).await?)) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write the request");
    stream.write_all(body).await.expect("write the body");
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.expect("read the answer");
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let reply = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, reply)
}

/// Wait for the Event about Release `app` that says commit `sha` was applied, reported by agent
/// pod `pod` (the Event's reportingInstance is the agent's identity, its POD_NAME): proof that
/// the pod on the real node, not some other agent, applied it.
async fn wait_event_from(client: &kube::Client, namespace: &str, pod: &str, sha: &str) {
    use k8s_openapi::api::events::v1::Event;
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    wait_for(
        &format!("an Event from {pod} that {sha} was applied"),
        Duration::from_secs(60),
        || {
            let events = events.clone();
            async move {
                let list = events.list(&ListParams::default()).await?;
                let mut seen = Vec::new();
                for e in list.items {
                    let about = e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("app")
                        && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Release");
                    if about
                        && e.reason.as_deref() == Some("Synced")
                        && e.note.as_deref().is_some_and(|n| n.contains(sha))
                        && e.reporting_instance.as_deref() == Some(pod)
                    {
                        return Ok(Some(()));
                    }
                    seen.push((e.reason, e.reporting_instance, e.note));
                }
                anyhow::bail!("events: {seen:?}")
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// `ferry logs` and `ferry version` against the agent pods this test runs (issue 16): the log
/// records about the Release, read from the pods through the API server, are exactly those
/// whose `release` or `object` field names it, the new leader's among them (its Synced record
/// for `sha`); another Release's name shows nothing; the text form is one line per record; and
/// `ferry version` finds the installed agent's image.
fn ferry_logs_and_version_read_the_agent_pods(
    env: &TestEnv,
    system: &str,
    tenant: &str,
    leader: &str,
    sha: &str,
    image: &str,
) {
    let logs = |extra: &[&str]| {
        let (code, out, err) = run(ferry(env)
            .args(["logs", "-n", tenant, "--agent-namespace", system])
            .args(extra));
        assert_eq!(code, 0, "ferry logs {extra:?}: {out}{err}");
        out
    };
    let key = format!("{tenant}/app");
    let object = format!("Release/{key}");
    let out = logs(&["--for", "release/app", "-o", "json"]);
    let records: Vec<Value> = out
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON record ({e}): {line}"))
        })
        .collect();
    assert!(!records.is_empty(), "no records about {key}");
    for record in &records {
        assert!(
            record["release"] == key.as_str() || record["object"] == object.as_str(),
            "a record about something else: {record}"
        );
        // Two agent pods are read: each record says which one wrote it.
        assert!(record["pod"].as_str().is_some(), "{record}");
    }
    assert!(
        records.iter().any(|r| r["pod"] == leader
            && r["object"] == object.as_str()
            && r["reason"] == "Synced"
            && r["message"].as_str().is_some_and(|m| m.contains(sha))),
        "no Synced record of {sha} from the leader {leader}: {records:#?}"
    );
    let text = logs(&["--for", "release/app"]);
    assert_eq!(text.lines().count(), records.len(), "{text}");
    assert!(
        text.lines().all(|l| l.starts_with('[')
            && (l.contains(&format!("release={key}")) || l.contains(&format!("object={object}")))),
        "{text}"
    );
    assert_eq!(
        logs(&["--for", "release/ap", "-o", "json"]),
        "",
        "a name prefix matches nothing"
    );
    let warnings = logs(&["--level", "error", "-o", "json"]);
    for line in warnings.lines() {
        let record: Value = serde_json::from_str(line).expect("json");
        assert_eq!(record["level"], "ERROR", "{record}");
    }

    let (code, out, err) = run(ferry(env).args(["version", "--namespace", system, "-o", "json"]));
    assert_eq!(code, 0, "{err}");
    let version: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(version["client"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(version["server"]["agentImage"], image, "{version}");
    assert!(version["server"]["agent"].as_str().is_some(), "{version}");
    assert!(
        version["server"]["kubernetes"]
            .as_str()
            .is_some_and(|v| v.starts_with('v')),
        "{version}"
    );
}

/// `ferry install` puts two replicas of the agent image on the real node (pinned by digest,
/// node selector and toleration flags); the kubelet probes them Ready; one leads; the in-cluster
/// leader, with the shipped RBAC, fetches a tenant's GitSource through the node address and
/// applies its Release as the tenant's service account (the standby does nothing); deleting
/// the leader's pod, another pod takes the Lease over, the Release is Ready at the same commit,
/// and a webhook through the agent's Service makes the new leader deploy the next commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_install_runs_the_agent_on_the_real_node_and_it_deploys_from_git() {
    let env = TestEnv::get();
    let node = env.vars.get("FERRY_REAL_NODE").cloned().unwrap_or_else(|| {
        panic!("the testenv has no real node (FERRY_REAL_NODE): run testenv/node-up")
    });
    let git_from_pods = env
        .vars
        .get("FERRY_GIT_URL_FROM_PODS")
        .cloned()
        .unwrap_or_else(|| {
            panic!("no FERRY_GIT_URL_FROM_PODS (gitserver-forward): rerun testenv/node-up")
        });
    let (image, digest) = agent_image(&env);
    let client = env.client().await;
    let system = TestNamespace::create(&client, "incluster-agent").await;
    let tenant = TestNamespace::create(&client, "incluster-tenant").await;
    let _cleanup = ClusterScoped {
        kubectl: env.tool("kubectl"),
        kubeconfig: env.kubeconfig(),
        namespace: system.name.clone(),
    };

    // The install: its apply waits until the Deployment is Available, which on the real node
    // means the kubelet pulled the image and the readiness probe (/readyz) answered.
    let started = Instant::now();
    let (code, out, err) = run(ferry(&env).args([
        "install",
        "--namespace",
        &system.name,
        "--image",
        &image,
        "--replicas",
        "2",
        "--watch-namespace",
        &tenant.name,
        "--node-selector",
        "ferry.dev/real-node=true",
        "--toleration",
        "ferry.dev/real-node=true:NoSchedule",
    ]));
    let pods: Api<Pod> = Api::namespaced(client.clone(), &system.name);
    assert_eq!(
        code,
        0,
        "ferry install: {out}{err}\npods: {:?}",
        pods.list(&Default::default()).await.map(|l| l
            .items
            .into_iter()
            .map(|p| (p.metadata.name, p.status))
            .collect::<Vec<_>>())
    );
    let installed = started.elapsed();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &system.name);
    let deployment = deployments.get("ferry-agent").await.expect("Deployment");
    let available = deployment
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Available" && c.status == "True")
        });
    assert!(available, "{:?}", deployment.status);
    let started_pods = ready_agent_pods(&pods, &node, &[], 2, Duration::from_secs(60)).await;
    for (pod, ready_in) in &started_pods {
        let container = &pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .expect("container statuses")[0];
        assert!(
            container.image_id.contains(&digest),
            "{} is not {digest}",
            container.image_id
        );
        println!(
            "pod {} created → Ready in {ready_in} s",
            pod.metadata.name.as_deref().unwrap_or("?")
        );
    }
    println!("ferry install (two replicas) returned after {installed:?}");
    let names: Vec<String> = started_pods
        .iter()
        .filter_map(|(p, _)| p.metadata.name.clone())
        .collect();

    // Leader election across the two replicas: one of them holds the Lease.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &system.name);
    let holder = |leases: Api<Lease>| async move {
        let lease = leases.get_opt("ferry-agent").await?;
        anyhow::Ok(lease.and_then(|l| l.spec).and_then(|s| s.holder_identity))
    };
    let first = wait_for("one of the pods leads", Duration::from_secs(60), || {
        let (leases, names) = (leases.clone(), names.clone());
        async move { Ok(holder(leases).await?.filter(|h| names.contains(h))) }
    })
    .await
    .expect("a pod holds the Lease");
    let standby = names
        .iter()
        .find(|n| **n != first)
        .cloned()
        .expect("the standby");

    // The tenant: admin in its namespace for its default service account (what its Releases
    // apply as), git credentials, the repository as pods reach it, a Release.
    apply_object(&client, json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "default-admin", "namespace": tenant.name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": tenant.name}],
    }))
    .await;
    apply_object(&client, json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "git-auth", "namespace": tenant.name},
        "stringData": {"username": env.var("FERRY_GIT_USER"), "password": env.var("FERRY_GIT_PASSWORD")},
    }))
    .await;
    let repo = Repo::create(&env, &tenant.name);
    let files = app_files("one");
    let sha1 = repo.commit(&[(files[0].0, &files[0].1), (files[1].0, &files[1].1)]);
    apply_object(
        &client,
        json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "GitSource",
            "metadata": {"name": "app", "namespace": tenant.name},
            "spec": {"url": format!("{git_from_pods}/{}.git", repo.name), "ref": {"branch": "main"},
                     "interval": "1h", "timeout": "20s", "secretRef": {"name": "git-auth"}},
        }),
    )
    .await;
    apply_object(
        &client,
        json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "Release",
            "metadata": {"name": "app", "namespace": tenant.name},
            "spec": {"sourceRef": {"kind": "GitSource", "name": "app"}, "path": "app",
                     "interval": "1m", "retryInterval": "2s", "prune": true},
        }),
    )
    .await;
    // A webhook Receiver: the GitSource's interval is an hour, so the next commit arrives
    // through it (a bearer token, the generic sender type).
    apply_object(
        &client,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "hook-token", "namespace": tenant.name},
            "stringData": {"token": "hook-s3cret"},
        }),
    )
    .await;
    apply_object(
        &client,
        json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "Receiver",
            "metadata": {"name": "push", "namespace": tenant.name},
            "spec": {"type": "generic", "secretRef": {"name": "hook-token"}, "resources": ["app"]},
        }),
    )
    .await;
    let releases: Api<Release> = Api::namespaced(client.clone(), &tenant.name);
    let released = Instant::now();
    wait_release_at(&releases, &sha1, Duration::from_secs(120)).await;
    println!(
        "Release Ready at the first commit {:?} after it was created",
        released.elapsed()
    );
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &tenant.name);
    let value = |cm: ConfigMap| cm.data.and_then(|d| d.get("value").cloned());
    assert_eq!(
        value(configmaps.get("app-config").await.expect("ConfigMap")),
        Some("one".to_string())
    );
    let tenant_deployments: Api<Deployment> = Api::namespaced(client.clone(), &tenant.name);
    tenant_deployments
        .get("app")
        .await
        .expect("the Release's Deployment");
    wait_event_from(&client, &tenant.name, &first, &sha1).await;
    // Only the leader applies: the standby reported nothing about the Release.
    {
        use k8s_openapi::api::events::v1::Event;
        let events: Api<Event> = Api::namespaced(client.clone(), &tenant.name);
        let from_standby: Vec<_> = events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.reporting_instance.as_deref() == Some(standby.as_str()))
            .map(|e| (e.reason, e.note))
            .collect();
        assert!(
            from_standby.is_empty(),
            "the standby acted: {from_standby:?}"
        );
    }

    // The leader's pod goes away: another pod (the standby, or the Deployment's replacement)
    // takes the Lease and carries on; the Deployment is back to two Ready pods.
    // When the Release last turned Ready: unchanged through the takeover (no flap).
    let ready_since = |r: Release| {
        r.status
            .unwrap_or_default()
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| (c.status, c.last_transition_time))
    };
    let before = ready_since(releases.get("app").await.expect("Release"));
    assert_eq!(
        before.as_ref().map(|(status, _)| status.as_str()),
        Some("True")
    );
    let deleted = Instant::now();
    pods.delete(&first, &DeleteParams::default())
        .await
        .expect("delete the leader's pod");
    // Whether the Lease was seen free in between (the old leader released it on SIGTERM) or
    // went straight to another holder (it expired): printed with the takeover time.
    let released = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let second = wait_for("another pod leads", Duration::from_secs(120), || {
        let (leases, first, released) = (leases.clone(), first.clone(), released.clone());
        async move {
            let now = holder(leases).await?;
            if now.as_deref().is_none_or(str::is_empty) {
                released.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(now.filter(|h| *h != first && !h.is_empty()))
        }
    })
    .await
    .expect("another pod takes the Lease");
    let took_over = deleted.elapsed();
    let now_ready = ready_agent_pods(
        &pods,
        &node,
        std::slice::from_ref(&first),
        2,
        Duration::from_secs(120),
    )
    .await;
    assert!(
        now_ready
            .iter()
            .any(|(p, _)| p.metadata.name.as_deref() == Some(second.as_str())),
        "the new leader {second} is not one of the Ready pods"
    );
    for (pod, ready_in) in now_ready
        .iter()
        .filter(|(p, _)| p.metadata.name.as_ref().is_some_and(|n| !names.contains(n)))
    {
        println!(
            "replacement pod {} created → Ready in {ready_in} s",
            pod.metadata.name.as_deref().unwrap_or("?")
        );
    }
    println!(
        "{second} ({}) leads {took_over:?} after the leader's pod was deleted (Lease seen free in between: {})",
        if second == standby {
            "the standby"
        } else {
            "a new pod"
        },
        released.load(std::sync::atomic::Ordering::Relaxed)
    );
    // The Release is Ready at the same commit after the takeover. Known flap (reported, issue 12
    // part 3, not fixed yet): a new leader can reconcile the Release before its GitSource store
    // has listed and mark it SourceNotReady ("GitSource ... not found") until the retry; the
    // test then waits for Ready again and prints that it saw the flap.
    let r = releases.get("app").await.expect("Release");
    if ready_since(r) != before {
        println!("the Release's Ready condition changed during the takeover (the known flap)");
    }
    wait_release_at(&releases, &sha1, Duration::from_secs(60)).await;
    assert_eq!(
        value(configmaps.get("app-config").await.expect("ConfigMap")),
        Some("one".to_string())
    );
    // The next commit, announced by a webhook through the agent's Service (its ClusterIP,
    // kube-proxy's rules on this host, either pod): applied at once by the new leader.
    let files = app_files("two");
    let sha2 = repo.commit(&[(files[0].0, &files[0].1)]);
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(client.clone(), &system.name);
    let cluster_ip = services
        .get("ferry-agent")
        .await
        .expect("the agent's Service")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");
    // Only live pods behind the Service: the deleted leader's pod is gone first.
    wait_for("the deleted pod gone", Duration::from_secs(60), || {
        let (pods, first) = (pods.clone(), first.clone());
        async move { Ok(pods.get_opt(&first).await?.is_none().then_some(())) }
    })
    .await
    .expect("the deleted pod is gone");
    let hooked = Instant::now();
    let (status, reply) = post_hook(
        &format!("{cluster_ip}:80"),
        &format!("/hook/{}/push", tenant.name),
        "hook-s3cret",
    )
    .await;
    assert_eq!(status, 200, "webhook through the Service: {reply}");
    assert!(
        reply.contains("app"),
        "the reply names the GitSource: {reply}"
    );
    wait_release_at(&releases, &sha2, Duration::from_secs(30)).await;
    println!(
        "webhook through the Service → Release Ready at the next commit in {:?}",
        hooked.elapsed()
    );
    assert_eq!(
        value(configmaps.get("app-config").await.expect("ConfigMap")),
        Some("two".to_string())
    );
    wait_event_from(&client, &tenant.name, &second, &sha2).await;
    ferry_logs_and_version_read_the_agent_pods(
        &env,
        &system.name,
        &tenant.name,
        &second,
        &sha2,
        &image,
    );
    // One leader at a time: every pod that applied anything held the Lease (two replicas that
    // both took a free Lease would both have applied: regression test for the Lease's shared
    // field manager, which let the API server accept both).
    {
        use k8s_openapi::api::events::v1::Event;
        let events: Api<Event> = Api::namespaced(client.clone(), &tenant.name);
        let others: Vec<_> = events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Synced"))
            .filter(|e| {
                let by = e.reporting_instance.as_deref();
                by != Some(first.as_str()) && by != Some(second.as_str())
            })
            .map(|e| (e.reporting_instance, e.note))
            .collect();
        assert!(
            others.is_empty(),
            "pods that never held the Lease applied: {others:?}"
        );
    }
    tenant_deployments
        .get("app")
        .await
        .expect("the Release's Deployment is still there");
}
