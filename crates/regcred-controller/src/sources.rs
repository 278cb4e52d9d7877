//! Reads each registry's credentials from its provider. Static sources come from the cache
//! of labelled Secrets; an unlabelled Secret is never read, only named in the condition.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::reflector::ObjectRef;
use regcred_api::condition_reasons as reasons;
use regcred_api::names::SOURCE_LABEL;
use regcred_providers::{RegistryAuth, StaticError, StaticInput, from_static_secret};

use crate::context::{Context, ObjectKey};
use crate::credential::Credential;
use crate::error::Error;

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
            SourceError::Invalid { .. }
            | SourceError::NoNamespace { .. }
            | SourceError::NoRole { .. } => reasons::SOURCE_INVALID,
            SourceError::NoServiceAccount { .. } => reasons::SOURCE_NOT_FOUND,
            SourceError::ControllerIdentityNotAllowed => reasons::AWS_NOT_ALLOWED,
            SourceError::Aws { reason, .. } => reason,
            SourceError::TokenRequest { .. } => reasons::TOKEN_REQUEST_FAILED,
            SourceError::EndpointNotAllowed { .. } => reasons::AWS_ENDPOINT_NOT_ALLOWED,
        }
    }
}

/// Reads the static credentials of `credential`, in spec order (minted ones: see
/// [`crate::minting`]).
///
/// The outer error is a transient API failure; the inner one a configuration fault.
pub(crate) async fn resolve<C: Credential>(
    ctx: &Context,
    credential: &C,
) -> Result<Result<Vec<RegistryAuth>, SourceError>, Error> {
    let mut entries = Vec::new();
    for registry in &credential.spec().registries {
        let (Some(server), Some(source)) = (&registry.server, &registry.static_source) else {
            continue; // the schema guarantees both for static registries
        };
        let secret_ref = &source.secret_ref;
        let Some(namespace) = credential.source_namespace(secret_ref) else {
            return Ok(Err(SourceError::NoNamespace {
                server: server.clone(),
            }));
        };
        let key = ObjectRef::new(&secret_ref.name).within(namespace);
        let Some(secret) = ctx.stores.source_secrets.get(&key).filter(|s| is_source(s)) else {
            return Ok(Err(missing_source(ctx, namespace, &secret_ref.name).await?));
        };
        let data: BTreeMap<String, Vec<u8>> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        let input = StaticInput {
            server,
            data: &data,
            username_key: &secret_ref.username_key,
            password_key: &secret_ref.password_key,
        };
        match from_static_secret(&input) {
            Ok(auth) => entries.push(auth),
            Err(problem) => {
                return Ok(Err(SourceError::Invalid {
                    namespace: namespace.to_owned(),
                    name: secret_ref.name.clone(),
                    problem,
                }));
            }
        }
    }
    Ok(Ok(entries))
}

/// Whether a cached Secret carries the source label (the cache only holds such Secrets;
/// this guards against a label removed a moment ago).
pub(crate) fn is_source(secret: &Secret) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SOURCE_LABEL))
        .map(String::as_str)
        == Some("true")
}

/// Tells a missing Secret from an unlabelled one with a metadata-only GET: the data of an
/// unlabelled Secret is never fetched.
///
/// The answer is remembered for a while: reconciles of a credential repeat for many
/// reasons, and a labelled Secret arrives through the source watch anyway.
pub(crate) async fn missing_source(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<SourceError, Error> {
    let key = ObjectKey::secret(namespace, name);
    if let Some(known) = ctx.missing_sources.get(&key) {
        return Ok(known);
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let exists = api.get_metadata_opt(name).await?.is_some();
    let (namespace, name) = (namespace.to_owned(), name.to_owned());
    let problem = if exists {
        SourceError::NotLabelled { namespace, name }
    } else {
        SourceError::NotFound { namespace, name }
    };
    ctx.missing_sources.record(key, problem.clone());
    Ok(problem)
}
