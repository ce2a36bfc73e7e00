//! What a `kube::Error` means for ferry: a readable one-line description naming the API
//! server's own message, its HTTP status code, and whether the server could not be reached at
//! all (as opposed to refusing).

/// A readable one-line description of a kube error: the API server's message for API errors,
/// and "cannot reach the API server" plus the cause chain for transport errors.
pub fn describe_kube_error(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => {
            if status.message.is_empty() {
                format!("{} ({})", status.reason, status.code)
            } else {
                status.message.clone()
            }
        }
        kube::Error::Service(_) | kube::Error::HyperError(_) => {
            let mut text = format!("cannot reach the API server: {err}");
            let mut source = std::error::Error::source(err);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
        other => other.to_string(),
    }
}

/// The HTTP status code of an API refusal; `None` for transport and client-side errors.
pub fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Transport failures (server down, connection reset) as opposed to API refusals.
pub fn is_unreachable(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Service(_) | kube::Error::HyperError(_))
}
