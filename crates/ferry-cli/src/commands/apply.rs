//! `ferry apply PATH...`: render the paths, server-side apply them as one app, optionally prune
//! and wait. Also holds the source/target flags `diff` and `render` share.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use ferry_engine::pipeline::{self, ApplyOptions};
use ferry_engine::progress::{Progress, ProgressEvent};
use ferry_engine::render::config::{AppConfig, RendererKind};
use ferry_engine::render::request::Capabilities;
use ferry_engine::render::{self, RenderRequest, set_image};
use ferry_engine::{Manifest, cluster};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::GlobalArgs;
use crate::commands::cluster_info::cluster_options;
use crate::output::{EXIT_CHANGES, EXIT_DRIFT, EXIT_OK, EXIT_TIMEOUT, OutputFormat};

pub const APPLY_HELP: &str = "\
Examples:
  ferry apply ./deploy                                  # app name = directory name
  ferry apply ./deploy --app web -n web --prune --wait  # delete what left ./deploy, wait for health
  ferry apply k8s/base k8s/prod --app shop --set-image shop=ghcr.io/acme/shop:1.4.2
  kustomize build . | ferry apply - --app web           # stdin
  ferry apply ./deploy -o json                          # one result per object, for machines

PATH is a file, a directory (recursive; .yaml/.yml/.json; multi-document) or - for stdin.
Objects get the label ferry.dev/app=<app> and the owner annotation ferry.dev/owner=<ns>/<app>
(push apps never share an identity with an agent Release, whatever their names); the inventory
is the ConfigMap ferry-inventory-<app> in the app's namespace. --prune deletes only objects that
are in the inventory AND still carry the app's label and exact owner annotation, never those
annotated ferry.dev/prune: disabled, never a Namespace, CRD, PVC or PV without
ferry.dev/prune: allow-destructive, never objects in a terminating namespace, and never when the
source is empty (unless --allow-empty).
--wait is on by default when $CI is set.

The app's ferry.yaml `drift:` block (docs/push.md, \"Drift\") leaves fields to other managers
(`ignore`: not sent for objects that exist) or, with `mode: detect`, reports objects edited in
the cluster whose source did not change (action `drifted`, with the fields) instead of
overwriting them.

Exit codes: 0 applied (and healthy with --wait), 1 some objects failed, 2 error, 3 timed out,
4 drift left in place (drift.mode: detect; everything else applied).";

// Where the manifests come from (shared by apply, diff and render). A `//` comment: as a doc
// comment it would replace the subcommand's about text once clap builds it deferred.
#[derive(Debug, Args, Clone)]
pub struct SourceArgs {
    /// Files or directories to render, or - for stdin (none needed with --chart).
    // (Checked in `render_sources_collecting`: clap's required_unless_present does not see an
    // argument of the flattened rendering group.)
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Source root: nothing outside it is read (default: the git checkout containing PATH,
    /// else the current directory).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Replace container images in every pod template: NAME=NEWNAME:TAG, NAME=NEWNAME@DIGEST,
    /// NAME=:TAG or NAME:TAG. Repeatable.
    #[arg(long = "set-image", value_name = "NAME=IMAGE")]
    pub set_images: Vec<String>,
    // Namespace for namespaced objects without one; also where the app's inventory lives
    // (default: the app's ferry.yaml `namespace`, else the kubeconfig context's namespace).
    // Filled from the global -n/--namespace (`Cli::resolve_namespaces`).
    #[arg(skip)]
    pub namespace: Option<String>,
    /// Renderer, chart, values, variables (override the app's ferry.yaml).
    #[command(flatten)]
    pub render: crate::commands::render_args::RenderArgs,
}

// App identity and apply behaviour (shared by apply and diff); `//` as above.
#[derive(Debug, Args, Clone)]
pub struct AppArgs {
    /// App name: labels the objects and names the inventory (default: the directory's name).
    #[arg(long, value_name = "NAME")]
    pub app: Option<String>,
    /// Delete objects that were applied before by this app and are gone from the source.
    #[arg(long)]
    pub prune: bool,
    /// With --prune, allow an empty source (deletes everything the app owns).
    #[arg(long)]
    pub allow_empty: bool,
    /// Take over fields owned by another field manager instead of failing.
    #[arg(long)]
    pub force_conflicts: bool,
    /// Git commit to record (default: HEAD of the checkout containing PATH).
    #[arg(long, value_name = "SHA")]
    pub revision: Option<String>,
    /// Maximum parallel API requests.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub concurrency: usize,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub app: AppArgs,
    /// Wait until every object is healthy (default when $CI is set).
    #[arg(long, overrides_with = "no_wait")]
    pub wait: bool,
    /// Do not wait for health.
    #[arg(long)]
    pub no_wait: bool,
    /// How long --wait waits (e.g. 90s, 5m, 1h).
    #[arg(long, default_value = "5m", value_parser = ferry_api::parse_positive_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// Server-side dry run: validate against the cluster, persist nothing.
    #[arg(long, value_name = "server|client", num_args = 0..=1, require_equals = true, default_value = "none", default_missing_value = "server", value_parser = crate::output::parse_dry_run)]
    pub dry_run: bool,
    /// List unchanged objects too in human output.
    #[arg(long)]
    pub show_unchanged: bool,
    /// Take over what agent Release NAMESPACE/NAME deployed (pull to push): its inventory and
    /// objects become this app's, nothing is re-created. Delete the Release with
    /// spec.deletionPolicy: Orphan (or suspend it) first.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub adopt_release: Option<String>,
}

/// The source root: --root, else the git checkout containing the first path, else the
/// current directory.
fn source_root(args: &SourceArgs) -> Result<PathBuf> {
    if let Some(root) = &args.root {
        return Ok(root.clone());
    }
    let cwd = std::env::current_dir().context("cannot determine the current directory")?;
    let first = args.paths.iter().find(|p| p.as_os_str() != "-");
    if let Some(first) = first {
        let absolute = cwd.join(first);
        if let Some(workdir) = ferry_engine::source::git_workdir(&absolute) {
            return Ok(workdir);
        }
        if !absolute.starts_with(&cwd) {
            // Outside the current directory and not in a checkout: the path itself is the root.
            return Ok(if absolute.is_dir() {
                absolute
            } else {
                absolute.parent().map(Path::to_path_buf).unwrap_or(absolute)
            });
        }
    }
    Ok(cwd)
}

/// Render every path into one list of manifests; `capabilities` is what helm's `.Capabilities`
/// says (`None`: helm template's offline defaults).
pub fn render_sources(
    args: &SourceArgs,
    capabilities: Option<&Capabilities>,
) -> Result<Vec<Manifest>> {
    render_sources_collecting(args, capabilities).map(|(manifests, _)| manifests)
}

/// True when one of the sources is rendered by helm (a `--chart`, or an app whose ferry.yaml,
/// flags or detection pick helm): only those need the cluster's capabilities, so the others
/// keep rendering while ferry connects. An app that cannot be resolved counts as not helm; its
/// render says what is wrong with it.
pub fn needs_capabilities(args: &SourceArgs) -> bool {
    if args.render.chart.is_some() {
        return true;
    }
    let (Ok(root), Ok(settings), Ok(cwd)) = (
        source_root(args),
        args.render.driver_settings(),
        std::env::current_dir(),
    ) else {
        return false;
    };
    args.paths
        .iter()
        .filter(|p| p.as_os_str() != "-")
        .any(|path| {
            let mut req = RenderRequest::new(root.clone(), cwd.join(path));
            render::overrides::layer_onto(&mut req, settings.clone()).is_ok()
                && render::app::kind_of(&req).is_ok_and(|kind| kind == RendererKind::Helm)
        })
}

/// [`render_sources`], also returning every value that came from decryption, so that diffs,
/// reports and errors can hide it (docs/secrets.md, "Redaction").
pub fn render_sources_collecting(
    args: &SourceArgs,
    capabilities: Option<&Capabilities>,
) -> Result<(Vec<Manifest>, ferry_engine::render::safety::Redactor)> {
    let mut redactor = ferry_engine::render::safety::Redactor::new();
    // A chart given by --chart needs no PATH: it is rendered from an empty directory (no
    // ferry.yaml, no manifests of its own); flag paths are relative to the current directory.
    let chart_only = args.paths.is_empty() && args.render.chart.is_some();
    if args.paths.is_empty() && !chart_only {
        bail!(
            "no PATH given: name files or directories to render, - for stdin, or a chart with --chart"
        );
    }
    let empty_dir = if chart_only {
        Some(tempfile::tempdir().context("cannot create a temporary directory")?)
    } else {
        None
    };
    let paths: Vec<PathBuf> = match &empty_dir {
        Some(dir) => vec![dir.path().to_path_buf()],
        None => args.paths.clone(),
    };
    let root = match (&empty_dir, &args.root) {
        (Some(dir), None) => dir.path().to_path_buf(),
        _ => source_root(args)?,
    };
    let overrides = set_image::parse_all(&args.set_images)?;
    let render_settings = args.render.driver_settings()?;
    let age_keys = args.render.age_keys()?;
    let mut manifests = Vec::new();
    let cwd = std::env::current_dir().context("cannot determine the current directory")?;
    for path in &paths {
        let path = if path.as_os_str() == "-" {
            path.clone()
        } else {
            cwd.join(path)
        };
        let mut req = RenderRequest::new(root.clone(), path)
            .with_default_namespace(args.namespace.clone())
            .with_set_images(overrides.clone());
        render::overrides::layer_onto(&mut req, render_settings.clone())?;
        req.vars = args.render.vars();
        req.age_keys = age_keys.clone();
        req.capabilities = capabilities.cloned();
        let rendered = render::render_collecting(&req, &mut redactor).map_err(|err| {
            // A refusal (typically a path that leaves the source root) under a root ferry chose
            // itself: say which root that was and that --root changes it.
            let refused = matches!(err, ferry_engine::Error::Refused(_));
            let err = anyhow::Error::new(err);
            if refused && args.root.is_none() && !chart_only {
                err.context(format!(
                    "rendering {} with the source root {} (the git checkout containing PATH, else PATH itself when it is outside the current directory, else the current directory); pass --root DIR to let ferry read a wider directory",
                    req.path.display(),
                    root.display()
                ))
            } else {
                err
            }
        })?;
        manifests.extend(rendered);
    }
    // Libraries log too (kube-client logs the API server's refusal, echoed value and all).
    ferry_engine::report::redact::publish_for_logs("ferry", &redactor);
    Ok((manifests, redactor))
}

/// `--app`, else the (sanitized) name of the first path's directory.
pub fn app_name(app: &AppArgs, source: &SourceArgs) -> Result<String> {
    if let Some(app) = &app.app {
        return Ok(app.clone());
    }
    let Some(first) = source.paths.iter().find(|p| p.as_os_str() != "-") else {
        bail!("no PATH to name the app after (stdin or --chart alone): pass --app NAME");
    };
    let absolute = std::env::current_dir()?.join(first);
    let absolute = absolute.canonicalize().unwrap_or(absolute);
    let dir = if absolute.is_file() {
        absolute.parent().map(Path::to_path_buf).unwrap_or(absolute)
    } else {
        absolute
    };
    let raw = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let name: String = raw
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let name = name.trim_matches('-').chars().take(63).collect::<String>();
    if name.is_empty() {
        bail!(
            "cannot derive an app name from {}: pass --app NAME",
            first.display()
        );
    }
    Ok(name)
}

/// `-n`, else the `namespace` the apps' ferry.yaml files declare (they must agree), else `None`
/// (the kubeconfig context's namespace).
fn apply_namespace(source: &SourceArgs) -> Result<Option<String>> {
    if source.namespace.is_some() {
        return Ok(source.namespace.clone());
    }
    let cwd = std::env::current_dir().context("cannot determine the current directory")?;
    let mut declared: Option<(String, &PathBuf)> = None;
    for path in source.paths.iter().filter(|p| p.as_os_str() != "-") {
        let Some(ns) = AppConfig::declared_namespace(&cwd.join(path))? else {
            continue;
        };
        match &declared {
            Some((first, first_path)) if *first != ns => bail!(
                "{} declares namespace {first:?} but {} declares {ns:?}: pass -n/--namespace",
                first_path.display(),
                path.display()
            ),
            Some(_) => {}
            None => declared = Some((ns, path)),
        }
    }
    Ok(declared.map(|(ns, _)| ns))
}

pub fn apply_options(app: &AppArgs, source: &SourceArgs) -> Result<ApplyOptions> {
    let first = source.paths.iter().find(|p| p.as_os_str() != "-");
    let revision = app.revision.clone().or_else(|| {
        first.and_then(|p| {
            ferry_engine::source::git_revision(&std::env::current_dir().ok()?.join(p))
        })
    });
    // The apps' ferry.yaml `healthCheckExprs`: a bad one fails here, naming the file.
    let cwd = std::env::current_dir().context("cannot determine the current directory")?;
    let app_dirs: Vec<PathBuf> = source
        .paths
        .iter()
        .filter(|p| p.as_os_str() != "-")
        .map(|p| cwd.join(p))
        .collect();
    let health_checks = std::sync::Arc::new(ferry_engine::health::cel::from_app_dirs(&app_dirs)?);
    // The apps' ferry.yaml `drift:`; a bad pointer fails here, naming the file and field.
    let drift = pipeline::drift::DriftPolicy::from_app_dirs(&app_dirs)?;
    Ok(ApplyOptions {
        health_checks,
        drift,
        app: app_name(app, source)?,
        namespace: apply_namespace(source)?,
        prune: app.prune,
        allow_empty: app.allow_empty,
        force_conflicts: app.force_conflicts,
        concurrency: app.concurrency.max(1),
        revision,
        source: source
            .paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" "),
        ..Default::default()
    })
}

/// Progress on stderr: an indicatif bar on a terminal, occasional plain lines otherwise.
pub struct CliProgress {
    bar: Option<ProgressBar>,
    plain: bool,
    last_line: Mutex<Option<(Instant, usize)>>,
}

impl CliProgress {
    pub fn new(enabled: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        Self {
            bar: (enabled && tty).then(|| {
                let bar = ProgressBar::new(0);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} {msg} [{bar:30}] {pos}/{len} {elapsed}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar
            }),
            plain: enabled && !tty,
            last_line: Mutex::new(None),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Progress for CliProgress {
    fn event(&self, event: ProgressEvent<'_>) {
        match event {
            ProgressEvent::Planned { total } => {
                if let Some(bar) = &self.bar {
                    bar.set_length(total as u64);
                    bar.set_message("applying");
                } else if self.plain {
                    eprintln!("applying {total} objects");
                }
            }
            ProgressEvent::Applied { .. } => {
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                }
            }
            ProgressEvent::Waiting { pending, total } => {
                if let Some(bar) = &self.bar {
                    bar.set_length(total as u64);
                    bar.set_position((total - pending) as u64);
                    bar.set_message("healthy");
                } else if self.plain {
                    // At most one line every 5 s, and only when the count moved.
                    let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
                    let due = last.is_none_or(|(at, n)| {
                        n != pending && at.elapsed() >= Duration::from_secs(5)
                    });
                    if due && pending > 0 {
                        eprintln!("waiting for {pending} of {total} objects to become healthy");
                        *last = Some((Instant::now(), pending));
                    }
                }
            }
            ProgressEvent::Pruned { .. } => {}
        }
    }
}

/// What a run against the cluster needs before the engine starts.
pub struct Prepared {
    pub manifests: Vec<Manifest>,
    pub opts: ApplyOptions,
    pub client: kube::Client,
    /// Discovery requests sent while rendering (the engine's report does not count them).
    pub discovery_reads: u64,
    /// The API server's URL, for errors that say the cluster cannot be reached.
    pub server: String,
}

impl Prepared {
    /// Name the API server on errors about reaching it (the engine does not know the URL).
    pub fn name_server(&self, err: ferry_engine::Error) -> anyhow::Error {
        let unreachable = err.is_about_the_cluster();
        let err = anyhow::Error::new(err);
        if unreachable {
            err.context(format!(
                "API server {}: is the cluster up, and are the kubeconfig and --context the ones you meant?",
                self.server
            ))
        } else {
            err
        }
    }
}

/// Render, read the git revision, connect and discover concurrently: none needs another's
/// result, and before the first write the API server is otherwise idle. A render error is
/// reported at once, without waiting for the cluster (it is the one the user can fix first).
/// A helm app is the exception: like `helm install`, its chart sees the cluster's API versions
/// and Kubernetes version (`.Capabilities`, from the same discovery), so it renders once they
/// are known; when the cluster cannot be reached it still renders (offline defaults) to report
/// a render error first, and then reports the cluster's.
pub async fn prepare(global: &GlobalArgs, app: &AppArgs, source: &SourceArgs) -> Result<Prepared> {
    let (app_args, option_source) = (app.clone(), source.clone());
    let options = tokio::task::spawn_blocking(move || apply_options(&app_args, &option_source));
    let discovery =
        std::sync::Arc::new(ferry_engine::cluster::discovery::DiscoveryCache::default());
    let cluster = cluster_options(global);
    let prefetch = discovery.clone();
    let mut connected = tokio::spawn(async move {
        let config = cluster::load_config(&cluster).await?;
        let server = config.cluster_url.to_string();
        let client = cluster::client_from_config(config)?;
        // A failed prefetch is not an error here: the engine discovers again and reports it.
        let reads = prefetch.prefetch(&client).await.unwrap_or(0);
        anyhow::Ok((client, reads, server))
    });
    let helm_source = source.clone();
    let helm = tokio::task::spawn_blocking(move || needs_capabilities(&helm_source))
        .await
        .context("render task failed")?;
    // For a helm app: the connection (awaited here instead of below) and the capabilities.
    let mut early: Option<Result<(kube::Client, u64, String)>> = None;
    let mut capabilities = None;
    if helm {
        let connection = (&mut connected)
            .await
            .context("connect task failed")
            .and_then(|r| r);
        if let Ok((client, _, _)) = &connection {
            capabilities = Some(
                cluster::capabilities::of(Some(&discovery), client)
                    .await
                    .context(
                        "reading the cluster's API versions and version for helm's .Capabilities",
                    )?,
            );
        }
        early = Some(connection);
    }
    let render_source = source.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        render_sources_collecting(&render_source, capabilities.as_ref())
    });
    let bail_early = |err: anyhow::Error| {
        connected.abort();
        err
    };
    let (manifests, redactor) = rendered
        .await
        .context("render task failed")
        .and_then(|r| r)
        .map_err(bail_early)?;
    let mut opts = options
        .await
        .context("option task failed")
        .and_then(|r| r)
        .map_err(bail_early)?;
    let (client, discovery_reads, server) = match early {
        Some(connection) => connection?,
        None => connected.await.context("connect task failed")??,
    };
    opts.discovery = Some(discovery);
    opts.redactor = redactor;
    Ok(Prepared {
        manifests,
        opts,
        client,
        discovery_reads,
        server,
    })
}

pub async fn run(global: &GlobalArgs, args: &ApplyArgs) -> Result<u8> {
    let mut prepared = prepare(global, &args.app, &args.source).await?;
    let manifests = std::mem::take(&mut prepared.manifests);
    let (client, discovery_reads) = (prepared.client.clone(), prepared.discovery_reads);
    let mut opts = prepared.opts.clone();
    opts.wait = if args.no_wait {
        false
    } else {
        args.wait || std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
    };
    opts.timeout = args.timeout;
    opts.dry_run = args.dry_run;
    if let Some(release) = &args.adopt_release {
        opts.legacy_app = Some(crate::commands::handover::adopt_release(&client, release).await?);
    }
    let progress = CliProgress::new(global.output.is_for_people());
    let report = pipeline::apply(&client, manifests, &opts, &progress).await;
    progress.finish();
    let mut report = report.map_err(|err| prepared.name_server(err))?;
    report.requests.reads += discovery_reads;
    match global.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            crate::output::print_data(global.output, &report)?;
        }
        OutputFormat::Name => print!("{}", crate::report::object_names(&report.objects)),
        OutputFormat::Markdown => print!("{}", crate::report::apply_markdown(&report)),
        OutputFormat::Human | OutputFormat::Wide => print!(
            "{}",
            crate::report::apply_human(&report, args.show_unchanged)
        ),
    }
    Ok(if report.timed_out {
        EXIT_TIMEOUT
    } else if !report.succeeded() {
        EXIT_CHANGES
    } else if report.count(ferry_engine::report::Action::Drifted) > 0 {
        EXIT_DRIFT
    } else {
        EXIT_OK
    })
}
