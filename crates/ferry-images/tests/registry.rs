//! The registry client against the real testenv registries (plain and htpasswd) and, for the
//! bearer-token flow, ETag and 429 handling, a local gateway that fronts the real registry (see
//! `common::Gateway`: it stands in for a hosted registry's token service only).

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use ferry_images::registry::{
    ConnectOptions, Credentials, Registries, RegistryError, RegistryLimits, Target,
};
use ferry_testsupport::TestEnv;

fn limits(page_size: usize) -> RegistryLimits {
    RegistryLimits {
        page_size,
        base_backoff: Duration::from_millis(200),
        ..RegistryLimits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_follows_link_and_digest_matches_crane() {
    let env = TestEnv::get();
    let registry = env.var("FERRY_REGISTRY");
    let repo = format!("{}/app", unique("pages"));
    let digest = crane_push(&env, &format!("{registry}/{repo}:1.0.0"), None);
    let more: Vec<String> = (1..25).map(|i| format!("1.{i}.0")).collect();
    put_tags(&registry, &repo, "1.0.0", &more, None).await;

    let registries = Registries::new(limits(10));
    let target = Target::new(
        &format!("{registry}/{repo}"),
        Credentials::Anonymous,
        ConnectOptions::default(),
    );
    let list = registries
        .list_tags(&target, Duration::from_secs(30))
        .await
        .expect("list tags");
    assert_eq!(list.tags.len(), 25, "{:?}", list.tags);
    assert!(list.tags.contains(&"1.24.0".to_string()));
    assert_eq!(list.requests, 3, "25 tags in pages of 10");
    assert!(!list.not_modified, "the real registry sends no ETag");

    let got = registries
        .digest(&target, "1.0.0", Duration::from_secs(10))
        .await
        .expect("digest");
    assert_eq!(got, digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_registry_and_clear_errors() {
    let env = TestEnv::get();
    let auth_registry = env.var("FERRY_REGISTRY_AUTH");
    let user = env.var("FERRY_REGISTRY_AUTH_USER");
    let password = env.var("FERRY_REGISTRY_AUTH_PASSWORD");
    let config = docker_config(&env);
    let repo = format!("{}/app", unique("auth"));
    crane_push(
        &env,
        &format!("{auth_registry}/{repo}:2.0.0"),
        Some(config.path()),
    );
    let registries = Registries::new(limits(100));
    let image = format!("{auth_registry}/{repo}");

    // Anonymous: 401 and a hint to set the secret.
    let err = registries
        .list_tags(
            &Target::new(&image, Credentials::Anonymous, ConnectOptions::default()),
            Duration::from_secs(10),
        )
        .await
        .expect_err("anonymous must fail");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("spec.secretRef"), "{err}");

    // Wrong password: 401, and the password is not in the message.
    let wrong = Credentials::Basic {
        username: user.clone(),
        password: "not-the-password".into(),
    };
    let err = registries
        .list_tags(
            &Target::new(&image, wrong, ConnectOptions::default()),
            Duration::from_secs(10),
        )
        .await
        .expect_err("wrong password must fail");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(!err.to_string().contains("not-the-password"));

    // Right credentials, from a docker config JSON as a Secret would hold it.
    let json = std::fs::read(config.path().join("config.json")).expect("config");
    let creds =
        ferry_images::registry::auth::from_docker_config("test/regcred", &json, &auth_registry)
            .expect("creds");
    let list = registries
        .list_tags(
            &Target::new(&image, creds.clone(), ConnectOptions::default()),
            Duration::from_secs(10),
        )
        .await
        .expect("list with credentials");
    assert_eq!(list.tags, vec!["2.0.0".to_string()]);
    assert!(!format!("{creds:?}").contains(&password));

    // Unknown repository: 404 named.
    let err = registries
        .list_tags(
            &Target::new(
                &format!("{auth_registry}/{}/none", unique("missing")),
                creds,
                ConnectOptions::default(),
            ),
            Duration::from_secs(10),
        )
        .await
        .expect_err("missing repo");
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("not found"), "{err}");

    // Registry down: nothing listens on this port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let err = registries
        .list_tags(
            &Target::new(
                &format!("{closed}/app"),
                Credentials::Anonymous,
                ConnectOptions::default(),
            ),
            Duration::from_secs(10),
        )
        .await
        .expect_err("down");
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err}");
    assert_eq!(err.reason(), "RegistryUnreachable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_flow_etag_and_429_backoff() {
    let env = TestEnv::get();
    let registry = env.var("FERRY_REGISTRY");
    let repo = format!("{}/app", unique("bearer"));
    crane_push(&env, &format!("{registry}/{repo}:3.0.0"), None);
    let gateway = Gateway::start(&registry, "robot", "hunter2").await;
    let registries = Registries::new(limits(100));
    let image = format!("{}/{repo}", gateway.addr);
    let creds = Credentials::Basic {
        username: "robot".into(),
        password: "hunter2".into(),
    };
    let target = Target::new(&image, creds, ConnectOptions::default());

    // 401 challenge → token → tag list.
    let list = registries
        .list_tags(&target, Duration::from_secs(10))
        .await
        .expect("bearer flow");
    assert_eq!(list.tags, vec!["3.0.0".to_string()]);
    assert_eq!(list.requests, 3, "challenge, token, list");
    assert_eq!(gateway.state.token_requests.load(Ordering::SeqCst), 1);

    // Unchanged list: the cached token and ETag make it one request answered 304.
    let before = gateway.state.requests.load(Ordering::SeqCst);
    let list = registries
        .list_tags(&target, Duration::from_secs(10))
        .await
        .expect("cached");
    assert!(list.not_modified);
    assert_eq!(list.requests, 1);
    assert_eq!(gateway.state.requests.load(Ordering::SeqCst) - before, 1);
    assert_eq!(list.tags, vec!["3.0.0".to_string()]);

    // A new tag changes the ETag: fetched again.
    put_tags(&registry, &repo, "3.0.0", &["3.1.0".to_string()], None).await;
    let list = registries
        .list_tags(&target, Duration::from_secs(10))
        .await
        .expect("changed");
    assert!(!list.not_modified);
    assert_eq!(list.tags.len(), 2);

    // One 429 with Retry-After: 1 → waits, then succeeds.
    gateway.state.throttle.store(1, Ordering::SeqCst);
    let started = Instant::now();
    let list = registries
        .list_tags(&target, Duration::from_secs(10))
        .await
        .expect("after backoff");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(list.tags.len(), 2);

    // Persistent 429 beyond the scan deadline: a clear RateLimited error with the backoff.
    gateway.state.throttle.store(100, Ordering::SeqCst);
    gateway.state.retry_after_secs.store(30, Ordering::SeqCst);
    let err = registries
        .list_tags(&target, Duration::from_secs(3))
        .await
        .expect_err("rate limited");
    assert!(matches!(err, RegistryError::RateLimited { .. }), "{err}");
    assert!(err.to_string().contains("429"), "{err}");
    // The host stays blocked: the next scan does not even ask.
    let before = gateway.state.requests.load(Ordering::SeqCst);
    let err = registries
        .list_tags(&target, Duration::from_secs(3))
        .await
        .expect_err("still blocked");
    assert!(matches!(err, RegistryError::RateLimited { .. }));
    assert_eq!(
        gateway.state.requests.load(Ordering::SeqCst),
        before,
        "no request while backing off"
    );
    assert!(registries.blocked_for(&gateway.addr).is_some());

    // A registry refusing large pages (Docker Hub: n <= 100): one 400, then pages of 100.
    let capped = Gateway::start(&registry, "robot", "hunter2").await;
    capped.state.max_n.store(100, Ordering::SeqCst);
    let big = Registries::new(RegistryLimits::default());
    let target_capped = Target::new(
        &format!("{}/{repo}", capped.addr),
        Credentials::Basic {
            username: "robot".into(),
            password: "hunter2".into(),
        },
        ConnectOptions::default(),
    );
    let list = big
        .list_tags(&target_capped, Duration::from_secs(10))
        .await
        .expect("fallback page size");
    assert_eq!(list.tags.len(), 2);
    let list = big
        .list_tags(&target_capped, Duration::from_secs(10))
        .await
        .expect("remembered page size");
    assert_eq!(
        list.requests, 1,
        "page size remembered, unchanged list answered 304"
    );

    // A token without pull rights: 403, named as such.
    capped.state.forbid.store(1, Ordering::SeqCst);
    let err = big
        .list_tags(&target_capped, Duration::from_secs(10))
        .await
        .expect_err("forbidden");
    assert!(matches!(err, RegistryError::Forbidden { .. }), "{err}");
    assert!(
        err.to_string().contains("403") && err.to_string().contains("pull rights"),
        "{err}"
    );

    // Wrong password at the token service: Unauthorized, password not echoed.
    let bad = Target::new(
        &image,
        Credentials::Basic {
            username: "robot".into(),
            password: "wrong-pw".into(),
        },
        ConnectOptions::default(),
    );
    let fresh = Registries::new(limits(100));
    let err = fresh
        .list_tags(&bad, Duration::from_secs(10))
        .await
        .expect_err("bad token creds");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(!err.to_string().contains("wrong-pw"));
}
