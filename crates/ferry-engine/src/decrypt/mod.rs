//! Stage 3, decrypt: SOPS-encrypted files and Sealed Secrets, in memory only.
//!
//! - [`stage`]: the stage itself: a render's output ([`Rendered`], some of it still SOPS
//!   ciphertext) → plaintext manifests, every decrypted value registered for redaction.
//! - [`sops`]: native decryption (and encryption) of SOPS YAML/JSON files with age keys.
//! - [`sealed`]: bitnami-compatible Sealed Secrets crypto: sealing and unsealing (the agent's
//!   unsealer controller uses it).

pub mod sealed;
pub mod sops;
pub mod stage;

pub use stage::{EncryptedSource, Keys, Rendered, decrypt};
