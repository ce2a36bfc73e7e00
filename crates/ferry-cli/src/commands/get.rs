//! `ferry get releases|sources|images|receivers [NAME]`: ferry's objects as a table, the way
//! `flux get` shows them (name, ready, status message, revision, suspended, age), or as the
//! objects themselves with `-o json|yaml`, or their names with `-o name`.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use ferry_engine::cluster;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

use crate::cli::GlobalArgs;
use crate::commands::cluster_info::cluster_options;
use crate::output::{EXIT_OK, OutputFormat, object_name, print_data, write_stdout};
use crate::table::{Table, age_of};

pub const GET_HELP: &str = "\
Examples:
  ferry get releases                       # Releases in the context's namespace
  ferry get releases -A                    # in every namespace
  ferry get rel web -n team-a -o yaml      # one Release, as the object
  ferry get sources -o wide                # GitSources with their URL and ref
  ferry get images -A                      # ImageRepositories, ImagePolicies, ImageUpdates
  ferry get releases -A -o name | xargs -n1 ferry sync   # names for scripts

READY is the Ready condition's status (Unknown before the agent first reconciled the object),
STATUS its message. REVISION: a Release's last applied source revision, a source's fetched
revision, an ImagePolicy's latest image, an ImageUpdate's last pushed commit.

Exit codes: 0 listed (also when nothing matched), 2 error (a name that does not exist, no
access, cluster unreachable).";

/// What to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GetWhat {
    /// Releases.
    #[value(alias = "release", alias = "rel")]
    Releases,
    /// GitSources (and OCISources where that kind is installed).
    #[value(alias = "source", alias = "gitsources", alias = "gs")]
    Sources,
    /// ImageRepositories, ImagePolicies and ImageUpdates.
    #[value(alias = "image")]
    Images,
    /// Webhook Receivers.
    #[value(alias = "receiver", alias = "rcv")]
    Receivers,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// What to list.
    #[arg(value_enum)]
    pub what: GetWhat,
    /// Only this object.
    #[arg(value_name = "NAME", add = crate::completion::release_names())]
    pub name: Option<String>,
    // Filled from the global -n/--namespace (`Cli::resolve_namespaces`).
    #[arg(skip)]
    pub namespace: Option<String>,
    // Filled from the global -A/--all-namespaces.
    #[arg(skip)]
    pub all_namespaces: bool,
}

/// One ferry kind as `get` reads it.
pub struct KindInfo {
    pub kind: &'static str,
    pub plural: &'static str,
    /// Listed only when its CRD is installed (a kind newer than some installs).
    pub optional: bool,
}

pub const RELEASE: KindInfo = KindInfo {
    kind: "Release",
    plural: "releases",
    optional: false,
};
pub const GIT_SOURCE: KindInfo = KindInfo {
    kind: "GitSource",
    plural: "gitsources",
    optional: false,
};
const OCI_SOURCE: KindInfo = KindInfo {
    kind: "OCISource",
    plural: "ocisources",
    optional: true,
};
const IMAGE_REPOSITORY: KindInfo = KindInfo {
    kind: "ImageRepository",
    plural: "imagerepositories",
    optional: false,
};
const IMAGE_POLICY: KindInfo = KindInfo {
    kind: "ImagePolicy",
    plural: "imagepolicies",
    optional: false,
};
const IMAGE_UPDATE: KindInfo = KindInfo {
    kind: "ImageUpdate",
    plural: "imageupdates",
    optional: false,
};
const RECEIVER: KindInfo = KindInfo {
    kind: "Receiver",
    plural: "receivers",
    optional: false,
};

impl GetWhat {
    fn kinds(self) -> &'static [KindInfo] {
        match self {
            Self::Releases => &[RELEASE],
            Self::Sources => &[GIT_SOURCE, OCI_SOURCE],
            Self::Images => &[IMAGE_REPOSITORY, IMAGE_POLICY, IMAGE_UPDATE],
            Self::Receivers => &[RECEIVER],
        }
    }
}

impl KindInfo {
    pub fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(ferry_api::GROUP, ferry_api::VERSION, self.kind),
            self.plural,
        )
    }
}

/// One listed object with the columns every kind shares.
struct Row<'a> {
    kind: &'static str,
    object: &'a DynamicObject,
}

impl<'a> Row<'a> {
    fn field(&self, path: &[&str]) -> Option<&'a Value> {
        let mut value = &self.object.data;
        for part in path {
            value = value.get(part)?;
        }
        Some(value)
    }

    fn text(&self, path: &[&str]) -> String {
        match self.field(path) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        }
    }

    fn ready(&self) -> (String, String) {
        let condition = self
            .field(&["status", "conditions"])
            .and_then(Value::as_array)
            .and_then(|all| all.iter().find(|c| c["type"] == "Ready"));
        match condition {
            Some(c) => (
                c["status"].as_str().unwrap_or("Unknown").to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            ),
            None => ("Unknown".to_string(), "waiting for the agent".to_string()),
        }
    }

    fn revision(&self) -> String {
        match self.kind {
            "Release" => self.text(&["status", "lastAppliedRevision"]),
            "GitSource" | "OCISource" => self.text(&["status", "revision"]),
            "ImageRepository" => {
                let tags = self.text(&["status", "lastScanResult", "tagCount"]);
                if tags.is_empty() {
                    tags
                } else {
                    format!("{tags} tags")
                }
            }
            "ImagePolicy" => self.text(&["status", "latestImage"]),
            "ImageUpdate" => self.text(&["status", "lastPushCommit"]),
            _ => String::new(),
        }
    }

    /// What `-o wide` adds: where the object reads from.
    fn detail(&self) -> String {
        match self.kind {
            "Release" => {
                let source = self.text(&["spec", "sourceRef", "name"]);
                let path = self.text(&["spec", "path"]);
                format!(
                    "{}/{source} {}",
                    self.text(&["spec", "sourceRef", "kind"]),
                    if path.is_empty() { "." } else { &path }
                )
            }
            "GitSource" => {
                let git_ref = self
                    .field(&["spec", "ref"])
                    .and_then(Value::as_object)
                    .and_then(|r| r.iter().next())
                    .map(|(k, v)| format!(" {k}={}", v.as_str().unwrap_or_default()))
                    .unwrap_or_default();
                format!("{}{git_ref}", self.text(&["spec", "url"]))
            }
            "OCISource" => self.text(&["spec", "url"]),
            "ImageRepository" => self.text(&["spec", "image"]),
            "ImagePolicy" => self.text(&["spec", "imageRepositoryRef", "name"]),
            "ImageUpdate" => self.text(&["spec", "sourceRef", "name"]),
            "Receiver" => self.text(&["status", "webhookPath"]),
            _ => String::new(),
        }
    }

    fn suspended(&self) -> String {
        match self.field(&["spec", "suspend"]) {
            Some(Value::Bool(true)) => "True".to_string(),
            _ => "False".to_string(),
        }
    }
}

/// List `kind` in `namespace` (every namespace when `None`); `None` when it is optional and
/// its CRD is not installed.
pub async fn list_kind(
    client: &kube::Client,
    kind: &KindInfo,
    namespace: Option<&str>,
) -> Result<Option<Vec<DynamicObject>>> {
    let resource = kind.api_resource();
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let where_ = namespace.map_or_else(
        || "in any namespace".to_string(),
        |ns| format!("in namespace {ns}"),
    );
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(Some(list.items)),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            if kind.optional {
                Ok(None)
            } else {
                Err(anyhow::anyhow!(
                    "cannot list {} {where_}: the API server does not serve {}.{} (install the CRDs with `ferry install`)",
                    kind.plural,
                    kind.plural,
                    ferry_api::GROUP
                ))
            }
        }
        Err(err) => Err(anyhow::Error::new(err).context(format!(
            "cannot list {} {where_} (check -n/--namespace and your rights: `kubectl auth can-i list {}.{}`)",
            kind.plural,
            kind.plural,
            ferry_api::GROUP
        ))),
    }
}

pub async fn run(global: &GlobalArgs, args: &GetArgs) -> Result<u8> {
    let client = cluster::connect(&cluster_options(global)).await?;
    let namespace = if args.all_namespaces {
        None
    } else {
        Some(
            args.namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string()),
        )
    };
    let mut listed: Vec<(&'static str, DynamicObject)> = Vec::new();
    for kind in args.what.kinds() {
        let Some(items) = list_kind(&client, kind, namespace.as_deref()).await? else {
            continue;
        };
        listed.extend(
            items
                .into_iter()
                .filter(|o| {
                    args.name
                        .as_deref()
                        .is_none_or(|n| o.metadata.name.as_deref() == Some(n))
                })
                .map(|o| (kind.kind, o)),
        );
    }
    if let Some(name) = &args.name
        && listed.is_empty()
    {
        anyhow::bail!(
            "no {} named {name} in namespace {} (check the name and -n/--namespace; `ferry get {}` lists them)",
            args.what.kinds()[0].kind,
            namespace.as_deref().unwrap_or_default(),
            args.what
                .to_possible_value()
                .map(|v| v.get_name().to_string())
                .unwrap_or_default()
        );
    }
    print_objects(global.output, &listed, args.all_namespaces, args.what)?;
    Ok(EXIT_OK)
}

fn print_objects(
    format: OutputFormat,
    listed: &[(&'static str, DynamicObject)],
    all_namespaces: bool,
    what: GetWhat,
) -> Result<()> {
    if matches!(format, OutputFormat::Json | OutputFormat::Yaml) {
        // kubectl's shape: one object alone, several as a List.
        let objects: Vec<Value> = listed
            .iter()
            .map(|(_, o)| serde_json::to_value(o))
            .collect::<Result<_, _>>()
            .context("cannot serialize the objects")?;
        let doc = match objects.as_slice() {
            [one] => one.clone(),
            _ => serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects}),
        };
        print_data(format, &doc)?;
        return Ok(());
    }
    if format == OutputFormat::Name {
        let names: String = listed
            .iter()
            .map(|(kind, o)| {
                format!(
                    "{}\n",
                    object_name(
                        ferry_api::GROUP,
                        kind,
                        o.metadata.name.as_deref().unwrap_or_default()
                    )
                )
            })
            .collect();
        return write_stdout(&names);
    }
    let several_kinds = what.kinds().len() > 1;
    let wide = format == OutputFormat::Wide;
    let mut header: Vec<&str> = Vec::new();
    if all_namespaces {
        header.push("NAMESPACE");
    }
    if several_kinds {
        header.push("KIND");
    }
    header.extend(["NAME", "READY", "STATUS", "REVISION", "SUSPENDED", "AGE"]);
    if wide {
        header.push(match what {
            GetWhat::Releases => "SOURCE PATH",
            GetWhat::Sources => "URL",
            GetWhat::Images => "IMAGE/REF",
            GetWhat::Receivers => "WEBHOOK PATH",
        });
    }
    let mut table = Table::new(&header);
    for (kind, object) in listed {
        let row = Row { kind, object };
        let (ready, message) = row.ready();
        let mut cells = Vec::new();
        if all_namespaces {
            cells.push(object.metadata.namespace.clone().unwrap_or_default());
        }
        if several_kinds {
            cells.push(kind.to_string());
        }
        cells.extend([
            object.metadata.name.clone().unwrap_or_default(),
            ready,
            message,
            row.revision(),
            row.suspended(),
            age_of(object.metadata.creation_timestamp.as_ref().map(|t| &t.0)),
        ]);
        if wide {
            cells.push(row.detail());
        }
        table.push(cells);
    }
    if table.is_empty() {
        eprintln!("no {} found", what.kinds()[0].plural);
        return Ok(());
    }
    write_stdout(&if format == OutputFormat::Markdown {
        table.markdown()
    } else {
        table.render()
    })
}
