//! `ferry.yaml`: the per-app declaration of how a source directory is rendered (renderer,
//! chart, values, substitution, post-render, limits), read the same way by `ferry apply` and by
//! the agent. Unknown fields are errors naming the file; [`schema_json`] gives editors a schema.
//! Without a ferry.yaml the renderer is detected: `kustomization.yaml` → kustomize,
//! `Chart.yaml` → helm, anything else → plain YAML.
//!
//! Paths inside ferry.yaml are relative to its directory and must stay inside the source root
//! (the repository is untrusted input). Paths given on the command line ([`Overrides`]) are the
//! operator's own choice and are used as given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::names;
use super::safety::Limits;
use crate::{Error, Result};

/// File names looked up in an app directory, in order.
pub const CONFIG_FILES: [&str; 2] = ["ferry.yaml", "ferry.yml"];
/// Kustomize's accepted kustomization file names.
pub const KUSTOMIZATION_FILES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Which renderer turns the directory into manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RendererKind {
    Plain,
    Kustomize,
    Helm,
}

impl RendererKind {
    pub fn name(self) -> &'static str {
        match self {
            RendererKind::Plain => "plain",
            RendererKind::Kustomize => "kustomize",
            RendererKind::Helm => "helm",
        }
    }
}

/// The whole `ferry.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppConfig {
    /// Optional schema marker: `ferry.dev/v1alpha1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `plain`, `kustomize` or `helm`. Default: detected from the directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renderer: Option<RendererKind>,
    /// Sub-directory (relative to this file) holding the manifests / kustomization / chart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Default namespace for namespaced objects without one (also helm's `--namespace`): a
    /// DNS-1123 label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kustomize: Option<KustomizeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm: Option<HelmConfig>,
    /// Variables for `${VAR}` substitution (Flux `postBuild.substitute`). Setting this,
    /// `substituteFrom` or `strictSubstitute` turns substitution on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substitute: Option<BTreeMap<String, String>>,
    /// Vars files (dotenv `KEY=VALUE`, or a YAML mapping), relative to this file. Later files
    /// and `substitute` win.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub substitute_from: Vec<String>,
    /// An undefined variable without a default is an error (default: it becomes empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict_substitute: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decryption: Option<DecryptionConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Custom CEL health checks for `--wait` (Flux's `healthCheckExprs` shape; see
    /// `health::cel` and docs/push.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_check_exprs: Vec<ferry_api::health::HealthCheckExpr>,
    /// Drift policy of the push app (`ferry apply`), the shape of a Release's `spec.drift`:
    /// `mode` (`correct`, the default, or `detect`) and `ignore` rules (JSON pointers per
    /// group/kind/name/namespace). See docs/push.md "Drift". A Release's own policy is its
    /// `spec.drift`; the agent does not read this block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftConfig>,
}

/// ferry.yaml `drift:` (the fields of `ferry_api::drift::DriftSpec`, with unknown fields
/// refused: a misspelt `target` field would otherwise widen a rule to every object).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DriftConfig {
    /// `correct` (default): `ferry apply` reverts hand edits. `detect`: an object edited in the
    /// cluster while unchanged in the source is reported (action `drifted`, exit code 4) and
    /// left as it is; objects whose source changed are applied as usual.
    #[serde(default)]
    pub mode: ferry_api::drift::DriftMode,
    /// Fields ferry leaves to other managers on objects that exist: not sent with the apply,
    /// not shown by `ferry diff`, never reported as drift (Argo CD `ignoreDifferences`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<DriftIgnoreConfig>,
}

/// One `drift.ignore` rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DriftIgnoreConfig {
    /// Which objects; every field left out matches all (no target: every object).
    #[serde(default)]
    pub target: DriftTargetConfig,
    /// JSON pointers (RFC 6901), e.g. `/spec/replicas`, `/metadata/annotations/a~1b`.
    pub paths: Vec<String>,
}

// The ferry.yaml twin of `ferry_api::drift::DriftTarget`: the same fields, but a misspelt key is
// refused here (`deny_unknown_fields`), which the CRD type cannot do without breaking Releases
// written by a newer ferry.
/// Selects objects by API group (`apps`; `""` for the core group), kind, name and namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DriftTargetConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl DriftConfig {
    /// The same policy as a Release's `spec.drift`, for the engine's one reading of it
    /// (`pipeline::drift::DriftPolicy::from_spec`).
    pub fn to_spec(&self) -> ferry_api::drift::DriftSpec {
        use ferry_api::drift::{DriftIgnore, DriftSpec, DriftTarget};
        DriftSpec {
            mode: self.mode,
            ignore: self
                .ignore
                .iter()
                .map(|i| DriftIgnore {
                    target: DriftTarget {
                        group: i.target.group.clone(),
                        kind: i.target.kind.clone(),
                        name: i.target.name.clone(),
                        namespace: i.target.namespace.clone(),
                    },
                    paths: i.paths.clone(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KustomizeConfig {
    /// Allow remote (git/HTTP) loading in kustomizations: remote bases and http(s) URLs in
    /// file fields (generator files, patches, ...). Off by default: a build should only read
    /// what is in the source. An agent started with `--no-remote-bases` refuses it anyway.
    #[serde(default)]
    pub allow_remote_bases: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HelmConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartSource>,
    /// Release name (default: the chart's name): a DNS-1123 subdomain of at most 53
    /// characters, as helm requires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_name: Option<String>,
    /// Values files relative to this file, in order (later wins). SOPS-encrypted files are
    /// decrypted in memory and piped to helm.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_files: Vec<String>,
    /// Inline values, applied after the values files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<serde_json::Value>,
    /// `--set` expressions (`a.b=c`), applied last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<String>,
    /// `--set-string` expressions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set_string: Vec<String>,
    /// Render the chart's `crds/` (applied before everything else). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_crds: Option<bool>,
    /// `--kube-version` for `.Capabilities.KubeVersion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_version: Option<String>,
    /// `--api-versions` for `.Capabilities.APIVersions`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_versions: Vec<String>,
    /// A kustomization applied on top of the chart output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_render: Option<PostRender>,
}

/// Where the chart comes from: exactly one of `path`, `repo` (+ `name`) or `oci`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChartSource {
    /// Chart directory or `.tgz`, relative to this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Helm HTTP repository URL (serving `index.yaml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Chart name in `repo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// OCI reference, `oci://registry/path/chart`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<String>,
    /// Version or semver range (`1.2.3`, `^1.2`, `>=1.0.0 <2.0.0`, `~1.4 || ^2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Talk plain HTTP to the OCI registry (local/test registries).
    #[serde(default)]
    pub plain_http: bool,
    /// Skip TLS verification for the repository (not recommended).
    #[serde(default)]
    pub insecure_skip_tls_verify: bool,
    /// Credentials for a private repository or registry: a Secret in the Release's namespace
    /// (`username`/`password`, or for OCI a `kubernetes.io/dockerconfigjson`), read by the
    /// agent as the Release's service account and sent only to this chart source's host. Only
    /// in a Release's `spec.render` (Flux: `HelmRepository.spec.secretRef`); a repository's
    /// ferry.yaml may not name a Secret. Push mode: `--chart-username` / `$FERRY_CHART_PASSWORD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

/// A Secret in the namespace of the object that names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostRender {
    /// Directory (relative to this file) with a kustomization whose patches/transformers are
    /// applied to the chart output; ferry adds the chart output to its `resources`.
    pub kustomization: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecryptionConfig {
    /// Only `sops` (age keys). SOPS-encrypted objects and values files are always decrypted
    /// when found; declaring this makes a missing key an error up front.
    pub provider: DecryptionProvider,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DecryptionProvider {
    #[default]
    Sops,
}

/// Settings from the command line (or the agent's own configuration): override ferry.yaml.
/// Lists are appended after the file's, scalars replace. Paths are used as given.
#[derive(Clone, Default)]
pub struct Overrides {
    pub renderer: Option<RendererKind>,
    /// Chart: a local path, `oci://…`, or a chart name together with `repo`.
    pub chart: Option<String>,
    pub repo: Option<String>,
    pub chart_version: Option<String>,
    pub release_name: Option<String>,
    pub values_files: Vec<PathBuf>,
    pub set: Vec<String>,
    pub set_string: Vec<String>,
    pub vars_files: Vec<PathBuf>,
    pub strict_substitute: Option<bool>,
    pub post_render: Option<PathBuf>,
    pub plain_http: Option<bool>,
    pub allow_remote_bases: Option<bool>,
    pub timeout_seconds: Option<u64>,
    /// Explicit renderer binaries (`--helm`, `--kustomize`).
    pub helm_binary: Option<PathBuf>,
    pub kustomize_binary: Option<PathBuf>,
    /// Chart repository / registry credentials. Passed to helm via stdin, never argv.
    pub chart_username: Option<String>,
    pub chart_password: Option<String>,
}

impl std::fmt::Debug for Overrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("Overrides")
            .field("renderer", &self.renderer)
            .field("chart", &self.chart)
            .field("repo", &self.repo)
            .field("chart_version", &self.chart_version)
            .field("release_name", &self.release_name)
            .field("values_files", &self.values_files)
            .field("set", &self.set)
            .field("set_string", &self.set_string)
            .field("vars_files", &self.vars_files)
            .field("post_render", &self.post_render)
            .field("chart_username", &self.chart_username)
            .field(
                "chart_password",
                &self.chart_password.as_ref().map(|_| "[REDACTED]"),
            )
            .finish_non_exhaustive()
    }
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self.renderer.is_none()
            && self.chart.is_none()
            && self.repo.is_none()
            && self.chart_version.is_none()
            && self.release_name.is_none()
            && self.values_files.is_empty()
            && self.set.is_empty()
            && self.set_string.is_empty()
            && self.vars_files.is_empty()
            && self.strict_substitute.is_none()
            && self.post_render.is_none()
    }
}

impl AppConfig {
    /// Parse ferry.yaml text; `path` names the file in errors.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(bytes).map_err(|_| Error::Source {
            path: path.to_path_buf(),
            message: "ferry.yaml is not UTF-8 text".to_string(),
        })?;
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let config: Self = serde_saphyr::from_str_with_options(text, crate::yaml::options())
            .map_err(|err| Error::Source {
                path: path.to_path_buf(),
                message: format!(
                    "invalid ferry.yaml: {}; see docs/render.md for the schema (`ferry schema` / ferry.schema.json for editors)",
                    err.without_snippet()
                ),
            })?;
        config.validate(path)?;
        if config
            .helm
            .as_ref()
            .and_then(|h| h.chart.as_ref())
            .is_some_and(|c| c.secret_ref.is_some())
        {
            // A repository must not choose which of the tenant's Secrets is sent where.
            return Err(Error::Source {
                path: path.to_path_buf(),
                message: "helm.chart.secretRef is only allowed in a Release's spec.render (a repository may not name Secrets); with `ferry apply` use --chart-username and $FERRY_CHART_PASSWORD".to_string(),
            });
        }
        Ok(config)
    }

    /// Read `ferry.yaml`/`ferry.yml` from `dir`; `Ok(None)` when there is none.
    pub fn load(dir: &Path) -> Result<Option<(PathBuf, Self)>> {
        for name in CONFIG_FILES {
            let path = dir.join(name);
            if path.is_file() {
                let bytes = std::fs::read(&path).map_err(|err| Error::Source {
                    path: path.clone(),
                    message: format!("cannot read: {err}"),
                })?;
                return Ok(Some((path.clone(), Self::parse(&path, &bytes)?)));
            }
        }
        Ok(None)
    }

    /// The `namespace` declared by the ferry.yaml in `dir`, if `dir` is an app directory with
    /// one. Push mode uses it as the apply's namespace (inventory location) when `-n` is not
    /// given, matching the namespace the render stage stamps on the objects.
    pub fn declared_namespace(dir: &Path) -> Result<Option<String>> {
        if !dir.is_dir() {
            return Ok(None);
        }
        Ok(Self::load(dir)?
            .and_then(|(_, config)| config.namespace)
            .filter(|ns| !ns.is_empty()))
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let fail = |message: String| {
            Err(Error::Source {
                path: path.to_path_buf(),
                message,
            })
        };
        if let Some(version) = &self.api_version
            && version != "ferry.dev/v1alpha1"
        {
            return fail(format!(
                "apiVersion {version:?} is not supported; use ferry.dev/v1alpha1"
            ));
        }
        if let Some(chart) = self.helm.as_ref().and_then(|h| h.chart.as_ref()) {
            chart
                .validate()
                .or_else(|message| fail(format!("helm.chart: {message}")))?;
        }
        if self.helm.is_some()
            && matches!(
                self.renderer,
                Some(RendererKind::Plain | RendererKind::Kustomize)
            )
        {
            return fail(format!(
                "`helm:` is set but renderer is {}; remove one of them",
                self.renderer.map(RendererKind::name).unwrap_or_default()
            ));
        }
        if let Some(vars) = &self.substitute {
            for key in vars.keys() {
                if !super::substitute::is_var_name(key) {
                    return fail(format!("substitute: {key:?} is not a valid variable name"));
                }
            }
        }
        if let Some(values) = self.helm.as_ref().and_then(|h| h.values.as_ref())
            && !values.is_object()
        {
            return fail("helm.values must be a mapping".to_string());
        }
        if let Some(drift) = &self.drift
            && let Err(message) =
                crate::pipeline::drift::DriftPolicy::from_spec(&drift.to_spec(), "drift")
        {
            return fail(message);
        }
        // Everything that reaches a renderer's argv (see `names`).
        if let Some(namespace) = &self.namespace {
            names::namespace(namespace).or_else(|m| fail(format!("namespace: {m}")))?;
        }
        if let Some(helm) = &self.helm {
            if let Some(name) = &helm.release_name {
                names::release_name(name).or_else(|m| fail(format!("helm.releaseName: {m}")))?;
            }
            if let Some(version) = &helm.kube_version {
                names::kube_version(version).or_else(|m| fail(format!("helm.kubeVersion: {m}")))?;
            }
            for api in &helm.api_versions {
                names::api_version(api).or_else(|m| fail(format!("helm.apiVersions: {m}")))?;
            }
            for (field, list) in [("set", &helm.set), ("setString", &helm.set_string)] {
                for expr in list {
                    names::set_expression(expr).or_else(|m| fail(format!("helm.{field}: {m}")))?;
                }
            }
        }
        Ok(())
    }

    /// Validate a config that did not come from a file (a Release's `spec.render`); `source`
    /// names it in errors. Same rules as ferry.yaml.
    pub fn validate_as(&self, source: &Path) -> Result<()> {
        self.validate(source)
    }

    /// Layer `over` (a Release's `spec.render`) on top of this ferry.yaml, as one more
    /// ferry.yaml-level (untrusted) layer: scalars replace, lists append, `values` and
    /// `substitute` merge (`over` wins), a `chart` replaces the whole chart source. The result
    /// is checked like any ferry.yaml when it is rendered.
    pub fn layer(&mut self, over: AppConfig) {
        let AppConfig {
            api_version: _,
            renderer,
            path,
            namespace,
            kustomize,
            helm,
            substitute,
            substitute_from,
            strict_substitute,
            decryption,
            limits,
            health_check_exprs,
            drift,
        } = over;
        self.health_check_exprs.extend(health_check_exprs);
        replace(&mut self.renderer, renderer);
        replace(&mut self.path, path);
        replace(&mut self.namespace, namespace);
        replace(&mut self.kustomize, kustomize);
        replace(&mut self.decryption, decryption);
        replace(&mut self.limits, limits);
        replace(&mut self.drift, drift);
        replace(&mut self.strict_substitute, strict_substitute);
        self.substitute_from.extend(substitute_from);
        if let Some(vars) = substitute {
            self.substitute
                .get_or_insert_with(BTreeMap::new)
                .extend(vars);
        }
        if let Some(over) = helm {
            let base = self.helm.get_or_insert_with(HelmConfig::default);
            replace(&mut base.chart, over.chart);
            replace(&mut base.release_name, over.release_name);
            replace(&mut base.include_crds, over.include_crds);
            replace(&mut base.kube_version, over.kube_version);
            replace(&mut base.post_render, over.post_render);
            base.values_files.extend(over.values_files);
            base.set.extend(over.set);
            base.set_string.extend(over.set_string);
            base.api_versions.extend(over.api_versions);
            if let Some(values) = over.values {
                match &mut base.values {
                    Some(existing) => super::values::merge(existing, values),
                    None => base.values = Some(values),
                }
            }
        }
    }

    /// True when variable substitution is configured at all (Flux: only with `postBuild`).
    pub fn substitution_configured(&self) -> bool {
        self.substitute.is_some()
            || !self.substitute_from.is_empty()
            || self.strict_substitute.is_some()
    }

    /// The JSON schema of ferry.yaml, for editors (`# yaml-language-server: $schema=...`).
    pub fn schema_json() -> String {
        let schema = schemars::schema_for!(AppConfig);
        serde_json::to_string_pretty(&schema).unwrap_or_default()
    }
}

fn replace<T>(base: &mut Option<T>, over: Option<T>) {
    if over.is_some() {
        *base = over;
    }
}

/// Why a `helm.chart` block is not a usable chart source (prefixed by the caller with the file
/// and field).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChartSourceError {
    #[error("set exactly one of `path`, `repo` (with `name`) or `oci`")]
    NotExactlyOne,
    #[error("`repo` needs `name` (the chart's name in the repository)")]
    RepoWithoutName,
    #[error("`name` is only used with `repo`")]
    NameWithoutRepo,
    /// A repository URL, chart name, OCI reference or version that may not reach helm.
    #[error(transparent)]
    Name(#[from] names::NameError),
    #[error("secretRef.name {0:?} is not a Secret name (a DNS-1123 subdomain)")]
    SecretName(String),
    #[error(
        "secretRef needs a remote chart (`repo` or `oci`); a chart `path` is read from the source"
    )]
    SecretWithLocalChart,
}

impl ChartSource {
    /// Exactly one source, with the fields it needs.
    pub fn validate(&self) -> std::result::Result<(), ChartSourceError> {
        let count = [self.path.is_some(), self.repo.is_some(), self.oci.is_some()]
            .into_iter()
            .filter(|b| *b)
            .count();
        if count != 1 {
            return Err(ChartSourceError::NotExactlyOne);
        }
        if self.repo.is_some() && self.name.is_none() {
            return Err(ChartSourceError::RepoWithoutName);
        }
        if self.repo.is_none() && self.name.is_some() {
            return Err(ChartSourceError::NameWithoutRepo);
        }
        if let Some(repo) = &self.repo {
            names::repo_url(repo)?;
        }
        if let Some(name) = &self.name {
            names::chart_name(name)?;
        }
        if let Some(oci) = &self.oci {
            names::oci_reference(oci)?;
        }
        if let Some(version) = &self.version {
            names::chart_version(version)?;
        }
        if let Some(secret) = &self.secret_ref
            && !names::is_object_name(&secret.name)
        {
            return Err(ChartSourceError::SecretName(secret.name.clone()));
        }
        if self.secret_ref.is_some() && self.path.is_some() {
            return Err(ChartSourceError::SecretWithLocalChart);
        }
        Ok(())
    }

    /// `host[:port]` of a remote chart source (the repository URL's or the OCI registry's),
    /// lower-cased: what credentials for it are bound to.
    pub fn host(&self) -> Option<String> {
        self.repo
            .as_deref()
            .or(self.oci.as_deref())
            .and_then(names::url_host)
    }
}

/// The effective app: ferry.yaml (if any) merged with overrides, plus where it was declared.
#[derive(Debug, Clone)]
pub struct ResolvedApp {
    pub config: AppConfig,
    /// The ferry.yaml, for messages; `None` when detected or flag-driven.
    pub config_file: Option<PathBuf>,
    /// Directory ferry.yaml paths are relative to (the app directory).
    pub base_dir: PathBuf,
    /// The directory (or file) to render: `base_dir` + `path`.
    pub render_path: PathBuf,
    pub kind: RendererKind,
}

impl ResolvedApp {
    /// What errors should name: the ferry.yaml if there is one, else the app directory.
    pub fn declared_in(&self) -> &Path {
        self.config_file.as_deref().unwrap_or(&self.base_dir)
    }
}

/// Detect the renderer for a directory without ferry.yaml.
pub fn detect(path: &Path) -> RendererKind {
    if path.is_dir() {
        if KUSTOMIZATION_FILES.iter().any(|n| path.join(n).is_file()) {
            return RendererKind::Kustomize;
        }
        if path.join("Chart.yaml").is_file() {
            return RendererKind::Helm;
        }
    } else if path.extension().is_some_and(|e| e == "tgz") {
        return RendererKind::Helm;
    }
    RendererKind::Plain
}

/// A Release's `spec.render`: ferry.yaml-level (untrusted) settings layered over the app's own
/// ferry.yaml, checked exactly like it (paths inside the source root, chart sources, names).
#[derive(Debug, Clone)]
pub struct SpecLayer {
    /// Names the object in errors, e.g. `Release team-a/web spec.render`.
    pub source: PathBuf,
    pub config: AppConfig,
}

/// What the operator (agent flags, CLI defaults) imposes on every render, whatever a
/// repository's ferry.yaml or a tenant's `spec.render` say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderPolicy {
    /// Refuse every remote load in kustomizations (bases, generator files, patches ...) even
    /// where ferry.yaml or `spec.render` set `allowRemoteBases` (the agent's
    /// `--no-remote-bases`, Flux's flag of the same name).
    pub forbid_remote_loading: bool,
    /// Ceilings on ferry.yaml / `spec.render` `limits`: a tenant may lower a limit, never raise
    /// it above these. See [`Limits::ceilings`].
    pub ceilings: Limits,
}

impl Default for RenderPolicy {
    fn default() -> Self {
        Self {
            forbid_remote_loading: false,
            ceilings: Limits::ceilings(),
        }
    }
}

/// Load and merge: `root` is the source root, `path` the resolved app path inside it, `spec`
/// a Release's `spec.render` layered over the ferry.yaml (as untrusted as the file).
pub fn resolve(
    root: &Path,
    path: &Path,
    overrides: &Overrides,
    spec: Option<&SpecLayer>,
) -> Result<ResolvedApp> {
    let (mut config_file, mut config) = if path.is_dir() {
        match AppConfig::load(path)? {
            Some((file, config)) => (Some(file), config),
            None => (None, AppConfig::default()),
        }
    } else {
        (None, AppConfig::default())
    };
    if let Some(spec) = spec {
        spec.config.validate_as(&spec.source)?;
        config.layer(spec.config.clone());
        config.validate(&spec.source)?;
        if config_file.is_none() {
            // Errors about merged settings name the Release when there is no ferry.yaml.
            config_file = Some(spec.source.clone());
        }
    }
    let base_dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().unwrap_or(root).to_path_buf()
    };
    let render_path = match &config.path {
        Some(sub) => super::safety::resolve_inside(
            root,
            &base_dir,
            sub,
            "path",
            config_file.as_deref().unwrap_or(&base_dir),
        )?,
        None => path.to_path_buf(),
    };
    if let Some(renderer) = overrides.renderer {
        config.renderer = Some(renderer);
    }
    if overrides.chart.is_some() || overrides.repo.is_some() {
        // A chart on the command line is trusted and replaces ferry.yaml's; local chart paths
        // from flags are kept as given (see helm::ChartRef::from_overrides).
        config.helm.get_or_insert_with(HelmConfig::default).chart = None;
    }
    let helm_flags = overrides.chart.is_some()
        || overrides.repo.is_some()
        || !overrides.values_files.is_empty()
        || !overrides.set.is_empty()
        || !overrides.set_string.is_empty()
        || overrides.release_name.is_some()
        || overrides.post_render.is_some();
    let kind = match config.renderer {
        Some(kind) => kind,
        None if config.helm.is_some() || overrides.chart.is_some() || overrides.repo.is_some() => {
            RendererKind::Helm
        }
        None => detect(&render_path),
    };
    if helm_flags && kind != RendererKind::Helm {
        return Err(Error::Source {
            path: config_file.clone().unwrap_or_else(|| render_path.clone()),
            message: format!(
                "helm flags (--chart, --values, --set, --release-name, --post-render) given, but this app renders with {}; use --renderer helm or drop the flags",
                kind.name()
            ),
        });
    }
    if let Some(strict) = overrides.strict_substitute {
        config.strict_substitute = Some(strict);
    }
    if let Some(allow) = overrides.allow_remote_bases {
        config
            .kustomize
            .get_or_insert_with(KustomizeConfig::default)
            .allow_remote_bases = allow;
    }
    Ok(ResolvedApp {
        config,
        config_file,
        base_dir,
        render_path,
        kind,
    })
}

/// Everything one app render carries through its renderer: the resolved app, the limits, the
/// checks done so far, lazily loaded decryption keys, and the values to redact.
pub struct Context<'a> {
    /// Canonical source root.
    pub root: PathBuf,
    pub app: ResolvedApp,
    pub overrides: &'a Overrides,
    /// The operator's policy (remote loading, limit ceilings).
    pub policy: RenderPolicy,
    /// Effective default namespace (flag, else ferry.yaml's `namespace`).
    pub namespace: Option<String>,
    pub limits: Limits,
    pub guard: super::safety::TreeGuard,
    pub redactor: super::safety::Redactor,
    /// Age keys, shared by the helm values files read while rendering and the decrypt stage.
    pub keys: crate::decrypt::Keys,
    /// The request's helm inputs from outside the source (see [`super::RenderRequest`]):
    /// credentials bound to a host, the cluster's capabilities, the chart cache.
    pub chart_credentials: Option<super::request::ChartCredentials>,
    pub capabilities: Option<super::request::Capabilities>,
    pub chart_cache: Option<std::sync::Arc<super::helm::cache::ChartCache>>,
}

impl<'a> Context<'a> {
    pub fn new(
        root: &Path,
        app: ResolvedApp,
        overrides: &'a Overrides,
        policy: RenderPolicy,
        namespace: Option<String>,
        keys: Option<crate::decrypt::sops::AgeKeys>,
    ) -> Result<Self> {
        // The app's limits, capped by the operator's ceilings; a timeout flag is the
        // operator's own and applies as given.
        let mut limits = app
            .config
            .limits
            .clone()
            .unwrap_or_default()
            .capped_by(&policy.ceilings);
        if let Some(timeout) = overrides.timeout_seconds {
            limits.timeout_seconds = timeout;
        }
        let guard = super::safety::TreeGuard::new(root, &limits)?;
        Ok(Self {
            root: guard.root().to_path_buf(),
            namespace: namespace.or_else(|| app.config.namespace.clone()),
            app,
            overrides,
            policy,
            limits,
            guard,
            redactor: super::safety::Redactor::new(),
            keys: crate::decrypt::Keys::new(keys),
            chart_credentials: None,
            capabilities: None,
            chart_cache: None,
        })
    }

    /// The age keys: given by the caller, else what `sops` would use (`SOPS_AGE_KEY`,
    /// `SOPS_AGE_KEY_FILE`, the default key file). Loaded only when something is encrypted.
    pub fn keys(&mut self) -> Result<&crate::decrypt::sops::AgeKeys> {
        self.keys.get()
    }

    /// Relative form of a path for messages and origins.
    pub fn relative(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.root) {
            Ok(rel) if rel.as_os_str().is_empty() => PathBuf::from("."),
            Ok(rel) => rel.to_path_buf(),
            Err(_) => path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_errors_naming_the_file() {
        let err = AppConfig::parse(
            Path::new("apps/x/ferry.yaml"),
            b"helm:\n  valuesFile: [a]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("apps/x/ferry.yaml"), "{err}");
        assert!(err.contains("valuesFile"), "{err}");
    }

    #[test]
    fn parses_a_full_config() {
        let text = br#"
apiVersion: ferry.dev/v1alpha1
renderer: helm
namespace: web
helm:
  chart: { oci: oci://registry.example/charts/web, version: ">=1.0.0 <2.0.0" }
  releaseName: web
  valuesFiles: [values.yaml, secrets.enc.yaml]
  values: { replicas: 2 }
  set: [image.tag=1.2.3]
  postRender: { kustomization: post }
substitute: { CLUSTER: prod }
substituteFrom: [vars.env]
strictSubstitute: true
limits: { timeoutSeconds: 30 }
"#;
        let config = AppConfig::parse(Path::new("ferry.yaml"), text).unwrap();
        assert_eq!(config.renderer, Some(RendererKind::Helm));
        let helm = config.helm.unwrap();
        assert_eq!(helm.values_files.len(), 2);
        assert_eq!(config.limits.unwrap().timeout_seconds, 30);
    }

    #[test]
    fn chart_source_needs_exactly_one_origin() {
        let err = AppConfig::parse(
            Path::new("ferry.yaml"),
            b"helm:\n  chart: { path: chart, oci: oci://x/y }\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("exactly one"), "{err}");
    }

    #[test]
    fn schema_mentions_the_fields() {
        let schema = AppConfig::schema_json();
        assert!(schema.contains("valuesFiles"));
        assert!(schema.contains("postRender"));
    }
}
