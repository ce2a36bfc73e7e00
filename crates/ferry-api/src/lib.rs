//! ferry's custom resources (group `ferry.dev`, version `v1alpha1`), generated from Rust types.
//! Shared by the agent, the CLI (`ferry install`, `ferry sync`) and image automation. Also the
//! one home of what every driver must agree on: THE CRD list ([`crds`]), THE duration grammar
//! ([`duration`]) and THE cross-namespace reference rule ([`references`]).
#![forbid(unsafe_code)]

pub mod common;
pub mod crds;
pub mod deploy;
pub mod drift;
pub mod duration;
pub mod gitsource;
pub mod health;
pub mod images;
pub mod kstatus;
pub mod notification;
pub mod ocisource;
pub mod receiver;
pub mod references;
pub mod release;
pub mod sealed;

pub use common::{GROUP, VERSION};
pub use crds::{all_crd_values, all_crds};
pub use deploy::{DeployPolicy, DeployPolicySpec};
pub use duration::{DurationError, parse_duration, parse_positive_duration};
pub use gitsource::{GitRef, GitSource, GitSourceSpec, GitSourceStatus};
pub use images::{ImagePolicy, ImageRepository, ImageUpdate};
pub use notification::{Alert, AlertSpec, Provider, ProviderSpec, ProviderType};
pub use ocisource::{OCIRef, OCISource, OCISourceSpec, OCISourceStatus};
pub use receiver::{Receiver, ReceiverSpec, ReceiverStatus, ReceiverType};
pub use references::{CROSS_NAMESPACE_REF_DENIED, CrossNamespaceRefused, referenced_namespace};
pub use release::{Release, ReleaseSpec, ReleaseStatus};
