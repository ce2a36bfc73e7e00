//! The agent's HTTP servers. The main one (`--http-addr`): `/healthz`, `/readyz` (where the
//! kubelet probes), webhook receivers at `POST /hook/<namespace>/<name>` and the Sealed Secrets
//! certificate at `GET /v1/cert.pem`. A `?token=` query parameter on a webhook is handed to
//! the receiver (dockerhub Receivers authenticate with it) and never logged. `/metrics` is served only on its own listener
//! (`--metrics-addr`), so that the port exposed to webhook senders does not also expose
//! per-tenant object names and counts; the shipped NetworkPolicy opens the webhook port to
//! everyone and the metrics port only to monitoring namespaces.
//!
//! Webhook requests are bounded: headers must arrive within [`HEADER_TIMEOUT`], the body is
//! capped (`--webhook-max-bytes`, 413 as soon as the cap is passed, the body is never buffered
//! whole), each request must finish within [`REQUEST_TIMEOUT`] (408), and at most
//! [`MAX_CONNECTIONS`] connections are open at once, so slow or many senders cannot hold the
//! server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kube::Client;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, WebhookLabels};
use crate::webhook::{self, ReceiverKeys, Rejection};

/// The unsealer's current certificate, served at `/v1/cert.pem`.
pub type CertificateSlot = crate::controllers::unsealer::CertificateHandle;

/// Longest a request may take, body upload included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a client may take to send the request line and headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections open at once per listener; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 1024;

#[derive(Clone)]
pub struct HttpState {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub max_body: usize,
    pub ready: Arc<AtomicBool>,
    pub watch_namespaces: Vec<String>,
    pub certificate: CertificateSlot,
    /// Receivers and their tokens (filled by a background watch started in [`serve`]).
    pub keys: ReceiverKeys,
    /// Deploy requests (`POST /deploy/v1/<namespace>/<release>`); `None`: not served.
    pub deploy: Option<Arc<crate::deploy::DeployService>>,
}

/// The main router: health, webhooks, certificate. No `/metrics` here.
pub fn router(state: HttpState) -> Router {
    let max_body = state.max_body;
    let metrics = state.metrics.clone();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/v1/cert.pem", get(certificate))
        .route("/hook/{namespace}/{name}", post(hook))
        .route(
            "/deploy/v1/{namespace}/{name}",
            post(crate::deploy::handler::deploy),
        )
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(request_timeout))
        .layer(middleware::from_fn_with_state(metrics, count_http))
        .with_state(state)
}

/// The metrics router (its own port).
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .layer(middleware::from_fn(request_timeout))
        .layer(middleware::from_fn_with_state(metrics.clone(), count_http))
        .with_state(metrics)
}

/// Count every answered request in `ferry_http_requests_total` by its route template (never
/// the raw path, so probing URLs cannot grow the metric), method and status code.
async fn count_http(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().clone();
    let response = next.run(request).await;
    metrics.count_http(&route, &method, response.status());
    response
}

async fn request_timeout(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            "request not completed within 30s",
        )
            .into_response(),
    }
}

/// Bind and serve the main router until `shutdown`, and start the Receiver watch that webhook
/// verification reads from; returns the bound address (port 0 picks a free one).
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (--http-addr)"))?;
    let local = listener.local_addr()?;
    tokio::spawn(state.keys.clone().run(
        state.client.clone(),
        state.watch_namespaces.clone(),
        shutdown.clone(),
    ));
    if let Some(deploy) = &state.deploy {
        tokio::spawn(deploy.clone().run(shutdown.clone()));
    }
    let app = router(state);
    let task = tokio::spawn(accept_loop(listener, app, shutdown));
    Ok((local, task))
}

/// Bind and serve `/metrics` on its own address until `shutdown`.
pub async fn serve_metrics_on(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (--metrics-addr)"))?;
    let local = listener.local_addr()?;
    tokio::spawn(accept_loop(listener, metrics_router(metrics), shutdown));
    Ok(local)
}

/// Serve HTTP/1 connections with bounds that `axum::serve` does not set: request headers must
/// arrive within [`HEADER_TIMEOUT`] (a client trickling headers is disconnected), and at most
/// [`MAX_CONNECTIONS`] connections are open at once (more are closed on accept). On `shutdown`,
/// open connections finish their current request.
async fn accept_loop(listener: tokio::net::TcpListener, app: Router, shutdown: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and the like: back off a little instead of spinning.
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!("HTTP connection: {err}");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

async fn readyz(State(state): State<HttpState>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}

async fn certificate(State(state): State<HttpState>) -> Response {
    match state.certificate.certificate_pem() {
        Some(pem) => ([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no sealing certificate yet (the unsealer runs on the leader, with --sealed-secrets)",
        )
            .into_response(),
    }
}

async fn hook(
    State(state): State<HttpState>,
    Path((namespace, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let url_token = query.as_deref().and_then(url_token);
    // Only receivers that exist become metric labels: a prober posting to random names must
    // not grow the metrics without bound.
    let receiver = if state.keys.is_known(&namespace, &name) {
        format!("{namespace}/{name}")
    } else {
        "unknown".to_string()
    };
    let count = |result: &str| {
        state
            .metrics
            .webhooks
            .get_or_create(&WebhookLabels {
                receiver: receiver.clone(),
                result: result.to_string(),
            })
            .inc();
    };
    let watched = state.watch_namespaces.is_empty() || state.watch_namespaces.contains(&namespace);
    let result = if watched {
        webhook::handle(
            &state.client,
            &state.keys,
            &namespace,
            &name,
            url_token.as_deref(),
            &headers,
            &body,
        )
        .await
    } else {
        Err(Rejection::unauthorized())
    };
    match result {
        Ok(accepted) => {
            count("accepted");
            axum::Json(accepted).into_response()
        }
        Err(rejection) => {
            let result = match rejection.status {
                StatusCode::UNAUTHORIZED => "unauthorized",
                StatusCode::CONFLICT => "replayed",
                _ => "rejected",
            };
            count(result);
            (rejection.status, rejection.message).into_response()
        }
    }
}

/// The percent-decoded value of the `token` query parameter (`+` is a space, as in forms);
/// `None` when absent, malformed or not UTF-8 (then verification fails like a wrong token).
fn url_token(query: &str) -> Option<String> {
    let raw = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::url_token;

    #[test]
    fn url_tokens_are_percent_decoded() {
        assert_eq!(url_token("token=abc123").as_deref(), Some("abc123"));
        assert_eq!(url_token("x=1&token=a%2Fb%3D+c").as_deref(), Some("a/b= c"));
        assert_eq!(url_token("tokens=abc"), None);
        assert_eq!(url_token("token=%zz"), None);
        assert_eq!(url_token("token=%4"), None);
        assert_eq!(url_token("token=%ff"), None);
        assert_eq!(url_token("token=").as_deref(), Some(""));
    }
}
