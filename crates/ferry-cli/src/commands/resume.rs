//! `ferry resume RELEASE`: undo `ferry suspend` and sync at once (see `sync.rs`).

pub use super::sync::SuspendArgs as ResumeArgs;
