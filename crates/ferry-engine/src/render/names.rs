//! What may reach a renderer's argv: release names, namespaces, `--kube-version`,
//! `--api-versions`, `--set` expressions, chart names, versions, repository URLs and OCI
//! references. Each check returns a [`NameError`] saying what is wrong and what is allowed;
//! callers name the file or object the value came from. These values come from ferry.yaml, a Release's
//! `spec.render` or Chart.yaml, all attacker-controlled, so they are checked before any renderer
//! runs (and [`super::process::Run`] still joins values to their flags and puts positionals
//! after `--`, so a value that slipped through could not become a flag either).

use std::sync::LazyLock;

use regex::Regex;

/// Helm's own limit (release names end up in label values and Secret names).
pub const MAX_RELEASE_NAME: usize = 53;
/// DNS-1123 label limit.
pub const MAX_NAMESPACE: usize = 63;

static DNS_SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
        .unwrap_or_else(|_| unreachable_regex())
});
static DNS_LABEL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap_or_else(|_| unreachable_regex())
});
static KUBE_VERSION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^v?[0-9]+(\.[0-9]+){0,2}(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
        .unwrap_or_else(|_| unreachable_regex())
});
static API_VERSION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[A-Za-z0-9]([A-Za-z0-9./-]*[A-Za-z0-9])?$")
        .unwrap_or_else(|_| unreachable_regex())
});
static CHART_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[A-Za-z0-9][A-Za-z0-9._-]*$").unwrap_or_else(|_| unreachable_regex())
});

/// The patterns above are constants known to compile; a regex that never matches keeps this
/// free of panics all the same.
fn unreachable_regex() -> Regex {
    Regex::new(r"[^\s\S]").unwrap_or_else(|_| unreachable!("a constant regex compiles"))
}

fn printable(value: &str) -> bool {
    !value.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// Why a value may not reach a renderer's argv. Each message quotes the value (URLs without
/// their userinfo), says what is allowed, and is prefixed by the caller with the file or object
/// and field the value came from.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "release name {0:?} is invalid: use at most {MAX_RELEASE_NAME} lowercase letters, digits, '-' and '.', starting and ending with a letter or digit (set `helm.releaseName` if the chart's name does not qualify)"
    )]
    ReleaseName(String),
    #[error(
        "namespace {0:?} is invalid: use at most {MAX_NAMESPACE} lowercase letters, digits and '-', starting and ending with a letter or digit"
    )]
    Namespace(String),
    #[error("kubeVersion {0:?} is invalid: expected a Kubernetes version such as 1.31 or v1.31.2")]
    KubeVersion(String),
    #[error("apiVersions entry {0:?} is invalid: expected group/version or group/version/Kind")]
    ApiVersion(String),
    /// The expression's first 80 characters.
    #[error("set expression {0:?} contains a NUL byte")]
    SetExpressionNul(String),
    /// The expression's first 80 characters.
    #[error(
        "set expression {0:?} is invalid: expected key=value with a key that does not start with '-'"
    )]
    SetExpression(String),
    #[error(
        "chart name {0:?} is invalid: use letters, digits, '.', '_' and '-', starting with a letter or digit; a chart name is looked up in `repo`, never on disk"
    )]
    ChartName(String),
    #[error("chart version {0:?} may not start with '-'")]
    ChartVersionFlag(String),
    /// Not Masterminds semver syntax; `source` says which part is wrong.
    #[error("version constraint: {source}; use e.g. \"1.2.3\", \"^1.2\" or \">=1.0.0 <2.0.0\"")]
    VersionConstraint {
        #[source]
        source: ferry_semver::RangeError,
    },
    /// The URL without its userinfo.
    #[error(
        "repository {0:?} must be an https:// (or http://) URL with a host (for OCI registries use `oci: oci://...`)"
    )]
    RepoUrl(String),
    /// The reference without its userinfo.
    #[error("OCI reference {0:?} must look like oci://registry.example/path/chart")]
    OciReference(String),
}

/// A Helm release name: a DNS-1123 subdomain of at most 53 characters, as `helm install`
/// requires.
pub fn release_name(name: &str) -> Result<(), NameError> {
    if name.len() > MAX_RELEASE_NAME || !DNS_SUBDOMAIN.is_match(name) {
        return Err(NameError::ReleaseName(name.to_string()));
    }
    Ok(())
}

/// An object name (a Secret's): a DNS-1123 subdomain of at most 253 characters.
pub fn is_object_name(name: &str) -> bool {
    name.len() <= 253 && DNS_SUBDOMAIN.is_match(name)
}

/// A namespace: a DNS-1123 label.
pub fn namespace(name: &str) -> Result<(), NameError> {
    if name.len() > MAX_NAMESPACE || !DNS_LABEL.is_match(name) {
        return Err(NameError::Namespace(name.to_string()));
    }
    Ok(())
}

/// `--kube-version`: `1.31`, `v1.31.2`, `1.31.0-rc.1`.
pub fn kube_version(version: &str) -> Result<(), NameError> {
    if version.len() > 64 || !KUBE_VERSION.is_match(version) {
        return Err(NameError::KubeVersion(version.to_string()));
    }
    Ok(())
}

/// `--api-versions`: `group/version` or `group/version/Kind`.
pub fn api_version(api: &str) -> Result<(), NameError> {
    if api.len() > 253 || !API_VERSION.is_match(api) {
        return Err(NameError::ApiVersion(api.to_string()));
    }
    Ok(())
}

/// A `--set` / `--set-string` expression: `key=value`, the key not starting with `-`.
pub fn set_expression(expr: &str) -> Result<(), NameError> {
    let shown: String = expr.chars().take(80).collect();
    match expr.split_once('=') {
        Some((key, _)) if !key.is_empty() && !key.starts_with('-') && !key.contains('\0') => {
            if expr.contains('\0') {
                return Err(NameError::SetExpressionNul(shown));
            }
            Ok(())
        }
        _ => Err(NameError::SetExpression(shown)),
    }
}

/// A chart's name in an HTTP repository: letters, digits, `.`, `_`, `-`, starting with a
/// letter or digit (never a path: a name must not become a file on the agent's disk).
pub fn chart_name(name: &str) -> Result<(), NameError> {
    if name.len() > 250 || !CHART_NAME.is_match(name) || name.contains("..") {
        return Err(NameError::ChartName(name.to_string()));
    }
    Ok(())
}

/// A chart version or range in Helm's (Masterminds) syntax.
pub fn chart_version(version: &str) -> Result<(), NameError> {
    if version.starts_with('-') {
        return Err(NameError::ChartVersionFlag(version.to_string()));
    }
    version_constraint(version).map(|_| ())
}

/// Parse a chart version constraint (see [`super::helm::version`]).
pub fn version_constraint(text: &str) -> Result<ferry_semver::Range, NameError> {
    ferry_semver::Range::parse(text).map_err(|source| NameError::VersionConstraint { source })
}

/// A remote URL's host part after `scheme://`, without userinfo; `None` when there is none.
fn host_of(rest: &str) -> Option<&str> {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    (!host.is_empty()).then_some(host)
}

/// The `host[:port]` of a `scheme://` URL, lower-cased, without userinfo: what chart
/// credentials are bound to (helm sends a repository's credentials only to its own host).
pub fn url_host(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    host_of(rest).map(str::to_ascii_lowercase)
}

/// `url` without its userinfo (`https://user:pass@host/x` → `https://host/x`), for messages:
/// credentials written into a repository URL are never shown.
pub fn strip_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((_, host)) if !host.contains('/') || rest.find('@') < rest.find('/') => {
                format!("{scheme}://{host}")
            }
            _ => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// A Helm HTTP repository: an `https://` or `http://` URL with a host.
pub fn repo_url(url: &str) -> Result<(), NameError> {
    let shown = strip_userinfo(url);
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(rest) if printable(url) && host_of(rest).is_some() => Ok(()),
        _ => Err(NameError::RepoUrl(shown)),
    }
}

/// An OCI chart reference: `oci://host/path`.
pub fn oci_reference(reference: &str) -> Result<(), NameError> {
    let shown = strip_userinfo(reference);
    match reference.strip_prefix("oci://") {
        Some(rest) if printable(reference) && host_of(rest).is_some() && rest.contains('/') => {
            Ok(())
        }
        _ => Err(NameError::OciReference(shown)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_names_follow_helm() {
        assert!(release_name("web").is_ok());
        assert!(release_name("web.v1-2").is_ok());
        assert!(release_name("--post-renderer=sh").is_err());
        assert!(release_name("Web").is_err());
        assert!(release_name("-web").is_err());
        assert!(release_name("web-").is_err());
        assert!(release_name(&"a".repeat(54)).is_err());
        assert!(release_name(&"a".repeat(53)).is_ok());
        assert!(release_name("").is_err());
    }

    #[test]
    fn namespaces_are_labels() {
        assert!(namespace("team-a").is_ok());
        assert!(namespace("team.a").is_err());
        assert!(namespace("--kubeconfig=/x").is_err());
    }

    #[test]
    fn versions_and_apis() {
        assert!(kube_version("1.31").is_ok());
        assert!(kube_version("v1.31.2").is_ok());
        assert!(kube_version("--post-renderer=x").is_err());
        assert!(api_version("monitoring.coreos.com/v1").is_ok());
        assert!(api_version("apps/v1/Deployment").is_ok());
        assert!(api_version("-x").is_err());
    }

    #[test]
    fn set_expressions() {
        assert!(set_expression("a.b=c").is_ok());
        assert!(
            set_expression("a=--post-renderer=x").is_ok(),
            "values are data"
        );
        assert!(set_expression("--post-renderer=x").is_err());
        assert!(set_expression("novalue").is_err());
    }

    #[test]
    fn userinfo_is_not_shown() {
        assert_eq!(
            strip_userinfo("https://u:p@charts.example/x"),
            "https://charts.example/x"
        );
        assert_eq!(strip_userinfo("oci://reg/charts/a"), "oci://reg/charts/a");
    }

    #[test]
    fn chart_sources() {
        assert!(chart_name("podinfo").is_ok());
        assert!(chart_name("/etc").is_err());
        assert!(chart_name("../../x").is_err());
        assert!(chart_name("-x").is_err());
        assert!(repo_url("https://charts.example/x").is_ok());
        assert!(repo_url("file:///etc").is_err());
        assert!(repo_url("-https://x").is_err());
        assert!(repo_url("https://").is_err());
        assert!(oci_reference("oci://reg.example/charts/a").is_ok());
        assert!(oci_reference("oci://reg.example").is_err());
        assert!(oci_reference("oci://-x/y").is_ok(), "host check is helm's");
        assert!(chart_version("^1.2").is_ok());
        assert!(chart_version("-1").is_err());
    }
}
