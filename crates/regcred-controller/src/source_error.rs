//! Why a credential's sources cannot be used: configuration faults that become status
//! conditions and Events, never retries in a hot loop.

use regcred_api::condition_reasons as reasons;
use regcred_api::names::SOURCE_LABEL;
use regcred_providers::{ProviderError, StaticError};

/// Why a credential's sources cannot be used. Names objects and keys, never values.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SourceError {
    #[error("source Secret {namespace}/{name} does not exist")]
    NotFound { namespace: String, name: String },
    #[error(
        "source Secret {namespace}/{name} is not labelled {SOURCE_LABEL}=true; label it to allow regcred to read it (a credential must not copy an arbitrary Secret into a pull Secret)"
    )]
    NotLabelled { namespace: String, name: String },
    #[error("source Secret {namespace}/{name}: {problem}")]
    Invalid {
        namespace: String,
        name: String,
        problem: StaticError,
    },
    #[error("registry {server}: no source namespace given")]
    NoNamespace { server: String },
    #[error(
        "ServiceAccount {namespace}/{name} names no role: set ecr.auth.roleArn or annotate it with eks.amazonaws.com/role-arn"
    )]
    NoRole { namespace: String, name: String },
    #[error("ServiceAccount {namespace}/{name} does not exist")]
    NoServiceAccount { namespace: String, name: String },
    #[error(
        "a RegistryCredential may not use the controller's own AWS identity: set ecr.auth (secretRef or serviceAccountRef), or start the controller with --allow-controller-aws-identity"
    )]
    ControllerIdentityNotAllowed,
    #[error("AWS: {message}")]
    Aws {
        reason: &'static str,
        message: String,
    },
    #[error("requesting a token for ServiceAccount {namespace}/{name} failed: {message}")]
    TokenRequest {
        namespace: String,
        name: String,
        message: String,
    },
    #[error(
        "ecr.endpoint {endpoint} is not an AWS host; a RegistryCredential may name only AWS endpoints unless the controller is started with --allow-ecr-endpoint for that host"
    )]
    EndpointNotAllowed { endpoint: String },
}

impl SourceError {
    /// The `Ready` condition reason.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            SourceError::NotFound { .. } => reasons::SOURCE_NOT_FOUND,
            SourceError::NotLabelled { .. } => reasons::SOURCE_NOT_LABELLED,
            SourceError::Invalid { problem, .. } => problem.reason(),
            SourceError::NoNamespace { .. } | SourceError::NoRole { .. } => reasons::SOURCE_INVALID,
            SourceError::NoServiceAccount { .. } => reasons::SOURCE_NOT_FOUND,
            SourceError::ControllerIdentityNotAllowed => reasons::AWS_NOT_ALLOWED,
            SourceError::Aws { reason, .. } => reason,
            SourceError::TokenRequest { .. } => reasons::TOKEN_REQUEST_FAILED,
            SourceError::EndpointNotAllowed { .. } => reasons::AWS_ENDPOINT_NOT_ALLOWED,
        }
    }
}
