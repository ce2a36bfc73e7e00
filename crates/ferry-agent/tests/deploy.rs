//! Deploy requests (`POST /deploy/v1/<ns>/<release>`) against the real agent, the testenv git
//! server and API server, with two real OIDC issuers:
//! - an in-test issuer that mints GitHub-Actions-shaped tokens (repository, ref, environment,
//!   `sub: repo:acme/shop:ref:refs/heads/main`) with its own RS256 and ES256 keys and serves its
//!   discovery document and JWKS over HTTPS with a test CA (GitHub itself cannot run here; the
//!   agent cannot tell the difference: same document shapes, same TLS, same JWT);
//! - the testenv kube-apiserver's service-account issuer (`kubectl create token` shape: the
//!   TokenRequest API with a chosen audience), read through its real discovery document.
//!
//! Every refused request is checked to leave the cluster unchanged (the ConfigMap the Release
//! applies and the Release's pin annotation).

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ferry_api::deploy::DEPLOY_REVISION;
use ferry_api::{GitSource, Release};
use ferry_testsupport::{TestEnv, TestNamespace};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

const AUDIENCE: &str = "https://ferry.test/deploy";

/// A signing key of the in-test issuer.
struct Key {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Jwk,
}

fn key(kid: &str, alg: Algorithm) -> Key {
    let rcgen_alg = match alg {
        Algorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        _ => &rcgen::PKCS_RSA_SHA256,
    };
    let pair = rcgen::KeyPair::generate_for(rcgen_alg).expect("key pair");
    let pem = pair.serialize_pem();
    let encoding = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .expect("encoding key");
    let mut jwk = Jwk::from_encoding_key(&encoding, alg).expect("jwk");
    jwk.common.key_id = Some(kid.to_string());
    Key {
        kid: kid.to_string(),
        alg,
        encoding,
        jwk,
    }
}

/// An OIDC issuer over HTTPS (rustls, a CA of its own), serving discovery and a JWKS that the
/// test can change (key rotation).
struct Issuer {
    url: String,
    ca_pem: String,
    jwks: Arc<Mutex<JwkSet>>,
    fetches: Arc<Mutex<u32>>,
}

async fn start_issuer() -> Issuer {
    ferry_engine::install_crypto_provider();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ferry deploy test CA");
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("leaf params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .expect("tls config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let url = format!("https://127.0.0.1:{}", addr.port());
    let jwks = Arc::new(Mutex::new(JwkSet { keys: vec![] }));
    let fetches = Arc::new(Mutex::new(0u32));
    let app = {
        let url = url.clone();
        let jwks = jwks.clone();
        let fetches = fetches.clone();
        axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || {
                    let url = url.clone();
                    async move {
                        axum::Json(json!({
                            "issuer": url,
                            "jwks_uri": format!("{url}/.well-known/jwks"),
                            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                        }))
                    }
                }),
            )
            .route(
                "/.well-known/jwks",
                axum::routing::get(move || {
                    let jwks = jwks.clone();
                    let fetches = fetches.clone();
                    async move {
                        *fetches.lock().expect("lock") += 1;
                        let set = jwks.lock().expect("lock").clone();
                        axum::Json(serde_json::to_value(set).expect("jwks json"))
                    }
                }),
            )
    };
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Issuer {
        url,
        ca_pem: ca.pem(),
        jwks,
        fetches,
    }
}

impl Issuer {
    fn publish(&self, keys: &[&Key]) {
        self.jwks.lock().expect("lock").keys = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn fetches(&self) -> u32 {
        *self.fetches.lock().expect("lock")
    }

    /// GitHub Actions' claim shape for a push to `git_ref` of acme/shop.
    fn claims(&self, git_ref: &str) -> Value {
        let now = jsonwebtoken::get_current_timestamp();
        json!({
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": format!("repo:acme/shop:ref:{git_ref}"),
            "repository": "acme/shop",
            "repository_owner": "acme",
            "ref": git_ref,
            "ref_type": "branch",
            "environment": "production",
            "event_name": "push",
            "workflow": "deploy",
            "run_id": "1234",
            "jti": format!("{:032x}", rand::random::<u128>()),
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        })
    }
}

fn sign(key: &Key, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign")
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A deploy request; returns the status and, for a stream, every line.
async fn deploy(
    agent: SocketAddr,
    ns: &str,
    release: &str,
    token: &str,
    body: Value,
) -> (u16, Vec<Value>, String) {
    deploy_raw(
        agent,
        ns,
        release,
        token,
        serde_json::to_vec(&body).expect("json"),
    )
    .await
}

async fn deploy_raw(
    agent: SocketAddr,
    ns: &str,
    release: &str,
    token: &str,
    body: Vec<u8>,
) -> (u16, Vec<Value>, String) {
    let client = reqwest::Client::new();
    let response = tokio::time::timeout(
        Duration::from_secs(180),
        client
            .post(format!("http://{agent}/deploy/v1/{ns}/{release}"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send(),
    )
    .await
    .expect("answer within 3 minutes")
    .expect("request sent");
    let status = response.status().as_u16();
    let text = tokio::time::timeout(Duration::from_secs(400), response.text())
        .await
        .expect("stream ends")
        .expect("body");
    let lines = if status == 200 {
        text.lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect()
    } else {
        Vec::new()
    };
    (status, lines, text)
}

fn result(lines: &[Value]) -> &Value {
    lines
        .iter()
        .rev()
        .find(|l| l["event"] == "result")
        .unwrap_or_else(|| panic!("no result line in {lines:?}"))
}

async fn configmap_value(client: &kube::Client, ns: &str) -> Option<String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    api.get_opt("shop")
        .await
        .expect("read ConfigMap")
        .and_then(|cm| cm.data)
        .and_then(|d| d.get("value").cloned())
}

async fn pinned(client: &kube::Client, ns: &str) -> Option<String> {
    let api: Api<Release> = Api::namespaced(client.clone(), ns);
    api.get("web")
        .await
        .expect("read Release")
        .annotations()
        .get(DEPLOY_REVISION)
        .cloned()
}

/// A namespace with a GitSource (branch main, polled hourly: only deploys move it) and the
/// Release `web` applied at the first commit; returns the repository and the commits.
async fn setup(env: &TestEnv, client: &kube::Client, ns: &str) -> (Repo, String) {
    let repo = Repo::create(env, ns);
    let first = repo.commit(
        &[("app/cm.yaml", Some(&configmap_yaml("shop", "one")))],
        "first",
    );
    git_secret(env, client, ns, "git-auth").await;
    create::<GitSource>(
        client,
        ns,
        git_source("repo", &repo.url, Some("git-auth"), "1h"),
    )
    .await;
    create::<Release>(
        client,
        ns,
        release("web", "repo", "app", json!({"interval": "1h"})),
    )
    .await;
    wait_release_applied(client, ns, "web", &first, Duration::from_secs(60)).await;
    (repo, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_github_shaped_token_deploys_a_commit_and_every_forgery_is_refused() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "deploy-gh").await;
    let other_ns = TestNamespace::create(&client, "deploy-gh-other").await;
    let issuer = start_issuer().await;
    let rsa = key("rsa-1", Algorithm::RS256);
    let ec = key("ec-1", Algorithm::ES256);
    issuer.publish(&[&rsa, &ec]);
    let (agent, _cache) = start_agent(&env, &[&ns.name, &other_ns.name], |_| {}).await;
    let (repo, first) = setup(&env, &client, &ns.name).await;
    create::<ferry_api::DeployPolicy>(
        &client,
        &ns.name,
        json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "DeployPolicy",
            "metadata": {"name": "github"},
            "spec": {
                "issuer": {"url": issuer.url, "caBundle": issuer.ca_pem},
                "audience": AUDIENCE,
                "subjects": ["repo:acme/shop:ref:refs/heads/*"],
                "claims": {"repository": ["acme/shop"], "ref": ["refs/heads/main"], "environment": ["production"]},
                "releases": ["web"],
                "revisions": {"branch": "main"},
            },
        }),
    )
    .await;
    // The policy watch must have seen it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = repo.commit(
        &[("app/cm.yaml", Some(&configmap_yaml("shop", "two")))],
        "second",
    );
    let unchanged = || async {
        assert_eq!(
            configmap_value(&client, &ns.name).await.as_deref(),
            Some("one")
        );
        assert_eq!(
            pinned(&client, &ns.name).await,
            None,
            "the Release was never pinned"
        );
    };
    let body = json!({"revision": second});

    // Bad tokens: each refused with its reason; nothing applied.
    let mut expired = issuer.claims("refs/heads/main");
    expired["iat"] = json!(jsonwebtoken::get_current_timestamp() - 7200);
    expired["nbf"] = expired["iat"].clone();
    expired["exp"] = json!(jsonwebtoken::get_current_timestamp() - 3600);
    let mut wrong_aud = issuer.claims("refs/heads/main");
    wrong_aud["aud"] = json!("https://someone-else.example");
    let mut wrong_iss = issuer.claims("refs/heads/main");
    wrong_iss["iss"] = json!("https://token.actions.githubusercontent.com");
    let stranger = key("rsa-1", Algorithm::RS256); // same kid, another key: a forgery
    let unknown = key("rsa-unknown", Algorithm::RS256);
    let good_feature = sign(&rsa, &issuer.claims("refs/heads/feature"));
    // Tampered: the payload of a token for refs/heads/feature, rewritten to say main.
    let tampered = {
        let parts: Vec<&str> = good_feature.split('.').collect();
        let payload = issuer.claims("refs/heads/main");
        format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_vec(&payload).expect("json")),
            parts[2]
        )
    };
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(&serde_json::to_vec(&issuer.claims("refs/heads/main")).expect("json"))
    );
    let alg_none_sig = format!("{alg_none}c2ln");
    // HS256 with the public key as the HMAC secret (the classic confusion attack).
    let hs256 = {
        let public_pem = serde_json::to_vec(&rsa.jwk).expect("jwk bytes");
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".to_string());
        jsonwebtoken::encode(
            &header,
            &issuer.claims("refs/heads/main"),
            &EncodingKey::from_secret(&public_pem).expect("hmac key"),
        )
        .expect("hs256")
    };
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("expired", sign(&rsa, &expired), 401, "expired"),
        ("wrong audience", sign(&ec, &wrong_aud), 401, "audience"),
        ("wrong issuer", sign(&rsa, &wrong_iss), 401, "not trusted"),
        (
            "forged key, known kid",
            sign(&stranger, &issuer.claims("refs/heads/main")),
            401,
            "signature",
        ),
        (
            "unknown kid",
            sign(&unknown, &issuer.claims("refs/heads/main")),
            401,
            "key id",
        ),
        ("tampered payload", tampered, 401, "signature"),
        ("alg none", alg_none_sig, 401, "algorithm"),
        ("alg none, no signature", alg_none, 401, "not a JWT"),
        ("HS256 with the public key", hs256, 401, "algorithm"),
        ("oversized token", "a".repeat(20 * 1024), 413, "larger than"),
        ("a feature branch", good_feature, 403, "claim ref"),
    ];
    for (what, token, status, needle) in cases {
        let (got, _, text) = deploy(agent.http_addr, &ns.name, "web", &token, body.clone()).await;
        assert_eq!(got, status, "{what}: {text}");
        assert!(
            text.contains(needle),
            "{what}: expected {needle:?} in {text:?}"
        );
    }
    // Bad requests with a good token.
    let token = sign(&ec, &issuer.claims("refs/heads/main"));
    let (got, _, text) = deploy_raw(
        agent.http_addr,
        &ns.name,
        "web",
        &token,
        vec![b' '; 100 * 1024],
    )
    .await;
    assert_eq!(got, 413, "oversized body: {text}");
    let (got, _, text) = deploy(
        agent.http_addr,
        &ns.name,
        "web",
        &token,
        json!({"revision": "HEAD"}),
    )
    .await;
    assert_eq!(got, 400, "{text}");
    assert!(text.contains("40-digit"), "{text}");
    let (got, _, text) = deploy(
        agent.http_addr,
        &ns.name,
        "web",
        &token,
        json!({"revision": second, "images": ["web=evil.example/x:1"]}),
    )
    .await;
    assert_eq!(got, 403, "{text}");
    assert!(text.contains("allowImageOverrides"), "{text}");
    // Another namespace without a DeployPolicy trusts nobody.
    let (got, _, text) = deploy(agent.http_addr, &other_ns.name, "web", &token, body.clone()).await;
    assert_eq!(got, 401, "{text}");
    assert!(text.contains("not trusted"), "{text}");
    // A Release the policy does not list.
    let (got, _, text) = deploy(agent.http_addr, &ns.name, "db", &token, body.clone()).await;
    assert_eq!(got, 403, "{text}");
    assert!(
        text.contains("Release \\\"db\\\"") || text.contains("Release \"db\""),
        "{text}"
    );
    unchanged().await;
    // The unknown kid re-read the JWKS once; more unknown kids within the window do not.
    let before = issuer.fetches();
    for _ in 0..5 {
        let t = sign(&unknown, &issuer.claims("refs/heads/main"));
        let (got, _, _) = deploy(agent.http_addr, &ns.name, "web", &t, body.clone()).await;
        assert_eq!(got, 401);
    }
    assert_eq!(issuer.fetches(), before, "no JWKS fetch per unknown kid");

    // A commit on another branch: verified and admitted, refused by the reachability rule.
    let side = {
        let dir = tempfile::tempdir().expect("tmp");
        let work = dir.path().join("w");
        ferry_testsupport::git::git(
            dir.path(),
            &["clone", "-q", repo.push_url(), work.to_str().expect("utf8")],
        );
        ferry_testsupport::git::git(&work, &["checkout", "-q", "-b", "side", &first]);
        std::fs::write(work.join("app/cm.yaml"), configmap_yaml("shop", "side")).expect("write");
        ferry_testsupport::git::git(&work, &["commit", "-q", "-am", "side"]);
        ferry_testsupport::git::git(&work, &["push", "-q", "origin", "side"]);
        ferry_testsupport::git::git(&work, &["rev-parse", "HEAD"])
            .trim()
            .to_string()
    };
    let token = sign(&rsa, &issuer.claims("refs/heads/main"));
    let (got, lines, text) = deploy(
        agent.http_addr,
        &ns.name,
        "web",
        &token,
        json!({"revision": side}),
    )
    .await;
    assert_eq!(got, 200, "{text}");
    let r = result(&lines);
    assert_eq!(r["outcome"], "refused", "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not reachable from branch main"),
        "{r}"
    );
    unchanged().await;

    // The real thing: ES256 token, commit two, streamed to the end.
    let token = sign(&ec, &issuer.claims("refs/heads/main"));
    let started = Instant::now();
    let (got, lines, text) = deploy(agent.http_addr, &ns.name, "web", &token, body.clone()).await;
    let latency = started.elapsed();
    assert_eq!(got, 200, "{text}");
    let events: Vec<&str> = lines.iter().filter_map(|l| l["event"].as_str()).collect();
    assert_eq!(events.first(), Some(&"accepted"), "{lines:?}");
    assert!(
        events.contains(&"fetched") && events.contains(&"applying"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "progress" && l["phase"] == "applied"),
        "per-object progress from the controller: {lines:?}"
    );
    let r = result(&lines);
    assert_eq!(r["outcome"], "succeeded", "{r}");
    assert_eq!(r["report"]["revision"], format!("sha1:{second}"), "{r}");
    assert_eq!(
        configmap_value(&client, &ns.name).await.as_deref(),
        Some("two")
    );
    eprintln!(
        "deploy latency (request to applied, warm): {} ms",
        latency.as_millis()
    );
    let applied =
        wait_release_applied(&client, &ns.name, "web", &second, Duration::from_secs(10)).await;
    assert_eq!(
        applied.status.and_then(|s| s.last_handled_deploy_request),
        r["request"].as_str().map(str::to_string)
    );
    // Accepted and finished requests are Events on the Release.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &ns.name);
    let reasons: Vec<String> = events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for reason in [
        "DeployAccepted",
        "DeploySucceeded",
        "DeployDenied",
        "DeployRefused",
    ] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} in {reasons:?}"
        );
    }

    // Replay of the accepted token.
    let (got, _, text) = deploy(agent.http_addr, &ns.name, "web", &token, body.clone()).await;
    assert_eq!(got, 409, "{text}");
    assert!(text.contains("already used"), "{text}");

    // Rollback to the first commit: refused (the policy does not allow rollbacks).
    let token = sign(&rsa, &issuer.claims("refs/heads/main"));
    let (got, lines, text) = deploy(
        agent.http_addr,
        &ns.name,
        "web",
        &token,
        json!({"revision": first}),
    )
    .await;
    assert_eq!(got, 200, "{text}");
    let r = result(&lines);
    assert_eq!(r["outcome"], "refused", "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap_or_default()
            .contains("rollback"),
        "{r}"
    );
    assert_eq!(
        configmap_value(&client, &ns.name).await.as_deref(),
        Some("two")
    );

    // Key rotation: a new key published later is found by its kid.
    let rotated = key("rsa-2", Algorithm::RS256);
    issuer.publish(&[&rotated, &ec]);
    // Deliberate: the JWKS re-read is rate-limited to once per REFRESH_MIN_INTERVAL; rotation is
    // only found after it has passed (waiting on a condition would not test the limit).
    tokio::time::sleep(ferry_agent::deploy::verify::REFRESH_MIN_INTERVAL).await;
    let third = repo.commit(
        &[("app/cm.yaml", Some(&configmap_yaml("shop", "three")))],
        "third",
    );
    let token = sign(&rotated, &issuer.claims("refs/heads/main"));
    let (got, lines, text) = deploy(
        agent.http_addr,
        &ns.name,
        "web",
        &token,
        json!({"revision": third}),
    )
    .await;
    assert_eq!(got, 200, "{text}");
    assert_eq!(result(&lines)["outcome"], "succeeded", "{lines:?}");
    assert_eq!(
        configmap_value(&client, &ns.name).await.as_deref(),
        Some("three")
    );
    // The retired key no longer verifies.
    let token = sign(&rsa, &issuer.claims("refs/heads/main"));
    let (got, _, text) = deploy(
        agent.http_addr,
        &ns.name,
        "web",
        &token,
        json!({"revision": third}),
    )
    .await;
    assert_eq!(got, 401, "{text}");

    agent.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_account_token_of_the_real_api_server_deploys() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "deploy-sa").await;
    // The API server's discovery document is readable by unauthenticated clients only when
    // bound so (how another cluster's agent would read it); this binding grants only that.
    let bindings: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(client.clone());
    let binding_name = format!("{}-oidc-discovery", ns.name);
    let binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": binding_name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:service-account-issuer-discovery"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:unauthenticated"}],
    }))
    .expect("binding");
    let _ = bindings.create(&PostParams::default(), &binding).await;
    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    let (repo, _first) = setup(&env, &client, &ns.name).await;
    let apiserver = env.var("FERRY_APISERVER_URL");
    let ca = std::fs::read_to_string(format!("{}/pki/ca.crt", env.var("FERRY_TESTENV_DIR")))
        .expect("testenv CA");
    create::<ferry_api::DeployPolicy>(
        &client,
        &ns.name,
        json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "DeployPolicy",
            "metadata": {"name": "other-cluster"},
            "spec": {
                "issuer": {
                    "url": "https://kubernetes.default.svc.cluster.local",
                    "discoveryURL": format!("{apiserver}/.well-known/openid-configuration"),
                    "caBundle": ca,
                },
                "audience": "ferry-deploy-test",
                "subjects": [format!("system:serviceaccount:{}:ci", ns.name)],
                "releases": ["web"],
            },
        }),
    )
    .await;
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), &ns.name);
    for sa in ["ci", "intruder"] {
        let _ = sas
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": sa}})).expect("sa"),
            )
            .await;
    }
    let mint = |sa: &'static str| {
        let sas = sas.clone();
        async move {
            let request: k8s_openapi::api::authentication::v1::TokenRequest =
                serde_json::from_value(json!({
                    "spec": {"audiences": ["ferry-deploy-test"], "expirationSeconds": 600}
                }))
                .expect("token request");
            let answer: k8s_openapi::api::authentication::v1::TokenRequest = sas
                .create_subresource("token", sa, &PostParams::default(), &request)
                .await
                .expect("TokenRequest");
            answer.status.expect("token").token
        }
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = repo.commit(
        &[("app/cm.yaml", Some(&configmap_yaml("shop", "two")))],
        "second",
    );
    // Another service account of the same cluster: verified, but not the policy's subject.
    let (got, _, text) = deploy(
        agent.http_addr,
        &ns.name,
        "web",
        &mint("intruder").await,
        json!({"revision": second}),
    )
    .await;
    assert_eq!(got, 403, "{text}");
    assert!(text.contains("subject"), "{text}");
    assert_eq!(
        configmap_value(&client, &ns.name).await.as_deref(),
        Some("one")
    );
    let (got, lines, text) = deploy(
        agent.http_addr,
        &ns.name,
        "web",
        &mint("ci").await,
        json!({"revision": second}),
    )
    .await;
    let _ = bindings
        .delete(&binding_name, &DeleteParams::default())
        .await;
    assert_eq!(got, 200, "{text}");
    assert_eq!(result(&lines)["outcome"], "succeeded", "{lines:?}");
    assert_eq!(
        configmap_value(&client, &ns.name).await.as_deref(),
        Some("two")
    );
    agent.stop().await.expect("agent stops");
}
