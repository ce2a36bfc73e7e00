//! Counting the API requests a client sends, once, where they are sent: a tower layer on the
//! kube `Client` ([`CountRequestsLayer`]). The engine wraps each run's client with a
//! [`RequestCounter`] ([`counted`]) and reports the counts (`ApplyReport::requests`: the
//! benchmark and the tests rely on them); the agent puts the same layer on the clients it builds
//! to feed its `ferry_api_requests_total` metric.
//!
//! A read is a GET or HEAD (gets, lists, discovery, watches); everything else (apply PATCHes,
//! creates, replaces, deletes, SelfSubjectReviews) is a write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use tower::{Layer, Service};

use crate::report::RequestCounts;

/// Whether a request reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    Read,
    Write,
}

impl RequestKind {
    pub fn of(method: &Method) -> Self {
        if *method == Method::GET || *method == Method::HEAD {
            Self::Read
        } else {
            Self::Write
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

/// Told about every request as it is sent.
pub trait ObserveRequest: Send + Sync + 'static {
    fn observe(&self, kind: RequestKind, method: &Method);
}

impl<F> ObserveRequest for F
where
    F: Fn(RequestKind, &Method) + Send + Sync + 'static,
{
    fn observe(&self, kind: RequestKind, method: &Method) {
        self(kind, method)
    }
}

/// Reads and writes sent so far; clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter {
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    reads: AtomicU64,
    writes: AtomicU64,
}

impl RequestCounter {
    pub fn snapshot(&self) -> RequestCounts {
        RequestCounts {
            reads: self.counts.reads.load(Ordering::Relaxed),
            writes: self.counts.writes.load(Ordering::Relaxed),
        }
    }
}

impl ObserveRequest for RequestCounter {
    fn observe(&self, kind: RequestKind, _method: &Method) {
        let counter = match kind {
            RequestKind::Read => &self.counts.reads,
            RequestKind::Write => &self.counts.writes,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A tower layer that tells an [`ObserveRequest`] about every request passing through. Put it
/// on a client as it is built (`ClientBuilder::with_layer`) or around a built one
/// ([`counted`]).
#[derive(Clone)]
pub struct CountRequestsLayer {
    observer: Arc<dyn ObserveRequest>,
}

impl CountRequestsLayer {
    pub fn new(observer: impl ObserveRequest) -> Self {
        Self {
            observer: Arc::new(observer),
        }
    }
}

impl<S> Layer<S> for CountRequestsLayer {
    type Service = CountRequests<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountRequests {
            inner,
            observer: self.observer.clone(),
        }
    }
}

/// The service [`CountRequestsLayer`] makes.
#[derive(Clone)]
pub struct CountRequests<S> {
    inner: S,
    observer: Arc<dyn ObserveRequest>,
}

impl<S, B> Service<Request<B>> for CountRequests<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.observer
            .observe(RequestKind::of(request.method()), request.method());
        self.inner.call(request)
    }
}

/// A built client as a tower service, so a layer can go around it. Errors are the client's own
/// `kube::Error`s, which the outer client hands back unchanged.
#[derive(Clone)]
struct ClientService(Client);

impl Service<Request<Body>> for ClientService {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The inner client buffers and waits for readiness itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let client = self.0.clone();
        Box::pin(async move { client.send(request).await })
    }
}

/// `client`, with every request it sends counted in `counter` (same server, identity and
/// default namespace).
pub fn counted(client: &Client, counter: &RequestCounter) -> Client {
    let layer = CountRequestsLayer::new(counter.clone());
    Client::new(
        layer.layer(ClientService(client.clone())),
        client.default_namespace(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service that answers every request at once, standing in for the API server.
    #[derive(Clone)]
    struct Answer;

    impl Service<Request<()>> for Answer {
        type Response = ();
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<(), Self::Error>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _request: Request<()>) -> Self::Future {
            std::future::ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn reads_and_writes_are_counted_by_method() {
        use tower::ServiceExt;
        let counter = RequestCounter::default();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let mut service = CountRequestsLayer::new(counter.clone()).layer(
            CountRequestsLayer::new(move |kind: RequestKind, method: &Method| {
                log.lock().unwrap().push((kind, method.clone()));
            })
            .layer(Answer),
        );
        for method in [
            Method::GET,
            Method::PATCH,
            Method::GET,
            Method::DELETE,
            Method::POST,
            Method::PUT,
            Method::HEAD,
        ] {
            let request = Request::builder().method(method).body(()).unwrap();
            service.ready().await.unwrap().call(request).await.unwrap();
        }
        assert_eq!(counter.snapshot().reads, 3);
        assert_eq!(counter.snapshot().writes, 4);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 7, "every observer sees every request");
        assert_eq!(seen[1], (RequestKind::Write, Method::PATCH));
    }
}
