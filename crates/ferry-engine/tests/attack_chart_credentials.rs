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
    // One package served from both places: the index's digest must match what the CDN sends
    // (packaging twice can differ in its timestamps, and ferry checks the digest).
    let redirecting_dir = tempfile::tempdir().expect("tempdir");
    package(&t, redirecting_dir.path());
    let cdn_dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(redirecting_dir.path()).expect("read package dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "tgz") {
            std::fs::copy(&path, cdn_dir.path().join(path.file_name().expect("name")))
                .expect("copy package");
        }
    }
    let (cdn, cdn_seen) = serve([127, 0, 0, 2], cdn_dir.path().to_path_buf(), false, None);
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

/// A HOSTILE chart in the source declares its dependencies (no `charts/`): one on the private
/// repository the credentials are for (127.0.0.1), one on another host (127.0.0.2). ferry builds
/// them with `helm dependency build`; the credentials reach only their own host. Repository
/// references that could reach helm's configured repositories or other schemes, and `file://`
/// paths outside the source, are refused before helm runs.
#[test]
fn dependencies_get_credentials_only_on_their_host_and_hostile_repositories_are_refused() {
    use ferry_engine::render::request::ChartCredentials;
    let t = Tree::new();
    write_chart(&t);
    let private_dir = tempfile::tempdir().expect("tempdir");
    package(&t, private_dir.path());
    let (private, private_seen) =
        serve([127, 0, 0, 1], private_dir.path().to_path_buf(), true, None);
    t.tool(
        "helm",
        &[
            "repo",
            "index",
            &private_dir.path().display().to_string(),
            "--url",
            &format!("http://{private}"),
        ],
    );
    t.write(
        "other/Chart.yaml",
        "apiVersion: v2\nname: public\nversion: 0.0.1\n",
    );
    t.write(
        "other/templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: public-cm}\ndata: {a: b}\n",
    );
    let public_dir = tempfile::tempdir().expect("tempdir");
    t.tool(
        "helm",
        &[
            "package",
            &t.path("other").display().to_string(),
            "--destination",
            &public_dir.path().display().to_string(),
        ],
    );
    let (public, public_seen) = serve([127, 0, 0, 2], public_dir.path().to_path_buf(), false, None);
    t.tool(
        "helm",
        &[
            "repo",
            "index",
            &public_dir.path().display().to_string(),
            "--url",
            &format!("http://{public}"),
        ],
    );
    let chart_yaml =
        |deps: &str| format!("apiVersion: v2\nname: host\nversion: 0.1.0\ndependencies:\n{deps}");
    t.write(
        "app/Chart.yaml",
        &chart_yaml(&format!(
            "  - {{name: leaky, version: 1.0.0, repository: \"http://{private}\"}}\n  - {{name: public, version: 0.0.1, repository: \"http://{public}\"}}\n"
        )),
    );
    t.write(
        "app/templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: host}\ndata: {a: b}\n",
    );
    let mut req = t.request("app");
    req.chart_credentials = Some(ChartCredentials {
        host: private.to_string(),
        username: USER.into(),
        password: PASSWORD.into(),
        origin: "Secret test/chart-auth".into(),
    });
    let manifests = ferry_engine::render::render(&req).expect("dependencies built");
    let names: Vec<&str> = manifests.iter().map(|m| m.name()).collect();
    assert!(
        names.contains(&"public-cm") && names.contains(&"host"),
        "{names:?}"
    );
    assert!(
        private_seen
            .lock()
            .expect("seen")
            .iter()
            .any(|(path, auth)| path.ends_with(".tgz") && auth.is_some()),
        "the private repository got its credentials"
    );
    assert_no_credentials(&public_seen, "dependency on another host");

    // Credentials bound to one host are never used for a chart on another.
    t.write(
        "elsewhere/ferry.yaml",
        &format!("helm:\n  chart: {{repo: \"http://{public}\", name: public}}\n"),
    );
    let mut elsewhere = t.request("elsewhere");
    elsewhere.chart_credentials = req.chart_credentials.clone();
    let err = ferry_engine::render::render(&elsewhere)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not sent to another host"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");

    // Hostile repository references: refused, naming the dependency, before helm runs.
    let before = public_seen.lock().expect("seen").len();
    for repository in [
        "file:///etc",
        "file://../../../../../../..",
        "@ferry-chart-repo",
        "alias:ferry-chart-repo",
        "ssh://git@example.com/charts",
        "--pass-credentials",
    ] {
        t.write(
            "app/Chart.yaml",
            &chart_yaml(&format!(
                "  - {{name: evil, version: 1.0.0, repository: \"{repository}\"}}\n  - {{name: public, version: 0.0.1, repository: \"http://{public}\"}}\n"
            )),
        );
        let err = ferry_engine::render::render(&req).unwrap_err().to_string();
        assert!(err.contains("evil"), "{repository}: {err}");
    }
    assert_eq!(
        public_seen.lock().expect("seen").len(),
        before,
        "nothing was fetched for a refused chart"
    );
}
