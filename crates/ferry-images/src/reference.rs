//! Image references for image automation. The grammar itself (`[registry/]path[:tag][@digest]`,
//! Docker Hub defaults) is the engine's one parser (`ferry_engine::render::image_ref`), shared
//! with `ferry apply --set-image` and `ferry set-image`; what is registry-specific lives here.

pub use ferry_engine::render::image_ref::{
    DOCKER_HUB, DOCKER_HUB_API, ImageRef, ImageRefError as ReferenceError, ImageRefProblem,
    split_repository,
};

/// The one loopback rule, shared with the registry client.
pub use ferry_engine::source::registry::is_loopback_host;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback() {
        assert!(is_loopback_host("127.0.0.1:15000"));
        assert!(is_loopback_host("localhost"));
        assert!(is_loopback_host("[::1]:5000"));
        assert!(!is_loopback_host("ghcr.io"));
    }

    #[test]
    fn the_engine_grammar_is_the_one_used_here() {
        let r = ImageRef::parse("127.0.0.1:5000/team/app:1.2.3@sha256:abc").unwrap();
        assert_eq!(
            r.registry_and_path(),
            ("127.0.0.1:5000".into(), "team/app".into())
        );
        for bad in ["", "app:", "app@nodigest", "a b", "App", "a/../b"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?}");
        }
    }
}
