//! The documented pull-request comment one-liner of docs/ci.md (`ferry diff -o markdown`, then
//! `jq | curl` to Gitea's issue comments API), run by `sh` against the real testenv cluster and
//! the real Gitea of the test environment: the pull request gets the diff as its comment, and
//! the Secret's value in the app stays out of it.

use std::process::Command;

use ferry_testsupport::{TestEnv, TestNamespace, unique_name};
use serde_json::{Value, json};

const CM: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  color: blue\n";
const SECRET_VALUE: &str = "pr-comment-s3cr3t";

/// The admin of the testenv Gitea: a token for the one-liner and a repository with a pull
/// request, made through Gitea's API. Returns (token, "owner/repo", pull request number).
async fn pull_request(env: &TestEnv, http: &reqwest::Client) -> (String, String, u64) {
    let base = env.var("FERRY_FORGE_URL");
    let admin = env.var("FERRY_FORGE_USER");
    let password = env.var("FERRY_FORGE_PASSWORD");
    let post = |path: String, body: Value| {
        http.post(format!("{base}/api/v1{path}"))
            .basic_auth(&admin, Some(&password))
            .json(&body)
            .send()
    };
    let answer = |what: &'static str| {
        move |r: reqwest::Result<reqwest::Response>| async move {
            let r = r.unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(r.status().is_success(), "{what}: {}", r.status());
            r.json::<Value>()
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"))
        }
    };
    let token = answer("create token")(
        post(
            format!("/users/{admin}/tokens"),
            json!({"name": unique_name("pr-comment"), "scopes": ["write:issue", "write:repository"]}),
        )
        .await,
    )
    .await;
    let token = token["sha1"].as_str().expect("token").to_string();
    let repo = unique_name("pr-comment");
    answer("create repo")(
        post(
            "/user/repos".to_string(),
            json!({"name": repo, "auto_init": true, "default_branch": "main"}),
        )
        .await,
    )
    .await;
    let content =
        serde_json::to_value(k8s_openapi::ByteString(CM.as_bytes().to_vec())).expect("base64");
    answer("commit on a branch")(
        post(
            format!("/repos/{admin}/{repo}/contents/deploy/cm.yaml"),
            json!({"content": content, "message": "blue settings", "branch": "main", "new_branch": "feature"}),
        )
        .await,
    )
    .await;
    let pr = answer("open pull request")(
        post(
            format!("/repos/{admin}/{repo}/pulls"),
            json!({"head": "feature", "base": "main", "title": "blue settings"}),
        )
        .await,
    )
    .await;
    let number = pr["number"].as_u64().expect("pull request number");
    (token, format!("{admin}/{repo}"), number)
}

#[tokio::test]
async fn diff_markdown_lands_as_a_gitea_pull_request_comment() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "pr-comment").await;
    let http = reqwest::Client::new();
    let (token, repo, number) = pull_request(&env, &http).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = dir.path().join("deploy");
    std::fs::create_dir(&app).expect("mkdir");
    std::fs::write(app.join("cm.yaml"), CM).expect("write");
    std::fs::write(
        app.join("secret.yaml"),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: token\nstringData:\n  token: {SECRET_VALUE}\n"
        ),
    )
    .expect("write");

    // The lines of docs/ci.md (Jenkins section), with this test's namespace and repository.
    let script = format!(
        r#"set -e
ferry diff deploy/ --app shop -n {ns} --prune -o markdown > diff.md || [ $? -eq 1 ]
jq -Rs '{{body: .}}' diff.md | curl -sf -H "Authorization: token $GITEA_TOKEN" \
  -H 'Content-Type: application/json' -d @- "$GITEA_URL/api/v1/repos/{repo}/issues/$CHANGE_ID/comments" > /dev/null
"#,
        ns = ns.name
    );
    let ferry_dir = std::path::Path::new(env!("CARGO_BIN_EXE_ferry"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        ferry_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        .env("KUBECONFIG", env.kubeconfig())
        .env("NO_COLOR", "1")
        .env("GITEA_URL", env.var("FERRY_FORGE_URL"))
        .env("GITEA_TOKEN", &token)
        .env("CHANGE_ID", number.to_string())
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "the one-liner failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let markdown = std::fs::read_to_string(dir.path().join("diff.md")).expect("diff.md");
    assert!(
        markdown.contains("ConfigMap") && markdown.contains("settings"),
        "{markdown}"
    );

    let comments: Vec<Value> = http
        .get(format!(
            "{}/api/v1/repos/{repo}/issues/{number}/comments",
            env.var("FERRY_FORGE_URL")
        ))
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .expect("read comments")
        .json()
        .await
        .expect("comments json");
    assert_eq!(comments.len(), 1, "{comments:?}");
    let body = comments[0]["body"].as_str().expect("comment body");
    assert_eq!(body.trim_end(), markdown.trim_end());
    assert!(
        !body.contains(SECRET_VALUE) && !markdown.contains(SECRET_VALUE),
        "the Secret's value leaked into the comment: {body}"
    );
}
