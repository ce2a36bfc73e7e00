//! Benchmark: scanning a 10,000-tag repository on the real testenv registry and evaluating
//! policies over it (time and memory). Run with:
//!
//!   cargo bench -p ferry-images --bench images
//!
//! (needs `testenv/up`). Pushing the tags is setup and is not measured.

#[path = "../../crates/ferry-images/tests/common/mod.rs"]
mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Gateway, crane_push, put_tags, unique};
use ferry_images::policy::{Choice, Filter, Order, Policy};
use ferry_images::registry::{ConnectOptions, Credentials, Registries, RegistryLimits, Target};
use ferry_images::semver_range::Range;
use ferry_testsupport::TestEnv;

const TAGS: usize = 10_000;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn tags() -> Vec<String> {
    let mut tags = Vec::with_capacity(TAGS);
    'outer: for x in 0..10 {
        for y in 0..30 {
            for z in 0..20 {
                tags.push(format!("{x}.{y}.{z}"));
                if tags.len() == 6000 {
                    break 'outer;
                }
            }
        }
    }
    for i in 0..500 {
        tags.push(format!("{}.{}.0-rc.{}", i % 10, i % 30, i));
    }
    for i in 0..3000u64 {
        tags.push(format!(
            "main-{}-{:07x}",
            1_700_000_000 + i * 37,
            i * 7919 % 0xfffffff
        ));
    }
    while tags.len() < TAGS {
        tags.push(format!("sha-{:012x}", tags.len() * 104_729));
    }
    tags
}

fn time<F: FnMut() -> Option<String>>(runs: usize, mut f: F) -> (Duration, Option<String>) {
    let mut samples = Vec::new();
    let mut out = None;
    for _ in 0..runs {
        let started = Instant::now();
        out = f();
        samples.push(started.elapsed());
    }
    (median(samples), out)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let env = TestEnv::get();
    let registry = env.var("FERRY_REGISTRY");
    let repo = format!("{}/app", unique("bench"));
    let all = tags();
    let setup = Instant::now();
    crane_push(&env, &format!("{registry}/{repo}:{}", all[0]), None);
    put_tags(&registry, &repo, &all[0], &all[1..], None).await;
    println!(
        "setup: pushed {} tags in {:.1}s (not measured)",
        all.len(),
        setup.elapsed().as_secs_f64()
    );

    let rss_before = status_kib("VmRSS:");
    let target = Target::new(
        &format!("{registry}/{repo}"),
        Credentials::Anonymous,
        ConnectOptions::default(),
    );
    let mut samples = Vec::new();
    let mut list = None;
    for _ in 0..5 {
        let registries = Registries::new(RegistryLimits::default());
        let started = Instant::now();
        let result = registries
            .list_tags(&target, Duration::from_secs(120))
            .await
            .expect("scan");
        samples.push(started.elapsed());
        list = Some(result);
    }
    let list = list.expect("at least one scan");
    assert_eq!(list.tags.len(), TAGS, "every tag listed");
    let rss_after = status_kib("VmRSS:");
    let tag_bytes: usize = list
        .tags
        .iter()
        .map(|t| t.len() + std::mem::size_of::<String>())
        .sum();
    println!(
        "scan (cold; n=10000 asked, the distribution registry serves at most 1000 per page): median {:.1} ms over 5 runs, {} requests, {} tags",
        median(samples).as_secs_f64() * 1000.0,
        list.requests,
        list.tags.len()
    );

    // Unchanged list through a gateway that sends ETags (as hosted registries do).
    let gateway = Gateway::start(&registry, "u", "p").await;
    let registries = Registries::new(RegistryLimits::default());
    let via = Target::new(
        &format!("{}/{repo}", gateway.addr),
        Credentials::Basic {
            username: "u".into(),
            password: "p".into(),
        },
        ConnectOptions::default(),
    );
    registries
        .list_tags(&via, Duration::from_secs(120))
        .await
        .expect("warm scan");
    let before = gateway.state.requests.load(Ordering::SeqCst);
    let started = Instant::now();
    let unchanged = registries
        .list_tags(&via, Duration::from_secs(120))
        .await
        .expect("unchanged scan");
    println!(
        "scan (unchanged, ETag): {:.1} ms, {} request(s) to the registry, not_modified={}",
        started.elapsed().as_secs_f64() * 1000.0,
        gateway.state.requests.load(Ordering::SeqCst) - before,
        unchanged.not_modified
    );

    let tags = list.tags;
    let policies = [
        (
            "semver >=1.0 <5.0",
            Policy {
                choice: Choice::Semver(Range::parse(">=1.0 <5.0").expect("range")),
                filter: None,
            },
        ),
        (
            "semver ^3.0.0-0 (pre-releases)",
            Policy {
                choice: Choice::Semver(Range::parse("^3.0.0-0").expect("range")),
                filter: None,
            },
        ),
        (
            "numerical, filter main-(?P<ts>\\d+)-[a-f0-9]+ extract $ts",
            Policy {
                choice: Choice::Numerical(Order::Asc),
                filter: Some(
                    Filter::new(r"^main-(?P<ts>\d+)-[a-f0-9]+$", Some("$ts")).expect("filter"),
                ),
            },
        ),
        (
            "alphabetical",
            Policy {
                choice: Choice::Alphabetical(Order::Asc),
                filter: None,
            },
        ),
    ];
    for (name, policy) in &policies {
        let (took, chosen) = time(20, || policy.select(tags.iter().map(String::as_str)).tag);
        println!(
            "policy {name}: median {:.2} ms over 20 runs → {}",
            took.as_secs_f64() * 1000.0,
            chosen.unwrap_or_else(|| "(none)".into())
        );
    }
    println!(
        "memory: tag list ≈ {} KiB; RSS {} → {} KiB across 5 scans; peak RSS {} KiB",
        tag_bytes / 1024,
        rss_before,
        rss_after,
        status_kib("VmHWM:")
    );
}
