//! Custom health checks in CEL (Flux's `healthCheckExprs`): compile a set of rules once, then
//! judge live objects of the kinds they name. Pure, no client.
//!
//! Semantics (those of Flux's kustomize-controller):
//! - a rule applies to objects whose `apiVersion` and `kind` equal its own; it replaces the
//!   built-in rule for that kind (the built-in ones stay for every other kind);
//! - an object that reports `status.observedGeneration` behind `metadata.generation` is
//!   InProgress before any expression is evaluated;
//! - the object's top-level fields (`metadata`, `spec`, `status`, ...) are the variables;
//! - `inProgress`, then `failed`, then `current`: the first that evaluates to true decides;
//!   none true is InProgress;
//! - an evaluation error (a field that does not exist yet, say) is InProgress with the error,
//!   so the wait goes on until the object has it or the deadline passes: guard optional fields
//!   with `has(...)`.
//!
//! Bounds (the expressions and the objects may both be a tenant's): an expression is at most
//! [`MAX_EXPRESSION_LEN`] bytes, a set at most [`MAX_RULES`] rules, and the parser refuses
//! nesting deeper than its limit. CEL has no loops or recursion, but its macros (`all`,
//! `exists`, `exists_one`, `map`, `filter`) iterate, and a macro in another one's body
//! multiplies their costs: so no macro may sit in another macro's body (chaining,
//! `l.filter(...).all(...)`, is fine), an expression has at most [`MAX_MACROS`] of them, and an
//! object with a list longer than [`MAX_LIST_LEN`] is not evaluated (in progress, with the
//! reason). Together these keep one evaluation to a few million steps.

use cel::common::ast::{EntryExpr, Expr, IdedExpr};

use cel::{Context, Program};
use ferry_api::health::HealthCheckExpr;
use serde_json::Value;

use super::{Health, int};

/// Longest accepted expression, in bytes.
pub const MAX_EXPRESSION_LEN: usize = 4096;
/// Most rules in one set (one per kind is the usual).
pub const MAX_RULES: usize = 100;
/// Most macros (comprehensions) in one expression.
pub const MAX_MACROS: usize = 16;
/// Longest list (in the object) an expression is evaluated over.
pub const MAX_LIST_LEN: usize = 1000;
/// Deepest bracket nesting, and most conditionals (`?`), in one expression: the parser
/// recurses on both before its own depth limit applies, and an unbounded depth would overflow
/// the stack.
pub const MAX_NESTING: usize = 32;

/// A rule set that cannot be compiled: names the rule, the field and what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("healthCheckExprs[{index}] ({api_version} {kind}) {field}: {message}")]
pub struct InvalidHealthCheck {
    pub index: usize,
    pub api_version: String,
    pub kind: String,
    /// `current`, `inProgress`, `failed`, `apiVersion` or `kind`.
    pub field: &'static str,
    pub message: String,
}

struct Rule {
    api_version: String,
    kind: String,
    current: Compiled,
    in_progress: Option<Compiled>,
    failed: Option<Compiled>,
}

struct Compiled {
    source: String,
    program: Program,
}

/// Compiled custom health rules; empty by default (only the built-in rules apply).
#[derive(Default)]
pub struct CustomHealth {
    rules: Vec<Rule>,
}

impl std::fmt::Debug for CustomHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.rules
                    .iter()
                    .map(|r| format!("{} {}", r.api_version, r.kind)),
            )
            .finish()
    }
}

impl CustomHealth {
    /// Compile `exprs`, refusing empty or oversized expressions, expressions that do not
    /// parse, a missing `current`, and two rules for the same kind.
    pub fn compile(exprs: &[HealthCheckExpr]) -> Result<Self, InvalidHealthCheck> {
        if exprs.len() > MAX_RULES {
            return Err(InvalidHealthCheck {
                index: MAX_RULES,
                api_version: exprs[MAX_RULES].api_version.clone(),
                kind: exprs[MAX_RULES].kind.clone(),
                field: "kind",
                message: format!("at most {MAX_RULES} rules are accepted"),
            });
        }
        let mut rules: Vec<Rule> = Vec::with_capacity(exprs.len());
        for (index, e) in exprs.iter().enumerate() {
            let invalid = |field: &'static str, message: String| InvalidHealthCheck {
                index,
                api_version: e.api_version.clone(),
                kind: e.kind.clone(),
                field,
                message,
            };
            if e.api_version.trim().is_empty() {
                return Err(invalid("apiVersion", "is required".into()));
            }
            if e.kind.trim().is_empty() {
                return Err(invalid("kind", "is required".into()));
            }
            if rules
                .iter()
                .any(|r| r.api_version == e.api_version && r.kind == e.kind)
            {
                return Err(invalid(
                    "kind",
                    "another rule is for the same apiVersion and kind; merge them".into(),
                ));
            }
            let compile =
                |field: &'static str, source: &str| -> Result<Compiled, InvalidHealthCheck> {
                    compile_one(source).map_err(|message| invalid(field, message))
                };
            rules.push(Rule {
                api_version: e.api_version.clone(),
                kind: e.kind.clone(),
                current: compile("current", &e.current)?,
                in_progress: e
                    .in_progress
                    .as_deref()
                    .map(|s| compile("inProgress", s))
                    .transpose()?,
                failed: e
                    .failed
                    .as_deref()
                    .map(|s| compile("failed", s))
                    .transpose()?,
            });
        }
        Ok(Self { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The health of `obj` by a custom rule for its `apiVersion` and `kind`, or `None` when no
    /// rule is for it (the built-in rules decide).
    pub fn assess(&self, obj: &Value) -> Option<Health> {
        let api_version = obj["apiVersion"].as_str()?;
        let kind = obj["kind"].as_str()?;
        let rule = self
            .rules
            .iter()
            .find(|r| r.api_version == api_version && r.kind == kind)?;
        if let (Some(generation), Some(observed)) = (
            int(obj, "/metadata/generation"),
            int(obj, "/status/observedGeneration"),
        ) && observed < generation
        {
            return Some(Health::progress(format!(
                "controller has not observed generation {generation} yet (observed {observed})"
            )));
        }
        let longest = longest_list(obj);
        if longest > MAX_LIST_LEN {
            return Some(Health::progress(format!(
                "not evaluated: the object has a list of {longest} items; CEL health checks read objects whose lists have at most {MAX_LIST_LEN}"
            )));
        }
        let context = match context_for(obj) {
            Ok(context) => context,
            Err(message) => return Some(Health::progress(message)),
        };
        let checks = [
            (rule.in_progress.as_ref(), Verdict::InProgress),
            (rule.failed.as_ref(), Verdict::Failed),
            (Some(&rule.current), Verdict::Current),
        ];
        for (compiled, verdict) in checks {
            let Some(compiled) = compiled else {
                continue;
            };
            match evaluate(compiled, &context) {
                Ok(true) => {
                    let said = format!("{} ({})", verdict.field(), compiled.source);
                    return Some(match verdict {
                        Verdict::InProgress => Health::progress(said),
                        Verdict::Failed => Health::failed(said),
                        Verdict::Current => Health::current(),
                    });
                }
                Ok(false) => {}
                Err(message) => {
                    return Some(Health::progress(format!(
                        "{} expression {:?} of the {api_version} {kind} health check: {message}",
                        verdict.field(),
                        compiled.source
                    )));
                }
            }
        }
        Some(Health::progress(format!(
            "no health expression is true yet (current: {})",
            rule.current.source
        )))
    }
}

/// The rules of the apps in `dirs`, from their ferry.yaml `healthCheckExprs` (in order),
/// compiled; a bad rule is an error naming the file.
pub fn from_app_dirs(dirs: &[std::path::PathBuf]) -> crate::Result<CustomHealth> {
    let mut exprs = Vec::new();
    let mut origin = None;
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        if let Some((path, config)) = crate::render::config::AppConfig::load(dir)?
            && !config.health_check_exprs.is_empty()
        {
            exprs.extend(config.health_check_exprs);
            origin.get_or_insert(path);
        }
    }
    CustomHealth::compile(&exprs).map_err(|e| crate::Error::Source {
        path: origin.unwrap_or_default(),
        message: e.to_string(),
    })
}

#[derive(Clone, Copy)]
enum Verdict {
    InProgress,
    Failed,
    Current,
}

impl Verdict {
    fn field(self) -> &'static str {
        match self {
            Self::InProgress => "inProgress",
            Self::Failed => "failed",
            Self::Current => "current",
        }
    }
}

fn compile_one(source: &str) -> Result<Compiled, String> {
    if source.trim().is_empty() {
        return Err("the expression is empty".into());
    }
    if source.len() > MAX_EXPRESSION_LEN {
        return Err(format!(
            "the expression is {} bytes; at most {MAX_EXPRESSION_LEN} are accepted",
            source.len()
        ));
    }
    let (depth, conditionals) = nesting(source);
    if depth > MAX_NESTING || conditionals > MAX_NESTING {
        return Err(format!(
            "the expression nests {depth} brackets deep and has {conditionals} conditionals; at most {MAX_NESTING} of each are accepted"
        ));
    }
    let program = parse_on_a_large_stack(source)?;
    let mut macros = 0;
    check_macros(program.expression(), false, &mut macros)
        .map_err(|why| format!("{source:?}: {why}"))?;
    if macros > MAX_MACROS {
        return Err(format!(
            "{source:?} has {macros} macros (all, exists, exists_one, map, filter); at most {MAX_MACROS} are accepted"
        ));
    }
    Ok(Compiled {
        source: source.to_string(),
        program,
    })
}

/// Stack for parsing: the CEL parser (ANTLR-generated) uses large frames, several per nesting
/// level; an unoptimised build overflows a 2 MiB thread stack at 16 brackets. The memory is
/// only reserved; what the parse touches is what it uses.
const PARSE_STACK: usize = 64 << 20;

/// Parse on a thread of its own with [`PARSE_STACK`], so that an expression at the accepted
/// nesting limit parses on any caller's thread (tokio's workers have 2 MiB).
fn parse_on_a_large_stack(source: &str) -> Result<Program, String> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("cel-parse".into())
            .stack_size(PARSE_STACK)
            .spawn_scoped(scope, || {
                Program::compile(source).map_err(|e| {
                    format!("{source:?} is not valid CEL: {}", one_line(&e.to_string()))
                })
            })
            .map_err(|e| format!("cannot start the CEL parser thread: {e}"))?
            .join()
            .map_err(|_| format!("{source:?}: the CEL parser failed"))?
    })
}

/// Count the comprehensions (macros) and refuse one inside another's body (its condition, step
/// or result): that would multiply their iterations. The range a macro iterates over may be
/// another macro (chaining adds, not multiplies).
fn check_macros(expr: &IdedExpr, in_body: bool, macros: &mut usize) -> Result<(), String> {
    match &expr.expr {
        Expr::Comprehension(c) => {
            *macros += 1;
            if in_body {
                return Err(
                    "a macro (all, exists, exists_one, map, filter) inside another macro's body multiplies their cost and is not accepted; chain them instead"
                        .into(),
                );
            }
            check_macros(&c.iter_range, in_body, macros)?;
            check_macros(&c.accu_init, in_body, macros)?;
            for body in [&c.loop_cond, &c.loop_step, &c.result] {
                check_macros(body, true, macros)?;
            }
            Ok(())
        }
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                check_macros(target, in_body, macros)?;
            }
            call.args
                .iter()
                .try_for_each(|a| check_macros(a, in_body, macros))
        }
        Expr::List(list) => list
            .elements
            .iter()
            .try_for_each(|e| check_macros(e, in_body, macros)),
        Expr::Map(map) => map.entries.iter().try_for_each(|e| match &e.expr {
            EntryExpr::MapEntry(entry) => {
                check_macros(&entry.key, in_body, macros)?;
                check_macros(&entry.value, in_body, macros)
            }
            EntryExpr::StructField(field) => check_macros(&field.value, in_body, macros),
        }),
        Expr::Struct(st) => st.entries.iter().try_for_each(|e| match &e.expr {
            EntryExpr::MapEntry(entry) => {
                check_macros(&entry.key, in_body, macros)?;
                check_macros(&entry.value, in_body, macros)
            }
            EntryExpr::StructField(field) => check_macros(&field.value, in_body, macros),
        }),
        Expr::Select(select) => check_macros(&select.operand, in_body, macros),
        Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => Ok(()),
    }
}

/// The deepest bracket nesting (`(`, `[`, `{`) and the number of `?` outside string literals.
fn nesting(source: &str) -> (usize, usize) {
    let (mut depth, mut deepest, mut conditionals) = (0usize, 0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in source.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            '?' => conditionals += 1,
            _ => {}
        }
    }
    (deepest, conditionals)
}

/// The length of the longest list anywhere in `value`.
fn longest_list(value: &Value) -> usize {
    match value {
        Value::Array(items) => items
            .iter()
            .map(longest_list)
            .max()
            .unwrap_or(0)
            .max(items.len()),
        Value::Object(fields) => fields.values().map(longest_list).max().unwrap_or(0),
        _ => 0,
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The object's top-level fields as variables.
fn context_for(obj: &Value) -> Result<Context<'static, 'static>, String> {
    let mut context = Context::default();
    if let Some(fields) = obj.as_object() {
        for (name, value) in fields {
            context
                .add_variable(name.clone(), value.clone())
                .map_err(|e| format!("cannot read field {name} for CEL: {e}"))?;
        }
    }
    Ok(context)
}

fn evaluate(compiled: &Compiled, context: &Context<'_, '_>) -> Result<bool, String> {
    match compiled.program.execute(context) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("returned {other:?}, not a bool")),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::HealthState;
    use serde_json::json;

    fn database_rule() -> HealthCheckExpr {
        HealthCheckExpr {
            api_version: "db.example.com/v1".into(),
            kind: "Database".into(),
            current: "status.phase == 'Running'".into(),
            in_progress: Some("status.phase in ['Pending', 'Provisioning']".into()),
            failed: Some("status.phase == 'Failed'".into()),
        }
    }

    fn database(status: Value) -> Value {
        json!({"apiVersion": "db.example.com/v1", "kind": "Database",
            "metadata": {"name": "orders", "generation": 1}, "spec": {}, "status": status})
    }

    #[test]
    fn current_in_progress_and_failed_are_decided_by_the_expressions() {
        let health = CustomHealth::compile(&[database_rule()]).unwrap();
        let state = |status| health.assess(&database(status)).map(|h| h.state);
        assert_eq!(
            state(json!({"phase": "Running"})),
            Some(HealthState::Current)
        );
        assert_eq!(
            state(json!({"phase": "Provisioning"})),
            Some(HealthState::InProgress)
        );
        let failed = health
            .assess(&database(json!({"phase": "Failed"})))
            .unwrap();
        assert_eq!(failed.state, HealthState::Failed);
        assert!(
            failed.message.contains("status.phase == 'Failed'"),
            "{failed:?}"
        );
        assert_eq!(
            state(json!({"phase": "Unknown"})),
            Some(HealthState::InProgress),
            "none true: in progress"
        );
        let missing = health.assess(&database(json!({}))).unwrap();
        assert_eq!(
            missing.state,
            HealthState::InProgress,
            "a missing field waits"
        );
        assert!(
            missing.message.contains("inProgress expression"),
            "{missing:?}"
        );
        let behind = json!({"apiVersion": "db.example.com/v1", "kind": "Database",
            "metadata": {"generation": 3}, "status": {"observedGeneration": 2, "phase": "Running"}});
        assert_eq!(
            health.assess(&behind).map(|h| h.state),
            Some(HealthState::InProgress),
            "an unobserved generation is in progress whatever the expressions say"
        );
        let other = json!({"apiVersion": "db.example.com/v2", "kind": "Database"});
        assert!(
            health.assess(&other).is_none(),
            "other versions keep the built-in rule"
        );
    }

    #[test]
    fn in_progress_is_checked_before_failed_and_current() {
        let rule = HealthCheckExpr {
            current: "true".into(),
            in_progress: Some("status.phase == 'Pending'".into()),
            failed: Some("status.phase != 'Running'".into()),
            ..database_rule()
        };
        let health = CustomHealth::compile(&[rule]).unwrap();
        let state = |phase: &str| {
            health
                .assess(&database(json!({ "phase": phase })))
                .map(|h| h.state)
        };
        assert_eq!(state("Pending"), Some(HealthState::InProgress));
        assert_eq!(state("Broken"), Some(HealthState::Failed));
        assert_eq!(state("Running"), Some(HealthState::Current));
    }

    #[test]
    fn conditions_with_has_and_exists() {
        let rule = HealthCheckExpr {
            api_version: "cert-manager.io/v1".into(),
            kind: "Certificate".into(),
            current: "has(status.conditions) && status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')".into(),
            in_progress: None,
            failed: Some("has(status.conditions) && status.conditions.exists(c, c.type == 'Issuing' && c.status == 'False')".into()),
        };
        let health = CustomHealth::compile(&[rule]).unwrap();
        let cert = |conditions: Value| {
            json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                "status": {"conditions": conditions}})
        };
        let state = |c| health.assess(&cert(c)).map(|h| h.state);
        assert_eq!(
            state(json!([{"type": "Ready", "status": "True"}])),
            Some(HealthState::Current)
        );
        assert_eq!(
            state(json!([{"type": "Issuing", "status": "False"}])),
            Some(HealthState::Failed)
        );
        assert_eq!(state(json!([])), Some(HealthState::InProgress));
    }

    #[test]
    fn bad_rules_name_the_expression_the_field_and_the_kind() {
        let err = CustomHealth::compile(&[HealthCheckExpr {
            current: "status.phase == ".into(),
            ..database_rule()
        }])
        .unwrap_err()
        .to_string();
        assert!(err.contains("healthCheckExprs[0]"), "{err}");
        assert!(err.contains("Database"), "{err}");
        assert!(err.contains("current"), "{err}");
        assert!(err.contains("status.phase == "), "{err}");

        let err = CustomHealth::compile(&[HealthCheckExpr {
            failed: Some(String::new()),
            ..database_rule()
        }])
        .unwrap_err();
        assert_eq!(err.field, "failed");

        let long = format!("{} == 1", "a + ".repeat(2000));
        let err = CustomHealth::compile(&[HealthCheckExpr {
            current: long,
            ..database_rule()
        }])
        .unwrap_err();
        assert!(err.message.contains("at most 4096"), "{err}");

        // Deep nesting is refused before the parser could exhaust the stack.
        let deep = format!("{}true{}", "(".repeat(1000), ")".repeat(1000));
        assert!(deep.len() <= MAX_EXPRESSION_LEN);
        let ternaries = format!("{}true", "true ? true : ".repeat(200));
        for hostile in [deep, ternaries] {
            let err = CustomHealth::compile(&[HealthCheckExpr {
                current: hostile,
                ..database_rule()
            }])
            .unwrap_err();
            assert_eq!(err.field, "current");
            assert!(err.message.contains("at most 32"), "{err}");
        }
        assert!(
            CustomHealth::compile(&[HealthCheckExpr {
                current: "status.phase == '((((((((((((((((((((((((((((((((((('".into(),
                ..database_rule()
            }])
            .is_ok(),
            "brackets in a string literal do not count"
        );
        let at_limit = format!("{}true{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        assert!(
            CustomHealth::compile(&[HealthCheckExpr {
                current: at_limit,
                ..database_rule()
            }])
            .is_ok(),
            "the parser copes with the accepted depth"
        );

        // A macro in another's body multiplies: refused; chained macros are fine.
        let nested = "status.items.all(a, status.items.exists(b, a == b))";
        let err = CustomHealth::compile(&[HealthCheckExpr {
            current: nested.into(),
            ..database_rule()
        }])
        .unwrap_err();
        assert!(err.message.contains("inside another macro"), "{err}");
        let chained = "status.items.filter(a, a > 1).all(a, a < 10)";
        assert!(
            CustomHealth::compile(&[HealthCheckExpr {
                current: chained.into(),
                ..database_rule()
            }])
            .is_ok()
        );
        let many = vec!["status.items.all(a, a > 0)"; MAX_MACROS + 1].join(" && ");
        let err = CustomHealth::compile(&[HealthCheckExpr {
            current: many,
            ..database_rule()
        }])
        .unwrap_err();
        assert!(err.message.contains("at most 16"), "{err}");

        let err = CustomHealth::compile(&[database_rule(), database_rule()]).unwrap_err();
        assert_eq!(err.index, 1);
        let too_many: Vec<HealthCheckExpr> = (0..=MAX_RULES)
            .map(|i| HealthCheckExpr {
                kind: format!("K{i}"),
                ..database_rule()
            })
            .collect();
        assert!(CustomHealth::compile(&too_many).is_err());
    }

    #[test]
    fn objects_with_huge_lists_are_not_evaluated() {
        let health = CustomHealth::compile(&[HealthCheckExpr {
            current: "status.items.all(i, i >= 0)".into(),
            in_progress: None,
            failed: None,
            ..database_rule()
        }])
        .unwrap();
        let small: Vec<u32> = (0..10).collect();
        let h = health.assess(&database(json!({"items": small}))).unwrap();
        assert_eq!(h.state, HealthState::Current);
        let huge: Vec<u32> = (0..(MAX_LIST_LEN as u32 + 1)).collect();
        let h = health.assess(&database(json!({"items": huge}))).unwrap();
        assert_eq!(h.state, HealthState::InProgress);
        assert!(h.message.contains("at most 1000"), "{h:?}");
    }

    #[test]
    fn a_non_bool_result_is_reported_not_taken_as_healthy() {
        let health = CustomHealth::compile(&[HealthCheckExpr {
            current: "status.phase".into(),
            in_progress: None,
            failed: None,
            ..database_rule()
        }])
        .unwrap();
        let h = health
            .assess(&database(json!({"phase": "Running"})))
            .unwrap();
        assert_eq!(h.state, HealthState::InProgress);
        assert!(h.message.contains("not a bool"), "{h:?}");
    }
}
