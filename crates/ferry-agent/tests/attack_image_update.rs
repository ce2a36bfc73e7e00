//! Attacks on ImageUpdate through symlinks (issue 11, item 10), against the real testenv
//! (registry, smart-HTTP git server, API server): a repository whose `apps/link` points at a
//! directory outside the clone (standing in for another tenant's files) holding a file with a
//! `$imagepolicy` marker, a YAML symlink to that file, and ImageUpdates that walk the directory,
//! name the link as `spec.update.path`, or climb out with `../../..`. The victim file must stay
//! unchanged and every ImageUpdate must say what it skipped or refused. A second test has the
//! git server serve a hand-made hostile tree (a symlink to the victim followed by a directory of
//! the same name, a `..` entry) to the ImageUpdate's clone. The controllers run as users run
//! them: an in-process agent with `--image-automation`.

mod common;
// The registry and git fixtures the image tests share with ferry-images' own tests.
#[path = "../../ferry-images/tests/common/mod.rs"]
mod images_common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_api::GitSource;
use ferry_api::common::READY;
use ferry_api::images::{ImagePolicy, ImageRepository, ImageUpdate};
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use images_common::*;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

async fn install_crds(client: &Client) {
    common::install_crds(client).await;
}

async fn create<K>(client: &Client, ns: &str, value: serde_json::Value)
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let obj: K = serde_json::from_value(value).expect("object JSON");
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
}

/// Wait until the ImageUpdate's status satisfies `check`; returns the status as JSON.
async fn wait_update(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let api: Api<ImageUpdate> = Api::namespaced(client.clone(), ns);
    let check = &check;
    wait_for(what, Duration::from_secs(90), || {
        let api = api.clone();
        async move {
            let value = serde_json::to_value(api.get(name).await?)?;
            if check(&value["status"]) {
                Ok(Some(value["status"].clone()))
            } else {
                anyhow::bail!("status: {}", value["status"])
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

fn condition<'a>(status: &'a serde_json::Value, type_: &str) -> Option<&'a serde_json::Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn image_updates_never_write_through_symlinks() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "atk-update").await;
    let registry = env.var("FERRY_REGISTRY");
    let image = format!("{registry}/{}/app", unique("atk"));
    crane_push(&env, &format!("{image}:1.1.0"), None);

    // The victim: files outside the clone (another tenant's clone, the agent's cache...).
    let victim = tempfile::tempdir().expect("victim");
    let marked = format!(
        "image: {image}:1.0.0 # {{\"$imagepolicy\": \"{}:app\"}}\n",
        ns.name
    );
    std::fs::write(victim.path().join("v.yaml"), &marked).expect("victim file");

    // The repository: a real marked file, a directory symlink and a file symlink to the victim.
    let repo = Repo::create(&env, &ns.name);
    let apps = repo.work.path().join("apps");
    std::fs::create_dir_all(&apps).expect("mkdir");
    std::os::unix::fs::symlink(victim.path(), apps.join("link")).expect("dir link");
    std::os::unix::fs::symlink(victim.path().join("v.yaml"), apps.join("file.yaml"))
        .expect("file link");
    let first = repo.commit(&[("apps/real.yaml", &marked)], "links");

    create::<Secret>(&client, &ns.name, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "git-auth"},
        "stringData": {"username": env.var("FERRY_GIT_USER"), "password": env.var("FERRY_GIT_PASSWORD")}})).await;
    create::<GitSource>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "GitSource", "metadata": {"name": "repo"}, "spec": {"url": repo.url, "secretRef": {"name": "git-auth"}}})).await;
    create::<ImageRepository>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImageRepository", "metadata": {"name": "app"}, "spec": {"image": image, "interval": "10m"}})).await;
    create::<ImagePolicy>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImagePolicy", "metadata": {"name": "app"}, "spec": {"imageRepositoryRef": {"name": "app"}, "policy": {"semver": {"range": ">=1.0.0"}}}})).await;
    for (name, path) in [
        ("walk", "./apps"),
        ("through-link", "apps/link"),
        ("file-link", "apps/file.yaml"),
        ("escape", "../../.."),
    ] {
        create::<ImageUpdate>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImageUpdate", "metadata": {"name": name}, "spec": {
            "sourceRef": {"kind": "GitSource", "name": "repo"},
            "interval": "10m",
            "git": {"commit": {"author": {"name": "ferry-bot", "email": "bot@ferry.invalid"}}, "pushBranch": format!("auto-{name}")},
            "update": {"path": path}
        }})).await;
    }
    let (agent, _cache) =
        common::start_agent(&env, &[&ns.name], |o| o.image_automation = true).await;

    // Walking the directory: the real file is updated, both links are skipped and reported.
    let status = wait_update(&client, &ns.name, "walk", "walk pushed", |s| {
        s["lastPushCommit"].is_string()
    })
    .await;
    let markers = condition(&status, "MarkersValid")
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        markers.contains("apps/link") && markers.contains("apps/file.yaml"),
        "{markers}"
    );
    assert!(markers.contains("symlink; skipped"), "{markers}");
    let branch = status["lastPushBranch"].as_str().unwrap_or_default();
    assert_eq!(branch, "auto-walk");
    let pushed = git_raw(&repo.bare, &["show", "auto-walk:apps/real.yaml"]);
    assert!(pushed.contains(&format!("{image}:1.1.0 #")), "{pushed}");
    assert_eq!(repo.head(), first, "main untouched");

    // Naming the link, or a YAML symlink, as the path is refused with the reason.
    for name in ["through-link", "file-link"] {
        let status = wait_update(&client, &ns.name, name, "refused", |s| {
            condition(s, READY).is_some_and(|c| c["status"] == "False")
        })
        .await;
        let ready = condition(&status, READY).cloned().unwrap_or_default();
        let message = ready["message"].as_str().unwrap_or_default();
        assert_eq!(ready["reason"], "UpdateFailed", "{name}: {ready}");
        assert!(message.contains("is a symlink"), "{name}: {message}");
        assert!(
            repo.head_of(&format!("auto-{name}")).is_empty(),
            "{name}: nothing pushed"
        );
    }
    // Climbing out of the repository is refused before any clone.
    let status = wait_update(&client, &ns.name, "escape", "refused", |s| {
        condition(s, READY).is_some_and(|c| c["status"] == "False")
    })
    .await;
    let ready = condition(&status, READY).cloned().unwrap_or_default();
    assert_eq!(ready["reason"], "InvalidPath", "{ready}");

    // The victim is exactly as it was.
    assert_eq!(
        std::fs::read_to_string(victim.path().join("v.yaml")).expect("victim"),
        marked
    );
    assert_eq!(
        std::fs::read_dir(victim.path()).expect("victim").count(),
        1,
        "nothing new in the victim directory"
    );
    agent.stop().await.expect("agent stops");
}

/// Write an object with `git hash-object --literally` (the hostile server's side: no checks).
fn hash_object(bare: &Path, kind: &str, data: &[u8]) -> String {
    let mut child = Command::new("git")
        .args(["hash-object", "-t", kind, "--literally", "-w", "--stdin"])
        .current_dir(bare)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("git hash-object");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("write object");
    let out = child.wait_with_output().expect("git hash-object");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn raw_tree(bare: &Path, entries: &[(&str, &[u8], &str)]) -> String {
    let mut bytes = Vec::new();
    for (mode, name, oid) in entries {
        bytes.extend_from_slice(mode.as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(name);
        bytes.push(0);
        bytes.extend_from_slice(&hex::decode(oid).expect("hex oid"));
    }
    hash_object(bare, "tree", &bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_trees_in_the_image_update_clone_write_nothing_outside() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "atk-update-tree").await;
    let registry = env.var("FERRY_REGISTRY");
    let image = format!("{registry}/{}/app", unique("atk-tree"));
    crane_push(&env, &format!("{image}:1.1.0"), None);
    let victim = tempfile::tempdir().expect("victim");
    let marked = format!(
        "image: {image}:1.0.0 # {{\"$imagepolicy\": \"{}:app\"}}\n",
        ns.name
    );
    let repo = Repo::create(&env, &ns.name);
    repo.commit(&[("seed.yaml", "a: 1\n")], "seed");
    // The hostile commit on main: `link` -> victim, then a directory `link/` holding a marked
    // file, and a `..` directory holding another.
    let bare = &repo.bare;
    let blob = hash_object(bare, "blob", marked.as_bytes());
    let target = hash_object(bare, "blob", victim.path().as_os_str().as_encoded_bytes());
    let inner = raw_tree(bare, &[("100644", b"v.yaml", &blob)]);
    let tree = raw_tree(
        bare,
        &[
            ("40000", b"..", &inner),
            ("120000", b"link", &target),
            ("40000", b"link", &inner),
            ("100644", b"real.yaml", &blob),
        ],
    );
    let parent = repo.head();
    let commit = git(
        bare,
        &["commit-tree", &tree, "-p", &parent, "-m", "hostile"],
    );
    git(bare, &["update-ref", "refs/heads/main", &commit]);
    // Branch `collide`: only the symlink and the same-named directory (libgit2 stops at `..`
    // above before it reaches them).
    let tree = raw_tree(
        bare,
        &[
            ("120000", b"link", &target),
            ("40000", b"link", &inner),
            ("100644", b"real.yaml", &blob),
        ],
    );
    let commit = git(
        bare,
        &["commit-tree", &tree, "-p", &parent, "-m", "collide"],
    );
    git(bare, &["update-ref", "refs/heads/collide", &commit]);

    create::<Secret>(&client, &ns.name, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "git-auth"},
        "stringData": {"username": env.var("FERRY_GIT_USER"), "password": env.var("FERRY_GIT_PASSWORD")}})).await;
    create::<GitSource>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "GitSource", "metadata": {"name": "repo"}, "spec": {"url": repo.url, "secretRef": {"name": "git-auth"}}})).await;
    create::<ImageRepository>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImageRepository", "metadata": {"name": "app"}, "spec": {"image": image, "interval": "10m"}})).await;
    create::<ImagePolicy>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImagePolicy", "metadata": {"name": "app"}, "spec": {"imageRepositoryRef": {"name": "app"}, "policy": {"semver": {"range": ">=1.0.0"}}}})).await;
    create::<ImageUpdate>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImageUpdate", "metadata": {"name": "auto"}, "spec": {
        "sourceRef": {"kind": "GitSource", "name": "repo"},
        "interval": "10m",
        "git": {"commit": {"author": {"name": "ferry-bot", "email": "bot@ferry.invalid"}}, "pushBranch": "auto"},
        "update": {"path": "./"}
    }})).await;
    create::<ImageUpdate>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImageUpdate", "metadata": {"name": "collide"}, "spec": {
        "sourceRef": {"kind": "GitSource", "name": "repo"},
        "interval": "10m",
        "git": {"checkoutBranch": "collide", "commit": {"author": {"name": "ferry-bot", "email": "bot@ferry.invalid"}}, "pushBranch": "collide-auto"},
        "update": {"path": "./"}
    }})).await;
    let (agent, cache) =
        common::start_agent(&env, &[&ns.name], |o| o.image_automation = true).await;

    // The run finishes one way or the other (libgit2 refuses the tree, or checks it out
    // without following the link); either way nothing lands outside the clone.
    for name in ["auto", "collide"] {
        let status = wait_update(&client, &ns.name, name, "a finished run", |s| {
            s["lastAutomationRunTime"].is_string()
        })
        .await;
        println!("{name}: status after the hostile tree: {status}");
    }
    assert_eq!(
        std::fs::read_dir(victim.path()).expect("victim").count(),
        0,
        "nothing written through the symlink"
    );
    // The clone is `<cache>/images/<ns>/auto`: a `..` entry would land one level up.
    let clones = cache.path().join("images").join(&ns.name);
    let escaped: Vec<_> = walkdir::WalkDir::new(cache.path())
        .into_iter()
        .flatten()
        .filter(|e| {
            e.file_name() == "v.yaml"
                && !e.path().starts_with(clones.join("auto"))
                && !e.path().starts_with(clones.join("collide"))
        })
        .map(|e| e.into_path())
        .collect();
    assert!(escaped.is_empty(), "{escaped:?}");
    agent.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_work_tree_is_not_checked_out() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "atk-update-size").await;
    let registry = env.var("FERRY_REGISTRY");
    let image = format!("{registry}/{}/app", unique("atk-size"));
    crane_push(&env, &format!("{image}:1.1.0"), None);
    // 8 MiB of one byte: a pack of a few kB that would check out to 8 MiB.
    let repo = Repo::create(&env, &ns.name);
    repo.commit(&[("bomb.txt", &"0".repeat(8 << 20))], "compressible");
    create::<Secret>(&client, &ns.name, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "git-auth"},
        "stringData": {"username": env.var("FERRY_GIT_USER"), "password": env.var("FERRY_GIT_PASSWORD")}})).await;
    create::<GitSource>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "GitSource", "metadata": {"name": "repo"}, "spec": {"url": repo.url, "secretRef": {"name": "git-auth"}}})).await;
    create::<ImageRepository>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImageRepository", "metadata": {"name": "app"}, "spec": {"image": image, "interval": "10m"}})).await;
    create::<ImagePolicy>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImagePolicy", "metadata": {"name": "app"}, "spec": {"imageRepositoryRef": {"name": "app"}, "policy": {"semver": {"range": ">=1.0.0"}}}})).await;
    create::<ImageUpdate>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImageUpdate", "metadata": {"name": "auto"}, "spec": {
        "sourceRef": {"kind": "GitSource", "name": "repo"},
        "interval": "10m",
        "git": {"commit": {"author": {"name": "ferry-bot", "email": "bot@ferry.invalid"}}},
        "update": {"path": "./"}
    }})).await;
    let (agent, cache) = common::start_agent(&env, &[&ns.name], |o| {
        o.image_automation = true;
        o.git_max_checkout_bytes = 1 << 20;
    })
    .await;
    let status = wait_update(&client, &ns.name, "auto", "refused as too large", |s| {
        condition(s, READY).is_some_and(|c| c["status"] == "False")
    })
    .await;
    let ready = condition(&status, READY).cloned().unwrap_or_default();
    assert_eq!(ready["reason"], "CheckoutTooLarge", "{ready}");
    let message = ready["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("limit of 1048576 bytes") && message.contains("--git-max-checkout-bytes"),
        "{message}"
    );
    let used: u64 = walkdir::WalkDir::new(cache.path())
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    assert!(used < 1 << 20, "the clone holds {used} bytes");
    agent.stop().await.expect("agent stops");
}
