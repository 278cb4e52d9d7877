//! Errors that make a reconcile retry with backoff. Configuration faults are not errors:
//! they become status conditions and wait for a change.

/// A transient failure: the API server refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0} kept changing under concurrent writers")]
    Contended(String),
    #[error("signing key: {0}")]
    SigningKey(String),
    #[error("leadership lost: {0}")]
    LeaseLost(String),
    #[error("admission webhook: {0}")]
    Admission(String),
}

impl Error {
    /// A short label for logs and metrics.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Contended(_) => "contended",
            Error::SigningKey(_) => "signing-key",
            Error::LeaseLost(_) => "lease-lost",
            Error::Admission(_) => "admission",
        }
    }
}
