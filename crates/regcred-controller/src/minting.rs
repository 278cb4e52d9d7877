//! Minted credentials (ECR): reuse the current token until its planned refresh, recover it
//! after a restart from the Secrets already written, and mint only when due — once per
//! (region, identity) group, whatever the number of target namespaces.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use regcred_api::{EcrAuth, EcrSource};
use regcred_providers::{
    AwsIdentity, EcrError, EcrRequest, Provider, ProviderError, RegistryAuth, dockerconfig, ecr,
};
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use crate::cached_secret::{CachedSecret, PullSecret};
use crate::context::{Context, Stores};
use crate::credential::{Credential, Kind};
use crate::error::Error;
use crate::source_error::SourceError;
use crate::sources::is_source;
use crate::tokens::Tokens;

pub(crate) use crate::signing::{EXPIRES_AT_ANNOTATION, INPUTS_ANNOTATION, ISSUED_AT_ANNOTATION};

/// The role a ServiceAccount stands for, as EKS (IRSA) annotates it.
pub(crate) const ROLE_ANNOTATION: &str = "eks.amazonaws.com/role-arn";

/// How long the ServiceAccount tokens regcred requests live: only as long as the exchange.
const WEB_IDENTITY_TOKEN_SECONDS: i64 = 600;

/// A TokenRequest that takes longer has failed.
const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A whole mint (identity, STS, ECR) that takes longer has failed, whatever the SDK's own
/// timeouts do: status must turn to a failure while the token is still valid.
pub(crate) const MINT_TIMEOUT: Duration = Duration::from_secs(60);

/// A digest of everything a mint depends on: the ECR specs, the versions of the key
/// Secrets and the roles of the ServiceAccounts.
pub(crate) fn inputs<C: Credential>(stores: &Stores, credential: &C) -> String {
    // SHA-256, not std's hasher: the digest is stored on Secrets and must mean the same
    // to the next controller build.
    let mut hasher = Sha256::new();
    let mut feed = |part: &str| {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    };
    for ecr in credential.ecr_sources() {
        feed(&serde_json::to_string(ecr).unwrap_or_default());
        let auth = ecr.auth.clone().unwrap_or_default();
        if let Some(keys) = &auth.secret_ref
            && let Some(ns) = namespace_of(credential, keys.namespace.as_deref())
        {
            let secret = stores
                .source_secrets
                .get(&ObjectRef::new(&keys.name).within(ns));
            feed(
                &secret
                    .and_then(|s| s.metadata.resource_version.clone())
                    .unwrap_or_default(),
            );
        }
        if let Some(sa) = &auth.service_account_ref
            && let Some(ns) = namespace_of(credential, sa.namespace.as_deref())
        {
            feed(&role_annotation(stores, ns, &sa.name).unwrap_or_default());
        }
    }
    let digest = hasher.finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Where a referenced object lives: a namespaced credential's own namespace, always.
pub(crate) fn namespace_of<'a, C: Credential>(
    credential: &'a C,
    named: Option<&'a str>,
) -> Option<&'a str> {
    match C::KIND {
        Kind::Namespaced => credential.meta().namespace.as_deref(),
        Kind::Cluster => named,
    }
}

fn role_annotation(stores: &Stores, namespace: &str, name: &str) -> Option<String> {
    let sa = stores
        .service_accounts
        .get(&ObjectRef::new(name).within(namespace))?;
    sa.role.clone()
}

/// The tokens already written for this credential, read back from one of its Secrets
/// (after a restart the cache is empty, but the Secrets are not).
///
/// Those Secrets live in namespaces that tenants write to, so only one whose content
/// signature holds is read: a tenant's edit, or a look-alike it created, would otherwise
/// reach every other namespace the credential covers, and decide its schedule.
pub(crate) fn recover<C: Credential>(
    ctx: &Context,
    credential: &C,
    inputs: &str,
) -> Option<Tokens> {
    let static_servers: Vec<&str> = credential
        .spec()
        .registries
        .iter()
        .filter(|r| r.static_source.is_some())
        .filter_map(|r| r.server.as_deref())
        .collect();
    let owner = credential.id().to_string();
    let lifetime = |s: &CachedSecret| {
        let timestamp = |key: &str| s.annotation(key)?.parse::<Timestamp>().ok();
        Some((
            timestamp(ISSUED_AT_ANNOTATION)?,
            timestamp(EXPIRES_AT_ANNOTATION)?,
        ))
    };
    // The newest intact token: an older copy (a tenant can put back an earlier version
    // of its own Secret, signature and all) must not roll every other namespace back,
    // nor must the order of the cache decide after a restart mid-fan-out.
    let (secret, (issued_at, expires_at)) = ctx
        .stores
        .managed_secrets
        .state()
        .into_iter()
        .filter(|s| {
            s.owner() == Some(owner.as_str())
                && s.annotation(INPUTS_ANNOTATION) == Some(inputs)
                && ctx.stores.signer.content_intact(&**s)
        })
        .filter_map(|s| lifetime(&s).map(|l| (s, l)))
        .filter(|(_, (_, expires_at))| *expires_at > Timestamp::now())
        .max_by_key(|(_, lifetime)| *lifetime)?;
    let entries: Vec<RegistryAuth> = dockerconfig::decode(secret.docker_config()?)?
        .into_iter()
        .filter(|e| !static_servers.contains(&e.server.as_str()))
        .collect();
    // A Secret in a tenant's namespace is not to be trusted blindly: take it back only if
    // it holds what a mint would have produced, for no longer than ECR tokens live.
    let expected: Vec<String> = credential
        .ecr_sources()
        .flat_map(|e| {
            e.registry_ids
                .iter()
                .map(|id| ecr::registry_host(id, &e.region))
        })
        .collect();
    let with_proxy_endpoint = credential.ecr_sources().any(|e| e.registry_ids.is_empty());
    if !ecr::plausible_token(
        &entries,
        &expected,
        with_proxy_endpoint,
        issued_at,
        expires_at,
    ) {
        return None;
    }
    Some(Tokens {
        entries,
        issued_at,
        expires_at,
        inputs: inputs.to_owned(),
    })
}

/// Mints tokens for every ECR registry of the credential: one call per distinct (region,
/// endpoint, auth), covering the union of their accounts.
pub(crate) async fn mint<C: Credential>(
    ctx: &Context,
    credential: &C,
    inputs: &str,
) -> Result<Result<Tokens, SourceError>, Error> {
    let mut groups: BTreeMap<String, (&EcrSource, Vec<String>)> = BTreeMap::new();
    for ecr in credential.ecr_sources() {
        let key =
            serde_json::to_string(&(&ecr.region, &ecr.endpoint, &ecr.auth)).unwrap_or_default();
        let group = groups.entry(key).or_insert_with(|| (ecr, Vec::new()));
        group.1.extend(ecr.registry_ids.iter().cloned());
    }
    // The earliest a provider took: a lifetime computed from it is never too short.
    let mut issued_at: Option<Timestamp> = None;
    let mut entries = Vec::new();
    let mut expires_at = Timestamp::MAX;
    let session = session_name(credential);
    for (ecr, registry_ids) in groups.values() {
        if let Some(endpoint) = ecr.endpoint.as_deref()
            && C::KIND == Kind::Namespaced
            && !regcred_providers::endpoint_allowed(endpoint, &ctx.allowed_ecr_endpoints)
        {
            return Ok(Err(SourceError::EndpointNotAllowed {
                endpoint: endpoint.to_owned(),
            }));
        }
        let identity = match identity(ctx, credential, ecr.auth.as_ref()).await? {
            Ok(identity) => identity,
            Err(problem) => return Ok(Err(problem)),
        };
        let web_identity = matches!(identity, AwsIdentity::WebIdentity { .. });
        let request = EcrRequest {
            region: &ecr.region,
            registry_ids,
            endpoint: ecr.endpoint.as_deref(),
            identity,
            assume_role: if web_identity {
                None
            } else {
                ecr.auth.as_ref().and_then(|a| a.role_arn.as_deref())
            },
            session_name: &session,
        };
        let started = std::time::Instant::now();
        let minted = tokio::time::timeout(MINT_TIMEOUT, ctx.ecr.provide(request))
            .await
            .unwrap_or_else(|_| {
                Err(EcrError::Unreachable(format!(
                    "no answer within {}s",
                    MINT_TIMEOUT.as_secs()
                )))
            });
        let outcome = match &minted {
            Ok(_) => "success",
            Err(e) => e.reason(),
        };
        ctx.metrics.ecr_request(outcome, started.elapsed());
        match minted {
            Ok(minted) => {
                issued_at = Some(issued_at.map_or(minted.issued_at, |t| t.min(minted.issued_at)));
                expires_at = expires_at.min(minted.expires_at.unwrap_or(Timestamp::MAX));
                entries.extend(minted.entries);
            }
            Err(e) => return Ok(Err(aws_error(e))),
        }
    }
    Ok(Ok(Tokens {
        entries,
        issued_at: issued_at.unwrap_or_else(Timestamp::now),
        expires_at,
        inputs: inputs.to_owned(),
    }))
}

fn aws_error(error: EcrError) -> SourceError {
    SourceError::Aws {
        reason: error.reason(),
        message: error.to_string(),
    }
}

/// CloudTrail's session name: which credential asked (at most 64 characters).
fn session_name<C: Credential>(credential: &C) -> String {
    let name = format!(
        "regcred-{}-{}",
        credential.namespace().unwrap_or_default(),
        credential.name_any()
    );
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "+=,.@-".contains(*c))
        .take(64)
        .collect()
}

/// Resolves where the AWS credentials come from.
async fn identity<C: Credential>(
    ctx: &Context,
    credential: &C,
    auth: Option<&EcrAuth>,
) -> Result<Result<AwsIdentity, SourceError>, Error> {
    let auth = auth.cloned().unwrap_or_default();
    if let Some(keys) = &auth.secret_ref {
        let Some(ns) = namespace_of(credential, keys.namespace.as_deref()) else {
            return Ok(Err(SourceError::NoNamespace {
                server: "ecr".into(),
            }));
        };
        let secret = ctx
            .stores
            .source_secrets
            .get(&ObjectRef::new(&keys.name).within(ns))
            .filter(|s| is_source(s));
        let Some(secret) = secret else {
            return Ok(Err(
                crate::sources::missing_source(ctx, ns, &keys.name).await?
            ));
        };
        let read = |key: &str| {
            secret
                .data
                .as_ref()?
                .get(key)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .map(|v| v.trim().to_owned())
        };
        let invalid = |key: &str| SourceError::Invalid {
            namespace: ns.to_owned(),
            name: keys.name.clone(),
            problem: regcred_providers::StaticError::MissingKey(key.to_owned()),
        };
        let Some(access_key_id) = read(&keys.access_key_id_key).filter(|v| !v.is_empty()) else {
            return Ok(Err(invalid(&keys.access_key_id_key)));
        };
        let Some(secret_access_key) = read(&keys.secret_access_key_key).filter(|v| !v.is_empty())
        else {
            return Ok(Err(invalid(&keys.secret_access_key_key)));
        };
        let session_token = read(&keys.session_token_key)
            .filter(|v| !v.is_empty())
            .map(SecretString::from);
        return Ok(Ok(AwsIdentity::Keys {
            access_key_id,
            secret_access_key: SecretString::from(secret_access_key),
            session_token,
        }));
    }
    if let Some(sa) = &auth.service_account_ref {
        let Some(ns) = namespace_of(credential, sa.namespace.as_deref()) else {
            return Ok(Err(SourceError::NoNamespace {
                server: "ecr".into(),
            }));
        };
        let Some(role_arn) = auth
            .role_arn
            .clone()
            .or_else(|| role_annotation(&ctx.stores, ns, &sa.name))
        else {
            return Ok(Err(SourceError::NoRole {
                namespace: ns.to_owned(),
                name: sa.name.clone(),
            }));
        };
        let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), ns);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![sa.audience.clone()],
                expiration_seconds: Some(WEB_IDENTITY_TOKEN_SECONDS),
                ..Default::default()
            },
            ..Default::default()
        };
        let requested = tokio::time::timeout(
            TOKEN_REQUEST_TIMEOUT,
            api.create_token_request(&sa.name, &PostParams::default(), &request),
        )
        .await;
        let failed = |message: String| {
            Ok(Err(SourceError::TokenRequest {
                namespace: ns.to_owned(),
                name: sa.name.clone(),
                message,
            }))
        };
        let token = match requested {
            Ok(Ok(response)) => response.status.map(|s| s.token).unwrap_or_default(),
            Ok(Err(kube::Error::Api(status))) if status.code == 404 => {
                return Ok(Err(SourceError::NoServiceAccount {
                    namespace: ns.to_owned(),
                    name: sa.name.clone(),
                }));
            }
            // Denied, throttled or failed: a condition and an Event, retried with backoff.
            Ok(Err(kube::Error::Api(status))) => {
                return failed(format!(
                    "{} {}: {}",
                    status.code,
                    status.reason,
                    regcred_providers::redact(&status.message)
                ));
            }
            Ok(Err(e)) => return failed(regcred_providers::redact(&e.to_string())),
            Err(_) => {
                return failed(format!(
                    "the API server did not answer within {}s",
                    TOKEN_REQUEST_TIMEOUT.as_secs()
                ));
            }
        };
        return Ok(Ok(AwsIdentity::WebIdentity {
            token: SecretString::from(token),
            role_arn,
        }));
    }
    // Neither: the controller's own identity, which a tenant may not borrow by default.
    if C::KIND == Kind::Namespaced && !ctx.allow_controller_aws_identity {
        return Ok(Err(SourceError::ControllerIdentityNotAllowed));
    }
    Ok(Ok(AwsIdentity::Controller))
}

#[cfg(test)]
mod tests {
    use regcred_api::condition_reasons as reasons;
    use regcred_providers::{ProviderError, StaticError};

    use super::*;

    /// The providers cannot depend on the API crate: their reasons are pinned here.
    #[test]
    fn provider_reasons_are_the_apis_condition_reasons() {
        let ecr = [
            (
                EcrError::AccessDenied(String::new()),
                reasons::AWS_ACCESS_DENIED,
            ),
            (EcrError::Throttled(String::new()), reasons::AWS_THROTTLED),
            (
                EcrError::Unreachable(String::new()),
                reasons::AWS_UNREACHABLE,
            ),
            (
                EcrError::InvalidIdentity(String::new()),
                reasons::AWS_INVALID_IDENTITY,
            ),
            (EcrError::Other(String::new()), reasons::AWS_ERROR),
        ];
        for (error, reason) in ecr {
            assert_eq!(error.reason(), reason, "{error:?}");
        }
        for error in [
            StaticError::MissingKey("k".into()),
            StaticError::NotUtf8("k".into()),
            StaticError::ColonInUsername("k".into()),
        ] {
            assert_eq!(error.reason(), reasons::SOURCE_INVALID, "{error:?}");
        }
    }
}
