//! `ferry-agent`: the pull-mode driver. Runs inside the cluster (or beside it with a kubeconfig),
//! watches git sources and registries, and reconciles Releases through `ferry-engine`.

fn main() {
    println!(
        "ferry-agent {}: not implemented yet",
        env!("CARGO_PKG_VERSION")
    );
}
