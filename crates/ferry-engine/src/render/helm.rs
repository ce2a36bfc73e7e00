//! Helm renderer: `helm template` (the real binary, like Argo CD) for a chart from the source,
//! a Helm HTTP repository or an OCI registry, with values files (SOPS-encrypted ones decrypted
//! in memory and piped in as `-f -`), inline values, `--set`, release name and namespace,
//! `crds/` included, test hooks dropped, and an optional post-render kustomization.
//! Deploying is ferry's own (server-side apply, inventory): no Helm release secrets.
//!
//! helm runs with private, throw-away `HELM_*` homes, so a user's repositories, registry
//! logins and plugins never leak into (or change) a render.

pub mod cache;
pub mod chart;
pub mod crds;
pub mod deps;
pub mod hooks;
pub mod index;
pub mod post_render;
pub mod version;

use std::path::{Path, PathBuf};

use serde_json::Value;
use tempfile::TempDir;

use super::config::{ChartSource, Context, HelmConfig};
use super::names;
use super::process::{self, Flag, Run, RunEvent, Tool};
use super::safety::{self, Limits};
use super::values;
use crate::decrypt::sops;
use crate::{Error, Manifest, Result};
pub use chart::ChartRef;

/// A helm binary plus its private homes (removed on drop).
pub struct HelmEnv {
    binary: PathBuf,
    home: TempDir,
}

impl HelmEnv {
    pub fn new(binary: PathBuf) -> Result<Self> {
        // tempfile creates directories 0700: registry logins and pulled charts stay private.
        let home = tempfile::Builder::new()
            .prefix("ferry-helm-")
            .tempdir()
            .map_err(|err| Error::Render {
                path: PathBuf::from("helm"),
                message: format!("cannot create a temporary helm home: {err}"),
            })?;
        Ok(Self { binary, home })
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// A helm invocation with the private homes set (also `HOME`: helm and the git it may run
    /// read nothing of the user's).
    pub fn run(&self, limits: &Limits) -> Run<'_> {
        let home = self.home.path();
        Run::new(&self.binary, limits.timeout(), limits.max_total_bytes)
            .home(home)
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env("HELM_PLUGINS", home.join("plugins"))
            .env("HELM_REGISTRY_CONFIG", home.join("registry.json"))
            .env("HELM_REPOSITORY_CONFIG", home.join("repositories.yaml"))
            .env("HELM_REPOSITORY_CACHE", home.join("repository"))
    }
}

/// One values source, in helm's order (later wins).
enum ValuesEntry {
    /// A plain file helm can read itself.
    File { path: PathBuf, bytes: Vec<u8> },
    /// Decrypted or inline values, held only in memory.
    Memory(Value),
}

/// Render the app's chart.
pub fn render(ctx: &mut Context<'_>) -> Result<Vec<Manifest>> {
    let binary =
        process::find_tool(Tool::Helm, ctx.overrides.helm_binary.as_deref()).map_err(|err| {
            Error::Render {
                path: ctx.app.declared_in().to_path_buf(),
                message: err.to_string(),
            }
        })?;
    let env = HelmEnv::new(binary)?;
    let cfg = ctx.app.config.helm.clone().unwrap_or_default();
    let source = cfg.chart.clone().unwrap_or_default();
    let chart_ref = chart_ref(ctx, &cfg)?;
    let opts = chart::PullOptions {
        version: ctx
            .overrides
            .chart_version
            .clone()
            .or_else(|| source.version.clone()),
        plain_http: ctx.overrides.plain_http.unwrap_or(source.plain_http),
        insecure_skip_tls_verify: source.insecure_skip_tls_verify,
        username: ctx.overrides.chart_username.clone(),
        password: ctx.overrides.chart_password.clone(),
        cache: ctx.chart_cache.clone(),
        dependency_credentials: ctx.chart_credentials.clone(),
    };
    let mut opts = opts;
    if opts.username.is_none()
        && opts.password.is_none()
        && let Some(creds) = credentials_for(ctx, &chart_ref)?
    {
        opts.username = Some(creds.username.clone());
        opts.password = Some(creds.password.clone());
    }
    if let Some(password) = &opts.password {
        ctx.redactor.add(password);
    }
    if let Some(creds) = &ctx.chart_credentials {
        ctx.redactor.add(&creds.password);
    }
    // Credentials written into a URL (`https://user:pass@host`) must not show in errors.
    if let ChartRef::Repo { url, .. } | ChartRef::Oci(url) = &chart_ref
        && let Some((_, rest)) = url.split_once("://")
        && let Some((userinfo, _)) = rest.split_once('@')
        && !userinfo.contains('/')
    {
        ctx.redactor.add(userinfo);
        if let Some((_, password)) = userinfo.split_once(':') {
            ctx.redactor.add(password);
        }
    }
    if let Some(range) = &opts.version {
        version::parse_constraint(range).map_err(|err| Error::Source {
            path: ctx.app.declared_in().to_path_buf(),
            message: err.to_string(),
        })?;
    }
    let limits = ctx.limits.clone();
    let chart_path = chart::fetch(
        &chart_ref,
        &opts,
        &env,
        &limits,
        &mut ctx.guard,
        &ctx.redactor,
    )?;

    let include_crds = cfg.include_crds.unwrap_or(true);
    // CRD files of a local chart are parsed while helm runs (see `crds`).
    let mut crd_files = match &chart_ref {
        ChartRef::Local(_) if include_crds && chart_path.is_dir() => {
            crds::files(&chart_path, limits.max_total_bytes)
        }
        _ => Vec::new(),
    };

    let entries = values_entries(ctx, &cfg)?;
    let declared = ctx.app.declared_in().to_path_buf();
    let invalid = |err: names::NameError| Error::Source {
        path: declared.clone(),
        message: err.to_string(),
    };
    let release = match ctx
        .overrides
        .release_name
        .clone()
        .or_else(|| cfg.release_name.clone())
    {
        Some(name) => {
            names::release_name(&name).map_err(invalid)?;
            name
        }
        // The chart's own name (Chart.yaml is as untrusted as ferry.yaml).
        None => match chart::chart_name(&chart_path) {
            Some(name) => {
                names::release_name(&name).map_err(|err| Error::Source {
                    path: chart_path.join("Chart.yaml"),
                    message: format!("the chart's name is used as the release name: {err}"),
                })?;
                name
            }
            None => "release".to_string(),
        },
    };
    let namespace = ctx
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    names::namespace(&namespace).map_err(invalid)?;

    let mut run = env
        .run(&limits)
        .command(&["template"])
        .option(Flag::Namespace, &namespace)
        .flag(Flag::SkipTests);
    if include_crds {
        run = run.flag(Flag::IncludeCrds);
    }
    if let Some(kube_version) = &cfg.kube_version {
        names::kube_version(kube_version).map_err(invalid)?;
        run = run.option(Flag::KubeVersion, kube_version);
    } else if let Some(kube_version) = ctx
        .capabilities
        .as_ref()
        .and_then(|c| c.kube_version.as_deref())
        .filter(|v| names::kube_version(v).is_ok())
    {
        run = run.option(Flag::KubeVersion, kube_version);
    }
    for api in &cfg.api_versions {
        names::api_version(api).map_err(invalid)?;
        run = run.option(Flag::ApiVersions, api);
    }
    if let Some(caps) = &ctx.capabilities {
        // What the cluster serves, as `helm install` would see it; a name helm could not take
        // (none from a real API server) is left out rather than failing the render.
        for api in caps
            .api_versions
            .iter()
            .filter(|api| names::api_version(api).is_ok())
        {
            run = run.option(Flag::ApiVersions, api);
        }
    }
    // Plain files before the first in-memory entry are passed by path (helm parses them, as
    // always); from there on everything is merged in memory and piped, keeping helm's order.
    let first_memory = entries
        .iter()
        .position(|e| matches!(e, ValuesEntry::Memory(_)))
        .unwrap_or(entries.len());
    let mut merged: Option<Value> = None;
    for (index, entry) in entries.into_iter().enumerate() {
        match entry {
            ValuesEntry::File { path, .. } if index < first_memory => {
                run = run.option(Flag::Values, path);
            }
            ValuesEntry::File { path, bytes } => {
                let value = values::parse(&path, &bytes)?;
                values::merge(merged.get_or_insert_with(values::empty), value);
            }
            ValuesEntry::Memory(value) => {
                values::merge(merged.get_or_insert_with(values::empty), value)
            }
        }
    }
    if let Some(merged) = merged {
        let bytes = serde_json::to_vec(&merged).map_err(|err| Error::Render {
            path: ctx.app.declared_in().to_path_buf(),
            message: format!("cannot encode values: {err}"),
        })?;
        run = run.option(Flag::Values, "-").stdin(bytes);
    }
    for set in cfg.set.iter().chain(&ctx.overrides.set) {
        names::set_expression(set).map_err(invalid)?;
        run = run.option(Flag::Set, set);
    }
    for set in cfg.set_string.iter().chain(&ctx.overrides.set_string) {
        names::set_expression(set).map_err(invalid)?;
        run = run.option(Flag::SetString, set);
    }
    // Positionals last, after `--`: helm reads them as NAME and CHART whatever they hold.
    run = run.positional(&release).positional(&chart_path);

    let shown = match &chart_ref {
        ChartRef::Local(path) => ctx.relative(path).display().to_string(),
        other => other.display(),
    };
    // The CRD thread starts once helm has (started before, it slowed the spawn by ~1.5 ms).
    // helm's output is parsed as it arrives (see `crate::yaml::StreamParse`), after taking in the
    // CRD thread's work so that those documents are not parsed twice; if that thread is still
    // busy, its documents are left to it.
    let mut crd_thread = None;
    let mut streamed = crate::yaml::StreamParse::default();
    let mut watch_helm = |event: RunEvent<'_>| match event {
        RunEvent::Started if !crd_files.is_empty() => {
            let files = std::mem::take(&mut crd_files);
            crd_thread = Some(std::thread::spawn(move || crds::parse_ahead(&files)));
        }
        RunEvent::Started => {}
        RunEvent::Output(so_far) => {
            if let Some(thread) = crd_thread.take_if(|thread| thread.is_finished())
                && let Ok(parsed) = thread.join()
            {
                streamed.absorb(parsed);
            }
            if crd_thread.is_none() {
                streamed.observe(so_far);
            }
        }
    };
    let stdout = chart::run_helm(
        run.watch(&mut watch_helm),
        &format!("helm template {shown}"),
        &ctx.redactor,
    )?;
    if let Some(parsed) = crd_thread.and_then(|thread| thread.join().ok()) {
        streamed.absorb(parsed);
    }
    let mut ahead = streamed.into_parsed();
    tracing::debug!(bytes = ahead.len_bytes(), "documents parsed while helm ran");
    let mut manifests = parse_output(&stdout, &shown, &ctx.redactor, Some(&mut ahead))?;
    tracing::debug!(
        unused = ahead.len_unused(),
        "documents parsed ahead but not found verbatim in helm's output"
    );
    hooks::drop_unsupported(&mut manifests);

    let post_render = match (&ctx.overrides.post_render, &cfg.post_render) {
        (Some(dir), _) => Some(dir.clone()),
        (None, Some(post)) => Some(safety::resolve_inside(
            &ctx.root,
            &ctx.app.base_dir,
            &post.kustomization,
            "post-render kustomization",
            ctx.app.declared_in(),
        )?),
        (None, None) => None,
    };
    if let Some(dir) = post_render {
        manifests = post_render::apply(ctx, manifests, &dir)?;
    }
    Ok(manifests)
}

/// The credentials a driver read for this render (`RenderRequest::chart_credentials`), when the
/// chart is on their host. A remote chart elsewhere is an error: credentials read for one host
/// never go to another.
fn credentials_for(
    ctx: &Context<'_>,
    chart: &ChartRef,
) -> Result<Option<super::request::ChartCredentials>> {
    let Some(creds) = &ctx.chart_credentials else {
        return Ok(None);
    };
    let host = match chart {
        ChartRef::Repo { url, .. } | ChartRef::Oci(url) => names::url_host(url),
        // A local chart: the credentials may serve its dependencies (see `dependencies`).
        ChartRef::Local(_) => return Ok(None),
    };
    if host.as_deref() != Some(creds.host.to_ascii_lowercase().as_str()) {
        return Err(Error::Refused(format!(
            "{}: the credentials of {} are for {}, but the chart is {}; they are not sent to another host",
            ctx.app.declared_in().display(),
            creds.origin,
            creds.host,
            chart.display()
        )));
    }
    Ok(Some(creds.clone()))
}

/// Where the chart comes from: flags, then ferry.yaml `helm.chart`, then the app directory.
fn chart_ref(ctx: &Context<'_>, cfg: &HelmConfig) -> Result<ChartRef> {
    let declared = ctx.app.declared_in().to_path_buf();
    if let Some(chart) = &ctx.overrides.chart {
        if let Some(url) = &ctx.overrides.repo {
            return Ok(ChartRef::Repo {
                url: url.clone(),
                name: chart.clone(),
            });
        }
        if chart.starts_with("oci://") {
            return Ok(ChartRef::Oci(chart.clone()));
        }
        // A local chart named on the command line: the operator's choice, used as given.
        let path = std::fs::canonicalize(chart).map_err(|err| Error::Source {
            path: PathBuf::from(chart),
            message: format!("chart not found: {err}"),
        })?;
        return Ok(ChartRef::Local(path));
    }
    if ctx.overrides.repo.is_some() {
        return Err(Error::Source {
            path: declared,
            message: "--repo needs --chart NAME (the chart's name in the repository)".into(),
        });
    }
    match &cfg.chart {
        Some(ChartSource {
            path: Some(path), ..
        }) => Ok(ChartRef::Local(safety::resolve_inside(
            &ctx.root,
            &ctx.app.base_dir,
            path,
            "chart",
            &declared,
        )?)),
        Some(ChartSource {
            repo: Some(url),
            name: Some(name),
            ..
        }) => Ok(ChartRef::Repo {
            url: url.clone(),
            name: name.clone(),
        }),
        Some(ChartSource { oci: Some(oci), .. }) => Ok(ChartRef::Oci(oci.clone())),
        Some(_) => Err(Error::Source {
            path: declared,
            message: "helm.chart: set exactly one of `path`, `repo` (with `name`) or `oci`".into(),
        }),
        None => {
            let path = &ctx.app.render_path;
            let is_chart =
                path.join("Chart.yaml").is_file() || path.extension().is_some_and(|e| e == "tgz");
            if !is_chart {
                return Err(Error::Source {
                    path: declared,
                    message: "renderer is helm but there is no chart: add Chart.yaml here, set `helm.chart` in ferry.yaml, or pass --chart".into(),
                });
            }
            Ok(ChartRef::Local(path.clone()))
        }
    }
}

/// Values files (ferry.yaml's, confined to the root, then the command line's) and inline
/// values, in order. SOPS-encrypted files are decrypted here, in memory.
fn values_entries(ctx: &mut Context<'_>, cfg: &HelmConfig) -> Result<Vec<ValuesEntry>> {
    let declared = ctx.app.declared_in().to_path_buf();
    let mut files = Vec::new();
    for file in &cfg.values_files {
        let path =
            safety::resolve_inside(&ctx.root, &ctx.app.base_dir, file, "values file", &declared)?;
        ctx.guard.check_file(&path)?;
        files.push(path);
    }
    for file in &ctx.overrides.values_files {
        let meta = std::fs::metadata(file).map_err(|err| Error::Source {
            path: file.clone(),
            message: format!("cannot read values file: {err}"),
        })?;
        if meta.len() > ctx.limits.max_file_bytes {
            return Err(Error::Refused(format!(
                "{}: values file is over the per-file limit of {} bytes",
                file.display(),
                ctx.limits.max_file_bytes
            )));
        }
        files.push(file.clone());
    }
    let mut entries = Vec::new();
    for path in files {
        let bytes = std::fs::read(&path).map_err(|err| Error::Source {
            path: path.clone(),
            message: format!("cannot read values file: {err}"),
        })?;
        if sops::is_encrypted(&bytes) {
            let shown = ctx.relative(&path);
            let keys = ctx.keys()?.clone();
            let plain = sops::decrypt(&bytes, sops::Format::from_path(&path), &shown, &keys)?;
            let value = values::parse(&shown, &plain)?;
            ctx.redactor.add_leaves(&value);
            entries.push(ValuesEntry::Memory(value));
        } else {
            entries.push(ValuesEntry::File { path, bytes });
        }
    }
    if let Some(values) = &cfg.values {
        entries.push(ValuesEntry::Memory(values.clone()));
    }
    Ok(entries)
}

/// Parse `helm template` output; each object's origin is the template named by helm's
/// `# Source:` comment.
fn parse_output(
    stdout: &[u8],
    shown: &str,
    redactor: &safety::Redactor,
    ahead: Option<&mut crate::yaml::ParsedAhead>,
) -> Result<Vec<Manifest>> {
    let origin = PathBuf::from(format!("helm template {shown}"));
    let mut manifests =
        crate::yaml::parse_bytes_with(stdout, &origin, ahead).map_err(|err| Error::Render {
            path: origin.clone(),
            message: redactor.redact(&format!("helm produced unreadable output: {err}")),
        })?;
    // The parse above has already refused output that is not UTF-8.
    let text = std::str::from_utf8(stdout).unwrap_or_default();
    let sources: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter_map(|(i, line)| line.strip_prefix("# Source: ").map(|s| (i + 1, s.trim())))
        .collect();
    for manifest in &mut manifests {
        let Some(start) = manifest.origin.line else {
            continue;
        };
        if let Some((_, source)) = sources
            .iter()
            .find(|(line, _)| *line >= start && *line <= start + 2)
        {
            manifest.origin.file = PathBuf::from(source);
            manifest.origin.line = None;
        }
    }
    Ok(manifests)
}
