//! OCI distribution API client: tag lists (paged with `n` and following `Link`), digests via
//! `HEAD` on manifests, manifest and blob transfer for OCI artifacts ([`artifacts`]: pull with
//! the digest checked while streaming, push for `ferry push artifact`), the bearer-token flow (Docker Hub, GHCR, Harbor, ECR-style
//! token services) and basic auth, conditional requests (`If-None-Match`) so that an unchanged
//! tag list costs one request, and per-registry pacing with backoff on 429.
//!
//! One [`Registries`] is shared by all scans of a process: it holds the HTTP clients, the token
//! and ETag caches and the per-host pacing state.
//!
//! A registry is an untrusted HTTP peer. Credentials (basic, static bearer, tokens) are sent only
//! to the registry's own origin (scheme, host, port) and to the token realm it declares when that
//! realm is https (a plain-http realm only on the registry's own origin, and only when the
//! registry itself is plain http). `Link` pages on another origin are refused, redirects to
//! another origin (blob/manifest CDNs) are followed without `Authorization`, a 401 from another
//! origin is never answered, every body is read with a byte cap and every request has a connect
//! and a total timeout. See docs/images.md ("Registry access and credentials").

pub mod artifacts;
pub mod auth;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderValue};
use serde::Deserialize;
use thiserror::Error;

use crate::render::image_ref::split_repository;
pub use auth::Credentials;
use auth::parse_challenge;

/// Accept header for manifest HEAD/GET: indexes first, so multi-arch images give the index digest.
/// Page size for registries that refuse large `n` (Docker Hub's maximum is 100).
pub const FALLBACK_PAGE_SIZE: usize = 100;

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, Error)]
pub enum RegistryError {
    #[error(
        "registry {host} is unreachable ({url}): {reason}; check the image name and that the registry is up"
    )]
    Unreachable {
        host: String,
        url: String,
        reason: String,
    },
    #[error("registry {host} refused the credentials for {repository} (401 Unauthorized){hint}")]
    Unauthorized {
        host: String,
        repository: String,
        hint: String,
    },
    #[error(
        "registry {host} denied access to {repository} (403 Forbidden); the credentials lack pull rights"
    )]
    Forbidden { host: String, repository: String },
    #[error("repository {repository} was not found on registry {host} (404); check spec.image")]
    NotFound { host: String, repository: String },
    #[error("registry {host} is rate limiting (429 Too Many Requests); backing off for {}s", retry_after.as_secs())]
    RateLimited { host: String, retry_after: Duration },
    #[error("registry {host} answered {status} for {url}: {body}")]
    Http {
        host: String,
        url: String,
        status: u16,
        body: String,
    },
    #[error("registry {host} sent an invalid response for {url}: {reason}")]
    Invalid {
        host: String,
        url: String,
        reason: String,
    },
    #[error("token service {realm} failed: {reason}")]
    Token { realm: String, reason: String },
    #[error("TLS setup for registry {host}: {reason}")]
    Tls { host: String, reason: String },
    #[error("scan of {repository} did not finish within {}s", timeout.as_secs())]
    Timeout {
        repository: String,
        timeout: Duration,
    },
    /// The registry pointed ferry at another origin where it would have to send credentials or
    /// follow pagination; refused so that credentials stay with the registry.
    #[error(
        "registry {host} sent {what} {url}, which is not on {host}; ferry sends credentials only to the registry itself (and to an https token realm) and does not page across hosts: check that spec.image names the registry directly, not a proxy that rewrites links"
    )]
    OtherHost {
        host: String,
        url: String,
        what: &'static str,
    },
    /// Content whose digest is not the one it was asked for (a hostile or broken registry,
    /// or a corrupted transfer): nothing of it is used.
    #[error(
        "registry {host} sent content for {url} whose digest is {actual}, not the {expected} it was asked for; nothing of it was used"
    )]
    DigestMismatch {
        host: String,
        url: String,
        expected: String,
        actual: String,
    },
    /// A response body larger than its cap (a hostile or broken registry).
    #[error(
        "registry {host} sent more than {limit} bytes for {url}; refusing to read further (a tag list, manifest or token this large is not plausible)"
    )]
    TooLarge {
        host: String,
        url: String,
        limit: usize,
    },
}

impl RegistryError {
    /// A short condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            RegistryError::Unreachable { .. } => "RegistryUnreachable",
            RegistryError::Unauthorized { .. } => "Unauthorized",
            RegistryError::Forbidden { .. } => "Forbidden",
            RegistryError::NotFound { .. } => "NotFound",
            RegistryError::RateLimited { .. } => "RateLimited",
            RegistryError::Http { .. } | RegistryError::Invalid { .. } => "RegistryError",
            RegistryError::Token { .. } => "TokenServiceFailed",
            RegistryError::Tls { .. } => "TLSError",
            RegistryError::Timeout { .. } => "Timeout",
            RegistryError::OtherHost { .. } => "OtherHost",
            RegistryError::TooLarge { .. } => "ResponseTooLarge",
            RegistryError::DigestMismatch { .. } => "DigestMismatch",
        }
    }

    /// How long to wait before the next attempt, if the registry said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RegistryError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// Per-repository connection options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ConnectOptions {
    /// Plain HTTP and no certificate verification.
    pub insecure: bool,
    /// Extra PEM CA bundle.
    pub ca_pem: Option<Vec<u8>>,
}

/// Tunables shared by every scan.
#[derive(Debug, Clone)]
pub struct RegistryLimits {
    /// Minimum spacing between requests to one registry host.
    pub min_interval: Duration,
    /// Page size asked for (`n`). Large, so that a whole tag list is usually one response and
    /// an unchanged list costs one conditional request; a registry that refuses it with 400
    /// is asked again with [`FALLBACK_PAGE_SIZE`] (remembered per host).
    pub page_size: usize,
    /// Attempts of one request on 429 before giving up (with backoff in between).
    pub max_attempts: u32,
    /// Backoff after a 429 without Retry-After (doubles on each consecutive 429, capped at 5m).
    pub base_backoff: Duration,
    /// Total time of one HTTP request, body included (a trickling body cannot hold a scan).
    pub request_timeout: Duration,
    /// Time to establish a connection (TCP + TLS).
    pub connect_timeout: Duration,
    /// Cap on one tag-list page body.
    pub max_tags_body: usize,
    /// Cap on a manifest body (digest fallback GET).
    pub max_manifest_body: usize,
    /// Cap on a token-service response.
    pub max_token_body: usize,
}

impl Default for RegistryLimits {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_millis(20),
            page_size: 10_000,
            max_attempts: 4,
            base_backoff: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_tags_body: 16 * 1024 * 1024,
            max_manifest_body: 4 * 1024 * 1024,
            max_token_body: 64 * 1024,
        }
    }
}

/// The outcome of listing tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagList {
    pub tags: Vec<String>,
    /// HTTP requests made (token requests included).
    pub requests: u32,
    /// True when the registry answered 304 and the cached list was used.
    pub not_modified: bool,
}

#[derive(Default)]
struct HostState {
    /// Page size this host accepted (after a 400 to a large `n`).
    page_size: Option<usize>,
    next_allowed: Option<Instant>,
    blocked_until: Option<Instant>,
    consecutive_429: u32,
}

#[derive(Clone)]
struct CachedPage {
    etag: String,
    tags: Vec<String>,
    next: Option<String>,
}

#[derive(Clone)]
struct CachedToken {
    token: String,
    expires: Instant,
}

/// Shared registry access (clone freely).
#[derive(Clone)]
pub struct Registries {
    inner: Arc<Inner>,
}

struct Inner {
    limits: RegistryLimits,
    clients: Mutex<HashMap<ConnectOptions, reqwest::Client>>,
    hosts: Mutex<HashMap<String, HostState>>,
    pages: Mutex<HashMap<String, CachedPage>>,
    tokens: Mutex<HashMap<String, CachedToken>>,
}

#[derive(Deserialize)]
struct TagsResponse {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Default for Registries {
    fn default() -> Self {
        Self::new(RegistryLimits::default())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a request needs the registry to allow: the token scope asked for in the bearer flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Pull,
    /// Uploads (`ferry push artifact`); a push also reads (blob existence checks).
    Push,
}

impl Access {
    fn scope(self, path: &str) -> String {
        match self {
            Access::Pull => format!("repository:{path}:pull"),
            Access::Push => format!("repository:{path}:pull,push"),
        }
    }
}

/// One repository on one registry, with its credentials.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub path: String,
    pub credentials: Credentials,
    pub options: ConnectOptions,
}

impl Target {
    pub fn new(repository: &str, credentials: Credentials, options: ConnectOptions) -> Self {
        let (host, path) = split_repository(repository);
        Self {
            host,
            path,
            credentials,
            options,
        }
    }

    fn base(&self) -> String {
        let scheme = if self.options.insecure || is_loopback_host(&self.host) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}", self.host)
    }

    fn display(&self) -> String {
        format!("{}/{}", self.host, self.path)
    }

    /// True when the registry is spoken to over plain http (insecure, or a loopback address).
    fn plain_http(&self) -> bool {
        self.options.insecure || is_loopback_host(&self.host)
    }

    /// Whether `url` is on the registry's own origin (scheme, host and port).
    fn same_origin(&self, url: &reqwest::Url) -> bool {
        reqwest::Url::parse(&self.base()).is_ok_and(|base| same_origin(&base, url))
    }
}

/// Scheme, host and port (with the scheme's default) all equal: the browser notion of origin,
/// which is also what reqwest uses to decide whether a redirect keeps `Authorization`.
pub fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Whether a registry host is on the loopback interface, where (like Docker) the client speaks
/// plain HTTP. Image automation allows that without `insecure: true`; an OCISource asks for it.
pub fn is_loopback_host(host: &str) -> bool {
    let name = host
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map(|(name, _)| name)
        .unwrap_or(host);
    name == "localhost" || name.starts_with("127.") || name == "[::1]"
}

/// Where the credentials of `target` may be sent to fetch a token: an https realm on any host
/// (Docker Hub's is auth.docker.io, GHCR's is ghcr.io), or a plain-http realm on the registry's
/// own origin when the registry itself is plain http (a local or `insecure` registry whose
/// credentials already travel in clear). Realms with user info are refused.
fn check_realm(target: &Target, realm: &str) -> Result<reqwest::Url, RegistryError> {
    let other = || RegistryError::OtherHost {
        host: target.host.clone(),
        url: realm.to_string(),
        what: "a token realm",
    };
    let url = reqwest::Url::parse(realm).map_err(|e| RegistryError::Token {
        realm: realm.to_string(),
        reason: format!("invalid realm URL: {e}"),
    })?;
    if !url.username().is_empty() || url.password().is_some() || url.host_str().is_none() {
        return Err(other());
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if target.plain_http() && target.same_origin(&url) => Ok(url),
        _ => Err(other()),
    }
}

/// Read a body, failing with [`RegistryError::TooLarge`] once it passes `limit` (checked against
/// `Content-Length` first, then while streaming, so an endless body costs at most `limit`).
async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
    host: &str,
) -> Result<Vec<u8>, RegistryError> {
    let url = response.url().to_string();
    let too_large = || RegistryError::TooLarge {
        host: host.to_string(),
        url: url.clone(),
        limit,
    };
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    loop {
        let chunk = response.chunk().await.map_err(|e| RegistryError::Invalid {
            host: host.to_string(),
            url: url.clone(),
            reason: format!("reading the body: {}", error_chain(&e)),
        })?;
        let Some(chunk) = chunk else { break };
        if out.len() + chunk.len() > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The start of an error body for messages: at most 4 KiB read, 300 characters kept.
async fn error_body(mut response: reqwest::Response) -> String {
    let mut out = Vec::new();
    while out.len() < 4096 {
        match response.chunk().await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk[..chunk.len().min(4096 - out.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).chars().take(300).collect()
}

impl Registries {
    pub fn new(limits: RegistryLimits) -> Self {
        Self {
            inner: Arc::new(Inner {
                limits,
                clients: Mutex::default(),
                hosts: Mutex::default(),
                pages: Mutex::default(),
                tokens: Mutex::default(),
            }),
        }
    }

    fn client(&self, target: &Target) -> Result<reqwest::Client, RegistryError> {
        if let Some(c) = lock(&self.inner.clients).get(&target.options) {
            return Ok(c.clone());
        }
        let tls = |reason: String| RegistryError::Tls {
            host: target.host.clone(),
            reason,
        };
        // Redirects: reqwest drops Authorization (and cookies) whenever a hop changes scheme,
        // host or port, so a manifest/blob redirect to a CDN carries no credentials; on top of
        // that, at most 5 hops and never from https down to http.
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            let downgrade = attempt.url().scheme() == "http"
                && attempt.previous().iter().any(|u| u.scheme() == "https");
            if attempt.previous().len() > 5 {
                attempt.error("more than 5 redirects")
            } else if downgrade {
                attempt.error("refusing a redirect from https to plain http")
            } else {
                attempt.follow()
            }
        });
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .timeout(self.inner.limits.request_timeout)
            .connect_timeout(self.inner.limits.connect_timeout)
            .referer(false)
            .redirect(redirects);
        if target.options.insecure {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        if let Some(pem) = &target.options.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| tls(format!("the CA bundle is not valid PEM: {e}")))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| tls(e.to_string()))?;
        lock(&self.inner.clients).insert(target.options.clone(), client.clone());
        Ok(client)
    }

    /// Wait for this host's pacing slot; fail fast when a 429 backoff outlasts `deadline`.
    async fn pace(&self, host: &str, deadline: Instant) -> Result<(), RegistryError> {
        let wait_until = {
            let mut hosts = lock(&self.inner.hosts);
            let state = hosts.entry(host.to_string()).or_default();
            let now = Instant::now();
            let mut at = state.next_allowed.unwrap_or(now).max(now);
            if let Some(blocked) = state.blocked_until {
                if blocked > deadline {
                    return Err(RegistryError::RateLimited {
                        host: host.to_string(),
                        retry_after: blocked.saturating_duration_since(now),
                    });
                }
                at = at.max(blocked);
            }
            state.next_allowed = Some(at + self.inner.limits.min_interval);
            at
        };
        let now = Instant::now();
        if wait_until > now {
            tokio::time::sleep(wait_until - now).await;
        }
        Ok(())
    }

    fn record_429(&self, host: &str, retry_after: Option<Duration>) -> Duration {
        let mut hosts = lock(&self.inner.hosts);
        let state = hosts.entry(host.to_string()).or_default();
        state.consecutive_429 += 1;
        let backoff = retry_after.unwrap_or_else(|| {
            let factor = 2u32.saturating_pow(state.consecutive_429.saturating_sub(1).min(8));
            (self.inner.limits.base_backoff * factor).min(Duration::from_secs(300))
        });
        state.blocked_until = Some(Instant::now() + backoff);
        backoff
    }

    fn record_ok(&self, host: &str) {
        if let Some(state) = lock(&self.inner.hosts).get_mut(host) {
            state.consecutive_429 = 0;
            state.blocked_until = None;
        }
    }

    /// When the host may next be asked (after a 429), for requeue decisions.
    pub fn blocked_for(&self, host: &str) -> Option<Duration> {
        let hosts = lock(&self.inner.hosts);
        let blocked = hosts.get(host)?.blocked_until?;
        let left = blocked.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Send a request with auth, pacing and 429 handling. `build` makes a fresh request for
    /// each attempt.
    async fn send<F>(
        &self,
        target: &Target,
        url: &str,
        deadline: Instant,
        requests: &mut u32,
        build: F,
    ) -> Result<reqwest::Response, RegistryError>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        self.send_with(target, url, deadline, requests, Access::Pull, build)
            .await
    }

    /// [`Registries::send`] with the access the request needs (the bearer token's scope).
    async fn send_with<F>(
        &self,
        target: &Target,
        url: &str,
        deadline: Instant,
        requests: &mut u32,
        access: Access,
        build: F,
    ) -> Result<reqwest::Response, RegistryError>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let client = self.client(target)?;
        let scope = access.scope(&target.path);
        let token_key = format!(
            "{}|{}|{}",
            target.host,
            scope,
            target.credentials.cache_id()
        );
        let mut auth_header: Option<String> = self.initial_auth(target, &token_key);
        let mut tried_auth = false;
        let mut attempts = 0;
        loop {
            attempts += 1;
            self.pace(&target.host, deadline).await?;
            let mut request = build(&client);
            if let Some(value) = &auth_header {
                request = request.header(header::AUTHORIZATION, value);
            }
            *requests += 1;
            let response = request
                .send()
                .await
                .map_err(|e| RegistryError::Unreachable {
                    host: target.host.clone(),
                    url: url.to_string(),
                    reason: error_chain(&e),
                })?;
            match response.status() {
                StatusCode::TOO_MANY_REQUESTS => {
                    let retry_after = parse_retry_after(response.headers());
                    let backoff = self.record_429(&target.host, retry_after);
                    tracing::warn!(host = %target.host, backoff_secs = backoff.as_secs_f64(), "registry rate limit (429)");
                    if attempts >= self.inner.limits.max_attempts
                        || Instant::now() + backoff > deadline
                    {
                        return Err(RegistryError::RateLimited {
                            host: target.host.clone(),
                            retry_after: backoff,
                        });
                    }
                }
                // A 401 from another origin (after a redirect) is never answered: its challenge
                // would make ferry send the registry's credentials to that host.
                StatusCode::UNAUTHORIZED if !target.same_origin(response.url()) => {
                    return Err(RegistryError::OtherHost {
                        host: target.host.clone(),
                        url: response.url().to_string(),
                        what: "a redirect to",
                    });
                }
                StatusCode::UNAUTHORIZED if !tried_auth => {
                    tried_auth = true;
                    let challenge = response
                        .headers()
                        .get(header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_challenge);
                    auth_header = Some(
                        self.answer_challenge(
                            target, challenge, &scope, &token_key, deadline, requests,
                        )
                        .await?,
                    );
                }
                StatusCode::UNAUTHORIZED => {
                    return Err(RegistryError::Unauthorized {
                        host: target.host.clone(),
                        repository: target.path.clone(),
                        hint: match target.credentials {
                            Credentials::Anonymous => {
                                "; the registry needs credentials: set spec.secretRef".into()
                            }
                            _ => "; check the Secret in spec.secretRef".into(),
                        },
                    });
                }
                StatusCode::FORBIDDEN => {
                    return Err(RegistryError::Forbidden {
                        host: target.host.clone(),
                        repository: target.path.clone(),
                    });
                }
                StatusCode::NOT_FOUND => {
                    return Err(RegistryError::NotFound {
                        host: target.host.clone(),
                        repository: target.path.clone(),
                    });
                }
                _ => {
                    self.record_ok(&target.host);
                    return Ok(response);
                }
            }
        }
    }

    fn initial_auth(&self, target: &Target, token_key: &str) -> Option<String> {
        if let Credentials::Bearer(token) = &target.credentials {
            return Some(format!("Bearer {token}"));
        }
        let tokens = lock(&self.inner.tokens);
        tokens
            .get(token_key)
            .filter(|t| t.expires > Instant::now())
            .map(|t| format!("Bearer {}", t.token))
    }

    async fn answer_challenge(
        &self,
        target: &Target,
        challenge: Option<auth::Challenge>,
        scope: &str,
        token_key: &str,
        deadline: Instant,
        requests: &mut u32,
    ) -> Result<String, RegistryError> {
        let unauthorized = |hint: &str| RegistryError::Unauthorized {
            host: target.host.clone(),
            repository: target.path.clone(),
            hint: hint.to_string(),
        };
        let Some(challenge) = challenge else {
            return Err(unauthorized(
                "; the registry sent no WWW-Authenticate challenge",
            ));
        };
        match challenge.scheme.as_str() {
            "basic" => match &target.credentials {
                Credentials::Basic { username, password } => Ok(basic_header(username, password)),
                _ => Err(unauthorized(
                    "; the registry wants basic auth: set spec.secretRef to a Secret with username/password or .dockerconfigjson",
                )),
            },
            "bearer" => {
                let realm = challenge
                    .params
                    .get("realm")
                    .cloned()
                    .ok_or_else(|| unauthorized("; the bearer challenge has no realm"))?;
                let token = self
                    .fetch_token(
                        target,
                        &realm,
                        challenge.params.get("service"),
                        scope,
                        deadline,
                        requests,
                    )
                    .await?;
                let header = format!("Bearer {}", token.token);
                lock(&self.inner.tokens).insert(token_key.to_string(), token);
                Ok(header)
            }
            other => Err(unauthorized(&format!(
                "; unsupported auth scheme {other:?}"
            ))),
        }
    }

    /// The token endpoint of the bearer flow (docker token spec; OAuth2 refresh for identity
    /// tokens).
    async fn fetch_token(
        &self,
        target: &Target,
        realm: &str,
        service: Option<&String>,
        scope: &str,
        deadline: Instant,
        requests: &mut u32,
    ) -> Result<CachedToken, RegistryError> {
        let fail = |reason: String| RegistryError::Token {
            realm: realm.to_string(),
            reason,
        };
        let realm_url = check_realm(target, realm)?;
        let realm_host = realm_url.host_str().unwrap_or_default().to_string();
        self.pace(&realm_host, deadline).await?;
        let client = self.client(target)?;
        let mut query: Vec<(&str, &str)> = vec![("scope", scope)];
        if let Some(service) = service {
            query.push(("service", service));
        }
        let request = match &target.credentials {
            Credentials::IdentityToken(refresh) => {
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("client_id", "ferry"),
                    ("refresh_token", refresh.as_str()),
                    ("scope", scope),
                ];
                if let Some(service) = service {
                    form.push(("service", service));
                }
                client.post(realm_url.clone()).form(&form)
            }
            Credentials::Basic { username, password } => client
                .get(realm_url.clone())
                .query(&query)
                .header(header::AUTHORIZATION, basic_header(username, password)),
            _ => client.get(realm_url.clone()).query(&query),
        };
        *requests += 1;
        let response = request.send().await.map_err(|e| fail(error_chain(&e)))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RegistryError::Unauthorized {
                host: target.host.clone(),
                repository: target.path.clone(),
                hint: format!("; the token service refused the credentials ({status})"),
            });
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let backoff = self.record_429(&realm_host, parse_retry_after(response.headers()));
            return Err(RegistryError::RateLimited {
                host: realm_host,
                retry_after: backoff,
            });
        }
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}")));
        }
        let bytes = read_capped(response, self.inner.limits.max_token_body, &realm_host).await?;
        let body: TokenResponse = serde_json::from_slice(&bytes)
            .map_err(|e| fail(format!("response is not token JSON: {e}")))?;
        let token = body
            .token
            .or(body.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| fail("response has no token".into()))?;
        // Docker's token spec: default lifetime 60s; renew a little early.
        let lifetime = Duration::from_secs(body.expires_in.unwrap_or(60).max(10));
        Ok(CachedToken {
            token,
            expires: Instant::now() + lifetime - Duration::from_secs(5),
        })
    }

    /// List every tag of the target, following pagination. Pages the registry reports as not
    /// modified (304 on `If-None-Match`) come from the cache; when the first page is unchanged
    /// and it was the only page, that single request is the whole scan.
    pub async fn list_tags(
        &self,
        target: &Target,
        timeout: Duration,
    ) -> Result<TagList, RegistryError> {
        let deadline = Instant::now() + timeout;
        let fut = self.list_tags_inner(target, deadline);
        match tokio::time::timeout(timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(RegistryError::Timeout {
                repository: target.display(),
                timeout,
            }),
        }
    }

    async fn list_tags_inner(
        &self,
        target: &Target,
        deadline: Instant,
    ) -> Result<TagList, RegistryError> {
        let base = target.base();
        let page_size = lock(&self.inner.hosts)
            .get(&target.host)
            .and_then(|h| h.page_size)
            .unwrap_or(self.inner.limits.page_size);
        let mut url = format!("{base}/v2/{}/tags/list?n={page_size}", target.path);
        let cred = target.credentials.cache_id();
        let mut tags = Vec::new();
        let mut requests = 0u32;
        let mut all_cached = true;
        let mut seen_pages = 0usize;
        loop {
            seen_pages += 1;
            if seen_pages > 100_000 {
                return Err(RegistryError::Invalid {
                    host: target.host.clone(),
                    url,
                    reason: "pagination does not end".into(),
                });
            }
            let cache_key = format!("{cred}|{url}");
            let cached = lock(&self.inner.pages).get(&cache_key).cloned();
            let response = self
                .send(target, &url, deadline, &mut requests, |c| {
                    let mut r = c.get(&url);
                    if let Some(page) = &cached {
                        r = r.header(header::IF_NONE_MATCH, page.etag.clone());
                    }
                    r
                })
                .await?;
            let status = response.status();
            let (page_tags, next) = if status == StatusCode::NOT_MODIFIED {
                match cached {
                    Some(page) => (page.tags, page.next),
                    None => {
                        return Err(RegistryError::Invalid {
                            host: target.host.clone(),
                            url,
                            reason: "304 Not Modified to an unconditional request".into(),
                        });
                    }
                }
            } else if status.is_success() {
                all_cached = false;
                let etag = response
                    .headers()
                    .get(header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let next = next_link(response.headers(), &url);
                let bytes =
                    read_capped(response, self.inner.limits.max_tags_body, &target.host).await?;
                let body: TagsResponse =
                    serde_json::from_slice(&bytes).map_err(|e| RegistryError::Invalid {
                        host: target.host.clone(),
                        url: url.clone(),
                        reason: format!("tag list is not JSON: {e}"),
                    })?;
                let page_tags = body.tags.unwrap_or_default();
                match etag {
                    Some(etag) => {
                        lock(&self.inner.pages).insert(
                            cache_key,
                            CachedPage {
                                etag,
                                tags: page_tags.clone(),
                                next: next.clone(),
                            },
                        );
                    }
                    None => {
                        lock(&self.inner.pages).remove(&cache_key);
                    }
                }
                (page_tags, next)
            } else {
                if status == StatusCode::BAD_REQUEST
                    && seen_pages == 1
                    && page_size > FALLBACK_PAGE_SIZE
                {
                    tracing::info!(host = %target.host, page_size, "registry refused the page size; using {FALLBACK_PAGE_SIZE}");
                    lock(&self.inner.hosts)
                        .entry(target.host.clone())
                        .or_default()
                        .page_size = Some(FALLBACK_PAGE_SIZE);
                    return Box::pin(self.list_tags_inner(target, deadline)).await.map(
                        |mut list| {
                            list.requests += requests;
                            list
                        },
                    );
                }
                let body = error_body(response).await;
                return Err(RegistryError::Http {
                    host: target.host.clone(),
                    url,
                    status: status.as_u16(),
                    body,
                });
            };
            tags.extend(page_tags);
            match next {
                Some(next) if next != url => {
                    // The distribution spec's Link is relative to the registry; a next page on
                    // another origin would get this registry's credentials. Refuse it.
                    if !reqwest::Url::parse(&next).is_ok_and(|u| target.same_origin(&u)) {
                        return Err(RegistryError::OtherHost {
                            host: target.host.clone(),
                            url: next,
                            what: "a Link to the next page at",
                        });
                    }
                    url = next;
                }
                _ => break,
            }
        }
        Ok(TagList {
            tags,
            requests,
            not_modified: all_cached,
        })
    }

    /// The digest of `tag` (`Docker-Content-Digest` of a HEAD; falls back to hashing a GET).
    pub async fn digest(
        &self,
        target: &Target,
        tag: &str,
        timeout: Duration,
    ) -> Result<String, RegistryError> {
        let deadline = Instant::now() + timeout;
        match tokio::time::timeout(timeout, self.digest_inner(target, tag, deadline)).await {
            Ok(result) => result,
            Err(_) => Err(RegistryError::Timeout {
                repository: format!("{}:{tag}", target.display()),
                timeout,
            }),
        }
    }

    async fn digest_inner(
        &self,
        target: &Target,
        tag: &str,
        deadline: Instant,
    ) -> Result<String, RegistryError> {
        let url = format!("{}/v2/{}/manifests/{tag}", target.base(), target.path);
        let mut requests = 0;
        let response = self
            .send(target, &url, deadline, &mut requests, |c| {
                c.head(&url).header(header::ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        if let Some(d) = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            return Ok(d.to_string());
        }
        let response = self
            .send(target, &url, deadline, &mut requests, |c| {
                c.get(&url).header(header::ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        let bytes =
            read_capped(response, self.inner.limits.max_manifest_body, &target.host).await?;
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
        Ok(format!("sha256:{}", hex::encode(d.as_ref())))
    }
}

fn basic_header(username: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
    )
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(3600)));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let secs = (when.timestamp() - chrono::Utc::now().timestamp()).clamp(0, 3600);
    Some(Duration::from_secs(secs as u64))
}

/// The `rel="next"` target of a `Link` header, resolved against the URL of the page it came
/// with (RFC 8288: relative references resolve against the request URL).
pub fn next_link(headers: &HeaderMap, page_url: &str) -> Option<String> {
    headers
        .get_all(header::LINK)
        .iter()
        .filter_map(|v: &HeaderValue| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|part| {
            let (target, params) = part.split_once(';')?;
            if !params.contains("rel=\"next\"") && !params.contains("rel=next") {
                return None;
            }
            let target = target.trim().trim_start_matches('<').trim_end_matches('>');
            let base = reqwest::Url::parse(page_url).ok()?;
            base.join(target).ok().map(String::from)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::LINK,
            HeaderValue::from_static("</v2/app/tags/list?last=b&n=2>; rel=\"next\""),
        );
        assert_eq!(
            next_link(&h, "http://r:5000/v2/app/tags/list?n=2").as_deref(),
            Some("http://r:5000/v2/app/tags/list?last=b&n=2")
        );
        assert_eq!(next_link(&HeaderMap::new(), "http://r"), None);
        // Absolute and protocol-relative links resolve to their own host (then refused by the
        // caller when that is not the registry).
        let mut h = HeaderMap::new();
        h.insert(
            header::LINK,
            HeaderValue::from_static("<//evil.example/v2/x?last=b>; rel=\"next\""),
        );
        assert_eq!(
            next_link(&h, "https://r/v2/app/tags/list").as_deref(),
            Some("https://evil.example/v2/x?last=b")
        );
    }

    #[test]
    fn realms_and_origins() {
        let creds = Credentials::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        let remote = Target::new("ghcr.io/org/app", creds.clone(), ConnectOptions::default());
        assert!(check_realm(&remote, "https://ghcr.io/token").is_ok());
        assert!(check_realm(&remote, "https://auth.example/token").is_ok());
        // Plain-http realm for an https registry: refused.
        assert!(matches!(
            check_realm(&remote, "http://ghcr.io/token"),
            Err(RegistryError::OtherHost { .. })
        ));
        assert!(check_realm(&remote, "https://user:pw@ghcr.io/token").is_err());
        let local = Target::new("127.0.0.1:5000/app", creds, ConnectOptions::default());
        assert!(check_realm(&local, "http://127.0.0.1:5000/token").is_ok());
        assert!(check_realm(&local, "http://127.0.0.1:5001/token").is_err());
        assert!(check_realm(&local, "http://127.0.0.2:5000/token").is_err());
        assert!(check_realm(&local, "ftp://127.0.0.1:5000/token").is_err());
        let a = reqwest::Url::parse("https://r.example/v2/").unwrap();
        assert!(same_origin(
            &a,
            &reqwest::Url::parse("https://r.example:443/x").unwrap()
        ));
        assert!(!same_origin(
            &a,
            &reqwest::Url::parse("http://r.example/x").unwrap()
        ));
        assert!(!same_origin(
            &a,
            &reqwest::Url::parse("https://r.example:444/x").unwrap()
        ));
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
    }
}
