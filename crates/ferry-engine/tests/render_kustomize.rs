//! Kustomize rendering with the real `kustomize` binary: overlays, components, patches,
//! generators with hash suffixes, images; SOPS-encrypted objects decrypted after the build;
//! remote bases and root escapes refused.

mod render_support;

use render_support::{Age, Tree, find, json};

fn overlay_tree() -> Tree {
    let t = Tree::new();
    t.write(
        "base/kustomization.yaml",
        "resources: [deployment.yaml, service.yaml]\n",
    );
    t.write(
        "base/deployment.yaml",
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: ghcr.io/acme/web:1.0.0
          volumeMounts: [{name: config, mountPath: /etc/web}]
      volumes:
        - name: config
          configMap: {name: web-config}
"#,
    );
    t.write(
        "base/service.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n",
    );
    t.write(
        "components/monitoring/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources: [servicemonitor.yaml]\ncommonAnnotations: {monitoring: enabled}\n",
    );
    t.write(
        "components/monitoring/servicemonitor.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web-monitoring}\ndata: {scrape: \"true\"}\n",
    );
    t.write(
        "overlays/prod/kustomization.yaml",
        r#"namespace: prod
resources: [../../base]
components: [../../components/monitoring]
patches:
  - path: replicas.yaml
configMapGenerator:
  - name: web-config
    literals: [LEVEL=prod]
images:
  - name: ghcr.io/acme/web
    newTag: 2.1.0
"#,
    );
    t.write(
        "overlays/prod/replicas.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 3}\n",
    );
    t
}

#[test]
fn overlay_with_components_patches_generators_and_images() {
    let t = overlay_tree();
    let manifests = t.render("overlays/prod");

    let deployment = json(find(&manifests, "Deployment", "web"));
    assert_eq!(deployment["metadata"]["namespace"], "prod");
    assert_eq!(deployment["spec"]["replicas"], 3, "patch applied");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"], "ghcr.io/acme/web:2.1.0",
        "images transformer applied"
    );
    assert_eq!(
        deployment["metadata"]["annotations"]["monitoring"],
        "enabled"
    );

    // The generated ConfigMap has a content hash suffix, and the Deployment refers to it.
    let config_map = manifests
        .iter()
        .find(|m| m.kind() == "ConfigMap" && m.name().starts_with("web-config-"))
        .expect("generated configmap");
    let suffix = config_map.name().trim_start_matches("web-config-");
    assert_eq!(suffix.len(), 10, "hash suffix {suffix}");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"],
        config_map.name()
    );
    assert_eq!(json(config_map)["data"]["LEVEL"], "prod");
    // The component's own resource is there.
    find(&manifests, "ConfigMap", "web-monitoring");
    find(&manifests, "Service", "web");
    // Origins say which build produced them.
    assert!(
        deployment_origin(&manifests).contains("overlays/prod"),
        "{}",
        deployment_origin(&manifests)
    );
}

fn deployment_origin(manifests: &[ferry_engine::Manifest]) -> String {
    find(manifests, "Deployment", "web").origin.to_string()
}

#[test]
fn detects_kustomization_variants() {
    let t = Tree::new();
    t.write(
        "app/Kustomization",
        "resources: [cm.yaml]\nnamePrefix: pre-\n",
    );
    t.write(
        "app/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
    );
    let manifests = t.render("app");
    find(&manifests, "ConfigMap", "pre-c");
}

#[test]
fn sops_encrypted_secret_is_decrypted_after_the_build() {
    let t = Tree::new();
    let age = Age::new(&t.env);
    // Transformers that touch the encrypted object (kustomize also re-sorts its fields, which
    // a MAC over the build output would not survive).
    t.write(
        "app/kustomization.yaml",
        "namespace: prod\nnamePrefix: x-\nresources: [secret.enc.yaml, cm.yaml]\n",
    );
    t.write(
        "app/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain}\ndata: {a: b}\n",
    );
    let secret = t.write(
        "app/secret.enc.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\ntype: Opaque\nstringData:\n  password: correct-horse-battery\n",
    );
    age.encrypt(&t.env, &secret, Some("^(data|stringData)$"));
    let on_disk = std::fs::read_to_string(&secret).expect("read");
    assert!(!on_disk.contains("correct-horse-battery"), "sops encrypted");

    let mut req = t.request("app");
    req.age_keys = Some(age.keys());
    let manifests = ferry_engine::render::render(&req).expect("render");
    let secret = json(find(&manifests, "Secret", "x-db"));
    assert_eq!(secret["stringData"]["password"], "correct-horse-battery");
    assert_eq!(secret["metadata"]["namespace"], "prod");
    assert!(secret.get("sops").is_none(), "sops block removed");
    find(&manifests, "ConfigMap", "x-plain");

    // Without the key: a clear error naming the encrypted file, no plaintext anywhere.
    let mut req = t.request("app");
    req.age_keys = Some(ferry_engine::decrypt::sops::AgeKeys::empty());
    let err = ferry_engine::render::render(&req).unwrap_err().to_string();
    assert!(err.contains("app/secret.enc.yaml"), "{err}");
    assert!(!err.contains("correct-horse-battery"), "{err}");
}

#[test]
fn remote_bases_are_refused_by_default() {
    let t = Tree::new();
    t.write(
        "app/kustomization.yaml",
        "resources:\n  - github.com/acme/deploy//base?ref=v1.0.0\n",
    );
    let err = t.render_err("app");
    assert!(err.contains("remote bases are disabled"), "{err}");
    assert!(err.contains("app/kustomization.yaml"), "{err}");
    assert!(err.contains("allowRemoteBases"), "{err}");
}

#[test]
fn bases_outside_the_source_root_are_refused() {
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        outside.path().join("kustomization.yaml"),
        "resources: [cm.yaml]\n",
    )
    .expect("write");
    std::fs::write(
        outside.path().join("cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: stolen}\n",
    )
    .expect("write");
    let t = Tree::new();
    // A relative path climbing out of the root.
    let depth = t.root().components().count();
    let climb = "../".repeat(depth + 2);
    let target = format!(
        "{climb}{}",
        outside.path().display().to_string().trim_start_matches('/')
    );
    t.write(
        "app/kustomization.yaml",
        &format!("resources: [\"{target}\"]\n"),
    );
    let err = t.render_err("app");
    assert!(err.contains("refused"), "{err}");
    assert!(err.contains("source root"), "{err}");

    // A symlinked base pointing outside.
    let t = Tree::new();
    std::fs::create_dir_all(t.path("app")).expect("mkdir");
    std::os::unix::fs::symlink(outside.path(), t.path("app/base")).expect("symlink");
    t.write("app/kustomization.yaml", "resources: [base]\n");
    let err = t.render_err("app");
    assert!(err.contains("app/base"), "{err}");
    assert!(err.contains("symlink"), "{err}");
}

#[test]
fn symlinked_file_escaping_the_root_is_refused_before_kustomize_runs() {
    let t = Tree::new();
    t.write(
        "app/kustomization.yaml",
        "configMapGenerator:\n  - name: c\n    files: [passwd]\n",
    );
    std::os::unix::fs::symlink("/etc/passwd", t.path("app/passwd")).expect("symlink");
    let err = t.render_err("app");
    assert!(err.contains("app/passwd"), "{err}");
    assert!(err.contains("/etc/passwd"), "{err}");
}

#[test]
fn kustomize_errors_show_its_stderr() {
    let t = Tree::new();
    t.write("app/kustomization.yaml", "resources: [cm.yaml]\n");
    t.write("app/cm.yaml", "apiVersion: v1\nmetadata: {name: no-kind}\n");
    let err = t.render_err("app");
    assert!(err.contains("kustomize build failed"), "{err}");
    assert!(err.contains("kind"), "{err}");
}

#[test]
fn missing_binary_is_a_clear_error() {
    let t = overlay_tree();
    let mut req = t.request("overlays/prod");
    req.overrides.kustomize_binary = Some(t.path("no-such-kustomize"));
    let err = ferry_engine::render::render(&req).unwrap_err().to_string();
    assert!(err.contains("kustomize"), "{err}");
    assert!(err.contains("no-such-kustomize"), "{err}");
}
