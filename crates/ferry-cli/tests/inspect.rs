//! The inspection commands against the real testenv and a real (in-process) agent: `ferry get`,
//! `history`, `events`, `tree`, `rollback` (and `--undo`), `suspend`/`resume`/`sync` output,
//! `version`, dynamic completion, and `kubectl ferry` as a plugin. (`ferry logs` reads the
//! agent's pods, so its end-to-end test runs where the agent image runs on the real node:
//! in_cluster.rs; its filtering is unit-tested in commands/logs.rs.)

mod common;

use std::process::Command;
use std::time::Duration;

use common::{run, start_agent};
use ferry_api::{GitSource, Release};
use ferry_testsupport::ferry::{apply, setup, wait_release_applied};
use ferry_testsupport::git::Repo;
use ferry_testsupport::{TestEnv, wait_until};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

/// Run ferry with `env_vars`; (exit code, stdout, stderr).
fn ferry_with(env: &TestEnv, args: &[&str], env_vars: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(args)
        .env_remove("CI")
        .env("NO_COLOR", "1")
        .env("KUBECONFIG", env.kubeconfig())
        .env("PATH", env.path_env());
    for (k, v) in env_vars {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

fn ferry(env: &TestEnv, args: &[&str]) -> (i32, String, String) {
    ferry_with(env, args, &[])
}

fn ok(env: &TestEnv, args: &[&str]) -> String {
    let (code, out, err) = ferry(env, args);
    assert_eq!(code, 0, "ferry {args:?}: {out}\n{err}");
    out
}

/// Commit ConfigMap `settings` (`data.value: value`) and Deployment `web` under `app/`;
/// returns the commit.
fn commit_app(repo: &Repo, value: &str) -> String {
    let cm = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  value: {value}\n"
    );
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: registry.invalid/web:1\n";
    repo.commit_files(
        &[("app/cm.yaml", cm.as_str()), ("app/deploy.yaml", deploy)],
        value,
    )
}

async fn configmap_value(client: &kube::Client, ns: &str) -> Option<String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    api.get_opt("settings")
        .await
        .ok()
        .flatten()
        .and_then(|c| c.data)
        .and_then(|d| d.get("value").cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inspection_commands_show_a_release_and_roll_it_back() {
    let (env, client, ns) = setup("inspect").await;
    let repo = Repo::create(&env, &ns.name);
    let first = commit_app(&repo, "one");
    let (agent, _cache) = start_agent(&env, &[&ns.name], |options| {
        options.namespace = ns.name.clone();
        options.allow_local_git_sources = true;
        // Tenancy is not what this test is about: apply with the test's own (admin) identity.
        options.insecure_agent_identity_for_tenants = true;
    })
    .await;

    let sources: Api<GitSource> = Api::namespaced(client.clone(), &ns.name);
    let releases: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    apply::<GitSource>(
        &client,
        &ns.name,
        json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "GitSource",
            "metadata": {"name": "apps"},
            "spec": {"url": repo.file_url(&env), "interval": "1h"},
        }),
    )
    .await;
    apply::<Release>(
        &client,
        &ns.name,
        json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "Release",
            "metadata": {"name": "web"},
            "spec": {"sourceRef": {"kind": "GitSource", "name": "apps"}, "path": "app", "interval": "1h"},
        }),
    )
    .await;
    let applied = Duration::from_secs(90);
    wait_release_applied(&client, &ns.name, "web", &first, applied).await;
    let second = commit_app(&repo, "two");
    ok(
        &env,
        &[
            "sync",
            "web",
            "-n",
            &ns.name,
            "--with-source",
            "--timeout",
            "90s",
        ],
    );
    wait_release_applied(&client, &ns.name, "web", &second, applied).await;
    let n = ns.name.as_str();

    // get: the flux-like table, one object as itself, names, every namespace, wide.
    let table = ok(&env, &["get", "releases", "-n", n]);
    let header = table.lines().next().unwrap_or_default();
    for column in ["NAME", "READY", "STATUS", "REVISION", "SUSPENDED", "AGE"] {
        assert!(header.contains(column), "{table}");
    }
    let row = table
        .lines()
        .find(|l| l.starts_with("web "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("True") && row.contains(&second) && row.contains("False"),
        "{row}"
    );
    let one: Value = serde_json::from_str(&ok(&env, &["get", "rel", "web", "-n", n, "-o", "json"]))
        .expect("json");
    assert_eq!(one["kind"], "Release");
    assert_eq!(one["metadata"]["name"], "web");
    let yaml = ok(&env, &["get", "releases", "-n", n, "-o", "yaml"]);
    assert!(
        yaml.contains("kind: Release") && yaml.contains("name: web"),
        "{yaml}"
    );
    assert_eq!(
        ok(&env, &["get", "releases", "-n", n, "-o", "name"]),
        "release.ferry.dev/web\n"
    );
    let all = ok(&env, &["get", "releases", "-A"]);
    assert!(all.starts_with("NAMESPACE"), "{all}");
    assert!(
        all.lines().any(|l| l.starts_with(n) && l.contains(" web ")),
        "{all}"
    );
    let wide = ok(&env, &["get", "sources", "-n", n, "-o", "wide"]);
    assert!(
        wide.contains("GitSource") && wide.contains(&repo.file_url(&env)),
        "{wide}"
    );
    let (code, _, err) = ferry(&env, &["get", "releases", "nosuch", "-n", n]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no Release named nosuch") && err.contains("ferry get releases"),
        "{err}"
    );

    // history: newest first, the applied one marked current.
    let history: Value = serde_json::from_str(&ok(
        &env,
        &["history", "release", "web", "-n", n, "-o", "json"],
    ))
    .expect("json");
    let entries = history.as_array().expect("a list");
    assert!(entries.len() >= 2, "{history}");
    assert!(
        entries[0]["revision"]
            .as_str()
            .unwrap_or_default()
            .ends_with(&second)
    );
    assert_eq!(entries[0]["current"], true);
    assert!(
        entries
            .iter()
            .any(|e| e["revision"].as_str().unwrap_or_default().ends_with(&first)),
        "{history}"
    );
    let text = ok(&env, &["history", "release", "web", "-n", n]);
    assert!(
        text.starts_with("REVISION") && text.contains("Succeeded"),
        "{text}"
    );

    // events: the agent's Events on this Release only.
    let events: Value = serde_json::from_str(&ok(
        &env,
        &["events", "--for", "release/web", "-n", n, "-o", "json"],
    ))
    .expect("json");
    let events = events.as_array().expect("a list");
    assert!(
        !events.is_empty(),
        "the agent published Events on the Release"
    );
    assert!(
        events.iter().all(|e| e["object"] == "Release/web"),
        "{events:?}"
    );
    let (code, _, err) = ferry(&env, &["events", "--for", "deployment/web", "-n", n]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown kind"), "{err}");

    // tree: the inventory with health, and down to the Deployment's pods (kwok runs them).
    let tree = wait_until("the tree reaches the pods", Duration::from_secs(60), || {
        let env = env.clone();
        let n = n.to_string();
        async move {
            let (code, out, err) = ferry(&env, &["tree", "release", "web", "-n", &n]);
            if code == 0 && out.contains("Pod/") {
                return Ok(Some(out));
            }
            anyhow::bail!("exit {code}: {out}{err}")
        }
    })
    .await;
    assert!(
        tree.starts_with(&format!("Release {n}/web  Ready")),
        "{tree}"
    );
    for node in [
        format!("ConfigMap/{n}/settings  Current"),
        format!("Deployment/{n}/web  Current"),
        format!("ReplicaSet/{n}/web-"),
        format!("Pod/{n}/web-"),
    ] {
        assert!(tree.contains(&node), "missing {node} in\n{tree}");
    }
    let names = ok(&env, &["tree", "release", "web", "-n", n, "-o", "name"]);
    assert!(names.lines().any(|l| l == "deployment.apps/web"), "{names}");

    // rollback: refused without a known revision, refused for a Release applied from git,
    // dry runs change nothing, then the real one and its undo.
    let (code, _, err) = ferry(
        &env,
        &["rollback", "release", "web", "-n", n, "--to", "deadbeef"],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("not in Release") && err.contains("--force"),
        "{err}"
    );
    let merge = PatchParams::default();
    releases
        .patch(
            "web",
            &merge,
            &Patch::Merge(
                json!({"metadata": {"annotations": {"ferry.dev/owner": "x/release/y/z"}}}),
            ),
        )
        .await
        .expect("annotate");
    let (code, _, err) = ferry(
        &env,
        &["rollback", "release", "web", "-n", n, "--to", &first[..8]],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("applied from git") && err.contains("--force"),
        "{err}"
    );
    releases
        .patch(
            "web",
            &merge,
            &Patch::Merge(json!({"metadata": {"annotations": {"ferry.dev/owner": null}}})),
        )
        .await
        .expect("annotation removed");
    for dry in ["--dry-run=client", "--dry-run=server"] {
        let out = ok(
            &env,
            &[
                "rollback",
                "release",
                "web",
                "-n",
                n,
                "--to",
                &first[..8],
                dry,
            ],
        );
        assert!(out.starts_with("would roll back"), "{out}");
        assert!(
            sources
                .get_opt("web-rollback")
                .await
                .expect("get")
                .is_none(),
            "{dry} created nothing"
        );
        assert_eq!(
            releases.get("web").await.expect("get").spec.source_ref.name,
            "apps",
            "{dry} changed nothing"
        );
    }
    let out = ok(
        &env,
        &[
            "rollback",
            "release",
            "web",
            "-n",
            n,
            "--to",
            &first[..8],
            "--timeout",
            "90s",
        ],
    );
    assert!(out.contains(&format!("ready at sha1:{first}")), "{out}");
    assert_eq!(configmap_value(&client, n).await.as_deref(), Some("one"));
    let pinned = sources.get("web-rollback").await.expect("pinned GitSource");
    assert_eq!(
        pinned.spec.git_ref.and_then(|r| r.commit).as_deref(),
        Some(first.as_str())
    );
    let rolled = releases.get("web").await.expect("get");
    assert_eq!(rolled.spec.source_ref.name, "web-rollback");
    // The shared source is untouched: other Releases on it keep following main.
    assert!(
        sources
            .get("apps")
            .await
            .expect("get")
            .spec
            .git_ref
            .is_none()
    );
    let out = ok(
        &env,
        &[
            "rollback",
            "release",
            "web",
            "-n",
            n,
            "--undo",
            "--timeout",
            "90s",
        ],
    );
    assert!(
        out.contains(&format!("ready at main@sha1:{second}")),
        "{out}"
    );
    assert_eq!(configmap_value(&client, n).await.as_deref(), Some("two"));
    assert_eq!(
        releases.get("web").await.expect("get").spec.source_ref.name,
        "apps"
    );
    wait_until(
        "the pinned GitSource is deleted",
        Duration::from_secs(30),
        || {
            let sources = sources.clone();
            async move {
                match sources.get_opt("web-rollback").await? {
                    None => Ok(Some(())),
                    Some(_) => anyhow::bail!("still there"),
                }
            }
        },
    )
    .await;

    // Dynamic completion: Release names of -n's namespace, and namespaces.
    let complete = |index: &str, words: &[&str]| {
        let mut args = vec!["--", "ferry"];
        args.extend_from_slice(words);
        ferry_with(
            &env,
            &args,
            &[("COMPLETE", "bash"), ("_CLAP_COMPLETE_INDEX", index)],
        )
    };
    let (code, out, err) = complete("5", &["history", "release", "-n", n, ""]);
    assert_eq!(code, 0, "{err}");
    // Release names first (only this namespace's), then the flags that may follow.
    let names: Vec<&str> = out.lines().filter(|c| !c.starts_with('-')).collect();
    assert_eq!(names, ["web"], "Release names of {n}: {out}");
    let (code, out, err) = complete("4", &["get", "releases", "-n", &n[..n.len() - 2]]);
    // (The shell filters by the typed prefix; clap_complete hands it every candidate.)
    assert_eq!(code, 0, "{err}");
    assert!(out.split_whitespace().any(|c| c == n), "namespaces: {out}");
    let script = ok(&env, &["completion", "bash"]);
    assert!(
        script.contains("COMPLETE=\"bash\"") || script.contains("COMPLETE=bash"),
        "{script}"
    );

    // suspend/resume/sync print the Release with -o name|json|yaml (the human line on stderr).
    assert_eq!(
        ok(&env, &["suspend", "web", "-n", n, "-o", "name"]),
        "release.ferry.dev/web\n"
    );
    assert!(releases.get("web").await.expect("get").spec.suspend);
    let resumed: Value =
        serde_json::from_str(&ok(&env, &["resume", "web", "-n", n, "-o", "json"])).expect("json");
    assert_eq!(resumed["kind"], "Release");
    // (`suspend: false` is left out of the object, as the CRD's default.)
    assert!(
        !resumed["spec"]["suspend"].as_bool().unwrap_or(false),
        "{resumed}"
    );
    assert!(!releases.get("web").await.expect("get").spec.suspend);
    let (code, out, err) = ferry(
        &env,
        &["sync", "web", "-n", n, "--timeout", "90s", "-o", "yaml"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("kind: Release") && out.contains("name: web"),
        "{out}"
    );
    assert!(
        err.contains("ready:"),
        "the human line went to stderr: {err}"
    );

    // `ferry logs` where no agent pod runs (this test's agent is in-process): the refusal
    // names --agent-namespace. (Its end-to-end test against agent pods: in_cluster.rs.)
    let (code, _, err) = ferry(
        &env,
        &[
            "logs",
            "--for",
            "release/web",
            "-n",
            n,
            "--agent-namespace",
            n,
        ],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("no agent pods") && err.contains("--agent-namespace"),
        "{err}"
    );

    agent.stop().await.expect("agent stops");
}

#[test]
fn version_works_offline_online_and_as_a_kubectl_plugin() {
    let env = TestEnv::get();
    let version = env!("CARGO_PKG_VERSION");
    let out = ok(&env, &["version", "--client"]);
    assert!(out.starts_with(&format!("client: {version} (")), "{out}");
    // An unreachable cluster is not an error for `version`.
    let (code, out, _) = ferry_with(
        &env,
        &["version", "-o", "json"],
        &[("KUBECONFIG", "/nonexistent/kubeconfig")],
    );
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(doc["client"]["version"], version);
    assert!(doc["server"]["notes"][0].as_str().is_some(), "{doc}");
    // Against the testenv: the API server's version, and a note naming --namespace when no agent
    // Deployment is there.
    let doc: Value = serde_json::from_str(&ok(
        &env,
        &["version", "-o", "json", "--namespace", "no-agent-here"],
    ))
    .expect("json");
    assert!(
        doc["server"]["kubernetes"]
            .as_str()
            .is_some_and(|v| v.starts_with('v')),
        "{doc}"
    );
    assert!(
        doc["server"]["notes"].to_string().contains("--namespace"),
        "{doc}"
    );

    // kubectl finds plugins as kubectl-<name> on PATH: a symlink to ferry is enough.
    let dir = tempfile::tempdir().expect("dir");
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_ferry"),
        dir.path().join("kubectl-ferry"),
    )
    .expect("symlink");
    let out = Command::new("kubectl")
        .args(["ferry", "version", "--client"])
        .env(
            "PATH",
            format!("{}:{}", dir.path().display(), env.path_env()),
        )
        .env("KUBECONFIG", env.kubeconfig())
        .output()
        .expect("run kubectl (from the testenv's PATH)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!("client: {version} (")),
        "{stdout}"
    );
}

#[test]
fn every_inspection_command_has_help_examples_and_dry_run_spellings_parse() {
    let env = TestEnv::get();
    for command in [
        "get",
        "tree",
        "events",
        "logs",
        "history",
        "rollback",
        "version",
        "completion",
    ] {
        let out = ok(&env, &[command, "--help"]);
        assert!(
            out.contains("Examples:"),
            "ferry {command} --help has no examples:\n{out}"
        );
    }
    // kubectl's spellings of --dry-run, on a command that needs no cluster.
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        "images:\n- name: web\n  newTag: \"1\"\n",
    )
    .expect("write");
    for spelling in ["--dry-run", "--dry-run=client", "--dry-run=server"] {
        let (code, _, err) = ferry(
            &env,
            &[
                "set-image",
                spelling,
                "web=web:2",
                dir.path().to_str().unwrap_or_default(),
            ],
        );
        assert_eq!(code, 0, "{spelling}: {err}");
        let kept = std::fs::read_to_string(dir.path().join("kustomization.yaml")).expect("read");
        assert!(kept.contains("newTag: \"1\""), "{spelling} wrote nothing");
    }
    let (code, _, err) = ferry(
        &env,
        &[
            "set-image",
            "--dry-run=maybe",
            "web=web:2",
            dir.path().to_str().unwrap_or_default(),
        ],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("--dry-run=server or --dry-run=client"),
        "{err}"
    );
}

/// The two frictions of issue 16: a chart given by --chart needs no PATH, and a refusal under a
/// source root ferry chose itself names --root (which then works).
#[test]
fn render_needs_no_path_for_a_chart_and_a_refusal_names_root() {
    let env = TestEnv::get();
    let dir = tempfile::tempdir().expect("dir");
    let chart = dir.path().join("chart");
    std::fs::create_dir_all(chart.join("templates")).expect("mkdir");
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: demo\nversion: 0.1.0\n",
    )
    .expect("write");
    std::fs::write(
        chart.join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  v: x\n",
    )
    .expect("write");
    let chart_arg = chart.to_string_lossy().into_owned();
    let (code, out, err) = ferry(
        &env,
        &[
            "render",
            "--chart",
            &chart_arg,
            "--release-name",
            "demo",
            "-o",
            "name",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "configmap/demo-cm\n");

    // A kustomize overlay outside any git checkout and outside the current directory: the root
    // is the overlay itself, so its base is refused, and the error says --root changes that.
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("base")).expect("mkdir");
    std::fs::create_dir_all(tree.join("overlays/prod")).expect("mkdir");
    std::fs::write(
        tree.join("base/kustomization.yaml"),
        "resources: [cm.yaml]\n",
    )
    .expect("write");
    std::fs::write(
        tree.join("base/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: base\n",
    )
    .expect("write");
    std::fs::write(
        tree.join("overlays/prod/kustomization.yaml"),
        "resources: [../../base]\nnamePrefix: prod-\n",
    )
    .expect("write");
    let overlay = tree.join("overlays/prod").to_string_lossy().into_owned();
    let elsewhere = tempfile::tempdir().expect("cwd");
    let run_in = |args: &[&str]| {
        run(Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .current_dir(elsewhere.path())
            .env("PATH", env.path_env()))
    };
    let (code, _, err) = run_in(&["render", &overlay]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--root DIR") && err.contains("source root"),
        "{err}"
    );
    let root = tree.to_string_lossy().into_owned();
    let (code, out, err) = run_in(&["render", &overlay, "--root", &root, "-o", "name"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "configmap/prod-base\n");
}

/// The Ready condition of `kind`/`name` as the API server has it: (status, message).
async fn ready_of(
    client: &kube::Client,
    ns: &str,
    plural: &str,
    name: &str,
) -> Option<(String, String)> {
    let resource = kube::core::ApiResource {
        group: ferry_api::GROUP.to_string(),
        version: ferry_api::VERSION.to_string(),
        api_version: format!("{}/{}", ferry_api::GROUP, ferry_api::VERSION),
        kind: String::new(),
        plural: plural.to_string(),
    };
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    let object = api.get_opt(name).await.ok().flatten()?;
    let conditions = object.data["status"]["conditions"].as_array()?.clone();
    conditions.iter().find(|c| c["type"] == "Ready").map(|c| {
        (
            c["status"].as_str().unwrap_or_default().to_string(),
            c["message"].as_str().unwrap_or_default().to_string(),
        )
    })
}

/// `ferry get images` and `ferry get receivers` against objects the (in-process) agent has
/// reconciled, and the global `-n`/`-A`: before or after the subcommand alike, refused where
/// they make no sense, naming the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_images_and_receivers_with_global_namespace_flags() {
    let (env, client, ns) = setup("get-kinds").await;
    let ns = ns.name.clone();
    ferry_testsupport::ferry::secret(&client, &ns, "hook-token", &[("token", "t0ken")]).await;
    apply::<ferry_api::Receiver>(
        &client,
        &ns,
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Receiver", "metadata": {"name": "github"},
               "spec": {"type": "github", "secretRef": {"name": "hook-token"}}}),
    )
    .await;
    apply::<ferry_api::ImageRepository>(
        &client,
        &ns,
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImageRepository", "metadata": {"name": "app"},
               "spec": {"image": "registry.invalid/team/app", "interval": "10m"}}),
    )
    .await;
    apply::<ferry_api::ImagePolicy>(
        &client,
        &ns,
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImagePolicy", "metadata": {"name": "app"},
               "spec": {"imageRepositoryRef": {"name": "app"}, "policy": {"semver": {"range": ">=1.0.0"}}}}),
    )
    .await;
    apply::<ferry_api::ImageUpdate>(
        &client,
        &ns,
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImageUpdate", "metadata": {"name": "auto"},
               "spec": {"sourceRef": {"kind": "GitSource", "name": "repo"}, "interval": "10m",
                        "git": {"commit": {"author": {"name": "ferry-bot", "email": "bot@ferry.invalid"}}, "pushBranch": "auto"},
                        "update": {"path": "./"}}}),
    )
    .await;
    // The agent reads a Receiver's Secret as the namespace's tenant (its `default` service
    // account), which a cluster admin grants the namespace's admin role.
    ferry_testsupport::ferry::grant_admin(&client, &ns, "default").await;
    let (agent, _cache) = start_agent(&env, &[&ns], |o| o.image_automation = true).await;
    // The agent has looked at each of them (ready or not, with its reason).
    let ready = wait_until("the agent reconciled them", Duration::from_secs(60), || {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            let receiver = ready_of(&client, &ns, "receivers", "github").await;
            let repository = ready_of(&client, &ns, "imagerepositories", "app").await;
            Ok(match (receiver, repository) {
                (Some(r), Some(i)) if r.0 == "True" => Some((r, i)),
                _ => None,
            })
        }
    })
    .await;
    let ((_, receiver_message), (repository_ready, repository_message)) = ready;

    // Receivers: table, wide (the webhook path), -A (with the namespace), one by name, names.
    let table = ok(&env, &["get", "receivers", "-n", &ns]);
    let row = table
        .lines()
        .find(|l| l.starts_with("github "))
        .unwrap_or_else(|| panic!("no github row: {table}"));
    assert!(
        row.contains("True") && row.contains(&receiver_message),
        "{table}"
    );
    assert_eq!(
        ok(&env, &["-n", &ns, "get", "receivers"]),
        table,
        "-n before the subcommand is the same flag"
    );
    let wide = ok(&env, &["get", "receivers", "-n", &ns, "-o", "wide"]);
    assert!(
        wide.contains("WEBHOOK PATH") && wide.contains(&format!("/hook/{ns}/github")),
        "{wide}"
    );
    let all = ok(&env, &["get", "receivers", "-A"]);
    assert!(
        all.lines()
            .any(|l| l.starts_with(&format!("{ns} ")) && l.contains("github")),
        "{all}"
    );
    let one: Value = serde_json::from_str(&ok(
        &env,
        &["get", "rcv", "github", "-n", &ns, "-o", "json"],
    ))
    .expect("json");
    assert_eq!(one["kind"], "Receiver");
    assert_eq!(one["metadata"]["name"], "github");
    assert_eq!(
        ok(&env, &["-n", &ns, "get", "receivers", "-o", "name"]),
        "receiver.ferry.dev/github\n"
    );

    // Images: the three kinds in one table with a KIND column, the repository's Ready as the
    // API server has it; the objects as a List; names.
    let table = ok(&env, &["get", "images", "-n", &ns]);
    assert!(
        table.lines().next().is_some_and(|h| h.contains("KIND")),
        "{table}"
    );
    let repository = table
        .lines()
        .find(|l| l.starts_with("ImageRepository "))
        .unwrap_or_else(|| panic!("no ImageRepository row: {table}"));
    assert!(repository.contains(" app "), "{table}");
    assert!(repository.contains(&repository_ready), "{table}");
    let first_line = repository_message.lines().next().unwrap_or_default();
    let shown: String = first_line.chars().take(20).collect();
    assert!(
        repository.contains(&shown),
        "the condition's message ({first_line}): {table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("ImagePolicy ") && l.contains(" app ")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("ImageUpdate ") && l.contains(" auto ")),
        "{table}"
    );
    let list: Value =
        serde_json::from_str(&ok(&env, &["-n", &ns, "get", "images", "-o", "json"])).expect("json");
    let kinds: Vec<&str> = list["items"]
        .as_array()
        .expect("a List")
        .iter()
        .filter_map(|o| o["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        ["ImageRepository", "ImagePolicy", "ImageUpdate"],
        "{list:#}"
    );
    let names = ok(&env, &["get", "image", "-o", "name", "-n", &ns]);
    assert_eq!(
        names,
        "imagerepository.ferry.dev/app\nimagepolicy.ferry.dev/app\nimageupdate.ferry.dev/auto\n"
    );
    let wide = ok(&env, &["get", "images", "-n", &ns, "-o", "wide"]);
    assert!(wide.contains("registry.invalid/team/app"), "{wide}");

    // Combinations that make no sense are refused before anything is read, naming the flag.
    for (args, flag) in [
        (
            vec!["get", "releases", "-n", ns.as_str(), "-A"],
            "-n/--namespace and -A/--all-namespaces",
        ),
        (
            vec!["-A", "get", "receivers", "github"],
            "-A/--all-namespaces",
        ),
        (vec!["cluster-info", "-n", ns.as_str()], "-n/--namespace"),
        (
            vec!["status", "--app", "web", "-n", "a", "-n", "b"],
            "-n/--namespace",
        ),
        (
            vec!["history", "release", "web", "-A"],
            "-A/--all-namespaces",
        ),
    ] {
        let (code, out, err) = ferry(&env, &args);
        assert_eq!(code, 2, "ferry {args:?}: {out}{err}");
        assert!(err.contains(flag), "ferry {args:?} names {flag}: {err}");
    }
    agent.stop().await.expect("agent stops");
}
