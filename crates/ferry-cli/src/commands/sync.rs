//! `ferry sync` / `ferry suspend` / `ferry resume` for Releases in the cluster (pull mode): set the
//! reconcile-request annotation, or flip `spec.suspend`, and optionally wait for the agent.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use ferry_api::common::{READY, RECONCILE_REQUESTED_AT, find_condition};
use ferry_api::{GitSource, Release};
use ferry_engine::cluster;
use kube::api::{Api, Patch, PatchParams};

use crate::cli::GlobalArgs;
use crate::commands::cluster_info::cluster_options;
use crate::output::{EXIT_ERROR, EXIT_OK, EXIT_TIMEOUT, OutputFormat, object_name, print_data};

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The Release to reconcile now.
    pub release: String,
    // Filled from the global -n/--namespace (`Cli::resolve_namespaces`).
    #[arg(skip)]
    pub namespace: Option<String>,
    /// Fetch its GitSource first (like `flux reconcile --with-source`).
    #[arg(long)]
    pub with_source: bool,
    /// Wait until the agent handled the request, and report the result.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub wait: bool,
    /// How long to wait.
    #[arg(long, default_value = "2m", value_parser = ferry_api::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct SuspendArgs {
    /// The Release.
    pub release: String,
    // Filled from the global -n/--namespace (`Cli::resolve_namespaces`).
    #[arg(skip)]
    pub namespace: Option<String>,
}

async fn releases(
    global: &GlobalArgs,
    namespace: &Option<String>,
) -> Result<(Api<Release>, kube::Client, String)> {
    let client = cluster::connect(&cluster_options(global)).await?;
    let ns = namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    Ok((Api::namespaced(client.clone(), &ns), client, ns))
}

/// With `-o name|json|yaml`, the Release as it is now on stdout (its name, or the object); the
/// human lines then go to stderr, so stdout stays data.
async fn print_release(global: &GlobalArgs, api: &Api<Release>, name: &str) -> Result<()> {
    match global.output {
        OutputFormat::Name => println!("{}", object_name("ferry.dev", "Release", name)),
        OutputFormat::Json | OutputFormat::Yaml => {
            let release = api
                .get(name)
                .await
                .with_context(|| format!("reading Release {name}"))?;
            print_data(global.output, &release)?;
        }
        OutputFormat::Human | OutputFormat::Wide | OutputFormat::Markdown => {}
    }
    Ok(())
}

/// A line for people: stdout in the human formats, stderr when stdout carries data.
fn say(global: &GlobalArgs, line: &str) {
    if global.output.is_for_people() {
        println!("{line}");
    } else {
        eprintln!("{line}");
    }
}

fn now_token() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

pub async fn run_sync(global: &GlobalArgs, args: &SyncArgs) -> Result<u8> {
    let (api, client, ns) = releases(global, &args.namespace).await?;
    let release = api
        .get_opt(&args.release)
        .await
        .with_context(|| format!("reading Release {ns}/{}", args.release))?
        .with_context(|| {
            format!(
                "Release {ns}/{} not found (check the name and -n)",
                args.release
            )
        })?;
    let token = now_token();
    let annotate =
        serde_json::json!({"metadata": {"annotations": {RECONCILE_REQUESTED_AT: token}}});
    if args.with_source {
        let src_ns = release
            .spec
            .source_ref
            .namespace
            .clone()
            .unwrap_or_else(|| ns.clone());
        let sources: Api<GitSource> = Api::namespaced(client.clone(), &src_ns);
        sources
            .patch(
                &release.spec.source_ref.name,
                &PatchParams::default(),
                &Patch::Merge(&annotate),
            )
            .await
            .with_context(|| {
                format!(
                    "requesting a fetch of GitSource {src_ns}/{}",
                    release.spec.source_ref.name
                )
            })?;
    }
    api.patch(
        &args.release,
        &PatchParams::default(),
        &Patch::Merge(&annotate),
    )
    .await
    .with_context(|| format!("requesting a sync of Release {ns}/{}", args.release))?;
    eprintln!("sync of Release {ns}/{} requested", args.release);
    if !args.wait {
        print_release(global, &api, &args.release).await?;
        return Ok(EXIT_OK);
    }
    let deadline = Instant::now() + args.timeout;
    loop {
        let r = api.get(&args.release).await?;
        let status = r.status.clone().unwrap_or_default();
        if status.last_handled_reconcile_at.as_deref() == Some(token.as_str()) {
            let ready = find_condition(&status.conditions, READY);
            let ok = ready.is_some_and(|c| c.status == "True");
            let message = ready.map(|c| c.message.clone()).unwrap_or_default();
            say(
                global,
                &format!("{}: {message}", if ok { "ready" } else { "not ready" }),
            );
            print_release(global, &api, &args.release).await?;
            return Ok(if ok { EXIT_OK } else { EXIT_ERROR });
        }
        if Instant::now() >= deadline {
            bail_timeout(&ns, &args.release, args.timeout)?;
            return Ok(EXIT_TIMEOUT);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn bail_timeout(ns: &str, name: &str, timeout: Duration) -> Result<()> {
    eprintln!(
        "timed out after {timeout:?}: the agent did not handle the request for Release {ns}/{name}; is ferry-agent running and watching {ns}?"
    );
    Ok(())
}

pub async fn run_suspend(global: &GlobalArgs, args: &SuspendArgs, suspend: bool) -> Result<u8> {
    let (api, _, ns) = releases(global, &args.namespace).await?;
    if api.get_opt(&args.release).await?.is_none() {
        bail!(
            "Release {ns}/{} not found (check the name and -n)",
            args.release
        );
    }
    let mut patch = serde_json::json!({"spec": {"suspend": suspend}});
    if !suspend {
        // Resuming also asks for an immediate sync.
        patch["metadata"] =
            serde_json::json!({"annotations": {RECONCILE_REQUESTED_AT: now_token()}});
    }
    api.patch(
        &args.release,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .with_context(|| format!("updating Release {ns}/{}", args.release))?;
    say(
        global,
        &format!(
            "Release {ns}/{} {}",
            args.release,
            if suspend { "suspended" } else { "resumed" }
        ),
    );
    print_release(global, &api, &args.release).await?;
    Ok(EXIT_OK)
}
