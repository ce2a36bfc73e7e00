//! Attack test for issue 11, item 2: renderers run code from the repository (helm templates,
//! kustomize's git for remote bases, post-renderers), so they must not inherit ferry's
//! credentials. ferry's own environment holds a SOPS key, a kubeconfig path and cloud
//! credentials; `$FERRY_HELM` / `$FERRY_KUSTOMIZE` point at wrapper scripts (operator-chosen
//! binaries, as an operator may legitimately set) that record the environment they were given
//! and then run the real testenv tools. None of the credentials may reach them.
//!
//! This file holds a single test on purpose: it changes the process environment, which is only
//! sound while no other test thread reads it.

mod render_support;

use std::path::Path;

use ferry_engine::render;
use render_support::Tree;

const SECRETS: [(&str, &str); 4] = [
    (
        "SOPS_AGE_KEY",
        "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQSNEAKY",
    ),
    ("KUBECONFIG", "/secret/agent-kubeconfig-sneaky"),
    ("AWS_SECRET_ACCESS_KEY", "aws-secret-sneaky-value"),
    ("GITHUB_TOKEN", "ghp_sneakytokenvalue"),
];

fn wrapper(dir: &Path, name: &str, real: &Path) -> std::path::PathBuf {
    let script = dir.join(format!("{name}-wrapper"));
    let dump = dir.join(format!("{name}.env"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nenv >> {dump}\necho ---- >> {dump}\nexec {real} \"$@\"\n",
            dump = dump.display(),
            real = real.display()
        ),
    )
    .expect("write wrapper");
    let mut perms = std::fs::metadata(&script).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).expect("chmod");
    script
}

#[test]
fn renderers_see_none_of_ferrys_credentials() {
    let t = Tree::new();
    let spy = tempfile::tempdir().expect("spy dir");
    let helm = wrapper(spy.path(), "helm", &t.env.tool("helm"));
    let kustomize = wrapper(spy.path(), "kustomize", &t.env.tool("kustomize"));
    // SAFETY: this test binary runs this one test; no other thread reads the environment
    // while it is changed here.
    unsafe {
        std::env::set_var("FERRY_HELM", &helm);
        std::env::set_var("FERRY_KUSTOMIZE", &kustomize);
        for (key, value) in SECRETS {
            std::env::set_var(key, value);
        }
    }

    // A chart with a post-render kustomization (helm, then kustomize) and a kustomize app.
    t.write(
        "chart/Chart.yaml",
        "apiVersion: v2\nname: web\nversion: 0.1.0\n",
    );
    t.write(
        "chart/templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {a: b}\n",
    );
    t.write(
        "chart/ferry.yaml",
        "helm:\n  postRender: {kustomization: post}\n",
    );
    t.write(
        "chart/post/kustomization.yaml",
        "commonLabels: {post: rendered}\n",
    );
    t.write("kapp/kustomization.yaml", "resources: [cm.yaml]\n");
    t.write(
        "kapp/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: k}\n",
    );
    for app in ["chart", "kapp"] {
        let mut req = t.request(app);
        // Found through $FERRY_HELM / $FERRY_KUSTOMIZE, not the request.
        req.overrides.helm_binary = None;
        req.overrides.kustomize_binary = None;
        let manifests = render::render(&req).unwrap_or_else(|e| panic!("render {app}: {e}"));
        assert!(!manifests.is_empty());
    }

    let our_home = std::env::var("HOME").unwrap_or_default();
    for tool in ["helm", "kustomize"] {
        let dump = std::fs::read_to_string(spy.path().join(format!("{tool}.env")))
            .unwrap_or_else(|e| panic!("{tool} never ran through the wrapper: {e}"));
        let runs = dump.matches("----").count();
        assert!(runs >= 1, "{tool}: {dump}");
        for (key, value) in SECRETS {
            assert!(
                !dump.lines().any(|l| l.starts_with(&format!("{key}="))),
                "{tool} saw {key}:\n{dump}"
            );
            assert!(!dump.contains(value), "{tool} saw the value of {key}");
        }
        // What it does get: PATH, and a private HOME that is not ferry's.
        assert!(dump.lines().any(|l| l.starts_with("PATH=")), "{dump}");
        for home in dump.lines().filter_map(|l| l.strip_prefix("HOME=")) {
            assert_ne!(home, our_home, "{tool} got ferry's own HOME");
            assert!(home.contains("ferry-"), "{tool}: HOME={home}");
        }
        // Every variable is on the allow-list (or set by ferry for helm, or by sh itself).
        for key in dump
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        {
            let allowed = ["PATH", "HOME", "PWD", "SHLVL", "_", "OLDPWD"].contains(&key)
                || key.starts_with("HELM_")
                || render::process::PASSED_ENV.contains(&key);
            assert!(allowed, "{tool} got {key}, which is not on the allow-list");
        }
    }
    assert!(
        std::fs::read_to_string(spy.path().join("helm.env"))
            .unwrap_or_default()
            .contains("HELM_CACHE_HOME="),
        "ferry's own helm settings still reach helm"
    );
}
