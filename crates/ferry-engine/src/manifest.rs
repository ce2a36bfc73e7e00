//! The unit that flows through the pipeline: one Kubernetes object plus where it came from.

use std::fmt;
use std::path::PathBuf;

use kube::api::DynamicObject;
use serde::{Deserialize, Serialize};

/// Where a rendered object came from, so errors can name the file and document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Path relative to the source root (or `-` for stdin, or the renderer's name).
    pub file: PathBuf,
    /// Zero-based index of the YAML document within the file.
    pub document: usize,
    /// One-based line where the document starts, when known.
    pub line: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        match self.line {
            Some(line) => write!(f, ":{line} (document {})", self.document + 1),
            None => write!(f, " (document {})", self.document + 1),
        }
    }
}

/// A desired object: the JSON form of one manifest and its origin.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub object: DynamicObject,
    pub origin: Origin,
}

/// Identity of an object in a cluster: group, kind, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    pub group: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        };
        match &self.namespace {
            Some(ns) => write!(f, "{kind} {ns}/{}", self.name),
            None => write!(f, "{kind} {}", self.name),
        }
    }
}

impl Manifest {
    pub fn api_version(&self) -> &str {
        self.object
            .types
            .as_ref()
            .map(|t| t.api_version.as_str())
            .unwrap_or_default()
    }

    pub fn kind(&self) -> &str {
        self.object
            .types
            .as_ref()
            .map(|t| t.kind.as_str())
            .unwrap_or_default()
    }

    /// API group from `apiVersion` (`""` for the core group).
    pub fn group(&self) -> &str {
        match self.api_version().split_once('/') {
            Some((group, _)) => group,
            None => "",
        }
    }

    pub fn name(&self) -> &str {
        self.object.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.object.metadata.namespace.as_deref()
    }

    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            group: self.group().to_string(),
            kind: self.kind().to_string(),
            namespace: self.namespace().map(str::to_string),
            name: self.name().to_string(),
        }
    }
}
