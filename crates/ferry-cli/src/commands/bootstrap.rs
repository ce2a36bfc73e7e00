//! `ferry bootstrap --url REPO`: make the agent manage itself from git. Writes the install
//! manifests and a GitSource + Release for `--path` into the repository (commit + push with git2),
//! stores the git credentials in a Secret, and applies the same objects once, under the app
//! identity of that Release, so the agent takes them over from git without a conflict.

use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::Args;
use ferry_engine::cluster;
use ferry_engine::pipeline::{self, ApplyOptions};
use ferry_engine::progress::NoProgress;
use git2::{Cred, FetchOptions, PushOptions, RemoteCallbacks, Repository, Signature};
use serde_json::json;

use super::install::{InstallArgs, apply_crds, as_manifests, manifests, print_report, to_yaml};
use crate::cli::GlobalArgs;
use crate::commands::cluster_info::cluster_options;
use crate::output::{EXIT_ERROR, EXIT_OK};

#[derive(Debug, Args)]
pub struct BootstrapArgs {
    /// Repository URL (https/http with basic auth, or file://).
    #[arg(long)]
    pub url: String,
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// Directory in the repository the cluster syncs from (the agent's own manifests go to
    /// `<path>/<namespace>/`).
    #[arg(long, default_value = "clusters/default")]
    pub path: String,
    /// Git user name (https basic auth).
    #[arg(long, env = "FERRY_GIT_USERNAME")]
    pub username: Option<String>,
    /// Git password or token; read from the environment so it stays out of shell history.
    #[arg(long, env = "FERRY_GIT_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Sync interval of the GitSource.
    #[arg(long, default_value = "1m")]
    pub interval: String,
    #[command(flatten)]
    pub install: InstallArgs,
}

fn callbacks(args: &BootstrapArgs) -> RemoteCallbacks<'_> {
    let mut cb = RemoteCallbacks::new();
    let mut tries = 0;
    cb.credentials(move |_, _, _| {
        tries += 1;
        match (&args.username, &args.password) {
            (Some(u), Some(p)) if tries < 3 => Cred::userpass_plaintext(u, p),
            _ => Err(git2::Error::from_str(
                "the server wants credentials: set FERRY_GIT_USERNAME and FERRY_GIT_PASSWORD (or --username/--password)",
            )),
        }
    });
    cb
}

/// The GitSource, Release (and credentials Secret name) that make the agent sync `path`.
fn sync_objects(args: &BootstrapArgs) -> Vec<serde_json::Value> {
    let ns = &args.install.namespace;
    let mut source = json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "GitSource",
        "metadata": {"name": ns, "namespace": ns},
        "spec": {"url": args.url, "ref": {"branch": args.branch}, "interval": args.interval}});
    if args.username.is_some() {
        source["spec"]["secretRef"] = json!({"name": "ferry-git-auth"});
    }
    // The cluster's own Release applies the install (ClusterRoles, CRDs): it runs as the
    // install's cluster-admin `ferry-admin` service account, named here so the grant is visible.
    let release = json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": ns, "namespace": ns},
        "spec": {"sourceRef": {"kind": "GitSource", "name": ns}, "path": args.path,
            "serviceAccountName": super::install::SYSTEM_SERVICE_ACCOUNT,
            "interval": "10m", "prune": true, "deletionPolicy": "Orphan"}});
    vec![source, release]
}

fn commit_and_push(
    args: &BootstrapArgs,
    install_yaml: &str,
    sync_yaml: &str,
) -> Result<Option<String>> {
    let dir = tempfile::tempdir().context("temp dir for the checkout")?;
    let repo = Repository::init(dir.path()).context("git init")?;
    let mut remote = repo.remote("origin", &args.url).context("bad --url")?;
    let mut fo = FetchOptions::new();
    fo.remote_callbacks(callbacks(args));
    let refspec = format!("+refs/heads/{0}:refs/remotes/origin/{0}", args.branch);
    remote
        .fetch(&[refspec.as_str()], Some(&mut fo), None)
        .with_context(|| {
            format!(
                "fetching {} from {}",
                args.branch,
                ferry_engine::source::git::redact_url(&args.url)
            )
        })?;
    let parent = repo
        .find_reference(&format!("refs/remotes/origin/{}", args.branch))
        .ok()
        .and_then(|r| r.peel_to_commit().ok());
    if let Some(parent) = &parent {
        repo.checkout_tree(
            parent.as_object(),
            Some(git2::build::CheckoutBuilder::new().force()),
        )
        .context("checkout")?;
    }
    let rel = Path::new(&args.path).join(&args.install.namespace);
    let target = dir.path().join(&rel);
    std::fs::create_dir_all(&target).context("creating the path in the checkout")?;
    std::fs::write(target.join("install.yaml"), install_yaml)?;
    std::fs::write(target.join("sync.yaml"), sync_yaml)?;
    let mut index = repo.index()?;
    index.add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)?;
    index.write()?;
    let tree_id = index.write_tree()?;
    if parent.as_ref().is_some_and(|p| p.tree_id() == tree_id) {
        return Ok(None);
    }
    let tree = repo.find_tree(tree_id)?;
    let sig = Signature::now("ferry bootstrap", "ferry@localhost")?;
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    let oid = repo.commit(
        None,
        &sig,
        &sig,
        &format!("ferry bootstrap: {}", rel.display()),
        &tree,
        &parents,
    )?;
    repo.reference(
        &format!("refs/heads/{}", args.branch),
        oid,
        true,
        "bootstrap",
    )?;
    let rejected: std::cell::RefCell<Option<String>> = std::cell::RefCell::new(None);
    {
        let mut po = PushOptions::new();
        let mut cb = callbacks(args);
        cb.push_update_reference(|name, status| {
            if let Some(s) = status {
                *rejected.borrow_mut() = Some(format!("{name}: {s}"));
            }
            Ok(())
        });
        po.remote_callbacks(cb);
        let spec = format!("refs/heads/{0}:refs/heads/{0}", args.branch);
        remote
            .push(&[spec.as_str()], Some(&mut po))
            .context("git push")?;
    }
    if let Some(why) = rejected.into_inner() {
        bail!("the server rejected the push: {why}");
    }
    Ok(Some(oid.to_string()))
}

pub async fn run(global: &GlobalArgs, args: &BootstrapArgs) -> Result<u8> {
    // Install's flags are flattened in; these two would otherwise be silently ignored.
    if args.install.dry_run || args.install.export {
        bail!(
            "ferry bootstrap has no --dry-run or --export: use `ferry install --export` to see the manifests it commits"
        );
    }
    // Refused before anything is pushed (see install::bitnami_refusal).
    if args.install.sealed_secrets {
        let client = cluster::connect(&cluster_options(global)).await?;
        if let Some(refusal) = super::install::bitnami_refusal(&client, &args.install).await? {
            eprintln!("{refusal}");
            return Ok(EXIT_ERROR);
        }
    }
    let ns = args.install.namespace.clone();
    let install = manifests(&args.install);
    let sync = sync_objects(args);
    let pushed = commit_and_push(args, &to_yaml(&install)?, &to_yaml(&sync)?)?;
    match &pushed {
        Some(sha) => eprintln!(
            "pushed {sha} to {} ({})",
            ferry_engine::source::git::redact_url(&args.url),
            args.branch
        ),
        None => eprintln!("repository already up to date"),
    }
    let client = cluster::connect(&cluster_options(global)).await?;
    // The shared CRDs stay with `ferry install`'s own app, outside the agent's git-managed app.
    if print_report(&apply_crds(&client).await?) {
        return Ok(EXIT_ERROR);
    }
    let mut objects = install;
    objects.extend(sync);
    // App identity = the Release's (name = namespace, same target namespace): see module docs.
    let options = ApplyOptions {
        release: Some(ferry_engine::ownership::ReleaseRef {
            namespace: ns.clone(),
            name: ns.clone(),
        }),
        // Before identities were injective, install and bootstrap applied as push app `<ns>`.
        legacy_app: Some(ferry_engine::inventory::Legacy {
            app: ns.clone(),
            source_prefix: None,
            push_takeover: false,
        }),
        namespace: Some(ns.clone()),
        prune: false,
        force_conflicts: true,
        ..ApplyOptions::default()
    };
    let report = pipeline::apply(
        &client,
        as_manifests(objects, "ferry bootstrap")?,
        &options,
        &NoProgress,
    )
    .await?;
    let failures = report.failures();
    if !failures.is_empty() {
        for f in failures {
            eprintln!(
                "failed: {}: {}",
                f.key,
                f.message.clone().unwrap_or_default()
            );
        }
        return Ok(EXIT_ERROR);
    }
    // Credentials are not in git (nor in the app, which would prune them): a plain Secret.
    if let (Some(u), Some(p)) = (&args.username, &args.password) {
        let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(client.clone(), &ns);
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "ferry-git-auth", "namespace": ns},
            "stringData": {"username": u, "password": p}});
        secrets
            .patch(
                "ferry-git-auth",
                &kube::api::PatchParams::apply("ferry").force(),
                &kube::api::Patch::Apply(&secret),
            )
            .await
            .with_context(|| format!("creating Secret {ns}/ferry-git-auth"))?;
    }
    println!(
        "bootstrapped: Release {ns}/{ns} syncs {} from {}",
        args.path,
        ferry_engine::source::git::redact_url(&args.url)
    );
    Ok(EXIT_OK)
}
