//! SOPS compatibility against the real `sops` and `age-keygen` binaries from the testenv:
//! files encrypted by `sops` decrypt natively, files encrypted by ferry open with `sops -d`, and
//! wrong keys, missing keys and tampering are refused with messages that name the file and
//! never contain plaintext.

use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_engine::decrypt::sops::{self, AgeKeys, EncryptOptions, Format, Selectors};
use ferry_testsupport::TestEnv;
use serde_json::Value;

/// A tempdir with a real age key made by `age-keygen`.
struct Keyed {
    env: TestEnv,
    dir: tempfile::TempDir,
    key_file: PathBuf,
    recipient: String,
}

impl Keyed {
    fn new() -> Self {
        let env = TestEnv::get();
        let dir = tempfile::tempdir().expect("tempdir");
        let key_file = dir.path().join("keys.txt");
        run(Command::new(env.tool("age-keygen"))
            .arg("-o")
            .arg(&key_file));
        let recipient = String::from_utf8(run(Command::new(env.tool("age-keygen"))
            .arg("-y")
            .arg(&key_file)))
        .expect("utf8")
        .trim()
        .to_string();
        assert!(recipient.starts_with("age1"), "{recipient}");
        Self {
            env,
            dir,
            key_file,
            recipient,
        }
    }

    fn keys(&self) -> AgeKeys {
        AgeKeys::from_file(&self.key_file).expect("key file")
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    fn sops(&self) -> Command {
        let mut cmd = Command::new(self.env.tool("sops"));
        cmd.env("SOPS_AGE_KEY_FILE", &self.key_file)
            .env_remove("SOPS_AGE_KEY")
            .current_dir(self.dir.path());
        cmd
    }

    /// `sops --encrypt --age <recipient> [extra] file` → encrypted bytes.
    fn sops_encrypt(&self, path: &Path, extra: &[&str]) -> Vec<u8> {
        run(self
            .sops()
            .arg("--encrypt")
            .arg("--age")
            .arg(&self.recipient)
            .args(extra)
            .arg(path))
    }

    fn sops_decrypt(&self, path: &Path) -> Vec<u8> {
        run(self.sops().arg("--decrypt").arg(path))
    }
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn yaml_docs(bytes: &[u8]) -> Vec<Value> {
    serde_saphyr::from_slice_multiple::<Value>(bytes).expect("yaml")
}

/// Order-sensitive comparison (serde_json's map equality ignores order).
fn assert_same(actual: &Value, expected: &Value) {
    assert_eq!(
        serde_json::to_string(actual).expect("json"),
        serde_json::to_string(expected).expect("json")
    );
}

const RICH_YAML: &str = r#"zeta: first key stays first
database:
  user: admin
  password: s3cr3t-pa55
  port: 5432
  ratio: 0.75
  big: 1234567.5
  enabled: true
  disabled: false
  nothing: null
  empty: ""
list:
  - one
  - 2
  - 3.5
  - true
  - nested: map
    deeper:
      - x
certificate: |
  -----BEGIN CERTIFICATE-----
  line two
  line three
folded: >
  folded text
  continues
unicode: "héllo wörld ✓"
quoted_number: "0123"
public_unencrypted: visible
"#;

#[test]
fn sops_encrypted_yaml_decrypts_natively() {
    let k = Keyed::new();
    let plain = k.write("rich.yaml", RICH_YAML);
    let encrypted = k.sops_encrypt(&plain, &[]);
    let enc_text = String::from_utf8(encrypted.clone()).expect("utf8");
    assert!(!enc_text.contains("s3cr3t-pa55"));
    assert!(enc_text.contains("public_unencrypted: visible"));
    let enc_path = k.write("rich.enc.yaml", &enc_text);
    assert!(sops::is_encrypted(&encrypted));
    assert!(!sops::is_encrypted(RICH_YAML.as_bytes()));

    let out = sops::decrypt(&encrypted, Format::Yaml, &enc_path, &k.keys()).expect("decrypt");
    let ours = yaml_docs(&out);
    let expected = yaml_docs(RICH_YAML.as_bytes());
    assert_same(&ours[0], &expected[0]);
    // And the same as the reference implementation's output.
    let theirs = yaml_docs(&k.sops_decrypt(&enc_path));
    assert_same(&ours[0], &theirs[0]);
    assert_eq!(ours[0]["database"]["port"], Value::from(5432));
    assert_eq!(ours[0]["database"]["enabled"], Value::Bool(true));
    assert_eq!(ours[0]["quoted_number"], Value::from("0123"));
}

#[test]
fn encrypted_regex_secret_manifest_and_document_api() {
    let k = Keyed::new();
    let manifest = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: prod\n  labels:\n    app: db\ntype: Opaque\nstringData:\n  password: hunter2-xyz\n  url: postgres://u:hunter2-xyz@db/app\ndata:\n  token: c2VjcmV0\n";
    let plain = k.write("secret.yaml", manifest);
    let encrypted = k.sops_encrypt(&plain, &["--encrypted-regex", "^(data|stringData)$"]);
    let text = String::from_utf8(encrypted.clone()).expect("utf8");
    assert!(text.contains("name: db"), "metadata stays clear:\n{text}");
    assert!(!text.contains("hunter2-xyz"));

    let mut docs = yaml_docs(&encrypted);
    assert!(sops::is_encrypted_value(&docs[0]));
    let was = sops::decrypt_document(&mut docs[0], Path::new("secret.yaml"), &k.keys())
        .expect("decrypt_document");
    assert!(was);
    assert_same(&docs[0], &yaml_docs(manifest.as_bytes())[0]);
    assert!(docs[0].get("sops").is_none());

    // A manifest without a sops block is left alone.
    let mut clear = yaml_docs(manifest.as_bytes());
    assert!(!sops::decrypt_document(&mut clear[0], Path::new("x.yaml"), &k.keys()).unwrap());
}

#[test]
fn selectors_suffixes_and_mac_only_encrypted() {
    let k = Keyed::new();
    let text = "app:\n  name: web\n  password_secret: pw-123456\n  replicas: 3\nkey_secret: abcdef\nplain: 42\n";
    let path = k.write("sel.yaml", text);
    let cases: &[&[&str]] = &[
        &["--encrypted-suffix", "_secret"],
        &["--unencrypted-regex", "^(name|plain)$"],
        &["--unencrypted-suffix", "_secret"],
        &["--encrypted-regex", "^password", "--mac-only-encrypted"],
    ];
    for extra in cases {
        let encrypted = k.sops_encrypt(&path, extra);
        let out = sops::decrypt(&encrypted, Format::Yaml, Path::new("sel.yaml"), &k.keys())
            .unwrap_or_else(|e| panic!("{extra:?}: {e}"));
        assert_same(&yaml_docs(&out)[0], &yaml_docs(text.as_bytes())[0]);
    }
}

#[test]
fn sops_encrypted_json_and_multi_document_yaml() {
    let k = Keyed::new();
    let json = r#"{"b": "second-but-first", "a": {"n": 5, "f": 2.5, "t": true, "s": "json-secret"}, "l": [1, "x", null]}"#;
    let path = k.write("data.json", json);
    let encrypted = k.sops_encrypt(&path, &[]);
    let out = sops::decrypt(&encrypted, Format::Json, &path, &k.keys()).expect("json");
    let ours: Value = serde_json::from_slice(&out).expect("json out");
    assert_same(&ours, &serde_json::from_str(json).expect("json in"));

    let multi = "kind: A\nsecret: one-111\n---\nkind: B\nsecret: two-222\nlist: [1, 2]\n";
    let path = k.write("multi.yaml", multi);
    let encrypted = k.sops_encrypt(&path, &[]);
    let out = sops::decrypt(&encrypted, Format::Yaml, &path, &k.keys()).expect("multi");
    let ours = yaml_docs(&out);
    let expected = yaml_docs(multi.as_bytes());
    assert_eq!(ours.len(), 2);
    assert_same(&ours[0], &expected[0]);
    assert_same(&ours[1], &expected[1]);

    // Two separately encrypted files concatenated (each document its own sops block).
    let other = k.write("other.yaml", "kind: C\nsecret: three-333\n");
    let mut joined = k.sops_encrypt(&k.write("one.yaml", "kind: D\nsecret: four-444\n"), &[]);
    joined.extend_from_slice(b"---\n");
    joined.extend_from_slice(&k.sops_encrypt(&other, &[]));
    let out =
        sops::decrypt(&joined, Format::Yaml, Path::new("joined.yaml"), &k.keys()).expect("joined");
    let docs = yaml_docs(&out);
    assert_eq!(docs[0]["secret"], Value::from("four-444"));
    assert_eq!(docs[1]["secret"], Value::from("three-333"));
}

#[test]
fn ferry_encrypted_files_open_with_real_sops() {
    let k = Keyed::new();
    for (name, format, text, selectors) in [
        ("f.yaml", Format::Yaml, RICH_YAML, Selectors::default()),
        (
            "s.yaml",
            Format::Yaml,
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  k: v-secret-1\n",
            Selectors {
                encrypted_regex: Some("^(data|stringData)$".into()),
                ..Default::default()
            },
        ),
        (
            "m.yaml",
            Format::Yaml,
            "a: 1\nb_secret: x-secret-2\n",
            Selectors {
                encrypted_suffix: Some("_secret".into()),
                mac_only_encrypted: true,
                ..Default::default()
            },
        ),
        (
            "j.json",
            Format::Json,
            r#"{"z": 1, "a": {"pw": "j-secret-3", "n": 2.5, "b": false}}"#,
            Selectors::default(),
        ),
    ] {
        let options = EncryptOptions::new(vec![k.recipient.clone()], selectors).expect("options");
        let encrypted =
            sops::encrypt(text.as_bytes(), format, Path::new(name), &options).expect("encrypt");
        let enc_text = String::from_utf8(encrypted.clone()).expect("utf8");
        for secret in ["s3cr3t-pa55", "v-secret-1", "x-secret-2", "j-secret-3"] {
            assert!(!enc_text.contains(secret), "{name} leaks {secret}");
        }
        let path = k.write(name, &enc_text);
        let theirs = k.sops_decrypt(&path);
        let (theirs, expected) = match format {
            Format::Yaml => (
                yaml_docs(&theirs).remove(0),
                yaml_docs(text.as_bytes()).remove(0),
            ),
            Format::Json => (
                serde_json::from_slice::<Value>(&theirs).expect("json"),
                serde_json::from_str::<Value>(text).expect("json"),
            ),
        };
        assert_same(&theirs, &expected);
        // Our own decryption agrees.
        let ours = sops::decrypt(&encrypted, format, &path, &k.keys()).expect("self decrypt");
        assert!(!ours.is_empty());
    }
}

fn assert_refused(
    result: ferry_engine::Result<impl Sized>,
    file: &str,
    secret: &str,
    expect: &str,
) {
    let Err(err) = result else {
        panic!("{file}: expected an error containing {expect:?}");
    };
    let message = err.to_string();
    assert!(
        message.contains(file),
        "message must name the file: {message}"
    );
    assert!(
        !message.contains(secret),
        "message leaks plaintext: {message}"
    );
    assert!(
        message.contains(expect),
        "expected {expect:?} in: {message}"
    );
}

#[test]
fn wrong_key_missing_key_and_tampering_are_refused() {
    let k = Keyed::new();
    let secret = "top-secret-value-9";
    let path = k.write(
        "app-secrets.yaml",
        &format!("a: {secret}\nb: other-value\n"),
    );
    let encrypted = String::from_utf8(k.sops_encrypt(&path, &[])).expect("utf8");
    let file = Path::new("app-secrets.yaml");

    // Wrong key: a different real age key.
    let other = Keyed::new();
    assert_refused(
        sops::decrypt(encrypted.as_bytes(), Format::Yaml, file, &other.keys()),
        "app-secrets.yaml",
        secret,
        &k.recipient,
    );
    // Missing key.
    assert_refused(
        sops::decrypt(encrypted.as_bytes(), Format::Yaml, file, &AgeKeys::empty()),
        "app-secrets.yaml",
        secret,
        "no age key available",
    );

    // Tampered value: swap the two encrypted values (each is bound to its key path).
    let docs = yaml_docs(encrypted.as_bytes());
    let (a, b) = (
        docs[0]["a"].as_str().expect("a").to_string(),
        docs[0]["b"].as_str().expect("b").to_string(),
    );
    let swapped = encrypted
        .replace(&a, "@A@")
        .replace(&b, &a)
        .replace("@A@", &b);
    assert_refused(
        sops::decrypt(swapped.as_bytes(), Format::Yaml, file, &k.keys()),
        "app-secrets.yaml",
        secret,
        "failed authentication",
    );

    // Tampered value: replace an encrypted value by a different one encrypted for the same
    // path with another file's data key → authentication fails.
    let tampered = encrypted.replace(&a, &a.replacen("data:", "data:AA", 1));
    assert_refused(
        sops::decrypt(tampered.as_bytes(), Format::Yaml, file, &k.keys()),
        "app-secrets.yaml",
        secret,
        "a ",
    );

    // A value moved in clear past the MAC: replacing an encrypted value by plaintext.
    let cleared = encrypted.replace(&b, "other-value");
    assert_refused(
        sops::decrypt(cleared.as_bytes(), Format::Yaml, file, &k.keys()),
        "app-secrets.yaml",
        secret,
        "is not a SOPS encrypted value",
    );

    // Tampered MAC and tampered lastmodified.
    let mac = docs[0]["sops"]["mac"].as_str().expect("mac").to_string();
    let bad_mac = encrypted.replace(&mac, &mac.replacen("data:", "data:AB", 1));
    assert_refused(
        sops::decrypt(bad_mac.as_bytes(), Format::Yaml, file, &k.keys()),
        "app-secrets.yaml",
        secret,
        "tampered",
    );
    let lm = docs[0]["sops"]["lastmodified"]
        .as_str()
        .expect("lm")
        .to_string();
    let bad_lm = encrypted.replace(&lm, "2001-01-01T00:00:00Z");
    assert_refused(
        sops::decrypt(bad_lm.as_bytes(), Format::Yaml, file, &k.keys()),
        "app-secrets.yaml",
        secret,
        "tampered",
    );

    // Removing a key entirely changes the MAC.
    let removed: String = encrypted
        .lines()
        .filter(|l| !l.starts_with("b: "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_refused(
        sops::decrypt(removed.as_bytes(), Format::Yaml, file, &k.keys()),
        "app-secrets.yaml",
        secret,
        "MAC mismatch",
    );
}

#[test]
fn age_keys_from_text_and_debug_do_not_leak() {
    let k = Keyed::new();
    let text = std::fs::read_to_string(&k.key_file).expect("key");
    let keys = AgeKeys::from_text(&text).expect("from_text");
    assert_eq!(keys.recipients(), vec![k.recipient.clone()]);
    let shown = format!("{keys:?}");
    assert!(!shown.contains("AGE-SECRET-KEY"), "{shown}");
    let err = AgeKeys::from_text("AGE-SECRET-KEY-1NOTAKEY").expect_err("invalid");
    assert!(!err.to_string().contains("NOTAKEY"), "{err}");
}
