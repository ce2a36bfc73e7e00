//! bench/ui: first paint of the apps page with N Releases loaded (default 1,000), in headless
//! Chromium, against the real test environment. Creates the Releases (with a Ready status, as
//! the agent would write it) in a namespace of its own, starts the dashboard, loads `/` in
//! fresh tabs ROUNDS times and prints the browser's own timings (Performance API: first
//! contentful paint, DOMContentLoaded, load), the server's response time and the page size.
//! Deletes its namespace at the end.
//!
//! `cargo run -p ferry-ui --example first_paint -- [N] [ROUNDS]`

use std::time::{Duration, Instant};

use chromiumoxide::browser::{Browser, BrowserConfig};
use ferry_api::Release;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    ferry_engine::install_crypto_provider();
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let env = ferry_testsupport::TestEnv::get();
    let client = env.client().await;
    ferry_testsupport::install_crds(&client, &ferry_agent::crds::all(), "ferry-ui-bench").await;
    let ns = format!("ferry-bench-ui-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?,
        )
        .await?;
    let releases: Api<Release> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let releases = releases.clone();
            let ns = ns.clone();
            async move {
                let name = format!("app-{i:04}");
                let release = serde_json::json!({
                    "apiVersion": "ferry.dev/v1alpha1", "kind": "Release", "metadata": {"name": name},
                    "spec": {"sourceRef": {"kind": "GitSource", "name": "repo"}, "path": format!("./apps/{name}")},
                });
                releases.create(&PostParams::default(), &serde_json::from_value(release)?).await?;
                let sha = format!("{:040x}", i + 1);
                let status = serde_json::json!({"status": {
                    "observedGeneration": 1,
                    "conditions": [{"type": "Ready", "status": "True", "reason": "Applied", "message": format!("applied 4 objects at main@sha1:{sha}"), "lastTransitionTime": "2026-12-02T12:00:00Z"}],
                    "lastAppliedRevision": format!("main@sha1:{sha}"),
                    "inventory": [{"apiVersion": "v1", "kind": "ConfigMap", "namespace": ns, "name": name}],
                    "history": [{"revision": format!("main@sha1:{sha}"), "time": "2026-12-02T12:00:00Z", "result": "Succeeded"}],
                }});
                releases.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    eprintln!(
        "created {n} Releases with status in {:.1?}",
        started.elapsed()
    );

    let result = measure(&env, &ns, n, rounds).await;
    namespaces.delete(&ns, &DeleteParams::background()).await?;
    result
}

async fn measure(
    env: &ferry_testsupport::TestEnv,
    ns: &str,
    n: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let ui = ferry_ui::start(ferry_ui::UiOptions {
        cluster: ferry_engine::cluster::ClusterOptions {
            kubeconfig: Some(env.kubeconfig()),
            context: None,
        },
        address: "127.0.0.1".into(),
        port: 0,
        namespaces: vec![ns.to_string()],
    })
    .await?;
    eprintln!(
        "ferry ui listed {n} Releases and listens after {:.1?}",
        started.elapsed()
    );
    let profile = tempfile::tempdir()?;
    let config = BrowserConfig::builder()
        .chrome_executable(
            std::env::var("FERRY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
        )
        .no_sandbox()
        .new_headless_mode()
        .user_data_dir(profile.path())
        .window_size(1280, 900)
        .arg("--disable-gpu")
        .arg("--disable-dev-shm-usage")
        .build()
        .map_err(anyhow::Error::msg)?;
    let (mut browser, mut handler) = Browser::launch(config).await?;
    let handler = tokio::spawn(async move { while let Some(Ok(_)) = handler.next().await {} });
    // Log in once (token → cookie); then measure fresh loads of `/`.
    let login = browser.new_page(ui.url.as_str()).await?;
    login.wait_for_navigation().await?;
    login.close().await?;
    let url = format!("http://{}/", ui.addr);
    println!("round\tFCP ms\tDOMContentLoaded ms\tload ms\tresponseEnd ms\trows\tHTML bytes");
    let mut fcps = Vec::new();
    for round in 1..=rounds {
        let page = browser.new_page(url.as_str()).await?;
        page.wait_for_navigation().await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let timings: serde_json::Value = loop {
            let v: serde_json::Value = page
                .evaluate("(() => { const n = performance.getEntriesByType('navigation')[0]; const p = performance.getEntriesByName('first-contentful-paint')[0]; return {fcp: p ? p.startTime : null, dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd, response: n.responseEnd, bytes: n.transferSize || n.encodedBodySize, rows: document.querySelectorAll('#apps tbody tr').length}; })()")
                .await?
                .into_value()?;
            if !v["fcp"].is_null() && v["load"].as_f64().unwrap_or(0.0) > 0.0 {
                break v;
            }
            anyhow::ensure!(Instant::now() < deadline, "no paint after 20 s: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let f = |k: &str| timings[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "{round}\t{:.0}\t{:.0}\t{:.0}\t{:.0}\t{}\t{}",
            f("fcp"),
            f("dcl"),
            f("load"),
            f("response"),
            timings["rows"],
            timings["bytes"]
        );
        anyhow::ensure!(
            timings["rows"].as_u64() == Some(n as u64),
            "the page shows {} rows, not {n}",
            timings["rows"]
        );
        fcps.push(f("fcp"));
        page.close().await?;
    }
    fcps.sort_by(|a, b| a.total_cmp(b));
    println!(
        "median first contentful paint with {n} Releases: {:.0} ms (min {:.0}, max {:.0}, {rounds} rounds)",
        fcps[fcps.len() / 2],
        fcps[0],
        fcps[fcps.len() - 1]
    );
    let _ = browser.close().await;
    let _ = browser.wait().await;
    handler.abort();
    ui.stop().await;
    Ok(())
}
