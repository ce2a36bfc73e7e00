//! `ferry-agent`: the pull-mode driver. Runs inside the cluster (service-account token) or beside
//! it with a kubeconfig, reconciles GitSources and Releases through `ferry-engine`, and serves
//! health, metrics and webhooks. `ferry-agent crds` prints the CRDs.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use ferry_agent::{Agent, AgentOptions};

#[derive(Debug, Parser)]
#[command(
    name = "ferry-agent",
    version,
    about = "ferry's pull agent: reconciles GitSources and Releases"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    options: AgentOptions,
    /// Log format: json (default, for log collectors) or text.
    #[arg(long, env = "FERRY_LOG_FORMAT", default_value = "json")]
    log_format: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
    /// Run the agent (the default).
    Run,
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_lease_manager=warn"));
    if format == "text" {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(log_writer)
            .init();
    } else {
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_env_filter(filter)
            .with_writer(log_writer)
            .init();
    }
}

/// Every log record passes through the redactor of decrypted values (docs/secrets.md).
fn log_writer() -> ferry_engine::report::redact::LogWriter<std::io::Stderr> {
    ferry_engine::report::redact::LogWriter::new(std::io::stderr())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Crds) = cli.command {
        return match ferry_agent::crds::yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                std::process::ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err:#}");
                std::process::ExitCode::from(2)
            }
        };
    }
    init_logging(&cli.log_format);
    let agent = match Agent::start(cli.options).await {
        Ok(agent) => agent,
        Err(err) => {
            tracing::error!("{err:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let shutdown = agent.shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing running reconciles, releasing the lease");
        shutdown.cancel();
    });
    match agent.wait().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
