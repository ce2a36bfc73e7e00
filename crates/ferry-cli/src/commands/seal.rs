//! `ferry seal`: turn a Secret (file or stdin) into a kubeseal-compatible SealedSecret, using
//! a sealing certificate from a file or the agent's `http://…/v1/cert.pem` endpoint.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use ferry_engine::decrypt::sealed::{self, Scope};
use k8s_openapi::api::core::v1::Secret;

use crate::output::EXIT_OK;

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum SealFormat {
    #[default]
    Yaml,
    Json,
}

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum ScopeArg {
    /// Only this name in this namespace (default).
    #[default]
    Strict,
    /// Any name in this namespace.
    NamespaceWide,
    /// Any name in any namespace.
    ClusterWide,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  ferry seal --cert cert.pem secret.yaml > sealed.yaml\n  kubectl create secret generic db --from-literal=pw=… --dry-run=client -o yaml | ferry seal --cert http://localhost:8080/v1/cert.pem\n  ferry seal --cert cert.pem --scope namespace-wide -n prod secret.yaml"
)]
pub struct SealArgs {
    /// The Secret manifest (YAML or JSON); `-` or absent for stdin.
    pub file: Option<PathBuf>,
    /// Sealing certificate: a PEM file, or an http:// URL (the agent's /v1/cert.pem).
    #[arg(long, value_name = "FILE|URL", env = "FERRY_SEAL_CERT")]
    pub cert: String,
    /// Where the sealed values may be unsealed.
    #[arg(long, value_enum, default_value_t)]
    pub scope: ScopeArg,
    // For a Secret that has none: the global -n/--namespace (`Cli::resolve_namespaces`).
    #[arg(skip)]
    pub namespace: Option<String>,
    /// Output format of the SealedSecret.
    #[arg(long = "format", value_enum, default_value_t)]
    pub format: SealFormat,
}

pub async fn run(args: &SealArgs) -> Result<u8> {
    let (source, bytes) = match &args.file {
        Some(path) if path.as_os_str() != "-" => (
            path.display().to_string(),
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        ),
        _ => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read the Secret from stdin")?;
            ("stdin".to_string(), buf)
        }
    };
    let bytes = zeroize::Zeroizing::new(bytes);
    // Parse errors from serde_saphyr can quote input; report the position only.
    let secret: Secret = serde_saphyr::from_slice(&bytes).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(" at line {} column {}", l.line(), l.column()))
            .unwrap_or_default();
        anyhow::anyhow!("{source}: not a valid Secret manifest{at}")
    })?;
    let kind_ok = secret_kind_is_secret(&bytes);
    if !kind_ok {
        bail!("{source}: expected a `kind: Secret` manifest (apiVersion v1)");
    }
    let pem = sealed::fetch_certificate(&args.cert).await?;
    let public_key = sealed::public_key_from_certificate_pem(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.cert))?;
    let scope = match args.scope {
        ScopeArg::Strict => Scope::Strict,
        ScopeArg::NamespaceWide => Scope::NamespaceWide,
        ScopeArg::ClusterWide => Scope::ClusterWide,
    };
    let sealed = sealed::seal_secret(&secret, &public_key, scope, args.namespace.as_deref())
        .map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
    let out = match args.format {
        SealFormat::Yaml => serde_saphyr::to_string_with_options(
            &sealed,
            ferry_engine::decrypt::sops::yaml_options(),
        )?,
        SealFormat::Json => serde_json::to_string_pretty(&sealed)? + "\n",
    };
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(EXIT_OK)
}

/// `kind` must say Secret (the typed parse ignores it).
fn secret_kind_is_secret(bytes: &[u8]) -> bool {
    serde_saphyr::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| {
            v.get("kind")
                .and_then(|k| k.as_str())
                .map(|k| k == "Secret")
        })
        .unwrap_or(false)
}
