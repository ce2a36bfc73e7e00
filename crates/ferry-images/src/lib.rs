//! ferry-images: registry scanning, tag policies and format-preserving image write-back to git.
//!
//! Pure parts (no I/O): [`reference`], [`semver_range`], [`policy`], [`yaml_scan`], [`markers`],
//! [`kustomize`]. File-tree edits shared by `ferry set-image` and the automation: [`setimage`].
#![forbid(unsafe_code)]

pub mod git;
pub mod kustomize;
pub mod markers;
pub mod policy;
pub mod reference;
/// The registry client lives in the engine's source stage (OCISource artifacts use it too).
pub use ferry_engine::source::registry;
pub use ferry_semver as semver_range;
pub mod setimage;
pub mod webhook;
pub mod yaml_scan;
