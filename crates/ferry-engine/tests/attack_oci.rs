//! OCI artifacts as a source (issue 15.2), against the testenv's real registry
//! (`FERRY_REGISTRY`, distribution v3): a pushed directory pulls back byte for byte, a semver
//! range picks the highest tag, and hostile artifacts pushed to the real registry (a tar with
//! `../`, an absolute path, a symlink to /etc, a write through a symlink, hard links and
//! FIFOs, oversized files and totals, too many files, a manifest with thousands of layers) are
//! each refused with a typed error naming the entry, and nothing is left unpacked.
//!
//! Two attacks need a registry that lies, which the real one never does (it verifies every
//! digest on upload): a layer whose bytes do not match its digest, and a token realm on another
//! host. For those the test runs a HOSTILE PEER of its own (`hostile`, shared with the image
//! automation attack tests), and says so at each use.

#[path = "../../ferry-images/tests/hostile/mod.rs"]
mod hostile;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use ferry_engine::source::oci::{
    self, ArtifactRef, ExtractError, ExtractLimits, OciError, PullLimits, PullRequest, PushRequest,
};
use ferry_engine::source::registry::artifacts::sha256_digest;
use ferry_engine::source::registry::{
    ConnectOptions, Credentials, Registries, RegistryError, Target,
};
use ferry_testsupport::{TestEnv, unique_name};

fn registry() -> String {
    TestEnv::get().var("FERRY_REGISTRY")
}

/// A repository of its own for each test.
fn repository(prefix: &str) -> String {
    format!(
        "{}/{}",
        registry(),
        unique_name(prefix).replace("ferry-test-", "oci/")
    )
}

fn pull_request(repository: &str, reference: ArtifactRef, limits: PullLimits) -> PullRequest {
    PullRequest {
        url: oci::parse_url(&format!("oci://{repository}")).expect("url"),
        reference,
        credentials: Credentials::Anonymous,
        insecure: true,
        owner: "test/oci".into(),
        timeout: Duration::from_secs(30),
        limits,
    }
}

/// One entry of a raw tarball, written without the tar crate's own path checks (those are the
/// writer's; the attacker has no such scruples).
enum Raw<'a> {
    File(&'a str, Vec<u8>),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Fifo(&'a str),
    CharDevice(&'a str),
}

fn raw_layer(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut tar = Vec::new();
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        let (name, kind, data, link): (&str, tar::EntryType, &[u8], &str) = match entry {
            Raw::File(n, d) => (n, tar::EntryType::Regular, d, ""),
            Raw::Dir(n) => (n, tar::EntryType::Directory, &[], ""),
            Raw::Symlink(n, t) => (n, tar::EntryType::Symlink, &[], t),
            Raw::Hardlink(n, t) => (n, tar::EntryType::Link, &[], t),
            Raw::Fifo(n) => (n, tar::EntryType::Fifo, &[], ""),
            Raw::CharDevice(n) => (n, tar::EntryType::Char, &[], ""),
        };
        {
            let old = header.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_mtime(0);
        header.set_cksum();
        tar.extend_from_slice(header.as_bytes());
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.extend_from_slice(&[0u8; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    gz.finish().expect("gzip")
}

fn target(repository: &str) -> Target {
    Target::new(
        repository,
        Credentials::Anonymous,
        ConnectOptions {
            insecure: true,
            ca_pem: None,
        },
    )
}

/// Push `layer` as a Flux-format artifact `repository:tag` whose manifest lists `layer_count`
/// copies of it (1 for a normal artifact); returns the manifest digest.
async fn push_raw(repository: &str, tag: &str, layer: &[u8], layer_count: usize) -> String {
    let registries = Registries::default();
    let target = target(repository);
    let timeout = Duration::from_secs(30);
    let layer_digest = sha256_digest(layer);
    registries
        .push_blob(&target, &layer_digest, layer, timeout)
        .await
        .expect("push layer");
    let config = b"{}";
    registries
        .push_blob(&target, &sha256_digest(config), config, timeout)
        .await
        .expect("push config");
    let layers: Vec<serde_json::Value> = (0..layer_count)
        .map(|_| {
            serde_json::json!({"mediaType": oci::FLUX_CONTENT_MEDIA_TYPE, "digest": layer_digest, "size": layer.len()})
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": oci::OCI_MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": oci::FLUX_CONFIG_MEDIA_TYPE, "digest": sha256_digest(config), "size": 2},
        "layers": layers,
    });
    registries
        .push_manifest(
            &target,
            tag,
            oci::OCI_MANIFEST_MEDIA_TYPE,
            &serde_json::to_vec(&manifest).expect("json"),
            timeout,
        )
        .await
        .expect("push manifest")
}

/// Nothing unpacked is left in the cache: no checkout directory, no temp dir, no blob.
fn assert_nothing_unpacked(cache: &Path) {
    let leftovers: Vec<String> = walkdir::WalkDir::new(cache)
        .min_depth(1)
        .into_iter()
        .flatten()
        .filter(|e| !e.file_type().is_dir())
        .map(|e| e.path().display().to_string())
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    let checkouts: Vec<_> = walkdir::WalkDir::new(cache)
        .into_iter()
        .flatten()
        .filter(|e| e.path().parent().is_some_and(|p| p.ends_with("checkouts")))
        .collect();
    assert!(checkouts.is_empty(), "checkouts left: {checkouts:?}");
}

async fn pull_hostile(layer: Vec<u8>, limits: PullLimits) -> (OciError, tempfile::TempDir) {
    let repository = repository("hostile");
    push_raw(&repository, "v1", &layer, 1).await;
    let cache = tempfile::tempdir().expect("cache");
    let err = oci::pull(
        &Registries::default(),
        cache.path(),
        &pull_request(&repository, ArtifactRef::Tag("v1".into()), limits),
    )
    .await
    .expect_err("a hostile artifact must be refused");
    assert_nothing_unpacked(cache.path());
    (err, cache)
}

fn extract_error(err: &OciError) -> &ExtractError {
    match err {
        OciError::Extract { source, .. } => source,
        other => panic!("expected an unpacking refusal, got {other}"),
    }
}

#[tokio::test]
async fn a_pushed_directory_pulls_back_and_semver_picks_the_highest_tag() {
    let repository = repository("roundtrip");
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(dir.path().join("overlay")).expect("mkdir");
    std::fs::write(dir.path().join("overlay/cm.yaml"), "kind: ConfigMap\n").expect("write");
    let registries = Registries::default();
    let mut digests = Vec::new();
    for tag in ["1.0.0", "1.2.0", "2.0.0"] {
        std::fs::write(dir.path().join("version.txt"), tag).expect("write");
        let pushed = oci::push(
            &registries,
            &PushRequest {
                url: oci::parse_url(&format!("oci://{repository}:{tag}")).expect("url"),
                dir: dir.path().to_path_buf(),
                source: Some("https://git.example/team/app".into()),
                revision: Some(format!("main@sha1:{}", "a".repeat(40))),
                credentials: Credentials::Anonymous,
                insecure: true,
                timeout: Duration::from_secs(30),
            },
        )
        .await
        .expect("push");
        digests.push(pushed.digest);
    }
    let cache = tempfile::tempdir().expect("cache");
    let pulled = oci::pull(
        &registries,
        cache.path(),
        &pull_request(
            &repository,
            ArtifactRef::Semver(">=1.0.0 <2.0.0".into()),
            PullLimits::default(),
        ),
    )
    .await
    .expect("pull");
    assert_eq!(pulled.revision, format!("1.2.0@{}", digests[1]));
    assert_eq!(
        std::fs::read_to_string(pulled.path.join("version.txt")).expect("read"),
        "1.2.0"
    );
    assert_eq!(
        std::fs::read_to_string(pulled.path.join("overlay/cm.yaml")).expect("read"),
        "kind: ConfigMap\n"
    );
    assert_eq!(
        pulled.origin_source.as_deref(),
        Some("https://git.example/team/app")
    );
    // By digest: the same files, revision without a tag (Flux's format).
    let by_digest = oci::pull(
        &registries,
        cache.path(),
        &pull_request(
            &repository,
            ArtifactRef::Digest(digests[2].clone()),
            PullLimits::default(),
        ),
    )
    .await
    .expect("pull by digest");
    assert_eq!(by_digest.revision, digests[2]);
    assert_eq!(
        std::fs::read_to_string(by_digest.path.join("version.txt")).expect("read"),
        "2.0.0"
    );
    let err = oci::pull(
        &registries,
        cache.path(),
        &pull_request(
            &repository,
            ArtifactRef::Semver(">=3.0.0".into()),
            PullLimits::default(),
        ),
    )
    .await
    .expect_err("no tag matches");
    assert_eq!(err.reason(), "NoMatchingTag", "{err}");
    assert!(err.to_string().contains("2.0.0"), "lists the tags: {err}");
}

#[tokio::test]
async fn a_path_with_dotdot_or_an_absolute_path_is_refused() {
    let sandbox = tempfile::tempdir().expect("sandbox");
    let (err, cache) = pull_hostile(
        raw_layer(&[
            Raw::File("ok.yaml", b"a: 1\n".to_vec()),
            Raw::File("../../../evil.yaml", b"pwned\n".to_vec()),
        ]),
        PullLimits::default(),
    )
    .await;
    assert!(
        matches!(extract_error(&err), ExtractError::BadName { path, .. } if path.contains("evil.yaml")),
        "{err}"
    );
    assert_eq!(err.reason(), "UnsafeArtifact");
    assert!(
        !cache
            .path()
            .parent()
            .expect("parent")
            .join("evil.yaml")
            .exists()
    );
    drop(sandbox);
    let (err, _cache) = pull_hostile(
        raw_layer(&[Raw::File("/tmp/ferry-oci-evil.yaml", b"pwned\n".to_vec())]),
        PullLimits::default(),
    )
    .await;
    assert!(
        matches!(extract_error(&err), ExtractError::Absolute { .. }),
        "{err}"
    );
    assert!(!Path::new("/tmp/ferry-oci-evil.yaml").exists());
}

#[tokio::test]
async fn symlinks_out_and_writes_through_links_are_refused() {
    for (target, what) in [("/etc", "absolute"), ("../../../../etc", "up and out")] {
        let (err, _cache) = pull_hostile(
            raw_layer(&[Raw::Symlink("etc", target)]),
            PullLimits::default(),
        )
        .await;
        assert!(
            matches!(extract_error(&err), ExtractError::LinkOutside { path, .. } if path == "etc"),
            "{what}: {err}"
        );
        assert!(err.to_string().contains(target), "names the target: {err}");
    }
    // A link that stays inside is fine, but nothing is ever written through it.
    let (err, _cache) = pull_hostile(
        raw_layer(&[
            Raw::Dir("sub"),
            Raw::Symlink("link", "sub"),
            Raw::File("link/x.yaml", b"a: 1\n".to_vec()),
        ]),
        PullLimits::default(),
    )
    .await;
    assert!(
        matches!(extract_error(&err), ExtractError::ThroughLink { path } if path == "link/x.yaml"),
        "{err}"
    );
}

#[tokio::test]
async fn hard_links_devices_and_fifos_are_refused() {
    for (entry, kind) in [
        (Raw::Hardlink("passwd", "/etc/passwd"), "hard link"),
        (Raw::Fifo("pipe"), "FIFO"),
        (Raw::CharDevice("null"), "character device"),
    ] {
        let (err, _cache) = pull_hostile(raw_layer(&[entry]), PullLimits::default()).await;
        assert!(
            matches!(extract_error(&err), ExtractError::Unsupported { kind: k, .. } if *k == kind),
            "{kind}: {err}"
        );
    }
    // `.git` inside an artifact is refused like in a git tree.
    let (err, _cache) = pull_hostile(
        raw_layer(&[Raw::File(".git/config", b"x".to_vec())]),
        PullLimits::default(),
    )
    .await;
    assert!(
        matches!(extract_error(&err), ExtractError::BadName { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn oversized_files_totals_and_layers_are_refused() {
    let small = PullLimits {
        extract: ExtractLimits {
            max_file_bytes: 1024 * 1024,
            max_bytes: 2 * 1024 * 1024,
            ..ExtractLimits::default()
        },
        ..PullLimits::default()
    };
    // 8 MiB of zeros: a few KiB compressed, a bomb unpacked.
    let (err, _cache) = pull_hostile(
        raw_layer(&[Raw::File("bomb.yaml", vec![0u8; 8 * 1024 * 1024])]),
        small,
    )
    .await;
    assert!(
        matches!(extract_error(&err), ExtractError::FileTooLarge { path, .. } if path == "bomb.yaml"),
        "{err}"
    );
    assert_eq!(err.reason(), "ArtifactTooLarge");
    let files: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| (format!("part{i}.yaml"), vec![b'a'; 900 * 1024]))
        .collect();
    let entries: Vec<Raw<'_>> = files.iter().map(|(n, d)| Raw::File(n, d.clone())).collect();
    let (err, _cache) = pull_hostile(raw_layer(&entries), small).await;
    assert!(
        matches!(extract_error(&err), ExtractError::TooLarge { .. }),
        "{err}"
    );
    // The compressed layer over its limit: refused from the manifest, before downloading.
    let tiny_layer = PullLimits {
        max_layer_bytes: 64,
        ..PullLimits::default()
    };
    let (err, _cache) = pull_hostile(
        raw_layer(&[Raw::File("a.yaml", b"a: 1\n".to_vec())]),
        tiny_layer,
    )
    .await;
    assert!(matches!(err, OciError::LayerTooLarge { .. }), "{err}");
}

#[tokio::test]
async fn too_many_files_are_refused() {
    let names: Vec<String> = (0..300).map(|i| format!("f{i}.yaml")).collect();
    let entries: Vec<Raw<'_>> = names
        .iter()
        .map(|n| Raw::File(n, b"a: 1\n".to_vec()))
        .collect();
    let limits = PullLimits {
        extract: ExtractLimits {
            max_entries: 100,
            ..ExtractLimits::default()
        },
        ..PullLimits::default()
    };
    let (err, _cache) = pull_hostile(raw_layer(&entries), limits).await;
    assert!(
        matches!(
            extract_error(&err),
            ExtractError::TooManyEntries { limit: 100, .. }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_manifest_with_thousands_of_layers_is_refused_before_any_download() {
    let repository = repository("layers");
    let layer = raw_layer(&[Raw::File("a.yaml", b"a: 1\n".to_vec())]);
    push_raw(&repository, "many", &layer, 5000).await;
    let cache = tempfile::tempdir().expect("cache");
    let err = oci::pull(
        &Registries::default(),
        cache.path(),
        &pull_request(
            &repository,
            ArtifactRef::Tag("many".into()),
            PullLimits::default(),
        ),
    )
    .await
    .expect_err("5000 layers");
    assert!(
        matches!(err, OciError::TooManyLayers { count: 5000, .. }),
        "{err}"
    );
    assert_nothing_unpacked(cache.path());
}

/// HOSTILE PEER (the real registry verifies digests, so it cannot play this part): a registry
/// whose manifest names a layer digest that its blob does not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_that_does_not_match_its_digest_is_refused_before_unpacking() {
    let claimed = raw_layer(&[Raw::File("a.yaml", b"a: 1\n".to_vec())]);
    let served = raw_layer(&[Raw::File("a.yaml", b"a: 2\n".to_vec())]);
    let claimed_digest = sha256_digest(&claimed);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": oci::OCI_MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": oci::FLUX_CONFIG_MEDIA_TYPE, "digest": sha256_digest(b"{}"), "size": 2},
        "layers": [{"mediaType": oci::FLUX_CONTENT_MEDIA_TYPE, "digest": claimed_digest, "size": served.len()}],
    }))
    .expect("json");
    let manifest_digest = sha256_digest(&manifest);
    let peer = hostile::Peer::start(
        [127, 0, 0, 1],
        Arc::new(move |request: &axum::extract::Request, _| {
            let path = request.uri().path().to_string();
            if path.contains("/manifests/") {
                hostile::respond(
                    StatusCode::OK,
                    &[
                        ("content-type", oci::OCI_MANIFEST_MEDIA_TYPE.into()),
                        ("docker-content-digest", manifest_digest.clone()),
                    ],
                    manifest.clone(),
                )
            } else {
                hostile::respond(StatusCode::OK, &[], served.clone())
            }
        }),
    )
    .await;
    let cache = tempfile::tempdir().expect("cache");
    let repository = format!("{}/team/app", peer.addr);
    let err = oci::pull(
        &Registries::default(),
        cache.path(),
        &pull_request(
            &repository,
            ArtifactRef::Tag("v1".into()),
            PullLimits::default(),
        ),
    )
    .await
    .expect_err("wrong digest");
    assert!(
        matches!(
            &err,
            OciError::Registry { source: RegistryError::DigestMismatch { expected, .. }, .. }
                if *expected == sha256_digest(&claimed)
        ),
        "{err}"
    );
    assert_eq!(err.reason(), "DigestMismatch");
    assert_nothing_unpacked(cache.path());
    // Asked by digest, a manifest with other bytes is refused before it is even parsed.
    let other = format!("sha256:{}", "0".repeat(64));
    let err = oci::pull(
        &Registries::default(),
        cache.path(),
        &pull_request(
            &repository,
            ArtifactRef::Digest(other),
            PullLimits::default(),
        ),
    )
    .await
    .expect_err("manifest digest");
    assert_eq!(err.reason(), "DigestMismatch", "{err}");
}

/// HOSTILE PEER: a registry whose bearer challenge names a token realm on another host over
/// plain http; the source's credentials must not go there (the client's rule).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_go_to_a_token_realm_on_another_host() {
    let other = hostile::other_host().await;
    let realm = format!("http://{}/token", other.addr);
    let registry = hostile::Peer::start(
        [127, 0, 0, 1],
        Arc::new(move |_, _| {
            hostile::respond(
                StatusCode::UNAUTHORIZED,
                &[(
                    "www-authenticate",
                    format!("Bearer realm=\"{realm}\",service=\"r\""),
                )],
                "",
            )
        }),
    )
    .await;
    let cache = tempfile::tempdir().expect("cache");
    let mut request = pull_request(
        &format!("{}/team/app", registry.addr),
        ArtifactRef::Tag("v1".into()),
        PullLimits::default(),
    );
    request.credentials = Credentials::Basic {
        username: "robot".into(),
        password: "hunter2-secret".into(),
    };
    let err = oci::pull(&Registries::default(), cache.path(), &request)
        .await
        .expect_err("realm elsewhere");
    assert_eq!(err.reason(), "OtherHost", "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(other.seen().is_empty(), "the other host was not asked");
    other.assert_no_credentials();
}
