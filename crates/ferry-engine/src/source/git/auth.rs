//! THE git credential and connection policy: credentials (HTTPS basic auth, bearer token, SSH
//! key), SSH host key checking against `known_hosts`, the rule that credentials only ever go to
//! the configured host, URL and message redaction, and libgit2's network timeouts. Used by the
//! source stage's fetches ([`super::fetch`]) and by ferry-images' write-back (fetch + push), so
//! both accept the same secrets and refuse the same things.
//!
//! Decisions (docs/agent.md, docs/images.md, SECURITY.md):
//! - Credentials are answered only when libgit2 asks on behalf of the configured scheme, host
//!   and port ([`same_origin`]); an http URL may be upgraded to https, never the reverse.
//!   Callers also turn redirects off (`RemoteRedirect::None`), so this is a second fence.
//! - SSH host keys are never trusted blindly: an ssh URL (`ssh://`, `git+ssh://`, `ssh+git://`
//!   or scp-like `user@host:path`) needs `known_hosts`, and the server's key must be listed there
//!   for that host (plain or hashed entries; `[host]:port` for a non-standard port).
//! - HTTP basic auth needs a `password`; the user name is the secret's `username`, else the
//!   URL's user, else `git` (GitHub, GitLab and Gitea accept any user name with a token). When
//!   the secret holds an SSH `identity` and no `username`, `password` is that key's passphrase
//!   and is never sent as an HTTP password.
//! - Secrets never appear in messages: URLs lose their user info, and any secret value a server
//!   or libgit2 echoes back is replaced ([`redact_text`]).

// libgit2's global network timeouts are only settable through git2's unsafe `opts` functions;
// the crate root denies unsafe code everywhere else. The block has a SAFETY comment.
#![allow(unsafe_code)]

use std::fmt;

use git2::{CertificateCheckStatus, Cred, CredentialType, RemoteCallbacks};

/// Credentials for a remote (from the GitSource's secretRef). `Debug` never prints the secret
/// values.
#[derive(Clone, Default)]
pub struct GitAuth {
    pub username: Option<String>,
    /// HTTP basic auth password (or token), or the passphrase of `ssh_identity`.
    pub password: Option<String>,
    pub bearer_token: Option<String>,
    /// SSH private key (OpenSSH or PEM).
    pub ssh_identity: Option<String>,
    /// known_hosts lines; required for ssh URLs.
    pub known_hosts: Option<String>,
}

impl GitAuth {
    /// The credentials a GitSource's `spec.secretRef` Secret holds, under Flux's key names
    /// (`username`, `password`, `bearerToken`, `identity`, `known_hosts`), from `value_of` (the
    /// Secret's data by key). A trailing newline, which `kubectl create secret --from-file`
    /// keeps, is dropped.
    pub fn from_secret_keys<'a>(value_of: impl Fn(&str) -> Option<&'a [u8]>) -> Self {
        let get = |key: &str| {
            value_of(key).map(|v| {
                String::from_utf8_lossy(v)
                    .trim_end_matches('\n')
                    .to_string()
            })
        };
        Self {
            username: get("username"),
            password: get("password"),
            bearer_token: get("bearerToken"),
            ssh_identity: get("identity"),
            known_hosts: get("known_hosts"),
        }
    }
}

impl fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "ssh_identity",
                &self.ssh_identity.as_ref().map(|_| "<redacted>"),
            )
            .field("known_hosts", &self.known_hosts.is_some())
            .finish()
    }
}

/// Why the callbacks for a remote cannot be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "ssh URLs need `known_hosts` in the GitSource's secret (host keys are never trusted blindly)"
    )]
    MissingKnownHosts,
}

/// What kind of URL this is, for the local-source policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlKind {
    /// http, https, ssh, git, scp-like `user@host:path`.
    Network,
    /// `file://` or a path on the agent's disk.
    Local(&'static str),
    Unsupported,
}

/// Classify a git URL. Anything that is not a known network transport is local or unsupported:
/// libgit2 treats a bare path (or `C:\x`, `./x`, `x`) as a local repository.
pub fn url_kind(url: &str) -> UrlKind {
    let lower = url.to_ascii_lowercase();
    if let Some((scheme, _)) = lower.split_once("://") {
        return match scheme {
            "https" | "http" | "ssh" | "git+ssh" | "ssh+git" | "git" => UrlKind::Network,
            "file" => UrlKind::Local("file://"),
            _ => UrlKind::Unsupported,
        };
    }
    // scp-like `user@host:path` (no slash before the colon, like git's rule). A leading `-`
    // would read as an option to an ssh command: never a host.
    if let Some((before, _)) = url.split_once(':')
        && before.contains('@')
        && !before.contains('/')
        && !before.starts_with('-')
    {
        return UrlKind::Network;
    }
    UrlKind::Local("local path")
}

/// Is `url` spoken over SSH (`ssh://`, `git+ssh://`, `ssh+git://` or scp-like `user@host:path`)?
pub fn is_ssh_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    match lower.split_once("://") {
        Some((scheme, _)) => matches!(scheme, "ssh" | "git+ssh" | "ssh+git"),
        None => url_kind(url) == UrlKind::Network,
    }
}

/// Remove user info (`user:password@`) from a URL so it can appear in messages; an ssh user
/// name (`ssh://git@host`) is not a secret and stays, its password does not.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if let Some((user, host)) = authority.rsplit_once('@') {
            if scheme.to_ascii_lowercase().contains("ssh") {
                let user = user.split(':').next().unwrap_or_default();
                return format!("{scheme}://{user}@{host}{path}");
            }
            return format!("{scheme}://{host}{path}");
        }
    }
    url.to_string()
}

/// A message from libgit2 or a git server without anything secret: URLs with user info are
/// redacted and any secret value of `auth` that was echoed back is replaced by `***`.
pub fn redact_text(text: &str, auth: &GitAuth) -> String {
    let mut out = text
        .split(' ')
        .map(|word| {
            if word.contains("://") && word.contains('@') {
                redact_url(word)
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    for secret in [&auth.password, &auth.bearer_token, &auth.ssh_identity]
        .into_iter()
        .flatten()
    {
        if !secret.is_empty() {
            out = out.replace(secret.as_str(), "***");
        }
    }
    out
}

/// A libgit2 error as a redacted message that says what to do.
pub fn describe_error(err: &git2::Error, auth: &GitAuth) -> String {
    let msg = redact_text(err.message(), auth);
    match err.code() {
        git2::ErrorCode::Auth => {
            format!(
                "authentication failed ({msg}); check the credentials in the GitSource's secretRef"
            )
        }
        // libgit2 replaces the certificate callback's own message with a generic one: say here
        // what to check.
        git2::ErrorCode::Certificate => format!(
            "host verification failed ({msg}); the server's host key must be listed for this host in `known_hosts` of the GitSource's secretRef"
        ),
        git2::ErrorCode::NotFound => format!("{msg}; does the ref exist on the remote?"),
        _ => msg,
    }
}

/// `(scheme, host, port)` of a URL as libgit2 sees it, for comparing the host a credential
/// request comes from with the configured one.
fn url_origin(url: &str) -> Option<(String, String, Option<u16>)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (
            host.to_string(),
            after.strip_prefix(':').map(str::to_string),
        )
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.to_string())),
            None => (hostport.to_string(), None),
        }
    };
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => Some(443),
        "http" => Some(80),
        "ssh" | "git+ssh" | "ssh+git" => Some(22),
        _ => None,
    };
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => default_port,
    };
    Some((scheme, host.to_ascii_lowercase(), port))
}

/// May credentials configured for `configured` be sent to `asking` (the URL libgit2 is talking
/// to, after any redirect)? Only to the same host and port; https credentials never go to http.
pub fn same_origin(configured: &str, asking: &str) -> bool {
    match (url_origin(configured), url_origin(asking)) {
        (Some((cs, ch, cp)), Some((s, h, p))) => {
            ch == h && cp == p && (cs == s || (cs == "http" && s == "https"))
        }
        // scp-like and local URLs have no scheme: compare them verbatim.
        _ => configured == asking,
    }
}

/// `host` or `[host]:port` of an ssh URL as it appears in known_hosts.
pub fn ssh_host(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && matches!(
            scheme.to_ascii_lowercase().as_str(),
            "ssh" | "git+ssh" | "ssh+git"
        )
    {
        let authority = rest.split('/').next().unwrap_or_default();
        let hostport = authority.rsplit('@').next().unwrap_or_default();
        return match hostport.split_once(':') {
            Some((host, port)) if port != "22" => format!("[{host}]:{port}"),
            Some((host, _)) => host.to_string(),
            None => hostport.to_string(),
        };
    }
    // scp-like user@host:path
    let after_at = url.rsplit_once('@').map(|(_, h)| h).unwrap_or(url);
    after_at.split(':').next().unwrap_or_default().to_string()
}

/// Does a known_hosts file list `key` (raw SSH wire-format blob) for `host`? Supports plain
/// host patterns (comma-separated) and hashed `|1|salt|hash` entries.
pub fn known_hosts_match(known_hosts: &str, host: &str, key: &[u8]) -> bool {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    for line in known_hosts.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(hosts), Some(_kind), Some(blob)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let host_ok = if let Some(hashed) = hosts.strip_prefix("|1|") {
            let Some((salt, hash)) = hashed.split_once('|') else {
                continue;
            };
            match (b64.decode(salt), b64.decode(hash)) {
                (Ok(salt), Ok(hash)) => {
                    let k = aws_lc_rs::hmac::Key::new(
                        aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
                        &salt,
                    );
                    aws_lc_rs::hmac::verify(&k, host.as_bytes(), &hash).is_ok()
                }
                _ => false,
            }
        } else {
            hosts.split(',').any(|h| h == host)
        };
        if host_ok && b64.decode(blob).is_ok_and(|b| b == key) {
            return true;
        }
    }
    false
}

/// The `Authorization` header for a bearer token, if the secret has one. Callers pass it as a
/// custom header; with redirects off it only reaches the configured host.
pub fn bearer_header(auth: &GitAuth) -> Option<String> {
    auth.bearer_token
        .as_ref()
        .map(|token| format!("Authorization: Bearer {token}"))
}

fn auth_error(message: String) -> git2::Error {
    git2::Error::new(git2::ErrorCode::Auth, git2::ErrorClass::Http, message)
}

/// Callbacks answering credential requests for `url` with `auth` and, for ssh URLs, checking
/// the server's host key against `auth.known_hosts`. Callers add their own transfer callbacks
/// (size and time limits, push status) to the result.
pub fn remote_callbacks<'a>(
    url: &str,
    auth: &'a GitAuth,
) -> Result<RemoteCallbacks<'a>, AuthError> {
    let mut callbacks = RemoteCallbacks::new();
    let mut attempts = 0u32;
    let configured = url.to_string();
    callbacks.credentials(move |asking, username_from_url, allowed| {
        // Credentials belong to the configured host; a redirect elsewhere gets none.
        if !same_origin(&configured, asking) {
            return Err(auth_error(format!(
                "{} asks for credentials but they belong to {}; not sent",
                redact_url(asking),
                redact_url(&configured)
            )));
        }
        // libgit2 asks again after a rejection (and ssh asks for the user name first); give up
        // after a few rounds instead of looping.
        attempts += 1;
        if attempts > 3 {
            return Err(auth_error("credentials rejected".to_string()));
        }
        let user = auth
            .username
            .as_deref()
            .or(username_from_url)
            .unwrap_or("git");
        if allowed.contains(CredentialType::SSH_KEY)
            && let Some(key) = &auth.ssh_identity
        {
            return Cred::ssh_key_from_memory(user, None, key, auth.password.as_deref());
        }
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(user);
        }
        // With an ssh identity and no user name, `password` is the key's passphrase.
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
            && (auth.ssh_identity.is_none() || auth.username.is_some())
            && let Some(password) = &auth.password
        {
            return Cred::userpass_plaintext(user, password);
        }
        Err(auth_error(
            "the server asks for credentials and the GitSource has no usable secretRef".to_string(),
        ))
    });
    if is_ssh_url(url) {
        let host = ssh_host(url);
        let known = auth
            .known_hosts
            .clone()
            .ok_or(AuthError::MissingKnownHosts)?;
        callbacks.certificate_check(move |cert, _host| {
            let Some(hostkey) = cert.as_hostkey().and_then(|h| h.hostkey()) else {
                return Err(git2::Error::from_str("ssh server sent no host key"));
            };
            if known_hosts_match(&known, &host, hostkey) {
                Ok(CertificateCheckStatus::CertificateOk)
            } else {
                Err(git2::Error::new(
                    git2::ErrorCode::Certificate,
                    git2::ErrorClass::Ssh,
                    format!("host key of {host} is not in known_hosts"),
                ))
            }
        });
    }
    Ok(callbacks)
}

/// libgit2 has no network timeouts by default: a server that accepts the connection and then
/// says nothing would hold a fetch or push thread (and the caller's locks) forever. Set connect
/// and read timeouts once per process, before the first connection.
pub fn ensure_network_timeouts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: these write two plain ints in libgit2's global options that are read when a
        // connection is opened. They are set once, before this process's first connection;
        // git2's docs ask for no concurrent libgit2 use at that moment, and an aligned int store
        // cannot be observed torn on the platforms ferry supports.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(30_000);
            let _ = git2::opts::set_server_timeout_in_milliseconds(120_000);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("https://user:secret@example.com/repo.git"),
            "https://example.com/repo.git"
        );
        assert_eq!(
            redact_url("https://user:secret@example.com"),
            "https://example.com"
        );
        assert_eq!(
            redact_url("ssh://git:pw@example.com/repo.git"),
            "ssh://git@example.com/repo.git"
        );
        assert_eq!(
            redact_url("git+ssh://git:pw@example.com/repo.git"),
            "git+ssh://git@example.com/repo.git"
        );
        assert_eq!(redact_url("file:///tmp/x"), "file:///tmp/x");
        assert_eq!(redact_url("git@host:org/x.git"), "git@host:org/x.git");
    }

    #[test]
    fn messages_lose_urls_with_user_info_and_echoed_secrets() {
        let auth = GitAuth {
            username: Some("bob".into()),
            password: Some("s3cret".into()),
            bearer_token: Some("tok3n".into()),
            ..GitAuth::default()
        };
        let text = redact_text(
            "failed to reach https://bob:s3cret@h/r.git: server said s3cret and tok3n",
            &auth,
        );
        assert_eq!(
            text,
            "failed to reach https://h/r.git: server said *** and ***"
        );
        let debug = format!("{auth:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("tok3n"),
            "{debug}"
        );
    }

    #[test]
    fn ssh_hosts_and_known_hosts() {
        use base64::Engine;
        assert_eq!(
            ssh_host("ssh://git@example.com:2222/r.git"),
            "[example.com]:2222"
        );
        assert_eq!(ssh_host("git+ssh://git@example.com/r.git"), "example.com");
        assert_eq!(ssh_host("git@example.com:org/r.git"), "example.com");
        let key = b"ssh-ed25519-blob";
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        let known = format!("other.com ssh-ed25519 AAAA\nexample.com,1.2.3.4 ssh-ed25519 {b64}\n");
        assert!(known_hosts_match(&known, "example.com", key));
        assert!(!known_hosts_match(&known, "evil.com", key));
        assert!(!known_hosts_match(&known, "example.com", b"other"));
    }

    #[test]
    fn every_ssh_spelling_needs_known_hosts() {
        let auth = GitAuth::default();
        for url in [
            "ssh://git@h/r.git",
            "SSH://git@h/r.git",
            "git+ssh://git@h/r.git",
            "ssh+git://git@h/r.git",
            "git@h:org/r.git",
        ] {
            assert!(is_ssh_url(url), "{url}");
            assert_eq!(
                remote_callbacks(url, &auth).err(),
                Some(AuthError::MissingKnownHosts),
                "{url}"
            );
        }
        for url in ["https://h/r.git", "http://h/r", "git://h/r", "file:///x"] {
            assert!(!is_ssh_url(url), "{url}");
            assert!(remote_callbacks(url, &auth).is_ok(), "{url}");
        }
    }

    #[test]
    fn url_kinds() {
        for url in [
            "https://h/r.git",
            "http://h/r",
            "ssh://git@h/r",
            "git@github.com:org/r.git",
        ] {
            assert_eq!(url_kind(url), UrlKind::Network, "{url}");
        }
        for url in [
            "file:///tmp/x",
            "/tmp/x",
            "./x",
            "x",
            "FILE:///x",
            "a/b@c:d",
            "-oProxyCommand=x@h:r",
        ] {
            assert!(matches!(url_kind(url), UrlKind::Local(_)), "{url}");
        }
        assert_eq!(url_kind("ext::sh -c id"), UrlKind::Local("local path"));
        assert_eq!(url_kind("ftp://h/r"), UrlKind::Unsupported);
    }

    #[test]
    fn credentials_stay_with_their_origin() {
        assert!(same_origin("https://h/r.git", "https://h/r.git/info/refs"));
        assert!(same_origin("https://h/r.git", "https://H:443/other"));
        assert!(same_origin("http://h:1/r", "http://h:1/r/info/refs"));
        assert!(same_origin("ssh://git@h/r", "ssh://git@h:22/r"));
        assert!(same_origin("git@h:o/r.git", "git@h:o/r.git"));
        assert!(!same_origin("https://h/r.git", "https://evil/r.git"));
        assert!(!same_origin("http://127.0.0.1:1/r", "http://127.0.0.1:2/r"));
        assert!(!same_origin("http://127.0.0.1:1/r", "http://127.0.0.2:1/r"));
        assert!(!same_origin("https://h/r", "http://h/r"));
        assert!(!same_origin("ssh://git@h/r", "ssh://git@evil/r"));
        assert!(same_origin("http://h/r", "https://h:80/r"));
        assert!(!same_origin("http://h/r", "https://h/r"));
    }

    #[test]
    fn auth_failures_say_where_the_credentials_come_from() {
        let auth = GitAuth {
            password: Some("pw".into()),
            ..GitAuth::default()
        };
        let err = auth_error("server said pw is wrong".into());
        let message = describe_error(&err, &auth);
        assert_eq!(
            message,
            "authentication failed (server said *** is wrong); check the credentials in the GitSource's secretRef"
        );
        assert_eq!(
            describe_error(&git2::Error::from_str("boom"), &auth),
            "boom"
        );
    }
}
