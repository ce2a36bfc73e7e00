//! Where a chart comes from: a local directory or `.tgz` inside the source, a Helm HTTP
//! repository (`index.yaml`, optional basic auth), or an OCI registry. Remote charts are pulled
//! by the real `helm pull` into a private (0700) temp dir and checked as archives
//! (decompression bombs, path escapes, links) before `helm template` reads them. Credentials go
//! to helm through `--password-stdin`, never argv.
//!
//! Where credentials may go (issue 11, item 12): they land only in the private, per-render
//! HELM_REPOSITORY_CONFIG / HELM_REGISTRY_CONFIG. ferry never passes `--pass-credentials` (it is
//! not in the argv allow-list of `process::Flag`), so helm sends a repository's credentials only
//! to the repository's own scheme and host — not to a chart URL in `index.yaml` on another host —
//! and Go's HTTP client drops `Authorization` on redirects to another host. Every helm process
//! runs under the render timeout. Proven against a hostile repository by
//! `tests/attack_chart_credentials.rs`.

use std::path::{Path, PathBuf};

use super::super::names;
use super::super::process::{self, Flag, Run};
use super::super::safety::{self, Limits, Redactor, TreeGuard};
use super::HelmEnv;
use crate::{Error, Result};

/// A chart reference before fetching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChartRef {
    /// A directory with `Chart.yaml`, or a packaged `.tgz` (already resolved and checked to be
    /// inside the root, or given on the command line).
    Local(PathBuf),
    /// `helm pull NAME --repo URL`.
    Repo { url: String, name: String },
    /// `oci://host/path/chart`.
    Oci(String),
}

impl ChartRef {
    /// Short text for messages and origins (no credentials: URLs are printed without userinfo).
    pub fn display(&self) -> String {
        match self {
            ChartRef::Local(path) => path.display().to_string(),
            ChartRef::Repo { url, name } => format!("{name} from {}", names::strip_userinfo(url)),
            ChartRef::Oci(reference) => names::strip_userinfo(reference),
        }
    }
}

/// Registry/repository options for pulling.
#[derive(Clone, Default)]
pub struct PullOptions {
    pub version: Option<String>,
    pub plain_http: bool,
    pub insecure_skip_tls_verify: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Keep pulled archives between renders (see [`super::cache`]).
    pub cache: Option<std::sync::Arc<super::cache::ChartCache>>,
    /// Host-bound credentials for building a local chart's missing dependencies.
    pub dependency_credentials: Option<super::super::request::ChartCredentials>,
}

impl std::fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullOptions")
            .field("version", &self.version)
            .field("plain_http", &self.plain_http)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .finish_non_exhaustive()
    }
}

/// The name the chart repository gets in the private helm home (`helm repo add`).
pub(super) const REPO_ALIAS: &str = "ferry-chart-repo";

/// Get a local chart path for `helm template`, checking what will be read.
pub fn fetch(
    chart: &ChartRef,
    opts: &PullOptions,
    env: &HelmEnv,
    limits: &Limits,
    guard: &mut TreeGuard,
    redactor: &Redactor,
) -> Result<PathBuf> {
    match chart {
        ChartRef::Local(path) => {
            if path.is_dir() {
                if !path.join("Chart.yaml").is_file() {
                    return Err(Error::Source {
                        path: path.clone(),
                        message: "not a Helm chart: no Chart.yaml in this directory".into(),
                    });
                }
                if path.starts_with(guard.root()) {
                    guard.scan_dir(path)?;
                }
                check_vendored_archives(path, limits)?;
            } else {
                safety::check_chart_archive(path, limits)?;
            }
            if let Some(version) = &opts.version {
                check_local_version(path, version)?;
            }
            if path.is_dir() && path.starts_with(guard.root()) {
                return super::deps::build_if_missing(
                    path,
                    env,
                    limits,
                    guard,
                    redactor,
                    opts.dependency_credentials.as_ref(),
                    opts.plain_http,
                );
            }
            Ok(path.clone())
        }
        ChartRef::Repo { url, name } => {
            // Checked again here, whoever built the reference: both reach helm's argv.
            names::chart_name(name).map_err(|err| refused_ref(chart, err))?;
            names::repo_url(url).map_err(|err| refused_ref(chart, err))?;
            let dest = env.home().join("charts");
            std::fs::create_dir_all(&dest).map_err(|err| io_err(&dest, err))?;
            // `helm repo add` fetches the index (which ferry reads for the version and its
            // digest, the cache key) and registers the repository for `helm pull`. A password
            // goes through `--password-stdin` and lands only in the private temp
            // HELM_REPOSITORY_CONFIG; without `--pass-credentials` helm sends it only to this
            // repository's host.
            let mut add = env.run(limits).command(&["repo", "add"]);
            if opts.username.is_some() || opts.password.is_some() {
                if let Some(user) = &opts.username {
                    add = add.option(Flag::Username, user);
                }
                add = add
                    .flag(Flag::PasswordStdin)
                    .stdin(opts.password.clone().unwrap_or_default().into_bytes());
            }
            if opts.insecure_skip_tls_verify {
                add = add.flag(Flag::InsecureSkipTlsVerify);
            }
            add = add.positional(REPO_ALIAS).positional(url);
            run_helm(
                add,
                &format!("adding chart repository {}", names::strip_userinfo(url)),
                redactor,
            )?;
            let index_path = env
                .home()
                .join("repository")
                .join(format!("{REPO_ALIAS}-index.yaml"));
            let found = super::index::resolve(&index_path, name, opts.version.as_deref(), limits)
                .map_err(|err| Error::Source {
                path: PathBuf::from(chart.display()),
                message: err.to_string(),
            })?;
            let key = super::cache::CacheKey {
                source: names::strip_userinfo(url),
                chart: name.clone(),
                version: found.version.clone(),
            };
            if let Some(cache) = &opts.cache
                && let Some(hit) = cache.fetch_into(&key, found.digest.as_deref(), &dest)
            {
                tracing::debug!(chart = %chart.display(), version = %found.version, "chart from the cache");
                safety::check_chart_archive(&hit, limits)?;
                return Ok(hit);
            }
            let mut pull = env
                .run(limits)
                .command(&["pull"])
                .positional(format!("{REPO_ALIAS}/{name}"))
                .option(Flag::Version, &found.version);
            if opts.insecure_skip_tls_verify {
                pull = pull.flag(Flag::InsecureSkipTlsVerify);
            }
            pull = pull.option(Flag::Destination, &dest);
            run_helm(
                pull,
                &format!("pulling chart {} {}", chart.display(), found.version),
                redactor,
            )?;
            let archive = downloaded_archive(&dest, chart, limits)?;
            let bytes = std::fs::read(&archive).map_err(|err| io_err(&archive, err))?;
            if let Some(expected) = &found.digest
                && !expected
                    .trim_start_matches("sha256:")
                    .eq_ignore_ascii_case(&super::cache::sha256_hex(&bytes))
            {
                return Err(Error::Source {
                    path: PathBuf::from(chart.display()),
                    message: format!(
                        "the archive of version {} does not match the digest index.yaml lists for it; not rendered",
                        found.version
                    ),
                });
            }
            if let Some(cache) = &opts.cache {
                cache.store(&key, &archive)?;
            }
            Ok(archive)
        }
        ChartRef::Oci(reference) => {
            names::oci_reference(reference).map_err(|err| refused_ref(chart, err))?;
            let dest = env.home().join("charts");
            std::fs::create_dir_all(&dest).map_err(|err| io_err(&dest, err))?;
            if opts.username.is_some() || opts.password.is_some() {
                let host = reference
                    .trim_start_matches("oci://")
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let mut login = env.run(limits).command(&["registry", "login"]);
                if let Some(user) = &opts.username {
                    login = login.option(Flag::Username, user);
                }
                login = login
                    .flag(Flag::PasswordStdin)
                    .stdin(opts.password.clone().unwrap_or_default().into_bytes());
                if opts.plain_http {
                    login = login.flag(Flag::PlainHttp);
                }
                if opts.insecure_skip_tls_verify {
                    login = login.flag(Flag::Insecure);
                }
                login = login.positional(&host);
                run_helm(login, &format!("logging in to {host}"), redactor)?;
            }
            // An exact version is kept in the cache (Helm's convention: the tag is the chart
            // version); a range asks the registry every time.
            let exact = opts
                .version
                .as_deref()
                .filter(|v| semver::Version::parse(v.trim_start_matches('v')).is_ok());
            let key = exact.map(|version| super::cache::CacheKey {
                source: names::strip_userinfo(reference),
                chart: reference.rsplit('/').next().unwrap_or_default().to_string(),
                version: version.to_string(),
            });
            if let (Some(cache), Some(key)) = (&opts.cache, &key)
                && let Some(hit) = cache.fetch_into(key, None, &dest)
            {
                tracing::debug!(chart = %chart.display(), version = %key.version, "chart from the cache");
                safety::check_chart_archive(&hit, limits)?;
                return Ok(hit);
            }
            let mut pull = env.run(limits).command(&["pull"]);
            if let Some(version) = &opts.version {
                names::chart_version(version).map_err(|err| refused_ref(chart, err))?;
                pull = pull.option(Flag::Version, version);
            }
            if opts.plain_http {
                pull = pull.flag(Flag::PlainHttp);
            }
            if opts.insecure_skip_tls_verify {
                pull = pull.flag(Flag::InsecureSkipTlsVerify);
            }
            pull = pull.option(Flag::Destination, &dest).positional(reference);
            run_helm(
                pull,
                &format!("pulling chart {}", chart.display()),
                redactor,
            )?;
            let archive = downloaded_archive(&dest, chart, limits)?;
            if let (Some(cache), Some(key)) = (&opts.cache, &key) {
                cache.store(key, &archive)?;
            }
            Ok(archive)
        }
    }
}

fn refused_ref(chart: &ChartRef, err: names::NameError) -> Error {
    Error::Source {
        path: PathBuf::from(chart.display()),
        message: err.to_string(),
    }
}

fn io_err(path: &Path, err: std::io::Error) -> Error {
    Error::Render {
        path: path.to_path_buf(),
        message: err.to_string(),
    }
}

/// Run a helm command, turning failure into an error with helm's (redacted) stderr.
pub(super) fn run_helm(run: Run<'_>, what: &str, redactor: &Redactor) -> Result<Vec<u8>> {
    let output = process::run(run).map_err(|err| {
        let stderr = match &err {
            process::RunError::Timeout { stderr, .. } => {
                String::from_utf8_lossy(stderr).into_owned()
            }
            _ => String::new(),
        };
        Error::Render {
            path: PathBuf::from("helm"),
            message: redactor.redact(&format!("{what}: {err}{}", tail(&stderr))),
        }
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Error::Render {
            path: PathBuf::from("helm"),
            message: redactor.redact(&format!(
                "{what} failed ({}):{}",
                output.status,
                tail(&stderr)
            )),
        });
    }
    Ok(output.stdout)
}

fn tail(stderr: &str) -> String {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        String::new()
    } else {
        format!("\n{stderr}")
    }
}

/// The one `.tgz` helm pulled into `dest`, checked.
fn downloaded_archive(dest: &Path, chart: &ChartRef, limits: &Limits) -> Result<PathBuf> {
    let mut archives = Vec::new();
    for entry in std::fs::read_dir(dest).map_err(|err| io_err(dest, err))? {
        let path = entry.map_err(|err| io_err(dest, err))?.path();
        if path.extension().is_some_and(|e| e == "tgz") {
            archives.push(path);
        }
    }
    let [archive] = archives.as_slice() else {
        return Err(Error::Render {
            path: PathBuf::from(chart.display()),
            message: format!("helm pull left {} archives, expected one", archives.len()),
        });
    };
    safety::check_chart_archive(archive, limits)?;
    Ok(archive.clone())
}

/// Dependencies vendored as archives under `charts/` are unpacked by helm too: check them.
fn check_vendored_archives(chart_dir: &Path, limits: &Limits) -> Result<()> {
    let charts = chart_dir.join("charts");
    let Ok(entries) = std::fs::read_dir(&charts) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "tgz") {
            safety::check_chart_archive(&path, limits)?;
        }
    }
    Ok(())
}

/// Helm ignores `--version` for local charts; ferry checks the declared range itself.
fn check_local_version(path: &Path, range: &str) -> Result<()> {
    let constraint = super::version::parse_constraint(range).map_err(|err| Error::Source {
        path: path.to_path_buf(),
        message: err.to_string(),
    })?;
    let version = if path.is_dir() {
        let file = path.join("Chart.yaml");
        let bytes = std::fs::read(&file).map_err(|err| io_err(&file, err))?;
        chart_version(&bytes).ok_or_else(|| Error::Source {
            path: file.clone(),
            message: "Chart.yaml has no valid semver `version`".into(),
        })?
    } else {
        // A packaged chart's version is in its file name (`name-1.2.3.tgz`), as helm writes it.
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        stem.char_indices()
            .filter(|(_, c)| *c == '-')
            .find_map(|(i, _)| semver::Version::parse(&stem[i + 1..]).ok())
            .ok_or_else(|| Error::Source {
                path: path.to_path_buf(),
                message: "cannot tell the chart version from the archive name (expected NAME-VERSION.tgz)".into(),
            })?
    };
    if constraint.matches(&version) {
        Ok(())
    } else {
        Err(Error::Source {
            path: path.to_path_buf(),
            message: format!(
                "chart version {version} does not satisfy the requested range {range:?}"
            ),
        })
    }
}

fn chart_version(chart_yaml: &[u8]) -> Option<semver::Version> {
    let text = std::str::from_utf8(chart_yaml).ok()?;
    let value: serde_json::Value =
        serde_saphyr::from_str_with_options(text, crate::yaml::options()).ok()?;
    let version = match value.get("version")? {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    semver::Version::parse(version.trim_start_matches('v')).ok()
}

/// The chart's `name` from Chart.yaml (directory) or the archive file name.
pub fn chart_name(path: &Path) -> Option<String> {
    if path.is_dir() {
        let text = std::fs::read_to_string(path.join("Chart.yaml")).ok()?;
        let value: serde_json::Value =
            serde_saphyr::from_str_with_options(&text, crate::yaml::options()).ok()?;
        return value.get("name")?.as_str().map(str::to_string);
    }
    let stem = path.file_stem()?.to_str()?;
    let name = stem
        .char_indices()
        .filter(|(_, c)| *c == '-')
        .find(|(i, _)| semver::Version::parse(&stem[i + 1..]).is_ok())
        .map(|(i, _)| &stem[..i])
        .unwrap_or(stem);
    Some(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_archives() {
        assert_eq!(
            chart_name(Path::new("/x/my-chart-1.2.3.tgz")).as_deref(),
            Some("my-chart")
        );
    }
}
