//! Prometheus metrics served on `/metrics`: the same reconcile count, duration, errors and
//! in-flight gauge for every controller (labelled by controller kind), per-object reconcile
//! results, source fetch duration, queue depth, leadership, webhooks and API requests.
//! docs/agent.md lists them.

use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
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

/// One controller (`Release`, `GitSource`, `Receiver`, `ImageRepository`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

/// One controller and how a reconcile ended: `success` (the object is Ready), `failure` (the
/// reconcile ran and wrote why the object is not Ready: a fetch, render or apply failed), `error`
/// (the reconcile could not finish, e.g. its status write failed; retried with backoff).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerResultLabels {
    pub controller: String,
    pub result: String,
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
    /// Per controller: reconciles by result, their duration, the unsuccessful ones, and how
    /// many run right now.
    pub controller_reconciles: Family<ControllerResultLabels, Counter>,
    pub controller_duration: Family<ControllerLabels, Histogram>,
    pub controller_errors: Family<ControllerLabels, Counter>,
    pub controller_in_flight: Family<ControllerLabels, Gauge<i64, AtomicI64>>,
    pub fetch_duration: Family<ObjectLabels, Histogram>,
    /// Reconciles running right now, all controllers together.
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
        let controller_reconciles = Family::<ControllerResultLabels, Counter>::default();
        let controller_duration = Family::<ControllerLabels, Histogram>::new_with_constructor(
            seconds_histogram as fn() -> _,
        );
        let controller_errors = Family::<ControllerLabels, Counter>::default();
        let controller_in_flight = Family::<ControllerLabels, Gauge<i64, AtomicI64>>::default();
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
            "controller_reconcile",
            "Reconciles by controller and result (success, failure, error)",
            controller_reconciles.clone(),
        );
        registry.register(
            "controller_reconcile_duration_seconds",
            "Reconcile duration by controller",
            controller_duration.clone(),
        );
        registry.register(
            "controller_reconcile_errors",
            "Reconciles that did not succeed (result failure or error), by controller",
            controller_errors.clone(),
        );
        registry.register(
            "controller_reconciles_in_flight",
            "Reconciles running right now, by controller",
            controller_in_flight.clone(),
        );
        registry.register(
            "source_fetch_duration_seconds",
            "Git fetch duration by GitSource",
            fetch_duration.clone(),
        );
        registry.register(
            "reconciles_in_flight",
            "Reconciles running right now (all controllers)",
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
            controller_reconciles,
            controller_duration,
            controller_errors,
            controller_in_flight,
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

    /// Count a reconcile of `kind` as running until the returned guard is dropped (the
    /// all-controllers and the per-controller in-flight gauges).
    pub fn running(self: &Arc<Self>, kind: &str) -> Running {
        let labels = ControllerLabels {
            controller: kind.to_string(),
        };
        self.in_flight.inc();
        self.controller_in_flight.get_or_create(&labels).inc();
        Running {
            metrics: self.clone(),
            labels,
        }
    }

    /// A reconcile that ran to a decision: `ok` when the object is Ready (`success`), else
    /// `failure`. Every controller calls this once per reconcile.
    pub fn observe_reconcile(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        ok: bool,
        took: Duration,
    ) {
        let result = if ok { "success" } else { "failure" };
        self.count_controller_result(kind, result);
        self.controller_duration
            .get_or_create(&ControllerLabels {
                controller: kind.to_string(),
            })
            .observe(took.as_secs_f64());
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

    /// A reconcile of `kind` that returned an error to the controller (its error policy retries
    /// it with backoff): counted as result `error`.
    pub fn observe_error(&self, kind: &str) {
        self.count_controller_result(kind, "error");
    }

    fn count_controller_result(&self, kind: &str, result: &str) {
        self.controller_reconciles
            .get_or_create(&ControllerResultLabels {
                controller: kind.to_string(),
                result: result.to_string(),
            })
            .inc();
        if result != "success" {
            self.controller_errors
                .get_or_create(&ControllerLabels {
                    controller: kind.to_string(),
                })
                .inc();
        }
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

/// A running reconcile, counted in the in-flight gauges until dropped (see [`Metrics::running`]).
pub struct Running {
    metrics: Arc<Metrics>,
    labels: ControllerLabels,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
        self.metrics
            .controller_in_flight
            .get_or_create(&self.labels)
            .dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_controller_gets_the_same_metrics_by_kind() {
        let metrics = Arc::new(Metrics::new());
        for kind in ["Release", "GitSource", "Receiver"] {
            let running = metrics.running(kind);
            assert!(metrics.encode().contains(&format!(
                "ferry_controller_reconciles_in_flight{{controller=\"{kind}\"}} 1"
            )));
            metrics.observe_reconcile(kind, "team-a", "x", true, Duration::from_millis(5));
            metrics.observe_reconcile(kind, "team-a", "x", false, Duration::from_millis(5));
            metrics.observe_error(kind);
            drop(running);
        }
        let text = metrics.encode();
        for kind in ["Release", "GitSource", "Receiver"] {
            for (result, n) in [("success", 1), ("failure", 1), ("error", 1)] {
                let line = format!(
                    "ferry_controller_reconcile_total{{controller=\"{kind}\",result=\"{result}\"}} {n}"
                );
                assert!(text.contains(&line), "missing {line} in\n{text}");
            }
            let errors =
                format!("ferry_controller_reconcile_errors_total{{controller=\"{kind}\"}} 2");
            assert!(text.contains(&errors), "missing {errors}");
            let count = format!(
                "ferry_controller_reconcile_duration_seconds_count{{controller=\"{kind}\"}} 2"
            );
            assert!(text.contains(&count), "missing {count}");
            let idle = format!("ferry_controller_reconciles_in_flight{{controller=\"{kind}\"}} 0");
            assert!(text.contains(&idle), "missing {idle}");
        }
        assert!(text.contains("ferry_reconciles_in_flight 0"));
    }
}
