//! Attack tests for the render stage (issue 11, items 1, 4, 11 and the render part of 15),
//! run with the real `helm` and `kustomize` of the test environment. Each test performs the
//! attack a repository author (ferry.yaml, Chart.yaml, kustomizations) or a tenant
//! (`spec.render`) could, and checks that it fails safely: a clear error naming the file, no
//! command run (marker files stay absent), no URL fetched, nothing read outside the root.

mod render_support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferry_engine::render::config::{AppConfig, RenderPolicy, SpecLayer};
use ferry_engine::render::safety::Limits;
use ferry_engine::render::{self, RenderRequest};
use render_support::{Tree, find, json};

/// A chart whose rendered output is also a shell script: `x=1; touch MARKER; y: z` is a YAML
/// mapping key to helm and a command line to `/bin/sh`. With `--post-renderer=/bin/sh` on
/// helm's argv, helm pipes this output into sh and the marker appears.
fn shell_chart(t: &Tree, dir: &str, chart_name: &str, marker: &Path) {
    t.write(
        &format!("{dir}/Chart.yaml"),
        &format!("apiVersion: v2\nname: {chart_name:?}\nversion: 0.1.0\n"),
    );
    t.write(
        &format!("{dir}/templates/cm.yaml"),
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n  annotations:\n    x=1; touch {}; y: z\ndata:\n  release: {{{{ .Release.Name }}}}\n",
            marker.display()
        ),
    );
}

const POST_RENDERER: &str = "--post-renderer=/bin/sh";

/// The payload is live: the argv ferry built before the fix (`helm template NAME CHART ...`
/// with NAME from ferry.yaml) does run the shell. Without this control the refusal below
/// could be passing for the wrong reason.
fn assert_payload_is_live(t: &Tree, chart: &Path, marker: &Path) {
    let home = tempfile::tempdir().expect("home");
    let out = Command::new(t.env.tool("helm"))
        .arg("template")
        .arg(POST_RENDERER)
        .arg(chart)
        .args(["--namespace", "default", "--skip-tests"])
        .env("HOME", home.path())
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .output()
        .expect("run helm");
    assert!(
        marker.exists(),
        "control: helm with the injected flag should have run the shell: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(marker).expect("remove marker");
}

/// Item 1: `helm.releaseName: --post-renderer=/bin/sh` in ferry.yaml.
#[test]
fn release_name_from_ferry_yaml_cannot_become_a_helm_flag() {
    let t = Tree::new();
    let marker_dir = tempfile::tempdir().expect("marker dir");
    let marker = marker_dir.path().join("pwned");
    shell_chart(&t, "app/chart", "web", &marker);
    assert_payload_is_live(&t, &t.path("app/chart"), &marker);
    t.write(
        "app/ferry.yaml",
        &format!("helm:\n  chart: {{path: chart}}\n  releaseName: {POST_RENDERER:?}\n"),
    );
    let err = t.render_err("app");
    assert!(err.contains("app/ferry.yaml"), "names the file: {err}");
    assert!(err.contains("releaseName"), "names the field: {err}");
    assert!(err.contains("is invalid"), "{err}");
    assert!(!marker.exists(), "the post-renderer must not have run");
}

/// Item 1: the chart's own `name` (the default release name) is as untrusted as ferry.yaml.
#[test]
fn chart_yaml_name_cannot_become_a_helm_flag() {
    let t = Tree::new();
    let marker_dir = tempfile::tempdir().expect("marker dir");
    let marker = marker_dir.path().join("pwned");
    shell_chart(&t, "app", POST_RENDERER, &marker);
    let err = t.render_err("app");
    assert!(err.contains("Chart.yaml"), "names the file: {err}");
    assert!(err.contains("release name"), "{err}");
    assert!(
        err.contains("helm.releaseName"),
        "says how to fix it: {err}"
    );
    assert!(!marker.exists(), "the post-renderer must not have run");
}

/// Item 1: every other value that reaches helm's argv. Values that are data stay data: a
/// `--set` value that looks like a flag ends up in the object, not on helm's command line.
#[test]
fn kube_version_api_versions_and_set_cannot_become_flags() {
    let t = Tree::new();
    let marker_dir = tempfile::tempdir().expect("marker dir");
    let marker = marker_dir.path().join("pwned");
    shell_chart(&t, "app/chart", "web", &marker);
    for (field, yaml) in [
        ("kubeVersion", format!("kubeVersion: {POST_RENDERER:?}")),
        ("apiVersions", format!("apiVersions: [{POST_RENDERER:?}]")),
        ("set", format!("set: [{POST_RENDERER:?}]")),
        ("setString", format!("setString: [{POST_RENDERER:?}]")),
    ] {
        t.write(
            "app/ferry.yaml",
            &format!("helm:\n  chart: {{path: chart}}\n  {yaml}\n"),
        );
        let err = t.render_err("app");
        assert!(
            err.contains("app/ferry.yaml") && err.contains(field),
            "{field}: {err}"
        );
        assert!(
            !marker.exists(),
            "{field}: the post-renderer must not have run"
        );
    }
    t.write(
        "app/ferry.yaml",
        &format!("namespace: {POST_RENDERER:?}\nhelm:\n  chart: {{path: chart}}\n"),
    );
    let err = t.render_err("app");
    assert!(err.contains("namespace"), "{err}");
    // A flag-like value is only data.
    let chart_values = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: values}\ndata:\n  v: {{ .Values.v | quote }}\n";
    t.write("app/chart/templates/values.yaml", chart_values);
    std::fs::remove_file(t.path("app/chart/templates/cm.yaml")).expect("rm");
    t.write(
        "app/ferry.yaml",
        &format!("helm:\n  chart: {{path: chart}}\n  set: [\"v={POST_RENDERER}\"]\n"),
    );
    let manifests = t.render("app");
    let cm = json(find(&manifests, "ConfigMap", "values"));
    assert_eq!(cm["data"]["v"], POST_RENDERER);
    assert!(!marker.exists());
}

/// Item 1: chart sources in ferry.yaml: no non-http(s) repositories, no chart name that is a
/// path or a flag, no OCI reference without a path.
#[test]
fn chart_sources_are_validated() {
    let t = Tree::new();
    for (chart, expect) in [
        ("{repo: 'file:///etc', name: x}", "https://"),
        (
            "{repo: 'https://charts.example', name: '--untardir=/tmp'}",
            "chart name",
        ),
        (
            "{repo: 'https://charts.example', name: '../../etc'}",
            "chart name",
        ),
        ("{oci: 'oci://-registry'}", "oci://"),
        ("{name: /etc}", "exactly one of"),
        (
            "{repo: 'https://charts.example', name: x, version: '--devel'}",
            "version",
        ),
    ] {
        t.write("app/ferry.yaml", &format!("helm:\n  chart: {chart}\n"));
        let err = t.render_err("app");
        assert!(
            err.contains("app/ferry.yaml") && err.contains(expect),
            "{chart}: {err}"
        );
    }
}

fn spec_layer(yaml: &str) -> SpecLayer {
    let value: serde_json::Value = serde_saphyr::from_str(yaml).expect("spec yaml");
    SpecLayer {
        source: PathBuf::from("Release team-a/web spec.render"),
        config: serde_json::from_value::<AppConfig>(value).expect("spec is an AppConfig"),
    }
}

/// Item 4: a Release's `spec.render` is ferry.yaml-level config: a chart name without a
/// repository never becomes a path on the agent's disk, paths stay inside the source root,
/// and the same name rules apply, with errors naming the Release.
#[test]
fn spec_render_is_checked_like_ferry_yaml() {
    let t = Tree::new();
    // A chart outside the source root (on "the agent's disk").
    let outside = tempfile::tempdir().expect("outside");
    let secret_chart = outside.path().join("secret-chart");
    std::fs::create_dir_all(secret_chart.join("templates")).expect("mkdir");
    std::fs::write(
        secret_chart.join("Chart.yaml"),
        "apiVersion: v2\nname: secret-chart\nversion: 0.1.0\n",
    )
    .expect("write");
    std::fs::write(
        secret_chart.join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: leaked}\n",
    )
    .expect("write");
    t.write(
        "app/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\n",
    );
    t.write(
        "charts/web/Chart.yaml",
        "apiVersion: v2\nname: web\nversion: 0.1.0\n",
    );
    let render_with = |yaml: &str| {
        let mut req = t.request("app");
        req.spec = Some(spec_layer(yaml));
        render::render(&req)
    };
    let cases = [
        (
            format!(
                "renderer: helm\nhelm: {{chart: {{name: {:?}}}}}\n",
                secret_chart.display()
            ),
            "exactly one of",
        ),
        (
            format!(
                "renderer: helm\nhelm: {{chart: {{path: {:?}}}}}\n",
                secret_chart.display()
            ),
            "absolute path",
        ),
        (
            "renderer: helm\nhelm: {chart: {path: ../../../../../../../..}}\n".to_string(),
            "leaves",
        ),
        (
            "renderer: helm\nhelm:\n  chart: {path: ../charts/web}\n  valuesFiles: [/etc/passwd]\n"
                .to_string(),
            "absolute path",
        ),
        (
            format!(
                "renderer: helm\nhelm:\n  chart: {{path: ../charts/web}}\n  releaseName: {POST_RENDERER:?}\n"
            ),
            "releaseName",
        ),
        (
            "substituteFrom: [../../../../../../etc/hostname]\n".to_string(),
            "leaves",
        ),
    ];
    for (yaml, expect) in &cases {
        let err = match render_with(yaml) {
            Ok(m) => panic!("{yaml}: should be refused, rendered {} objects", m.len()),
            Err(err) => err.to_string(),
        };
        assert!(err.contains(expect), "{yaml}: {err}");
        assert!(!err.contains("leaked"), "{err}");
    }
    // Names in spec.render are refused before anything runs, naming the Release.
    let err = render_with(&format!("helm: {{releaseName: {POST_RENDERER:?}}}\n"))
        .expect_err("invalid release name");
    assert!(
        err.to_string().contains("Release team-a/web spec.render"),
        "{err}"
    );
    // What a tenant may legitimately set still works.
    let manifests =
        render_with("namespace: team-a\nsubstitute: {X: value}\n").expect("valid spec.render");
    assert_eq!(manifests.len(), 1);
}

/// Hostile HTTP peer: counts every connection and answers with content a tenant would like
/// to see inside a ConfigMap (the stand-in for a cloud metadata endpoint or an internal
/// service the agent can reach).
struct HostilePeer {
    url: String,
    hits: Arc<AtomicUsize>,
}

impl HostilePeer {
    fn start() -> Self {
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
                let body = "INTERNAL-SECRET=stolen\n";
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { url, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Every kustomization field that names a file, with `URL` standing for a remote location.
fn url_fields() -> Vec<(&'static str, String)> {
    vec![
        ("configMapGenerator.files", "configMapGenerator:\n- name: a\n  files: [URL/f.txt]\n".into()),
        ("configMapGenerator.files", "configMapGenerator:\n- name: a\n  files: [key=URL/f.txt]\n".into()),
        ("configMapGenerator.envs", "configMapGenerator:\n- name: a\n  envs: [URL/a.env]\n".into()),
        ("secretGenerator.envs", "secretGenerator:\n- name: a\n  envs: [URL/a.env]\n".into()),
        ("secretGenerator.env", "secretGenerator:\n- name: a\n  env: URL/a.env\n".into()),
        ("patches.path", "resources: [cm.yaml]\npatches:\n- path: URL/p.yaml\n".into()),
        ("patchesStrategicMerge", "resources: [cm.yaml]\npatchesStrategicMerge: [URL/p.yaml]\n".into()),
        ("patchesJson6902.path", "resources: [cm.yaml]\npatchesJson6902:\n- target: {kind: ConfigMap, name: cm}\n  path: URL/p.yaml\n".into()),
        ("replacements.path", "resources: [cm.yaml]\nreplacements:\n- path: URL/r.yaml\n".into()),
        ("transformers", "resources: [cm.yaml]\ntransformers: [URL/t.yaml]\n".into()),
        ("generators", "generators: [URL/g.yaml]\n".into()),
        ("validators", "resources: [cm.yaml]\nvalidators: [URL/v.yaml]\n".into()),
        ("crds", "resources: [cm.yaml]\ncrds: [URL/crd.json]\n".into()),
        ("configurations", "resources: [cm.yaml]\nconfigurations: [URL/c.yaml]\n".into()),
        ("openapi.path", "resources: [cm.yaml]\nopenapi: {path: URL/schema.json}\n".into()),
        ("resources", "resources: [URL/r.yaml]\n".into()),
        // Inside a builtin transformer's own config file.
        ("transformers path", "resources: [cm.yaml]\ntransformers: [patch.yaml]\n".into()),
    ]
}

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n";

/// Item 11: remote loading off (the default): no field of a kustomization makes kustomize
/// fetch a URL, and the error names the kustomization and the field.
#[test]
fn kustomize_fields_naming_urls_are_refused_and_nothing_is_fetched() {
    let peer = HostilePeer::start();
    let t = Tree::new();
    t.write("app/cm.yaml", CM);
    t.write(
        "app/patch.yaml",
        &format!(
            "apiVersion: builtin\nkind: PatchTransformer\nmetadata: {{name: p}}\npath: {}/p.yaml\ntarget: {{kind: ConfigMap}}\n",
            peer.url
        ),
    );
    for (field, kustomization) in url_fields() {
        t.write(
            "app/kustomization.yaml",
            &kustomization.replace("URL", &peer.url),
        );
        let err = t.render_err("app");
        assert!(
            err.contains("app/kustomization.yaml") || err.contains("app/patch.yaml"),
            "{field}: names the file: {err}"
        );
        assert!(err.contains("remote"), "{field}: {err}");
        assert!(
            err.contains("allowRemoteBases"),
            "{field}: says what to do: {err}"
        );
        assert_eq!(peer.hits(), 0, "{field}: nothing may be fetched");
    }
}

/// Item 11: the agent's `--no-remote-bases` wins over a repository that allows remote
/// loading; without it, the opt-in does work (the control showing the fetch path is real).
#[test]
fn agent_policy_forbids_remote_loading_even_when_ferry_yaml_allows_it() {
    let peer = HostilePeer::start();
    let t = Tree::new();
    t.write("app/ferry.yaml", "kustomize: {allowRemoteBases: true}\n");
    t.write(
        "app/kustomization.yaml",
        &format!(
            "configMapGenerator:\n- name: a\n  files: [{}/f.txt]\n",
            peer.url
        ),
    );
    let mut req = t.request("app");
    req.policy = RenderPolicy {
        forbid_remote_loading: true,
        ..RenderPolicy::default()
    };
    let err = render::render(&req).expect_err("forbidden").to_string();
    assert!(err.contains("--no-remote-bases"), "{err}");
    assert_eq!(peer.hits(), 0, "nothing may be fetched");
    // The same with the spec.render layer asking for it.
    let mut req = t.request("app");
    std::fs::remove_file(t.path("app/ferry.yaml")).expect("rm");
    req.spec = Some(spec_layer("kustomize: {allowRemoteBases: true}\n"));
    req.policy.forbid_remote_loading = true;
    let err = render::render(&req).expect_err("forbidden").to_string();
    assert!(err.contains("--no-remote-bases"), "{err}");
    assert_eq!(peer.hits(), 0, "nothing may be fetched");
    // Control: allowed by the repository and not forbidden by the operator, it is fetched.
    req.policy.forbid_remote_loading = false;
    let manifests = render::render(&req).expect("remote loading allowed");
    assert!(peer.hits() > 0);
    let cm = manifests
        .iter()
        .find(|m| m.kind() == "ConfigMap")
        .expect("cm");
    assert!(json(cm).to_string().contains("stolen"));
}

/// Item 11: files outside the root, by absolute path, `..` or a symlink, in any field.
#[test]
fn kustomize_fields_cannot_read_outside_the_root() {
    let t = Tree::new();
    let outside = tempfile::tempdir().expect("outside");
    let secret = outside.path().join("secret.env");
    std::fs::write(&secret, "TOKEN=outside-secret\n").expect("write");
    t.write("app/cm.yaml", CM);
    // Outside the app directory, so that only the field naming it leads there.
    std::fs::create_dir_all(t.path("other")).expect("mkdir");
    std::os::unix::fs::symlink(&secret, t.path("other/link.env")).expect("symlink");
    let abs = secret.display().to_string();
    for kustomization in [
        format!("configMapGenerator:\n- name: a\n  files: [{abs}]\n"),
        format!("configMapGenerator:\n- name: a\n  envs: [{abs}]\n"),
        "configMapGenerator:\n- name: a\n  envs: [../../../../../../../../etc/hostname]\n"
            .to_string(),
        "configMapGenerator:\n- name: a\n  envs: [../other/link.env]\n".to_string(),
        format!("resources: [cm.yaml]\npatches:\n- path: {abs}\n"),
        format!("resources: [cm.yaml]\nreplacements:\n- path: {abs}\n"),
        format!("resources: [cm.yaml]\nopenapi: {{path: {abs}}}\n"),
    ] {
        t.write("app/kustomization.yaml", &kustomization);
        let err = t.render_err("app");
        assert!(err.contains("source root"), "{kustomization}: {err}");
        assert!(!err.contains("outside-secret"), "{err}");
    }
}

/// Item 11: kustomize's helm inflation and plugins (KRM functions, exec, legacy plugins) are
/// refused before kustomize runs; builtin transformer configs still work.
#[test]
fn kustomize_helm_inflation_and_plugins_are_refused() {
    let t = Tree::new();
    let marker_dir = tempfile::tempdir().expect("marker dir");
    let marker = marker_dir.path().join("pwned");
    t.write("app/cm.yaml", CM);
    t.write(
        "app/evil.sh",
        &format!("#!/bin/sh\ntouch {}\ncat\n", marker.display()),
    );
    let mut perms = std::fs::metadata(t.path("app/evil.sh"))
        .expect("stat")
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(t.path("app/evil.sh"), perms).expect("chmod");
    t.write(
        "app/exec-fn.yaml",
        "apiVersion: example.com/v1\nkind: Evil\nmetadata:\n  name: e\n  annotations:\n    config.kubernetes.io/function: |\n      exec:\n        path: ./evil.sh\n",
    );
    t.write(
        "app/helm-gen.yaml",
        "apiVersion: builtin\nkind: HelmChartInflationGenerator\nmetadata: {name: h}\nname: x\nrepo: https://charts.example\n",
    );
    t.write(
        "app/legacy.yaml",
        "apiVersion: someteam.example.com/v1\nkind: SedTransformer\nmetadata: {name: s}\n",
    );
    t.write(
        "app/fns/kustomization.yaml",
        "resources: [../exec-fn.yaml]\n",
    );
    for (what, kustomization, expect) in [
        ("helmCharts", "helmCharts:\n- name: x\n  repo: https://charts.example\n".to_string(), "helm"),
        ("helmGlobals", "helmGlobals: {chartHome: charts}\n".to_string(), "helm"),
        ("exec function", "resources: [cm.yaml]\ntransformers: [exec-fn.yaml]\n".to_string(), "KRM function"),
        ("function in a generator dir", "generators: [fns]\n".to_string(), "KRM function"),
        ("inline function", "resources: [cm.yaml]\ntransformers:\n- |\n  apiVersion: example.com/v1\n  kind: Evil\n  metadata:\n    name: e\n    annotations:\n      config.kubernetes.io/function: |\n        exec:\n          path: ./evil.sh\n".to_string(), "KRM function"),
        ("helm generator", "generators: [helm-gen.yaml]\n".to_string(), "helm"),
        ("legacy plugin", "resources: [cm.yaml]\ntransformers: [legacy.yaml]\n".to_string(), "builtin"),
    ] {
        t.write("app/kustomization.yaml", &kustomization);
        let err = t.render_err("app");
        assert!(err.contains("app/"), "{what}: names the file: {err}");
        assert!(err.contains(expect), "{what}: {err}");
        assert!(!marker.exists(), "{what}: nothing may run");
    }
    // Control: a builtin transformer config with a local path works.
    t.write(
        "app/labels.yaml",
        "apiVersion: builtin\nkind: LabelTransformer\nmetadata: {name: l}\nlabels: {team: a}\nfieldSpecs: [{path: metadata/labels, create: true}]\n",
    );
    t.write(
        "app/kustomization.yaml",
        "resources: [cm.yaml]\ntransformers: [labels.yaml]\n",
    );
    let manifests = t.render("app");
    assert_eq!(
        json(find(&manifests, "ConfigMap", "cm"))["metadata"]["labels"]["team"],
        "a"
    );
}

/// Item 15: ferry.yaml `limits` cannot raise a limit above the operator's ceiling.
#[test]
fn ferry_yaml_limits_are_capped_by_the_operator_ceilings() {
    let t = Tree::new();
    t.write(
        "app/ferry.yaml",
        "limits: {maxFileBytes: 1000000000, timeoutSeconds: 100000}\n",
    );
    t.write(
        "app/big.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata:\n  v: {}\n",
            "x".repeat(8 * 1024)
        ),
    );
    let mut req = t.request("app");
    req.policy.ceilings = Limits {
        max_file_bytes: 4 * 1024,
        ..Limits::ceilings()
    };
    let err = render::render(&req).expect_err("capped").to_string();
    assert!(err.contains("per-file limit of 4096 bytes"), "{err}");
    // Below the ceiling, the tenant's own lower limit applies.
    t.write("app/ferry.yaml", "limits: {maxFileBytes: 1024}\n");
    let err = render::render(&req).expect_err("lowered").to_string();
    assert!(err.contains("per-file limit of 1024 bytes"), "{err}");

    // The timeout: a kustomize that hangs (an operator-given binary standing in for a slow
    // build) is killed at the ceiling, not at ferry.yaml's 100000 s.
    let slow = t.path("slow-kustomize");
    std::fs::write(&slow, "#!/bin/sh\nsleep 60\n").expect("write");
    let mut perms = std::fs::metadata(&slow).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&slow, perms).expect("chmod");
    t.write("k/ferry.yaml", "limits: {timeoutSeconds: 100000}\n");
    t.write("k/kustomization.yaml", "resources: [cm.yaml]\n");
    t.write("k/cm.yaml", CM);
    let mut req: RenderRequest = t.request("k");
    req.overrides.kustomize_binary = Some(slow);
    req.policy.ceilings = Limits {
        timeout_seconds: 1,
        ..Limits::ceilings()
    };
    let started = Instant::now();
    let err = render::render(&req).expect_err("killed").to_string();
    assert!(err.contains("did not finish within 1s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
}
