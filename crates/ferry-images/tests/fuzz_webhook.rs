//! Property-based fuzzing of registry webhook payload parsing and verification
//! (`ferry_images::webhook`): Docker Hub, Harbor and generic payloads and signature headers made
//! of arbitrary bytes, hostile image references and deep nesting never panic and finish in
//! bounded time; what the parsers return is always a well-formed image reference.
//!
//! `cargo test` runs 256 cases per property; longer runs:
//! `PROPTEST_CASES=100000 cargo test -p ferry-images --test fuzz_webhook` (see docs/agent.md).

use std::time::{Duration, Instant};

use ferry_images::webhook::{
    parse_dockerhub, parse_generic, parse_harbor, verify_harbor, verify_hmac,
};
use proptest::prelude::*;

fn reference() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,120}",
        "[a-z0-9.:/@_-]{0,80}(:[a-zA-Z0-9._-]{0,20})?(@sha256:[0-9a-f]{0,64})?",
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2048),
        reference()
            .prop_map(|r| serde_json::to_vec(&serde_json::json!({"image": r})).unwrap_or_default()),
        (reference(), ".{0,20}").prop_map(|(r, tag)| serde_json::to_vec(&serde_json::json!({
            "type": "PUSH_ARTIFACT",
            "event_data": {"resources": [{"resource_url": r, "tag": tag}, {"resource_url": 7}]},
        }))
        .unwrap_or_default()),
        (reference(), ".{0,20}").prop_map(|(r, tag)| serde_json::to_vec(&serde_json::json!({
            "push_data": {"tag": tag}, "repository": {"repo_name": r},
        }))
        .unwrap_or_default()),
        (1usize..50_000).prop_map(|depth| {
            let mut s = "[".repeat(depth);
            s.push_str(&"]".repeat(depth));
            s.into_bytes()
        }),
    ]
}

proptest! {
    #[test]
    fn arbitrary_payloads_never_panic(body in body()) {
        let started = Instant::now();
        for events in [parse_dockerhub(&body), parse_harbor(&body), parse_generic(&body)].into_iter().flatten() {
            for e in events {
                prop_assert!(!e.image.is_empty());
                let _ = e.canonical();
                // The receiver matches ImageRepositories with `names`: an event names its own image.
                prop_assert!(e.names(&e.image));
            }
        }
        prop_assert!(started.elapsed() < Duration::from_secs(2), "slow: {:?}", started.elapsed());
    }

    #[test]
    fn arbitrary_signature_headers_never_verify(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        header in prop_oneof![".{0,200}", "(sha1|sha256|sha512|md5)=[0-9a-f]{0,140}"],
        key in proptest::collection::vec(any::<u8>(), 1..64),
    ) {
        prop_assert!(verify_hmac(&key, &body, Some(&header)).is_err());
        let _ = verify_hmac(&key, &body, None);
        // Harbor's auth header verifies exactly when it is the token (`Bearer ` optional).
        let trimmed = header.trim();
        let given = trimmed.strip_prefix("Bearer ").unwrap_or(trimmed);
        prop_assert_eq!(verify_harbor(&key, Some(&header)).is_ok(), given.as_bytes() == key.as_slice());
        prop_assert!(verify_harbor(given.as_bytes(), Some(&header)).is_ok());
    }
}
