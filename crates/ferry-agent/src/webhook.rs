//! Webhook receivers: verify a push event from GitHub, GitLab, Gitea, Bitbucket or a generic
//! sender against the Receiver's secret, then ask the matching GitSources to fetch at once (by
//! setting their reconcile-request annotation, which whichever replica leads picks up).
//! Unverified requests are rejected before the payload is parsed; secrets never reach logs.

use std::collections::BTreeSet;

use aws_lc_rs::hmac;
use axum::http::{HeaderMap, StatusCode};
use ferry_api::common::RECONCILE_REQUESTED_AT;
use ferry_api::{GitSource, Receiver, ReceiverType};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

/// Why a webhook request was not accepted; the HTTP status and a message safe to return.
#[derive(Debug)]
pub struct Rejection {
    pub status: StatusCode,
    pub message: String,
}

impl Rejection {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// What a verified request did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Accepted {
    pub event: String,
    pub triggered: Vec<String>,
}

/// Handle `POST /hook/<namespace>/<name>`.
pub async fn handle(
    client: &Client,
    namespace: &str,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Accepted, Rejection> {
    let receivers: Api<Receiver> = Api::namespaced(client.clone(), namespace);
    let receiver = receivers
        .get_opt(name)
        .await
        .map_err(|e| {
            tracing::warn!(receiver = %format!("{namespace}/{name}"), "cannot read Receiver: {e}");
            Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "cannot read the receiver")
        })?
        // Same answer as a bad signature would get a prober nothing.
        .ok_or_else(|| Rejection::new(StatusCode::NOT_FOUND, "no such receiver"))?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret_name = &receiver.spec.secret_ref.name;
    let token = secrets
        .get_opt(secret_name)
        .await
        .ok()
        .flatten()
        .and_then(|s| s.data)
        .and_then(|d| d.get("token").map(|v| v.0.clone()))
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        tracing::warn!(receiver = %format!("{namespace}/{name}"), secret = %secret_name, "receiver secret missing or has no `token` key; rejecting");
        return Err(Rejection::new(
            StatusCode::UNAUTHORIZED,
            "receiver has no usable secret",
        ));
    };
    verify(receiver.spec.kind, headers, body, trim_newline(&token))?;
    let event = event_name(receiver.spec.kind, headers);
    if matches!(event.as_str(), "ping" | "diagnostics:ping") {
        return Ok(Accepted {
            event,
            triggered: Vec::new(),
        });
    }
    if !is_push(receiver.spec.kind, &event) {
        return Ok(Accepted {
            event,
            triggered: Vec::new(),
        });
    }
    let payload: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .map_err(|_| Rejection::new(StatusCode::BAD_REQUEST, "payload is not JSON"))?
    };
    let repo_urls = repository_urls(&payload);
    let sources: Api<GitSource> = Api::namespaced(client.clone(), namespace);
    let all = sources.list(&ListParams::default()).await.map_err(|e| {
        tracing::warn!("cannot list GitSources in {namespace}: {e}");
        Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "cannot list sources")
    })?;
    let wanted: BTreeSet<&str> = receiver.spec.resources.iter().map(String::as_str).collect();
    let targets: Vec<&GitSource> = all
        .items
        .iter()
        .filter(|gs| {
            if wanted.is_empty() {
                let url = normalize_url(&gs.spec.url);
                repo_urls.contains(&url)
            } else {
                wanted.contains("*") || wanted.contains(gs.name_any().as_str())
            }
        })
        .collect();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let mut triggered = Vec::new();
    for gs in targets {
        let patch = serde_json::json!({"metadata": {"annotations": {RECONCILE_REQUESTED_AT: now}}});
        match sources
            .patch(
                &gs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => triggered.push(gs.name_any()),
            Err(e) => tracing::warn!(source = %gs.name_any(), "cannot request a fetch: {e}"),
        }
    }
    tracing::info!(receiver = %format!("{namespace}/{name}"), %event, triggered = ?triggered, "webhook accepted");
    Ok(Accepted { event, triggered })
}

fn trim_newline(token: &[u8]) -> &[u8] {
    let mut end = token.len();
    while end > 0 && matches!(token[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &token[..end]
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Check the request's signature or token. Constant-time comparisons throughout.
pub fn verify(
    kind: ReceiverType,
    headers: &HeaderMap,
    body: &[u8],
    token: &[u8],
) -> Result<(), Rejection> {
    let unauthorized = |what: &str| Err(Rejection::new(StatusCode::UNAUTHORIZED, what.to_string()));
    match kind {
        ReceiverType::Github => match header(headers, "x-hub-signature-256") {
            Some(sig) => check_hmac(sig.strip_prefix("sha256="), body, token),
            None => unauthorized("missing X-Hub-Signature-256"),
        },
        ReceiverType::Gitea => match header(headers, "x-gitea-signature")
            .or_else(|| header(headers, "x-hub-signature-256"))
        {
            Some(sig) => check_hmac(Some(sig.trim_start_matches("sha256=")), body, token),
            None => unauthorized("missing X-Gitea-Signature"),
        },
        ReceiverType::Bitbucket => match header(headers, "x-hub-signature") {
            Some(sig) => check_hmac(sig.strip_prefix("sha256="), body, token),
            None => unauthorized("missing X-Hub-Signature"),
        },
        ReceiverType::GenericHmac => match header(headers, "x-signature") {
            Some(sig) => check_hmac(sig.strip_prefix("sha256="), body, token),
            None => unauthorized("missing X-Signature"),
        },
        ReceiverType::Gitlab => match header(headers, "x-gitlab-token") {
            Some(given) if constant_eq(given.as_bytes(), token) => Ok(()),
            _ => unauthorized("missing or wrong X-Gitlab-Token"),
        },
        ReceiverType::Generic => {
            let given = header(headers, "authorization").and_then(|a| a.strip_prefix("Bearer "));
            match given {
                Some(given) if constant_eq(given.as_bytes(), token) => Ok(()),
                _ => unauthorized("missing or wrong bearer token"),
            }
        }
    }
}

fn check_hmac(hex_sig: Option<&str>, body: &[u8], token: &[u8]) -> Result<(), Rejection> {
    let Some(sig) = hex_sig.and_then(|s| hex::decode(s.trim()).ok()) else {
        return Err(Rejection::new(
            StatusCode::UNAUTHORIZED,
            "malformed signature",
        ));
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, token);
    hmac::verify(&key, body, &sig)
        .map_err(|_| Rejection::new(StatusCode::UNAUTHORIZED, "signature mismatch"))
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    // Compare HMACs of both sides so timing reveals nothing about the token.
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"ferry-token-compare");
    let ta = hmac::sign(&key, a);
    hmac::verify(&key, b, ta.as_ref()).is_ok()
}

/// The event name the sender put in its headers (`push` for the generic types).
fn event_name(kind: ReceiverType, headers: &HeaderMap) -> String {
    let name = match kind {
        ReceiverType::Github => header(headers, "x-github-event"),
        ReceiverType::Gitlab => header(headers, "x-gitlab-event"),
        ReceiverType::Gitea => header(headers, "x-gitea-event"),
        ReceiverType::Bitbucket => header(headers, "x-event-key"),
        ReceiverType::Generic | ReceiverType::GenericHmac => Some("push"),
    };
    name.unwrap_or("push").to_ascii_lowercase()
}

fn is_push(kind: ReceiverType, event: &str) -> bool {
    match kind {
        ReceiverType::Github | ReceiverType::Gitea => matches!(event, "push" | "create"),
        ReceiverType::Gitlab => matches!(event, "push hook" | "tag push hook"),
        ReceiverType::Bitbucket => matches!(event, "repo:refs_changed" | "repo:push"),
        ReceiverType::Generic | ReceiverType::GenericHmac => true,
    }
}

/// Every repository URL a push payload names (GitHub, Gitea, GitLab, Bitbucket shapes), normalized.
fn repository_urls(payload: &Value) -> Vec<String> {
    let mut urls = Vec::new();
    let mut push = |v: Option<&Value>| {
        if let Some(s) = v.and_then(Value::as_str) {
            urls.push(normalize_url(s));
        }
    };
    for field in ["clone_url", "html_url", "ssh_url", "git_url", "url"] {
        push(payload.pointer(&format!("/repository/{field}")));
    }
    for field in ["git_http_url", "git_ssh_url", "web_url", "http_url"] {
        push(payload.pointer(&format!("/project/{field}")));
    }
    if let Some(links) = payload
        .pointer("/repository/links/clone")
        .and_then(Value::as_array)
    {
        for link in links {
            push(link.get("href"));
        }
    }
    push(payload.pointer("/repository/links/html/href"));
    urls
}

/// `host/path` lowercased, without scheme, user info, port-less ssh syntax or `.git`.
pub fn normalize_url(url: &str) -> String {
    let mut s = url.trim().to_ascii_lowercase();
    if let Some((_, rest)) = s.split_once("://") {
        s = rest.to_string();
    } else if let Some((user_host, path)) = s.split_once(':') {
        // scp-like git@host:org/repo
        s = format!("{user_host}/{path}");
    }
    if let Some((_, rest)) = s.split_once('@') {
        s = rest.to_string();
    }
    s.trim_end_matches('/').trim_end_matches(".git").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn signed(name: &'static str, prefix: &str, body: &[u8], key: &[u8]) -> HeaderMap {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), body);
        let mut headers = HeaderMap::new();
        let value = format!("{prefix}{}", hex::encode(tag.as_ref()));
        headers.insert(name, HeaderValue::from_str(&value).unwrap());
        headers
    }

    #[test]
    fn github_signature_verified_and_forgery_rejected() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let ok = signed("x-hub-signature-256", "sha256=", body, b"s3cret");
        assert!(verify(ReceiverType::Github, &ok, body, b"s3cret").is_ok());
        let wrong_key = signed("x-hub-signature-256", "sha256=", body, b"other");
        let err = verify(ReceiverType::Github, &wrong_key, body, b"s3cret").unwrap_err();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
        assert!(verify(ReceiverType::Github, &HeaderMap::new(), body, b"s3cret").is_err());
        // A tampered body fails with the original signature.
        assert!(verify(ReceiverType::Github, &ok, b"{}", b"s3cret").is_err());
    }

    #[test]
    fn token_types() {
        let mut h = HeaderMap::new();
        h.insert("x-gitlab-token", HeaderValue::from_static("tok"));
        assert!(verify(ReceiverType::Gitlab, &h, b"", b"tok").is_ok());
        assert!(verify(ReceiverType::Gitlab, &h, b"", b"tok2").is_err());
        let mut g = HeaderMap::new();
        g.insert("authorization", HeaderValue::from_static("Bearer tok"));
        assert!(verify(ReceiverType::Generic, &g, b"", b"tok").is_ok());
        assert!(verify(ReceiverType::Generic, &HeaderMap::new(), b"", b"tok").is_err());
        let gitea = signed("x-gitea-signature", "", b"x", b"k");
        assert!(verify(ReceiverType::Gitea, &gitea, b"x", b"k").is_ok());
        let bb = signed("x-hub-signature", "sha256=", b"x", b"k");
        assert!(verify(ReceiverType::Bitbucket, &bb, b"x", b"k").is_ok());
    }

    #[test]
    fn urls_match_across_forms() {
        assert_eq!(
            normalize_url("https://git.example.com/team/app.git"),
            "git.example.com/team/app"
        );
        assert_eq!(
            normalize_url("git@git.example.com:team/app.git"),
            "git.example.com/team/app"
        );
        assert_eq!(
            normalize_url("http://ferry:pw@127.0.0.1:13000/team/app.git"),
            "127.0.0.1:13000/team/app"
        );
        let payload = serde_json::json!({"repository": {"clone_url": "https://git.example.com/team/app.git"}});
        assert_eq!(repository_urls(&payload), vec!["git.example.com/team/app"]);
    }
}
