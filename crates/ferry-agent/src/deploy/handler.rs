//! `POST /deploy/v1/<namespace>/<release>`: a deploy request from CI. Order of checks, each
//! refusal with its own status and a message naming the rule:
//!
//! 1. body shape and size (400/413), the Release name (400);
//! 2. the token (401; 413 when oversized; 502 when the issuer's keys cannot be read), verified
//!    only against issuers named by DeployPolicies of the namespace ([`super::verify`]);
//! 3. the policies (403, every policy's reason), replay (409);
//! 4. the Release (404, or 409 when suspended), then the answer turns into a stream
//!    (`application/x-ndjson`, one JSON object per line): the commit is fetched with history and
//!    the reachability and rollback rules checked (a refusal is the stream's final `result`),
//!    the request waits its turn ([`super::queue`]), pins the Release
//!    ([`ferry_api::deploy::DEPLOY_REVISION`]) and follows the Release controller's run until
//!    `status.lastHandledDeployRequest` names it.
//!
//! Nothing a request carries drives an API read before its token is verified: the policies come
//! from a watch ([`super::DeployService::run`]). Unverified requests are counted and logged, not
//! published as Events (anyone could otherwise write Events into a namespace); verified ones
//! are Events on the Release.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_api::Release;
use ferry_api::common::{READY, RECONCILE_REQUESTED_AT};
use ferry_api::deploy::{DEPLOY_IMAGES, DEPLOY_REQUEST, DEPLOY_REVISION};
use ferry_engine::source::git::history::{Reach, Relation};
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::policy::{self, Ask, CommitRules, Reachability};
use super::verify::TokenError;
use super::{DeployService, RequestResult};
use crate::http::HttpState;

/// Largest request body (a commit and a few image overrides).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// At most this many image overrides per request.
pub const MAX_IMAGES: usize = 32;
/// Extra time over the Release's own timeout to wait for the controller to finish.
const RESULT_GRACE: Duration = Duration::from_secs(60);

/// The request body.
#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeployRequest {
    /// Full 40-digit commit SHA-1.
    pub revision: String,
    /// `NAME=IMAGE` overrides (`ferry apply --set-image` syntax).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
}

/// How a deploy ended (the `outcome` of the final `result` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Succeeded,
    /// Objects failed to apply (or the render failed).
    Failed,
    /// Health did not arrive within the Release's timeout.
    TimedOut,
    /// A policy rule refused the commit (reachability, rollback), or the request was invalid.
    Refused,
    /// A newer request for the same Release replaced this one before it ran.
    Superseded,
}

fn refuse(
    state: &HttpState,
    namespace: &str,
    status: StatusCode,
    result: &str,
    message: String,
) -> Response {
    if let Some(service) = &state.deploy {
        service.count(namespace, RequestResult::Refused, result);
    }
    tracing::info!(%namespace, %status, "deploy request refused: {message}");
    (status, format!("{message}\n")).into_response()
}

fn token_status(err: &TokenError) -> (StatusCode, &'static str) {
    match err {
        TokenError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "invalid"),
        TokenError::Keys { .. } => (StatusCode::BAD_GATEWAY, "issuer-unreachable"),
        TokenError::Replayed => (StatusCode::CONFLICT, "replayed"),
        _ => (StatusCode::UNAUTHORIZED, "unauthenticated"),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

pub async fn deploy(
    State(state): State<HttpState>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(service) = state.deploy.clone() else {
        return (
            StatusCode::NOT_FOUND,
            "deploy requests are not served by this agent\n",
        )
            .into_response();
    };
    if !valid_name(&namespace) || !valid_name(&name) {
        return refuse(
            &state,
            "",
            StatusCode::BAD_REQUEST,
            "invalid",
            "the namespace and Release name must be Kubernetes names".to_string(),
        );
    }
    let watched = service.options.watch_namespaces.is_empty()
        || service.options.watch_namespaces.contains(&namespace);
    if body.len() > MAX_BODY_BYTES {
        return refuse(
            &state,
            "",
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid",
            format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        );
    }
    let request: DeployRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                &state,
                "",
                StatusCode::BAD_REQUEST,
                "invalid",
                format!(
                    "the body must be JSON {{\"revision\": \"<40-hex commit>\", \"images\": [\"NAME=IMAGE\"]}}: {e}"
                ),
            );
        }
    };
    let revision_ok =
        request.revision.len() == 40 && request.revision.bytes().all(|b| b.is_ascii_hexdigit());
    if !revision_ok {
        return refuse(
            &state,
            "",
            StatusCode::BAD_REQUEST,
            "invalid",
            format!(
                "revision {:?} is not a full 40-digit commit SHA-1 (send `git rev-parse HEAD`)",
                request.revision.chars().take(64).collect::<String>()
            ),
        );
    }
    if request.images.len() > MAX_IMAGES {
        return refuse(
            &state,
            "",
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("at most {MAX_IMAGES} image overrides"),
        );
    }
    if let Err(e) = ferry_engine::render::set_image::parse_all(&request.images) {
        return refuse(
            &state,
            "",
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("images: {e}"),
        );
    }
    let token = match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        Some(t) => t.trim().to_string(),
        None => {
            return refuse(
                &state,
                "",
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                TokenError::Missing.to_string(),
            );
        }
    };
    // Which issuers may be asked: only those the namespace's policies name.
    let peeked = match super::verify::peek(&token) {
        Ok(p) => p,
        Err(e) => {
            let (status, result) = token_status(&e);
            return refuse(&state, "", status, result, e.to_string());
        }
    };
    let policies = if watched {
        service.policies_in(&namespace)
    } else {
        Vec::new()
    };
    let issuers = policy::issuers_for(&policies, &peeked.issuer);
    if issuers.is_empty() {
        let e = TokenError::UntrustedIssuer(peeked.issuer);
        return refuse(
            &state,
            "",
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            e.to_string(),
        );
    }
    // From here on the namespace has policies: a bounded set, fit for a metric label.
    let audiences = policy::audiences_for(&policies, &issuers[0].issuer);
    let mut verified = Err(TokenError::Missing);
    for issuer in &issuers {
        verified = service.verifier.verify(&token, issuer, &audiences).await;
        if verified.is_ok() {
            break;
        }
    }
    let verified = match verified {
        Ok(v) => v,
        Err(e) => {
            let (status, result) = token_status(&e);
            return refuse(&state, &namespace, status, result, e.to_string());
        }
    };
    let ask = Ask {
        release: &name,
        overrides_images: !request.images.is_empty(),
    };
    let release_api: Api<Release> = Api::namespaced(service.client.clone(), &namespace);
    let rules = match policy::admit(&policies, &verified, &ask) {
        Ok(rules) => rules,
        Err(denied) => {
            let message = format!(
                "deploy of Release {namespace}/{name} by {} refused: {denied}",
                verified.subject
            );
            if let Ok(Some(release)) = release_api.get_opt(&name).await {
                service
                    .event(&release, EventType::Warning, "DeployDenied", &message)
                    .await;
            }
            return refuse(&state, &namespace, StatusCode::FORBIDDEN, "denied", message);
        }
    };
    if !service.replay.consume(&verified) {
        return refuse(
            &state,
            &namespace,
            StatusCode::CONFLICT,
            "replayed",
            TokenError::Replayed.to_string(),
        );
    }
    let release = match release_api.get_opt(&name).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return refuse(
                &state,
                &namespace,
                StatusCode::NOT_FOUND,
                "invalid",
                format!("Release {namespace}/{name} not found"),
            );
        }
        Err(e) => {
            return refuse(
                &state,
                &namespace,
                StatusCode::SERVICE_UNAVAILABLE,
                "error",
                format!("cannot read Release {namespace}/{name}: {e}"),
            );
        }
    };
    if release.spec.suspend {
        return refuse(
            &state,
            &namespace,
            StatusCode::CONFLICT,
            "suspended",
            format!(
                "Release {namespace}/{name} is suspended; `ferry resume release {name} -n {namespace}` first"
            ),
        );
    }
    let id = format!("{:032x}", rand::random::<u128>());
    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    let _ = tx.send(json!({
        "event": "accepted",
        "request": id,
        "release": format!("{namespace}/{name}"),
        "revision": request.revision,
        "policy": rules.policy,
        "subject": verified.subject,
    }));
    service
        .event(
            &release,
            EventType::Normal,
            "DeployAccepted",
            &format!(
                "deploy request {id} of commit {} by {} (DeployPolicy {})",
                request.revision, verified.subject, rules.policy
            ),
        )
        .await;
    let task = Run {
        service: service.clone(),
        release,
        id,
        commit: request.revision,
        images: request.images,
        rules,
        tx,
    };
    tokio::spawn(task.run());
    let stream = lines(rx);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// One JSON object per line, as the events arrive; ends when the run drops its sender.
fn lines(
    rx: mpsc::UnboundedReceiver<Value>,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    futures::stream::unfold(rx, |mut rx| async move {
        let value = rx.recv().await?;
        let mut line = value.to_string();
        line.push('\n');
        Some((Ok(Bytes::from(line)), rx))
    })
}

/// The accepted part of a request, run in the background while the caller reads the stream.
struct Run {
    service: Arc<DeployService>,
    release: Release,
    id: String,
    commit: String,
    images: Vec<String>,
    rules: CommitRules,
    tx: mpsc::UnboundedSender<Value>,
}

impl Run {
    async fn run(self) {
        let started = Instant::now();
        let (outcome, message, extra) = self.steps().await;
        let namespace = self.release.metadata.namespace.clone().unwrap_or_default();
        let name = self.release.metadata.name.clone().unwrap_or_default();
        let mut result = json!({
            "event": "result",
            "request": self.id,
            "release": format!("{namespace}/{name}"),
            "outcome": outcome,
            "message": message,
            "durationMs": started.elapsed().as_millis() as u64,
        });
        let (counted, reason) = match outcome {
            Outcome::Succeeded => (RequestResult::Accepted, "succeeded"),
            Outcome::Failed => (RequestResult::Accepted, "failed"),
            Outcome::TimedOut => (RequestResult::Accepted, "timed-out"),
            Outcome::Superseded => (RequestResult::Accepted, "superseded"),
            Outcome::Refused => (
                RequestResult::Refused,
                match extra.get("refusedBy").and_then(Value::as_str) {
                    Some("unreachable") => "unreachable",
                    Some("rollback") => "rollback",
                    _ => "source",
                },
            ),
        };
        if let (Some(map), Value::Object(more)) = (result.as_object_mut(), extra) {
            map.extend(more);
        }
        self.service.count(&namespace, counted, reason);
        let (type_, reason) = match outcome {
            Outcome::Succeeded => (EventType::Normal, "DeploySucceeded"),
            Outcome::Failed => (EventType::Warning, "DeployFailed"),
            Outcome::TimedOut => (EventType::Warning, "DeployTimedOut"),
            Outcome::Refused => (EventType::Warning, "DeployRefused"),
            Outcome::Superseded => (EventType::Normal, "DeploySuperseded"),
        };
        self.service
            .event(
                &self.release,
                type_,
                reason,
                &format!("deploy request {}: {message}", self.id),
            )
            .await;
        let _ = self.tx.send(result);
    }

    fn say(&self, value: Value) {
        let _ = self.tx.send(value);
    }

    async fn steps(&self) -> (Outcome, String, Value) {
        let service = &self.service;
        let options = &service.options;
        let namespace = self.release.metadata.namespace.clone().unwrap_or_default();
        let name = self.release.metadata.name.clone().unwrap_or_default();
        // 1. The commit, with history: reachability and rollback.
        let source = match super::source::source_key(&self.release, options) {
            Ok(s) => s,
            Err(e) => return (Outcome::Refused, e, Value::Null),
        };
        let request =
            match super::source::fetch_request(&service.client, &service.tenants, options, &source)
                .await
            {
                Ok(r) => r,
                Err(e) => return (Outcome::Failed, e, Value::Null),
            };
        let deployed = self
            .release
            .status
            .as_ref()
            .and_then(|s| s.last_applied_revision.as_deref())
            .and_then(super::source::commit_of)
            .map(str::to_string);
        let reach = match &self.rules.reachable_from {
            Reachability::Branch(b) => Reach::Branch(b.clone()),
            Reachability::Tag(t) => Reach::Tag(t.clone()),
            Reachability::AnyBranch => Reach::AnyBranch,
            Reachability::AnyCommit => Reach::AnyCommit,
        };
        let fetched = match super::source::fetch_commit(
            &options.cache_dir,
            request,
            &self.commit,
            reach.clone(),
            deployed.clone(),
        )
        .await
        {
            Ok(f) => f,
            Err(e) => return (Outcome::Refused, e, Value::Null),
        };
        if !fetched.reachable {
            return (
                Outcome::Refused,
                format!(
                    "commit {} is not reachable from {} (DeployPolicy {} spec.revisions)",
                    self.commit, reach, self.rules.policy
                ),
                json!({"refusedBy": "unreachable"}),
            );
        }
        let relation = fetched.relation;
        let older = matches!(
            relation,
            Some(Relation::NotDescendant | Relation::DeployedUnknown)
        );
        if older && !self.rules.allow_rollback {
            return (
                Outcome::Refused,
                format!(
                    "commit {} does not descend from the deployed commit {}: a rollback, which DeployPolicy {} does not allow (spec.allowRollback)",
                    self.commit,
                    deployed.as_deref().unwrap_or("?"),
                    self.rules.policy
                ),
                json!({"refusedBy": "rollback"}),
            );
        }
        self.say(json!({
            "event": "fetched",
            "revision": fetched.checkout.revision,
            "reachableFrom": reach.to_string(),
            "relation": match relation {
                None => "first",
                Some(Relation::Same) => "same",
                Some(Relation::Descendant) => "forward",
                Some(Relation::NotDescendant) => "rollback",
                Some(Relation::DeployedUnknown) => "unknown",
            },
        }));
        // 2. One at a time per Release; a newer waiting request wins.
        let turn = service
            .queue
            .enter(&namespace, &name, || {
                self.say(json!({"event": "queued", "message": "another deploy of this Release is running; waiting"}));
            })
            .await;
        let _turn = match turn {
            Ok(t) => t,
            Err(superseded) => return (Outcome::Superseded, superseded.to_string(), Value::Null),
        };
        // 3. Pin the Release and follow the controller.
        let (mut notes, _listening) = super::pin::listen(&self.id);
        let api: Api<Release> = Api::namespaced(service.client.clone(), &namespace);
        let images = if self.images.is_empty() {
            Value::Null
        } else {
            Value::String(serde_json::to_string(&self.images).unwrap_or_default())
        };
        let patch = json!({"metadata": {"annotations": {
            DEPLOY_REVISION: self.commit,
            DEPLOY_REQUEST: self.id,
            DEPLOY_IMAGES: images,
            RECONCILE_REQUESTED_AT: chrono::Utc::now().to_rfc3339(),
        }}});
        if let Err(e) = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            return (
                Outcome::Failed,
                format!("cannot pin Release {namespace}/{name} to the commit: {e}"),
                Value::Null,
            );
        }
        self.say(json!({"event": "applying", "message": format!("Release {namespace}/{name} pinned to {}; its controller applies it as the Release's service account", self.commit)}));
        let timeout = self
            .release
            .spec
            .timeout
            .as_deref()
            .and_then(|t| ferry_api::common::parse_duration(t).ok())
            .unwrap_or(Duration::from_secs(300));
        let deadline = tokio::time::Instant::now() + options.clamp_timeout(timeout) + RESULT_GRACE;
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut watch = watcher::watcher(api, config).boxed();
        let mut report = None;
        loop {
            let event = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    return (Outcome::TimedOut, format!("no result from the Release controller within {:?} (is the agent leading, and the Release's dependencies Ready?)", options.clamp_timeout(timeout) + RESULT_GRACE), Value::Null);
                }
                note = notes.recv() => {
                    match note {
                        Some(super::pin::Note::Progress(value)) => self.say(value),
                        Some(super::pin::Note::Report(r)) => report = Some(r),
                        None => {}
                    }
                    continue;
                }
                event = watch.next() => event,
            };
            let release = match event {
                Some(Ok(watcher::Event::Apply(r) | watcher::Event::InitApply(r))) => r,
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    tracing::debug!("deploy: Release watch: {e}");
                    continue;
                }
                None => {
                    return (
                        Outcome::Failed,
                        "the Release watch ended".to_string(),
                        Value::Null,
                    );
                }
            };
            let current = release
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEPLOY_REQUEST));
            if current.is_some_and(|c| *c != self.id) {
                return (Outcome::Superseded, "superseded: another deploy request pinned this Release before its controller ran this one".to_string(), Value::Null);
            }
            let Some(status) = release.status.as_ref() else {
                continue;
            };
            if status.last_handled_deploy_request.as_deref() != Some(self.id.as_str()) {
                continue;
            }
            // Drain what the controller already sent (the report comes before the status write).
            while let Ok(note) = notes.try_recv() {
                match note {
                    super::pin::Note::Progress(value) => self.say(value),
                    super::pin::Note::Report(r) => report = Some(r),
                }
            }
            let ready = ferry_api::common::find_condition(&status.conditions, READY);
            let (ok, reason, message) = match ready {
                Some(c) => (c.status == "True", c.reason.clone(), c.message.clone()),
                None => (false, "Unknown".to_string(), String::new()),
            };
            let outcome = if ok {
                Outcome::Succeeded
            } else if reason == "HealthCheckFailed" || report.as_ref().is_some_and(|r| r.timed_out)
            {
                Outcome::TimedOut
            } else {
                Outcome::Failed
            };
            let extra = json!({
                "reason": reason,
                "revision": status.last_attempted_revision,
                "summary": report.as_ref().map(|r| r.summary()),
                "objects": report.as_ref().map(|r| objects(r)),
                "report": report.as_ref().map(|r| serde_json::to_value(r).unwrap_or(Value::Null)),
            });
            return (outcome, message, extra);
        }
    }
}

/// One line per object, as `ferry apply` prints them (`ferry deploy` shows these).
fn objects(report: &ferry_engine::report::ApplyReport) -> Vec<Value> {
    use ferry_engine::health::HealthState;
    report
        .objects
        .iter()
        .map(|o| {
            let unhealthy = o
                .health
                .as_ref()
                .filter(|h| h.state != HealthState::Current);
            json!({
                "object": o.key.to_string(),
                "action": o.action.as_str(),
                "health": o.health.as_ref().map(|h| h.state.as_str()),
                "message": o.message.clone().or_else(|| unhealthy.map(|h| h.message.clone())),
            })
        })
        .collect()
}
