//! Stage 3, decrypt: SOPS-encrypted files and Sealed Secrets, in memory only.
