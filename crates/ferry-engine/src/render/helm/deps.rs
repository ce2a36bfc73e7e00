//! Chart dependencies that are declared (`Chart.yaml` `dependencies`, pinned by `Chart.lock`)
//! but not vendored in `charts/`: built with the real `helm dependency build`, the way
//! `helm install` users do before installing, without writing into the source.
//!
//! `Chart.yaml` is repository input, so every dependency's `repository` is checked first:
//! `https://` / `http://` / `oci://` with a host, or `file://` resolving inside the source root;
//! helm's repository-name references (`@name`, `alias:name`) and every other scheme are refused
//! (they would pick up whatever the helm home knows, and in the private helm home ferry sets up
//! that is the chart source's credentials). The chart and its `file://` dependencies are copied
//! into the render's private helm home (checked trees, regular files only) and helm builds
//! there. Credentials (`RenderRequest::chart_credentials`) are registered only for
//! repositories and registries on their own host; helm sends a repository's credentials only to
//! the URLs of that repository (ferry never passes `--pass-credentials`), so a dependency on
//! another host is fetched anonymously. Pulled archives are archive-checked afterwards.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::super::names;
use super::super::process::Flag;
use super::super::request::ChartCredentials;
use super::super::safety::{self, Limits, Redactor, TreeGuard};
use super::HelmEnv;
use super::chart::run_helm;
use crate::{Error, Result};

#[derive(Debug, Deserialize)]
struct ChartYaml {
    #[serde(default)]
    dependencies: Vec<Dependency>,
}

#[derive(Debug, Deserialize)]
struct Dependency {
    #[serde(default)]
    name: String,
    #[serde(default)]
    repository: String,
}

/// Where one dependency comes from, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    /// Vendored (no repository): must already be in `charts/`.
    Vendored,
    Http {
        url: String,
        host: String,
    },
    Oci {
        host: String,
    },
    /// A chart directory inside the source root.
    File(PathBuf),
}

/// `chart_dir` itself when every dependency is vendored (or there are none); else a copy in the
/// private helm home with `charts/` built by helm.
#[allow(clippy::too_many_arguments)]
pub fn build_if_missing(
    chart_dir: &Path,
    env: &HelmEnv,
    limits: &Limits,
    guard: &mut TreeGuard,
    redactor: &Redactor,
    credentials: Option<&ChartCredentials>,
    plain_http: bool,
) -> Result<PathBuf> {
    let chart_yaml = chart_dir.join("Chart.yaml");
    let text = std::fs::read_to_string(&chart_yaml).map_err(|err| Error::Source {
        path: chart_yaml.clone(),
        message: format!("cannot read: {err}"),
    })?;
    let parsed: ChartYaml = serde_saphyr::from_str_with_options(&text, crate::yaml::options())
        .map_err(|_| Error::Source {
            path: chart_yaml.clone(),
            message: "Chart.yaml is not valid YAML".into(),
        })?;
    let missing: Vec<&Dependency> = parsed
        .dependencies
        .iter()
        .filter(|d| !vendored(chart_dir, &d.name))
        .collect();
    if missing.is_empty() {
        return Ok(chart_dir.to_path_buf());
    }
    let root = guard.root().to_path_buf();
    let mut origins = Vec::new();
    for dep in &parsed.dependencies {
        let refuse = |message: String| {
            Error::Refused(format!(
                "{}: dependency {:?}: {message}",
                chart_yaml.display(),
                dep.name
            ))
        };
        names::chart_name(&dep.name).map_err(|err| refuse(err.to_string()))?;
        let origin = origin(&dep.repository, chart_dir, &root).map_err(refuse)?;
        if origin == Origin::Vendored && !vendored(chart_dir, &dep.name) {
            return Err(Error::Source {
                path: chart_yaml.clone(),
                message: format!(
                    "dependency {:?} has no repository and is not in charts/; vendor it (helm dependency build) or name its repository",
                    dep.name
                ),
            });
        }
        origins.push(origin);
    }

    // The chart and its file:// dependencies, copied at their places relative to the root so
    // relative `file://../x` references and Chart.lock stay as they are.
    let copy_root = env.home().join("dependency-build");
    let relative = |dir: &Path| dir.strip_prefix(&root).map(Path::to_path_buf);
    let chart_rel = relative(chart_dir).map_err(|_| {
        Error::Refused(format!(
            "{}: a chart outside the source root cannot have its dependencies built",
            chart_dir.display()
        ))
    })?;
    // The chart's own tree was checked when it was opened.
    copy_tree(chart_dir, &copy_root.join(&chart_rel))?;
    for origin in &origins {
        if let Origin::File(dir) = origin {
            let rel = relative(dir).map_err(|_| {
                Error::Refused(format!("{}: outside the source root", dir.display()))
            })?;
            guard.scan_dir(dir)?;
            copy_tree(dir, &copy_root.join(rel))?;
        }
    }

    // Credentials only for repositories on their host.
    if let Some(creds) = credentials {
        let host = creds.host.to_ascii_lowercase();
        let mut added = std::collections::BTreeSet::new();
        for origin in &origins {
            match origin {
                Origin::Http { url, host: h } if *h == host && added.insert(url.clone()) => {
                    let add = env
                        .run(limits)
                        .command(&["repo", "add"])
                        .option(Flag::Username, &creds.username)
                        .flag(Flag::PasswordStdin)
                        .stdin(creds.password.clone().into_bytes())
                        .positional(format!("ferry-dependency-{}", added.len()))
                        .positional(url);
                    run_helm(
                        add,
                        &format!(
                            "adding dependency repository {}",
                            names::strip_userinfo(url)
                        ),
                        redactor,
                    )?;
                }
                Origin::Oci { host: h } if *h == host && added.insert(h.clone()) => {
                    let mut login = env
                        .run(limits)
                        .command(&["registry", "login"])
                        .option(Flag::Username, &creds.username)
                        .flag(Flag::PasswordStdin)
                        .stdin(creds.password.clone().into_bytes());
                    if plain_http {
                        login = login.flag(Flag::PlainHttp);
                    }
                    run_helm(login.positional(h), &format!("logging in to {h}"), redactor)?;
                }
                _ => {}
            }
        }
    }

    let built = copy_root.join(&chart_rel);
    let mut build = env.run(limits).command(&["dependency", "build"]);
    if plain_http {
        build = build.flag(Flag::PlainHttp);
    }
    run_helm(
        build.positional(&built),
        &format!("building the dependencies of {}", chart_rel.display()),
        redactor,
    )?;
    let charts = built.join("charts");
    if let Ok(entries) = std::fs::read_dir(&charts) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "tgz") {
                safety::check_chart_archive(&path, limits)?;
            }
        }
    }
    Ok(built)
}

/// Whether `charts/` holds the dependency (as `NAME-VERSION.tgz` or an unpacked `NAME/`).
fn vendored(chart_dir: &Path, name: &str) -> bool {
    let charts = chart_dir.join("charts");
    if charts.join(name).join("Chart.yaml").is_file() {
        return true;
    }
    let Ok(entries) = std::fs::read_dir(&charts) else {
        return false;
    };
    entries.flatten().any(|e| {
        let file = e.file_name();
        let file = file.to_string_lossy();
        file.strip_suffix(".tgz")
            .and_then(|stem| stem.strip_prefix(name))
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|version| semver::Version::parse(version).is_ok())
    })
}

/// Check a dependency's `repository` (see the module docs).
fn origin(repository: &str, chart_dir: &Path, root: &Path) -> std::result::Result<Origin, String> {
    if repository.is_empty() {
        return Ok(Origin::Vendored);
    }
    if let Some(path) = repository.strip_prefix("file://") {
        let joined = chart_dir.join(path);
        let resolved = joined
            .canonicalize()
            .map_err(|err| format!("file:// repository {path:?} cannot be opened: {err}"))?;
        if !resolved.starts_with(root) {
            return Err(format!(
                "file:// repository {path:?} is outside the source root; only charts in the source are read"
            ));
        }
        if !resolved.join("Chart.yaml").is_file() {
            return Err(format!(
                "file:// repository {path:?} is not a chart directory"
            ));
        }
        return Ok(Origin::File(resolved));
    }
    if repository.starts_with("oci://") {
        names::oci_reference(&format!("{}/x", repository.trim_end_matches('/')))
            .map_err(|err| err.to_string())?;
        let host = names::url_host(repository).ok_or("an oci:// repository needs a host")?;
        return Ok(Origin::Oci { host });
    }
    if repository.starts_with("https://") || repository.starts_with("http://") {
        names::repo_url(repository).map_err(|err| err.to_string())?;
        let host = names::url_host(repository).ok_or("a repository URL needs a host")?;
        return Ok(Origin::Http {
            url: repository.to_string(),
            host,
        });
    }
    Err(format!(
        "repository {:?} is not allowed: use an https://, http:// or oci:// URL, or file:// inside the source (repository names like @name or alias:name are refused)",
        names::strip_userinfo(repository)
    ))
}

/// Copy the checked tree `from` to `to`: directories and regular files (a symlink inside the
/// root, which the guard allowed, is copied as what it points to).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for entry in walkdir::WalkDir::new(from).follow_links(false) {
        let entry = entry.map_err(|err| Error::Source {
            path: from.to_path_buf(),
            message: format!("cannot read: {err}"),
        })?;
        let rel = entry.path().strip_prefix(from).unwrap_or(Path::new(""));
        let target = to.join(rel);
        let io = |err: std::io::Error| Error::Render {
            path: target.clone(),
            message: format!("cannot copy the chart for the dependency build: {err}"),
        };
        let kind = entry.file_type();
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(io)?;
        } else if kind.is_file() || (kind.is_symlink() && entry.path().is_file()) {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::fs::copy(entry.path(), &target).map_err(io)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_are_checked() {
        let root = tempfile::tempdir().expect("tempdir");
        let root = root.path().canonicalize().expect("canonical");
        let chart = root.join("app/chart");
        std::fs::create_dir_all(&chart).expect("mkdir");
        std::fs::create_dir_all(root.join("app/common")).expect("mkdir");
        std::fs::write(root.join("app/common/Chart.yaml"), "name: common\n").expect("write");
        assert_eq!(origin("", &chart, &root), Ok(Origin::Vendored));
        assert_eq!(
            origin("file://../common", &chart, &root),
            Ok(Origin::File(root.join("app/common")))
        );
        assert!(origin("file:///etc", &chart, &root).is_err());
        assert!(origin("file://../../..", &chart, &root).is_err());
        assert!(matches!(
            origin("https://charts.example/stable", &chart, &root),
            Ok(Origin::Http { host, .. }) if host == "charts.example"
        ));
        assert!(matches!(
            origin("oci://Registry.Example:5000/charts", &chart, &root),
            Ok(Origin::Oci { host }) if host == "registry.example:5000"
        ));
        for bad in [
            "@ferry-chart-repo",
            "alias:stable",
            "ssh://git@x/y",
            "-x",
            "git::https://x",
        ] {
            assert!(origin(bad, &chart, &root).is_err(), "{bad}");
        }
    }
}
