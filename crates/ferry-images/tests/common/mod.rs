//! Helpers for ferry-images' integration tests against the real testenv: push images and tags
//! to the real OCI registry (crane for the first image, the distribution API for more tags),
//! and a local token gateway standing in for a hosted registry's token service.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine;
use ferry_testsupport::TestEnv;

pub fn unique(prefix: &str) -> String {
    ferry_testsupport::unique_name(prefix).replace("ferry-test-", "")
}

/// A docker config dir with credentials for the auth registry (crane reads `$DOCKER_CONFIG`).
pub fn docker_config(env: &TestEnv) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        env.var("FERRY_REGISTRY_AUTH_USER"),
        env.var("FERRY_REGISTRY_AUTH_PASSWORD")
    ));
    let json = format!(
        r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#,
        env.var("FERRY_REGISTRY_AUTH")
    );
    std::fs::write(dir.path().join("config.json"), json).expect("write docker config");
    dir
}

/// `crane append` an empty layer as `reference`; returns the digest crane prints.
pub use ferry_testsupport::git::push_empty_image as crane_push;

/// Tag an existing manifest with many more tags through the distribution API (a PUT per tag),
/// `concurrency` at a time. Much faster than one crane process per tag.
pub async fn put_tags(
    registry: &str,
    repo: &str,
    from_tag: &str,
    tags: &[String],
    basic: Option<(&str, &str)>,
) {
    let client = reqwest::Client::new();
    let accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
    let mut get = client
        .get(format!("http://{registry}/v2/{repo}/manifests/{from_tag}"))
        .header("Accept", accept);
    if let Some((u, p)) = basic {
        get = get.basic_auth(u, Some(p));
    }
    let resp = get.send().await.expect("GET manifest");
    assert!(
        resp.status().is_success(),
        "GET manifest: {}",
        resp.status()
    );
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/vnd.oci.image.manifest.v1+json")
        .to_string();
    let body = resp.bytes().await.expect("manifest body");
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::new();
    for tag in tags {
        let client = client.clone();
        let url = format!("http://{registry}/v2/{repo}/manifests/{tag}");
        let body = body.clone();
        let content_type = content_type.clone();
        let basic = basic.map(|(u, p)| (u.to_string(), p.to_string()));
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        tasks.push(tokio::spawn(async move {
            let mut put = client
                .put(&url)
                .header("Content-Type", content_type)
                .body(body);
            if let Some((u, p)) = basic {
                put = put.basic_auth(u, Some(p));
            }
            let resp = put.send().await.expect("PUT manifest");
            assert!(resp.status().is_success(), "PUT {url}: {}", resp.status());
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.expect("tag task");
    }
}

/// A stand-in for a hosted registry's front door (Docker Hub / GHCR style), proxying to the real
/// testenv registry: the OCI bearer-token flow (401 + `WWW-Authenticate: Bearer`, a token
/// endpoint checking basic credentials), `ETag` / `If-None-Match` on tag lists, and an optional
/// budget of 429 answers with `Retry-After`. Only the token service and these headers are
/// simulated; tags and manifests come from the real registry.
#[derive(Clone)]
pub struct Gateway {
    pub addr: String,
    pub state: Arc<GatewayState>,
}

pub struct GatewayState {
    upstream: String,
    user: String,
    password: String,
    realm: std::sync::Mutex<String>,
    pub requests: AtomicUsize,
    pub token_requests: AtomicUsize,
    pub throttle: AtomicUsize,
    pub retry_after_secs: AtomicUsize,
    /// When non-zero, tag lists asking for more than this many (`n`) get 400, as Docker Hub
    /// answers n > 100.
    pub max_n: AtomicUsize,
    /// When non-zero, authenticated requests get 403 (a token without pull rights).
    pub forbid: AtomicUsize,
    tokens: std::sync::Mutex<BTreeMap<String, ()>>,
}

impl Gateway {
    pub async fn start(upstream: &str, user: &str, password: &str) -> Self {
        let state = Arc::new(GatewayState {
            upstream: upstream.to_string(),
            user: user.to_string(),
            password: password.to_string(),
            realm: std::sync::Mutex::new(String::new()),
            requests: AtomicUsize::new(0),
            token_requests: AtomicUsize::new(0),
            throttle: AtomicUsize::new(0),
            retry_after_secs: AtomicUsize::new(1),
            max_n: AtomicUsize::new(0),
            forbid: AtomicUsize::new(0),
            tokens: std::sync::Mutex::default(),
        });
        let app = axum::Router::new()
            .route("/token", axum::routing::get(token))
            .fallback(proxy)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let addr = listener.local_addr().expect("addr").to_string();
        *state.realm.lock().expect("realm") = format!("http://{addr}/token");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state }
    }
}

async fn token(State(state): State<Arc<GatewayState>>, headers: HeaderMap) -> Response {
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", state.user, state.password))
    );
    let ok = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str());
    if !ok {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .body(Body::from("{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}"))
            .unwrap_or_default();
    }
    let token = format!("tok-{}", state.token_requests.load(Ordering::SeqCst));
    state
        .tokens
        .lock()
        .expect("tokens")
        .insert(token.clone(), ());
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(format!(
            "{{\"token\":\"{token}\",\"expires_in\":300}}"
        )))
        .unwrap_or_default()
}

async fn proxy(State(state): State<Arc<GatewayState>>, request: Request) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let path_q = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let bearer = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let authorised = bearer.is_some_and(|t| state.tokens.lock().expect("tokens").contains_key(&t));
    if !authorised {
        let realm = state.realm.lock().expect("realm").clone();
        let name = request
            .uri()
            .path()
            .trim_start_matches("/v2/")
            .split("/tags/")
            .next()
            .unwrap_or_default()
            .split("/manifests/")
            .next()
            .unwrap_or_default()
            .to_string();
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(
                "www-authenticate",
                format!(
                    "Bearer realm=\"{realm}\",service=\"gateway\",scope=\"repository:{name}:pull\""
                ),
            )
            .body(Body::empty())
            .unwrap_or_default();
    }
    if state.forbid.load(Ordering::SeqCst) > 0 {
        return Response::builder()
            .status(StatusCode::FORBIDDEN)
            .body(Body::from("{\"errors\":[{\"code\":\"DENIED\"}]}"))
            .unwrap_or_default();
    }
    if state.throttle.load(Ordering::SeqCst) > 0 {
        state.throttle.fetch_sub(1, Ordering::SeqCst);
        return Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header(
                "retry-after",
                state.retry_after_secs.load(Ordering::SeqCst).to_string(),
            )
            .body(Body::from("{\"errors\":[{\"code\":\"TOOMANYREQUESTS\"}]}"))
            .unwrap_or_default();
    }
    let max_n = state.max_n.load(Ordering::SeqCst);
    if max_n > 0 && path_q.contains("/tags/list") {
        let n = request
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| kv.strip_prefix("n="))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        if n > max_n {
            return Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .body(Body::from(
                    "{\"errors\":[{\"code\":\"PAGINATION_NUMBER_INVALID\"}]}",
                ))
                .unwrap_or_default();
        }
    }
    let if_none_match = request.headers().get("if-none-match").cloned();
    let accept = request.headers().get("accept").cloned();
    let client = reqwest::Client::new();
    let mut upstream = client.request(
        request.method().clone(),
        format!("http://{}{path_q}", state.upstream),
    );
    if let Some(a) = accept {
        upstream = upstream.header("accept", a);
    }
    let Ok(resp) = upstream.send().await else {
        return Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::empty())
            .unwrap_or_default();
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap_or_default();
    let mut builder = Response::builder().status(status.as_u16());
    for name in ["content-type", "docker-content-digest", "link"] {
        if let Some(v) = headers.get(name) {
            builder = builder.header(name, v.clone());
        }
    }
    if path_q.contains("/tags/list") && status.is_success() {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body);
        let etag = format!("\"{}\"", hex::encode(&d.as_ref()[..16]));
        if if_none_match.as_ref().and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
            return Response::builder()
                .status(StatusCode::NOT_MODIFIED)
                .header(
                    "etag",
                    HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"x\"")),
                )
                .body(Body::empty())
                .unwrap_or_default();
        }
        builder = builder.header("etag", etag);
    }
    builder.body(Body::from(body)).unwrap_or_default()
}

pub fn cache_dir() -> PathBuf {
    std::env::temp_dir().join(unique("images-cache"))
}

/// The git CLI: the shared fixture.
#[allow(unused_imports)]
pub use ferry_testsupport::git::{git, git_raw};

/// The shared repository fixture (`ferry_testsupport::git::Repo`), whose `commit` here takes
/// file contents only, as these tests always wrote them.
pub struct Repo(ferry_testsupport::git::Repo);

impl Repo {
    pub fn create(env: &TestEnv, name: &str) -> Self {
        Self(ferry_testsupport::git::Repo::create(env, name))
    }

    /// A human's commit on top of the current upstream main; returns its SHA.
    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        self.0.commit_files(files, message)
    }
}

impl std::ops::Deref for Repo {
    type Target = ferry_testsupport::git::Repo;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}
