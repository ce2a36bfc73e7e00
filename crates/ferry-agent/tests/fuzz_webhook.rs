//! Property-based fuzzing of webhook request handling before and after verification
//! (`ferry_agent::webhook`): any body and any header values, for every receiver type, never
//! panic and finish in bounded time; a correctly signed body always verifies and any change to
//! it fails; the payload parser survives arbitrary bytes, deep nesting and hostile URLs.
//!
//! `cargo test` runs 256 cases per property; longer runs:
//! `PROPTEST_CASES=100000 cargo test -p ferry-agent --test fuzz_webhook` (see docs/agent.md).

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use ferry_agent::webhook::{
    Request, normalize_url, parse_payload, registry_events, replay_keys, verify, verify_request,
};
use ferry_api::ReceiverType;
use proptest::prelude::*;

const KINDS: [ReceiverType; 8] = [
    ReceiverType::Github,
    ReceiverType::Gitlab,
    ReceiverType::Gitea,
    ReceiverType::Bitbucket,
    ReceiverType::Generic,
    ReceiverType::GenericHmac,
    ReceiverType::Dockerhub,
    ReceiverType::Harbor,
];

/// The headers the receivers read, plus one they do not.
const HEADERS: [&str; 14] = [
    "x-hub-signature-256",
    "x-hub-signature",
    "x-gitea-signature",
    "x-signature",
    "x-timestamp",
    "x-gitlab-token",
    "authorization",
    "x-github-event",
    "x-github-delivery",
    "x-gitea-delivery",
    "x-gitlab-event-uuid",
    "x-request-uuid",
    "x-delivery-id",
    "x-unrelated",
];

/// Header values: arbitrary bytes, or near-misses of the real formats.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        "sha256=[0-9a-fA-F]{0,80}".prop_map(String::into_bytes),
        "(sha1|sha512|md5|)=?[0-9a-f=]{0,130}".prop_map(String::into_bytes),
        "Bearer .{0,40}".prop_map(String::into_bytes),
        "-?[0-9]{0,25}".prop_map(String::into_bytes),
    ]
}

fn headers() -> impl Strategy<Value = HeaderMap> {
    proptest::collection::vec((0..HEADERS.len(), header_value()), 0..8).prop_map(|pairs| {
        let mut map = HeaderMap::new();
        for (i, value) in pairs {
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                map.append(HeaderName::from_static(HEADERS[i]), value);
            }
        }
        map
    })
}

/// Bodies: arbitrary bytes, JSON-ish text, deeply nested arrays/objects.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2048),
        "[\\[\\]{}\",:a-z0-9 ]{0,512}".prop_map(String::into_bytes),
        (1usize..50_000).prop_map(|depth| {
            let mut s = "[".repeat(depth);
            s.push_str(&"]".repeat(depth));
            s.into_bytes()
        }),
        (1usize..5_000).prop_map(|depth| "{\"a\":".repeat(depth).into_bytes()),
        payload().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
    ]
}

/// Push payloads with hostile URL fields in the places the receivers read.
fn payload() -> impl Strategy<Value = serde_json::Value> {
    let url = prop_oneof![
        ".{0,80}".prop_map(serde_json::Value::String),
        any::<i64>().prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
        Just(serde_json::json!({"nested": ["x"]})),
    ];
    (url.clone(), url.clone(), url).prop_map(|(a, b, c)| {
        serde_json::json!({
            "repository": {"clone_url": a, "links": {"clone": [{"href": b}], "html": {"href": c}}},
            "project": {"git_http_url": b, "web_url": c},
        })
    })
}

fn sign(key: &[u8], msg: &[u8]) -> String {
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key),
        msg,
    );
    hex::encode(tag.as_ref())
}

proptest! {
    /// Anything goes in, nothing panics, every call is quick, and an unsigned random request is
    /// never accepted by an HMAC receiver.
    #[test]
    fn arbitrary_requests_never_panic(
        kind in 0..KINDS.len(),
        headers in headers(),
        body in body(),
        token in proptest::collection::vec(any::<u8>(), 1..64),
        now in any::<i64>(),
        url_token in proptest::option::of(".{0,64}"),
    ) {
        let kind = KINDS[kind];
        let started = Instant::now();
        let verdict = verify(kind, &headers, &body, &token, now);
        let request = Request { headers: &headers, url_token: url_token.as_deref(), body: &body };
        let _ = verify_request(kind, &request, &token, now);
        let _ = replay_keys(kind, &headers, &body);
        let _ = parse_payload(&body);
        let _ = registry_events(kind, &body);
        if matches!(kind, ReceiverType::Github | ReceiverType::Bitbucket | ReceiverType::Gitea | ReceiverType::GenericHmac) {
            prop_assert!(verdict.is_err(), "a random request verified for {kind:?}");
        }
        prop_assert!(started.elapsed() < Duration::from_secs(2), "slow: {:?}", started.elapsed());
    }

    /// A correctly signed body verifies; flipping any byte of it does not.
    #[test]
    fn signatures_bind_the_body(
        body in proptest::collection::vec(any::<u8>(), 1..1024),
        key in proptest::collection::vec(any::<u8>(), 1..64),
        flip in any::<prop::sample::Index>(),
    ) {
        let mut headers = HeaderMap::new();
        let sig = format!("sha256={}", sign(&key, &body));
        headers.insert("x-hub-signature-256", HeaderValue::from_str(&sig).expect("hex"));
        prop_assert!(verify(ReceiverType::Github, &headers, &body, &key, 0).is_ok());
        let mut tampered = body.clone();
        let i = flip.index(tampered.len());
        tampered[i] ^= 0x01;
        prop_assert!(verify(ReceiverType::Github, &headers, &tampered, &key, 0).is_err());
        let keys = replay_keys(ReceiverType::Github, &headers, &body);
        prop_assert!(keys.iter().any(|k| k.starts_with("sig:")));
    }

    /// generic-hmac with a timestamp: accepted only inside the window, only with the signed
    /// timestamp.
    #[test]
    fn signed_timestamps_are_bounded(
        body in proptest::collection::vec(any::<u8>(), 0..256),
        ts in 0i64..4_000_000_000,
        skew in -1000i64..1000,
    ) {
        let key = b"fuzz-key";
        let mut msg = ts.to_string().into_bytes();
        msg.push(b'.');
        msg.extend_from_slice(&body);
        let mut headers = HeaderMap::new();
        headers.insert("x-timestamp", HeaderValue::from_str(&ts.to_string()).expect("digits"));
        headers.insert("x-signature", HeaderValue::from_str(&format!("sha256={}", sign(key, &msg))).expect("hex"));
        let ok = verify(ReceiverType::GenericHmac, &headers, &body, key, ts + skew).is_ok();
        prop_assert_eq!(ok, skew.abs() <= 300);
        headers.insert("x-timestamp", HeaderValue::from_str(&(ts + 1).to_string()).expect("digits"));
        prop_assert!(verify(ReceiverType::GenericHmac, &headers, &body, key, ts).is_err());
    }

    /// URL normalisation is total and idempotent on what it produces.
    #[test]
    fn urls_normalise_without_panic(url in ".{0,200}") {
        let once = normalize_url(&url);
        prop_assert!(once.len() <= url.len() * 4 + 4);
        let _ = normalize_url(&once);
    }
}
