//! helm's `.Capabilities` in push mode (issue 14), through the `ferry` binary against the real
//! testenv: `ferry apply` and `ferry diff` pass the cluster's own Kubernetes version and API
//! versions (from discovery, as `helm install` and the agent do), `ferry render` keeps helm
//! template's offline defaults unless `--kube-version` / `--api-versions` are given, and those
//! flags refuse values that would reach helm's command line as something else.

use std::path::Path;
use std::process::Command;

use ferry_testsupport::{TestEnv, TestNamespace};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;

fn ferry(env: &TestEnv, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env_remove("CI")
        .env("NO_COLOR", "1")
        .env("KUBECONFIG", env.kubeconfig())
        .env("PATH", env.path_env())
        .output()
        .expect("run ferry");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A chart whose one ConfigMap says which branch each capability took. The Kubernetes version
/// the test expects comes in as a value, so the chart branches on equality with it; the API
/// group is ferry's own, which the testenv serves and helm's offline list does not know.
fn write_chart(dir: &Path) {
    std::fs::create_dir_all(dir.join("templates")).expect("mkdir");
    std::fs::write(
        dir.join("Chart.yaml"),
        "apiVersion: v2\nname: caps\nversion: 0.1.0\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("templates/cm.yaml"),
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: caps
data:
  kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}
{{- if eq .Capabilities.KubeVersion.Version .Values.clusterVersion }}
  kubeBranch: cluster
{{- else }}
  kubeBranch: offline
{{- end }}
{{- if .Capabilities.APIVersions.Has "ferry.dev/v1alpha1/Release" }}
  apiBranch: cluster
{{- else }}
  apiBranch: offline
{{- end }}
"#,
    )
    .expect("write");
}

fn data_of(rendered: &serde_json::Value) -> serde_json::Value {
    let list = rendered.as_array().expect("a JSON list of objects");
    assert_eq!(list.len(), 1, "{rendered}");
    list[0]["data"].clone()
}

#[tokio::test]
async fn push_mode_renders_charts_with_the_clusters_capabilities() {
    let env = TestEnv::get();
    let client = env.client().await;
    ferry_testsupport::install_crds(&client, &ferry_api::all_crd_values(), "ferry-tests").await;
    let cluster_version = client
        .apiserver_version()
        .await
        .expect("the API server's /version")
        .git_version;
    let ns = TestNamespace::create(&client, "cli-caps").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let chart = dir.path().join("caps");
    write_chart(&chart);
    let chart_arg = chart.to_string_lossy().into_owned();
    let expect = format!("clusterVersion={cluster_version}");

    // Offline, like `helm template`: helm's defaults (which know neither ferry's API group nor
    // this cluster's exact version).
    let (code, out, err) = ferry(
        &env,
        &["render", &chart_arg, "--set", &expect, "-o", "json"],
    );
    assert_eq!(code, 0, "{err}");
    let offline = data_of(&serde_json::from_str(&out).expect("json"));
    assert_eq!(offline["apiBranch"], "offline", "{offline}");
    assert_eq!(offline["kubeBranch"], "offline", "{offline}");

    // Offline with the flags: what they say.
    let (code, out, err) = ferry(
        &env,
        &[
            "render",
            "--chart",
            &chart_arg,
            "--set",
            &expect,
            "--kube-version",
            &cluster_version,
            "--api-versions",
            "apps/v1,ferry.dev/v1alpha1/Release",
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let flagged = data_of(&serde_json::from_str(&out).expect("json"));
    assert_eq!(flagged["apiBranch"], "cluster", "{flagged}");
    assert_eq!(flagged["kubeBranch"], "cluster", "{flagged}");

    // `ferry apply` (a directory detected as a chart): the cluster's capabilities.
    let (code, out, err) = ferry(
        &env,
        &[
            "apply", &chart_arg, "--app", "caps", "-n", &ns.name, "--set", &expect,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let applied = Api::<ConfigMap>::namespaced(client.clone(), &ns.name)
        .get("caps")
        .await
        .expect("the chart's ConfigMap")
        .data
        .unwrap_or_default();
    assert_eq!(
        applied.get("kubeVersion"),
        Some(&cluster_version),
        "{applied:?}"
    );
    assert_eq!(
        applied.get("kubeBranch").map(String::as_str),
        Some("cluster")
    );
    assert_eq!(
        applied.get("apiBranch").map(String::as_str),
        Some("cluster")
    );

    // `ferry diff` (the chart by --chart) renders the same way: nothing differs from what
    // apply left (an offline render would change both branches back).
    let (code, out, err) = ferry(
        &env,
        &[
            "diff", "--chart", &chart_arg, "--app", "caps", "-n", &ns.name, "--set", &expect,
        ],
    );
    assert_eq!(code, 0, "diff found changes:\n{out}{err}");
}

/// The flags' values reach helm's argv: anything that is not a version or an API version is
/// refused before helm runs, naming the flag.
#[test]
fn capability_flags_refuse_what_is_not_a_version() {
    let env = TestEnv::get();
    let dir = tempfile::tempdir().expect("tempdir");
    let chart = dir.path().join("caps");
    write_chart(&chart);
    let chart_arg = chart.to_string_lossy().into_owned();
    for (flag, value) in [
        ("--kube-version", "--post-renderer=/bin/sh"),
        ("--kube-version", "v1.35.4 --debug"),
        ("--api-versions", "--post-renderer=/bin/sh"),
        ("--api-versions", "apps/v1 --debug"),
        ("--api-versions", "apps/v1,-x"),
    ] {
        let flag_value = format!("{flag}={value}");
        let (code, out, err) = ferry(&env, &["render", &chart_arg, &flag_value]);
        assert_eq!(code, 2, "{flag_value} accepted:\n{out}{err}");
        assert!(err.contains(flag), "{flag_value}: {err}");
        assert!(out.is_empty(), "{flag_value} rendered:\n{out}");
    }
}
