//! Attacks on the agent's git sources (issue 11, items 5, 9, 12 and 15), each performed against
//! the real testenv (API server, smart-HTTP git server) through an in-process agent:
//! local-file URLs, a tenant reusing another tenant's cached pinned commit without
//! credentials, hostile tree entries served by the git server, redirects that try to carry
//! credentials to another host (a hostile HTTP server, ferry_testsupport::http's), and oversized
//! repositories.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use ferry_api::GitSource;
use ferry_api::common::{READY, find_condition};
use ferry_testsupport::TestNamespace;
use ferry_testsupport::http::{hostile_server, redirect, saw_credentials, unauthorized};

/// `(status, reason, message)` of the Ready condition.
fn ready(gs: &GitSource) -> Option<(String, String, String)> {
    let status = gs.status.clone().unwrap_or_default();
    find_condition(&status.conditions, READY)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Wait until the source's Ready condition is False; returns its message.
async fn wait_failed(client: &kube::Client, ns: &str, name: &str) -> (String, GitSource) {
    let gs = wait_source(client, ns, name, "Ready=False", |gs| {
        ready(gs).is_some_and(|(s, _, _)| s == "False")
    })
    .await;
    let (_, reason, message) = ready(&gs).unwrap_or_default();
    (format!("{reason}: {message}"), gs)
}

/// Every regular file under `dir` (symlinks are not followed).
fn regular_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if meta.is_dir() {
            out.extend(regular_files(&entry.path()));
        } else if meta.is_file() {
            out.push(entry.path());
        }
    }
    out
}

/// Every regular file under `dir` whose content contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    regular_files(dir)
        .into_iter()
        .filter(|p| std::fs::read(p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_git_urls_are_refused_by_default() {
    let (env, client, ns) = setup("atk-local").await;
    let repo = Repo::create(&env, &ns.name);
    repo.commit(&[("a.yaml", Some(&configmap_yaml("a", "1")))], "1");
    let (agent, cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    let bare = format!("{}/{}.git", env.var("FERRY_GIT_ROOT"), ns.name);
    // Another "tenant's" clone in the agent's cache, and the agent's own disk.
    for (name, url) in [
        ("file-url", repo.file_url(&env)),
        ("file-root", "file:///".to_string()),
        ("bare-path", bare.clone()),
        ("cache", format!("file://{}", cache.path().display())),
    ] {
        create::<GitSource>(&client, &ns.name, git_source(name, &url, None, "1m")).await;
        let (message, gs) = wait_failed(&client, &ns.name, name).await;
        assert!(
            message.starts_with("InvalidSpec") && message.contains("--allow-local-git-sources"),
            "{name}: {message}"
        );
        assert_eq!(
            gs.status.and_then(|s| s.revision),
            None,
            "{name}: nothing fetched"
        );
    }
    assert!(
        files_containing(cache.path(), b"ConfigMap").is_empty(),
        "no checkout was written"
    );
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cached_pinned_commit_is_not_served_without_credentials() {
    let (env, client, a) = setup("atk-tenant-a").await;
    let b = TestNamespace::create(&client, "atk-tenant-b").await;
    // Tenant A's private repository (the git server requires credentials for every fetch).
    let repo = Repo::create(&env, &a.name);
    let secret_value = "tenant-a-private-value";
    let commit = repo.commit(
        &[("cm.yaml", Some(&configmap_yaml("private", secret_value)))],
        "private",
    );
    // One agent, one cache directory for both tenants.
    let (agent, cache) = start_agent(&env, &[&a.name, &b.name], |_| {}).await;
    git_secret(&env, &client, &a.name, "git-auth").await;
    let pinned = |name: &str, secret: Option<&str>| {
        let mut gs = git_source(name, &repo.url, secret, "1m");
        gs["spec"]["ref"] = serde_json::json!({"commit": commit});
        gs
    };
    create::<GitSource>(&client, &a.name, pinned("private", Some("git-auth"))).await;
    wait_source(&client, &a.name, "private", "A fetched its commit", |gs| {
        gs.status
            .as_ref()
            .and_then(|s| s.revision.as_deref())
            .is_some_and(|r| r.ends_with(&commit))
    })
    .await;
    assert!(
        !files_containing(cache.path(), secret_value.as_bytes()).is_empty(),
        "A's checkout is cached"
    );
    // A itself is served its cached commit again after re-authenticating (the ls-remote-like
    // check runs over HTTP with A's credentials).
    request_sync(&client, &a.name, "private", "again").await;
    wait_source(
        &client,
        &a.name,
        "private",
        "A re-served after re-auth",
        |gs| {
            let status = gs.status.clone().unwrap_or_default();
            status.last_handled_reconcile_at.as_deref() == Some("again")
                && ready(gs).is_some_and(|(s, _, _)| s == "True")
        },
    )
    .await;
    // With its credentials revoked, A's cached commit is no longer served to A either.
    secret(
        &client,
        &a.name,
        "git-auth",
        &[("username", "ferry"), ("password", "revoked")],
    )
    .await;
    request_sync(&client, &a.name, "private", "revoked").await;
    let revoked = wait_source(
        &client,
        &a.name,
        "private",
        "A refused after revocation",
        |gs| {
            let status = gs.status.clone().unwrap_or_default();
            status.last_handled_reconcile_at.as_deref() == Some("revoked")
                && ready(gs).is_some_and(|(s, _, _)| s == "False")
        },
    )
    .await;
    let (_, _, message) = ready(&revoked).unwrap_or_default();
    assert!(message.contains("authentication failed"), "{message}");
    git_secret(&env, &client, &a.name, "git-auth").await;

    // Tenant B names the same URL and A's commit, with no credentials, then with wrong ones.
    create::<GitSource>(&client, &b.name, pinned("steal", None)).await;
    secret(
        &client,
        &b.name,
        "wrong",
        &[("username", "ferry"), ("password", "not-the-password")],
    )
    .await;
    create::<GitSource>(&client, &b.name, pinned("steal-wrong", Some("wrong"))).await;
    for name in ["steal", "steal-wrong"] {
        let (message, gs) = wait_failed(&client, &b.name, name).await;
        assert!(
            message.contains("authentication failed"),
            "{name}: {message}"
        );
        assert_eq!(gs.status.and_then(|s| s.revision), None, "{name}");
        assert!(!message.contains(secret_value));
    }
    // B's sources have their own cache entries and none holds A's file.
    let holding: Vec<PathBuf> = files_containing(cache.path(), secret_value.as_bytes());
    let a_dirs: std::collections::BTreeSet<PathBuf> = holding
        .iter()
        .filter_map(|p| {
            p.strip_prefix(cache.path())
                .ok()?
                .components()
                .next()
                .map(|c| PathBuf::from(c.as_os_str()))
        })
        .collect();
    assert_eq!(
        a_dirs.len(),
        1,
        "A's files are in A's cache entry only: {holding:?}"
    );
    drop(agent);
}

/// Write an object into the bare repository with `git hash-object --literally` (no checks: this
/// is the hostile server's side).
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

/// A raw tree with exactly these `(mode, name, object)` entries, in this order.
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

/// Point `refs/heads/<branch>` at a new commit of `tree`.
fn branch_with_tree(bare: &Path, branch: &str, tree: &str) {
    let out = Command::new("git")
        .args(["commit-tree", tree, "-m", "hostile"])
        .current_dir(bare)
        .env("GIT_AUTHOR_NAME", "mallory")
        .env("GIT_AUTHOR_EMAIL", "m@ferry.invalid")
        .env("GIT_COMMITTER_NAME", "mallory")
        .env("GIT_COMMITTER_EMAIL", "m@ferry.invalid")
        .output()
        .expect("git commit-tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = Command::new("git")
        .args(["update-ref", &format!("refs/heads/{branch}"), &commit])
        .current_dir(bare)
        .output()
        .expect("git update-ref");
    assert!(out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_tree_entries_write_nothing_outside_the_checkout() {
    let (env, client, ns) = setup("atk-tree").await;
    let repo = Repo::create(&env, &ns.name);
    repo.commit(&[("ok.yaml", Some(&configmap_yaml("ok", "1")))], "seed");
    let bare = PathBuf::from(env.var("FERRY_GIT_ROOT")).join(format!("{}.git", ns.name));
    // The place a symlink in the tree points at: must stay empty.
    let victim = tempfile::tempdir().expect("victim dir");
    let payload = b"pwned-by-a-hostile-tree\n";
    let blob = hash_object(&bare, "blob", payload);
    let ok = hash_object(&bare, "blob", configmap_yaml("ok", "1").as_bytes());
    let target = hash_object(&bare, "blob", victim.path().as_os_str().as_encoded_bytes());
    let inner = raw_tree(&bare, &[("100644", b"escaped-file", &blob)]);
    let hooks = raw_tree(&bare, &[("100755", b"post-checkout", &blob)]);
    let dot_git = raw_tree(&bare, &[("40000", b"hooks", &hooks)]);
    // (branch, tree, the entry the error must name)
    let cases = [
        (
            "dotdot",
            raw_tree(
                &bare,
                &[("100644", b"ok.yaml", &ok), ("40000", b"..", &inner)],
            ),
            "\"..\"",
        ),
        (
            "dotgit",
            raw_tree(&bare, &[("40000", b".git", &dot_git)]),
            "\".git\"",
        ),
        (
            "dotgit-upper",
            raw_tree(&bare, &[("40000", b".GIT", &dot_git)]),
            "\".GIT\"",
        ),
        (
            "symlink-then-dir",
            raw_tree(
                &bare,
                &[("120000", b"link", &target), ("40000", b"link", &inner)],
            ),
            "\"link\"",
        ),
        (
            "slash-in-name",
            raw_tree(&bare, &[("100644", b"a/../../escaped-file", &blob)]),
            "escaped-file",
        ),
    ];
    for (branch, tree, _) in &cases {
        branch_with_tree(&bare, branch, tree);
    }
    let (agent, cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    for (branch, _, _) in &cases {
        let mut gs = git_source(branch, &repo.url, Some("git-auth"), "1m");
        gs["spec"]["ref"] = serde_json::json!({"branch": branch});
        create::<GitSource>(&client, &ns.name, gs).await;
    }
    for (branch, _, entry) in &cases {
        let (message, gs) = wait_failed(&client, &ns.name, branch).await;
        assert!(
            message.contains(entry)
                && (message.contains("refused") || message.contains("appears twice")),
            "{branch}: {message}"
        );
        assert_eq!(gs.status.and_then(|s| s.revision), None, "{branch}");
    }
    assert_eq!(
        std::fs::read_dir(victim.path()).expect("victim").count(),
        0,
        "nothing written through the symlink"
    );
    assert!(
        files_containing(cache.path(), payload).is_empty(),
        "no hostile file left anywhere in the cache: {:?}",
        files_containing(cache.path(), payload)
    );
    let tmp_parent = cache.path().parent().expect("parent");
    assert!(!tmp_parent.join("escaped-file").exists());
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redirects_never_carry_credentials_to_another_host() {
    let (env, client, ns) = setup("atk-redirect").await;

    // The places credentials must never reach: another host (127.0.0.2) and another port of
    // the same host. Both ask for credentials to tempt the client.
    let (other_host, other_host_seen) = hostile_server([127, 0, 0, 2], |_, _| unauthorized()).await;
    let (other_port, other_port_seen) = hostile_server([127, 0, 0, 1], |_, _| unauthorized()).await;
    // 1. Asks for credentials, then redirects the authenticated request to another host.
    let (after_auth, after_auth_seen) = hostile_server([127, 0, 0, 1], move |path, auth| {
        if auth {
            redirect(&format!("http://127.0.0.2:{other_host}{path}"))
        } else {
            unauthorized()
        }
    })
    .await;
    // 2. Redirects at once to another port of the same host (libgit2 follows same-host
    //    redirects; the credentials callback must still refuse the other origin).
    let (to_port, _) = hostile_server([127, 0, 0, 1], move |path, _| {
        redirect(&format!("http://127.0.0.1:{other_port}{path}"))
    })
    .await;
    // 2b. Asks for credentials, then redirects the authenticated request to another port of the
    //     same host (libgit2 keeps the credentials it was given for the connection).
    let (after_auth_port, _) = hostile_server([127, 0, 0, 1], move |path, auth| {
        if auth {
            redirect(&format!("http://127.0.0.1:{other_port}{path}"))
        } else {
            unauthorized()
        }
    })
    .await;
    // 3. A bearer token (sent as a header on every request) redirected to another host.
    let (bearer, bearer_seen) = hostile_server([127, 0, 0, 1], move |path, _| {
        redirect(&format!("http://127.0.0.2:{other_host}{path}"))
    })
    .await;

    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    let password = "redirect-test-password";
    let token = "redirect-test-token";
    secret(
        &client,
        &ns.name,
        "basic",
        &[("username", "alice"), ("password", password)],
    )
    .await;
    secret(&client, &ns.name, "token", &[("bearerToken", token)]).await;
    for (name, port, secret) in [
        ("after-auth", after_auth, "basic"),
        ("to-port", to_port, "basic"),
        ("after-auth-port", after_auth_port, "basic"),
        ("bearer", bearer, "token"),
    ] {
        let url = format!("http://127.0.0.1:{port}/repo.git");
        create::<GitSource>(
            &client,
            &ns.name,
            git_source(name, &url, Some(secret), "1m"),
        )
        .await;
    }
    for name in ["after-auth", "to-port", "after-auth-port", "bearer"] {
        let (message, _) = wait_failed(&client, &ns.name, name).await;
        assert!(!message.contains(password) && !message.contains(token));
        println!("{name}: {message}");
    }
    // The configured host did get the credentials (so the attack was really attempted)...
    assert!(
        saw_credentials(&after_auth_seen),
        "the configured host was asked and answered"
    );
    assert!(saw_credentials(&bearer_seen));
    // ...and no other host or port ever saw an Authorization header.
    for (what, seen) in [
        ("127.0.0.2", &other_host_seen),
        ("127.0.0.1, other port", &other_port_seen),
    ] {
        let seen = seen.lock().expect("lock").clone();
        assert!(
            seen.iter().all(|(_, auth)| auth.is_none()),
            "{what} received credentials: {seen:?}"
        );
    }
    // The same-host redirect was followed (the attack reached the other port) and got nothing.
    assert!(
        !other_port_seen.lock().expect("lock").is_empty(),
        "the same-host redirect was followed and refused credentials"
    );
    drop(agent);
}

/// `len` bytes that do not compress (xorshift), so the pack is as large as the file.
fn incompressible(len: usize, mut seed: u64) -> String {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.push_str(&format!("{seed:016x}"));
    }
    out
}

fn dir_size(dir: &Path) -> u64 {
    regular_files(dir)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_repositories_fail_clearly_without_filling_the_disk() {
    let (env, client, ns) = setup("atk-size").await;
    // 8 MiB that do not compress (the fetch limit trips), and 8 MiB of zeros (a tiny pack
    // whose checkout trips the checkout limit).
    let big = Repo::create(&env, &format!("{}-big", ns.name));
    big.commit(
        &[("blob.txt", Some(&incompressible(8 << 20, 0x9e37_79b9)))],
        "big",
    );
    let bomb = Repo::create(&env, &format!("{}-bomb", ns.name));
    bomb.commit(&[("zeros.txt", Some(&"0".repeat(8 << 20)))], "compressible");
    let (agent, cache) = start_agent(&env, &[&ns.name], |o| {
        o.git_max_fetch_bytes = 1 << 20;
        o.git_max_checkout_bytes = 1 << 20;
    })
    .await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("big", &big.url, Some("git-auth"), "1m"),
    )
    .await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("bomb", &bomb.url, Some("git-auth"), "1m"),
    )
    .await;
    let (message, _) = wait_failed(&client, &ns.name, "big").await;
    assert!(
        message.contains("limit of 1048576 bytes") && message.contains("--git-max-fetch-bytes"),
        "{message}"
    );
    let (message, _) = wait_failed(&client, &ns.name, "bomb").await;
    assert!(
        message.contains("limit of 1048576 bytes") && message.contains("--git-max-checkout-bytes"),
        "{message}"
    );
    // Neither the big pack nor the big checkout stayed on disk.
    let used = dir_size(cache.path());
    assert!(
        used < 3 << 20,
        "the cache holds {used} bytes after two refused fetches"
    );
    drop(agent);
}
