//! `ferry ui`: a local web dashboard over the cluster, as the user. The server ([`server`], the
//! only module with a cluster client) keeps the apps list from watches and pushes changes to
//! pages over Server-Sent Events; [`model`] is what is shown, [`views`] the HTML (maud),
//! [`guard`] the token, Host and Origin checks that keep other web pages out. See docs/ui.md.
#![forbid(unsafe_code)]

pub mod guard;
pub mod model;
pub mod server;
pub mod views;

pub use server::{RunningUi, UiError, UiOptions, start, start_with_client};
