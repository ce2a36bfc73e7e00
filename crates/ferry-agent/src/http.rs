//! The agent's HTTP server: `/healthz`, `/readyz`, `/metrics`, webhook receivers at
//! `POST /hook/<namespace>/<name>` (payload size capped), and the Sealed Secrets certificate at
//! `GET /v1/cert.pem` once the unsealer has one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kube::Client;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, WebhookLabels};
use crate::webhook;

/// The unsealer's current certificate, served at `/v1/cert.pem`.
pub type CertificateSlot = ferry_engine::decrypt::sealed::CertificateHandle;

#[derive(Clone)]
pub struct HttpState {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub max_body: usize,
    pub ready: Arc<AtomicBool>,
    pub watch_namespaces: Vec<String>,
    pub certificate: CertificateSlot,
}

pub fn router(state: HttpState) -> Router {
    let max_body = state.max_body;
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/cert.pem", get(certificate))
        .route("/hook/{namespace}/{name}", post(hook))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Bind and serve until `shutdown`; returns the bound address (port 0 picks a free one).
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (--http-addr)"))?;
    let local = listener.local_addr()?;
    let app = router(state);
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(err) = result {
            tracing::error!("HTTP server failed: {err}");
        }
    });
    Ok((local, task))
}

async fn readyz(State(state): State<HttpState>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
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
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let label = |result: &str| WebhookLabels {
        receiver: format!("{namespace}/{name}"),
        result: result.to_string(),
    };
    if !state.watch_namespaces.is_empty() && !state.watch_namespaces.contains(&namespace) {
        state
            .metrics
            .webhooks
            .get_or_create(&label("not-found"))
            .inc();
        return (StatusCode::NOT_FOUND, "no such receiver").into_response();
    }
    match webhook::handle(&state.client, &namespace, &name, &headers, &body).await {
        Ok(accepted) => {
            state
                .metrics
                .webhooks
                .get_or_create(&label("accepted"))
                .inc();
            axum::Json(accepted).into_response()
        }
        Err(rejection) => {
            let result = if rejection.status == StatusCode::UNAUTHORIZED {
                "unauthorized"
            } else {
                "rejected"
            };
            state.metrics.webhooks.get_or_create(&label(result)).inc();
            tracing::info!(receiver = %format!("{namespace}/{name}"), status = %rejection.status, "webhook rejected: {}", rejection.message);
            (rejection.status, rejection.message).into_response()
        }
    }
}
