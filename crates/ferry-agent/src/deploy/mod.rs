//! Deploy requests from CI without cluster credentials (issue 15): `POST /deploy/v1/<ns>/<release>`
//! with the CI system's OIDC ID token. [`verify`] checks the token against its issuer's keys,
//! [`policy`] matches its claims against the namespace's DeployPolicies, [`source`] fetches the
//! commit with history for the reachability and rollback rules, [`queue`] serialises requests
//! per Release, [`handler`] answers the request and streams the run as newline-delimited JSON,
//! and [`pin`] is the Release controller's side (apply the pinned commit, report progress).

pub mod handler;
pub mod pin;
pub mod policy;
pub mod queue;
pub mod source;
pub mod verify;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use ferry_api::DeployPolicy;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Client, Resource, ResourceExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio_util::sync::CancellationToken;

use crate::context::{Key, TenantClients};
use crate::options::AgentOptions;

/// `ferry_deploy_requests_total` labels: the namespace (only one that has DeployPolicies, else
/// empty, so made-up namespaces cannot grow the metric), `accepted` or `refused`, and the reason:
/// for an accepted request how its run ended (`succeeded`, `failed`, `timed-out`, `superseded`),
/// for a refused one why (`invalid`, `unauthenticated`, `issuer-unreachable`, `denied`,
/// `replayed`, `suspended`, `error`, and after acceptance `unreachable`, `rollback`, `source`).
/// One count per request, when its answer is final.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct DeployLabels {
    pub namespace: String,
    pub result: String,
    pub reason: String,
}

/// The metric's name as registered (the text format adds `_total`).
pub const REQUESTS_METRIC: &str = "ferry_deploy_requests";

/// Whether a deploy request was taken on (the `result` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestResult {
    Accepted,
    Refused,
}

impl RequestResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Refused => "refused",
        }
    }
}

/// Everything deploy requests share, for the life of the agent process (every replica serves
/// them, leader or not).
pub struct DeployService {
    /// The agent's own client: reads Releases and GitSources, pins Releases, publishes Events.
    pub client: Client,
    /// Reads GitSource credentials as the namespace's tenant identity.
    pub tenants: Arc<TenantClients>,
    pub options: AgentOptions,
    pub verifier: verify::Verifier,
    pub replay: verify::ReplayGuard,
    pub queue: queue::DeployQueue,
    /// Requests by namespace and result.
    pub requests: Family<DeployLabels, Counter>,
    policies: RwLock<HashMap<Key, DeployPolicy>>,
    ready: AtomicBool,
    reporter: Reporter,
}

impl DeployService {
    pub fn new(client: Client, tenants: Arc<TenantClients>, options: AgentOptions) -> Self {
        let reporter = Reporter {
            controller: "ferry-agent".to_string(),
            instance: options.identity.clone(),
        };
        Self {
            client,
            tenants,
            verifier: verify::Verifier::new(options.deploy_allow_http_issuers),
            options,
            replay: verify::ReplayGuard::default(),
            queue: queue::DeployQueue::default(),
            requests: Family::default(),
            policies: RwLock::default(),
            ready: AtomicBool::new(false),
            reporter,
        }
    }

    /// Count requests in the agent's `ferry_deploy_requests_total` (served on `/metrics`)
    /// instead of a family nobody serves.
    pub fn with_metrics(mut self, metrics: &crate::metrics::Metrics) -> Self {
        self.requests = metrics.shared(
            REQUESTS_METRIC,
            "Deploy requests (POST /deploy/v1/...) by namespace, result (accepted, refused) and reason",
        );
        self
    }

    /// True once the DeployPolicies have been listed (requests before that find none).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The DeployPolicies of `namespace`, from the watch.
    pub fn policies_in(&self, namespace: &str) -> Vec<DeployPolicy> {
        self.policies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|(_, p)| p.clone())
            .collect()
    }

    fn count(&self, namespace: &str, result: RequestResult, reason: &str) {
        self.requests
            .get_or_create(&DeployLabels {
                namespace: namespace.to_string(),
                result: result.as_str().to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// An Event on `obj` (never a secret in the note: subjects, commits and rule names only).
    async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: &str,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note.chars().take(1000).collect()),
            action: "Deploy".to_string(),
            secondary: None,
        };
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(err) = recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::debug!("cannot publish deploy event: {err}");
        }
    }

    /// Keep the DeployPolicies of the watched namespaces in memory until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let namespaces = self.options.watch_namespaces.clone();
        let apis: Vec<Api<DeployPolicy>> = if namespaces.is_empty() {
            vec![Api::all(self.client.clone())]
        } else {
            namespaces
                .iter()
                .map(|ns| Api::namespaced(self.client.clone(), ns))
                .collect()
        };
        let mut events = crate::watch::merged_watch(apis, watcher::Config::default());
        let mut relist: Option<HashMap<Key, DeployPolicy>> = None;
        let key = |p: &DeployPolicy| (p.namespace().unwrap_or_default(), p.name_any());
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = events.next() => event,
            };
            let mut policies = self.policies.write().unwrap_or_else(|p| p.into_inner());
            match event {
                None => return,
                Some(Err(e)) => tracing::debug!("DeployPolicy watch: {e}"),
                Some(Ok(WatchEvent::Init)) => relist = Some(HashMap::new()),
                Some(Ok(WatchEvent::InitApply(p))) => {
                    if let Some(set) = relist.as_mut() {
                        set.insert(key(&p), p);
                    }
                }
                Some(Ok(WatchEvent::InitDone)) => {
                    if let Some(set) = relist.take() {
                        *policies = set;
                    }
                    self.ready.store(true, Ordering::Relaxed);
                }
                Some(Ok(WatchEvent::Apply(p))) => {
                    policies.insert(key(&p), p);
                }
                Some(Ok(WatchEvent::Delete(p))) => {
                    policies.remove(&key(&p));
                }
            }
        }
    }
}
