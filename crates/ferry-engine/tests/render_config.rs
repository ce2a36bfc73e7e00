//! `ferry.yaml`: typos are errors naming the file, renderer detection without it, `path:`
//! sub-directories, the default namespace, and the committed JSON schema staying current.

mod render_support;

use ferry_engine::render::config::AppConfig;
use render_support::{Tree, find, json};

#[test]
fn typos_are_errors_naming_the_file_and_field() {
    let t = Tree::new();
    t.write(
        "app/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
    );
    t.write("app/ferry.yaml", "renderer: plain\nsubstitue: {A: b}\n");
    let err = t.render_err("app");
    assert!(err.contains("app/ferry.yaml"), "{err}");
    assert!(err.contains("substitue"), "{err}");
    assert!(err.contains("docs/render.md"), "{err}");

    t.write("app/ferry.yaml", "renderer: jsonnet\n");
    let err = t.render_err("app");
    assert!(err.contains("jsonnet"), "{err}");
}

#[test]
fn renderer_is_detected_without_ferry_yaml() {
    let t = Tree::new();
    t.write(
        "k/kustomization.yaml",
        "resources: [cm.yaml]\nnameSuffix: -k\n",
    );
    t.write(
        "k/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
    );
    t.write("h/Chart.yaml", "apiVersion: v2\nname: h\nversion: 0.1.0\n");
    t.write(
        "h/templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: '{{ .Release.Name }}-h'}\n",
    );
    t.write(
        "p/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: '{{ not-helm }}'}\n",
    );
    find(&t.render("k"), "ConfigMap", "c-k");
    find(&t.render("h"), "ConfigMap", "h-h");
    find(&t.render("p"), "ConfigMap", "{{ not-helm }}");
}

#[test]
fn ferry_yaml_selects_path_renderer_and_namespace() {
    let t = Tree::new();
    t.write(
        "app/ferry.yaml",
        "apiVersion: ferry.dev/v1alpha1\nrenderer: kustomize\npath: deploy/prod\nnamespace: shop\n",
    );
    t.write(
        "app/deploy/prod/kustomization.yaml",
        "resources: [cm.yaml, ns.yaml]\n",
    );
    t.write(
        "app/deploy/prod/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
    );
    t.write(
        "app/deploy/prod/ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
    );
    let manifests = t.render("app");
    assert_eq!(
        json(find(&manifests, "ConfigMap", "c"))["metadata"]["namespace"],
        "shop"
    );
    assert!(find(&manifests, "Namespace", "shop").namespace().is_none());

    // `path:` may not leave the root.
    t.write("app/ferry.yaml", "path: ../../../../../../../../tmp\n");
    let err = t.render_err("app");
    assert!(err.contains("refused") && err.contains("path"), "{err}");
}

#[test]
fn helm_flags_on_a_non_helm_app_are_an_error() {
    let t = Tree::new();
    t.write(
        "app/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
    );
    let mut req = t.request("app");
    req.overrides.set.push("a=b".into());
    let err = ferry_engine::render::render(&req).unwrap_err().to_string();
    assert!(err.contains("helm flags"), "{err}");
}

/// docs/ferry.schema.json is what editors use: it must match the code. Regenerate with
/// `FERRY_UPDATE_SCHEMA=1 cargo test -p ferry-engine --test render_config`.
#[test]
fn committed_schema_is_current() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/ferry.schema.json");
    let generated = AppConfig::schema_json() + "\n";
    if std::env::var_os("FERRY_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).expect("write schema");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/ferry.schema.json is out of date: run FERRY_UPDATE_SCHEMA=1 cargo test -p ferry-engine --test render_config"
    );
    let schema: serde_json::Value = serde_json::from_str(&committed).expect("schema is JSON");
    assert_eq!(
        schema["additionalProperties"], false,
        "unknown fields rejected by editors too"
    );
}

#[test]
fn plain_sops_file_is_decrypted_whatever_its_field_order() {
    let t = Tree::new();
    let age = render_support::Age::new(&t.env);
    t.write(
        "app/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
    );
    // kind before apiVersion, type after data: a MAC over re-serialised objects would fail.
    let secret = t.write(
        "app/secret.yaml",
        "kind: Secret\napiVersion: v1\nmetadata: {name: api}\nstringData: {token: plain-sops-token}\ntype: Opaque\n",
    );
    age.encrypt(&t.env, &secret, Some("^(data|stringData)$"));
    let mut req = t.request("app");
    req.age_keys = Some(age.keys());
    let manifests = ferry_engine::render::render(&req).expect("render");
    let secret = json(find(&manifests, "Secret", "api"));
    assert_eq!(secret["stringData"]["token"], "plain-sops-token");
    assert!(secret.get("sops").is_none());
    find(&manifests, "ConfigMap", "c");
}
