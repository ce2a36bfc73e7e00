//! Sealed Secrets compatibility against the real `kubeseal` from the testenv: values sealed by
//! kubeseal (offline, `--cert`) unseal with ferry's logic under every scope, SealedSecrets made
//! by ferry open with `kubeseal --recovery-unseal`, and a strict seal moved to another name or
//! namespace is refused.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ferry_engine::decrypt::sealed::{
    self, KeyBits, KeyRing, Scope, SealedSecret, SealingKey, UnsealError,
};
use ferry_testsupport::TestEnv;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

struct Setup {
    env: TestEnv,
    dir: tempfile::TempDir,
    key: SealingKey,
    cert: PathBuf,
    private_pem: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let env = TestEnv::get();
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SealingKey::generate(KeyBits::Rsa2048).expect("key");
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, key.certificate_pem()).expect("cert");
        let private_pem = dir.path().join("key.pem");
        std::fs::write(&private_pem, key.private_key_pem().expect("pem").as_bytes()).expect("key");
        Self {
            env,
            dir,
            key,
            cert,
            private_pem,
        }
    }

    fn ring(&self) -> KeyRing {
        KeyRing::new(vec![self.key.clone()])
    }

    fn kubeseal(&self) -> Command {
        let mut cmd = Command::new(self.env.tool("kubeseal"));
        // Offline: no cluster is consulted when --cert is given and the Secret has a namespace.
        cmd.env("KUBECONFIG", self.dir.path().join("no-kubeconfig"))
            .current_dir(self.dir.path());
        cmd
    }
}

fn pipe(mut cmd: Command, input: &[u8]) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn secret_yaml(namespace: &str, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n    app: web\n  annotations:\n    note: kept\ntype: kubernetes.io/basic-auth\ndata:\n  username: YWRtaW4=\nstringData:\n  password: pl41n-s3cret\n  multi: |\n    line one\n    line two\n"
    )
}

fn expected_data() -> BTreeMap<String, ByteString> {
    BTreeMap::from([
        ("username".to_string(), ByteString(b"admin".to_vec())),
        ("password".to_string(), ByteString(b"pl41n-s3cret".to_vec())),
        (
            "multi".to_string(),
            ByteString(b"line one\nline two\n".to_vec()),
        ),
    ])
}

fn kubeseal_seal(setup: &Setup, secret: &str, scope: &str) -> SealedSecret {
    let mut cmd = setup.kubeseal();
    cmd.arg("--cert")
        .arg(&setup.cert)
        .arg("--format")
        .arg("yaml")
        .arg("--scope")
        .arg(scope);
    let out = pipe(cmd, secret.as_bytes());
    let text = String::from_utf8(out).expect("utf8");
    assert!(!text.contains("pl41n-s3cret"));
    serde_saphyr::from_str(&text).expect("SealedSecret")
}

fn moved(sealed: &SealedSecret, namespace: &str, name: &str) -> SealedSecret {
    let mut out = sealed.clone();
    out.metadata.namespace = Some(namespace.into());
    out.metadata.name = Some(name.into());
    out
}

#[test]
fn kubeseal_sealed_secrets_unseal_with_ferry() {
    let setup = Setup::new();
    let ring = setup.ring();

    // Strict (default): unseals in place, refused under another name or namespace.
    let mut strict = kubeseal_seal(&setup, &secret_yaml("prod", "db"), "strict");
    strict.metadata.uid = Some("uid-123".into());
    let secret = sealed::unseal(&strict, &ring).expect("unseal strict");
    assert_eq!(secret.data.as_ref(), Some(&expected_data()));
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    assert_eq!(secret.metadata.name.as_deref(), Some("db"));
    assert_eq!(secret.metadata.namespace.as_deref(), Some("prod"));
    assert_eq!(
        secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app"))
            .map(String::as_str),
        Some("web")
    );
    let owner = &secret.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("SealedSecret", "db", "uid-123")
    );
    for (ns, name) in [("prod", "other"), ("staging", "db")] {
        let err = sealed::unseal(&moved(&strict, ns, name), &ring).expect_err("moved strict");
        let message = err.to_string();
        assert!(matches!(err, UnsealError::Crypto { .. }), "{message}");
        assert!(message.contains("no key can unseal"), "{message}");
        assert!(!message.contains("pl41n-s3cret"), "{message}");
    }

    // Namespace-wide: any name in the namespace, not another namespace.
    let ns_wide = kubeseal_seal(&setup, &secret_yaml("prod", "db"), "namespace-wide");
    let renamed = sealed::unseal(&moved(&ns_wide, "prod", "renamed"), &ring).expect("ns-wide");
    assert_eq!(renamed.data.as_ref(), Some(&expected_data()));
    assert!(sealed::unseal(&moved(&ns_wide, "staging", "db"), &ring).is_err());

    // Cluster-wide: anywhere.
    let cluster = kubeseal_seal(&setup, &secret_yaml("prod", "db"), "cluster-wide");
    let anywhere = sealed::unseal(&moved(&cluster, "elsewhere", "x"), &ring).expect("cluster");
    assert_eq!(anywhere.data.as_ref(), Some(&expected_data()));

    // Another key cannot open any of them.
    let other = KeyRing::new(vec![SealingKey::generate(KeyBits::Rsa2048).expect("key")]);
    assert!(sealed::unseal(&strict, &other).is_err());
}

fn recovery_unseal(setup: &Setup, sealed: &SealedSecret) -> Secret {
    let yaml = serde_saphyr::to_string(sealed).expect("yaml");
    let mut cmd = setup.kubeseal();
    cmd.arg("--recovery-unseal")
        .arg("--recovery-private-key")
        .arg(&setup.private_pem)
        .arg("--format")
        .arg("json");
    let out = pipe(cmd, yaml.as_bytes());
    serde_json::from_slice(&out).expect("Secret from kubeseal")
}

#[test]
fn ferry_sealed_secrets_open_with_kubeseal_recovery() {
    let setup = Setup::new();
    let public = sealed::public_key_from_certificate_pem(setup.key.certificate_pem().as_bytes())
        .expect("cert");
    let secret: Secret = serde_saphyr::from_str(&secret_yaml("prod", "db")).expect("secret");
    for scope in [Scope::Strict, Scope::NamespaceWide, Scope::ClusterWide] {
        let sealed = sealed::seal_secret(&secret, &public, scope, None).expect("seal");
        let text = serde_saphyr::to_string(&sealed).expect("yaml");
        assert!(!text.contains("pl41n-s3cret"));
        assert!(text.contains("bitnami.com/v1alpha1"));
        let opened = recovery_unseal(&setup, &sealed);
        assert_eq!(
            opened.data.as_ref(),
            Some(&expected_data()),
            "scope {scope}"
        );
        // And ferry's own unsealer agrees.
        let ours = sealed::unseal(&sealed, &setup.ring()).expect("ferry unseal");
        assert_eq!(ours.data, opened.data);
    }
    // A key loaded back from its PEM files is the same key.
    let reloaded = SealingKey::from_pem(
        &std::fs::read(&setup.private_pem).expect("key"),
        &std::fs::read(&setup.cert).expect("cert"),
    )
    .expect("reload");
    let sealed = sealed::seal_secret(&secret, &public, Scope::Strict, None).expect("seal");
    assert!(sealed::unseal(&sealed, &KeyRing::new(vec![reloaded])).is_ok());
    assert!(!format!("{:?}", setup.key).contains("PRIVATE"));
}

#[test]
fn seal_refuses_secret_without_namespace_under_strict_scope() {
    let setup = Setup::new();
    let public = sealed::public_key_from_certificate_pem(setup.key.certificate_pem().as_bytes())
        .expect("cert");
    let secret: Secret = serde_saphyr::from_str(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\nstringData:\n  a: b\n",
    )
    .expect("secret");
    let err = sealed::seal_secret(&secret, &public, Scope::Strict, None).expect_err("no ns");
    assert!(err.to_string().contains("--namespace"), "{err}");
    let ok = sealed::seal_secret(&secret, &public, Scope::Strict, Some("team")).expect("ns");
    assert_eq!(ok.metadata.namespace.as_deref(), Some("team"));
    // A certificate file that is not a certificate is a clear error.
    let bad = setup.dir.path().join("bad.pem");
    std::fs::write(&bad, "not a cert").expect("write");
    let err = sealed::public_key_from_certificate_pem(&std::fs::read(&bad).expect("read"))
        .expect_err("bad cert");
    assert!(err.to_string().contains("PEM certificate"), "{err}");
    assert!(Path::new(&setup.cert).exists());
}
