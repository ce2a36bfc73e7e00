//! Registry credentials: docker config JSON (`.dockerconfigjson`), basic, static bearer tokens;
//! parsing of `WWW-Authenticate` challenges for the OCI/Docker bearer-token flow. Debug output
//! of credentials is redacted so they cannot leak into logs or status.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use serde::Deserialize;
use thiserror::Error;

use crate::render::image_ref::DOCKER_HUB_API;

#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// A Docker identity token (OAuth2 refresh token) from `docker login`.
    IdentityToken(String),
    /// A token sent as `Authorization: Bearer` without any token service.
    Bearer(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::IdentityToken(_) => f.write_str("IdentityToken(***)"),
            Credentials::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

impl Credentials {
    /// A stable identity for cache keys that does not contain the secret itself.
    pub fn cache_id(&self) -> String {
        use aws_lc_rs::digest;
        let material = match self {
            Credentials::Anonymous => return "anonymous".into(),
            Credentials::Basic { username, password } => format!("b:{username}:{password}"),
            Credentials::IdentityToken(t) => format!("i:{t}"),
            Credentials::Bearer(t) => format!("t:{t}"),
        };
        let d = digest::digest(&digest::SHA256, material.as_bytes());
        hex::encode(&d.as_ref()[..8])
    }
}

#[derive(Debug, Error)]
pub enum CredentialError {
    #[error(
        "Secret {secret}: `.dockerconfigjson` is not valid docker config JSON ({reason}); create it with `kubectl create secret docker-registry`"
    )]
    DockerConfig { secret: String, reason: String },
    #[error(
        "Secret {secret}: has no credentials for registry {host} (it has: {available}); add an entry for {host}"
    )]
    NoEntry {
        secret: String,
        host: String,
        available: String,
    },
    #[error("Secret {secret}: expected `.dockerconfigjson`, `username` + `password`, or `token`")]
    Unrecognised { secret: String },
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize, Default)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

/// Normalise a docker config key (`https://index.docker.io/v1/`, `ghcr.io`, `https://h:5000`) to
/// the API host it stands for.
pub fn normalise_host(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB_API.to_string()
        }
        other => other.to_string(),
    }
}

/// Credentials for `host` from a docker config JSON document.
pub fn from_docker_config(
    secret: &str,
    json: &[u8],
    host: &str,
) -> Result<Credentials, CredentialError> {
    let config: DockerConfig =
        serde_json::from_slice(json).map_err(|e| CredentialError::DockerConfig {
            secret: secret.to_string(),
            reason: e.to_string(),
        })?;
    let wanted = normalise_host(host);
    let Some((_, entry)) = config
        .auths
        .iter()
        .find(|(key, _)| normalise_host(key) == wanted)
    else {
        return Err(CredentialError::NoEntry {
            secret: secret.to_string(),
            host: host.to_string(),
            available: config.auths.keys().cloned().collect::<Vec<_>>().join(", "),
        });
    };
    if let Some(token) = entry.registrytoken.clone().filter(|t| !t.is_empty()) {
        return Ok(Credentials::Bearer(token));
    }
    if let Some(token) = entry.identitytoken.clone().filter(|t| !t.is_empty()) {
        return Ok(Credentials::IdentityToken(token));
    }
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Credentials::Basic {
            username: username.clone(),
            password: password.clone(),
        });
    }
    if let Some(auth) = &entry.auth {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| CredentialError::DockerConfig {
                secret: secret.to_string(),
                reason: format!("the `auth` of {host} is not base64 of user:password"),
            })?;
        let (username, password) =
            decoded
                .split_once(':')
                .ok_or_else(|| CredentialError::DockerConfig {
                    secret: secret.to_string(),
                    reason: format!("the `auth` of {host} is not user:password"),
                })?;
        return Ok(Credentials::Basic {
            username: username.to_string(),
            password: password.to_string(),
        });
    }
    Ok(Credentials::Anonymous)
}

/// Credentials from the data of a Secret (already base64-decoded values).
pub fn from_secret_data(
    secret: &str,
    data: &BTreeMap<String, Vec<u8>>,
    host: &str,
) -> Result<Credentials, CredentialError> {
    let text = |k: &str| {
        data.get(k)
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
    };
    if let Some(json) = data
        .get(".dockerconfigjson")
        .or_else(|| data.get("config.json"))
    {
        return from_docker_config(secret, json, host);
    }
    if let (Some(username), Some(password)) = (text("username"), text("password")) {
        return Ok(Credentials::Basic { username, password });
    }
    if let Some(token) = text("token").or_else(|| text("bearerToken")) {
        return Ok(Credentials::Bearer(token));
    }
    Err(CredentialError::Unrecognised {
        secret: secret.to_string(),
    })
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parse `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="…"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = BTreeMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.insert(key, value.to_string());
        rest = remaining.trim_start_matches([',', ' ']);
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_entries() {
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:s3cret");
        let json = format!(
            r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{auth}"}}, "ghcr.io": {{"username": "u", "password": "p"}}, "h:5000": {{"identitytoken": "tok"}}}}}}"#
        );
        assert_eq!(
            from_docker_config("s", json.as_bytes(), "registry-1.docker.io").unwrap(),
            Credentials::Basic {
                username: "bob".into(),
                password: "s3cret".into()
            }
        );
        assert_eq!(
            from_docker_config("s", json.as_bytes(), "ghcr.io").unwrap(),
            Credentials::Basic {
                username: "u".into(),
                password: "p".into()
            }
        );
        assert_eq!(
            from_docker_config("s", json.as_bytes(), "h:5000").unwrap(),
            Credentials::IdentityToken("tok".into())
        );
        let err = from_docker_config("ns/s", json.as_bytes(), "quay.io")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("quay.io") && err.contains("ns/s") && !err.contains("s3cret"),
            "{err}"
        );
        let err = from_docker_config("ns/s", b"{", "quay.io")
            .unwrap_err()
            .to_string();
        assert!(err.contains("docker config JSON"), "{err}");
    }

    #[test]
    fn debug_redacts() {
        let c = Credentials::Basic {
            username: "bob".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(!c.cache_id().contains("s3cret"));
        assert!(!format!("{:?}", Credentials::Bearer("tok".into())).contains("tok"));
    }

    #[test]
    fn challenges() {
        let c = parse_challenge(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#).unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["scope"], "repository:library/nginx:pull");
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "Registry Realm");
    }
}
