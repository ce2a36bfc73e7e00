//! Render safety, one test per case: path escapes (`../`, symlinks) for values files, charts and
//! plain trees; size limits; YAML alias bombs; chart-archive decompression bombs and links;
//! a hanging renderer killed at its timeout; renderer stderr with decrypted values redacted.

mod render_support;

use std::io::Write;
use std::time::{Duration, Instant};

use render_support::{Age, Tree};

fn chart(t: &Tree, dir: &str) {
    t.write(
        &format!("{dir}/Chart.yaml"),
        "apiVersion: v2\nname: c\nversion: 0.1.0\n",
    );
    t.write(
        &format!("{dir}/templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {v: {{ .Values.v | default \"x\" | quote }}}\n",
    );
}

#[test]
fn values_file_climbing_out_of_the_root_is_refused() {
    let t = Tree::new();
    chart(&t, "app/chart");
    t.write(
        "app/ferry.yaml",
        "helm:\n  chart: {path: chart}\n  valuesFiles: [../../../../../../../../etc/passwd]\n",
    );
    let err = t.render_err("app");
    assert!(err.contains("refused"), "{err}");
    assert!(
        err.contains("app/ferry.yaml") || err.contains("ferry.yaml"),
        "{err}"
    );
    assert!(err.contains("values file"), "{err}");
    assert!(err.contains("source root"), "{err}");
}

#[test]
fn absolute_values_path_is_refused() {
    let t = Tree::new();
    chart(&t, "app/chart");
    t.write(
        "app/ferry.yaml",
        "helm:\n  chart: {path: chart}\n  valuesFiles: [/etc/hostname]\n",
    );
    let err = t.render_err("app");
    assert!(err.contains("absolute path"), "{err}");
}

#[test]
fn values_file_symlink_leaving_the_root_is_refused() {
    let t = Tree::new();
    chart(&t, "app/chart");
    std::os::unix::fs::symlink("/etc/passwd", t.path("app/values.yaml")).expect("symlink");
    t.write(
        "app/ferry.yaml",
        "helm:\n  chart: {path: chart}\n  valuesFiles: [values.yaml]\n",
    );
    let err = t.render_err("app");
    assert!(err.contains("symlink"), "{err}");
    assert!(err.contains("values.yaml"), "{err}");
}

#[test]
fn chart_path_symlink_leaving_the_root_is_refused() {
    let outside = tempfile::tempdir().expect("tempdir");
    let t2 = Tree::new();
    chart(&t2, "real");
    let t = Tree::new();
    std::fs::create_dir_all(t.path("app")).expect("mkdir");
    std::os::unix::fs::symlink(t2.path("real"), t.path("app/chart")).expect("symlink");
    t.write("app/ferry.yaml", "helm:\n  chart: {path: chart}\n");
    let err = t.render_err("app");
    assert!(err.contains("symlink") && err.contains("chart"), "{err}");
    drop(outside);
}

#[test]
fn symlink_inside_a_chart_leaving_the_root_is_refused() {
    let t = Tree::new();
    chart(&t, "chart");
    std::os::unix::fs::symlink("/etc/passwd", t.path("chart/templates/passwd.yaml"))
        .expect("symlink");
    let err = t.render_err("chart");
    assert!(err.contains("chart/templates/passwd.yaml"), "{err}");
    assert!(err.contains("outside the source root"), "{err}");
}

#[test]
fn symlink_in_a_plain_tree_leaving_the_root_is_refused() {
    let t = Tree::new();
    t.write(
        "app/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
    );
    std::os::unix::fs::symlink("../../../../../../../../etc", t.path("app/etc")).expect("symlink");
    let err = t.render_err("app");
    assert!(err.contains("app/etc"), "{err}");
}

#[test]
fn per_file_and_total_size_limits() {
    let t = Tree::new();
    let big = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata: {{v: \"{}\"}}\n",
        "x".repeat(2000)
    );
    t.write("app/big.yaml", &big);
    t.write("app/ferry.yaml", "limits: {maxFileBytes: 1000}\n");
    let err = t.render_err("app");
    assert!(err.contains("app/big.yaml"), "{err}");
    assert!(err.contains("per-file limit of 1000"), "{err}");

    let t = Tree::new();
    for i in 0..4 {
        t.write(
            &format!("app/cm{i}.yaml"),
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}}}\ndata: {{v: \"{}\"}}\n",
                "y".repeat(500)
            ),
        );
    }
    t.write("app/ferry.yaml", "limits: {maxTotalBytes: 1500}\n");
    let err = t.render_err("app");
    assert!(err.contains("total more than 1500 bytes"), "{err}");
    assert!(err.contains("maxTotalBytes"), "{err}");
}

const BILLION_LAUGHS: &str = r#"a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"#;

#[test]
fn yaml_alias_bombs_are_refused() {
    // In ferry.yaml (under a key that accepts any value).
    let t = Tree::new();
    chart(&t, "app/chart");
    let indented: String = BILLION_LAUGHS
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect();
    t.write(
        "app/ferry.yaml",
        &format!("helm:\n  chart: {{path: chart}}\n  values:\n{indented}"),
    );
    let started = Instant::now();
    let err = t.render_err("app");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.contains("ferry.yaml"), "{err}");
    assert!(err.contains("budget") || err.contains("alias"), "{err}");

    // In a plain manifest.
    let t = Tree::new();
    let indented: String = BILLION_LAUGHS.lines().map(|l| format!("  {l}\n")).collect();
    t.write(
        "app/cm.yaml",
        &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bomb}}\ndata:\n{indented}"),
    );
    let started = Instant::now();
    let err = t.render_err("app");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.contains("cm.yaml"), "{err}");
    assert!(err.contains("budget") || err.contains("alias"), "{err}");

    // In a vars file.
    let t = Tree::new();
    t.write(
        "app/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    );
    t.write("app/vars.yaml", BILLION_LAUGHS);
    t.write("app/ferry.yaml", "substituteFrom: [vars.yaml]\n");
    let err = t.render_err("app");
    assert!(err.contains("vars.yaml"), "{err}");
    assert!(err.contains("budget") || err.contains("alias"), "{err}");
}

/// A gzip'd tar with `entries` (name, size of zeros) and optional symlink entries.
fn tarball(path: &std::path::Path, entries: &[(&str, u64)], links: &[(&str, &str)]) {
    let file = std::fs::File::create(path).expect("create");
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::best());
    let mut builder = tar::Builder::new(gz);
    for (name, size) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(*size);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, name, std::io::repeat(0).take_exact(*size))
            .expect("append");
    }
    for (name, target) in links {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        builder
            .append_link(&mut header, name, target)
            .expect("link");
    }
    let gz = builder.into_inner().expect("tar");
    gz.finish().expect("gzip").flush().expect("flush");
}

trait TakeExact: std::io::Read + Sized {
    fn take_exact(self, n: u64) -> std::io::Take<Self> {
        self.take(n)
    }
}
impl<R: std::io::Read> TakeExact for R {}

#[test]
fn chart_archive_decompression_bomb_is_refused() {
    let t = Tree::new();
    std::fs::create_dir_all(t.path("app")).expect("mkdir");
    tarball(
        &t.path("app/bomb-0.1.0.tgz"),
        &[
            ("bomb/Chart.yaml", 0),
            ("bomb/templates/zeros.yaml", 8 * 1024 * 1024),
        ],
        &[],
    );
    let compressed = std::fs::metadata(t.path("app/bomb-0.1.0.tgz"))
        .expect("meta")
        .len();
    assert!(compressed < 100 * 1024, "compresses well: {compressed}");
    t.write(
        "app/ferry.yaml",
        "helm:\n  chart: {path: bomb-0.1.0.tgz}\nlimits: {maxChartBytes: 1048576}\n",
    );
    let err = t.render_err("app");
    assert!(err.contains("bomb-0.1.0.tgz"), "{err}");
    assert!(err.contains("decompression bomb"), "{err}");
}

#[test]
fn chart_archive_with_links_is_refused() {
    let t = Tree::new();
    std::fs::create_dir_all(t.path("app")).expect("mkdir");
    tarball(
        &t.path("app/linky-0.1.0.tgz"),
        &[("linky/Chart.yaml", 10)],
        &[("linky/templates/x.yaml", "/etc/passwd")],
    );
    t.write(
        "app/ferry.yaml",
        "helm:\n  chart: {path: linky-0.1.0.tgz}\n",
    );
    let err = t.render_err("app");
    assert!(err.contains("is a link"), "{err}");
}

#[test]
fn hanging_renderer_is_killed_at_the_timeout() {
    let t = Tree::new();
    t.write(
        "app/kustomization.yaml",
        "configMapGenerator:\n  - name: c\n    files: [data.txt]\n",
    );
    // A FIFO nobody writes to: kustomize blocks reading it, forever.
    let fifo = std::ffi::CString::new(t.path("app/data.txt").display().to_string()).expect("path");
    // SAFETY: mkfifo with a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo");
    t.write("app/ferry.yaml", "limits: {timeoutSeconds: 2}\n");
    let started = Instant::now();
    let err = t.render_err("app");
    let elapsed = started.elapsed();
    assert!(err.contains("did not finish within 2s"), "{err}");
    assert!(
        err.contains("timeoutSeconds") || err.contains("timeout"),
        "{err}"
    );
    assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
}

#[test]
fn renderer_stderr_is_shown_with_decrypted_values_redacted() {
    let t = Tree::new();
    let age = Age::new(&t.env);
    t.write(
        "app/chart/Chart.yaml",
        "apiVersion: v2\nname: leaky\nversion: 0.1.0\n",
    );
    t.write(
        "app/chart/templates/fail.yaml",
        "{{ fail (printf \"cannot connect with password %s (b64 %s)\" .Values.db.password (.Values.db.password | b64enc)) }}\n",
    );
    let secrets = t.write(
        "app/secrets.enc.yaml",
        "db:\n  password: hunter2-very-secret\n",
    );
    age.encrypt(&t.env, &secrets, None);
    t.write(
        "app/ferry.yaml",
        "helm:\n  chart: {path: chart}\n  valuesFiles: [secrets.enc.yaml]\n",
    );
    let mut req = t.request("app");
    req.age_keys = Some(age.keys());
    let err = ferry_engine::render::render(&req).unwrap_err().to_string();
    assert!(
        err.contains("cannot connect with password"),
        "stderr shown: {err}"
    );
    assert!(err.contains("[REDACTED]"), "{err}");
    assert!(
        !err.contains("hunter2-very-secret"),
        "plaintext leaked: {err}"
    );
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode("hunter2-very-secret");
    assert!(!err.contains(&b64), "base64 plaintext leaked: {err}");
}

#[test]
fn cli_given_values_outside_the_root_are_allowed() {
    // The operator's own flags are trusted; only repository content is confined.
    let t = Tree::new();
    chart(&t, "chart");
    let outside = tempfile::tempdir().expect("tempdir");
    let values = outside.path().join("ci.yaml");
    std::fs::write(&values, "v: from-ci\n").expect("write");
    let mut req = t.request("chart");
    req.overrides.values_files.push(values);
    let manifests = ferry_engine::render::render(&req).expect("render");
    let cm = render_support::json(render_support::find(&manifests, "ConfigMap", "c"));
    assert_eq!(cm["data"]["v"], "from-ci");
}
