//! Attack test for chart-repository credentials (issue 11, item 12): a HOSTILE Helm HTTP
//! repository written by this test (on 127.0.0.1, basic auth) lists its chart at a URL on
//! another host (127.0.0.2, also a hostile peer of this test), or redirects the chart download
//! there. The real `helm pull` that ferry runs must not send the repository's credentials to the
//! other host: ferry never passes `--pass-credentials`, and helm then only sends them to the
//! repository's own scheme+host, and Go's HTTP client drops `Authorization` on redirects to
//! another host.

mod render_support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use render_support::Tree;

const USER: &str = "chartuser";
const PASSWORD: &str = "chart-secret-789";

/// What a hostile peer saw: (path, Authorization header).
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A hostile peer on `ip` in its own thread and runtime (helm is run synchronously by the
/// renderer). `auth` requires the repository's basic credentials for everything it serves;
/// `redirect_tgz_to` makes it answer chart downloads with a 302 to that origin.
fn serve(
    ip: [u8; 4],
    dir: PathBuf,
    auth: bool,
    redirect_tgz_to: Option<String>,
) -> (SocketAddr, Seen) {
    let listener = std::net::TcpListener::bind(SocketAddr::from((ip, 0))).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
                let dir = dir.clone();
                let expected = expected.clone();
                let record = record.clone();
                let redirect = redirect_tgz_to.clone();
                async move {
                    let authorization = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    record
                        .lock()
                        .expect("seen")
                        .push((uri.path().to_string(), authorization.clone()));
                    if auth && authorization.as_deref() != Some(expected.as_str()) {
                        return (StatusCode::UNAUTHORIZED, Vec::new()).into_response();
                    }
                    let name = uri.path().trim_start_matches('/').to_string();
                    if let Some(origin) = redirect.filter(|_| name.ends_with(".tgz")) {
                        return Response::builder()
                            .status(StatusCode::FOUND)
                            .header("location", format!("{origin}/{name}"))
                            .body(axum::body::Body::empty())
                            .unwrap_or_default();
                    }
                    if name.contains("..") || name.contains('/') {
                        return (StatusCode::NOT_FOUND, Vec::new()).into_response();
                    }
                    match tokio::fs::read(dir.join(&name)).await {
                        Ok(bytes) => (StatusCode::OK, bytes).into_response(),
                        Err(_) => (StatusCode::NOT_FOUND, Vec::new()).into_response(),
                    }
                }
            });
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ = axum::serve(listener, app).await;
        });
    });
    (addr, seen)
}

fn write_chart(t: &Tree) {
    t.write(
        "src/chart/Chart.yaml",
        "apiVersion: v2\nname: leaky\nversion: 0.0.1\n",
    );
    t.write(
        "src/chart/templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: '{{ .Release.Name }}-cm'}\ndata: {a: b}\n",
    );
}

fn package(t: &Tree, out: &std::path::Path) {
    t.tool(
        "helm",
        &[
            "package",
            &t.path("src/chart").display().to_string(),
            "--version",
            "1.0.0",
            "--destination",
            &out.display().to_string(),
        ],
    );
}

fn assert_no_credentials(seen: &Seen, what: &str) {
    let seen = seen.lock().expect("seen").clone();
    assert!(
        seen.iter().any(|(path, _)| path.ends_with(".tgz")),
        "{what}: helm fetched the chart from the other host: {seen:?}"
    );
    let leaked: Vec<_> = seen.iter().filter(|(_, auth)| auth.is_some()).collect();
    assert!(
        leaked.is_empty(),
        "{what}: repository credentials reached another host: {leaked:?}"
    );
}

#[test]
fn chart_urls_and_redirects_to_another_host_get_no_repository_credentials() {
    let t = Tree::new();
    write_chart(&t);

    // 1. index.yaml on the repository names the chart on another host.
    let other_dir = tempfile::tempdir().expect("tempdir");
    package(&t, other_dir.path());
    let (other, other_seen) = serve([127, 0, 0, 2], other_dir.path().to_path_buf(), false, None);
    let repo_dir = tempfile::tempdir().expect("tempdir");
    t.tool(
        "helm",
        &[
            "repo",
            "index",
            &other_dir.path().display().to_string(),
            "--url",
            &format!("http://{other}"),
        ],
    );
    std::fs::copy(
        other_dir.path().join("index.yaml"),
        repo_dir.path().join("index.yaml"),
    )
    .expect("copy index");
    let (repo, repo_seen) = serve([127, 0, 0, 1], repo_dir.path().to_path_buf(), true, None);
    t.write(
        "app/ferry.yaml",
        &format!("helm:\n  chart: {{repo: \"http://{repo}\", name: leaky, version: \"1.0.0\"}}\n"),
    );
    let mut req = t.request("app");
    req.overrides.chart_username = Some(USER.into());
    req.overrides.chart_password = Some(PASSWORD.into());
    // Whether the render succeeds is helm's business (the chart is public on the other host);
    // what matters is where the credentials went.
    let result = ferry_engine::render::render(&req);
    if let Err(err) = &result {
        assert!(!err.to_string().contains(PASSWORD), "{err}");
    }
    assert!(
        repo_seen
            .lock()
            .expect("seen")
            .iter()
            .any(|(_, auth)| auth.is_some()),
        "the repository itself got the credentials"
    );
    assert_no_credentials(&other_seen, "chart URL on another host");

    // 2. The repository redirects the chart download to another host.
    let cdn_dir = tempfile::tempdir().expect("tempdir");
    package(&t, cdn_dir.path());
    let (cdn, cdn_seen) = serve([127, 0, 0, 2], cdn_dir.path().to_path_buf(), false, None);
    let redirecting_dir = tempfile::tempdir().expect("tempdir");
    package(&t, redirecting_dir.path());
    let (redirecting, _) = serve(
        [127, 0, 0, 1],
        redirecting_dir.path().to_path_buf(),
        true,
        Some(format!("http://{cdn}")),
    );
    t.tool(
        "helm",
        &[
            "repo",
            "index",
            &redirecting_dir.path().display().to_string(),
            "--url",
            &format!("http://{redirecting}"),
        ],
    );
    t.write(
        "app/ferry.yaml",
        &format!(
            "helm:\n  chart: {{repo: \"http://{redirecting}\", name: leaky, version: \"1.0.0\"}}\n"
        ),
    );
    let mut req = t.request("app");
    req.overrides.chart_username = Some(USER.into());
    req.overrides.chart_password = Some(PASSWORD.into());
    let manifests = ferry_engine::render::render(&req).expect("a redirect to a CDN works");
    assert!(!manifests.is_empty());
    assert_no_credentials(&cdn_seen, "redirect to another host");
}

/// OCI charts: a HOSTILE registry (this test's server on 127.0.0.1) answers every request with
/// a bearer challenge whose realm is on another host (127.0.0.2, also this test's) over plain
/// http. `helm registry login` + `helm pull`, as ferry runs them with the chart credentials,
/// must not hand the credentials to that realm. (helm's OCI client refuses realms on loopback,
/// link-local and private addresses itself; ferry adds no flag that would loosen it.)
#[test]
fn oci_token_realm_on_another_host_gets_no_chart_credentials() {
    let realm_dir = tempfile::tempdir().expect("tempdir");
    let (realm, realm_seen) = serve([127, 0, 0, 2], realm_dir.path().to_path_buf(), false, None);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let registry = listener.local_addr().expect("addr");
    let registry_seen: Seen = Arc::default();
    let record = registry_seen.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
                let record = record.clone();
                async move {
                    let authorization = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    record
                        .lock()
                        .expect("seen")
                        .push((uri.path().to_string(), authorization));
                    Response::builder()
                        .status(StatusCode::UNAUTHORIZED)
                        .header(
                            "www-authenticate",
                            format!("Bearer realm=\"http://{realm}/token\",service=\"hostile\""),
                        )
                        .body(axum::body::Body::empty())
                        .unwrap_or_default()
                }
            });
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ = axum::serve(listener, app).await;
        });
    });
    let t = Tree::new();
    t.write("src/ferry.yaml", "{}\n");
    let mut req = t.request("src");
    req.overrides.chart = Some(format!("oci://{registry}/team/leaky"));
    req.overrides.plain_http = Some(true);
    req.overrides.chart_username = Some(USER.into());
    req.overrides.chart_password = Some(PASSWORD.into());
    let err = ferry_engine::render::render(&req)
        .expect_err("a registry whose realm is elsewhere cannot serve the chart")
        .to_string();
    assert!(!err.contains(PASSWORD), "{err}");
    assert!(
        err.contains(&registry.to_string()),
        "names the registry: {err}"
    );
    assert!(
        !registry_seen.lock().expect("seen").is_empty(),
        "helm did talk to the registry"
    );
    let seen = realm_seen.lock().expect("seen").clone();
    assert!(
        seen.iter().all(|(_, auth)| auth.is_none()),
        "chart credentials reached the other host's realm: {seen:?}"
    );
}
