//! ferry's custom resources (group `ferry.dev`, version `v1alpha1`), generated from Rust types.
//! Shared by the agent, the CLI (`ferry install`, `ferry sync`) and image automation.
