//! ImageUpdate's git write-back over SSH against a real OpenSSH server
//! (ferry_testsupport::sshd: sshd started by the test, the real git-receive-pack behind it),
//! with the same credentials a GitSource fetch uses (identity + known_hosts). Before issue 13
//! the write-back had its own credential code without SSH and could not push to an ssh URL.

use std::path::Path;

use ferry_images::git::{self, EditOutcome, GitAuth, WriteBackResult, WriteBackSpec};
use ferry_testsupport::sshd::{self, SshGitServer};

fn spec(url: &str, auth: GitAuth, work_dir: &Path) -> WriteBackSpec {
    WriteBackSpec {
        url: url.to_string(),
        auth,
        checkout_branch: "main".into(),
        push_branch: "main".into(),
        author_name: "ferry".into(),
        author_email: "ferry@example.invalid".into(),
        work_dir: work_dir.to_path_buf(),
        max_attempts: 3,
        allow_local: false,
        max_fetch_bytes: 64 << 20,
        max_checkout_bytes: 64 << 20,
    }
}

fn bump(root: &Path) -> Result<EditOutcome, String> {
    let file = root.join("deploy/app.yaml");
    let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
    if !text.contains("app:1.0.0") {
        return Ok(EditOutcome { message: None });
    }
    std::fs::write(&file, text.replace("app:1.0.0", "app:1.1.0")).map_err(|e| e.to_string())?;
    Ok(EditOutcome {
        message: Some("app 1.0.0 -> 1.1.0".into()),
    })
}

#[test]
fn write_back_pushes_over_ssh_with_the_gitsource_credentials() {
    let server = SshGitServer::start().expect("sshd");
    let original = "image: reg.example/app:1.0.0 # {\"$imagepolicy\": \"apps:app\"}\n";
    let bare = server
        .create_repo("app.git", &[("deploy/app.yaml", original)])
        .expect("repo");
    let url = server.url("app.git");
    let work = tempfile::tempdir().expect("tempdir");
    let good = GitAuth {
        ssh_identity: Some(server.identity.clone()),
        known_hosts: Some(server.known_hosts.clone()),
        ..GitAuth::default()
    };

    // A server presenting another host key gets nothing pushed (and no credential used).
    let wrong_host = GitAuth {
        known_hosts: Some(server.wrong_known_hosts.clone()),
        ..good.clone()
    };
    let err = git::write_back(&spec(&url, wrong_host, &work.path().join("a")), bump).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("host verification failed") && message.contains("known_hosts"),
        "{message}"
    );
    assert!(!message.contains("PRIVATE KEY"), "{message}");
    let head = sshd::git(&bare, &["show", "main:deploy/app.yaml"]).expect("show");
    assert_eq!(head, original, "nothing was pushed");

    // An unauthorised key: the fetch fails as an authentication failure.
    let other_key = GitAuth {
        ssh_identity: Some(server.other_identity.clone()),
        ..good.clone()
    };
    let err = git::write_back(&spec(&url, other_key, &work.path().join("b")), bump).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("authentication failed"), "{message}");
    assert!(!message.contains("PRIVATE KEY"), "{message}");

    // The GitSource's identity + known_hosts: fetched, committed and pushed over SSH.
    let result = git::write_back(&spec(&url, good.clone(), &work.path().join("c")), bump)
        .unwrap_or_else(|e| panic!("write-back over ssh: {e}\nsshd log:\n{}", server.log()));
    let WriteBackResult::Pushed { commit, branch, .. } = result else {
        panic!("expected a push, got {result:?}");
    };
    assert_eq!(branch, "main");
    let pushed = sshd::git(&bare, &["rev-parse", "main"]).expect("rev-parse");
    assert_eq!(pushed.trim(), commit);
    let head = sshd::git(&bare, &["show", "main:deploy/app.yaml"]).expect("show");
    assert_eq!(head, original.replace("app:1.0.0", "app:1.1.0"));

    // Run again: up to date, nothing pushed.
    let again = git::write_back(&spec(&url, good, &work.path().join("c")), bump).expect("again");
    assert!(
        matches!(again, WriteBackResult::NoChange { .. }),
        "{again:?}"
    );
}
