//! `ferry deploy --agent URL --release NS/NAME --revision SHA`: ask the in-cluster agent to deploy
//! a commit, authenticated by the CI system's OIDC ID token instead of cluster credentials
//! (docs/ci.md). The agent checks the token and its DeployPolicy, applies the commit with the
//! Release's own service account, and streams the run back; this prints it as `ferry apply
//! --wait` does and exits with the same codes.
//!
//! The token is read from `--token-file`, `$FERRY_OIDC_TOKEN`, or requested from GitHub Actions
//! (`ACTIONS_ID_TOKEN_REQUEST_URL`/`_TOKEN`, the job needs `permissions: id-token: write`). It is
//! sent only to the agent URL given (https, or plain http to a loopback address), never logged,
//! and redirects are not followed.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;

use crate::cli::GlobalArgs;
use crate::output::{EXIT_CHANGES, EXIT_ERROR, EXIT_OK, EXIT_TIMEOUT, OutputFormat};

pub const DEPLOY_HELP: &str = "\
Examples:
  ferry deploy --agent https://ferry.example.com --release shop/web --revision $GITHUB_SHA
  ferry deploy --agent $AGENT --release shop/web --token-file $TOKEN_FILE   # revision: git HEAD
  ferry deploy --agent $AGENT --release shop/web -o markdown >> $GITHUB_STEP_SUMMARY

The token: --token-file, else $FERRY_OIDC_TOKEN, else GitHub Actions' ID token for --audience
(needs `permissions: id-token: write`). The agent verifies it against a DeployPolicy in the
Release's namespace (docs/ci.md). No kubeconfig is used.

Exit codes: 0 deployed (and healthy), 1 some objects failed, 2 refused or error, 3 timed out.";

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The agent's URL (its webhook Service or Ingress): https://..., or http:// to a loopback
    /// address.
    #[arg(long, env = "FERRY_AGENT_URL", value_name = "URL")]
    pub agent: String,
    /// The Release to deploy, as NAMESPACE/NAME.
    #[arg(long, value_name = "NS/NAME")]
    pub release: String,
    /// The commit to deploy (full SHA-1). Default: HEAD of the git checkout in the current
    /// directory.
    #[arg(long, value_name = "SHA")]
    pub revision: Option<String>,
    /// Replace container images (NAME=IMAGE, as `ferry apply --set-image`); the DeployPolicy
    /// must allow it. Repeatable.
    #[arg(long = "set-image", value_name = "NAME=IMAGE")]
    pub set_images: Vec<String>,
    /// A file holding the OIDC ID token (GitLab `id_tokens`, Jenkins, Azure DevOps, a
    /// Kubernetes service-account token).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The audience to request from GitHub Actions (must equal the DeployPolicy's audience).
    #[arg(long, env = "FERRY_OIDC_AUDIENCE", value_name = "AUD")]
    pub audience: Option<String>,
    /// PEM CA certificates for the agent's TLS, in addition to the system's.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// How long to wait for the result.
    #[arg(long, default_value = "15m", value_parser = ferry_api::parse_duration)]
    pub timeout: Duration,
}

/// Where the token came from, for messages (never the token itself).
fn read_token(args: &DeployArgs) -> Result<String> {
    if let Some(path) = &args.token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?;
        return nonempty(token, &format!("--token-file {}", path.display()));
    }
    if let Ok(token) = std::env::var("FERRY_OIDC_TOKEN") {
        return nonempty(token, "$FERRY_OIDC_TOKEN");
    }
    bail!(
        "no OIDC token: pass --token-file, set $FERRY_OIDC_TOKEN, or run in GitHub Actions with `permissions: id-token: write` (docs/ci.md)"
    )
}

fn nonempty(token: String, from: &str) -> Result<String> {
    let token = token.trim().to_string();
    if token.is_empty() {
        bail!("the token from {from} is empty");
    }
    Ok(token)
}

/// GitHub Actions' ID token for `audience`: a GET to the URL the runner provides, with its
/// request token. Only that URL, which the runner sets, is contacted.
async fn github_token(audience: &str) -> Result<Option<String>> {
    let (Ok(url), Ok(bearer)) = (
        std::env::var("ACTIONS_ID_TOKEN_REQUEST_URL"),
        std::env::var("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
    ) else {
        return Ok(None);
    };
    let mut url = reqwest::Url::parse(&url).context("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL")?;
    url.query_pairs_mut().append_pair("audience", audience);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?;
    let response = client
        .get(url)
        .bearer_auth(bearer)
        .send()
        .await
        .context("cannot request the GitHub Actions ID token")?;
    let status = response.status();
    if !status.is_success() {
        bail!(
            "GitHub Actions refused the ID token request (HTTP {status}); does the job have `permissions: id-token: write`?"
        );
    }
    let body: Value = response
        .json()
        .await
        .context("the ID token answer is not JSON")?;
    match body.get("value").and_then(Value::as_str) {
        Some(token) if !token.is_empty() => Ok(Some(token.to_string())),
        _ => bail!("the GitHub Actions ID token answer has no `value`"),
    }
}

fn agent_url(raw: &str, release: &str) -> Result<reqwest::Url> {
    let base = reqwest::Url::parse(raw).with_context(|| format!("--agent {raw:?} is not a URL"))?;
    let loopback = matches!(
        base.host_str(),
        Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
    );
    match base.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => bail!(
            "--agent {raw}: the token would travel in clear text; use https:// (plain http only to a loopback address)"
        ),
    }
    let Some((ns, name)) = release.split_once('/') else {
        bail!("--release {release:?}: expected NAMESPACE/NAME");
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    if !valid(ns) || !valid(name) {
        bail!("--release {release:?}: namespace and name must be Kubernetes names");
    }
    let path = format!(
        "{}/deploy/v1/{ns}/{name}",
        base.path().trim_end_matches('/')
    );
    let mut url = base;
    url.set_path(&path);
    Ok(url)
}

fn head_revision() -> Result<String> {
    let repo = git2::Repository::discover(".")
        .context("no --revision and the current directory is not a git checkout")?;
    let head = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .context("cannot read HEAD of the git checkout")?;
    Ok(head.id().to_string())
}

pub async fn run(global: &GlobalArgs, args: &DeployArgs) -> Result<u8> {
    let url = agent_url(&args.agent, &args.release)?;
    let revision = match &args.revision {
        Some(r) => r.clone(),
        None => head_revision()?,
    };
    let token = match (&args.token_file, std::env::var("FERRY_OIDC_TOKEN")) {
        (None, Err(_)) => match &args.audience {
            Some(audience) => match github_token(audience).await? {
                Some(token) => token,
                None => read_token(args)?,
            },
            None if std::env::var("ACTIONS_ID_TOKEN_REQUEST_URL").is_ok() => {
                bail!(
                    "in GitHub Actions, pass --audience (the DeployPolicy's spec.audience) to request an ID token"
                )
            }
            None => read_token(args)?,
        },
        _ => read_token(args)?,
    };
    let token = zeroize::Zeroizing::new(token);
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(15));
    if let Some(path) = &args.ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read --ca-file {}", path.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--ca-file {} is not PEM", path.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder.build()?;
    let body = serde_json::json!({"revision": revision, "images": args.set_images});
    let run = async {
        let mut response = client
            .post(url.clone())
            .bearer_auth(token.as_str())
            .json(&body)
            .send()
            .await
            .with_context(|| format!("cannot reach the agent at {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            eprintln!(
                "error: the agent refused the deploy (HTTP {status}): {}",
                text.trim()
            );
            return Ok::<Option<Value>, anyhow::Error>(None);
        }
        let mut pending = Vec::new();
        let mut last = None;
        while let Some(chunk) = response
            .chunk()
            .await
            .context("the agent's stream broke off")?
        {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                if !matches!(global.output, OutputFormat::Json | OutputFormat::Markdown) {
                    show_progress(&event);
                }
                if event["event"] == "result" {
                    last = Some(event);
                }
            }
        }
        Ok(last)
    };
    let result = match tokio::time::timeout(args.timeout, run).await {
        Err(_) => {
            eprintln!("error: no result within {:?} (--timeout)", args.timeout);
            return Ok(EXIT_TIMEOUT);
        }
        Ok(result) => result?,
    };
    let Some(result) = result else {
        return Ok(EXIT_ERROR);
    };
    print_result(global.output, &args.release, &revision, &result)?;
    Ok(match result["outcome"].as_str() {
        Some("succeeded") => EXIT_OK,
        Some("failed") => EXIT_CHANGES,
        Some("timedOut") => EXIT_TIMEOUT,
        _ => EXIT_ERROR,
    })
}

fn show_progress(event: &Value) {
    let text = |k: &str| event[k].as_str().unwrap_or_default().to_string();
    let line = match event["event"].as_str() {
        Some("accepted") => format!(
            "accepted: request {} by {} (DeployPolicy {})",
            text("request"),
            text("subject"),
            text("policy")
        ),
        Some("fetched") => format!(
            "fetched {} ({}, reachable from {})",
            text("revision"),
            text("relation"),
            text("reachableFrom")
        ),
        Some("queued") | Some("applying") => text("message"),
        Some("progress") => match event["phase"].as_str() {
            Some("planned") => format!("planned {} objects", event["total"]),
            Some("waiting") => format!(
                "waiting for {} of {} objects",
                event["pending"], event["total"]
            ),
            _ => format!("{:<10} {}", text("action"), text("object")),
        },
        _ => return,
    };
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn print_result(format: OutputFormat, release: &str, revision: &str, result: &Value) -> Result<()> {
    let outcome = result["outcome"].as_str().unwrap_or("unknown");
    let message = result["message"].as_str().unwrap_or_default();
    let objects = result["objects"].as_array().cloned().unwrap_or_default();
    let summary = result["summary"].as_str();
    let field = |o: &Value, k: &str| o[k].as_str().unwrap_or_default().to_string();
    let short = &revision[..revision.len().min(12)];
    let text = match format {
        OutputFormat::Json => {
            format!("{}\n", serde_json::to_string_pretty(result)?)
        }
        OutputFormat::Markdown => {
            let mut out = format!("### ferry deploy `{release}` at `{short}`: {outcome}\n\n");
            if !objects.is_empty() {
                out.push_str("| object | action | health |\n|---|---|---|\n");
                for o in &objects {
                    out.push_str(&format!(
                        "| `{}` | {} | {} |\n",
                        field(o, "object"),
                        field(o, "action"),
                        field(o, "health")
                    ));
                }
            }
            if let Some(summary) = summary {
                out.push_str(&format!("\n{summary}\n"));
            }
            if outcome != "succeeded" && !message.is_empty() {
                out.push_str(&format!("\n> {message}\n"));
            }
            out
        }
        _ => {
            // The layout of `ferry apply`: changed or unhealthy objects, then the summary.
            let mut out = String::new();
            for o in &objects {
                let health = field(o, "health");
                if field(o, "action") == "unchanged" && (health.is_empty() || health == "Current") {
                    continue;
                }
                out.push_str(&format!(
                    "{:<10} {}",
                    field(o, "action"),
                    field(o, "object")
                ));
                if !health.is_empty() {
                    out.push_str(&format!("  [{health}]"));
                }
                out.push('\n');
                for line in field(o, "message").lines() {
                    out.push_str(&format!("           {line}\n"));
                }
            }
            if let Some(summary) = summary {
                out.push_str(&format!("{summary}\n"));
            }
            out.push_str(&format!("deploy {release} at {short}: {outcome}"));
            if !message.is_empty() {
                out.push_str(&format!(": {message}"));
            }
            out.push('\n');
            out
        }
    };
    crate::output::write_stdout(&text)
}

#[cfg(test)]
mod tests {
    use super::agent_url;

    #[test]
    fn the_token_only_travels_encrypted_or_to_this_machine() {
        let url = agent_url("https://ferry.example.com/base/", "shop/web").expect("https");
        assert_eq!(
            url.as_str(),
            "https://ferry.example.com/base/deploy/v1/shop/web"
        );
        assert!(agent_url("http://127.0.0.1:8080", "shop/web").is_ok());
        let err = agent_url("http://ferry.example.com", "shop/web").expect_err("plain http");
        assert!(err.to_string().contains("clear text"), "{err}");
        assert!(agent_url("https://x", "web").is_err(), "NS/NAME");
        assert!(agent_url("https://x", "shop/../web").is_err());
        assert!(agent_url("ftp://x", "a/b").is_err());
    }
}
