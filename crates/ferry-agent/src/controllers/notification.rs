//! Notifications: sends the Events of Releases, sources (GitSource, OCISource) and image
//! automation (ImageRepository, ImagePolicy, ImageUpdate) to the Providers of the Alerts that
//! match them (forge commit statuses for Releases, chat webhooks, signed JSON POSTs),
//! deduplicated, retried with backoff, and the outcome written to the Alert's and Provider's
//! kstatus conditions (`Ready`, `Stalled` when only a change helps, `Reconciling` after a
//! failure the next event retries). An Alert's own spec is checked when the Alert watch sees it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use ferry_api::common::{STALLED, find_condition};
use ferry_api::kstatus::{self, Outcome};
use ferry_api::notification::{
    Alert, EVENT_SOURCE_KINDS, EventSeverity, NotificationStatus, Provider, ProviderType,
    ferry_kind_for_flux,
};
use ferry_api::parse_duration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use reqwest::Url;

use crate::context::Context;

/// The same object, reason and revision sent to the same Alert within this window is sent once.
const DEDUP_WINDOW: Duration = Duration::from_secs(300);
/// Delivery attempts per notification (the first plus retries on 5xx, 429 and network errors).
const ATTEMPTS: u32 = 4;
/// Wait before the first retry; doubled after each.
const FIRST_RETRY: Duration = Duration::from_millis(500);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a Provider cannot be used, or a delivery failed. Messages never hold secret values.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("Provider {0} not found in the Alert's namespace; create it or fix spec.providerRef")]
    ProviderNotFound(String),
    #[error(
        "cannot read Secret {secret} (spec.secretRef of Provider {provider}) as {identity}: {source}; grant that identity get on the Secret"
    )]
    SecretUnreadable {
        provider: String,
        secret: String,
        identity: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("Secret {secret} named in spec.secretRef of Provider {provider} does not exist")]
    SecretNotFound { provider: String, secret: String },
    #[error(
        "Secret {secret} of Provider {provider} has no `{key}` key, which a {kind:?} provider needs"
    )]
    SecretKeyMissing {
        provider: String,
        secret: String,
        key: &'static str,
        kind: ProviderType,
    },
    #[error("Provider {provider}: address {reason}; use an http(s) URL{hint}")]
    InvalidAddress {
        provider: String,
        reason: String,
        hint: &'static str,
    },
    #[error("Alert {alert}: spec.eventSources[{index}]: {detail}")]
    InvalidEventSource {
        alert: String,
        index: usize,
        detail: String,
    },
    #[error(
        "Provider {provider}: spec.targetURL {reason}; use an http(s) URL without credentials, e.g. https://dashboard.example/{{namespace}}/{{name}}"
    )]
    InvalidTargetUrl { provider: String, reason: String },
    #[error("Alert {alert}: exclusionList entry {pattern:?} is not a regular expression: {source}")]
    InvalidExclusion {
        alert: String,
        pattern: String,
        #[source]
        source: regex::Error,
    },
    #[error("Provider {provider}: {what} failed after {attempts} attempt(s): {detail}")]
    Delivery {
        provider: String,
        what: String,
        attempts: u32,
        detail: String,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

impl NotifyError {
    fn reason(&self) -> &'static str {
        match self {
            Self::ProviderNotFound(_) => "ProviderNotFound",
            Self::SecretUnreadable { .. } => "SecretUnreadable",
            Self::SecretNotFound { .. } => "SecretNotFound",
            Self::SecretKeyMissing { .. } => "SecretKeyMissing",
            Self::InvalidAddress { .. } => "InvalidAddress",
            Self::InvalidTargetUrl { .. } => "InvalidTargetURL",
            Self::InvalidEventSource { .. } => "InvalidEventSource",
            Self::InvalidExclusion { .. } => "InvalidExclusionList",
            Self::Delivery { .. } | Self::Client(_) => "DeliveryFailed",
        }
    }

    /// kstatus: only a change of a spec (the Alert's, the Provider's) or of the Provider's
    /// Secret helps. A missing Provider or Secret, a Secret the tenant may not read yet and a
    /// failed delivery are retried by the next event.
    fn needs_change(&self) -> bool {
        matches!(
            self,
            Self::InvalidEventSource { .. }
                | Self::InvalidExclusion { .. }
                | Self::InvalidAddress { .. }
                | Self::InvalidTargetUrl { .. }
                | Self::SecretKeyMissing { .. }
        )
    }
}

/// One Event of a ferry object, as its controller published it.
#[derive(Clone, Debug)]
pub struct ObjectEvent {
    /// The involved object's kind (`Release`, `GitSource`, `OCISource`, `ImageRepository`,
    /// `ImagePolicy`, `ImageUpdate`).
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The involved object's labels (for `eventSources[].matchLabels`).
    pub labels: BTreeMap<String, String>,
    pub warning: bool,
    pub reason: String,
    pub message: String,
    /// The revision the event is about: a Release's or GitSource's `main@sha1:<hex>`, an
    /// OCISource's artifact revision, an ImagePolicy's latest image, an ImageUpdate's pushed
    /// commit.
    pub revision: Option<String>,
}

impl ObjectEvent {
    /// The commit SHA in the revision (the hex after `sha1:`/`sha256:` or after the last `@`).
    pub fn commit(&self) -> Option<String> {
        let rev = self.revision.as_deref()?;
        let tail = rev.rsplit([':', '@', '/']).next()?;
        let is_sha =
            (tail.len() == 40 || tail.len() == 64) && tail.chars().all(|c| c.is_ascii_hexdigit());
        is_sha.then(|| tail.to_ascii_lowercase())
    }

    fn state(&self) -> CommitState {
        if self.warning {
            CommitState::Failure
        } else if matches!(self.reason.as_str(), PROGRESSING | "Reconciling") {
            CommitState::Pending
        } else {
            CommitState::Success
        }
    }

    fn title(&self) -> String {
        format!("{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// The reason of the event the Release controller publishes when it starts applying a revision
/// it has not attempted before: a `pending` commit status (GitLab: `running`) until the
/// `Synced` or failure event of the same revision follows. Sent to forge providers only.
pub const PROGRESSING: &str = "Progressing";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CommitState {
    Pending,
    Success,
    Failure,
}

/// Hand an Event of a Release, source or image automation object to the Alerts of its
/// namespace, in the background: no controller waits for a provider. Controllers call it for
/// the Events they publish, which are news only (a new revision, a new failure message), so an
/// unchanged reconcile dispatches nothing; with no Alert in the namespace it costs no request.
pub fn dispatch<K: Resource<DynamicType = ()>>(
    ctx: &Arc<Context>,
    obj: &K,
    revision: Option<&str>,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let event = ObjectEvent {
        kind: K::kind(&()).to_string(),
        namespace: obj.meta().namespace.clone().unwrap_or_default(),
        name: obj.meta().name.clone().unwrap_or_default(),
        labels: obj.meta().labels.clone().unwrap_or_default(),
        warning: matches!(type_, EventType::Warning),
        reason: reason.to_string(),
        message: note.to_string(),
        revision: revision.map(str::to_string),
    };
    let ctx = ctx.clone();
    in_order(
        event.title(),
        Box::pin(async move { deliver_to_alerts(&ctx, event).await }),
    );
}

type Delivery = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The deliveries of each object still to run, in the order its controller published them: an
/// object with deliveries under way has an entry, which its one worker drains.
static QUEUES: LazyLock<Mutex<HashMap<String, VecDeque<Delivery>>>> = LazyLock::new(Mutex::default);

/// Run the deliveries of one object (`key`) one after the other, in the order they were handed
/// in, in the background: a `pending` commit status must not land after the `success` that
/// follows it, whichever provider answers faster.
fn in_order(key: String, delivery: Delivery) {
    {
        let mut queues = QUEUES.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(queue) = queues.get_mut(&key) {
            // Its worker is busy with an earlier one: it takes this one next.
            queue.push_back(delivery);
            return;
        }
        queues.insert(key.clone(), VecDeque::new());
    }
    tokio::spawn(async move {
        let _worker = Worker(key.clone());
        let mut next = Some(delivery);
        while let Some(delivery) = next {
            delivery.await;
            let mut queues = QUEUES.lock().unwrap_or_else(|p| p.into_inner());
            next = queues.get_mut(&key).and_then(VecDeque::pop_front);
            if next.is_none() {
                queues.remove(&key);
            }
        }
    });
}

/// An object's delivery worker; should it panic, its queue goes too, so the next event starts a
/// new worker instead of waiting behind a dead one.
struct Worker(String);

impl Drop for Worker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            QUEUES
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.0);
        }
    }
}

async fn deliver_to_alerts(ctx: &Context, event: ObjectEvent) {
    let Some(alerts) = alerts_of(ctx, &event.namespace).await else {
        return;
    };
    for alert in alerts {
        match alert_wants(&alert, &event) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(err) => {
                write_failure::<Alert>(ctx, &alert, &err).await;
                continue;
            }
        }
        if !first_in_window(&alert, &event) {
            tracing::debug!(alert = %alert.name_any(), "duplicate notification suppressed");
            continue;
        }
        let outcome = deliver(ctx, &alert, &event).await;
        match outcome {
            Ok(Some(what)) => {
                let message = format!("{what} for {} ({})", event.title(), event.reason);
                write_ready::<Alert>(ctx, &alert, "Delivered", &message).await;
            }
            Ok(None) => {}
            Err(err) => {
                forget(&alert, &event);
                tracing::warn!(alert = %alert.name_any(), "notification not delivered: {err}");
                write_failure::<Alert>(ctx, &alert, &err).await;
            }
        }
    }
}

/// How long an event waits for the Alert watch's first list (agent start) before it lists.
const ALERT_CACHE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The Alerts of `namespace`: from the agent's Alert watch once it has listed; otherwise (the
/// watch not started or not listed yet, e.g. no Alert CRD installed) from one LIST. `None`:
/// nothing to notify (no Alert CRD, or no right to list).
async fn alerts_of(ctx: &Context, namespace: &str) -> Option<Vec<Alert>> {
    if let Some(store) = ctx.alerts.get()
        && tokio::time::timeout(ALERT_CACHE_WAIT, store.wait_until_ready())
            .await
            .is_ok_and(|ready| ready.is_ok())
    {
        return Some(
            store
                .state()
                .into_iter()
                .filter(|a| a.namespace().as_deref() == Some(namespace))
                .map(|a| (*a).clone())
                .collect(),
        );
    }
    let api: Api<Alert> = Api::namespaced(ctx.client.clone(), namespace);
    match api.list(&Default::default()).await {
        Ok(list) => Some(list.items),
        Err(err) => {
            tracing::debug!("cannot list Alerts in {namespace}: {err}");
            None
        }
    }
}

/// Check an Alert's own spec: known kinds in `eventSources`, `matchLabels` only with `name: "*"`,
/// regular expressions in `exclusionList`. Returns the compiled exclusions.
pub fn validate_alert(alert: &Alert) -> Result<Vec<regex::Regex>, NotifyError> {
    let name = alert.name_any();
    for (index, source) in alert.spec.event_sources.iter().enumerate() {
        let invalid = |detail: String| NotifyError::InvalidEventSource {
            alert: name.clone(),
            index,
            detail,
        };
        if !EVENT_SOURCE_KINDS.contains(&source.kind.as_str()) {
            let hint = ferry_kind_for_flux(&source.kind)
                .map(|k| format!(" (ferry's kind for Flux's {} is {k})", source.kind))
                .unwrap_or_default();
            return Err(invalid(format!(
                "kind {:?} is not one of {}{hint}; change spec.eventSources[{index}].kind",
                source.kind,
                EVENT_SOURCE_KINDS.join(", ")
            )));
        }
        if source.name.is_empty() {
            return Err(invalid(
                "name is empty; set an object name or \"*\"".to_string(),
            ));
        }
        if !source.match_labels.is_empty() && source.name != "*" {
            return Err(invalid(format!(
                "matchLabels needs name \"*\" (name is {:?}); set name: \"*\" or drop matchLabels",
                source.name
            )));
        }
    }
    alert
        .spec
        .exclusion_list
        .iter()
        .map(|pattern| {
            regex::Regex::new(pattern).map_err(|source| NotifyError::InvalidExclusion {
                alert: name.clone(),
                pattern: pattern.to_string(),
                source,
            })
        })
        .collect()
}

/// Whether `alert` selects this event (kind, name or labels, severity, exclusions).
pub fn alert_wants(alert: &Alert, event: &ObjectEvent) -> Result<bool, NotifyError> {
    if alert.spec.suspend {
        return Ok(false);
    }
    let exclusions = validate_alert(alert)?;
    let source_matches = alert.spec.event_sources.iter().any(|s| {
        s.kind == event.kind
            && (s.name == event.name
                || (s.name == "*"
                    && s.match_labels
                        .iter()
                        .all(|(k, v)| event.labels.get(k) == Some(v))))
    });
    if !source_matches {
        return Ok(false);
    }
    if alert.spec.event_severity == Some(EventSeverity::Error) && !event.warning {
        return Ok(false);
    }
    Ok(!exclusions.iter().any(|re| re.is_match(&event.message)))
}

/// Called for each Alert the Alert watch sees (created, changed, listed at start): an invalid
/// spec is `Stalled` at once (not at the first event), and a fixed one is `Ready` again. Writes
/// only when the conditions would change, so a restart or an unchanged Alert writes nothing.
pub fn check_alert_spec(ctx: &Arc<Context>, alert: &Alert) {
    let conditions = alert
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let generation = alert.meta().generation;
    let stalled = find_condition(&conditions, STALLED).filter(|c| c.status == "True");
    let write = match validate_alert(alert) {
        Err(err) => {
            let message = err.to_string();
            let same = stalled.is_some_and(|c| {
                c.reason == err.reason()
                    && c.message == message
                    && c.observed_generation == generation
            });
            (!same).then(|| (None, Some(err)))
        }
        Ok(_) => {
            // Only a stall of the Alert's own spec is lifted here; the Provider's is lifted by
            // the next delivery that works.
            let own = stalled.is_some_and(|c| {
                matches!(
                    c.reason.as_str(),
                    "InvalidEventSource" | "InvalidExclusionList"
                )
            });
            own.then(|| {
                (
                    Some("spec accepted; no event delivered since".to_string()),
                    None,
                )
            })
        }
    };
    let Some((ready, failure)) = write else {
        return;
    };
    let ctx = ctx.clone();
    let alert = alert.clone();
    tokio::spawn(async move {
        match (ready, failure) {
            (_, Some(err)) => {
                tracing::warn!(alert = %format!("{}/{}", alert.namespace().unwrap_or_default(), alert.name_any()), "{err}");
                write_failure::<Alert>(&ctx, &alert, &err).await;
            }
            (Some(message), None) => write_ready::<Alert>(&ctx, &alert, "Accepted", &message).await,
            (None, None) => {}
        }
    });
}

static SENT: LazyLock<Mutex<HashMap<String, Instant>>> = LazyLock::new(Mutex::default);

fn dedup_key(alert: &Alert, event: &ObjectEvent) -> String {
    format!(
        "{}/{}|{}|{}/{}|{}|{}",
        event.namespace,
        alert.name_any(),
        alert.uid().unwrap_or_default(),
        event.kind,
        event.name,
        event.reason,
        event.revision.as_deref().unwrap_or(&event.message),
    )
}

/// Rate limit: true the first time this (Alert, object, reason, revision) is seen in the window.
fn first_in_window(alert: &Alert, event: &ObjectEvent) -> bool {
    let key = dedup_key(alert, event);
    let Ok(mut sent) = SENT.lock() else {
        return true;
    };
    let now = Instant::now();
    sent.retain(|_, at| now.duration_since(*at) < DEDUP_WINDOW);
    if sent.contains_key(&key) {
        return false;
    }
    sent.insert(key, now);
    true
}

/// A failed delivery may be tried again by the next Event.
fn forget(alert: &Alert, event: &ObjectEvent) {
    if let Ok(mut sent) = SENT.lock() {
        sent.remove(&dedup_key(alert, event));
    }
}

/// What a Provider resolved to: its type, address and credentials.
pub struct ResolvedProvider {
    pub name: String,
    pub provider_type: ProviderType,
    pub address: Url,
    pub token: Option<String>,
    pub hmac_key: Option<Vec<u8>>,
    pub channel: Option<String>,
    pub username: String,
    pub timeout: Duration,
    /// The commit status link, a template checked by [`check_target_url`]: the Provider's
    /// `spec.targetURL`, else the agent's `--external-url` page of the Release.
    pub target_url: Option<String>,
}

/// Send `event` to the Alert's Provider. `Ok(None)`: nothing to send to this Provider (a
/// commit status is only written for a Release's events).
async fn deliver(
    ctx: &Context,
    alert: &Alert,
    event: &ObjectEvent,
) -> Result<Option<String>, NotifyError> {
    let namespace = &event.namespace;
    let providers: Api<Provider> = Api::namespaced(ctx.client.clone(), namespace);
    let name = &alert.spec.provider_ref.name;
    let provider = providers
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .ok_or_else(|| NotifyError::ProviderNotFound(format!("{namespace}/{name}")))?;
    if provider.spec.suspend {
        return Ok(Some("Provider suspended; nothing sent".to_string()));
    }
    // A commit status is about a commit a Release applied; a source's or an image
    // automation's events have no such commit. Not an error: an Alert may mix kinds.
    if provider.spec.provider_type.is_forge() && event.kind != "Release" {
        tracing::debug!(provider = %provider.name_any(), kind = %event.kind, "commit-status providers take Release events only; skipped");
        return Ok(None);
    }
    // "Applying" is a commit status (pending); chats and signed events get the results only.
    if event.reason == PROGRESSING && !provider.spec.provider_type.is_forge() {
        return Ok(None);
    }
    let resolved = match resolve(ctx, &provider).await {
        Ok(resolved) => resolved,
        Err(err) => {
            write_failure::<Provider>(ctx, &provider, &err).await;
            return Err(err);
        }
    };
    let result = send(&resolved, alert, event).await;
    match &result {
        Ok(what) => write_ready::<Provider>(ctx, &provider, "Delivered", what).await,
        Err(err) => write_failure::<Provider>(ctx, &provider, err).await,
    }
    result.map(Some)
}

/// Read the Provider's Secret as the namespace's tenant and check its address.
async fn resolve(ctx: &Context, provider: &Provider) -> Result<ResolvedProvider, NotifyError> {
    let namespace = provider.namespace().unwrap_or_default();
    let label = format!("{namespace}/{}", provider.name_any());
    let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    if let Some(secret_ref) = &provider.spec.secret_ref {
        let secret_name = format!("{namespace}/{}", secret_ref.name);
        let (reader, identity) =
            ctx.secret_reader(&namespace)
                .map_err(|e| NotifyError::SecretUnreadable {
                    provider: label.clone(),
                    secret: secret_name.clone(),
                    identity: "the tenant".to_string(),
                    source: Box::new(kube::Error::Service(e.into())),
                })?;
        let secrets: Api<Secret> = Api::namespaced(reader, &namespace);
        let secret = secrets
            .get_opt(&secret_ref.name)
            .await
            .map_err(|source| NotifyError::SecretUnreadable {
                provider: label.clone(),
                secret: secret_name.clone(),
                identity: identity.to_string(),
                source: Box::new(source),
            })?
            .ok_or_else(|| NotifyError::SecretNotFound {
                provider: label.clone(),
                secret: secret_name.clone(),
            })?;
        data = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
    }
    let text = |key: &str| {
        data.get(key)
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let address_text = text("address")
        .or_else(|| provider.spec.address.clone())
        .ok_or_else(|| NotifyError::InvalidAddress {
            provider: label.clone(),
            reason: "is missing".to_string(),
            hint: " in spec.address or the Secret's `address` key",
        })?;
    let address = check_address(&label, &address_text)?;
    let provider_type = provider.spec.provider_type;
    // The link: the Provider's template, else the dashboard's page of the Release.
    let target_url = match &provider.spec.target_url {
        Some(template) => Some(template.trim().to_string()),
        None => ctx.options.external_url.as_ref().map(|base| {
            format!(
                "{}/apps/release/{{namespace}}/{{name}}",
                base.as_str().trim_end_matches('/')
            )
        }),
    };
    if let Some(template) = &target_url {
        check_target_url(&label, template)?;
    }
    let token = text("token");
    let hmac_key = data.get("hmacKey").or_else(|| data.get("token")).cloned();
    let secret_label = || {
        provider
            .spec
            .secret_ref
            .as_ref()
            .map(|s| format!("{namespace}/{}", s.name))
            .unwrap_or_else(|| "(no spec.secretRef)".to_string())
    };
    if provider_type.is_forge() && token.is_none() {
        return Err(NotifyError::SecretKeyMissing {
            provider: label,
            secret: secret_label(),
            key: "token",
            kind: provider_type,
        });
    }
    if provider_type == ProviderType::GenericHmac && hmac_key.is_none() {
        return Err(NotifyError::SecretKeyMissing {
            provider: label,
            secret: secret_label(),
            key: "hmacKey",
            kind: provider_type,
        });
    }
    let timeout = provider
        .spec
        .timeout
        .as_deref()
        .and_then(|t| parse_duration(t).ok())
        .unwrap_or(DEFAULT_TIMEOUT);
    Ok(ResolvedProvider {
        name: label,
        provider_type,
        address,
        token,
        hmac_key,
        channel: provider.spec.channel.clone(),
        username: provider
            .spec
            .username
            .clone()
            .unwrap_or_else(|| "ferry".to_string()),
        timeout,
        target_url,
    })
}

/// Only http(s) URLs with a host and no user info (credentials travel in headers only).
pub fn check_address(provider: &str, text: &str) -> Result<Url, NotifyError> {
    let invalid = |reason: String| NotifyError::InvalidAddress {
        provider: provider.to_string(),
        reason,
        hint: "",
    };
    // The address may hold a webhook key: never quote it in an error.
    let url = Url::parse(text).map_err(|e| invalid(format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!("has scheme {:?}", url.scheme())));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("has no host".to_string()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "carries user info; put credentials in the Secret".to_string(),
        ));
    }
    Ok(url)
}

/// A commit status link: `template` with `{namespace}`, `{name}`, `{revision}` and `{commit}`
/// replaced by the Release's values, each percent-encoded (a value cannot add a path segment, a
/// query or a host), and the result checked like an address: http(s), a host, no user info.
pub fn target_url(
    provider: &str,
    template: &str,
    namespace: &str,
    name: &str,
    revision: Option<&str>,
    commit: Option<&str>,
) -> Result<Url, NotifyError> {
    let invalid = |reason: String| NotifyError::InvalidTargetUrl {
        provider: provider.to_string(),
        reason,
    };
    let text = template
        .replace("{namespace}", &urlencode(namespace))
        .replace("{name}", &urlencode(name))
        .replace("{revision}", &urlencode(revision.unwrap_or_default()))
        .replace("{commit}", &urlencode(commit.unwrap_or_default()));
    let url = Url::parse(&text).map_err(|e| invalid(format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!("has scheme {:?}", url.scheme())));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("has no host".to_string()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "carries user info (credentials), which everyone who sees the commit would see"
                .to_string(),
        ));
    }
    Ok(url)
}

/// Refuse a link template that cannot give a valid link (tried with a sample Release).
pub fn check_target_url(provider: &str, template: &str) -> Result<(), NotifyError> {
    let commit = "0".repeat(40);
    let revision = format!("main@sha1:{commit}");
    target_url(
        provider,
        template,
        "namespace",
        "name",
        Some(&revision),
        Some(&commit),
    )
    .map(drop)
}

/// One HTTP request a provider makes: the URL is always on the provider's address host.
#[derive(Debug)]
pub struct Outgoing {
    pub url: Url,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub what: String,
}

/// Build the request for `event` (public for tests of the exact shapes).
pub fn build_request(
    provider: &ResolvedProvider,
    alert_summary: Option<&str>,
    event: &ObjectEvent,
) -> Result<Outgoing, NotifyError> {
    let state = event.state();
    let description: String = event.message.chars().take(140).collect();
    let context = format!("ferry/{}/{}", event.namespace, event.name);
    let mut headers: Vec<(&'static str, String)> =
        vec![("Content-Type", "application/json".to_string())];
    let json = |v: serde_json::Value| serde_json::to_vec(&v).unwrap_or_default();
    let forge = |prefix: &str| -> Result<(Url, String, String), NotifyError> {
        let (owner, repo) = repo_path(provider)?;
        let commit = event.commit().ok_or_else(|| NotifyError::Delivery {
            provider: provider.name.clone(),
            what: "commit status".to_string(),
            attempts: 0,
            detail: format!(
                "the revision {:?} names no commit",
                event.revision.as_deref().unwrap_or("")
            ),
        })?;
        let mut url = provider.address.clone();
        url.set_query(None);
        url.set_fragment(None);
        let path = prefix
            .replace("{owner}", &owner)
            .replace("{repo}", &repo)
            .replace("{project}", &urlencode(&format!("{owner}/{repo}")))
            .replace("{sha}", &commit);
        url.set_path(&path);
        Ok((url, commit, path))
    };
    let token = provider.token.clone().unwrap_or_default();
    // Forges: the link as `target_url` (the statuses APIs of Gitea, GitHub and GitLab alike).
    let link = match &provider.target_url {
        Some(template) if provider.provider_type.is_forge() => Some(
            target_url(
                &provider.name,
                template,
                &event.namespace,
                &event.name,
                event.revision.as_deref(),
                event.commit().as_deref(),
            )?
            .to_string(),
        ),
        _ => None,
    };
    let with_link = |mut body: serde_json::Value| {
        if let Some(link) = &link {
            body["target_url"] = serde_json::Value::String(link.clone());
        }
        json(body)
    };
    let out = match provider.provider_type {
        ProviderType::Gitea => {
            let (url, commit, _) = forge("/api/v1/repos/{owner}/{repo}/statuses/{sha}")?;
            headers.push(("Authorization", format!("token {token}")));
            let body = with_link(serde_json::json!({
                "state": match state { CommitState::Pending => "pending", CommitState::Success => "success", CommitState::Failure => "failure" },
                "context": context, "description": description,
            }));
            Outgoing {
                url,
                headers,
                body,
                what: format!("commit status on {commit}"),
            }
        }
        ProviderType::Github => {
            // github.com's API lives on api.github.com; GitHub Enterprise serves /api/v3 on its host.
            let on_github = provider.address.host_str() == Some("github.com");
            let prefix = if on_github {
                "/repos/{owner}/{repo}/statuses/{sha}"
            } else {
                "/api/v3/repos/{owner}/{repo}/statuses/{sha}"
            };
            let (mut url, commit, _) = forge(prefix)?;
            if on_github {
                let _ = url.set_host(Some("api.github.com"));
            }
            headers.push(("Authorization", format!("Bearer {token}")));
            headers.push(("Accept", "application/vnd.github+json".to_string()));
            let body = with_link(serde_json::json!({
                "state": match state { CommitState::Pending => "pending", CommitState::Success => "success", CommitState::Failure => "failure" },
                "context": context, "description": description,
            }));
            Outgoing {
                url,
                headers,
                body,
                what: format!("commit status on {commit}"),
            }
        }
        ProviderType::Gitlab => {
            let (url, commit, _) = forge("/api/v4/projects/{project}/statuses/{sha}")?;
            headers.push(("PRIVATE-TOKEN", token));
            let body = with_link(serde_json::json!({
                "state": match state { CommitState::Pending => "running", CommitState::Success => "success", CommitState::Failure => "failed" },
                "name": context, "description": description,
            }));
            Outgoing {
                url,
                headers,
                body,
                what: format!("commit status on {commit}"),
            }
        }
        ProviderType::GenericHmac => {
            let body = json(serde_json::json!({
                "involvedObject": {"apiVersion": "ferry.dev/v1alpha1", "kind": event.kind, "namespace": event.namespace, "name": event.name},
                "severity": if event.warning { "error" } else { "info" },
                "reason": event.reason,
                "message": event.message,
                "metadata": {"revision": event.revision, "summary": alert_summary},
                "reportingController": "ferry-agent",
            }));
            let key = provider.hmac_key.clone().unwrap_or_default();
            headers.push(("X-Signature", format!("sha256={}", hmac_hex(&key, &body))));
            Outgoing {
                url: provider.address.clone(),
                headers,
                body,
                what: "signed event".to_string(),
            }
        }
        ProviderType::Slack => {
            let mut body = serde_json::json!({
                "username": provider.username,
                "text": chat_text(alert_summary, event),
                "attachments": [{
                    "color": if event.warning { "danger" } else { "good" },
                    "title": event.title(),
                    "text": event.message,
                    "fields": [{"title": "revision", "value": event.revision, "short": false}],
                }],
            });
            if let Some(channel) = &provider.channel {
                body["channel"] = serde_json::Value::String(channel.clone());
            }
            Outgoing {
                url: provider.address.clone(),
                headers,
                body: json(body),
                what: "Slack message".to_string(),
            }
        }
        ProviderType::Msteams => {
            let body = json(serde_json::json!({
                "@type": "MessageCard",
                "@context": "https://schema.org/extensions",
                "themeColor": if event.warning { "FF0000" } else { "0076D7" },
                "summary": event.title(),
                "sections": [{
                    "activityTitle": chat_text(alert_summary, event),
                    "activitySubtitle": event.message,
                    "facts": [{"name": "revision", "value": event.revision}, {"name": "reason", "value": event.reason}],
                }],
            }));
            Outgoing {
                url: provider.address.clone(),
                headers,
                body,
                what: "Teams message".to_string(),
            }
        }
        ProviderType::Discord => {
            let body = json(serde_json::json!({
                "username": provider.username,
                "content": chat_text(alert_summary, event),
                "embeds": [{
                    "title": event.title(),
                    "description": event.message,
                    "color": if event.warning { 0xE01E5A } else { 0x2EB67D },
                    "fields": [{"name": "revision", "value": event.revision, "inline": false}],
                }],
            }));
            Outgoing {
                url: provider.address.clone(),
                headers,
                body,
                what: "Discord message".to_string(),
            }
        }
    };
    Ok(out)
}

fn chat_text(summary: Option<&str>, event: &ObjectEvent) -> String {
    let head = format!("{} {}", event.title(), event.reason);
    match summary {
        Some(s) => format!("{s}: {head}"),
        None => head,
    }
}

/// `owner/repo` from the address path (`/owner/repo`, `.git` dropped; GitLab subgroups kept in owner).
fn repo_path(provider: &ResolvedProvider) -> Result<(String, String), NotifyError> {
    let path = provider.address.path().trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let (owner, repo) = path
        .rsplit_once('/')
        .ok_or_else(|| NotifyError::InvalidAddress {
            provider: provider.name.clone(),
            reason: "names no repository".to_string(),
            hint: " naming the repository, e.g. https://gitea.example/owner/repo",
        })?;
    let safe = |s: &str| {
        !s.is_empty()
            && s.split('/').all(|part| {
                !part.is_empty()
                    && part != ".."
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            })
    };
    if !safe(owner) || !safe(repo) {
        return Err(NotifyError::InvalidAddress {
            provider: provider.name.clone(),
            reason: "has a repository path with characters outside [A-Za-z0-9-_.]".to_string(),
            hint: "",
        });
    }
    Ok((owner.to_string(), repo.to_string()))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Hex HMAC-SHA256 of `body` under `key`.
pub fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    hex::encode(aws_lc_rs::hmac::sign(&key, body).as_ref())
}

async fn send(
    provider: &ResolvedProvider,
    alert: &Alert,
    event: &ObjectEvent,
) -> Result<String, NotifyError> {
    let out = build_request(provider, alert.spec.summary.as_deref(), event)?;
    // Credentials only to the configured host: a request on another host is a bug; refuse it.
    let expected_host = if provider.provider_type == ProviderType::Github
        && provider.address.host_str() == Some("github.com")
    {
        Some("api.github.com")
    } else {
        provider.address.host_str()
    };
    if out.url.host_str() != expected_host {
        return Err(NotifyError::InvalidAddress {
            provider: provider.name.clone(),
            reason: "resolved to another host".to_string(),
            hint: "",
        });
    }
    let client = reqwest::Client::builder()
        .timeout(provider.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ferry-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(NotifyError::Client)?;
    let mut wait = FIRST_RETRY;
    let mut detail = String::new();
    for attempt in 1..=ATTEMPTS {
        let mut request = client.post(out.url.clone()).body(out.body.clone());
        for (name, value) in &out.headers {
            request = request.header(*name, value);
        }
        let retry = match request.send().await {
            Ok(response) if response.status().is_success() => return Ok(out.what),
            Ok(response) => {
                let status = response.status();
                detail = format!("HTTP {status}");
                status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            }
            // without_url: a webhook URL can hold its key.
            Err(err) => {
                detail = err.without_url().to_string();
                true
            }
        };
        if !retry || attempt == ATTEMPTS {
            return Err(NotifyError::Delivery {
                provider: provider.name.clone(),
                what: out.what,
                attempts: attempt,
                detail,
            });
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
    Err(NotifyError::Delivery {
        provider: provider.name.clone(),
        what: out.what,
        attempts: ATTEMPTS,
        detail,
    })
}

/// `Ready=True` on an Alert or Provider (kstatus: no `Reconciling`, no `Stalled`).
async fn write_ready<K>(ctx: &Context, obj: &K, reason: &str, message: &str)
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + HasNotificationStatus,
{
    write_status(ctx, obj, Outcome::Ready { reason, message }).await;
}

/// A refusal or failed delivery on an Alert or Provider: `Stalled` when only a change helps,
/// else `Reconciling=True` (the next event retries), `Ready=False` either way.
async fn write_failure<K>(ctx: &Context, obj: &K, err: &NotifyError)
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + HasNotificationStatus,
{
    let message = err.to_string();
    write_status(
        ctx,
        obj,
        kstatus::failure(err.reason(), &message, err.needs_change()),
    )
    .await;
}

/// Set the kstatus conditions of an Alert or Provider (status subresource, merge patch), only
/// when they change. Best effort.
async fn write_status<K>(ctx: &Context, obj: &K, outcome: Outcome<'_>)
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + HasNotificationStatus,
{
    let old = obj.notification_status().cloned().unwrap_or_default();
    let mut status = old.clone();
    kstatus::set_outcome(&mut status.conditions, outcome, obj.meta().generation);
    status.observed_generation = obj.meta().generation;
    if same_status(&old, &status) {
        return;
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    // A merge patch replaces the conditions list whole: removed conditions go.
    let patch = serde_json::json!({ "status": status });
    if let Err(err) = api
        .patch_status(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::debug!("cannot write notification status: {err}");
    }
}

/// Equal but for condition timestamps.
fn same_status(old: &NotificationStatus, new: &NotificationStatus) -> bool {
    let strip = |s: &NotificationStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            );
        }
        s
    };
    strip(old) == strip(new)
}

trait HasNotificationStatus {
    fn notification_status(&self) -> Option<&NotificationStatus>;
}

impl HasNotificationStatus for Alert {
    fn notification_status(&self) -> Option<&NotificationStatus> {
        self.status.as_ref()
    }
}

impl HasNotificationStatus for Provider {
    fn notification_status(&self) -> Option<&NotificationStatus> {
        self.status.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_api::common::LocalObjectReference;
    use ferry_api::notification::{AlertSpec, EventSource};

    fn alert(sources: Vec<EventSource>, exclusions: &[&str]) -> Alert {
        Alert::new(
            "a",
            AlertSpec {
                provider_ref: LocalObjectReference {
                    name: "p".to_string(),
                },
                event_sources: sources,
                exclusion_list: exclusions.iter().map(|s| s.to_string()).collect(),
                ..AlertSpec::default()
            },
        )
    }

    fn source(kind: &str, name: &str, labels: &[(&str, &str)]) -> EventSource {
        EventSource {
            kind: kind.to_string(),
            name: name.to_string(),
            match_labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn event(kind: &str, name: &str, labels: &[(&str, &str)], warning: bool) -> ObjectEvent {
        ObjectEvent {
            kind: kind.to_string(),
            namespace: "ns".to_string(),
            name: name.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            warning,
            reason: "NewArtifact".to_string(),
            message: "stored revision main@sha1:abc".to_string(),
            revision: Some("main@sha1:abc".to_string()),
        }
    }

    #[test]
    fn alerts_select_by_kind_name_and_labels() {
        let a = alert(
            vec![
                source("GitSource", "*", &[("team", "web")]),
                source("ImagePolicy", "app", &[]),
                source("Release", "*", &[]),
            ],
            &[],
        );
        let wants = |e: &ObjectEvent| alert_wants(&a, e).expect("valid alert");
        assert!(wants(&event(
            "GitSource",
            "repo",
            &[("team", "web")],
            false
        )));
        assert!(!wants(&event(
            "GitSource",
            "repo",
            &[("team", "db")],
            false
        )));
        assert!(!wants(&event("GitSource", "repo", &[], true)));
        assert!(wants(&event("ImagePolicy", "app", &[], false)));
        assert!(!wants(&event("ImagePolicy", "other", &[], false)));
        assert!(
            !wants(&event("OCISource", "app", &[], false)),
            "kind not listed"
        );
        assert!(wants(&event("Release", "anything", &[], false)));
    }

    #[test]
    fn invalid_alert_specs_are_stalled_with_the_field_named() {
        for (a, reason, needle) in [
            (
                alert(vec![source("GitRepository", "*", &[])], &[]),
                "InvalidEventSource",
                "ferry's kind for Flux's GitRepository is GitSource",
            ),
            (
                alert(vec![source("GitSource", "repo", &[("a", "b")])], &[]),
                "InvalidEventSource",
                "matchLabels needs name \"*\"",
            ),
            (
                alert(vec![source("GitSource", "*", &[])], &["("]),
                "InvalidExclusionList",
                "exclusionList entry \"(\"",
            ),
        ] {
            let err = validate_alert(&a).expect_err("invalid");
            assert_eq!(err.reason(), reason);
            assert!(err.needs_change(), "{err}");
            assert!(err.to_string().contains(needle), "{err}");
        }
        let retried = NotifyError::ProviderNotFound("ns/p".to_string());
        assert!(!retried.needs_change());
    }

    #[test]
    fn payloads_name_the_involved_kind() {
        let provider = ResolvedProvider {
            name: "ns/p".to_string(),
            provider_type: ProviderType::GenericHmac,
            address: Url::parse("http://127.0.0.1:9/hook").expect("url"),
            token: None,
            hmac_key: Some(b"k".to_vec()),
            channel: None,
            username: "ferry".to_string(),
            timeout: DEFAULT_TIMEOUT,
            target_url: None,
        };
        let e = event("OCISource", "charts", &[], true);
        let out = build_request(&provider, None, &e).expect("request");
        let body: serde_json::Value = serde_json::from_slice(&out.body).expect("json");
        assert_eq!(body["involvedObject"]["kind"], "OCISource");
        assert_eq!(body["severity"], "error");
        let slack = ResolvedProvider {
            provider_type: ProviderType::Slack,
            ..provider
        };
        let out = build_request(&slack, Some("prod"), &e).expect("request");
        let body: serde_json::Value = serde_json::from_slice(&out.body).expect("json");
        assert_eq!(body["attachments"][0]["title"], "OCISource/ns/charts");
        assert_eq!(body["text"], "prod: OCISource/ns/charts NewArtifact");
    }
}

/// The commit status bodies of the three forges, with their link and the pending state.
#[cfg(test)]
mod commit_status_tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn forge(kind: ProviderType, address: &str, link: Option<&str>) -> ResolvedProvider {
        ResolvedProvider {
            name: "shop/forge".to_string(),
            provider_type: kind,
            address: Url::parse(address).expect("url"),
            token: Some("t0ken".to_string()),
            hmac_key: None,
            channel: None,
            username: "ferry".to_string(),
            timeout: DEFAULT_TIMEOUT,
            target_url: link.map(str::to_string),
        }
    }

    fn release_event(reason: &str, warning: bool) -> ObjectEvent {
        ObjectEvent {
            kind: "Release".to_string(),
            namespace: "shop".to_string(),
            name: "web".to_string(),
            labels: BTreeMap::new(),
            warning,
            reason: reason.to_string(),
            message: format!("main@sha1:{SHA}: {reason}"),
            revision: Some(format!("main@sha1:{SHA}")),
        }
    }

    fn body(out: &Outgoing) -> serde_json::Value {
        serde_json::from_slice(&out.body).expect("json body")
    }

    const DASHBOARD: &str = "https://ferry.example.com/ui/apps/release/{namespace}/{name}";

    #[test]
    fn gitea_status_carries_the_link_and_each_state() {
        let gitea = forge(
            ProviderType::Gitea,
            "https://gitea.example/acme/shop.git",
            Some(DASHBOARD),
        );
        let out = build_request(&gitea, None, &release_event(PROGRESSING, false)).expect("out");
        assert_eq!(
            out.url.as_str(),
            format!("https://gitea.example/api/v1/repos/acme/shop/statuses/{SHA}")
        );
        assert!(
            out.headers
                .contains(&("Authorization", "token t0ken".to_string()))
        );
        assert_eq!(
            body(&out),
            serde_json::json!({
                "state": "pending",
                "context": "ferry/shop/web",
                "description": format!("main@sha1:{SHA}: Progressing"),
                "target_url": "https://ferry.example.com/ui/apps/release/shop/web",
            })
        );
        let done = build_request(&gitea, None, &release_event("Synced", false)).expect("out");
        assert_eq!(body(&done)["state"], "success");
        let failed = build_request(&gitea, None, &release_event("ApplyFailed", true)).expect("out");
        assert_eq!(body(&failed)["state"], "failure");
        assert_eq!(body(&failed)["target_url"], body(&out)["target_url"]);
    }

    #[test]
    fn github_status_carries_the_link() {
        let template = "https://grafana.example/d/deploys?var-release={namespace}/{name}&var-rev={revision}&sha={commit}";
        let github = forge(
            ProviderType::Github,
            "https://github.com/acme/shop",
            Some(template),
        );
        let out = build_request(&github, None, &release_event(PROGRESSING, false)).expect("out");
        assert_eq!(
            out.url.as_str(),
            format!("https://api.github.com/repos/acme/shop/statuses/{SHA}")
        );
        assert_eq!(
            body(&out),
            serde_json::json!({
                "state": "pending",
                "context": "ferry/shop/web",
                "description": format!("main@sha1:{SHA}: Progressing"),
                "target_url": format!("https://grafana.example/d/deploys?var-release=shop/web&var-rev=main%40sha1%3A{SHA}&sha={SHA}"),
            })
        );
        let done = build_request(&github, None, &release_event("Synced", false)).expect("out");
        assert_eq!(body(&done)["state"], "success");
    }

    #[test]
    fn gitlab_status_carries_the_link_as_target_url() {
        let gitlab = forge(
            ProviderType::Gitlab,
            "https://gitlab.example/group/sub/shop",
            Some(DASHBOARD),
        );
        let out = build_request(&gitlab, None, &release_event(PROGRESSING, false)).expect("out");
        assert_eq!(
            out.url.as_str(),
            format!("https://gitlab.example/api/v4/projects/group%2Fsub%2Fshop/statuses/{SHA}")
        );
        assert_eq!(
            body(&out),
            serde_json::json!({
                "state": "running",
                "name": "ferry/shop/web",
                "description": format!("main@sha1:{SHA}: Progressing"),
                "target_url": "https://ferry.example.com/ui/apps/release/shop/web",
            })
        );
        let failed =
            build_request(&gitlab, None, &release_event("ApplyFailed", true)).expect("out");
        assert_eq!(body(&failed)["state"], "failed");
        // No link configured: no `target_url` key at all.
        let plain = forge(
            ProviderType::Gitlab,
            "https://gitlab.example/group/shop",
            None,
        );
        let out = build_request(&plain, None, &release_event("Synced", false)).expect("out");
        assert!(body(&out).get("target_url").is_none(), "{}", body(&out));
    }

    #[test]
    fn link_templates_are_http_without_credentials_and_values_cannot_escape() {
        assert!(check_target_url("shop/forge", DASHBOARD).is_ok());
        for (template, needle) in [
            ("https://admin:s3cret@ferry.example.com/{name}", "user info"),
            ("https://token@ferry.example.com/{name}", "user info"),
            ("javascript:alert('{name}')", "scheme"),
            ("file:///srv/{name}", "scheme"),
            ("/apps/{namespace}/{name}", "not a URL"),
        ] {
            let err = check_target_url("shop/forge", template).expect_err(template);
            assert_eq!(err.reason(), "InvalidTargetURL");
            assert!(err.needs_change(), "{err}");
            let text = err.to_string();
            assert!(
                text.contains(needle) && text.contains("spec.targetURL"),
                "{text}"
            );
            assert!(!text.contains("s3cret"), "never quoted: {text}");
        }
        // A value is one percent-encoded piece: a revision cannot add a path, query or host.
        let url = target_url(
            "shop/forge",
            "https://ferry.example.com/{name}/{revision}",
            "shop",
            "web",
            Some("feature/x?y=1#z@evil.example"),
            None,
        )
        .expect("url");
        assert_eq!(url.host_str(), Some("ferry.example.com"));
        assert_eq!(
            url.as_str(),
            "https://ferry.example.com/web/feature%2Fx%3Fy%3D1%23z%40evil.example"
        );
    }
}
