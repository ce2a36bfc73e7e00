//! What a Release reads from its own namespace besides git: Helm values (`spec.valuesFrom`, like
//! Flux's HelmRelease) and `${VAR}` substitution variables (`spec.postBuild`, like Flux's
//! Kustomization), from ConfigMaps and Secrets. Read as the Release's own identity, only in the
//! Release's namespace, and handed to the engine as plain data: one ferry.yaml-level layer
//! (`helm.values`, `substitute`) built over the Release's `spec.render`, so the engine checks it
//! exactly like `spec.render` and pipes values to helm as a values document (never `--set`).
//!
//! Order, as in Flux: the `valuesFrom` entries merge in order (later wins) over the repository's
//! values, and `spec.render.helm.values` merges last; variables come from `substituteFrom` in
//! order, then `spec.render.substitute`, then `postBuild.substitute` (inline wins).
//!
//! Everything read from a Secret is registered with the render's redactor before the render
//! starts, so no status, Event, log line, error or diff shows it. Messages here name objects and
//! keys, never values.

use std::collections::BTreeMap;
use std::path::Path;

use ferry_api::Release;
use ferry_api::release::InputKind;
use ferry_engine::render::safety::Redactor;
use ferry_engine::render::substitute;
use ferry_engine::render::values;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::{Client, ResourceExt};
use serde_json::Value;
use zeroize::Zeroize;

use crate::context::Identity;

/// Condition reason for a `valuesFrom` entry that cannot be read or used.
pub const VALUES_FROM_FAILED: &str = "ValuesFromFailed";
/// Condition reason for a `postBuild.substituteFrom` entry that cannot be read or used.
pub const SUBSTITUTE_FROM_FAILED: &str = "SubstituteFromFailed";

/// Default data key of a `valuesFrom` entry (Flux's).
const DEFAULT_VALUES_KEY: &str = "values.yaml";
/// Ceiling on everything one Release reads through these fields: ConfigMaps and Secrets hold up
/// to 1 MiB each, and a tenant could list hundreds of them.
const MAX_INPUT_BYTES: usize = 8 << 20;
/// Highest list index a `targetPath` may name (`a[7]`): the list is padded with nulls up to it,
/// so an unbounded index would be an allocation a tenant chooses.
const MAX_TARGET_INDEX: usize = 1000;
/// Longest `targetPath`.
const MAX_TARGET_PATH: usize = 512;

/// Why a Release's inputs could not be read. Every message names the field, the object and the
/// key, and never a value.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(
        "{field}: {kind} {namespace}/{name} is in another namespace; a Release reads ConfigMaps and Secrets only from its own namespace {own} (copy it there and drop `namespace`)"
    )]
    CrossNamespace {
        field: String,
        kind: &'static str,
        name: String,
        namespace: String,
        own: String,
    },
    #[error(
        "{field}: cannot read {kind} {namespace}/{name} as {identity}: {source}; grant it `get` on that {kind}"
    )]
    Read {
        field: String,
        kind: &'static str,
        namespace: String,
        name: String,
        identity: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "{field}: {kind} {namespace}/{name} does not exist; create it, or set `optional: true`"
    )]
    Missing {
        field: String,
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error(
        "{field}: {kind} {namespace}/{name} has no key {key:?}; set `valuesKey`, or `optional: true`"
    )]
    MissingKey {
        field: String,
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("{field}: {source}")]
    Values {
        field: String,
        #[source]
        source: ferry_engine::Error,
    },
    #[error("{field}: {kind} {namespace}/{name} key {key:?} is not UTF-8 text")]
    NotText {
        field: String,
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },
    #[error(
        "{field}: {kind} {namespace}/{name} key {key:?} is not a valid variable name (letters, digits and _, not starting with a digit)"
    )]
    InvalidVariable {
        field: String,
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("{field}: {why}")]
    InvalidSpec { field: String, why: String },
    #[error(
        "{field}: spec.valuesFrom and spec.postBuild together read more than {MAX_INPUT_BYTES} bytes; use fewer or smaller objects"
    )]
    TooLarge { field: String },
}

impl InputError {
    /// The Ready condition's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            InputError::CrossNamespace { .. } => ferry_api::CROSS_NAMESPACE_REF_DENIED,
            InputError::InvalidSpec { .. } => "InvalidSpec",
            other if other.field().starts_with("spec.postBuild") => SUBSTITUTE_FROM_FAILED,
            _ => VALUES_FROM_FAILED,
        }
    }

    /// Whether only a change of the Release's spec can fix it (then the Release is Stalled and
    /// waits for that change); everything else depends on objects that may change, and is
    /// retried.
    pub fn stalled(&self) -> bool {
        matches!(
            self,
            InputError::CrossNamespace { .. } | InputError::InvalidSpec { .. }
        )
    }

    fn field(&self) -> &str {
        match self {
            InputError::CrossNamespace { field, .. }
            | InputError::Read { field, .. }
            | InputError::Missing { field, .. }
            | InputError::MissingKey { field, .. }
            | InputError::Values { field, .. }
            | InputError::NotText { field, .. }
            | InputError::InvalidVariable { field, .. }
            | InputError::InvalidSpec { field, .. }
            | InputError::TooLarge { field } => field,
        }
    }
}

/// What a Release's `valuesFrom` and `postBuild` resolved to, as plain data.
#[derive(Default)]
pub struct ReleaseInputs {
    /// The `valuesFrom` documents merged in order; `None` without `valuesFrom`.
    values: Option<Value>,
    /// `substituteFrom` variables merged in order; `None` without `postBuild`.
    vars_from: Option<BTreeMap<String, String>>,
    /// `postBuild.substitute`, winning over everything else.
    inline_vars: BTreeMap<String, String>,
    /// Every value that came from a Secret (values leaves and variables), for the redactor.
    secret: Vec<Value>,
}

impl std::fmt::Debug for ReleaseInputs {
    // Values may be secret: show only what is there.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleaseInputs")
            .field("values", &self.values.is_some())
            .field("vars_from", &self.vars_from.as_ref().map(BTreeMap::len))
            .field("inline_vars", &self.inline_vars.len())
            .field("secret_values", &self.secret.len())
            .finish()
    }
}

impl ReleaseInputs {
    /// Register every value read from a Secret with `redactor` (before rendering, so that
    /// render errors, the diff, status, Events and logs are redacted too).
    pub fn redact_with(&self, redactor: &mut Redactor) {
        for value in &self.secret {
            redactor.add_leaves(value);
        }
    }

    /// The Release's `spec.render` with these inputs layered in: `helm.values` becomes
    /// valuesFrom merged under the Release's own inline values, `substitute` becomes
    /// substituteFrom under `spec.render.substitute` under `postBuild.substitute`. `None` when
    /// there is neither `spec.render` nor an input.
    pub fn layer(&self, render: Option<&Value>) -> Result<Option<Value>, InputError> {
        if self.values.is_none() && self.vars_from.is_none() {
            return Ok(render.cloned());
        }
        let mut layered = match render {
            None => Value::Object(serde_json::Map::new()),
            Some(Value::Object(map)) => Value::Object(map.clone()),
            Some(_) => return Err(spec_error("spec.render", "must be a mapping")),
        };
        let Some(top) = layered.as_object_mut() else {
            return Err(spec_error("spec.render", "must be a mapping"));
        };
        if let Some(from) = &self.values {
            let helm = top
                .entry("helm")
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            let Some(helm) = helm.as_object_mut() else {
                return Err(spec_error(
                    "spec.render.helm",
                    "must be a mapping to take spec.valuesFrom",
                ));
            };
            let mut merged = from.clone();
            match helm.remove("values") {
                None | Some(Value::Null) => {}
                Some(inline @ Value::Object(_)) => values::merge(&mut merged, inline),
                Some(_) => {
                    return Err(spec_error("spec.render.helm.values", "must be a mapping"));
                }
            }
            helm.insert("values".to_string(), merged);
        }
        if let Some(from) = &self.vars_from {
            let mut vars: serde_json::Map<String, Value> = from
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            match top.remove("substitute") {
                None | Some(Value::Null) => {}
                Some(Value::Object(inline)) => vars.extend(inline),
                Some(_) => return Err(spec_error("spec.render.substitute", "must be a mapping")),
            }
            vars.extend(
                self.inline_vars
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone()))),
            );
            top.insert("substitute".to_string(), Value::Object(vars));
        }
        Ok(Some(layered))
    }
}

fn spec_error(field: &str, why: &str) -> InputError {
    InputError::InvalidSpec {
        field: field.to_string(),
        why: why.to_string(),
    }
}

/// One object's data, as bytes per key (ConfigMap `data` and `binaryData`, Secret `data`).
/// Secret bytes are wiped when this is dropped.
struct ObjectData {
    entries: BTreeMap<String, Vec<u8>>,
}

impl Drop for ObjectData {
    fn drop(&mut self) {
        for bytes in self.entries.values_mut() {
            bytes.zeroize();
        }
    }
}

/// Whether the Release reads ConfigMaps or Secrets on every reconcile (`valuesFrom`,
/// `postBuild.substituteFrom`): their content can change while nothing about the Release or its
/// source does, so such a Release must not skip its reconcile "at rest" (issue 17's
/// skip-if-unchanged) — Flux picks up a changed `valuesFrom` object at the next interval too.
pub fn reads_cluster_objects(release: &Release) -> bool {
    !release.spec.values_from.is_empty()
        || release
            .spec
            .post_build
            .as_ref()
            .is_some_and(|p| !p.substitute_from.is_empty())
}

/// Read and resolve a Release's `valuesFrom` and `postBuild`, as `identity` (through `client`),
/// in the Release's own namespace.
pub async fn read(
    release: &Release,
    client: &Client,
    identity: &Identity,
) -> Result<ReleaseInputs, InputError> {
    let own = release.namespace().unwrap_or_default();
    let mut inputs = ReleaseInputs::default();
    let mut budget = MAX_INPUT_BYTES;
    let reader = Reader {
        client,
        identity,
        own: &own,
    };
    for (index, entry) in release.spec.values_from.iter().enumerate() {
        let field = format!("spec.valuesFrom[{index}]");
        // The spec first: a bad path is the Release's to fix, whatever the object holds.
        let target = match &entry.target_path {
            Some(path) => Some(
                parse_target_path(path).map_err(|why| InputError::InvalidSpec {
                    field: format!("{field}.targetPath"),
                    why,
                })?,
            ),
            None => None,
        };
        let Some(data) = reader
            .fetch(
                &field,
                entry.kind,
                &entry.name,
                entry.namespace.as_deref(),
                entry.optional,
            )
            .await?
        else {
            continue;
        };
        let key = entry.values_key.as_deref().unwrap_or(DEFAULT_VALUES_KEY);
        let kind = kind_name(entry.kind);
        let Some(bytes) = data.entries.get(key) else {
            if entry.optional {
                continue;
            }
            return Err(InputError::MissingKey {
                field,
                kind,
                namespace: own.clone(),
                name: entry.name.clone(),
                key: key.to_string(),
            });
        };
        spend(&mut budget, bytes.len(), &field)?;
        let document = match &target {
            Some(segments) => {
                let text = std::str::from_utf8(bytes).map_err(|_| InputError::NotText {
                    field: field.clone(),
                    kind,
                    namespace: own.clone(),
                    name: entry.name.clone(),
                    key: key.to_string(),
                })?;
                let mut document = values::empty();
                set_path(
                    &mut document,
                    segments,
                    substitute::typed_scalar(text.to_string()),
                );
                document
            }
            None => {
                // Named for errors, which never quote the text (it may be a Secret's).
                let shown = format!("{kind} {own}/{} key {key}", entry.name);
                values::parse(Path::new(&shown), bytes).map_err(|source| InputError::Values {
                    field: field.clone(),
                    source,
                })?
            }
        };
        if entry.kind == InputKind::Secret {
            inputs.secret.push(document.clone());
        }
        values::merge(inputs.values.get_or_insert_with(values::empty), document);
    }
    if let Some(post_build) = &release.spec.post_build {
        for key in post_build.substitute.keys() {
            if !substitute::is_var_name(key) {
                return Err(spec_error(
                    "spec.postBuild.substitute",
                    &format!(
                        "{key:?} is not a valid variable name (letters, digits and _, not starting with a digit)"
                    ),
                ));
            }
        }
        inputs.inline_vars = post_build.substitute.clone();
        let vars = inputs.vars_from.get_or_insert_with(BTreeMap::new);
        for (index, entry) in post_build.substitute_from.iter().enumerate() {
            let field = format!("spec.postBuild.substituteFrom[{index}]");
            let Some(data) = reader
                .fetch(
                    &field,
                    entry.kind,
                    &entry.name,
                    entry.namespace.as_deref(),
                    entry.optional,
                )
                .await?
            else {
                continue;
            };
            let kind = kind_name(entry.kind);
            for (key, bytes) in &data.entries {
                spend(&mut budget, bytes.len(), &field)?;
                if !substitute::is_var_name(key) {
                    return Err(InputError::InvalidVariable {
                        field,
                        kind,
                        namespace: own.clone(),
                        name: entry.name.clone(),
                        key: key.clone(),
                    });
                }
                let text = std::str::from_utf8(bytes).map_err(|_| InputError::NotText {
                    field: field.clone(),
                    kind,
                    namespace: own.clone(),
                    name: entry.name.clone(),
                    key: key.clone(),
                })?;
                if entry.kind == InputKind::Secret {
                    inputs.secret.push(Value::String(text.to_string()));
                }
                vars.insert(key.clone(), text.to_string());
            }
        }
    }
    Ok(inputs)
}

fn spend(budget: &mut usize, bytes: usize, field: &str) -> Result<(), InputError> {
    *budget = budget
        .checked_sub(bytes)
        .ok_or_else(|| InputError::TooLarge {
            field: field.to_string(),
        })?;
    Ok(())
}

fn kind_name(kind: InputKind) -> &'static str {
    match kind {
        InputKind::ConfigMap => "ConfigMap",
        InputKind::Secret => "Secret",
    }
}

/// Reads ConfigMaps and Secrets of one Release's namespace as its identity.
struct Reader<'a> {
    client: &'a Client,
    identity: &'a Identity,
    own: &'a str,
}

impl Reader<'_> {
    /// The object's data; `None` when it is missing and `optional`. A reference to another
    /// namespace is refused whatever `--allow-cross-namespace-refs` says: Secrets and
    /// ConfigMaps are always read in the namespace of the object that names them, as that
    /// namespace's identity (the rule for every Secret a tenant object names).
    async fn fetch(
        &self,
        field: &str,
        kind: InputKind,
        name: &str,
        namespace: Option<&str>,
        optional: bool,
    ) -> Result<Option<ObjectData>, InputError> {
        let kind_str = kind_name(kind);
        if let Some(other) = namespace.filter(|ns| !ns.is_empty() && *ns != self.own) {
            return Err(InputError::CrossNamespace {
                field: field.to_string(),
                kind: kind_str,
                name: name.to_string(),
                namespace: other.to_string(),
                own: self.own.to_string(),
            });
        }
        let read_error = |source: kube::Error| InputError::Read {
            field: field.to_string(),
            kind: kind_str,
            namespace: self.own.to_string(),
            name: name.to_string(),
            identity: self.identity.to_string(),
            source: Box::new(source),
        };
        let entries = match kind {
            InputKind::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), self.own);
                api.get_opt(name).await.map_err(read_error)?.map(|cm| {
                    let mut entries: BTreeMap<String, Vec<u8>> = cm
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect();
                    entries.extend(
                        cm.binary_data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0)),
                    );
                    entries
                })
            }
            InputKind::Secret => {
                let api: Api<Secret> = Api::namespaced(self.client.clone(), self.own);
                api.get_opt(name).await.map_err(read_error)?.map(|secret| {
                    secret
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect()
                })
            }
        };
        match entries {
            Some(entries) => Ok(Some(ObjectData { entries })),
            None if optional => Ok(None),
            None => Err(InputError::Missing {
                field: field.to_string(),
                kind: kind_str,
                namespace: self.own.to_string(),
                name: name.to_string(),
            }),
        }
    }
}

/// One step of a `targetPath`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// Parse a `targetPath` (helm `--set` path syntax, as Flux uses it): keys separated by `.`,
/// `\.` for a dot inside a key, `[N]` after a key for a list index.
fn parse_target_path(path: &str) -> Result<Vec<Segment>, String> {
    if path.is_empty() {
        return Err("is empty".to_string());
    }
    if path.len() > MAX_TARGET_PATH {
        return Err(format!("is longer than {MAX_TARGET_PATH} characters"));
    }
    let mut segments = Vec::new();
    let mut key = String::new();
    let mut chars = path.chars().peekable();
    // Whether the last step ended with `]` (then a `.` or `[` must follow, or the end).
    let mut after_index = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('.' | '[' | ']' | '\\')) => key.push(escaped),
                _ => return Err(format!("{path:?}: `\\` must escape `.`, `[`, `]` or `\\`")),
            },
            '.' => {
                if key.is_empty() && !after_index {
                    return Err(format!("{path:?}: empty key"));
                }
                if !key.is_empty() {
                    segments.push(Segment::Key(std::mem::take(&mut key)));
                }
                after_index = false;
                if chars.peek().is_none() {
                    return Err(format!("{path:?}: ends with `.`"));
                }
                continue;
            }
            '[' => {
                if !key.is_empty() {
                    segments.push(Segment::Key(std::mem::take(&mut key)));
                } else if segments.is_empty() {
                    return Err(format!("{path:?}: a list index needs a key before it"));
                } else if !after_index {
                    return Err(format!("{path:?}: empty key"));
                }
                let mut digits = String::new();
                loop {
                    match chars.next() {
                        Some(']') => break,
                        Some(d) if d.is_ascii_digit() && digits.len() < 6 => digits.push(d),
                        _ => {
                            return Err(format!(
                                "{path:?}: a list index is `[N]` with N at most {MAX_TARGET_INDEX}"
                            ));
                        }
                    }
                }
                let index: usize = digits
                    .parse()
                    .ok()
                    .filter(|n| *n <= MAX_TARGET_INDEX)
                    .ok_or_else(|| {
                        format!("{path:?}: a list index is `[N]` with N at most {MAX_TARGET_INDEX}")
                    })?;
                segments.push(Segment::Index(index));
                after_index = true;
                continue;
            }
            ']' => return Err(format!("{path:?}: `]` without `[`")),
            other => {
                if after_index {
                    return Err(format!("{path:?}: `.` or `[` must follow `]`"));
                }
                key.push(other);
            }
        }
    }
    if !key.is_empty() {
        segments.push(Segment::Key(key));
    }
    Ok(segments)
}

/// Put `value` at `segments` under `root`, creating mappings and lists on the way and replacing
/// what is in the way (helm's `--set` does the same).
fn set_path(root: &mut Value, segments: &[Segment], value: Value) {
    let Some((first, rest)) = segments.split_first() else {
        *root = value;
        return;
    };
    match first {
        Segment::Key(key) => {
            if !root.is_object() {
                *root = Value::Object(serde_json::Map::new());
            }
            if let Value::Object(map) = root {
                let slot = map.entry(key.clone()).or_insert(Value::Null);
                set_path(slot, rest, value);
            }
        }
        Segment::Index(index) => {
            if !root.is_array() {
                *root = Value::Array(Vec::new());
            }
            if let Value::Array(items) = root {
                if items.len() <= *index {
                    items.resize(index + 1, Value::Null);
                }
                set_path(&mut items[*index], rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(k: &str) -> Segment {
        Segment::Key(k.to_string())
    }

    #[test]
    fn target_paths_parse_like_helm_set() {
        assert_eq!(parse_target_path("a.b").unwrap(), vec![key("a"), key("b")]);
        assert_eq!(
            parse_target_path("list[2].name").unwrap(),
            vec![key("list"), Segment::Index(2), key("name")]
        );
        assert_eq!(
            parse_target_path(r"annotations.example\.com/x").unwrap(),
            vec![key("annotations"), key("example.com/x")]
        );
        assert_eq!(
            parse_target_path("m[0][1]").unwrap(),
            vec![key("m"), Segment::Index(0), Segment::Index(1)]
        );
    }

    #[test]
    fn hostile_target_paths_are_refused() {
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "[0]",
            "a[x]",
            "a[-1]",
            "a[1001]",
            "a[99999999999999999999]",
            "a]",
            "a[0]b",
            r"a\n",
            &"k.".repeat(300),
        ] {
            let err = parse_target_path(bad).expect_err(bad);
            assert!(!err.is_empty(), "{bad:?}");
        }
        // The largest index allowed pads a list of MAX_TARGET_INDEX + 1 entries, no more.
        let mut doc = values::empty();
        set_path(&mut doc, &parse_target_path("a[1000]").unwrap(), json!("x"));
        assert_eq!(doc["a"].as_array().map(Vec::len), Some(1001));
    }

    #[test]
    fn set_path_builds_and_replaces() {
        let mut doc = json!({"a": "scalar", "keep": 1});
        set_path(&mut doc, &parse_target_path("a.b[1].c").unwrap(), json!(3));
        assert_eq!(doc, json!({"a": {"b": [null, {"c": 3}]}, "keep": 1}));
    }

    fn inputs(
        values: Option<Value>,
        vars: Option<&[(&str, &str)]>,
        inline: &[(&str, &str)],
    ) -> ReleaseInputs {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        ReleaseInputs {
            values,
            vars_from: vars.map(map),
            inline_vars: map(inline),
            secret: Vec::new(),
        }
    }

    #[test]
    fn inline_values_and_variables_win() {
        let inputs = inputs(
            Some(json!({"replicas": 2, "image": {"tag": "from-cm", "repo": "r"}})),
            Some(&[("A", "from-cm"), ("B", "from-cm"), ("C", "from-cm")]),
            &[("C", "post-build")],
        );
        let render = json!({
            "renderer": "helm",
            "helm": {"values": {"image": {"tag": "inline"}}, "releaseName": "web"},
            "substitute": {"B": "render", "C": "render"},
        });
        let layered = inputs.layer(Some(&render)).unwrap().unwrap();
        assert_eq!(
            layered["helm"]["values"],
            json!({"replicas": 2, "image": {"tag": "inline", "repo": "r"}})
        );
        assert_eq!(layered["helm"]["releaseName"], json!("web"));
        assert_eq!(layered["renderer"], json!("helm"));
        assert_eq!(
            layered["substitute"],
            json!({"A": "from-cm", "B": "render", "C": "post-build"})
        );
    }

    #[test]
    fn nothing_to_layer_keeps_spec_render() {
        let none = ReleaseInputs::default();
        assert_eq!(none.layer(None).unwrap(), None);
        let render = json!({"renderer": "plain"});
        assert_eq!(none.layer(Some(&render)).unwrap(), Some(render));
        // postBuild alone turns substitution on (an empty mapping), as in Flux.
        let on = inputs(None, Some(&[]), &[]);
        assert_eq!(on.layer(None).unwrap(), Some(json!({"substitute": {}})));
    }

    #[test]
    fn a_render_spec_of_the_wrong_shape_is_an_invalid_spec() {
        let with_values = inputs(Some(json!({"a": 1})), None, &[]);
        for render in [
            json!("text"),
            json!({"helm": []}),
            json!({"helm": {"values": 3}}),
        ] {
            let err = with_values.layer(Some(&render)).unwrap_err();
            assert!(err.stalled(), "{err}");
            assert_eq!(err.reason(), "InvalidSpec");
        }
    }

    #[test]
    fn reasons_follow_the_field() {
        let missing = |field: &str| InputError::Missing {
            field: field.to_string(),
            kind: "ConfigMap",
            namespace: "ns".to_string(),
            name: "cm".to_string(),
        };
        let values = missing("spec.valuesFrom[0]");
        assert_eq!(values.reason(), VALUES_FROM_FAILED);
        assert!(!values.stalled(), "a missing object may appear: retried");
        assert!(values.to_string().contains("ConfigMap ns/cm"), "{values}");
        assert_eq!(
            missing("spec.postBuild.substituteFrom[1]").reason(),
            SUBSTITUTE_FROM_FAILED
        );
    }

    #[test]
    fn debug_never_shows_values() {
        let mut secret = inputs(Some(json!({"password": "hunter2-secret"})), None, &[]);
        secret.secret.push(json!({"password": "hunter2-secret"}));
        let shown = format!("{secret:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let mut redactor = Redactor::new();
        secret.redact_with(&mut redactor);
        assert_eq!(
            redactor.redact("the password is hunter2-secret"),
            "the password is [REDACTED]"
        );
    }
}
