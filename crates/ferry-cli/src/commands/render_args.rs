//! Rendering flags shared by `apply`, `diff` and `render`: renderer and chart selection,
//! values, `--set`, variables, post-render, renderer binaries and limits. They override the
//! app's `ferry.yaml` (lists append, single values replace). Paths are relative to the
//! current directory and, being the operator's own choice, are not confined to the source root.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ferry_engine::decrypt::sops::AgeKeys;
use ferry_engine::render::config::{Overrides, RendererKind};
use ferry_engine::render::overrides;
use ferry_engine::render::substitute;

pub const PASSWORD_ENV: &str = "FERRY_CHART_PASSWORD";

#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Rendering")]
// Own group id: `render::RenderArgs` (the render subcommand) already uses the struct name.
#[group(id = "rendering")]
pub struct RenderArgs {
    /// Renderer to use instead of ferry.yaml / detection (kustomization.yaml → kustomize,
    /// Chart.yaml → helm, else plain).
    #[arg(long, value_enum, value_name = "KIND")]
    pub renderer: Option<RendererArg>,
    /// Helm chart: a local directory or .tgz, oci://REGISTRY/PATH/CHART, or a chart name with
    /// --repo.
    #[arg(long, value_name = "CHART")]
    pub chart: Option<String>,
    /// Helm HTTP repository URL serving index.yaml (with --chart NAME).
    #[arg(long, value_name = "URL")]
    pub repo: Option<String>,
    /// Chart version or semver range, e.g. 1.2.3, ^1.2, ">=1.0.0 <2.0.0".
    #[arg(long, value_name = "RANGE")]
    pub chart_version: Option<String>,
    /// Helm release name (default: ferry.yaml's, else the chart name).
    #[arg(long, value_name = "NAME")]
    pub release_name: Option<String>,
    /// Helm values file, after ferry.yaml's (repeatable; SOPS-encrypted files are decrypted in
    /// memory).
    #[arg(long = "values", value_name = "FILE")]
    pub values: Vec<PathBuf>,
    /// Helm --set KEY=VALUE (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Helm --set-string KEY=VALUE (repeatable).
    #[arg(long = "set-string", value_name = "KEY=VALUE")]
    pub set_string: Vec<String>,
    /// Directory with a kustomization applied on top of the chart output.
    #[arg(long, value_name = "DIR")]
    pub post_render: Option<PathBuf>,
    /// Talk plain HTTP to the OCI registry (local registries).
    #[arg(long)]
    pub plain_http: bool,
    /// Registry / repository user; the password comes from $FERRY_CHART_PASSWORD (never argv).
    #[arg(long, env = "FERRY_CHART_USERNAME", value_name = "USER")]
    pub chart_username: Option<String>,
    /// Variable for ${VAR} substitution, KEY=VALUE (repeatable; wins over files and ferry.yaml).
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// Vars file (dotenv KEY=VALUE lines, or a YAML mapping) for substitution (repeatable).
    #[arg(long = "vars-file", value_name = "FILE")]
    pub vars_files: Vec<PathBuf>,
    /// Fail on ${VAR} references that are undefined and have no default.
    #[arg(long)]
    pub strict_substitute: bool,
    /// Allow remote bases in kustomizations (off by default: a build reads only the source).
    #[arg(long)]
    pub allow_remote_bases: bool,
    /// Kill a renderer (helm, kustomize) running longer than this many seconds [default: 60].
    #[arg(long, value_name = "SECONDS")]
    pub render_timeout: Option<u64>,
    /// age identity file for SOPS (default: $SOPS_AGE_KEY, $SOPS_AGE_KEY_FILE, then
    /// ~/.config/sops/age/keys.txt). Repeatable.
    #[arg(long = "age-key-file", value_name = "FILE")]
    pub age_key_files: Vec<PathBuf>,
    /// helm binary (default: $FERRY_HELM, then PATH).
    #[arg(long, value_name = "PATH")]
    pub helm: Option<PathBuf>,
    /// kustomize binary (default: $FERRY_KUSTOMIZE, then PATH).
    #[arg(long, value_name = "PATH")]
    pub kustomize: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RendererArg {
    Plain,
    Kustomize,
    Helm,
}

fn parse_var(text: &str) -> Result<(String, String), substitute::SubstituteError> {
    substitute::parse_assignment(text)
}

impl RenderArgs {
    /// The flags as the engine's operator settings, paths still as typed: the engine's
    /// [`overrides::layer_onto`] resolves them against the working directory (see
    /// [`RenderArgs::driver_settings`]).
    pub fn overrides(&self) -> Overrides {
        Overrides {
            renderer: self.renderer.map(|r| match r {
                RendererArg::Plain => RendererKind::Plain,
                RendererArg::Kustomize => RendererKind::Kustomize,
                RendererArg::Helm => RendererKind::Helm,
            }),
            chart: self.chart.clone(),
            repo: self.repo.clone(),
            chart_version: self.chart_version.clone(),
            release_name: self.release_name.clone(),
            values_files: self.values.clone(),
            set: self.set.clone(),
            set_string: self.set_string.clone(),
            vars_files: self.vars_files.clone(),
            strict_substitute: self.strict_substitute.then_some(true),
            post_render: self.post_render.clone(),
            plain_http: self.plain_http.then_some(true),
            allow_remote_bases: self.allow_remote_bases.then_some(true),
            timeout_seconds: self.render_timeout,
            helm_binary: self.helm.clone(),
            kustomize_binary: self.kustomize.clone(),
            chart_username: self.chart_username.clone(),
            chart_password: std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()),
        }
    }

    /// What `ferry apply/diff/render` layer over every app's ferry.yaml: the flags, relative to
    /// the current directory (being the operator's own choice, not confined to the source
    /// root), under the default render policy.
    pub fn driver_settings(&self) -> Result<overrides::DriverSettings> {
        let cwd = std::env::current_dir().context("cannot determine the current directory")?;
        Ok(overrides::DriverSettings {
            operator: self.overrides(),
            operator_cwd: Some(cwd),
            ..overrides::DriverSettings::default()
        })
    }

    /// `--var`s as a map (later flags win).
    pub fn vars(&self) -> BTreeMap<String, String> {
        self.vars.iter().cloned().collect()
    }

    /// Keys from `--age-key-file`, or `None` to let the engine use the SOPS defaults.
    pub fn age_keys(&self) -> Result<Option<AgeKeys>> {
        if self.age_key_files.is_empty() {
            return Ok(None);
        }
        let mut keys = AgeKeys::empty();
        for file in &self.age_key_files {
            keys.extend(AgeKeys::from_file(file)?);
        }
        Ok(Some(keys))
    }
}
