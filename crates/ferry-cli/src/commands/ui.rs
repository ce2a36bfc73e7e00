//! `ferry ui`: start the web dashboard (crates/ferry-ui) on loopback, as the kubeconfig's user,
//! print its URL (with the per-run token) and serve until Ctrl-C.

use anyhow::Result;
use clap::Args;

use crate::cli::GlobalArgs;
use crate::commands::cluster_info::cluster_options;
use crate::output::EXIT_OK;

pub const UI_HELP: &str = "\
Examples:
  ferry ui                          # http://127.0.0.1:7077/?token=… (open it in a browser)
  ferry ui --open                   # ... and open it
  ferry ui -n team-a -n team-b      # only these namespaces
  ferry ui --port 0                 # any free port

The dashboard talks to the cluster with your kubeconfig: it shows and does only what your own
RBAC allows. It listens on 127.0.0.1 and needs the token in the printed URL (then a cookie);
Secret values are never read. Details: docs/ui.md.";

#[derive(Debug, Args)]
pub struct UiArgs {
    /// Address to listen on. Anything but loopback exposes the dashboard (with your
    /// cluster rights, behind the token) to the network over plain HTTP.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub address: String,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 7077)]
    pub port: u16,
    // Only these namespaces (the global -n, repeatable). Default: all you may list, else the
    // context's. Filled by `Cli::resolve_namespaces`.
    #[arg(skip)]
    pub namespaces: Vec<String>,
    /// Open the URL in the default browser (xdg-open / open).
    #[arg(long)]
    pub open: bool,
}

pub async fn run(global: &GlobalArgs, args: &UiArgs) -> Result<u8> {
    let loopback = args
        .address
        .parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(args.address == "localhost");
    if !loopback {
        eprintln!(
            "warning: listening on {}: anyone who can reach it and learns the token acts with your cluster rights, over plain HTTP",
            args.address
        );
    }
    let options = ferry_ui::UiOptions {
        cluster: cluster_options(global),
        address: args.address.clone(),
        port: args.port,
        namespaces: args.namespaces.clone(),
    };
    let running = ferry_ui::start(options).await?;
    println!("ferry ui: {}", running.url);
    eprintln!("(Ctrl-C stops it; the token in the URL is this run's only key)");
    if args.open {
        open_browser(&running.url);
    }
    running.wait().await?;
    Ok(EXIT_OK)
}

/// Hand the URL to the desktop's opener; a fixed program with the URL as one argument (no
/// shell).
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    if let Err(err) = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        eprintln!("could not run {opener} ({err}); open the URL above yourself");
    }
}
