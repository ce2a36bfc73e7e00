//! Prometheus metrics served on `/metrics`: the same reconcile count, duration, errors and
//! in-flight gauge for every controller (labelled by controller kind), per-object reconcile
//! results and state (`ferry_resource_info`), source fetch duration, queue depth, leadership,
//! webhooks, HTTP and API requests with their status codes, the build and the process (CPU,
//! memory, file descriptors). docs/agent.md lists them.
//!
//! Label vocabulary, the same in every metric: `kind` is always a ferry object kind
//! (`Release`, `GitSource`, ...), `controller` the controller named after its kind, `code` an
//! HTTP status code, `operation` `read` or `write`.

use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
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
    /// (Before issue 16 this label was called `kind`, which everywhere else is an object kind.)
    pub operation: String,
    pub method: String,
    /// The HTTP status code of the answer, or `error` when none came (connection, timeout).
    pub code: String,
}

/// Requests the agent's own HTTP servers answered.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route as declared (`/hook/{namespace}/{name}`), never the raw path: probing random
    /// URLs cannot grow the metrics. `unmatched` for paths no route serves.
    pub route: String,
    pub method: String,
    pub code: String,
}

/// `ferry_build_info`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub os: String,
    pub arch: String,
}

/// One ferry object's state, as `ferry_resource_info` exports it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectInfo {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The Ready condition's status: `True`, `False` or `Unknown`.
    pub ready: String,
    /// `true` or `false`.
    pub suspended: String,
    /// A Release's last applied revision, a source's fetched revision; empty when none.
    pub revision: String,
}

/// Lists the objects `ferry_resource_info` reports, at every scrape (the controllers' caches:
/// no API request, and an object gone from the cache is gone from the metric).
pub trait ObjectInfoSource: Send + Sync {
    fn object_infos(&self) -> Vec<ObjectInfo>;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub receiver: String,
    pub result: String,
}

/// All metrics of one agent process.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Metrics other modules own, registered once per process (see [`Metrics::shared`]).
    shared: Mutex<std::collections::HashMap<&'static str, Box<dyn std::any::Any + Send>>>,
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
    pub http_requests: Family<HttpLabels, Counter>,
    /// The leadership term's caches, read by `ferry_resource_info` (see [`Metrics::watch_objects`]).
    objects: Arc<Mutex<Option<Weak<dyn ObjectInfoSource>>>>,
    /// Length of the last scrape's text: the next one starts with that much room.
    last_scrape_len: std::sync::atomic::AtomicUsize,
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
        // The process metrics keep their standard, unprefixed names (process_cpu_seconds_total,
        // ...) so that existing dashboards and alerts work; everything else is ferry_*.
        let mut root = Registry::default();
        #[cfg(target_os = "linux")]
        root.register_collector(Box::new(crate::process_metrics::ProcessCollector));
        let registry = root.sub_registry_with_prefix("ferry");
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
        let http_requests = Family::<HttpLabels, Counter>::default();
        let objects: Arc<Mutex<Option<Weak<dyn ObjectInfoSource>>>> = Arc::default();
        registry.register(
            "api_requests",
            "Kubernetes API requests sent by this agent (all clients, tenants included), by operation (read, write), method and status code",
            api_requests.clone(),
        );
        registry.register(
            "http_requests",
            "Requests the agent's HTTP servers answered (webhooks, health, metrics), by route, method and status code",
            http_requests.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge<i64, AtomicI64>>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
                os: std::env::consts::OS.to_string(),
                arch: std::env::consts::ARCH.to_string(),
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the labels say which ferry-agent build runs",
            build_info,
        );
        registry.register_collector(Box::new(ResourceInfoCollector {
            objects: objects.clone(),
        }));
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
            registry: Mutex::new(root),
            shared: Mutex::default(),
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
            http_requests,
            objects,
            last_scrape_len: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Count one API request by its method and the status code of its answer (`None`: no
    /// answer came).
    pub fn count_request(&self, method: &http::Method, code: Option<http::StatusCode>) {
        let operation = match *method {
            http::Method::GET | http::Method::HEAD => "read",
            _ => "write",
        };
        self.api_requests
            .get_or_create(&RequestLabels {
                operation: operation.to_string(),
                method: method.as_str().to_string(),
                code: code.map_or_else(|| "error".to_string(), |c| c.as_u16().to_string()),
            })
            .inc();
    }

    /// Count one request an HTTP server of the agent answered.
    pub fn count_http(&self, route: &str, method: &http::Method, code: http::StatusCode) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_string(),
                method: method.as_str().to_string(),
                code: code.as_u16().to_string(),
            })
            .inc();
    }

    /// Report the objects `source` lists in `ferry_resource_info` from now on (each leadership
    /// term's context; held weakly, so a finished term reports nothing).
    pub fn watch_objects(&self, source: Weak<dyn ObjectInfoSource>) {
        *self.objects.lock().unwrap_or_else(|p| p.into_inner()) = Some(source);
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

    /// A metric owned by another module (the drift metrics of `crate::drift`; `name` with its
    /// `ferry_` prefix, the root registry takes it as given): registered
    /// under `name` the first time, the same metric (a clone shares its values) afterwards, so
    /// that each leadership term's context can ask for it again.
    pub fn shared<M>(&self, name: &'static str, help: &str) -> M
    where
        M: prometheus_client::registry::Metric + Clone + Default + Send + 'static,
    {
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(metric) = shared.get(name).and_then(|m| m.downcast_ref::<M>()) {
            return metric.clone();
        }
        let metric = M::default();
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .register(name, help, metric.clone());
        shared.insert(name, Box::new(metric.clone()));
        metric
    }

    /// The text exposition format.
    ///
    /// The text starts with the room the last scrape needed: with per-Release series it is
    /// 2–4 KB per Release (20–40 MB at 10,000), and growing a String by doubling briefly
    /// holds the old and the new buffer, which at that size was the agent's peak heap.
    pub fn encode(&self) -> String {
        use std::sync::atomic::Ordering;
        let room = self.last_scrape_len.load(Ordering::Relaxed);
        let mut out = String::with_capacity(room + room / 16);
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        self.last_scrape_len.store(out.len(), Ordering::Relaxed);
        out
    }
}

/// A tower layer for kube clients: counts every request in `ferry_api_requests_total` once its
/// answer's status is known (see [`Metrics::count_request`]).
#[derive(Clone)]
pub struct CountApiRequestsLayer {
    metrics: Arc<Metrics>,
}

impl CountApiRequestsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for CountApiRequestsLayer {
    type Service = CountApiRequests<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountApiRequests {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`CountApiRequestsLayer`] makes.
#[derive(Clone)]
pub struct CountApiRequests<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for CountApiRequests<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.method().clone();
        let metrics = self.metrics.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let result = answer.await;
            metrics.count_request(&method, result.as_ref().ok().map(http::Response::status));
            result
        })
    }
}

/// Encodes `ferry_resource_info` at scrape time from the current term's caches.
struct ResourceInfoCollector {
    objects: Arc<Mutex<Option<Weak<dyn ObjectInfoSource>>>>,
}

impl std::fmt::Debug for ResourceInfoCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResourceInfoCollector")
    }
}

impl Collector for ResourceInfoCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let source = self
            .objects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(Weak::upgrade);
        let mut infos = source.map(|s| s.object_infos()).unwrap_or_default();
        infos.sort_by(|a, b| {
            (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name))
        });
        let mut family = encoder.encode_descriptor(
            "resource_info",
            "Always 1 per ferry object this replica reconciles (the leader); the labels carry its kind, namespace, name, Ready status, whether it is suspended, and its revision",
            None,
            MetricType::Gauge,
        )?;
        for info in &infos {
            ConstGauge::new(1i64).encode(family.encode_family(info)?)?;
        }
        Ok(())
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

    struct Listed(Vec<ObjectInfo>);

    impl ObjectInfoSource for Listed {
        fn object_infos(&self) -> Vec<ObjectInfo> {
            self.0.clone()
        }
    }

    #[test]
    fn objects_build_process_and_requests_are_exported() {
        let metrics = Metrics::new();
        let text = metrics.encode();
        assert!(
            text.contains(&format!(
                "ferry_build_info{{version=\"{}\",os=\"{}\",arch=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::env::consts::ARCH
            )),
            "{text}"
        );
        // No term yet: the info metric is declared but has no series.
        assert!(!text.contains("ferry_resource_info{"), "{text}");
        let source: Arc<dyn ObjectInfoSource> = Arc::new(Listed(vec![ObjectInfo {
            kind: "Release".into(),
            namespace: "team-a".into(),
            name: "web".into(),
            ready: "True".into(),
            suspended: "false".into(),
            revision: "main@sha1:abc".into(),
        }]));
        metrics.watch_objects(Arc::downgrade(&source));
        let text = metrics.encode();
        assert!(
            text.contains("ferry_resource_info{kind=\"Release\",namespace=\"team-a\",name=\"web\",ready=\"True\",suspended=\"false\",revision=\"main@sha1:abc\"} 1"),
            "{text}"
        );
        // The term ended (its context dropped): its objects are gone from the metric.
        drop(source);
        assert!(!metrics.encode().contains("ferry_resource_info{"));

        metrics.count_request(&http::Method::PATCH, Some(http::StatusCode::CONFLICT));
        metrics.count_request(&http::Method::GET, None);
        metrics.count_http(
            "/hook/{namespace}/{name}",
            &http::Method::POST,
            http::StatusCode::UNAUTHORIZED,
        );
        let text = metrics.encode();
        for line in [
            "ferry_api_requests_total{operation=\"write\",method=\"PATCH\",code=\"409\"} 1",
            "ferry_api_requests_total{operation=\"read\",method=\"GET\",code=\"error\"} 1",
            "ferry_http_requests_total{route=\"/hook/{namespace}/{name}\",method=\"POST\",code=\"401\"} 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        #[cfg(target_os = "linux")]
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "missing {name} in\n{text}"
            );
        }
    }

    /// `kind` names an object kind in every metric that has it (issue 16: the API request
    /// metric used it for read/write).
    #[test]
    fn the_kind_label_always_names_an_object_kind() {
        let metrics = Arc::new(Metrics::new());
        metrics.observe_reconcile("Release", "a", "b", true, Duration::from_millis(1));
        metrics.count_request(&http::Method::GET, Some(http::StatusCode::OK));
        metrics
            .fetch_duration
            .get_or_create(&ObjectLabels {
                kind: "GitSource".into(),
                namespace: "a".into(),
                name: "b".into(),
            })
            .observe(0.1);
        let kinds = [
            "Release",
            "GitSource",
            "OCISource",
            "Receiver",
            "ImageRepository",
            "ImagePolicy",
            "ImageUpdate",
            "SealedSecret",
        ];
        for line in metrics.encode().lines().filter(|l| !l.starts_with('#')) {
            if let Some((_, rest)) = line.split_once("kind=\"") {
                let kind = rest.split('"').next().unwrap_or_default();
                assert!(kinds.contains(&kind), "kind={kind:?} in {line}");
            }
        }
    }
}
