//! Compatibility paths for code written before issue 13's layout: identity moved to
//! [`crate::ownership`], the inventory to [`crate::inventory`], deletion to
//! `cluster::manager::delete`.

pub mod identity {
    //! Moved to [`crate::ownership`].
    pub use crate::ownership::{Owner, ReleaseRef, legacy_release_app};
}
pub use crate::inventory;

pub use crate::cluster::manager::delete::{
    Candidate, Policy, is_destructive, is_terminating, skip_terminating, terminating_namespaces,
};
pub use crate::ownership::PRUNE_ALLOW_DESTRUCTIVE;
