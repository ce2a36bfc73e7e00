//! `.sops.yaml` creation rules: which age recipients and selectors a new file is encrypted
//! with. Only the fields ferry can honour are read (`path_regex`, `age`, the four selectors,
//! `mac_only_encrypted`); a matching rule without age recipients is an error that says so.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{EncryptOptions, Selectors};
use crate::{Error, Result};

/// The config file name `sops` looks for, walking up from the working directory.
pub const CONFIG_FILE: &str = ".sops.yaml";

#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    creation_rules: Vec<CreationRule>,
}

#[derive(Debug, Default, Deserialize)]
struct CreationRule {
    #[serde(default)]
    path_regex: Option<String>,
    /// Comma-separated string or a list, as SOPS accepts.
    #[serde(default)]
    age: Option<AgeField>,
    #[serde(default)]
    unencrypted_suffix: Option<String>,
    #[serde(default)]
    encrypted_suffix: Option<String>,
    #[serde(default)]
    unencrypted_regex: Option<String>,
    #[serde(default)]
    encrypted_regex: Option<String>,
    #[serde(default)]
    mac_only_encrypted: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum AgeField {
    One(String),
    Many(Vec<String>),
}

impl AgeField {
    fn recipients(&self) -> Vec<String> {
        let split = |s: &str| -> Vec<String> {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        match self {
            AgeField::One(s) => split(s),
            AgeField::Many(list) => list.iter().flat_map(|s| split(s)).collect(),
        }
    }
}

/// Find `.sops.yaml` in `start` or its ancestors.
pub fn find_config(start: &Path) -> Option<PathBuf> {
    let mut dir = Some(start);
    while let Some(d) = dir {
        let candidate = d.join(CONFIG_FILE);
        if candidate.is_file() {
            return Some(candidate);
        }
        dir = d.parent();
    }
    None
}

/// Options for encrypting `file` from the first creation rule in `config` whose `path_regex`
/// matches the file's path (relative to the config's directory, or as given), as `sops` does.
pub fn options_for(config: &Path, file: &Path) -> Result<EncryptOptions> {
    let bad = |message: String| Error::Source {
        path: config.to_path_buf(),
        message,
    };
    let text = std::fs::read(config).map_err(|e| bad(format!("cannot read: {e}")))?;
    let parsed: ConfigFile =
        serde_saphyr::from_slice(&text).map_err(|e| bad(format!("not a valid .sops.yaml: {e}")))?;
    let base = config.parent().unwrap_or(Path::new("."));
    let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let relative = absolute
        .strip_prefix(std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf()))
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| file.to_path_buf());
    for (index, rule) in parsed.creation_rules.iter().enumerate() {
        let matches = match &rule.path_regex {
            None => true,
            Some(re) => {
                let re = regex::Regex::new(re).map_err(|e| {
                    bad(format!(
                        "creation_rules[{index}].path_regex is not a valid regex: {e}"
                    ))
                })?;
                re.is_match(&relative.to_string_lossy()) || re.is_match(&file.to_string_lossy())
            }
        };
        if !matches {
            continue;
        }
        let recipients = rule
            .age
            .as_ref()
            .map(AgeField::recipients)
            .unwrap_or_default();
        if recipients.is_empty() {
            return Err(bad(format!(
                "creation_rules[{index}] matches {} but has no age recipients; ferry encrypts \
                 with age only — add `age: age1…`",
                file.display()
            )));
        }
        let selectors = Selectors {
            unencrypted_suffix: rule.unencrypted_suffix.clone(),
            encrypted_suffix: rule.encrypted_suffix.clone(),
            unencrypted_regex: rule.unencrypted_regex.clone(),
            encrypted_regex: rule.encrypted_regex.clone(),
            mac_only_encrypted: rule.mac_only_encrypted.unwrap_or(false),
        };
        return EncryptOptions::new(recipients, selectors)
            .map_err(|m| bad(format!("creation_rules[{index}]: {m}")));
    }
    Err(bad(format!(
        "no creation rule matches {}; add one with a matching path_regex, or pass --age",
        file.display()
    )))
}
