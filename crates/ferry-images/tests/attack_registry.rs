//! Attack tests for the registry client (issue 11, item 12): a hostile registry tries to get the
//! registry's credentials sent to another host (Link pagination, a token realm elsewhere or over
//! plain http, redirects, a 401 after a redirect) and to exhaust memory or time with endless
//! bodies. Every server in this file is a HOSTILE PEER written by the test: the "registry" on
//! 127.0.0.1 and "another host" on 127.0.0.2 (a different address, so a different origin).
//! The assertions: the other host never sees an `Authorization` header, and the scan fails with
//! a typed error that names the offending URL. The same attack through the ImageRepository
//! controller is in ferry-agent's `tests/attack_image_registry.rs` (the controllers live there).

mod hostile;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::StatusCode;
use ferry_images::registry::{
    ConnectOptions, Credentials, Registries, RegistryError, RegistryLimits, Target,
};
use hostile::{Peer, basic_challenge, basic_ok, other_host, respond};

fn creds() -> Credentials {
    Credentials::Basic {
        username: "robot".into(),
        password: "hunter2-secret".into(),
    }
}

fn target(registry: SocketAddr, credentials: Credentials) -> Target {
    Target::new(
        &format!("{registry}/team/app"),
        credentials,
        ConnectOptions::default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_to_another_host_is_refused_without_sending_credentials() {
    let other = other_host().await;
    let next = format!("http://{}/v2/team/app/tags/list?last=1.0.0", other.addr);
    let registry = Peer::start(
        [127, 0, 0, 1],
        Arc::new(move |request, _| {
            if !basic_ok(request) {
                return basic_challenge();
            }
            respond(
                StatusCode::OK,
                &[
                    ("content-type", "application/json".into()),
                    ("link", format!("<{next}>; rel=\"next\"")),
                ],
                r#"{"name":"team/app","tags":["1.0.0"]}"#,
            )
        }),
    )
    .await;
    let err = Registries::default()
        .list_tags(&target(registry.addr, creds()), Duration::from_secs(10))
        .await
        .expect_err("a next page on another host must be refused");
    assert!(matches!(err, RegistryError::OtherHost { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&other.addr.to_string()),
        "names the URL: {text}"
    );
    assert!(!text.contains("hunter2"), "no secret in errors: {text}");
    assert!(other.seen().is_empty(), "the other host was not even asked");
    other.assert_no_credentials();
    // The registry itself did get the credentials (the positive half).
    assert!(registry.seen().iter().any(|s| s.authorization.is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_realm_on_another_host_or_plain_http_gets_no_credentials() {
    let other = other_host().await;
    // Realm on another host over plain http.
    let realm = format!("http://{}/token", other.addr);
    let registry = Peer::start(
        [127, 0, 0, 1],
        Arc::new(move |_, _| {
            respond(
                StatusCode::UNAUTHORIZED,
                &[(
                    "www-authenticate",
                    format!("Bearer realm=\"{realm}\",service=\"hostile\""),
                )],
                Body::empty(),
            )
        }),
    )
    .await;
    let err = Registries::default()
        .list_tags(&target(registry.addr, creds()), Duration::from_secs(10))
        .await
        .expect_err("a plain-http realm elsewhere must be refused");
    assert!(matches!(err, RegistryError::OtherHost { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("{}/token", other.addr)),
        "{err}"
    );
    assert!(other.seen().is_empty(), "the realm was never asked");

    // A realm with user info, and one on the registry's own host but another port: refused too.
    for realm in [
        format!("http://user:pw@{}/token", registry.addr),
        format!("http://127.0.0.1:{}/token", other.addr.port()),
    ] {
        let hostile = Peer::start(
            [127, 0, 0, 1],
            Arc::new(move |_, _| {
                respond(
                    StatusCode::UNAUTHORIZED,
                    &[("www-authenticate", format!("Bearer realm=\"{realm}\""))],
                    Body::empty(),
                )
            }),
        )
        .await;
        let err = Registries::default()
            .list_tags(&target(hostile.addr, creds()), Duration::from_secs(10))
            .await
            .expect_err("refused realm");
        assert!(matches!(err, RegistryError::OtherHost { .. }), "{err}");
    }
    other.assert_no_credentials();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_another_host_carry_no_credentials_and_its_401_is_not_answered() {
    // The CDN: serves a manifest to anyone, records what it got.
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#;
    let cdn = Peer::start(
        [127, 0, 0, 2],
        Arc::new(move |request, _| {
            if request.uri().path().contains("/manifests/") {
                respond(
                    StatusCode::OK,
                    &[(
                        "content-type",
                        "application/vnd.oci.image.manifest.v1+json".into(),
                    )],
                    &manifest[..],
                )
            } else {
                // The tag list on the CDN wants credentials: must not be answered.
                basic_challenge()
            }
        }),
    )
    .await;
    let cdn_addr = cdn.addr;
    let registry = Peer::start(
        [127, 0, 0, 1],
        Arc::new(move |request, _| {
            let authorised = basic_ok(request)
                || request
                    .headers()
                    .get("authorization")
                    .is_some_and(|v| v.to_str().is_ok_and(|v| v == "Bearer static-token-secret"));
            if !authorised {
                return basic_challenge();
            }
            let path = request.uri().path_and_query().map(|p| p.to_string());
            respond(
                StatusCode::TEMPORARY_REDIRECT,
                &[(
                    "location",
                    format!("http://{cdn_addr}{}", path.unwrap_or_default()),
                )],
                Body::empty(),
            )
        }),
    )
    .await;
    let registries = Registries::default();
    for credentials in [creds(), Credentials::Bearer("static-token-secret".into())] {
        // Manifest redirect (legitimate CDN use): followed, without the Authorization header.
        let digest = registries
            .digest(
                &target(registry.addr, credentials.clone()),
                "1.0.0",
                Duration::from_secs(10),
            )
            .await
            .expect("a manifest served by a CDN");
        let expected = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, manifest);
        assert_eq!(digest, format!("sha256:{}", hex::encode(expected.as_ref())));
        // Tag list redirected to a host that then asks for credentials: not answered.
        let err = registries
            .list_tags(&target(registry.addr, credentials), Duration::from_secs(10))
            .await
            .expect_err("a 401 from the redirect target must not be answered");
        assert!(matches!(err, RegistryError::OtherHost { .. }), "{err}");
        assert!(err.to_string().contains(&cdn.addr.to_string()), "{err}");
    }
    assert!(
        cdn.seen().iter().any(|s| s.path.contains("/manifests/")),
        "the redirect was followed"
    );
    cdn.assert_no_credentials();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_and_trickling_bodies_are_cut_off() {
    // Endless tag list: 64 KiB chunks forever.
    let registry = Peer::start(
        [127, 0, 0, 1],
        Arc::new(|request, _| {
            let chunk = bytes_of(64 * 1024);
            let endless = futures::stream::repeat_with(move || {
                Ok::<_, std::convert::Infallible>(chunk.clone())
            });
            if request.uri().path().contains("/manifests/") {
                return respond(StatusCode::OK, &[], Body::from_stream(endless));
            }
            respond(
                StatusCode::OK,
                &[("content-type", "application/json".into())],
                Body::from_stream(endless),
            )
        }),
    )
    .await;
    let registries = Registries::default();
    let started = Instant::now();
    let err = registries
        .list_tags(
            &target(registry.addr, Credentials::Anonymous),
            Duration::from_secs(60),
        )
        .await
        .expect_err("endless body");
    assert!(matches!(err, RegistryError::TooLarge { .. }), "{err}");
    assert!(
        err.to_string().contains(&registry.addr.to_string()),
        "{err}"
    );
    let err = registries
        .digest(
            &target(registry.addr, Credentials::Anonymous),
            "1.0.0",
            Duration::from_secs(60),
        )
        .await
        .expect_err("endless manifest");
    assert!(matches!(err, RegistryError::TooLarge { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "cut off early");

    // A huge Content-Length is refused before reading.
    let liar = Peer::start(
        [127, 0, 0, 1],
        Arc::new(|_, _| {
            respond(
                StatusCode::OK,
                &[("content-length", (1u64 << 40).to_string())],
                Body::empty(),
            )
        }),
    )
    .await;
    let err = registries
        .list_tags(
            &target(liar.addr, Credentials::Anonymous),
            Duration::from_secs(10),
        )
        .await
        .expect_err("declared huge");
    assert!(
        matches!(
            err,
            RegistryError::TooLarge { .. } | RegistryError::Invalid { .. }
        ),
        "{err}"
    );

    // A body that trickles one byte a second forever: the per-request timeout ends it.
    let trickle = Peer::start(
        [127, 0, 0, 1],
        Arc::new(|_, _| {
            let slow = futures::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Some((Ok::<_, std::convert::Infallible>(bytes_of(1)), ()))
            });
            respond(StatusCode::OK, &[], Body::from_stream(slow))
        }),
    )
    .await;
    let short = Registries::new(RegistryLimits {
        request_timeout: Duration::from_secs(2),
        ..RegistryLimits::default()
    });
    let started = Instant::now();
    let err = short
        .list_tags(
            &target(trickle.addr, Credentials::Anonymous),
            Duration::from_secs(60),
        )
        .await
        .expect_err("trickle");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the request timeout ended it: {:?} {err}",
        started.elapsed()
    );
    assert!(err.to_string().contains(&trickle.addr.to_string()), "{err}");
}

fn bytes_of(n: usize) -> axum::body::Bytes {
    axum::body::Bytes::from(vec![b' '; n])
}
