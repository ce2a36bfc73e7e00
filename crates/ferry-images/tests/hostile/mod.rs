//! Hostile HTTP peers for the registry attack tests (here and in ferry-agent's
//! `attack_image_registry.rs`): every server this module starts IS the attack, written by the
//! test. A [`Peer`] records each request it sees (path, `Authorization`) and answers with the
//! test's handler; [`other_host`] listens on 127.0.0.2, a different origin from the "registry"
//! on 127.0.0.1, and challenges for credentials a naive client would send it.
// Each test binary that includes this module uses a part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;

/// One request as a hostile peer saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub authorization: Option<String>,
}

pub type Handler = Arc<dyn Fn(&Request, SocketAddr) -> Response + Send + Sync>;

/// A hostile HTTP peer on `ip`: records every request, answers with `handler`.
pub struct Peer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Peer {
    pub async fn start(ip: [u8; 4], handler: Handler) -> Self {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from((ip, 0)))
            .await
            .expect("bind hostile peer");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |request: Request| {
            let handler = handler.clone();
            let record = record.clone();
            async move {
                record.lock().expect("seen").push(Seen {
                    path: request
                        .uri()
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    authorization: request
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string),
                });
                handler(&request, addr)
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, seen }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    /// The credential-leak assertion: this peer never received any Authorization header.
    pub fn assert_no_credentials(&self) {
        let leaked: Vec<Seen> = self
            .seen()
            .into_iter()
            .filter(|s| s.authorization.is_some())
            .collect();
        assert!(
            leaked.is_empty(),
            "credentials reached the other host: {leaked:?}"
        );
    }
}

pub fn basic_ok(request: &Request) -> bool {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("robot:hunter2-secret")
    );
    request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str())
}

pub fn respond(status: StatusCode, headers: &[(&str, String)], body: impl Into<Body>) -> Response {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, value.as_str());
    }
    builder.body(body.into()).unwrap_or_default()
}

pub fn basic_challenge() -> Response {
    respond(
        StatusCode::UNAUTHORIZED,
        &[("www-authenticate", "Basic realm=\"hostile\"".into())],
        Body::empty(),
    )
}

/// The other host: answers everything with a Basic challenge, which a naive client answers by
/// sending the credentials it holds.
pub async fn other_host() -> Peer {
    Peer::start([127, 0, 0, 2], Arc::new(|_, _| basic_challenge())).await
}
