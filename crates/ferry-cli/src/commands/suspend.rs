//! `ferry suspend RELEASE`: stop the agent from applying or pruning a Release (see `sync.rs`).

pub use super::sync::{SuspendArgs, run_suspend};
