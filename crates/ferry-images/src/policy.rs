//! Tag selection: the filter (regex + `extract` template), then semver / numerical /
//! alphabetical ordering, as Flux's ImagePolicy does it. Pure: the input is a tag list.

use std::cmp::Ordering;

use regex::Regex;
use semver::Version;
use thiserror::Error;

use crate::semver_range::{Range, RangeError, cmp_precedence, parse_version};

#[derive(Debug, Error)]
pub enum PolicyError {
    #[error(transparent)]
    Range(#[from] RangeError),
    #[error("invalid filter pattern {pattern:?}: {source}")]
    Pattern {
        pattern: String,
        #[source]
        source: Box<regex::Error>,
    },
    #[error(
        "extract template {extract:?} names group(s) the pattern {pattern:?} does not have: {missing}"
    )]
    Extract {
        extract: String,
        pattern: String,
        missing: String,
    },
}

/// Sort direction of numerical/alphabetical policies. `Asc` (default, like Flux) picks the
/// highest value, `Desc` the lowest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

#[derive(Debug, Clone)]
pub enum Choice {
    Semver(Range),
    Numerical(Order),
    Alphabetical(Order),
}

#[derive(Debug, Clone)]
pub struct Filter {
    pattern: Regex,
    extract: Option<String>,
}

impl Filter {
    pub fn new(pattern: &str, extract: Option<&str>) -> Result<Self, PolicyError> {
        let regex = Regex::new(pattern).map_err(|source| PolicyError::Pattern {
            pattern: pattern.to_string(),
            source: Box::new(source),
        })?;
        let extract = extract.filter(|e| !e.is_empty()).map(str::to_string);
        if let Some(extract) = &extract {
            let names: Vec<&str> = regex.capture_names().flatten().collect();
            let missing: Vec<String> = template_names(extract)
                .into_iter()
                .filter(|name| {
                    !names.contains(&name.as_str())
                        && name
                            .parse::<usize>()
                            .map_or(true, |n| n >= regex.captures_len())
                })
                .collect();
            if !missing.is_empty() {
                return Err(PolicyError::Extract {
                    extract: extract.clone(),
                    pattern: pattern.to_string(),
                    missing: missing.join(", "),
                });
            }
        }
        Ok(Self {
            pattern: regex,
            extract,
        })
    }

    /// The value to order by, or None when the tag does not match.
    pub fn apply(&self, tag: &str) -> Option<String> {
        let caps = self.pattern.captures(tag)?;
        Some(match &self.extract {
            Some(template) => {
                let mut out = String::new();
                caps.expand(template, &mut out);
                out
            }
            None => tag.to_string(),
        })
    }
}

/// `$name`, `${name}` and `$1` references in an extract template.
fn template_names(template: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = template.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            if bytes.get(i + 1) == Some(&b'$') {
                i += 2;
                continue;
            }
            if bytes.get(i + 1) == Some(&b'{') {
                if let Some(end) = template[i + 2..].find('}') {
                    names.push(template[i + 2..i + 2 + end].to_string());
                    i += end + 3;
                    continue;
                }
            } else {
                let rest = &template[i + 1..];
                let len = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                if len > 0 {
                    names.push(rest[..len].to_string());
                }
                i += 1 + len;
                continue;
            }
        }
        i += 1;
    }
    names
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub choice: Choice,
    pub filter: Option<Filter>,
}

/// The outcome of evaluating a policy over a tag list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The chosen tag (the original tag, not the extracted value).
    pub tag: Option<String>,
    /// Tags left after the filter.
    pub filtered: usize,
    /// Tags after the filter that could not be ordered (not semver / not a number).
    pub unparseable: usize,
}

impl Policy {
    pub fn select<'a, I>(&self, tags: I) -> Selection
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut filtered = 0usize;
        let mut unparseable = 0usize;
        let mut best: Option<(Key, &'a str)> = None;
        for tag in tags {
            let value = match &self.filter {
                Some(filter) => match filter.apply(tag) {
                    Some(v) => v,
                    None => continue,
                },
                None => tag.to_string(),
            };
            filtered += 1;
            let key = match &self.choice {
                Choice::Semver(range) => match parse_version(&value) {
                    Some(v) if range.matches(&v) => Key::Semver(v),
                    Some(_) => continue,
                    None => {
                        unparseable += 1;
                        continue;
                    }
                },
                Choice::Numerical(_) => match value.trim().parse::<f64>() {
                    Ok(n) if n.is_finite() => Key::Number(n),
                    _ => {
                        unparseable += 1;
                        continue;
                    }
                },
                Choice::Alphabetical(_) => Key::Text(value),
            };
            let better = match &best {
                None => true,
                Some((current, current_tag)) => {
                    let ord = key.cmp(current).then_with(|| tag.cmp(current_tag));
                    match self.order() {
                        Order::Asc => ord == Ordering::Greater,
                        Order::Desc => ord == Ordering::Less,
                    }
                }
            };
            if better {
                best = Some((key, tag));
            }
        }
        Selection {
            tag: best.map(|(_, tag)| tag.to_string()),
            filtered,
            unparseable,
        }
    }

    fn order(&self) -> Order {
        match &self.choice {
            Choice::Semver(_) => Order::Asc,
            Choice::Numerical(order) | Choice::Alphabetical(order) => *order,
        }
    }
}

#[derive(Debug, Clone)]
enum Key {
    Semver(Version),
    Number(f64),
    Text(String),
}

impl Key {
    fn cmp(&self, other: &Key) -> Ordering {
        match (self, other) {
            (Key::Semver(a), Key::Semver(b)) => cmp_precedence(a, b),
            (Key::Number(a), Key::Number(b)) => a.total_cmp(b),
            (Key::Text(a), Key::Text(b)) => a.cmp(b),
            _ => Ordering::Equal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn semver(range: &str) -> Policy {
        Policy {
            choice: Choice::Semver(Range::parse(range).unwrap()),
            filter: None,
        }
    }

    #[test]
    fn semver_picks_highest_in_range() {
        let tags = [
            "1.0.0",
            "1.2.0",
            "v1.10.1",
            "2.0.0",
            "1.11.0-rc.1",
            "latest",
            "1.9",
        ];
        let s = semver(">=1.0 <2.0").select(tags);
        assert_eq!(s.tag.as_deref(), Some("v1.10.1"));
        assert_eq!(s.unparseable, 1);
        let s = semver(">=1.0.0-0 <2.0.0-0").select(tags);
        assert_eq!(s.tag.as_deref(), Some("1.11.0-rc.1"));
        let s = semver(">=3").select(tags);
        assert_eq!(s.tag, None);
        assert_eq!(s.filtered, tags.len());
    }

    #[test]
    fn numerical_and_alphabetical_with_extract() {
        let tags = [
            "main-100-abc1234",
            "main-99-fff0000",
            "main-1000-0123abc",
            "feature-5000-aaaaaaa",
            "latest",
        ];
        let filter = Filter::new(r"^main-(?P<ts>\d+)-[a-f0-9]+$", Some("$ts")).unwrap();
        let numerical = Policy {
            choice: Choice::Numerical(Order::Asc),
            filter: Some(filter.clone()),
        };
        let s = numerical.select(tags);
        assert_eq!(s.tag.as_deref(), Some("main-1000-0123abc"));
        assert_eq!(s.filtered, 3);
        let lowest = Policy {
            choice: Choice::Numerical(Order::Desc),
            filter: Some(filter.clone()),
        };
        assert_eq!(lowest.select(tags).tag.as_deref(), Some("main-99-fff0000"));
        // Alphabetically "99" > "1000": the reason numerical exists.
        let alpha = Policy {
            choice: Choice::Alphabetical(Order::Asc),
            filter: Some(filter),
        };
        assert_eq!(alpha.select(tags).tag.as_deref(), Some("main-99-fff0000"));
    }

    #[test]
    fn alphabetical_orders_rfc3339_like_tags() {
        let tags = ["2024-01-02T10-00", "2024-01-10T09-00", "2023-12-31T23-59"];
        let p = Policy {
            choice: Choice::Alphabetical(Order::Asc),
            filter: None,
        };
        assert_eq!(p.select(tags).tag.as_deref(), Some("2024-01-10T09-00"));
    }

    #[test]
    fn bad_filters_are_clear() {
        let e = Filter::new("main-(", None).unwrap_err();
        assert!(e.to_string().contains("main-("), "{e}");
        let e = Filter::new(r"main-(?P<ts>\d+)", Some("$tss")).unwrap_err();
        assert!(e.to_string().contains("tss"), "{e}");
        assert!(Filter::new(r"main-(\d+)", Some("$1")).is_ok());
        assert!(Filter::new(r"main-(?P<ts>\d+)", Some("${ts}")).is_ok());
    }
}
