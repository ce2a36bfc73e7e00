//! Property-based fuzzing of the Flux image-policy marker parser (`markers`, over
//! `yaml_scan`): arbitrary text and mutated marker lines never panic and only ever yield spans
//! inside the text; a marker written in any scalar style round-trips (found with its policy and
//! field, rewritten to the policy's image, found again with the new value, every other byte
//! kept, and the YAML still reads the new value as that string).
//!
//! `cargo test` runs 256 cases per property; longer runs: see docs/fuzzing.md
//! (`PROPTEST_CASES=100000 cargo test -p ferry-images --test fuzz_markers`).

use ferry_images::markers::{self, Change, MarkerField, PolicyRef};
use ferry_images::reference::ImageRef;
use ferry_images::yaml_scan::ScalarStyle;
use proptest::prelude::*;

/// Scan, plan against a fixed image and apply: nothing may panic, spans must be inside the
/// text on character boundaries, and the edit must keep the bytes outside the spans.
fn exercise(text: &str) -> Result<(), TestCaseError> {
    let (found, issues) = markers::scan_markers(text);
    for marker in &found {
        prop_assert!(
            text.get(marker.span.clone()).is_some(),
            "span {:?} outside {:?}",
            marker.span,
            text
        );
        prop_assert!(marker.line >= 1);
    }
    for issue in &issues {
        prop_assert!(issue.line >= 1);
    }
    let image = ImageRef::parse("reg.example/app:2.0.0@sha256:0123").expect("image");
    let (changes, _) = markers::plan_changes(text, |_| Some(Ok(image.clone())));
    let changes: Vec<Change> = changes.into_iter().map(|(_, c)| c).collect();
    let out = markers::apply_changes(text, &changes);
    if let Some(first) = changes.iter().map(|c| c.span.start).min() {
        prop_assert_eq!(&out[..first], &text[..first]);
    } else {
        prop_assert_eq!(&out, text);
    }
    Ok(())
}

/// OCI tags (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`), biased to spellings a YAML reader may take
/// for something other than a string.
fn tag() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => proptest::sample::select(&[
            "1.0", "1.10", "1", "01", "1e3", "1e-3", "1E-3", "1.5e-3", "1_000", "0b1", "0o7",
            "0x1F", "inf", "Infinity", "nan", "NaN", "yes", "no", "on", "off", "y", "n", "true",
            "False", "null", "Null", "latest", "v1.2.3", "1.2.3-rc.1", "_x", "1.", "1.e1",
            "12", "0", "00", "9223372036854775808",
        ][..]).prop_map(str::to_string),
        3 => "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}",
    ]
}

fn repository() -> impl Strategy<Value = String> {
    // Valid references only (the one grammar, ferry_engine::render::image_ref): ports 10-9999,
    // path components separated by `.`, `_` or `-`.
    "[a-z0-9]{1,8}(\\.[a-z]{2,4})?(:[1-9][0-9]{1,3})?/[a-z0-9]{1,8}(/[a-z0-9]{1,4}([._-][a-z0-9]{1,3})?)?"
        .prop_filter("no empty path component", |r| {
            !r.contains("//") && !r.ends_with('/')
        })
}

fn dns_label() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9-]{0,10}"
}

fn field() -> impl Strategy<Value = Option<MarkerField>> {
    prop_oneof![
        Just(None),
        Just(Some(MarkerField::Tag)),
        Just(Some(MarkerField::Name)),
        Just(Some(MarkerField::Digest)),
    ]
}

fn style() -> impl Strategy<Value = ScalarStyle> {
    prop_oneof![
        Just(ScalarStyle::Plain),
        Just(ScalarStyle::SingleQuoted),
        Just(ScalarStyle::DoubleQuoted),
    ]
}

fn suffix(field: Option<MarkerField>) -> &'static str {
    match field {
        None | Some(MarkerField::Image) => "",
        Some(MarkerField::Tag) => ":tag",
        Some(MarkerField::Name) => ":name",
        Some(MarkerField::Digest) => ":digest",
    }
}

fn written(value: &str, style: ScalarStyle) -> String {
    match style {
        ScalarStyle::Plain => value.to_string(),
        ScalarStyle::SingleQuoted => format!("'{}'", value.replace('\'', "''")),
        ScalarStyle::DoubleQuoted => {
            format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        // `prop_assume!` only skips rare degenerate cases; never abort a long run on them.
        max_global_rejects: u32::MAX,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        exercise(&text)?;
    }

    #[test]
    fn arbitrary_marker_like_lines_never_panic(
        key in "[a-z ]{0,6}",
        value in any::<String>(),
        comment in any::<String>(),
        quote in proptest::sample::select(&["", "'", "\"", "[", "{", "|", ">", "- "][..]),
    ) {
        let text = format!(
            "a:\n  {key}: {quote}{value} # {{\"$imagepolicy\": \"{comment}\"}}\n  {key} # $imagepolicy {value}\n"
        );
        exercise(&text)?;
    }

    #[test]
    fn mutated_marker_files_never_panic(
        repo in repository(),
        tag in tag(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<char>()), 1..5),
    ) {
        let mut text = format!(
            "spec:\n  containers:\n    - name: app\n      image: \"{repo}:{tag}\" # {{\"$imagepolicy\": \"ns:app\"}}\n    - image: {repo}:{tag} # {{\"$imagepolicy\": \"ns:app:tag\"}}\n"
        );
        for (pos, op, c) in edits {
            let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
            let i = boundaries[pos.index(boundaries.len())];
            let next = text[i..].chars().next().map_or(i, |ch| i + ch.len_utf8());
            match op {
                0 => text.insert(i, c),
                1 => text.replace_range(i..next, ""),
                _ => text.replace_range(i..next, &c.to_string()),
            }
        }
        exercise(&text)?;
    }

    /// A marker in any style round-trips: found, rewritten, found again with the new value,
    /// and the YAML reads the new value as exactly that string.
    #[test]
    fn marker_round_trips(
        repo in repository(),
        old_tag in tag(),
        new_tag in tag(),
        field in field(),
        style in style(),
        namespace in proptest::option::of(dns_label()),
        policy in dns_label(),
        indent in 0usize..3,
    ) {
        // Two parts are always `namespace:policy` (as in Flux), so a field suffix needs the
        // namespace.
        let field = if namespace.is_some() { field } else { None };
        let old = ImageRef::parse(&format!("{repo}:{old_tag}")).expect("old image");
        let digest = matches!(field, Some(MarkerField::Digest)).then(|| "sha256:abc123".to_string());
        let new = ImageRef { repository: format!("{repo}-next"), tag: Some(new_tag), digest };
        let field_kind = field.unwrap_or(MarkerField::Image);
        let current = match field_kind {
            MarkerField::Digest => "sha256:000".to_string(),
            other => markers::value_for(other, &old).expect("value"),
        };
        let setter = match &namespace {
            Some(ns) => format!("{ns}:{policy}{}", suffix(field)),
            None => format!("{policy}{}", suffix(field)),
        };
        let pad = "  ".repeat(indent);
        let text = format!(
            "# header\nroot:\n{pad}  before: x # a comment\n{pad}  value: {} # {{\"$imagepolicy\": \"{setter}\"}}\n{pad}  after: y\n",
            written(&current, style)
        );
        let (found, issues) = markers::scan_markers(&text);
        prop_assert!(issues.is_empty(), "{:?}\n{}", issues, text);
        prop_assert_eq!(found.len(), 1, "{}", text);
        let marker = &found[0];
        prop_assert_eq!(&marker.policy, &PolicyRef { namespace: namespace.clone(), name: policy.clone() });
        prop_assert_eq!(marker.field, field_kind);
        prop_assert_eq!(&marker.current, &current);
        prop_assert_eq!(marker.line, 4);

        let (changes, issues) = markers::plan_changes(&text, |_| Some(Ok(new.clone())));
        prop_assert!(issues.is_empty(), "{:?}", issues);
        let expected = markers::value_for(field_kind, &new).expect("value");
        let changes: Vec<Change> = changes.into_iter().map(|(_, c)| c).collect();
        let out = markers::apply_changes(&text, &changes);
        let (again, _) = markers::scan_markers(&out);
        prop_assert_eq!(again.len(), 1, "{}", out);
        prop_assert_eq!(&again[0].current, &expected, "{}", out);
        prop_assert_eq!(&again[0].policy, &marker.policy);
        // Every other line is byte-for-byte the same.
        let (a, b): (Vec<&str>, Vec<&str>) = (text.lines().collect(), out.lines().collect());
        prop_assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            if i != 3 {
                prop_assert_eq!(x, y);
            }
        }
        prop_assert!(b[3].ends_with(&format!("# {{\"$imagepolicy\": \"{setter}\"}}")), "{}", b[3]);
        // A YAML reader sees a value ferry wrote as that very string (not a number or a
        // boolean). (An unchanged value is the test's own writing, not ferry's.)
        prop_assume!(!changes.is_empty());
        let doc: serde_json::Value = serde_saphyr::from_str(&out).expect("still YAML");
        prop_assert_eq!(&doc["root"]["value"], &serde_json::Value::String(expected), "{}", out);
    }
}
