//! The web server, and the only part of ferry-ui with a cluster client: it connects with the
//! user's kubeconfig (so every read and action is checked by the API server against the
//! user's own RBAC), keeps the apps list from watches ([`store`]), reads one app's page on
//! demand ([`detail`]), runs actions ([`actions`]) and pushes changes to pages over SSE.
//!
//! In-cluster later: the same router runs behind the agent's chart; [`Access`] is the one
//! place that would then build a client impersonating the authenticated user instead of using
//! the kubeconfig's identity (and the store would be kept per user).

pub mod actions;
pub mod detail;
pub mod diff;
pub mod store;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use ferry_engine::cluster::ClusterOptions;
use ferry_engine::cluster::discovery::DiscoveryCache;
use futures::{Stream, StreamExt};
use kube::Client;
use maud::Markup;
use tokio::sync::broadcast;

use crate::guard::{Guard, Token};
use crate::model::{AppKey, AppKind, Filter};
use crate::views::{self, Frame};
use store::{Change, Store};

const CSS: &str = include_str!("../assets/ui.css");
const JS: &str = include_str!("../assets/ui.js");

/// How `ferry ui` runs.
#[derive(Debug, Clone)]
pub struct UiOptions {
    pub cluster: ClusterOptions,
    /// Address to bind; loopback unless the user asks otherwise.
    pub address: String,
    /// Port; 0 picks a free one.
    pub port: u16,
    /// Namespaces to watch; empty: all the user may list, else the context's namespace.
    pub namespaces: Vec<String>,
}

impl Default for UiOptions {
    fn default() -> Self {
        UiOptions {
            cluster: ClusterOptions::default(),
            address: "127.0.0.1".to_string(),
            port: 7077,
            namespaces: Vec::new(),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error(transparent)]
    Cluster(#[from] ferry_engine::Error),
    #[error("cannot listen on {address}: {source}; pick another --port or --address")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the web server stopped: {0}")]
    Serve(#[source] std::io::Error),
}

/// The identity requests are made with. Local mode: the kubeconfig's user.
#[derive(Clone)]
pub struct Access {
    client: Client,
}

impl Access {
    /// The client for the person behind the current request.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

struct AppState {
    guard: Guard,
    access: Access,
    store: Arc<Store>,
    discovery: Arc<DiscoveryCache>,
    frame: Frame,
    /// Slots for on-demand diffs ([`diff`]).
    diffs: tokio::sync::Semaphore,
}

type Shared = Arc<AppState>;

/// A running dashboard.
pub struct RunningUi {
    /// The URL to open (it holds the token).
    pub url: String,
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningUi {
    /// Serve until the process is interrupted (Ctrl-C) or the server fails.
    pub async fn wait(mut self) -> Result<(), UiError> {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                if let Some(stop) = self.stop.take() { let _ = stop.send(()); }
                let _ = self.task.await;
                Ok(())
            }
            res = &mut self.task => match res {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(UiError::Serve(e)),
                Err(e) => Err(UiError::Serve(std::io::Error::other(e))),
            }
        }
    }

    /// Stop serving (tests).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
        self.task.abort();
    }
}

/// Connect as the user, start the watches, bind and serve.
pub async fn start(options: UiOptions) -> Result<RunningUi, UiError> {
    let config = ferry_engine::cluster::load_config(&options.cluster).await?;
    let cluster = config.cluster_url.to_string();
    let client = ferry_engine::cluster::client_from_config(config)?;
    start_with_client(client, cluster, options).await
}

/// [`start`] with a client built elsewhere.
pub async fn start_with_client(
    client: Client,
    cluster: String,
    options: UiOptions,
) -> Result<RunningUi, UiError> {
    let listener = tokio::net::TcpListener::bind((options.address.as_str(), options.port))
        .await
        .map_err(|source| UiError::Bind {
            address: format!("{}:{}", options.address, options.port),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| UiError::Bind {
        address: options.address.clone(),
        source,
    })?;
    let guard = Guard::new(Token::generate(), &options.address, addr.port());
    let user = ferry_engine::cluster::ClusterInfo::fetch(&client, &cluster)
        .await
        .ok()
        .and_then(|i| i.username)
        .unwrap_or_default();
    let (scope, scope_note) = store::decide_scope(&client, &options.namespaces).await;
    let store = Store::new();
    store::start_watches(&store, &client, &scope, Duration::from_secs(30)).await;
    let mut scope_text = scope.describe();
    if let Some(note) = scope_note {
        tracing::warn!("{note}");
        scope_text = format!("{scope_text} (you may not list all namespaces)");
    }
    let state = Arc::new(AppState {
        guard: guard.clone(),
        access: Access { client },
        store,
        discovery: Arc::new(DiscoveryCache::default()),
        frame: Frame {
            cluster,
            user,
            scope: scope_text,
        },
        diffs: diff::limiter(),
    });
    let router = router(state);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    Ok(RunningUi {
        url: guard.login_url(&options.address),
        addr,
        stop: Some(stop_tx),
        task,
    })
}

fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(apps_page))
        .route(
            "/assets/ui.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS) }),
        )
        .route(
            "/assets/ui.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    JS,
                )
            }),
        )
        .route("/apps/{kind}/{namespace}/{name}", get(detail_page))
        .route("/apps/{kind}/{namespace}/{name}/panel", get(detail_panel))
        .route("/apps/{kind}/{namespace}/{name}/diff", get(diff_view))
        .route("/apps/{kind}/{namespace}/{name}/{action}", post(action))
        .route("/events/apps", get(apps_events))
        .route("/events/apps/{kind}/{namespace}/{name}", get(app_events))
        .layer(middleware::from_fn_with_state(state.clone(), front_door))
        .with_state(state)
}

/// Every request: Host first (DNS rebinding), then the token (cookie or the first visit's
/// query), then Origin for anything that is not a GET. Security headers on every answer.
async fn front_door(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let get_header = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let refused = |status: StatusCode, message: String| {
        tracing::warn!(%message, "request refused");
        with_security_headers((status, views::refusal(&message)).into_response())
    };
    if let Err(r) = state.guard.check_host(get_header(header::HOST)) {
        return refused(StatusCode::FORBIDDEN, r.to_string());
    }
    let query = request.uri().query();
    if let Err(r) = state.guard.check_token(get_header(header::COOKIE), query) {
        return refused(StatusCode::UNAUTHORIZED, r.to_string());
    }
    if request.method() == Method::GET && state.guard.query_token(query) {
        // First visit: trade the token in the URL for a cookie, and drop it from the address bar.
        let rest: Vec<&str> = query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.starts_with("token="))
            .collect();
        let location = if rest.is_empty() {
            request.uri().path().to_string()
        } else {
            format!("{}?{}", request.uri().path(), rest.join("&"))
        };
        let mut response = Redirect::to(&location).into_response();
        if let Ok(cookie) = HeaderValue::from_str(&state.guard.set_cookie()) {
            response.headers_mut().insert(header::SET_COOKIE, cookie);
        }
        return with_security_headers(response);
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        if let Err(r) = state.guard.check_origin(get_header(header::ORIGIN), site) {
            return refused(StatusCode::FORBIDDEN, r.to_string());
        }
    }
    with_security_headers(next.run(request).await)
}

fn with_security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    let mut set = |name: &'static str, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    );
    set("x-content-type-options", "nosniff");
    set("x-frame-options", "DENY");
    set("referrer-policy", "no-referrer");
    set("cache-control", "no-store");
    set("cross-origin-opener-policy", "same-origin");
    set("cross-origin-resource-policy", "same-origin");
    response
}

fn html(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

fn error_page(state: &AppState, status: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    html(
        code,
        views::page(
            &state.frame,
            "Error",
            "",
            None,
            views::error(status, message),
        ),
    )
}

/// Namespace and name from the URL become parts of API paths: only DNS-1123 subdomain
/// characters pass (no `/`, `%`, `..` games with the API server's URL space).
fn valid_name(s: &str) -> bool {
    crate::model::is_kube_name(s)
}

fn app_key(kind: &str, namespace: &str, name: &str) -> Result<AppKey, String> {
    let kind = AppKind::from_slug(kind)
        .ok_or_else(|| format!("unknown app kind {kind:?}: use release or push"))?;
    if !valid_name(namespace) || !valid_name(name) {
        return Err(
            "namespace and name must be Kubernetes names (lowercase letters, digits, '-' and '.')"
                .to_string(),
        );
    }
    Ok(AppKey {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

async fn apps_page(State(state): State<Shared>, Query(filter): Query<Filter>) -> Response {
    let rows = state.store.rows();
    let namespaces: Vec<String> = rows
        .iter()
        .map(|r| r.key.namespace.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let shown: Vec<&crate::model::AppRow> = rows.iter().filter(|r| filter.matches(r)).collect();
    let mut frame = state.frame.clone();
    let notes = state.store.notes();
    if !notes.is_empty() {
        frame.scope = format!("{} — {}", frame.scope, notes.join("; "));
    }
    html(
        StatusCode::OK,
        views::page(
            &frame,
            "Apps",
            "/events/apps",
            None,
            views::apps(&shown, &filter, &namespaces, rows.len()),
        ),
    )
}

#[derive(serde::Deserialize, Default)]
struct DoneQuery {
    #[serde(default)]
    done: String,
}

async fn detail_page(
    State(state): State<Shared>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
    Query(q): Query<DoneQuery>,
) -> Response {
    let key = match app_key(&kind, &namespace, &name) {
        Ok(k) => k,
        Err(m) => return error_page(&state, 400, &m),
    };
    match detail::load(state.access.client(), &state.store, &state.discovery, &key).await {
        Ok(d) => {
            let done = actions::Action::from_slug(&q.done).map(actions::Action::done);
            let live = format!("/events{}", key.path());
            let refresh = format!("{}/panel", key.path());
            let title = format!("{}/{}", key.namespace, key.name);
            html(
                StatusCode::OK,
                views::page(
                    &state.frame,
                    &title,
                    &live,
                    Some(&refresh),
                    views::detail(&d, state.guard.token().as_str(), done),
                ),
            )
        }
        Err(e) => error_page(&state, e.status(), &e.to_string()),
    }
}

async fn detail_panel(
    State(state): State<Shared>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Response {
    let key = match app_key(&kind, &namespace, &name) {
        Ok(k) => k,
        Err(m) => return (StatusCode::BAD_REQUEST, m).into_response(),
    };
    match detail::load(state.access.client(), &state.store, &state.discovery, &key).await {
        Ok(d) => html(
            StatusCode::OK,
            views::detail_panel(&d, state.guard.token().as_str()),
        ),
        Err(e) => (
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY),
            e.to_string(),
        )
            .into_response(),
    }
}

#[derive(serde::Deserialize, Default)]
struct DiffQuery {
    /// `1`: git's latest revision instead of the applied one.
    #[serde(default)]
    latest: String,
}

/// The diff between git and the cluster, computed now, as the user (a GET: it changes nothing;
/// the dry-run apply is the API server's). The script asks for the fragment (`X-Ferry-Ui`) and
/// puts it into the panel; without the script the form lands on a page of its own.
async fn diff_view(
    State(state): State<Shared>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
    Query(q): Query<DiffQuery>,
    headers: HeaderMap,
) -> Response {
    let from_script = headers.contains_key("x-ferry-ui");
    let key = match app_key(&kind, &namespace, &name) {
        Ok(k) if k.kind == AppKind::Release => k,
        Ok(_) => {
            let m = "a diff is shown for Releases; a push app's is `ferry diff` in its pipeline";
            return if from_script {
                (StatusCode::BAD_REQUEST, m).into_response()
            } else {
                error_page(&state, 400, m)
            };
        }
        Err(m) => {
            return if from_script {
                (StatusCode::BAD_REQUEST, m).into_response()
            } else {
                error_page(&state, 400, &m)
            };
        }
    };
    let latest = q.latest == "1" || q.latest == "on" || q.latest == "true";
    let result = diff::run(state.access.client(), &state.diffs, &key, latest).await;
    if let Err(message) = &result {
        tracing::info!(release = %format!("{}/{}", key.namespace, key.name), %message, "diff failed");
    }
    let at = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%d %H:%M:%S UTC")
        .to_string();
    let outcome = views::DiffOutcome {
        key: &key,
        result: result.as_ref().map_err(Clone::clone),
        at,
    };
    if from_script {
        html(StatusCode::OK, views::release_diff(&outcome))
    } else {
        let title = format!("diff {}/{}", key.namespace, key.name);
        html(
            StatusCode::OK,
            views::page(
                &state.frame,
                &title,
                "",
                None,
                views::release_diff_page(&outcome),
            ),
        )
    }
}

#[derive(serde::Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
    /// The rollback target (a revision of the Release's history).
    #[serde(default)]
    revision: String,
}

async fn action(
    State(state): State<Shared>,
    Path((kind, namespace, name, action)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let from_script = headers.contains_key("x-ferry-ui");
    let reply = |status: StatusCode, message: String| -> Response {
        if from_script {
            (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                message,
            )
                .into_response()
        } else {
            error_page(&state, status.as_u16(), &message)
        }
    };
    // The form's token, not only the cookie: a request the browser adds cookies to on its own
    // cannot carry it.
    if !state.guard.token().matches(&form.csrf) {
        return reply(
            StatusCode::FORBIDDEN,
            "the form's token is missing or wrong: reload the page".to_string(),
        );
    }
    let key = match app_key(&kind, &namespace, &name) {
        Ok(k) if k.kind == AppKind::Release => k,
        Ok(_) => {
            return reply(
                StatusCode::BAD_REQUEST,
                "actions apply to Releases only; a push app is changed by its pipeline".to_string(),
            );
        }
        Err(m) => return reply(StatusCode::BAD_REQUEST, m),
    };
    let Some(act) = actions::Action::from_slug(&action) else {
        return reply(StatusCode::NOT_FOUND, format!("unknown action {action:?}"));
    };
    match actions::run(
        state.access.client(),
        &key.namespace,
        &key.name,
        act,
        &form.revision,
    )
    .await
    {
        Ok(()) => {
            tracing::info!(release = %format!("{}/{}", key.namespace, key.name), action = act.slug(), "action accepted");
            if from_script {
                (StatusCode::OK, act.done().to_string()).into_response()
            } else {
                Redirect::to(&format!("{}?done={}", key.path(), act.slug())).into_response()
            }
        }
        Err(e) => {
            let status = e
                .code
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::BAD_GATEWAY);
            reply(status, e.to_string())
        }
    }
}

fn sse_row(row: &crate::model::AppRow) -> SseEvent {
    let payload =
        serde_json::json!({"id": row.key.dom_id(), "html": views::app_row(row).into_string()});
    SseEvent::default().event("row").data(payload.to_string())
}

/// The apps list's live feed: one `row` event per changed app, `remove` per deleted one.
async fn apps_events(
    State(state): State<Shared>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = state.store.subscribe();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await {
            Ok(Change::Upsert(row)) => sse_row(&row),
            Ok(Change::Remove(key)) => {
                let data = serde_json::json!({"id": key.dom_id()}).to_string();
                SseEvent::default().event("remove").data(data)
            }
            // This page fell behind (a very slow client): tell it to reload once.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                SseEvent::default().event("resync").data("{}")
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Aborts the per-page watches when the page goes away (the SSE stream is dropped).
struct WatchTasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for WatchTasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// One app page's live feed: a `refresh` event (coalesced over 300 ms) whenever the app's
/// row changes or a Pod or Event in its namespaces does. The watches run only while the page
/// is open, as the user.
async fn app_events(
    State(state): State<Shared>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Response {
    let key = match app_key(&kind, &namespace, &name) {
        Ok(k) => k,
        Err(m) => return (StatusCode::BAD_REQUEST, m).into_response(),
    };
    let namespaces = state
        .store
        .row(&key)
        .map(|r| r.namespaces)
        .unwrap_or_else(|| [key.namespace.clone()].into());
    let (tx, rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut tasks = Vec::new();
    {
        let tx = tx.clone();
        let mut changes = state.store.subscribe();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(Change::Upsert(row)) if row.key == key => {
                        let _ = tx.try_send(());
                    }
                    Ok(Change::Remove(k)) if k == key => {
                        let _ = tx.try_send(());
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }));
    }
    for ns in namespaces {
        let client = state.access.client().clone();
        tasks.push(tokio::spawn(nudge_on_changes::<
            k8s_openapi::api::core::v1::Pod,
        >(
            client.clone(), ns.clone(), tx.clone()
        )));
        tasks.push(tokio::spawn(nudge_on_changes::<
            k8s_openapi::api::core::v1::Event,
        >(client, ns, tx.clone())));
    }
    drop(tx);
    let stream = futures::stream::unfold((rx, WatchTasks(tasks)), |(mut rx, tasks)| async move {
        rx.recv().await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        while rx.try_recv().is_ok() {}
        Some((
            Ok::<_, Infallible>(SseEvent::default().event("refresh").data("{}")),
            (rx, tasks),
        ))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Watch one kind in one namespace and nudge on every change after the initial list. A
/// refusal (RBAC) ends the watch quietly: the page still updates from its own row.
async fn nudge_on_changes<K>(client: Client, ns: String, tx: tokio::sync::mpsc::Sender<()>)
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    use kube::runtime::watcher::{self, Event};
    let api: kube::Api<K> = kube::Api::namespaced(client, &ns);
    let stream = watcher::watcher(api, watcher::Config::default());
    let mut stream = std::pin::pin!(stream);
    let mut listed = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(Event::InitDone) => listed = true,
            Ok(Event::Apply(_) | Event::Delete(_)) if listed => {
                let _ = tx.try_send(());
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(namespace = %ns, error = %e, "page watch ended");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_names_cannot_escape_into_other_api_paths() {
        assert!(app_key("release", "team-a", "web.v1").is_ok());
        for bad in [
            "..", "a/b", "a%2fb", "A", "", "-a", ".a", "a..b", "a b", "a?x", "ns#",
        ] {
            assert!(app_key("release", bad, "web").is_err(), "{bad:?}");
            assert!(app_key("release", "team", bad).is_err(), "{bad:?}");
        }
        assert!(app_key("secret", "team", "web").is_err());
    }
}
