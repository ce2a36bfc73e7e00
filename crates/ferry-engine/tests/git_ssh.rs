//! Git sources over SSH against a real OpenSSH server (ferry_testsupport::sshd: sshd started by
//! the test, the real git-upload-pack behind it): the key authenticates, the host key is checked
//! against known_hosts, and a wrong host key, a missing known_hosts or an unauthorised key fail
//! with messages that say so and contain no secret.

use std::time::Duration;

use ferry_engine::source::git::{
    self, FetchFailure, FetchRequest, GitAuth, GitError, GitReference,
};
use ferry_testsupport::sshd::SshGitServer;

fn request(url: &str, auth: GitAuth) -> FetchRequest {
    let mut request = FetchRequest::new("ns/ssh", url, GitReference::Branch("main".into()));
    request.auth = auth;
    request.timeout = Duration::from_secs(60);
    request
}

#[test]
fn fetches_over_ssh_with_a_key_and_a_checked_host_key() {
    let server = SshGitServer::start().expect("sshd");
    server
        .create_repo("app.git", &[("deploy/app.yaml", "kind: ConfigMap\n")])
        .expect("repo");
    let url = server.url("app.git");
    let cache = tempfile::tempdir().expect("tempdir");
    let good = GitAuth {
        ssh_identity: Some(server.identity.clone()),
        known_hosts: Some(server.known_hosts.clone()),
        ..GitAuth::default()
    };
    let checkout = git::fetch(cache.path(), &request(&url, good.clone()))
        .unwrap_or_else(|e| panic!("fetch over ssh: {e}\nsshd log:\n{}", server.log()));
    assert_eq!(
        std::fs::read_to_string(checkout.path.join("deploy/app.yaml")).expect("file"),
        "kind: ConfigMap\n"
    );
    assert!(
        checkout.revision.starts_with("main@sha1:"),
        "{}",
        checkout.revision
    );

    // Another host key for this host: refused before any credential is used.
    let wrong_host = GitAuth {
        known_hosts: Some(server.wrong_known_hosts.clone()),
        ..good.clone()
    };
    let err = git::fetch(cache.path(), &request(&url, wrong_host)).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("host verification failed") && message.contains("known_hosts"),
        "{message}"
    );
    assert!(!message.contains("PRIVATE KEY"), "{message}");

    // No known_hosts at all: refused before connecting.
    let no_known_hosts = GitAuth {
        known_hosts: None,
        ..good.clone()
    };
    let err = git::fetch(cache.path(), &request(&url, no_known_hosts)).unwrap_err();
    assert!(
        matches!(
            &err,
            GitError::Fetch {
                source: FetchFailure::Credentials(_),
                ..
            }
        ),
        "{err}"
    );

    // A key the server does not know: an authentication failure naming the secretRef.
    let other_key = GitAuth {
        ssh_identity: Some(server.other_identity.clone()),
        ..good
    };
    let err = git::fetch(cache.path(), &request(&url, other_key)).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(
            &err,
            GitError::Fetch {
                source: FetchFailure::Auth(_),
                ..
            }
        ),
        "{message}"
    );
    assert!(message.contains("secretRef"), "{message}");
    assert!(!message.contains("PRIVATE KEY"), "{message}");
}
