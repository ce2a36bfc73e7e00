//! Webhook receivers: verify a push event from a git host (GitHub, GitLab, Gitea, Bitbucket), a
//! container registry (Docker Hub, Harbor) or a generic sender against the Receiver's secret,
//! then ask the matching GitSources to fetch, or ImageRepositories to scan, at once (by setting
//! their reconcile-request annotation, which whichever replica leads picks up). What a Receiver
//! may trigger is read by `ferry_api::ReceiverSpec::targets`: only objects in its own
//! namespace, found by listing that namespace (never by a name used as a path).
//!
//! Requests come from anyone on the network, so nothing they carry drives an API read before
//! they are verified: Receivers and their tokens are kept in memory by [`ReceiverKeys`] (a watch
//! of Receivers plus a background read of each one's Secret), and an unknown receiver, a
//! receiver without a usable secret and a wrong signature all get the same answer
//! ([`Rejection::unauthorized`]) after the same HMAC work. Verified requests are checked for
//! replays (delivery ids and signatures remembered per receiver; a signed timestamp for
//! generic-hmac) before the payload is parsed. Secrets never reach logs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::controllers::image_automation::ScanTrigger;
use aws_lc_rs::hmac;
use axum::http::{HeaderMap, StatusCode};
use ferry_api::common::RECONCILE_REQUESTED_AT;
use ferry_api::images::ImageRepository;
use ferry_api::receiver::{InvalidResource, Selection, Targets};
use ferry_api::{GitSource, Receiver, ReceiverType};
use ferry_images::webhook::{RegistryEvent, WebhookError};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The one answer for every request that is not verified: unknown receiver, namespace not
/// watched, secret missing, signature or token missing or wrong, timestamp outside the window.
/// One status and one body, so a prober learns nothing about which receivers exist.
pub const UNAUTHORIZED_BODY: &str =
    "webhook not accepted: unknown receiver, or a missing or wrong signature or token";

/// Deliveries remembered per receiver for replay detection.
pub const REPLAY_MEMORY: usize = 1024;

/// How far a signed `X-Timestamp` (generic-hmac) may be from the agent's clock.
pub const TIMESTAMP_WINDOW: Duration = Duration::from_secs(300);

/// How often the background task re-reads Secrets of known Receivers (token rotation).
const SECRET_REFRESH: Duration = Duration::from_secs(60);
/// How often receivers whose Secret was missing are retried.
const SECRET_RETRY: Duration = Duration::from_secs(5);

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

    /// The uniform answer to anything unverified (see [`UNAUTHORIZED_BODY`]).
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, UNAUTHORIZED_BODY)
    }
}

/// What a verified request did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Accepted {
    pub event: String,
    pub triggered: Vec<String>,
}

/// A token that is wiped from memory when dropped.
struct Token(zeroize::Zeroizing<Vec<u8>>);

impl Token {
    fn new(bytes: Vec<u8>) -> Self {
        Self(zeroize::Zeroizing::new(bytes))
    }
}

/// One Receiver as the HTTP side knows it.
struct Known {
    kind: ReceiverType,
    /// `spec.resources` as read when the Receiver last changed (an invalid entry refuses every
    /// verified request with the reason).
    targets: Result<Targets, InvalidResource>,
    secret: String,
    token: Option<Arc<Token>>,
    fetched: Option<Instant>,
}

/// Delivery ids and signatures recently accepted by one receiver (bounded, oldest out first).
#[derive(Default)]
struct Seen {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl Seen {
    /// False when any key was seen already; otherwise remembers all of them.
    fn insert_all(&mut self, keys: &[String]) -> bool {
        if keys.iter().any(|k| self.set.contains(k)) {
            return false;
        }
        for k in keys {
            self.set.insert(k.clone());
            self.order.push_back(k.clone());
            while self.order.len() > REPLAY_MEMORY {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
        true
    }

    fn remove_all(&mut self, keys: &[String]) {
        for k in keys {
            self.set.remove(k);
        }
        self.order.retain(|k| !keys.contains(k));
    }
}

type Key = (String, String);

/// Receivers and their tokens, kept current in the background so that requests are verified
/// without any API read ([`ReceiverKeys::run`]).
#[derive(Clone)]
pub struct ReceiverKeys {
    known: Arc<RwLock<HashMap<Key, Known>>>,
    seen: Arc<Mutex<HashMap<Key, Seen>>>,
    /// HMAC key for unknown receivers: the same verification work, never a match.
    decoy: Arc<Token>,
    /// True once the first list of Receivers is in.
    ready: Arc<std::sync::atomic::AtomicBool>,
    /// Reads each Receiver's Secret as its namespace's tenant identity (never the agent's own);
    /// `None` (tests, embedding): the client given to [`ReceiverKeys::run`].
    tenants: Option<Arc<crate::context::TenantClients>>,
}

impl Default for ReceiverKeys {
    fn default() -> Self {
        let decoy: [u8; 32] = rand::random();
        let decoy = decoy.to_vec();
        Self {
            known: Arc::default(),
            seen: Arc::default(),
            decoy: Arc::new(Token::new(decoy)),
            ready: Arc::default(),
            tenants: None,
        }
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ReceiverKeys {
    /// Read Receivers' Secrets through `tenants` (as each Receiver's namespace).
    pub fn with_tenants(mut self, tenants: Arc<crate::context::TenantClients>) -> Self {
        self.tenants = Some(tenants);
        self
    }

    /// True once the Receivers have been listed (the server answers before that, rejecting).
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lookup(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<(ReceiverType, Result<Targets, InvalidResource>, Arc<Token>)> {
        let known = read(&self.known);
        let k = known.get(&(namespace.to_string(), name.to_string()))?;
        Some((k.kind, k.targets.clone(), k.token.clone()?))
    }

    /// Whether `namespace/name` is a known Receiver (for metrics labels: unknown names are not
    /// turned into label values, which an attacker could otherwise multiply at will).
    pub fn is_known(&self, namespace: &str, name: &str) -> bool {
        read(&self.known).contains_key(&(namespace.to_string(), name.to_string()))
    }

    /// Watch Receivers in `namespaces` (empty: all) and keep their tokens, until `shutdown`.
    /// Runs on every replica (webhooks reach any of them), independent of leadership.
    pub async fn run(self, client: Client, namespaces: Vec<String>, shutdown: CancellationToken) {
        let apis: Vec<Api<Receiver>> = if namespaces.is_empty() {
            vec![Api::all(client.clone())]
        } else {
            namespaces
                .iter()
                .map(|ns| Api::namespaced(client.clone(), ns))
                .collect()
        };
        let mut events = crate::watch::merged_watch(apis, watcher::Config::default());
        let mut relist: Option<HashSet<Key>> = None;
        let mut tick = tokio::time::interval(SECRET_RETRY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.refresh(&client).await,
                event = events.next() => match event {
                    None => return,
                    Some(Err(e)) => tracing::debug!("Receiver watch for webhooks: {e}"),
                    Some(Ok(Event::Init)) => relist = Some(HashSet::new()),
                    Some(Ok(Event::InitApply(r))) => {
                        if let Some(set) = relist.as_mut() {
                            set.insert(key(&r));
                        }
                        self.upsert(&client, &r).await;
                    }
                    Some(Ok(Event::InitDone)) => {
                        if let Some(set) = relist.take() {
                            let mut known = write(&self.known);
                            known.retain(|k, _| set.contains(k));
                            lock(&self.seen).retain(|k, _| set.contains(k));
                        }
                        self.ready.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    Some(Ok(Event::Apply(r))) => self.upsert(&client, &r).await,
                    Some(Ok(Event::Delete(r))) => {
                        write(&self.known).remove(&key(&r));
                        lock(&self.seen).remove(&key(&r));
                    }
                },
            }
        }
    }

    async fn upsert(&self, client: &Client, r: &Receiver) {
        let k = key(r);
        let secret = r.spec.secret_ref.name.clone();
        {
            let mut known = write(&self.known);
            let entry = known.entry(k.clone()).or_insert_with(|| Known {
                kind: r.spec.kind,
                targets: Ok(Targets::default()),
                secret: secret.clone(),
                token: None,
                fetched: None,
            });
            if entry.secret != secret || entry.kind != r.spec.kind {
                entry.token = None;
                entry.fetched = None;
            }
            entry.kind = r.spec.kind;
            entry.targets = r.spec.targets();
            entry.secret = secret.clone();
        }
        self.fetch(client, &k, &secret).await;
    }

    /// Re-read Secrets that are missing (every few seconds) or old (token rotation).
    async fn refresh(&self, client: &Client) {
        let due: Vec<(Key, String)> = read(&self.known)
            .iter()
            .filter(|(_, k)| match (k.fetched, &k.token) {
                (Some(at), Some(_)) => at.elapsed() >= SECRET_REFRESH,
                _ => true,
            })
            .map(|(key, k)| (key.clone(), k.secret.clone()))
            .collect();
        for (key, secret) in due {
            self.fetch(client, &key, &secret).await;
        }
    }

    async fn fetch(&self, client: &Client, key: &Key, secret: &str) {
        let client = match &self.tenants {
            Some(tenants) => match tenants.secret_reader(&key.0) {
                Ok((client, _)) => client,
                Err(e) => {
                    tracing::warn!(receiver = %format!("{}/{}", key.0, key.1), "cannot read the receiver's Secret: {e}");
                    return;
                }
            },
            None => client.clone(),
        };
        let secrets: Api<Secret> = Api::namespaced(client, &key.0);
        let token = match secrets.get_opt(secret).await {
            Ok(found) => found
                .and_then(|s| s.data)
                .and_then(|d| d.get("token").map(|v| trim_newline(&v.0).to_vec()))
                .filter(|t| !t.is_empty())
                .map(|t| Arc::new(Token::new(t))),
            Err(e) => {
                tracing::warn!(receiver = %format!("{}/{}", key.0, key.1), %secret, "cannot read the receiver's Secret: {e}");
                return;
            }
        };
        if token.is_none() {
            tracing::debug!(receiver = %format!("{}/{}", key.0, key.1), %secret, "receiver Secret missing or has no `token` key");
        }
        if let Some(k) = write(&self.known).get_mut(key)
            && k.secret == secret
        {
            k.token = token;
            k.fetched = Some(Instant::now());
        }
    }

    /// Remember the replay keys of an accepted delivery; false when one was seen before.
    fn remember(&self, key: &Key, replay: &[String]) -> bool {
        replay.is_empty()
            || lock(&self.seen)
                .entry(key.clone())
                .or_default()
                .insert_all(replay)
    }

    fn forget(&self, key: &Key, replay: &[String]) {
        if let Some(seen) = lock(&self.seen).get_mut(key) {
            seen.remove_all(replay);
        }
    }
}

fn key(r: &Receiver) -> Key {
    (r.namespace().unwrap_or_default(), r.name_any())
}

/// Handle `POST /hook/<namespace>/<name>[?token=<token>]` (the URL token is read by dockerhub
/// Receivers only: Docker Hub can neither sign nor set headers).
pub async fn handle(
    client: &Client,
    keys: &ReceiverKeys,
    namespace: &str,
    name: &str,
    url_token: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Accepted, Rejection> {
    let receiver = format!("{namespace}/{name}");
    // No API read before this point: the receiver and its token come from memory, and an
    // unknown receiver costs the same HMAC as a known one.
    let (kind, targets) = match keys.lookup(namespace, name) {
        Some((kind, targets, token)) => {
            let request = Request {
                headers,
                url_token,
                body,
            };
            if let Err(why) = verify_request(kind, &request, &token.0, now_unix()) {
                tracing::info!(%receiver, "webhook rejected: {}", why.message);
                return Err(Rejection::unauthorized());
            }
            (kind, targets)
        }
        None => {
            let _ = verify(
                ReceiverType::Github,
                headers,
                body,
                &keys.decoy.0,
                now_unix(),
            );
            tracing::info!(%receiver, "webhook rejected: no such receiver, or its Secret has no usable `token`");
            return Err(Rejection::unauthorized());
        }
    };
    let replay = replay_keys(kind, headers, body);
    let key = (namespace.to_string(), name.to_string());
    if !keys.remember(&key, &replay) {
        tracing::warn!(%receiver, "webhook rejected: replayed delivery");
        return Err(Rejection::new(
            StatusCode::CONFLICT,
            "this delivery was already accepted (same delivery id or signature); ignored",
        ));
    }
    let result = process(client, namespace, &receiver, kind, &targets, headers, body).await;
    if result.is_err() {
        // Not processed: a redelivery of the same event must work.
        keys.forget(&key, &replay);
    }
    result
}

async fn process(
    client: &Client,
    namespace: &str,
    receiver: &str,
    kind: ReceiverType,
    targets: &Result<Targets, InvalidResource>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Accepted, Rejection> {
    let targets = targets.as_ref().map_err(|invalid| {
        tracing::warn!(%receiver, "webhook refused: {invalid}");
        Rejection::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Receiver {receiver}: {invalid}; nothing was triggered, fix the Receiver"),
        )
    })?;
    let event = event_name(kind, headers, body);
    if matches!(event.as_str(), "ping" | "diagnostics:ping") {
        return Ok(Accepted {
            event,
            triggered: Vec::new(),
        });
    }
    let mut triggered = Vec::new();
    if !targets.git_sources.is_none() && is_push(kind, &event) {
        triggered.extend(fetch_git_sources(client, namespace, &targets.git_sources, body).await?);
    }
    if !targets.image_repositories.is_none() {
        triggered.extend(
            scan_image_repositories(client, namespace, kind, &targets.image_repositories, body)
                .await?,
        );
    }
    tracing::info!(%receiver, %event, triggered = ?triggered, "webhook accepted");
    Ok(Accepted { event, triggered })
}

/// Ask the selected GitSources of `namespace` to fetch now (those the payload's repository URL
/// names, for [`Selection::ByEvent`]); returns their names.
async fn fetch_git_sources(
    client: &Client,
    namespace: &str,
    selection: &Selection,
    body: &[u8],
) -> Result<Vec<String>, Rejection> {
    let repo_urls = parse_payload(body)?;
    let sources: Api<GitSource> = Api::namespaced(client.clone(), namespace);
    let all = sources.list(&ListParams::default()).await.map_err(|e| {
        tracing::warn!("cannot list GitSources in {namespace}: {e}");
        Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "cannot list sources")
    })?;
    let targets: Vec<&GitSource> = all
        .items
        .iter()
        .filter(|gs| match selection {
            Selection::ByEvent => repo_urls.contains(&normalize_url(&gs.spec.url)),
            other => other.includes(&gs.name_any()),
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
    Ok(triggered)
}

/// The images a (verified) registry or generic payload announces. `None`: not a push (a Harbor
/// delete or scan event, a git host's payload), nothing to scan. `Some(empty)`: a generic
/// request that names no image, meaning "scan every ImageRepository the Receiver lists".
pub fn registry_events(
    kind: ReceiverType,
    body: &[u8],
) -> Result<Option<Vec<RegistryEvent>>, Rejection> {
    let bad = |e: WebhookError| {
        Rejection::new(
            StatusCode::BAD_REQUEST,
            format!("{} payload: {e}", kind.as_str()),
        )
    };
    match kind {
        ReceiverType::Dockerhub => ferry_images::webhook::parse_dockerhub(body)
            .map(Some)
            .map_err(bad),
        // Harbor sends deletes, scans and quota events too; those parse to nothing.
        ReceiverType::Harbor => ferry_images::webhook::parse_harbor(body)
            .map(|events| (!events.is_empty()).then_some(events))
            .map_err(bad),
        ReceiverType::Generic | ReceiverType::GenericHmac => {
            ferry_images::webhook::parse_generic(body)
                .map(Some)
                .map_err(bad)
        }
        ReceiverType::Github
        | ReceiverType::Gitlab
        | ReceiverType::Gitea
        | ReceiverType::Bitbucket => Ok(None),
    }
}

/// Ask the selected ImageRepositories of `namespace` whose image the payload announces to scan
/// now (all selected ones when a generic payload names no image). An image that no selected
/// ImageRepository watches is accepted and ignored: a Harbor project or a Docker Hub
/// organisation sends events for every repository in it. Returns `ImageRepository/<name>`s.
async fn scan_image_repositories(
    client: &Client,
    namespace: &str,
    kind: ReceiverType,
    selection: &Selection,
    body: &[u8],
) -> Result<Vec<String>, Rejection> {
    let Some(events) = registry_events(kind, body)? else {
        return Ok(Vec::new());
    };
    if events.is_empty() && matches!(selection, Selection::ByEvent) {
        return Ok(Vec::new());
    }
    let api: Api<ImageRepository> = Api::namespaced(client.clone(), namespace);
    let all = api.list(&ListParams::default()).await.map_err(|e| {
        tracing::warn!("cannot list ImageRepositories in {namespace}: {e}");
        Rejection::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot list image repositories",
        )
    })?;
    let scans = ScanTrigger::new(client.clone());
    let mut triggered = Vec::new();
    for repo in &all.items {
        let name = repo.name_any();
        let announced =
            events.is_empty() || events.iter().any(|event| event.names(&repo.spec.image));
        if !selection.includes(&name) || !announced {
            continue;
        }
        match scans.trigger(namespace, &name).await {
            Ok(()) => triggered.push(format!("ImageRepository/{name}")),
            Err(e) => tracing::warn!(repository = %name, "cannot request a scan: {e}"),
        }
    }
    Ok(triggered)
}

/// The repository URLs a (verified) push payload names; an empty body names none.
pub fn parse_payload(body: &[u8]) -> Result<Vec<String>, Rejection> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let payload: Value = serde_json::from_slice(body)
        .map_err(|_| Rejection::new(StatusCode::BAD_REQUEST, "payload is not JSON"))?;
    Ok(repository_urls(&payload))
}

/// What identifies a delivery for replay detection: the sender's delivery id header, for HMAC
/// senders the signature (the same signed body again is the same event, whatever id a replayer
/// puts in the unsigned headers), and for registries, which send neither, a digest of the body
/// (Docker Hub's and Harbor's payloads carry the push time, so a new push is a new body).
pub fn replay_keys(kind: ReceiverType, headers: &HeaderMap, body: &[u8]) -> Vec<String> {
    let mut keys = Vec::new();
    let ids: &[&str] = match kind {
        ReceiverType::Github => &["x-github-delivery"],
        ReceiverType::Gitea => &["x-gitea-delivery"],
        ReceiverType::Gitlab => &["x-gitlab-event-uuid"],
        ReceiverType::Bitbucket => &["x-request-uuid", "x-request-id"],
        ReceiverType::Generic | ReceiverType::GenericHmac => &["x-delivery-id"],
        ReceiverType::Dockerhub | ReceiverType::Harbor => &[],
    };
    for name in ids {
        if let Some(id) = header(headers, name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            keys.push(format!("id:{id}"));
        }
    }
    let signature = match kind {
        ReceiverType::Github => header(headers, "x-hub-signature-256"),
        ReceiverType::Gitea => {
            header(headers, "x-gitea-signature").or_else(|| header(headers, "x-hub-signature-256"))
        }
        ReceiverType::Bitbucket => header(headers, "x-hub-signature"),
        ReceiverType::GenericHmac => header(headers, "x-signature"),
        ReceiverType::Gitlab
        | ReceiverType::Generic
        | ReceiverType::Dockerhub
        | ReceiverType::Harbor => None,
    };
    if let Some(sig) = signature {
        let hex = sig.trim().rsplit('=').next().unwrap_or_default();
        keys.push(format!("sig:{}", hex.to_ascii_lowercase()));
    }
    if kind.is_registry() {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
        keys.push(format!("body:{}", hex::encode(digest.as_ref())));
    }
    keys
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
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

/// What a webhook request brings to verification.
pub struct Request<'a> {
    pub headers: &'a HeaderMap,
    /// The `token` query parameter, percent-decoded (dockerhub Receivers only).
    pub url_token: Option<&'a str>,
    pub body: &'a [u8],
}

/// [`verify_request`] for a request without a URL token.
pub fn verify(
    kind: ReceiverType,
    headers: &HeaderMap,
    body: &[u8],
    token: &[u8],
    now: i64,
) -> Result<(), Rejection> {
    let request = Request {
        headers,
        url_token: None,
        body,
    };
    verify_request(kind, &request, token, now)
}

/// Check the request's signature or token. Constant-time comparisons throughout. For
/// generic-hmac, an `X-Timestamp: <unix seconds>` header means the signature covers
/// `<timestamp>.<body>` and the timestamp must be within [`TIMESTAMP_WINDOW`] of `now`.
/// Docker Hub signs nothing and sets no headers, so a dockerhub Receiver's token is the
/// `?token=` URL parameter (Flux puts a secret in the URL path for the same reason); Harbor
/// sends its policy's auth header as `Authorization`.
pub fn verify_request(
    kind: ReceiverType,
    request: &Request<'_>,
    token: &[u8],
    now: i64,
) -> Result<(), Rejection> {
    let (headers, body) = (request.headers, request.body);
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
        ReceiverType::GenericHmac => {
            let Some(sig) = header(headers, "x-signature") else {
                return unauthorized("missing X-Signature");
            };
            match header(headers, "x-timestamp") {
                None => check_hmac(sig.strip_prefix("sha256="), body, token),
                Some(ts) => {
                    let mut signed = Vec::with_capacity(ts.len() + 1 + body.len());
                    signed.extend_from_slice(ts.as_bytes());
                    signed.push(b'.');
                    signed.extend_from_slice(body);
                    check_hmac(sig.strip_prefix("sha256="), &signed, token)?;
                    let Ok(at) = ts.trim().parse::<i64>() else {
                        return unauthorized("X-Timestamp is not unix seconds");
                    };
                    if now.abs_diff(at) > TIMESTAMP_WINDOW.as_secs() {
                        return unauthorized(
                            "X-Timestamp is outside the accepted window (5 minutes)",
                        );
                    }
                    Ok(())
                }
            }
        }
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
        ReceiverType::Dockerhub => match request.url_token {
            Some(given) if constant_eq(given.as_bytes(), token) => Ok(()),
            _ => unauthorized("missing or wrong ?token= in the URL"),
        },
        ReceiverType::Harbor => {
            ferry_images::webhook::verify_harbor(token, header(headers, "authorization"))
                .or_else(|_| unauthorized("missing or wrong Authorization (Harbor auth header)"))
        }
    }
}

fn check_hmac(hex_sig: Option<&str>, body: &[u8], token: &[u8]) -> Result<(), Rejection> {
    // The HMAC is computed even for a malformed header, so that the time taken does not tell
    // a well-formed guess from a malformed one.
    let key = hmac::Key::new(hmac::HMAC_SHA256, token);
    let expected = hmac::sign(&key, body);
    let Some(sig) = hex_sig.and_then(|s| hex::decode(s.trim()).ok()) else {
        return Err(Rejection::new(
            StatusCode::UNAUTHORIZED,
            "malformed signature",
        ));
    };
    aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_ref(), &sig)
        .map_err(|_| Rejection::new(StatusCode::UNAUTHORIZED, "signature mismatch"))
}

/// Compare HMACs of both sides so timing reveals nothing about the token (one implementation,
/// shared with the registry webhooks).
fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    ferry_images::webhook::constant_time_eq(a, b)
}

/// The event name the sender put in its headers (Harbor: in the payload's `type`; `push` for
/// Docker Hub, which sends only pushes, and for the generic types).
fn event_name(kind: ReceiverType, headers: &HeaderMap, body: &[u8]) -> String {
    let harbor_type;
    let name = match kind {
        ReceiverType::Github => header(headers, "x-github-event"),
        ReceiverType::Gitlab => header(headers, "x-gitlab-event"),
        ReceiverType::Gitea => header(headers, "x-gitea-event"),
        ReceiverType::Bitbucket => header(headers, "x-event-key"),
        ReceiverType::Harbor => {
            harbor_type = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_string));
            harbor_type.as_deref()
        }
        ReceiverType::Generic | ReceiverType::GenericHmac | ReceiverType::Dockerhub => Some("push"),
    };
    name.unwrap_or("push").to_ascii_lowercase()
}

fn is_push(kind: ReceiverType, event: &str) -> bool {
    match kind {
        ReceiverType::Github | ReceiverType::Gitea => matches!(event, "push" | "create"),
        ReceiverType::Gitlab => matches!(event, "push hook" | "tag push hook"),
        ReceiverType::Bitbucket => matches!(event, "repo:refs_changed" | "repo:push"),
        ReceiverType::Generic | ReceiverType::GenericHmac => true,
        ReceiverType::Dockerhub => true,
        ReceiverType::Harbor => matches!(event, "push_artifact" | "pushimage"),
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
        assert!(verify(ReceiverType::Github, &ok, body, b"s3cret", 0).is_ok());
        let wrong_key = signed("x-hub-signature-256", "sha256=", body, b"other");
        let err = verify(ReceiverType::Github, &wrong_key, body, b"s3cret", 0).unwrap_err();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
        assert!(verify(ReceiverType::Github, &HeaderMap::new(), body, b"s3cret", 0).is_err());
        // A tampered body fails with the original signature.
        assert!(verify(ReceiverType::Github, &ok, b"{}", b"s3cret", 0).is_err());
    }

    #[test]
    fn token_types() {
        let mut h = HeaderMap::new();
        h.insert("x-gitlab-token", HeaderValue::from_static("tok"));
        assert!(verify(ReceiverType::Gitlab, &h, b"", b"tok", 0).is_ok());
        assert!(verify(ReceiverType::Gitlab, &h, b"", b"tok2", 0).is_err());
        let mut g = HeaderMap::new();
        g.insert("authorization", HeaderValue::from_static("Bearer tok"));
        assert!(verify(ReceiverType::Generic, &g, b"", b"tok", 0).is_ok());
        assert!(verify(ReceiverType::Generic, &HeaderMap::new(), b"", b"tok", 0).is_err());
        let gitea = signed("x-gitea-signature", "", b"x", b"k");
        assert!(verify(ReceiverType::Gitea, &gitea, b"x", b"k", 0).is_ok());
        let bb = signed("x-hub-signature", "sha256=", b"x", b"k");
        assert!(verify(ReceiverType::Bitbucket, &bb, b"x", b"k", 0).is_ok());
    }

    /// Gitea signs twice (`X-Gitea-Signature: <hex>` and `X-Hub-Signature-256: sha256=<hex>`)
    /// and names the event in both its own and GitHub's headers.
    fn gitea_headers(body: &[u8], key: &[u8]) -> HeaderMap {
        let mut headers = signed("x-gitea-signature", "", body, key);
        let hub = signed("x-hub-signature-256", "sha256=", body, key);
        headers.extend(hub);
        headers.insert("x-gitea-event", HeaderValue::from_static("push"));
        headers.insert("x-github-event", HeaderValue::from_static("push"));
        headers
    }

    #[test]
    fn gitea_deliveries_verify_as_gitea_and_as_github() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let headers = gitea_headers(body, b"k");
        assert!(verify(ReceiverType::Gitea, &headers, body, b"k", 0).is_ok());
        assert!(verify(ReceiverType::Github, &headers, body, b"k", 0).is_ok());
        assert_eq!(event_name(ReceiverType::Gitea, &headers, body), "push");
        assert!(is_push(ReceiverType::Gitea, "push"));
        // Signed with another secret, or not signed at all (a Gitea webhook without a secret
        // sends an empty signature): refused.
        let forged = gitea_headers(body, b"other");
        assert!(verify(ReceiverType::Gitea, &forged, body, b"k", 0).is_err());
        let mut empty = HeaderMap::new();
        empty.insert("x-gitea-signature", HeaderValue::from_static(""));
        assert!(verify(ReceiverType::Gitea, &empty, body, b"k", 0).is_err());
        assert!(verify(ReceiverType::Gitea, &HeaderMap::new(), body, b"k", 0).is_err());
        // X-Gitea-Signature is the one checked when present: a right GitHub-style signature
        // does not rescue a wrong Gitea one.
        let mut mixed = signed("x-gitea-signature", "", body, b"other");
        mixed.extend(signed("x-hub-signature-256", "sha256=", body, b"k"));
        assert!(verify(ReceiverType::Gitea, &mixed, body, b"k", 0).is_err());
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
