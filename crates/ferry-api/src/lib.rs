//! ferry's custom resources (group `ferry.dev`, version `v1alpha1`), generated from Rust types.
//! Shared by the agent, the CLI (`ferry install`, `ferry sync`) and image automation.

pub mod common;
pub mod gitsource;
pub mod images;
pub mod receiver;
pub mod release;

pub use common::{GROUP, VERSION};
pub use gitsource::{GitRef, GitSource, GitSourceSpec, GitSourceStatus};
pub use images::{ImagePolicy, ImageRepository, ImageUpdate};
pub use receiver::{Receiver, ReceiverSpec, ReceiverStatus, ReceiverType};
pub use release::{Release, ReleaseSpec, ReleaseStatus};
