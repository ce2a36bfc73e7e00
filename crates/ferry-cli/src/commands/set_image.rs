//! `ferry set-image NAME=IMAGE[:TAG|@DIGEST] [PATH]`: rewrite image references in a checkout
//! (Flux setter markers, kustomization `images:` entries, plain `image:` fields) with
//! format-preserving edits, for a pipeline that commits the result.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use ferry_engine::render::image_ref;
use ferry_images::setimage::{self, TreeReport};

use crate::cli::GlobalArgs;
use crate::output::{EXIT_CHANGES, EXIT_OK, OutputFormat};

#[derive(Debug, Args)]
#[command(after_help = "\
NAME matches:
  - a setter marker whose policy is NAME or NAMESPACE:NAME, e.g.
      image: reg.example/app:1.0.0 # {\"$imagepolicy\": \"apps:app\"}
    (and the :tag, :name, :digest variants), or whose current image is NAME;
  - a kustomization.yaml `images:` entry with `name: NAME`;
  - an unmarked `image:` field whose image is NAME.
Only the values change: comments, quoting, key order and indentation stay as they are.

Examples:
  ferry set-image reg.example/app=reg.example/app:1.2.3 deploy/
  ferry set-image app=reg.example/app@sha256:0123... overlays/prod
  ferry set-image app=reg.example/app:1.2.3 --dry-run -o json

Exit codes: 0 done (or already up to date), 1 done but some markers/files had problems
(listed on stderr), 2 NAME matched nothing or bad input.")]
pub struct SetImageArgs {
    /// NAME=IMAGE[:TAG][@DIGEST]
    #[arg(value_name = "NAME=IMAGE")]
    pub assignment: String,
    /// File or directory to edit (default: the current directory).
    #[arg(value_name = "PATH", default_value = ".")]
    pub path: PathBuf,
    /// Show what would change without writing.
    #[arg(long, value_name = "server|client", num_args = 0..=1, require_equals = true, default_value = "none", default_missing_value = "server", value_parser = crate::output::parse_dry_run)]
    pub dry_run: bool,
}

pub fn run(global: &GlobalArgs, args: &SetImageArgs) -> Result<u8> {
    // The same reference grammar as `ferry apply --set-image` and image automation.
    let (name, image) = image_ref::parse_assignment(&args.assignment)?;
    let root = if args.path.is_dir() {
        args.path.clone()
    } else {
        args.path.parent().map(PathBuf::from).unwrap_or_default()
    };
    let report = setimage::edit_tree(&root, &args.path, args.dry_run, |file, text| {
        setimage::set_image_edit(&name, &image, file, text)
    })?;
    print_report(global.output, &report, &root, args.dry_run);
    for issue in &report.issues {
        eprintln!("warning: {}", prefixed(&root, issue));
    }
    if report.matched == 0 {
        bail!(
            "{name} matched no marker, kustomization images entry or image field under {}; \
             check NAME (a policy name from a $imagepolicy marker, or an image name)",
            args.path.display()
        );
    }
    Ok(if report.issues.is_empty() {
        EXIT_OK
    } else {
        EXIT_CHANGES
    })
}

fn prefixed(root: &std::path::Path, issue: &setimage::FileIssue) -> String {
    let mut issue = issue.clone();
    issue.file = root.join(&issue.file);
    issue.to_string()
}

fn print_report(format: OutputFormat, report: &TreeReport, root: &std::path::Path, dry_run: bool) {
    match format {
        OutputFormat::Json | OutputFormat::Yaml => {
            let doc = serde_json::json!({
                "dryRun": dry_run,
                "matched": report.matched,
                "filesChanged": report.files_changed,
                "changes": report.changes,
                "issues": report.issues,
            });
            if let Err(err) = crate::output::print_data(format, &doc) {
                crate::output::print_error(&err);
            }
        }
        OutputFormat::Name => {
            let mut files: Vec<_> = report.changes.iter().map(|c| root.join(&c.file)).collect();
            files.dedup();
            for file in files {
                println!("{}", file.display());
            }
        }
        OutputFormat::Human | OutputFormat::Wide | OutputFormat::Markdown => {
            let verb = if dry_run { "would change" } else { "changed" };
            for c in &report.changes {
                println!(
                    "{}:{}: {} {}: {} -> {}",
                    root.join(&c.file).display(),
                    c.line,
                    c.what,
                    verb,
                    c.from.as_deref().unwrap_or("(none)"),
                    c.to.as_deref().unwrap_or("(removed)")
                );
            }
            if report.changes.is_empty() && report.matched > 0 {
                println!(
                    "up to date ({} references matched, nothing to change)",
                    report.matched
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global() -> GlobalArgs {
        GlobalArgs {
            kubeconfig: None,
            context: None,
            output: OutputFormat::Json,
            verbose: 0,
            namespaces: Vec::new(),
            all_namespaces: false,
        }
    }

    /// `ferry set-image NAME=IMAGE` and `ferry apply/render --set-image NAME=IMAGE` accept and
    /// refuse the same references (before issue 13 they had two parsers that disagreed).
    #[test]
    fn both_commands_accept_the_same_references() {
        use ferry_engine::render::ImageOverride;
        for image in [
            "reg.example/app:1.2.3",
            "reg.example:5000/team/app:v1@sha256:abc",
            "localhost:5000/app",
            "[::1]:5000/app:1",
            "app@sha256:0123",
            "reg.example/app:1 ",
            "reg.example/app:1\nimage: evil",
            "reg.example/App:1",
            "reg.example/../app:1",
            "reg.example/app:",
            "reg.example/app:.x",
            "reg.example:99999/app",
            "app@nodigest",
            "a//b:1",
        ] {
            let input = format!("app={image}");
            let set_image = image_ref::parse_assignment(&input);
            let apply = input.parse::<ImageOverride>();
            assert_eq!(
                set_image.is_ok(),
                apply.is_ok(),
                "{input:?}: set-image {set_image:?}, --set-image {apply:?}"
            );
            if let (Err(a), Err(b)) = (set_image, apply) {
                // Both messages name the input and explain the same problem.
                let (a, b) = (a.to_string(), b.to_string());
                let reason = |m: &str| {
                    m.split_once("invalid image reference")
                        .map(|(_, r)| r.to_string())
                };
                assert_eq!(reason(&a), reason(&b), "{a}\n{b}");
                assert!(a.contains(&image_ref::quoted(&input)), "{a}");
            }
        }
    }

    #[test]
    fn rewrites_a_checkout_and_reports_problems() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deploy = "image: reg.example/app:1.0.0 # {\"$imagepolicy\": \"apps:app\"}\nbad: x # {\"$imagepolicy\": \"apps:app:nope\"}\n";
        std::fs::write(dir.path().join("deploy.yaml"), deploy).expect("write");
        let args = SetImageArgs {
            assignment: "app=reg.example/app:1.1.0".into(),
            path: dir.path().to_path_buf(),
            dry_run: false,
        };
        // Done, but the malformed marker makes it exit 1.
        assert_eq!(run(&global(), &args).expect("runs"), EXIT_CHANGES);
        let text = std::fs::read_to_string(dir.path().join("deploy.yaml")).expect("read");
        assert_eq!(text, deploy.replace("app:1.0.0", "app:1.1.0"));
        // Dry run changes nothing; an unknown NAME is an error.
        let args = SetImageArgs {
            assignment: "app=reg.example/app:9.9.9".into(),
            path: dir.path().to_path_buf(),
            dry_run: true,
        };
        run(&global(), &args).expect("dry run");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("deploy.yaml")).expect("read"),
            text
        );
        let args = SetImageArgs {
            assignment: "other=reg.example/other:1".into(),
            path: dir.path().to_path_buf(),
            dry_run: false,
        };
        let err = run(&global(), &args).expect_err("matched nothing");
        assert!(err.to_string().contains("matched no marker"), "{err}");
    }
}
