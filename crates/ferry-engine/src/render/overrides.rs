//! THE mapping from what a driver was told to render with onto a [`RenderRequest`]: the
//! operator's own settings (`ferry apply/diff/render` flags) and a ferry.yaml-shaped object set
//! on an API object (a Release's `spec.render`, read by the agent). Both drivers call
//! [`layer_onto`], so the same setting means the same thing from either side.
//!
//! The two kinds of layer differ in trust, and that difference is the whole point of this
//! module: operator settings become [`Overrides`] (used as given, not confined to the source
//! root, relative paths resolved against the operator's working directory), while an API
//! object's settings become a [`SpecLayer`] checked exactly like a repository's ferry.yaml
//! (paths inside the source root, chart sources, every name that reaches a renderer's argv),
//! because whoever may create the object wrote them.

use std::path::{Path, PathBuf};

use super::RenderRequest;
use super::config::{AppConfig, Overrides, RenderPolicy, SpecLayer};
use crate::error::{Error, Result};

/// A ferry.yaml-shaped object on an API object, e.g. a Release's `spec.render`.
#[derive(Debug, Clone)]
pub struct ObjectLayer {
    /// Names the object and field in errors, e.g. `Release team-a/web spec.render`.
    pub object: String,
    /// The field's value as the API server returned it.
    pub value: serde_json::Value,
}

/// Everything a driver layers over an app's ferry.yaml.
#[derive(Debug, Clone, Default)]
pub struct DriverSettings {
    /// The operator's own settings (command-line flags): trusted.
    pub operator: Overrides,
    /// Where the operator's relative paths are relative to (the CLI's working directory);
    /// `None` leaves them as given.
    pub operator_cwd: Option<PathBuf>,
    /// An API object's ferry.yaml-level settings: as untrusted as the repository.
    pub object: Option<ObjectLayer>,
    /// The operator's policy over every render (remote loading, limit ceilings).
    pub policy: RenderPolicy,
}

/// Layer `settings` onto `request`. An object layer that is not a valid ferry.yaml app config,
/// sets `path` (the object has its own field for that), or fails ferry.yaml's checks is an
/// error naming the object.
///
/// The object layer's `namespace` replaces the request's default namespace (a Release's
/// `spec.render.namespace` wins over its target namespace); the operator's `--namespace` is
/// given by the driver as the request's default namespace and wins over ferry.yaml's.
pub fn layer_onto(request: &mut RenderRequest, settings: DriverSettings) -> Result<()> {
    let DriverSettings {
        operator,
        operator_cwd,
        object,
        policy,
    } = settings;
    request.overrides = match &operator_cwd {
        Some(cwd) => resolve_operator_paths(operator, cwd),
        None => operator,
    };
    request.policy = policy;
    if let Some(object) = object {
        let layer = object_layer(&object)?;
        if let Some(namespace) = &layer.config.namespace {
            request.default_namespace = Some(namespace.clone());
        }
        request.spec = Some(layer);
    }
    Ok(())
}

/// Operator paths made absolute against `cwd`. A chart is a local path unless it is an OCI
/// reference or a chart name in `repo`.
fn resolve_operator_paths(mut overrides: Overrides, cwd: &Path) -> Overrides {
    if let Some(chart) = &overrides.chart
        && !chart.starts_with("oci://")
        && overrides.repo.is_none()
    {
        overrides.chart = Some(cwd.join(chart).display().to_string());
    }
    let absolute = |path: &mut PathBuf| *path = cwd.join(&*path);
    overrides.values_files.iter_mut().for_each(absolute);
    overrides.vars_files.iter_mut().for_each(absolute);
    overrides.post_render.iter_mut().for_each(absolute);
    overrides.helm_binary.iter_mut().for_each(absolute);
    overrides.kustomize_binary.iter_mut().for_each(absolute);
    overrides
}

/// Parse and check an object's ferry.yaml-level settings.
fn object_layer(object: &ObjectLayer) -> Result<SpecLayer> {
    let source = PathBuf::from(&object.object);
    let config: AppConfig =
        serde_json::from_value(object.value.clone()).map_err(|e| Error::Source {
            path: source.clone(),
            message: format!("not a valid ferry.yaml app config: {e}"),
        })?;
    if config.path.is_some() {
        return Err(Error::Source {
            path: source,
            message: "`path` is not supported here; set spec.path".to_string(),
        });
    }
    if config.drift.is_some() {
        return Err(Error::Source {
            path: source,
            message: "`drift` is not supported here; a Release's drift policy is its spec.drift"
                .to_string(),
        });
    }
    config.validate_as(&source)?;
    Ok(SpecLayer { source, config })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::config::RendererKind;

    fn request() -> RenderRequest {
        RenderRequest::new("/src", "app").with_default_namespace(Some("target".to_string()))
    }

    fn object(value: serde_json::Value) -> DriverSettings {
        DriverSettings {
            object: Some(ObjectLayer {
                object: "Release team-a/web spec.render".to_string(),
                value,
            }),
            ..DriverSettings::default()
        }
    }

    #[test]
    fn operator_paths_resolve_against_the_working_directory() {
        let mut req = request();
        let operator = Overrides {
            renderer: Some(RendererKind::Helm),
            chart: Some("charts/web".to_string()),
            values_files: vec![PathBuf::from("v.yaml"), PathBuf::from("/abs/w.yaml")],
            vars_files: vec![PathBuf::from("vars.env")],
            post_render: Some(PathBuf::from("post")),
            helm_binary: Some(PathBuf::from("bin/helm")),
            kustomize_binary: Some(PathBuf::from("/usr/bin/kustomize")),
            set: vec!["a=b".to_string()],
            ..Overrides::default()
        };
        let settings = DriverSettings {
            operator,
            operator_cwd: Some(PathBuf::from("/work")),
            ..DriverSettings::default()
        };
        layer_onto(&mut req, settings).expect("operator settings layer");
        let o = &req.overrides;
        assert_eq!(o.chart.as_deref(), Some("/work/charts/web"));
        assert_eq!(
            o.values_files,
            [PathBuf::from("/work/v.yaml"), PathBuf::from("/abs/w.yaml")]
        );
        assert_eq!(o.vars_files, [PathBuf::from("/work/vars.env")]);
        assert_eq!(o.post_render, Some(PathBuf::from("/work/post")));
        assert_eq!(o.helm_binary, Some(PathBuf::from("/work/bin/helm")));
        assert_eq!(
            o.kustomize_binary,
            Some(PathBuf::from("/usr/bin/kustomize"))
        );
        assert_eq!(o.set, ["a=b"]);
        assert_eq!(o.renderer, Some(RendererKind::Helm));
        // The operator's namespace (the driver's default namespace) stays.
        assert_eq!(req.default_namespace.as_deref(), Some("target"));
        assert!(req.spec.is_none());
    }

    #[test]
    fn remote_charts_are_not_paths() {
        for (chart, repo) in [
            ("oci://registry.example/charts/web", None),
            ("web", Some("https://charts.example")),
        ] {
            let mut req = request();
            let settings = DriverSettings {
                operator: Overrides {
                    chart: Some(chart.to_string()),
                    repo: repo.map(str::to_string),
                    ..Overrides::default()
                },
                operator_cwd: Some(PathBuf::from("/work")),
                ..DriverSettings::default()
            };
            layer_onto(&mut req, settings).expect("layer");
            assert_eq!(req.overrides.chart.as_deref(), Some(chart));
        }
    }

    #[test]
    fn object_layer_is_checked_like_ferry_yaml_and_sets_the_namespace() {
        let mut req = request();
        let mut settings = object(serde_json::json!({
            "renderer": "helm",
            "namespace": "web",
            "helm": {"releaseName": "good-release"}
        }));
        settings.policy.forbid_remote_loading = true;
        layer_onto(&mut req, settings).expect("valid spec.render");
        let spec = req.spec.expect("spec layer");
        assert_eq!(spec.source, PathBuf::from("Release team-a/web spec.render"));
        assert_eq!(spec.config.renderer, Some(RendererKind::Helm));
        assert_eq!(req.default_namespace.as_deref(), Some("web"));
        assert!(req.policy.forbid_remote_loading);
        // An object layer never becomes operator overrides.
        assert!(req.overrides.is_empty());
    }

    #[test]
    fn object_layer_refusals_name_the_object() {
        let cases = [
            (
                serde_json::json!({"nope": 1}),
                "not a valid ferry.yaml app config",
            ),
            (serde_json::json!({"path": "elsewhere"}), "set spec.path"),
            (
                serde_json::json!({"helm": {"releaseName": "x; rm -rf /"}}),
                "helm.releaseName",
            ),
        ];
        for (value, expected) in cases {
            let mut req = request();
            let message = layer_onto(&mut req, object(value))
                .expect_err("refused")
                .to_string();
            assert!(
                message.starts_with("Release team-a/web spec.render"),
                "{message}"
            );
            assert!(message.contains(expected), "{message}");
            assert!(req.spec.is_none());
            assert_eq!(req.default_namespace.as_deref(), Some("target"));
        }
    }
}
