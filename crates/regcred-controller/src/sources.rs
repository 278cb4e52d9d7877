//! Reads each registry's credentials from its provider. Static sources come from the cache
//! of labelled Secrets; an unlabelled Secret is never read, only named in the condition.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::reflector::ObjectRef;
use regcred_api::names::SOURCE_LABEL;
use regcred_providers::{Provider, RegistryAuth, Static, StaticInput};

use crate::context::{Context, ObjectKey};
use crate::credential::Credential;
use crate::error::Error;
use crate::source_error::SourceError;

/// Reads the static credentials of `credential`, in spec order (minted ones: see
/// `minting.rs`).
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
        match Static.provide(input).await {
            Ok(minted) => entries.extend(minted.entries),
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
