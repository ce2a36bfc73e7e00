//! `ferry cluster-info` against the real testenv, and its error when no cluster is reachable.

use std::process::Command;

use ferry_testsupport::TestEnv;

fn ferry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
}

#[test]
fn cluster_info_reports_version_identity_and_ssa() {
    let env = TestEnv::get();
    let output = ferry()
        .args(["cluster-info", "-o", "json", "--kubeconfig"])
        .arg(env.kubeconfig())
        .output()
        .expect("run ferry");
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json output");
    assert!(
        info["version"]
            .as_str()
            .unwrap_or_default()
            .starts_with("v1.")
    );
    assert_eq!(info["server_side_apply"], true);
    // The testenv admin is in system:masters, which SelfSubjectReview reports back.
    let groups = info["groups"].as_array().cloned().unwrap_or_default();
    assert!(
        groups.iter().any(|g| g == "system:masters"),
        "groups: {groups:?}"
    );
}

#[test]
fn unreachable_cluster_names_kubeconfig_and_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\ncontexts:\n- name: gone\n  context: {cluster: gone, user: nobody}\ncurrent-context: gone\nusers:\n- name: nobody\n  user: {token: not-a-real-token}\n",
    )
    .expect("write kubeconfig");
    let output = ferry()
        .arg("cluster-info")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .output()
        .expect("run ferry");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("https://127.0.0.1:1"), "stderr: {stderr}");
    assert!(
        stderr.contains("cannot reach the API server"),
        "stderr: {stderr}"
    );
    assert!(
        !stderr.contains("not-a-real-token"),
        "token leaked: {stderr}"
    );
}

#[test]
fn missing_kubeconfig_file_is_named() {
    let output = ferry()
        .args([
            "cluster-info",
            "--kubeconfig",
            "/nonexistent/ferry/kubeconfig",
        ])
        .output()
        .expect("run ferry");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/ferry/kubeconfig"),
        "stderr: {stderr}"
    );
}

#[test]
fn completions_are_generated_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let output = ferry()
            .args(["completions", shell])
            .output()
            .expect("run ferry");
        assert!(output.status.success());
        let script = String::from_utf8_lossy(&output.stdout);
        assert!(
            script.contains("cluster-info"),
            "{shell} completion lacks subcommands"
        );
    }
}
