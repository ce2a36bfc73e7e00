//! deploy/monitoring/ against the real agent: the Grafana dashboard is valid JSON and the
//! Prometheus rules valid YAML, and every metric their PromQL names is one the agent's
//! `/metrics` (scraped over HTTP from a running agent that has reconciled a Release) exports;
//! and that scrape carries the per-object info, build info, process and request metrics.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use ferry_api::{GitSource, Release};
use ferry_testsupport::{TestEnv, TestNamespace};

fn monitoring_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/monitoring")
}

/// Every sample name the exposition can carry: the names of the samples present, and from
/// each `# TYPE` line the names its type produces (a counter family with no series yet still
/// declares `<name>_total`).
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// PromQL words that are not metric names.
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "rate",
    "irate",
    "increase",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "histogram_quantile",
    "topk",
    "bottomk",
    "absent",
    "vector",
    "le",
    "inf",
    "nan",
];

/// The metric names a PromQL expression reads: identifiers outside label matchers, grouping
/// lists, strings and range selectors, that are neither functions nor keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut cleaned = String::new();
    let mut depth_braces = 0;
    let mut in_string = false;
    let mut in_range = false;
    for c in expr.chars() {
        match c {
            '"' if depth_braces == 0 => in_string = !in_string,
            _ if in_string => {}
            '{' => depth_braces += 1,
            '}' => depth_braces -= 1,
            '[' => in_range = true,
            ']' => in_range = false,
            _ if depth_braces > 0 || in_range => {}
            c => cleaned.push(c),
        }
        if depth_braces > 0 || in_range || in_string {
            cleaned.push(' ');
        }
    }
    // Grouping lists: `by (a, b)`, `on (instance)`, `group_left (version)`.
    let grouping =
        regex::Regex::new(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
            .expect("regex");
    let cleaned = grouping.replace_all(&cleaned, " ");
    // Numbers, including `1.5e9`, whose `e9` would read as a name.
    let number = regex::Regex::new(r"\b\d+(\.\d+)?([eE][+-]?\d+)?\b").expect("regex");
    let cleaned = number.replace_all(&cleaned, " ");
    let word = regex::Regex::new(r"[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?").expect("regex");
    word.captures_iter(&cleaned)
        .filter(|c| c.get(1).is_none())
        .map(|c| c[0].trim().to_string())
        .filter(|w| !PROMQL_WORDS.contains(&w.to_lowercase().as_str()))
        .filter(|w| !w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .collect()
}

fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(monitoring_dir().join("grafana-dashboard.json"))
        .expect("deploy/monitoring/grafana-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "ferry-agent");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut queries = Vec::new();
    for panel in panels {
        let targets = panel["targets"]
            .as_array()
            .expect("every panel has targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for t in targets {
            queries.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if let Some(q) = variable["query"]["query"].as_str() {
            // label_values(metric, label)
            if let Some(inner) = q.strip_prefix("label_values(") {
                queries.push(inner.split(',').next().unwrap_or_default().to_string());
            }
        }
    }
    queries
}

fn rule_queries() -> Vec<String> {
    let text = std::fs::read_to_string(monitoring_dir().join("prometheus-rules.yaml"))
        .expect("deploy/monitoring/prometheus-rules.yaml");
    let rules: serde_json::Value = serde_saphyr::from_str(&text).expect("the rules are YAML");
    let mut queries = Vec::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            assert!(rule["alert"].as_str().is_some(), "{rule}");
            assert!(rule["labels"]["severity"].as_str().is_some(), "{rule}");
            assert!(rule["annotations"]["summary"].as_str().is_some(), "{rule}");
            queries.push(rule["expr"].as_str().expect("expr").to_string());
        }
    }
    assert!(queries.len() >= 6, "{} alerts", queries.len());
    queries
}

#[test]
fn promql_metric_names_are_found() {
    let names = metric_names(
        "sum by (le, controller) (rate(ferry_x_bucket{kind=\"Release\",a=~\"b|c\"}[5m])) / on (instance) group_left (version) ferry_build_info > 0.5",
    );
    assert_eq!(
        names,
        ["ferry_build_info", "ferry_x_bucket"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_and_alerts_use_only_metrics_the_real_agent_exports() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "monitoring").await;
    let repo = Repo::create(&env, &ns.name);
    let sha = repo.commit(
        &[("app/a.yaml", Some(&configmap_yaml("a", "one")))],
        "first",
    );
    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1h"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release("app", "repo", "app", serde_json::json!({})),
    )
    .await;
    wait_release_applied(&client, &ns.name, "app", &sha, Duration::from_secs(60)).await;
    // A Release whose path is missing fails to render: the failure metrics get their series
    // (prometheus-client leaves a family without series out of the exposition).
    create::<Release>(
        &client,
        &ns.name,
        release("broken", "repo", "missing", serde_json::json!({})),
    )
    .await;
    wait_release_reason(
        &client,
        &ns.name,
        "broken",
        "RenderFailed",
        Duration::from_secs(60),
    )
    .await;
    // One unauthorised webhook, so the HTTP metric has a series with a code.
    let (status, _) = http(
        agent.http_addr,
        "POST",
        &format!("/hook/{}/nope", ns.name),
        &[],
        b"{}",
    )
    .await;
    assert_eq!(status, 401);
    // One deploy request without a token, so the deploy metric has a series.
    let (status, _) = http(
        agent.http_addr,
        "POST",
        &format!("/deploy/v1/{}/app", ns.name),
        &[("Content-Type", "application/json".into())],
        br#"{"revision":"0000000000000000000000000000000000000000"}"#,
    )
    .await;
    assert_eq!(status, 401);

    let (status, text) = http(agent.metrics_addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200);
    let info = format!(
        "ferry_resource_info{{kind=\"Release\",namespace=\"{}\",name=\"app\",ready=\"True\",suspended=\"false\",revision=\"main@sha1:{sha}\"}} 1",
        ns.name
    );
    assert!(text.contains(&info), "missing {info} in\n{text}");
    let broken = format!(
        "ferry_resource_info{{kind=\"Release\",namespace=\"{}\",name=\"broken\",ready=\"False\",suspended=\"false\",revision=\"\"}} 1",
        ns.name
    );
    assert!(text.contains(&broken), "missing {broken} in\n{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("ferry_resource_info{kind=\"GitSource\"")
                && l.contains("name=\"repo\",ready=\"True\"")
                && l.contains(&sha)),
        "{text}"
    );
    assert!(text.contains(&format!(
        "ferry_build_info{{version=\"{}\"",
        env!("CARGO_PKG_VERSION")
    )));
    let hook_refusal = "ferry_http_requests_total{route=\"/hook/{namespace}/{name}\",method=\"POST\",code=\"401\"} 1";
    assert!(text.contains(hook_refusal), "missing {hook_refusal}");
    assert!(
        text.lines().any(|l| l.starts_with(
            "ferry_api_requests_total{operation=\"read\",method=\"GET\",code=\"200\"}"
        )),
        "{text}"
    );
    let rss: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .expect("process_resident_memory_bytes");
    assert!(rss > 1e6, "{rss}");

    let exported = exported_names(&text);
    let mut missing = Vec::new();
    for query in dashboard_queries().into_iter().chain(rule_queries()) {
        let names = metric_names(&query);
        assert!(!names.is_empty(), "no metric in {query}");
        for name in names {
            if !exported.contains(&name) {
                missing.push(format!("{name} (in {query})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not exported by the agent: {missing:#?}"
    );
    agent.stop().await.expect("agent stops");
}
