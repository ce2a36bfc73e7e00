//! Prometheus metrics served on `/metrics`: reconcile count/duration/result per release, source
//! fetch duration, queue depth and leadership.

use std::sync::Mutex;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `read` (GET/LIST/WATCH) or `write` (POST/PUT/PATCH/DELETE, dry runs included).
    pub kind: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub receiver: String,
    pub result: String,
}

/// All metrics of one agent process.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_duration: Family<ObjectLabels, Histogram>,
    pub fetch_duration: Family<ObjectLabels, Histogram>,
    pub in_flight: Gauge<i64, AtomicI64>,
    pub queued: Gauge<i64, AtomicI64>,
    pub leader: Gauge<i64, AtomicI64>,
    pub webhooks: Family<WebhookLabels, Counter>,
    pub api_requests: Family<RequestLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ferry");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let reconcile_duration =
            Family::<ObjectLabels, Histogram>::new_with_constructor(seconds_histogram as fn() -> _);
        let fetch_duration =
            Family::<ObjectLabels, Histogram>::new_with_constructor(seconds_histogram as fn() -> _);
        let in_flight = Gauge::<i64, AtomicI64>::default();
        let queued = Gauge::<i64, AtomicI64>::default();
        let leader = Gauge::<i64, AtomicI64>::default();
        let webhooks = Family::<WebhookLabels, Counter>::default();
        let api_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Kubernetes API requests sent by this agent (all clients, tenants included)",
            api_requests.clone(),
        );
        registry.register(
            "reconcile",
            "Reconciles by kind, object and result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration by object",
            reconcile_duration.clone(),
        );
        registry.register(
            "source_fetch_duration_seconds",
            "Git fetch duration by GitSource",
            fetch_duration.clone(),
        );
        registry.register(
            "reconciles_in_flight",
            "Reconciles running right now",
            in_flight.clone(),
        );
        registry.register(
            "queue_depth",
            "Releases with work pending (spec not observed, or a source revision not yet attempted)",
            queued.clone(),
        );
        registry.register(
            "leader",
            "1 when this replica holds the lease",
            leader.clone(),
        );
        registry.register(
            "webhook_requests",
            "Webhook requests by receiver and result",
            webhooks.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            reconciles,
            reconcile_duration,
            fetch_duration,
            in_flight,
            queued,
            leader,
            webhooks,
            api_requests,
        }
    }

    pub fn count_request(&self, method: &http::Method) {
        let kind = match *method {
            http::Method::GET | http::Method::HEAD => "read",
            _ => "write",
        };
        self.api_requests
            .get_or_create(&RequestLabels {
                kind: kind.to_string(),
                method: method.as_str().to_string(),
            })
            .inc();
    }

    pub fn observe_reconcile(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        ok: bool,
        took: Duration,
    ) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                kind: kind.to_string(),
                namespace: namespace.to_string(),
                name: name.to_string(),
                result: if ok { "success" } else { "failure" }.to_string(),
            })
            .inc();
        self.reconcile_duration
            .get_or_create(&ObjectLabels {
                kind: kind.to_string(),
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}
