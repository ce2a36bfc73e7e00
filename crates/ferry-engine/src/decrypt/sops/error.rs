//! [`SopsError`]: what is wrong with SOPS encryption settings or an age recipient, typed, for
//! the settings parsers ([`super::Rules`], [`super::EncryptOptions`]) and key wrapping.

/// What is wrong with encryption settings (`.sops.yaml`, flags, a file's `sops:` block) or an
/// age recipient, before any file is touched. The caller names the file or rule; messages never
/// hold key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum SopsError {
    #[error(
        "only one of encrypted_suffix, unencrypted_suffix, encrypted_regex and unencrypted_regex may be set"
    )]
    SeveralSelectors,
    #[error("{field} is not a valid regex: {source}")]
    InvalidRegex {
        field: &'static str,
        #[source]
        source: regex::Error,
    },
    #[error(
        "uses encrypted_comment_regex/unencrypted_comment_regex, which ferry does not support (it does not read YAML comments); re-encrypt with encrypted_regex instead"
    )]
    CommentRegexUnsupported,
    #[error(
        "no age recipient given; pass --age age1… or add a creation rule with `age:` to .sops.yaml"
    )]
    NoRecipient,
    /// `reason` is age's own (a static description; age gives no error type here).
    #[error("{recipient:?} is not an age recipient (age1…): {reason}")]
    InvalidRecipient {
        recipient: String,
        reason: &'static str,
    },
    #[error("cannot wrap the data key for age: {source}")]
    WrapDataKey {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
