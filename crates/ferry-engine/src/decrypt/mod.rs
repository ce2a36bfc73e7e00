//! Stage 3, decrypt: SOPS-encrypted files and Sealed Secrets, in memory only.
//!
//! - [`sops`]: native decryption (and encryption) of SOPS YAML/JSON files with age keys.
//! - [`sealed`]: bitnami-compatible Sealed Secrets: sealing, unsealing and the unsealer
//!   controller the agent runs.

pub mod sealed;
pub mod sops;
