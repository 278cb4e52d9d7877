//! Errors that make a reconcile retry with backoff. Configuration faults are not errors:
//! they become status conditions and wait for a change.

/// A transient failure: the API server refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("could not encode a request: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("{0} kept changing under concurrent writers")]
    Contended(String),
}

impl Error {
    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Encode(_) => "encode",
            Error::Contended(_) => "contended",
        }
    }
}
