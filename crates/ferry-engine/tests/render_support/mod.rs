//! Shared helpers for the render integration tests: a source tree in a tempdir, requests
//! wired to the testenv's real `helm`/`kustomize`, and real age keys + `sops` encryption.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_engine::Manifest;
use ferry_engine::decrypt::sops::AgeKeys;
use ferry_engine::render::{self, RenderRequest};
use ferry_testsupport::TestEnv;

pub struct Tree {
    pub env: TestEnv,
    pub dir: tempfile::TempDir,
}

impl Tree {
    pub fn new() -> Self {
        Self {
            env: TestEnv::get(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Write a file (creating directories); returns its path.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, text).expect("write");
        path
    }

    /// A request for `rel` with the testenv's helm and kustomize.
    pub fn request(&self, rel: &str) -> RenderRequest {
        let mut req = RenderRequest::new(self.root(), self.path(rel));
        req.overrides.helm_binary = Some(self.env.tool("helm"));
        req.overrides.kustomize_binary = Some(self.env.tool("kustomize"));
        req.age_keys = Some(AgeKeys::empty());
        req
    }

    pub fn render(&self, rel: &str) -> Vec<Manifest> {
        render::render(&self.request(rel)).unwrap_or_else(|err| panic!("render {rel}: {err}"))
    }

    pub fn render_err(&self, rel: &str) -> String {
        match render::render(&self.request(rel)) {
            Ok(m) => panic!("render {rel} should fail, got {} objects", m.len()),
            Err(err) => err.to_string(),
        }
    }

    /// Run a testenv tool in the tree; panics with its stderr on failure.
    pub fn tool(&self, name: &str, args: &[&str]) -> Vec<u8> {
        let mut cmd = Command::new(self.env.tool(name));
        cmd.args(args).current_dir(self.root());
        run(&mut cmd)
    }
}

pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A real age key made by `age-keygen`, and `sops` encrypting with it.
pub struct Age {
    pub key_file: PathBuf,
    pub recipient: String,
    _dir: tempfile::TempDir,
}

impl Age {
    pub fn new(env: &TestEnv) -> Self {
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
        Self {
            key_file,
            recipient,
            _dir: dir,
        }
    }

    pub fn keys(&self) -> AgeKeys {
        AgeKeys::from_file(&self.key_file).expect("age key")
    }

    /// `sops --encrypt --in-place`, optionally only keys matching `regex`.
    pub fn encrypt(&self, env: &TestEnv, file: &Path, regex: Option<&str>) {
        let mut cmd = Command::new(env.tool("sops"));
        cmd.arg("--encrypt")
            .arg("--age")
            .arg(&self.recipient)
            .env_remove("SOPS_AGE_KEY")
            .env_remove("SOPS_AGE_KEY_FILE");
        if let Some(regex) = regex {
            cmd.arg("--encrypted-regex").arg(regex);
        }
        cmd.arg("--in-place").arg(file);
        if let Some(dir) = file.parent() {
            cmd.current_dir(dir);
        }
        run(&mut cmd);
    }
}

/// The one manifest of `kind` named `name` (panics listing what there is).
pub fn find<'a>(manifests: &'a [Manifest], kind: &str, name: &str) -> &'a Manifest {
    manifests
        .iter()
        .find(|m| m.kind() == kind && m.name() == name)
        .unwrap_or_else(|| {
            let have: Vec<String> = manifests.iter().map(|m| m.key().to_string()).collect();
            panic!("no {kind} {name} in {have:?}")
        })
}

/// The manifest as JSON, for pointer lookups.
pub fn json(manifest: &Manifest) -> serde_json::Value {
    serde_json::to_value(&manifest.object).expect("json")
}
