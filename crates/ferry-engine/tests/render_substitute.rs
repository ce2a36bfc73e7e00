//! `${VAR}` substitution after rendering, Flux-style: on plain and kustomize output, from
//! ferry.yaml `substitute`, vars files and `--var` (in that precedence), with defaults, the
//! `$${VAR}` escape, opt-out annotations and strict mode.

mod render_support;

use render_support::{Tree, find, json};

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web-${CLUSTER}
  labels: {tier: "${TIER:=frontend}"}
spec:
  replicas: ${REPLICAS}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: ghcr.io/acme/web:${TAG}
          args: ["echo $${HOME} and $HOME"]
          env:
            - {name: PORT, value: "${PORT}"}
"#;

#[test]
fn plain_output_with_ferry_yaml_vars_file_and_flags() {
    let t = Tree::new();
    t.write("app/deploy.yaml", DEPLOYMENT);
    t.write(
        "app/ferry.yaml",
        "substitute: {CLUSTER: staging, REPLICAS: \"2\", TAG: \"1.0\", PORT: '\"8080\"'}\nsubstituteFrom: [vars.env]\n",
    );
    // Inline `substitute` wins over `substituteFrom` files (as in Flux); --var wins over both.
    t.write("app/vars.env", "CLUSTER=from-file\nTAG=2.0\n");
    let mut req = t.request("app");
    req.vars.insert("REPLICAS".into(), "4".into());
    let manifests = ferry_engine::render::render(&req).expect("render");
    let d = json(find(&manifests, "Deployment", "web-staging"));
    assert_eq!(
        d["spec"]["replicas"], 4,
        "--var wins and a whole reference is typed"
    );
    assert_eq!(d["metadata"]["labels"]["tier"], "frontend", "default");
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "ghcr.io/acme/web:1.0");
    assert_eq!(
        container["args"][0], "echo ${HOME} and $HOME",
        "escape and bare $"
    );
    assert_eq!(
        container["env"][0]["value"], "8080",
        "quoted value stays a string"
    );
}

#[test]
fn vars_files_from_flags_override_ferry_yaml() {
    let t = Tree::new();
    t.write("app/deploy.yaml", DEPLOYMENT);
    t.write(
        "app/ferry.yaml",
        "substitute: {CLUSTER: a, REPLICAS: \"1\", TAG: x, PORT: '\"1\"'}\n",
    );
    let vars = t.write("ci-vars.yaml", "CLUSTER: b\nTAG: 3.1.4\n");
    let mut req = t.request("app");
    req.overrides.vars_files.push(vars);
    let manifests = ferry_engine::render::render(&req).expect("render");
    let d = json(find(&manifests, "Deployment", "web-b"));
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/acme/web:3.1.4"
    );
}

#[test]
fn kustomize_output_is_substituted_and_opt_outs_are_respected() {
    let t = Tree::new();
    t.write(
        "app/kustomization.yaml",
        "resources: [cms.yaml]\nnamePrefix: ${PREFIX}-\n",
    );
    t.write(
        "app/cms.yaml",
        r#"apiVersion: v1
kind: ConfigMap
metadata: {name: subst}
data: {cluster: "${CLUSTER}"}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: ferry-off
  annotations: {ferry.dev/substitute: disabled}
data: {script: "echo ${CLUSTER}"}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: flux-off
  labels: {kustomize.toolkit.fluxcd.io/substitute: disabled}
data: {script: "echo ${CLUSTER}"}
"#,
    );
    let mut req = t.request("app");
    req.vars.insert("CLUSTER".into(), "prod-eu".into());
    req.vars.insert("PREFIX".into(), "p".into());
    let manifests = ferry_engine::render::render(&req).expect("render");
    assert_eq!(
        json(find(&manifests, "ConfigMap", "p-subst"))["data"]["cluster"],
        "prod-eu"
    );
    assert_eq!(
        json(find(&manifests, "ConfigMap", "${PREFIX}-ferry-off"))["data"]["script"],
        "echo ${CLUSTER}"
    );
    assert_eq!(
        json(find(&manifests, "ConfigMap", "${PREFIX}-flux-off"))["data"]["script"],
        "echo ${CLUSTER}"
    );
}

#[test]
fn strict_mode_names_the_object_and_variable() {
    let t = Tree::new();
    t.write("app/deploy.yaml", DEPLOYMENT);
    t.write(
        "app/ferry.yaml",
        "strictSubstitute: true\nsubstitute: {CLUSTER: x, TAG: y, PORT: '1'}\n",
    );
    let err = t.render_err("app");
    assert!(err.contains("REPLICAS"), "{err}");
    assert!(err.contains("Deployment"), "{err}");
    assert!(err.contains("app/deploy.yaml"), "{err}");

    // Non-strict: undefined becomes empty, like Flux.
    let t = Tree::new();
    t.write(
        "app/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {v: \"a${UNSET}b\"}\n",
    );
    let mut req = t.request("app");
    req.vars.insert("OTHER".into(), "1".into());
    let manifests = ferry_engine::render::render(&req).expect("render");
    assert_eq!(json(find(&manifests, "ConfigMap", "c"))["data"]["v"], "ab");
}

#[test]
fn nothing_is_substituted_unless_configured() {
    let t = Tree::new();
    t.write(
        "app/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {script: \"echo ${HOME}\"}\n",
    );
    let manifests = t.render("app");
    assert_eq!(
        json(find(&manifests, "ConfigMap", "c"))["data"]["script"],
        "echo ${HOME}"
    );
}
