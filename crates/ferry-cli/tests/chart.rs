//! The Helm chart `charts/ferry-agent` (issue 12, part 4) against the real tools and cluster:
//! the real `helm lint` (also `--strict`), `helm template` with the default values and with every
//! option on (ci/all-on-values.yaml), compared object by object with what `ferry install --export`
//! produces (RBAC rules, NetworkPolicy, security contexts, probes, args: the two cannot drift), and
//! the chart rendered and applied by ferry itself (push mode) into a fresh namespace of the real
//! testenv, where the API server accepts every object and the Deployment becomes Available;
//! and deployed from git by an agent running with the shipped RBAC (pull mode).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/ferry-agent")
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

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

fn helm(env: &TestEnv) -> Command {
    let mut cmd = Command::new(env.tool("helm"));
    // A private helm home: the test must not read or write the user's repositories and cache.
    let home = std::env::temp_dir().join("ferry-chart-test-helm-home");
    cmd.env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"));
    cmd
}

fn ferry(env: &TestEnv) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.env_remove("CI")
        .env("NO_COLOR", "1")
        .env("KUBECONFIG", env.kubeconfig())
        .env("PATH", env.path_env());
    cmd
}

/// The objects of a multi-document YAML stream (comment-only documents dropped).
fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .unwrap_or_else(|e| panic!("parsing rendered YAML: {e}\n{yaml}"))
        .into_iter()
        .filter(|v| v.is_object())
        .collect()
}

/// `helm template` of the chart as release `ferry-agent` in `namespace`.
fn helm_template(env: &TestEnv, namespace: &str, extra: &[&str]) -> Vec<Value> {
    let (code, out, err) = run(helm(env)
        .args(["template", "ferry-agent"])
        .arg(chart_dir())
        .args(["--namespace", namespace])
        .args(extra));
    assert_eq!(code, 0, "helm template {extra:?}: {err}");
    documents(&out)
}

/// `ferry install --export` for `namespace`, without the CRDs.
fn install_export(env: &TestEnv, namespace: &str) -> Vec<Value> {
    let (code, out, err) = run(ferry(env).args(["install", "--export", "--namespace", namespace]));
    assert_eq!(code, 0, "ferry install --export: {err}");
    documents(&out)
        .into_iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition")
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {}", keys(objects).join(", ")))
}

fn keys(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// True when every field of `small` is in `big` with the same value (arrays compared whole).
fn contains(big: &Value, small: &Value) -> bool {
    match (big, small) {
        (Value::Object(b), Value::Object(s)) => s
            .iter()
            .all(|(k, v)| b.get(k).is_some_and(|bv| contains(bv, v))),
        _ => big == small,
    }
}

/// Two arrays of the same length whose elements pairwise [`contains`].
fn each_contains(big: &Value, small: &Value) -> bool {
    match (big.as_array(), small.as_array()) {
        (Some(b), Some(s)) => b.len() == s.len() && b.iter().zip(s).all(|(b, s)| contains(b, s)),
        _ => false,
    }
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

/// Every port number any Service of `objects` exposes, by Service name.
fn service_ports(objects: &[Value]) -> Vec<(String, Vec<Value>)> {
    objects
        .iter()
        .filter(|o| o["kind"] == "Service")
        .map(|o| {
            let name = o["metadata"]["name"].as_str().unwrap_or("?").to_string();
            let ports = o["spec"]["ports"]
                .as_array()
                .map(|ps| ps.iter().map(|p| p["targetPort"].clone()).collect())
                .unwrap_or_default();
            (name, ports)
        })
        .collect()
}

/// Check everything the chart must share with `ferry install` in `namespace`, whatever values
/// it is rendered with: RBAC (rules, bindings, subjects), the ferry-admin account, the
/// NetworkPolicy's rules.
fn assert_same_rbac_and_policy(chart: &[Value], install: &[Value], namespace: &str) {
    let cluster_role = format!("ferry-agent-{namespace}");
    assert_eq!(
        find(chart, "ClusterRole", &cluster_role)["rules"],
        find(install, "ClusterRole", &cluster_role)["rules"],
        "the chart's ClusterRole rules differ from install.rs's AGENT_RULES"
    );
    assert_eq!(
        find(chart, "Role", "ferry-agent")["rules"],
        find(install, "Role", "ferry-agent")["rules"],
        "the chart's Role rules differ from install.rs's AGENT_NAMESPACE_RULES"
    );
    for (kind, name) in [
        ("ClusterRoleBinding", cluster_role.clone()),
        ("ClusterRoleBinding", format!("ferry-admin-{namespace}")),
        ("RoleBinding", "ferry-agent".to_string()),
    ] {
        let (c, i) = (find(chart, kind, &name), find(install, kind, &name));
        assert_eq!(c["roleRef"], i["roleRef"], "{kind} {name} roleRef");
        assert_eq!(c["subjects"], i["subjects"], "{kind} {name} subjects");
    }
    // Only ferry-admin is cluster-admin, in the chart as in the install.
    let admins: Vec<&Value> = chart
        .iter()
        .filter(|o| o["roleRef"]["name"] == "cluster-admin")
        .collect();
    assert_eq!(admins.len(), 1, "{admins:?}");
    assert_eq!(
        admins[0]["subjects"],
        json!([{"kind": "ServiceAccount", "name": "ferry-admin", "namespace": namespace}])
    );
    assert_eq!(
        find(chart, "ServiceAccount", "ferry-admin")["automountServiceAccountToken"],
        json!(false)
    );
}

/// The chart's NetworkPolicy has install's rules (extra metrics peers appended only when set).
fn assert_same_network_policy(chart: &[Value], install: &[Value], extra_metrics_peers: &[Value]) {
    let (c, i) = (
        find(chart, "NetworkPolicy", "ferry-agent"),
        find(install, "NetworkPolicy", "ferry-agent"),
    );
    assert_eq!(c["spec"]["policyTypes"], i["spec"]["policyTypes"]);
    let mut expected = i["spec"]["ingress"].clone();
    if let Some(from) = expected[1]["from"].as_array_mut() {
        from.extend(extra_metrics_peers.iter().cloned());
    }
    assert_eq!(
        c["spec"]["ingress"], expected,
        "NetworkPolicy ingress rules"
    );
    // The chart's selector is at least as narrow as install's, and selects the chart's pods.
    assert!(contains(
        &c["spec"]["podSelector"],
        &i["spec"]["podSelector"]
    ));
    let chart_pods =
        &find(chart, "Deployment", "ferry-agent")["spec"]["template"]["metadata"]["labels"];
    assert!(contains(
        chart_pods,
        &c["spec"]["podSelector"]["matchLabels"]
    ));
}

#[test]
fn helm_lint_passes_strict_with_the_default_values_and_every_option_on() {
    let env = TestEnv::get();
    let all_on = chart_dir().join("ci/all-on-values.yaml");
    for extra in [vec![], vec!["--strict"]] {
        for values in [None, Some(&all_on)] {
            let mut cmd = helm(&env);
            cmd.arg("lint").arg(chart_dir()).args(&extra);
            if let Some(values) = values {
                cmd.arg("--values").arg(values);
            }
            let (code, out, err) = run(&mut cmd);
            assert_eq!(code, 0, "helm lint {extra:?} {values:?}: {out}{err}");
            assert!(out.contains("0 chart(s) failed"), "{out}");
            assert!(
                !out.contains("[ERROR]") && !out.contains("[WARNING]"),
                "{out}"
            );
        }
    }
}

#[test]
fn the_default_render_is_ferry_install_without_the_namespace() {
    let env = TestEnv::get();
    let ns = "ferry-chart-defaults";
    let chart = helm_template(&env, ns, &[]);
    let install = install_export(&env, ns);

    // The same objects, except the Namespace (helm installs into an existing one, or
    // --create-namespace) and the CRDs (crds/, not templates).
    let chart_keys: BTreeSet<String> = keys(&chart).into_iter().collect();
    let install_keys: BTreeSet<String> = keys(&install)
        .into_iter()
        .filter(|k| !k.starts_with("Namespace/"))
        .collect();
    assert_eq!(chart_keys, install_keys);
    for object in &chart {
        let namespaced = !matches!(
            object["kind"].as_str(),
            Some("ClusterRole" | "ClusterRoleBinding")
        );
        if namespaced {
            assert_eq!(object["metadata"]["namespace"], ns, "{object}");
        }
    }
    assert_same_rbac_and_policy(&chart, &install, ns);
    assert_same_network_policy(&chart, &install, &[]);

    let (c, i) = (
        find(&chart, "Deployment", "ferry-agent"),
        find(&install, "Deployment", "ferry-agent"),
    );
    assert_eq!(c["spec"]["replicas"], i["spec"]["replicas"]);
    // The image tag is the chart's appVersion, which must be the CLI's version.
    assert_eq!(container(c)["image"], container(i)["image"]);
    // The same ports (the chart also spells out protocol: TCP, the API server's default).
    assert!(each_contains(
        &container(c)["ports"],
        &container(i)["ports"]
    ));
    for field in ["args", "resources", "volumeMounts", "env"] {
        assert_eq!(
            container(c)[field],
            container(i)[field],
            "container {field}"
        );
    }
    // At least install's security settings (the chart adds runAsGroup/fsGroup and a
    // container-level runAsNonRoot).
    let pod_spec = &c["spec"]["template"]["spec"];
    assert!(contains(
        &pod_spec["securityContext"],
        &i["spec"]["template"]["spec"]["securityContext"]
    ));
    assert!(contains(
        &container(c)["securityContext"],
        &container(i)["securityContext"]
    ));
    assert_eq!(pod_spec["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod_spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(
        container(c)["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    assert_eq!(
        container(c)["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container(c)["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert_eq!(
        pod_spec["volumes"],
        i["spec"]["template"]["spec"]["volumes"]
    );
    assert_eq!(pod_spec["serviceAccountName"], "ferry-agent");
    // The same probes, timing included (a shorter readiness period in one of them only would
    // make rollouts and takeovers slower one way than the other).
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(container(c)[probe], container(i)[probe], "{probe}");
        assert_eq!(container(c)[probe]["httpGet"]["path"], path);
        assert_eq!(container(c)[probe]["httpGet"]["port"], "http");
    }
    assert_eq!(
        container(c)["readinessProbe"]["periodSeconds"],
        2,
        "readiness is probed every 2 s"
    );
    // One Service, the webhook one, on the http port only; no metrics Service, no ServiceMonitor.
    assert_eq!(
        service_ports(&chart),
        vec![("ferry-agent".to_string(), vec![json!("http")])]
    );
    assert!(each_contains(
        &find(&chart, "Service", "ferry-agent")["spec"]["ports"],
        &find(&install, "Service", "ferry-agent")["spec"]["ports"]
    ));
    assert!(!chart.iter().any(|o| o["kind"] == "ServiceMonitor"));

    // crds/ is deploy/crds.yaml (what `ferry install` applies), byte for byte.
    let chart_crds =
        std::fs::read_to_string(chart_dir().join("crds/ferry-crds.yaml")).expect("chart crds");
    let deploy_crds =
        std::fs::read_to_string(repo_file("deploy/crds.yaml")).expect("deploy/crds.yaml");
    assert!(
        chart_crds == deploy_crds,
        "charts/ferry-agent/crds/ferry-crds.yaml differs from deploy/crds.yaml: cp deploy/crds.yaml charts/ferry-agent/crds/ferry-crds.yaml"
    );
    // ... and deploy/crds.yaml is THE CRD list (ferry_api::all_crds: what `ferry install`
    // applies and `ferry uninstall` / `ferry check` compare against), as `ferry-agent crds`
    // prints it.
    let generated = ferry_agent::crds::yaml().expect("the CRD list as YAML");
    assert!(
        deploy_crds == generated,
        "deploy/crds.yaml differs from the CRD list: cargo run -p ferry-agent -- crds > deploy/crds.yaml (and copy it to charts/ferry-agent/crds/ferry-crds.yaml)"
    );
}

#[test]
fn every_option_renders_as_documented() {
    let env = TestEnv::get();
    let ns = "ferry-chart-options";
    let all_on = chart_dir().join("ci/all-on-values.yaml");
    let chart = helm_template(
        &env,
        ns,
        &["--values", all_on.to_str().expect("utf-8 path")],
    );
    let install = install_export(&env, ns);
    // Whatever the values, the RBAC and the policy stay install's.
    assert_same_rbac_and_policy(&chart, &install, ns);
    assert_same_network_policy(
        &chart,
        &install,
        &[json!({"podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}})],
    );

    let d = find(&chart, "Deployment", "ferry-agent");
    let pod = &d["spec"]["template"]["spec"];
    let c = container(d);
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(
        c["image"],
        "registry.example.com/ferry/ferry-agent@sha256:0000000000000000000000000000000000000000000000000000000000000000"
    );
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
    assert_eq!(
        c["args"],
        json!([
            "--namespace",
            ns,
            "--cache-dir",
            "/cache",
            "--sealed-secrets=false",
            "--image-automation=true",
            "--watch-namespace",
            "team-a,team-b",
            "--default-service-account",
            "ferry-tenant",
            "--concurrency",
            "16",
            "--no-remote-bases",
            "--min-interval=30s"
        ])
    );
    assert_eq!(c["env"][1], json!({"name": "RUST_LOG", "value": "info"}));
    assert_eq!(c["resources"]["limits"]["memory"], "1Gi");
    assert_eq!(pod["nodeSelector"], json!({"ferry.dev/real-node": "true"}));
    assert_eq!(pod["tolerations"][0]["key"], "ferry.dev/real-node");
    assert!(pod["affinity"]["podAntiAffinity"].is_object());
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"]["team"],
        "platform"
    );
    assert_eq!(
        pod["volumes"],
        json!([
            {"name": "cache", "emptyDir": {"sizeLimit": "2Gi"}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}
        ])
    );
    assert_eq!(
        find(&chart, "ServiceAccount", "ferry-agent")["metadata"]["annotations"]["example.com/role"],
        "agent"
    );

    // Two Services: webhooks on `http` only, metrics on `metrics` only; never both on one.
    let mut ports = service_ports(&chart);
    ports.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        ports,
        vec![
            ("ferry-agent".to_string(), vec![json!("http")]),
            ("ferry-agent-metrics".to_string(), vec![json!("metrics")]),
        ]
    );
    assert_eq!(
        find(&chart, "Service", "ferry-agent")["spec"]["ports"][0]["port"],
        8080
    );
    // The ServiceMonitor selects the metrics Service and not the webhook one.
    let monitor = find(&chart, "ServiceMonitor", "ferry-agent");
    let selector = &monitor["spec"]["selector"]["matchLabels"];
    assert!(contains(
        &find(&chart, "Service", "ferry-agent-metrics")["metadata"]["labels"],
        selector
    ));
    assert!(!contains(
        &find(&chart, "Service", "ferry-agent")["metadata"]["labels"],
        selector
    ));
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");

    // A ServiceMonitor alone brings its metrics Service; the NetworkPolicy can be turned off.
    let chart = helm_template(
        &env,
        ns,
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "networkPolicy.enabled=false",
            "--set",
            "image.tag=1.2.3",
        ],
    );
    assert!(chart.iter().any(|o| o["kind"] == "ServiceMonitor"));
    find(&chart, "Service", "ferry-agent-metrics");
    assert!(!chart.iter().any(|o| o["kind"] == "NetworkPolicy"));
    assert_eq!(
        container(find(&chart, "Deployment", "ferry-agent"))["image"],
        "ghcr.io/ferry-dev/ferry-agent:1.2.3"
    );
}

/// Deletes the cluster-scoped objects an install into `namespace` creates (the ClusterRole and
/// both ClusterRoleBindings, one of them to cluster-admin) when dropped, so that a failing test
/// leaves no cluster-admin binding behind in the shared cluster. Runs kubectl (blocking), since
/// the test's runtime may be shutting down.
struct ClusterScoped {
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    namespace: String,
}

impl ClusterScoped {
    fn guard(env: &TestEnv, namespace: &str) -> Self {
        Self {
            kubectl: env.tool("kubectl"),
            kubeconfig: env.kubeconfig(),
            namespace: namespace.to_string(),
        }
    }
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

/// Copy a directory tree (the chart) into `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_renders_and_applies_its_own_chart_in_push_mode() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "chart-push").await;
    let _cleanup = ClusterScoped::guard(&env, &ns.name);
    let dir = tempfile::tempdir().expect("tempdir");
    let app = dir.path().join("ferry-agent-chart");
    copy_tree(&chart_dir(), &app.join("chart"));
    // The CRDs are cluster-wide and shared by every test (applied as `ferry-crds` by
    // `ferry install`): this app must not take them over, so it leaves the chart's crds/ out
    // here and the API server is asked to accept them with a server-side dry run below.
    std::fs::write(
        app.join("ferry.yaml"),
        format!(
            "renderer: helm\nnamespace: {ns}\nhelm:\n  chart:\n    path: chart\n  releaseName: ferry-agent\n  includeCrds: false\n  values:\n    metrics:\n      service:\n        enabled: true\n    args:\n      imageAutomation: true\n      watchNamespaces: [{ns}]\n",
            ns = ns.name
        ),
    )
    .expect("ferry.yaml");

    let (code, out, err) = run(ferry(&env)
        .args([
            "apply",
            "-n",
            &ns.name,
            "-o",
            "json",
            "--wait",
            "--timeout",
            "3m",
        ])
        .arg(&app));
    assert_eq!(code, 0, "ferry apply of the chart: {out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let applied: BTreeSet<String> = report["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["name"].as_str().unwrap_or("?")
            )
        })
        .collect();
    // Every object of the chart (helm template with the same values) was applied.
    let expected = helm_template(
        &env,
        &ns.name,
        &[
            "--set",
            "metrics.service.enabled=true",
            "--set",
            "args.imageAutomation=true",
        ],
    );
    let expected: BTreeSet<String> = keys(&expected).into_iter().collect();
    assert_eq!(applied, expected, "{out}");

    // The API server holds the agent's narrow ClusterRole, identical to install's.
    let cluster_role = format!("ferry-agent-{}", ns.name);
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let stored = roles.get(&cluster_role).await.expect("ClusterRole applied");
    let install = install_export(&env, &ns.name);
    let stored_rules = serde_json::to_value(&stored.rules).expect("rules");
    assert_eq!(
        stored_rules,
        find(&install, "ClusterRole", &cluster_role)["rules"]
    );
    // --wait returned, so the Deployment is Available (its pod runs on a kwok node: the real
    // node is tainted and this test leaves tolerations off); the applied pod spec kept the
    // chart's security settings.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let deployment = wait_for(
        "the chart's Deployment Available",
        Duration::from_secs(120),
        || {
            let deployments = deployments.clone();
            async move {
                let d = deployments.get("ferry-agent").await?;
                let available = d
                    .status
                    .as_ref()
                    .and_then(|s| s.available_replicas)
                    .unwrap_or(0)
                    >= 1;
                Ok(available.then_some(d))
            }
        },
    )
    .await
    .expect("Deployment Available");
    let spec = deployment
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod spec");
    let container = &spec.containers[0];
    let security = container
        .security_context
        .as_ref()
        .expect("securityContext");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert!(
        container
            .args
            .as_ref()
            .is_some_and(|a| a.iter().any(|x| x == "--image-automation=true"))
    );
    assert_eq!(
        spec.security_context.and_then(|s| s.run_as_user),
        Some(65532)
    );

    // The chart's CRDs: ferry renders them when includeCrds is on (the default), and the API
    // server accepts every one of them (server-side apply, dry run: the shared CRDs stay as they
    // are).
    std::fs::write(
        app.join("ferry.yaml"),
        format!("renderer: helm\nnamespace: {}\nhelm:\n  chart:\n    path: chart\n  releaseName: ferry-agent\n", ns.name),
    )
    .expect("ferry.yaml");
    let (code, out, err) = run(ferry(&env).args(["render"]).arg(&app));
    assert_eq!(code, 0, "ferry render: {err}");
    let rendered = documents(&out);
    let crds: Vec<&Value> = rendered
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .collect();
    let shipped = documents(
        &std::fs::read_to_string(chart_dir().join("crds/ferry-crds.yaml")).expect("crds"),
    );
    assert_eq!(crds.len(), shipped.len(), "ferry render includes crds/");
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    );
    let crd_api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    for crd in &crds {
        let name = crd["metadata"]["name"].as_str().expect("name");
        crd_api
            .patch(
                name,
                &PatchParams::apply("ferry-chart-test").force().dry_run(),
                &Patch::Apply(crd),
            )
            .await
            .unwrap_or_else(|e| panic!("the API server refused CRD {name}: {e}"));
    }

    // `ferry delete` removes the chart's objects, the cluster-scoped ones too.
    let (code, out, err) =
        run(ferry(&env).args(["delete", "-n", &ns.name, "--app", "ferry-agent-chart"]));
    assert_eq!(code, 0, "ferry delete: {out}{err}");
    wait_for("the ClusterRole deleted", Duration::from_secs(30), || {
        let roles = roles.clone();
        let name = cluster_role.clone();
        async move { Ok(roles.get_opt(&name).await?.is_none().then_some(())) }
    })
    .await
    .expect("ClusterRole gone");
}

/// A repository on the testenv git server holding the chart under `ferry-agent/chart` with a
/// ferry.yaml beside it (`ferry_yaml`); returns its URL.
fn repo_with_chart(env: &TestEnv, name: &str, ferry_yaml: &str) -> String {
    let repo = ferry_testsupport::git::Repo::create(env, name);
    copy_tree(&chart_dir(), &repo.work.path().join("ferry-agent/chart"));
    repo.commit(
        &[("ferry-agent/ferry.yaml", Some(ferry_yaml))],
        "the ferry-agent chart",
    );
    repo.url
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
        &PatchParams::apply("ferry-chart-test").force(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap_or_else(|e| panic!("{plural} {name}: {e}"));
}

/// Pull mode: an agent running with the shipped RBAC (the `ferry-agent` service account of
/// `ferry install --no-deployment`) deploys the chart from git through a Release in its own
/// namespace (applied as `ferry-admin`, as `ferry bootstrap`'s Release is), into another
/// namespace; deleting the Release removes what the chart created, the cluster-scoped RBAC too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_deploys_the_chart_from_git_through_a_release() {
    use ferry_agent::{Agent, AgentOptions};
    use ferry_api::Release;
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    let home = TestNamespace::create(&client, "chart-pull-home").await;
    let target = TestNamespace::create(&client, "chart-pull").await;
    let _cleanup = (
        ClusterScoped::guard(&env, &home.name),
        ClusterScoped::guard(&env, &target.name),
    );
    let (code, out, err) =
        run(ferry(&env).args(["install", "--no-deployment", "--namespace", &home.name]));
    assert_eq!(code, 0, "ferry install --no-deployment: {out}{err}");
    let minted = run(Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testenv/mint-kubeconfig"),
    )
    .args([&home.name, "ferry-agent"])
    .env("PATH", env.path_env()));
    assert_eq!(minted.0, 0, "mint-kubeconfig: {}", minted.2);
    let agent_kubeconfig = PathBuf::from(minted.1.trim());

    let url = repo_with_chart(
        &env,
        &home.name,
        &format!(
            "renderer: helm\nnamespace: {ns}\nhelm:\n  chart:\n    path: chart\n  releaseName: ferry-agent\n  includeCrds: false\n  values:\n    replicas: 2\n    args:\n      watchNamespaces: [{ns}]\n",
            ns = target.name
        ),
    );
    apply_object(&client, json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "git-auth", "namespace": home.name},
        "stringData": {"username": env.var("FERRY_GIT_USER"), "password": env.var("FERRY_GIT_PASSWORD")},
    }))
    .await;
    apply_object(&client, json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "GitSource",
        "metadata": {"name": "charts", "namespace": home.name},
        "spec": {"url": url, "ref": {"branch": "main"}, "interval": "1m", "secretRef": {"name": "git-auth"}},
    }))
    .await;
    // In pull mode the Release's targetNamespace (default: its own namespace) is helm's
    // --namespace, over ferry.yaml's `namespace`.
    apply_object(
        &client,
        json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "Release",
            "metadata": {"name": "ferry-agent", "namespace": home.name},
            "spec": {"sourceRef": {"kind": "GitSource", "name": "charts"}, "path": "ferry-agent", "targetNamespace": target.name,
                     "interval": "1m", "retryInterval": "2s", "prune": true},
        }),
    )
    .await;

    let cache = tempfile::tempdir().expect("cache");
    let mut options = AgentOptions::for_kubeconfig(agent_kubeconfig, cache.path().to_path_buf());
    options.namespace = home.name.clone();
    options.watch_namespaces = vec![home.name.clone()];
    let agent = Agent::start(options).await.expect("agent starts");

    let releases: Api<Release> = Api::namespaced(client.clone(), &home.name);
    wait_for(
        "the chart's Release Ready",
        Duration::from_secs(120),
        || {
            let releases = releases.clone();
            async move {
                let r = releases.get("ferry-agent").await?;
                let status = r.status.clone().unwrap_or_default();
                if ferry_api::common::is_ready(&status.conditions) {
                    return Ok(Some(r));
                }
                anyhow::bail!("{:?}", status.conditions)
            }
        },
    )
    .await
    .expect("Release Ready");

    // What the Release applied is the chart: the Deployment with its values, the narrow
    // ClusterRole identical to install's.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &target.name);
    let deployment = deployments.get("ferry-agent").await.expect("Deployment");
    assert_eq!(deployment.spec.as_ref().and_then(|s| s.replicas), Some(2));
    let cluster_role = format!("ferry-agent-{}", target.name);
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let stored = roles.get(&cluster_role).await.expect("ClusterRole");
    let install = install_export(&env, &target.name);
    assert_eq!(
        serde_json::to_value(&stored.rules).expect("rules"),
        find(&install, "ClusterRole", &cluster_role)["rules"]
    );

    // Deleting the Release removes the chart's objects, cluster-scoped ones included.
    releases
        .delete("ferry-agent", &Default::default())
        .await
        .expect("delete Release");
    wait_for(
        "the chart's ClusterRole pruned",
        Duration::from_secs(60),
        || {
            let roles = roles.clone();
            let name = cluster_role.clone();
            async move { Ok(roles.get_opt(&name).await?.is_none().then_some(())) }
        },
    )
    .await
    .expect("ClusterRole pruned with the Release");
    agent.stop().await.expect("agent stops");
}

/// The chart installed, upgraded and uninstalled by the real `helm` (the README's commands): the
/// CRDs already in the cluster are left as they are, the Deployment becomes Available, an upgrade
/// changes it, the documented CRD upgrade command is accepted by the API server (server-side dry
/// run: the shared CRDs stay as they are), and `helm uninstall` removes the cluster-scoped RBAC
/// but leaves the CRDs (and with them every GitSource and Release).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_installs_upgrades_and_uninstalls_the_chart() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "chart-helm").await;
    let _cleanup = ClusterScoped::guard(&env, &ns.name);
    let kubeconfig = env.kubeconfig();
    let helm_in = |args: &[&str]| {
        let mut cmd = helm(&env);
        cmd.args(args)
            .arg("--namespace")
            .arg(&ns.name)
            .env("KUBECONFIG", &kubeconfig);
        run(&mut cmd)
    };
    let chart = chart_dir();
    let chart = chart.to_str().expect("utf-8 path");

    let (code, out, err) = helm_in(&["install", "ferry-agent", chart, "--wait", "--timeout", "2m"]);
    assert_eq!(code, 0, "helm install: {out}{err}");
    assert!(out.contains("STATUS: deployed"), "{out}");
    // NOTES.txt tells the CRD upgrade path.
    assert!(out.contains("helm never upgrades crds/"), "{out}");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let cluster_role = format!("ferry-agent-{}", ns.name);
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let install = install_export(&env, &ns.name);
    assert_eq!(
        serde_json::to_value(&roles.get(&cluster_role).await.expect("ClusterRole").rules)
            .expect("rules"),
        find(&install, "ClusterRole", &cluster_role)["rules"]
    );

    let (code, out, err) = helm_in(&[
        "upgrade",
        "ferry-agent",
        chart,
        "--set",
        "replicas=2",
        "--set",
        "metrics.service.enabled=true",
        "--wait",
        "--timeout",
        "2m",
    ]);
    assert_eq!(code, 0, "helm upgrade: {out}{err}");
    let deployment = deployments.get("ferry-agent").await.expect("Deployment");
    assert_eq!(deployment.spec.and_then(|s| s.replicas), Some(2));
    assert_eq!(
        deployment.status.and_then(|s| s.available_replicas),
        Some(2),
        "helm --wait returned before the Deployment was Available"
    );
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(client.clone(), &ns.name);
    assert!(
        services
            .get_opt("ferry-agent-metrics")
            .await
            .expect("get")
            .is_some()
    );

    // The README's CRD upgrade command, as a server-side dry run.
    let mut show = helm(&env);
    show.args(["show", "crds", chart]);
    let (code, crds, err) = run(&mut show);
    assert_eq!(code, 0, "helm show crds: {err}");
    let crds_file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(crds_file.path(), &crds).expect("write CRDs");
    let (code, out, err) = run(Command::new(env.tool("kubectl"))
        .args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            "--field-manager",
            "ferry-chart-test",
            "-f",
        ])
        .arg(crds_file.path())
        .env("KUBECONFIG", &kubeconfig));
    assert_eq!(
        code, 0,
        "kubectl apply --server-side of the chart's CRDs: {out}{err}"
    );
    assert_eq!(
        out.matches("serverside-applied (server dry run)").count(),
        documents(&crds).len(),
        "{out}"
    );

    let (code, out, err) = helm_in(&["uninstall", "ferry-agent", "--wait"]);
    assert_eq!(code, 0, "helm uninstall: {out}{err}");
    wait_for(
        "the chart's ClusterRole removed",
        Duration::from_secs(60),
        || {
            let roles = roles.clone();
            let name = cluster_role.clone();
            async move { Ok(roles.get_opt(&name).await?.is_none().then_some(())) }
        },
    )
    .await
    .expect("ClusterRole removed by helm uninstall");
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    );
    let crd_api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    assert!(
        crd_api
            .get_opt("releases.ferry.dev")
            .await
            .expect("get CRD")
            .is_some(),
        "helm uninstall must leave the CRDs"
    );
}

/// values.schema.json: a misspelt or mistyped value is an error naming it, never silently
/// ignored (a typo in `args.imageAutomation` would otherwise install an agent without it).
#[test]
fn mistyped_values_are_refused_naming_the_value() {
    let env = TestEnv::get();
    for (set, expected) in [
        ("args.imageAutomaton=true", "'imageAutomaton' not allowed"),
        ("replicas=two", "/replicas"),
        ("image.digest=latest", "/image/digest"),
        ("args.watchNamespaces[0]=Team_A", "/args/watchNamespaces/0"),
        ("metrics.servce.enabled=true", "'servce' not allowed"),
    ] {
        let (code, out, err) = run(helm(&env)
            .args(["template", "ferry-agent"])
            .arg(chart_dir())
            .args(["--set", set]));
        assert_ne!(code, 0, "--set {set} was accepted: {out}");
        assert!(
            err.contains("values don't meet the specifications of the schema")
                && err.contains(expected),
            "--set {set}: {err}"
        );
    }
}

/// The agent image the real-node test runs: `$FERRY_AGENT_IMAGE`, else
/// `$FERRY_REGISTRY/ferry/ferry-agent:<version>` (what `scripts/image --push` publishes), pinned
/// to its digest. Panics (never skips) with the command that publishes it.
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
    (repository, out.trim().to_string())
}

/// The chart on the real node, the whole cycle: `helm install` with the image from the test
/// registry, the node selector and toleration of the real node; the kubelet pulls and runs the
/// image as 65532 on a read-only root and probes /readyz and /healthz (its own probe counters
/// say so); the agent talks to the API
/// server the in-cluster way with the chart's RBAC only, takes its leader Lease, fetches a
/// tenant's GitSource through the node address and applies its Release (as the tenant's service
/// account) until it is Ready. `helm uninstall` then removes the agent and its cluster-scoped
/// RBAC and leaves what the chart README says it leaves: the CRDs, the GitSource, the Release
/// (with the agent's finalizer) and the objects it applied; `ferry uninstall --releases orphan`
/// afterwards releases the Release without touching its objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_runs_the_agent_image_on_the_real_node() {
    use ferry_api::{GitSource, Release};
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::{ConfigMap, Pod};
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
    let (repository, digest) = agent_image(&env);
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "chart-node").await;
    let tenant = TestNamespace::create(&client, "chart-node-tenant").await;
    let _cleanup = ClusterScoped::guard(&env, &ns.name);
    let values = tempfile::NamedTempFile::new().expect("values file");
    std::fs::write(
        values.path(),
        format!(
            // watchNamespaces: this agent must not reconcile the other tests' objects.
            "image: {{repository: \"{repository}\", digest: \"{digest}\"}}\n\
             args: {{watchNamespaces: [\"{ns}\", \"{tenant}\"]}}\n\
             nodeSelector: {{ferry.dev/real-node: \"true\"}}\n\
             tolerations: [{{key: ferry.dev/real-node, operator: Exists, effect: NoSchedule}}]\n",
            ns = ns.name,
            tenant = tenant.name,
        ),
    )
    .expect("write values");
    let started = std::time::Instant::now();
    let (code, out, err) = run(helm(&env)
        .args(["install", "ferry-agent"])
        .arg(chart_dir())
        .args([
            "--namespace",
            &ns.name,
            "--wait",
            "--timeout",
            "3m",
            "--values",
        ])
        .arg(values.path())
        .env("KUBECONFIG", env.kubeconfig()));
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let listed = pods.list(&Default::default()).await.expect("pods");
    assert_eq!(
        code,
        0,
        "helm install on the real node: {out}{err}\npods: {:?}",
        listed
            .items
            .iter()
            .map(|p| (
                &p.metadata.name,
                p.status.as_ref().map(|s| (&s.phase, &s.container_statuses))
            ))
            .collect::<Vec<_>>()
    );
    println!(
        "chart installed, pod Ready on the real node in {:?}",
        started.elapsed()
    );
    let pod = listed.items.into_iter().next().expect("the agent pod");
    let spec = pod.spec.as_ref().expect("spec");
    assert_eq!(spec.node_name.as_deref(), Some(node.as_str()));
    let status = pod.status.as_ref().expect("status");
    assert_eq!(status.phase.as_deref(), Some("Running"), "{status:?}");
    let container = &status.container_statuses.as_ref().expect("statuses")[0];
    assert!(container.ready, "{container:?}");
    assert_eq!(container.restart_count, 0, "{container:?}");
    assert!(
        container.image_id.contains(&digest),
        "{} is not {digest}",
        container.image_id
    );
    // The pod's Ready condition, as the kubelet set it from the readiness probe.
    let ready_in = status
        .conditions
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status == "True"))
        .and_then(|c| c.last_transition_time.clone())
        .map(|t| t.0.as_second())
        .zip(
            pod.metadata
                .creation_timestamp
                .clone()
                .map(|t| t.0.as_second()),
        )
        .map(|(ready, created)| ready - created)
        .expect("a Ready condition");
    println!("agent pod created → Ready in {ready_in} s");
    // In-cluster config and the chart's Role: the pod holds the leader Lease.
    let pod_name = pod.metadata.name.clone().expect("pod name");
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    wait_for("the pod's leader Lease", Duration::from_secs(60), || {
        let leases = leases.clone();
        let pod_name = pod_name.clone();
        async move {
            let lease = leases.get_opt("ferry-agent").await?;
            let holder = lease.and_then(|l| l.spec).and_then(|s| s.holder_identity);
            Ok((holder.as_deref() == Some(pod_name.as_str())).then_some(()))
        }
    })
    .await
    .expect("the in-cluster agent leads");

    // A tenant deploys from git: admin in its namespace for its default service account (what
    // its Release applies as), git credentials, the repository as pods reach it.
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
    let repo_name = format!("{}-app", tenant.name);
    let from_host = common::repo_with_configmap(&env, &repo_name);
    let _repo =
        RemoveOnDrop(PathBuf::from(env.var("FERRY_GIT_ROOT")).join(format!("{repo_name}.git")));
    let url = from_host.replacen(&env.var("FERRY_GIT_URL"), &git_from_pods, 1);
    apply_object(
        &client,
        json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "GitSource",
            "metadata": {"name": "app", "namespace": tenant.name},
            "spec": {"url": url, "ref": {"branch": "main"}, "interval": "1h", "timeout": "20s",
                     "secretRef": {"name": "git-auth"}},
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
    let releases: Api<Release> = Api::namespaced(client.clone(), &tenant.name);
    let created = std::time::Instant::now();
    let ready = wait_for("the Release Ready", Duration::from_secs(120), || {
        let releases = releases.clone();
        async move {
            let r = releases.get("app").await?;
            let status = r.status.clone().unwrap_or_default();
            if status.last_applied_revision.is_some()
                && ferry_api::common::is_ready(&status.conditions)
            {
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
    .unwrap_or_else(|e| panic!("{e:#}"));
    println!(
        "Release Ready {:?} after it was created (the in-cluster agent of the chart)",
        created.elapsed()
    );
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &tenant.name);
    let applied = configmaps
        .get("narrow")
        .await
        .expect("the Release's ConfigMap");
    assert_eq!(
        applied
            .data
            .and_then(|d| d.get("value").cloned())
            .as_deref(),
        Some("ok")
    );
    let sources: Api<GitSource> = Api::namespaced(client.clone(), &tenant.name);
    let source = sources.get("app").await.expect("GitSource");
    assert!(
        ferry_api::common::is_ready(&source.status.clone().unwrap_or_default().conditions),
        "{:?}",
        source.status
    );

    // Both probes really probed by the kubelet, successfully: its own counters
    // (/metrics/probes, through the API server's node proxy). Liveness runs every 10 s.
    let probes = |kind: &str, text: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with("prober_probe_total{"))
            .filter(|l| {
                l.contains(&format!("pod=\"{pod_name}\""))
                    && l.contains(&format!("probe_type=\"{kind}\""))
                    && l.contains("result=\"successful\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    };
    let counted = wait_for(
        "the kubelet's liveness and readiness probes of the agent pod",
        Duration::from_secs(60),
        || {
            let (kubectl, kubeconfig) = (env.tool("kubectl"), env.kubeconfig());
            let path = format!("/api/v1/nodes/{node}/proxy/metrics/probes");
            async move {
                let (code, text, err) = run(Command::new(kubectl)
                    .args(["get", "--raw", &path])
                    .env("KUBECONFIG", kubeconfig));
                anyhow::ensure!(code == 0, "kubectl get --raw {path}: {err}");
                let counts = (probes("Liveness", &text), probes("Readiness", &text));
                if counts.0 > 0 && counts.1 > 0 {
                    return Ok(Some(counts));
                }
                anyhow::bail!("successful (liveness, readiness) probes so far: {counts:?}")
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    println!("kubelet probes of the agent pod (liveness, readiness): {counted:?}");

    // helm uninstall: the agent and its RBAC go; the CRDs, the GitSource, the Release and what
    // it applied stay (charts/ferry-agent/README.md, "Uninstalling").
    let (code, out, err) = run(helm(&env)
        .args([
            "uninstall",
            "ferry-agent",
            "--wait",
            "--namespace",
            &ns.name,
        ])
        .env("KUBECONFIG", env.kubeconfig()));
    assert_eq!(code, 0, "helm uninstall: {out}{err}");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        deployments
            .get_opt("ferry-agent")
            .await
            .expect("get")
            .is_none()
    );
    let roles: Api<ClusterRole> = Api::all(client.clone());
    wait_for(
        "the chart's ClusterRole removed",
        Duration::from_secs(60),
        || {
            let roles = roles.clone();
            let name = format!("ferry-agent-{}", ns.name);
            async move { Ok(roles.get_opt(&name).await?.is_none().then_some(())) }
        },
    )
    .await
    .expect("ClusterRole removed by helm uninstall");
    wait_for("the agent pod gone", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move {
            let left = pods
                .list(
                    &kube::api::ListParams::default().labels("app.kubernetes.io/name=ferry-agent"),
                )
                .await?;
            Ok(left.items.is_empty().then_some(()))
        }
    })
    .await
    .expect("helm uninstall removes the agent pod");
    let crd_resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    );
    let crd_api: Api<DynamicObject> = Api::all_with(client.clone(), &crd_resource);
    for crd in ["gitsources.ferry.dev", "releases.ferry.dev"] {
        assert!(
            crd_api.get_opt(crd).await.expect("get CRD").is_some(),
            "helm uninstall removed the CRD {crd}"
        );
    }
    let kept = releases.get("app").await.expect("the Release is kept");
    assert_eq!(kept.metadata.uid, ready.metadata.uid);
    assert!(
        kept.metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == "ferry.dev/finalizer")),
        "{:?}",
        kept.metadata.finalizers
    );
    sources.get("app").await.expect("the GitSource is kept");
    configmaps
        .get("narrow")
        .await
        .expect("the Release's ConfigMap is kept");

    // The documented way to let go of the Releases once the agent is gone: `ferry uninstall
    // --releases orphan` (it finds no Deployment, so it is told the agent's namespaces).
    let (code, out, err) = run(ferry(&env).args([
        "uninstall",
        "--namespace",
        &ns.name,
        "--watch-namespace",
        &tenant.name,
        "--releases",
        "orphan",
    ]));
    assert_eq!(code, 0, "ferry uninstall after helm uninstall: {out}{err}");
    assert!(
        releases.get_opt("app").await.expect("get").is_none(),
        "the Release is released: {out}"
    );
    configmaps
        .get("narrow")
        .await
        .expect("orphaned: the Release's ConfigMap stays");
}

/// Removes a directory (the test's repository on the git server) when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("warning: removing {}: {e}", self.0.display());
        }
    }
}
