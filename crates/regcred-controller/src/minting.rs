//! Minted credentials (ECR): reuse the current token until its planned refresh, recover it
//! after a restart from the Secrets already written, and mint only when due — once per
//! (region, identity) group, whatever the number of target namespaces.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::PostParams;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use regcred_api::condition_reasons as reasons;
use regcred_api::{EcrAuth, EcrSource};
use regcred_providers::{AwsIdentity, EcrError, EcrRequest, RegistryAuth};
use secrecy::SecretString;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::context::{Context, owner_of};
use crate::credential::{Credential, Kind};
use crate::error::Error;
use crate::secrets::DOCKER_CONFIG_KEY;
use crate::sources::{SourceError, is_source};

/// Annotations on managed Secrets that let a restarted controller resume the schedule.
pub const ISSUED_AT_ANNOTATION: &str = "regcred.io/issued-at";
pub const EXPIRES_AT_ANNOTATION: &str = "regcred.io/expires-at";
pub const INPUTS_ANNOTATION: &str = "regcred.io/inputs";

/// The role a ServiceAccount stands for, as EKS (IRSA) annotates it.
pub const ROLE_ANNOTATION: &str = "eks.amazonaws.com/role-arn";

/// How long the ServiceAccount tokens regcred requests live: only as long as the exchange.
const WEB_IDENTITY_TOKEN_SECONDS: i64 = 600;

/// A set of minted entries and their lifetime.
#[derive(Clone, Debug)]
pub struct Tokens {
    pub entries: Vec<RegistryAuth>,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    /// What they were minted from; a change means minting anew.
    pub inputs: String,
}

/// Mints that failed in a row, and when to try again.
#[derive(Clone, Debug)]
pub struct Failure {
    pub retry_at: Timestamp,
    pub failures: i32,
    pub problem: SourceError,
    /// What the failed mints were made from: a change (a fixed spec, a rotated key)
    /// ends the backoff.
    pub inputs: String,
}

/// The tokens each credential currently uses, and its failed mints, by credential UID.
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<String, Tokens>>,
    failures: Mutex<HashMap<String, Failure>>,
}

impl TokenCache {
    pub fn get(&self, uid: &str, inputs: &str) -> Option<Tokens> {
        let tokens = self.tokens.lock().expect("token cache lock");
        tokens.get(uid).filter(|t| t.inputs == inputs).cloned()
    }

    pub fn failure(&self, uid: &str) -> Option<Failure> {
        self.failures
            .lock()
            .expect("token cache lock")
            .get(uid)
            .cloned()
    }

    pub fn fail(&self, uid: &str, failure: Failure) {
        self.failures
            .lock()
            .expect("token cache lock")
            .insert(uid.to_owned(), failure);
    }

    pub fn clear_failure(&self, uid: &str) {
        self.failures.lock().expect("token cache lock").remove(uid);
    }

    pub fn put(&self, uid: &str, tokens: Tokens) {
        self.tokens
            .lock()
            .expect("token cache lock")
            .insert(uid.to_owned(), tokens);
    }
}

/// A digest of everything a mint depends on: the ECR specs, the versions of the key
/// Secrets and the roles of the ServiceAccounts.
pub fn inputs<C: Credential>(ctx: &Context, credential: &C) -> String {
    // SHA-256, not std's hasher: the digest is stored on Secrets and must mean the same
    // to the next controller build.
    let mut hasher = Sha256::new();
    let mut feed = |part: &str| {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    };
    for ecr in ecr_sources(credential) {
        feed(&serde_json::to_string(ecr).unwrap_or_default());
        let auth = ecr.auth.clone().unwrap_or_default();
        if let Some(keys) = &auth.secret_ref
            && let Some(ns) = namespace_of(credential, keys.namespace.as_deref())
        {
            let secret = ctx
                .stores
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
            feed(&role_annotation(ctx, ns, &sa.name).unwrap_or_default());
        }
    }
    let digest = hasher.finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn ecr_sources<C: Credential>(credential: &C) -> impl Iterator<Item = &EcrSource> {
    credential
        .spec()
        .registries
        .iter()
        .filter_map(|r| r.ecr.as_ref())
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

fn role_annotation(ctx: &Context, namespace: &str, name: &str) -> Option<String> {
    let sa = ctx
        .stores
        .service_accounts
        .get(&ObjectRef::new(name).within(namespace))?;
    sa.annotations().get(ROLE_ANNOTATION).cloned()
}

/// Whether the credential has minted registries at all.
pub fn has_minted<C: Credential>(credential: &C) -> bool {
    ecr_sources(credential).next().is_some()
}

/// The tokens already written for this credential, read back from one of its Secrets
/// (after a restart the cache is empty, but the Secrets are not).
pub fn recover<C: Credential>(ctx: &Context, credential: &C, inputs: &str) -> Option<Tokens> {
    let static_servers: Vec<&str> = credential
        .spec()
        .registries
        .iter()
        .filter(|r| r.static_source.is_some())
        .filter_map(|r| r.server.as_deref())
        .collect();
    let owner = credential.id().to_string();
    let secret = ctx.stores.managed_secrets.state().into_iter().find(|s| {
        owner_of(s).as_deref() == Some(owner.as_str())
            && s.annotations().get(INPUTS_ANNOTATION).map(String::as_str) == Some(inputs)
    })?;
    let timestamp = |key: &str| secret.annotations().get(key)?.parse::<Timestamp>().ok();
    let (issued_at, expires_at) = (
        timestamp(ISSUED_AT_ANNOTATION)?,
        timestamp(EXPIRES_AT_ANNOTATION)?,
    );
    let entries: Vec<RegistryAuth> = read_entries(&secret)?
        .into_iter()
        .filter(|e| !static_servers.contains(&e.server.as_str()))
        .collect();
    // A Secret in a tenant's namespace is not to be trusted blindly: take it back only if
    // it holds what a mint would have produced, for no longer than ECR tokens live.
    let expected: Vec<String> = ecr_sources(credential)
        .flat_map(|e| {
            e.registry_ids
                .iter()
                .map(|id| regcred_providers::ecr::registry_host(id, &e.region))
        })
        .collect();
    let hosts_match = if ecr_sources(credential).any(|e| e.registry_ids.is_empty()) {
        entries.len() >= expected.len()
            && expected
                .iter()
                .all(|h| entries.iter().any(|e| &e.server == h))
    } else {
        entries.len() == expected.len() && entries.iter().all(|e| expected.contains(&e.server))
    };
    let plausible = entries.iter().all(|e| e.username == "AWS")
        && expires_at > issued_at
        && expires_at.duration_since(issued_at) <= jiff::SignedDuration::from_hours(12);
    if entries.is_empty() || !hosts_match || !plausible {
        return None;
    }
    Some(Tokens {
        entries,
        issued_at,
        expires_at,
        inputs: inputs.to_owned(),
    })
}

#[derive(Deserialize)]
struct DockerConfig {
    auths: BTreeMap<String, DockerEntry>,
}

#[derive(Deserialize)]
struct DockerEntry {
    username: String,
    password: String,
}

fn read_entries(secret: &Secret) -> Option<Vec<RegistryAuth>> {
    let bytes = &secret.data.as_ref()?.get(DOCKER_CONFIG_KEY)?.0;
    let config: DockerConfig = serde_json::from_slice(bytes).ok()?;
    Some(
        config
            .auths
            .into_iter()
            .map(|(server, e)| RegistryAuth {
                server,
                username: e.username,
                password: SecretString::from(e.password),
            })
            .collect(),
    )
}

/// Mints tokens for every ECR registry of the credential: one call per distinct (region,
/// endpoint, auth), covering the union of their accounts.
pub async fn mint<C: Credential>(
    ctx: &Context,
    credential: &C,
    inputs: &str,
) -> Result<Result<Tokens, SourceError>, Error> {
    let mut groups: BTreeMap<String, (&EcrSource, Vec<String>)> = BTreeMap::new();
    for ecr in ecr_sources(credential) {
        let key =
            serde_json::to_string(&(&ecr.region, &ecr.endpoint, &ecr.auth)).unwrap_or_default();
        let group = groups.entry(key).or_insert_with(|| (ecr, Vec::new()));
        group.1.extend(ecr.registry_ids.iter().cloned());
    }
    let issued_at = Timestamp::now();
    let mut entries = Vec::new();
    let mut expires_at = Timestamp::MAX;
    let session = session_name(credential);
    for (ecr, registry_ids) in groups.values() {
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
        match ctx.ecr.mint(request).await {
            Ok(minted) => {
                expires_at = expires_at.min(minted.expires_at.unwrap_or(Timestamp::MAX));
                entries.extend(minted.entries);
            }
            Err(e) => return Ok(Err(aws_error(e))),
        }
    }
    Ok(Ok(Tokens {
        entries,
        issued_at,
        expires_at,
        inputs: inputs.to_owned(),
    }))
}

fn aws_error(error: EcrError) -> SourceError {
    let reason = match &error {
        EcrError::AccessDenied(_) => reasons::AWS_ACCESS_DENIED,
        EcrError::Throttled(_) => reasons::AWS_THROTTLED,
        EcrError::Unreachable(_) => reasons::AWS_UNREACHABLE,
        EcrError::InvalidIdentity(_) => reasons::AWS_INVALID_IDENTITY,
        EcrError::Other(_) => reasons::AWS_ERROR,
    };
    SourceError::Aws {
        reason,
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
            .or_else(|| role_annotation(ctx, ns, &sa.name))
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
        let token = match api
            .create_token_request(&sa.name, &PostParams::default(), &request)
            .await
        {
            Ok(response) => response.status.map(|s| s.token).unwrap_or_default(),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Ok(Err(SourceError::NoServiceAccount {
                    namespace: ns.to_owned(),
                    name: sa.name.clone(),
                }));
            }
            Err(e) => return Err(e.into()),
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
