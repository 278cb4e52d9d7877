//! AWS ECR: mints an authorization token with `GetAuthorizationToken` and turns it into
//! registry entries, one per account host (or the token's `proxyEndpoint`).
//!
//! Where the AWS credentials come from is the caller's choice ([`AwsIdentity`]): access
//! keys, a ServiceAccount token exchanged with STS `AssumeRoleWithWebIdentity`, or the
//! controller's own credential chain; a role may be assumed on top.

use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_ecr::config::Region;
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::OnceCell;

use crate::{Minted, RegistryAuth};

/// Where AWS credentials come from.
pub enum AwsIdentity {
    /// The controller's own credential chain (environment, IRSA, Pod Identity, profiles
    /// including `credential_process`).
    Controller,
    /// Access keys (from a labelled Secret).
    Keys {
        access_key_id: String,
        secret_access_key: SecretString,
        session_token: Option<SecretString>,
    },
    /// A ServiceAccount token to exchange for the role's credentials.
    WebIdentity {
        token: SecretString,
        role_arn: String,
    },
}

/// One token to mint.
pub struct EcrRequest<'a> {
    pub region: &'a str,
    /// Accounts whose registry hosts get the token; empty: the `proxyEndpoint` host.
    pub registry_ids: &'a [String],
    /// ECR API endpoint override (a VPC endpoint).
    pub endpoint: Option<&'a str>,
    pub identity: AwsIdentity,
    /// A role assumed on top of `identity` (not used with [`AwsIdentity::WebIdentity`],
    /// whose role is its own).
    pub assume_role: Option<&'a str>,
    /// Names the session in CloudTrail: which credential asked.
    pub session_name: &'a str,
}

/// Why no token could be minted. Messages are AWS's own; they name ARNs and
/// operations, never keys or tokens.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EcrError {
    #[error("access denied: {0}")]
    AccessDenied(String),
    #[error("throttled: {0}")]
    Throttled(String),
    #[error("endpoint unreachable or unavailable: {0}")]
    Unreachable(String),
    #[error("identity refused: {0}")]
    InvalidIdentity(String),
    #[error("{0}")]
    Other(String),
}

/// Mints ECR tokens with the controller's AWS configuration.
#[derive(Default)]
pub struct Ecr {
    base: OnceCell<SdkConfig>,
}

impl Ecr {
    /// The controller's AWS configuration from its environment (`AWS_*` variables,
    /// profiles, web identity, container credentials, `AWS_ENDPOINT_URL` overrides),
    /// loaded on first use: a controller without ECR registries never looks for it.
    async fn base(&self) -> &SdkConfig {
        self.base
            .get_or_init(|| aws_config::defaults(BehaviorVersion::latest()).load())
            .await
    }

    /// Mints one token: at most one STS call (if a role is involved) and exactly one
    /// `GetAuthorizationToken`.
    pub async fn mint(&self, request: EcrRequest<'_>) -> Result<Minted, EcrError> {
        let base = self.base().await;
        let region = Region::new(request.region.to_owned());
        let credentials = credentials(base, &request, &region).await?;
        let mut config = aws_sdk_ecr::config::Builder::from(base).region(region);
        if let Some(credentials) = credentials {
            config = config.credentials_provider(credentials);
        }
        if let Some(endpoint) = request.endpoint {
            config = config.endpoint_url(endpoint);
        }
        let client = aws_sdk_ecr::Client::from_conf(config.build());
        // registryIds is deprecated: one token serves every registry the identity reaches.
        let response = client
            .get_authorization_token()
            .send()
            .await
            .map_err(classify)?;
        let data = response.authorization_data().first().ok_or_else(|| {
            EcrError::Other("GetAuthorizationToken returned no authorization data".into())
        })?;
        let (username, password) = decode_token(data.authorization_token().unwrap_or_default())?;
        let expires_at = data
            .expires_at()
            .and_then(|t| Timestamp::from_second(t.secs()).ok())
            .ok_or_else(|| EcrError::Other("GetAuthorizationToken returned no expiry".into()))?;
        let servers = match request.registry_ids {
            [] => {
                let endpoint = data.proxy_endpoint().unwrap_or_default();
                let host = endpoint
                    .trim_start_matches("https://")
                    .trim_end_matches('/');
                if host.is_empty() {
                    return Err(EcrError::Other(
                        "GetAuthorizationToken returned no proxyEndpoint".into(),
                    ));
                }
                vec![host.to_owned()]
            }
            ids => ids
                .iter()
                .map(|id| registry_host(id, request.region))
                .collect(),
        };
        let entries = servers
            .into_iter()
            .map(|server| RegistryAuth {
                server,
                username: username.clone(),
                password: password.clone(),
            })
            .collect();
        Ok(Minted {
            entries,
            expires_at: Some(expires_at),
        })
    }
}

/// The credentials for the ECR call; `None`: the controller's own chain as is.
async fn credentials(
    base_config: &SdkConfig,
    request: &EcrRequest<'_>,
    region: &Region,
) -> Result<Option<SharedCredentialsProvider>, EcrError> {
    let base = match &request.identity {
        AwsIdentity::Controller => None,
        AwsIdentity::Keys {
            access_key_id,
            secret_access_key,
            session_token,
        } => Some(SharedCredentialsProvider::new(Credentials::new(
            access_key_id,
            secret_access_key.expose_secret(),
            session_token.as_ref().map(|t| t.expose_secret().to_owned()),
            None,
            "regcred-secret",
        ))),
        AwsIdentity::WebIdentity { token, role_arn } => {
            let sts = sts(base_config, region, None);
            let response = sts
                .assume_role_with_web_identity()
                .role_arn(role_arn)
                .role_session_name(request.session_name)
                .web_identity_token(token.expose_secret())
                .send()
                .await
                .map_err(classify)?;
            return Ok(Some(temporary(response.credentials())?));
        }
    };
    let Some(role) = request.assume_role else {
        return Ok(base);
    };
    let sts = sts(base_config, region, base);
    let response = sts
        .assume_role()
        .role_arn(role)
        .role_session_name(request.session_name)
        .send()
        .await
        .map_err(classify)?;
    Ok(Some(temporary(response.credentials())?))
}

fn sts(
    base: &SdkConfig,
    region: &Region,
    credentials: Option<SharedCredentialsProvider>,
) -> aws_sdk_sts::Client {
    let mut config = aws_sdk_sts::config::Builder::from(base).region(region.clone());
    if let Some(credentials) = credentials {
        config = config.credentials_provider(credentials);
    }
    aws_sdk_sts::Client::from_conf(config.build())
}

fn temporary(
    credentials: Option<&aws_sdk_sts::types::Credentials>,
) -> Result<SharedCredentialsProvider, EcrError> {
    let c = credentials.ok_or_else(|| EcrError::Other("STS returned no credentials".into()))?;
    Ok(SharedCredentialsProvider::new(Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        None,
        "regcred-sts",
    )))
}

/// `base64("AWS:" + password)` → (`AWS`, password).
fn decode_token(token: &str) -> Result<(String, SecretString), EcrError> {
    let invalid = || EcrError::Other("GetAuthorizationToken returned an unreadable token".into());
    let bytes = STANDARD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (user, password) = text.split_once(':').ok_or_else(invalid)?;
    Ok((user.to_owned(), SecretString::from(password.to_owned())))
}

/// The registry host of an account in a region, in the region's partition.
pub fn registry_host(account: &str, region: &str) -> String {
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else if region.starts_with("us-isob-") {
        "sc2s.sgov.gov"
    } else if region.starts_with("us-iso-") {
        "c2s.ic.gov"
    } else {
        "amazonaws.com"
    };
    format!("{account}.dkr.ecr.{region}.{domain}")
}

fn classify<E, R>(error: SdkError<E, R>) -> EcrError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match &error {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            let context = short(&error);
            if context.contains("credentials") {
                // The controller's own chain found nothing: not a network problem.
                EcrError::Other(format!("no AWS credentials could be loaded: {context}"))
            } else {
                EcrError::Unreachable(context)
            }
        }
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("Unknown");
            let message = format!("{code}: {}", e.message().unwrap_or("no message"));
            match code {
                "AccessDeniedException" | "AccessDenied" => EcrError::AccessDenied(message),
                "ThrottlingException" | "Throttling" | "TooManyRequestsException" => {
                    EcrError::Throttled(message)
                }
                "ServiceUnavailableException"
                | "ServiceUnavailable"
                | "InternalFailure"
                | "ServerException" => EcrError::Unreachable(message),
                "InvalidIdentityToken"
                | "IDPRejectedClaim"
                | "ExpiredToken"
                | "ExpiredTokenException"
                | "UnrecognizedClientException"
                | "InvalidClientTokenId"
                | "InvalidSignatureException"
                | "SignatureDoesNotMatch" => EcrError::InvalidIdentity(message),
                _ => EcrError::Other(message),
            }
        }
        _ => EcrError::Other(short(&error)),
    }
}

/// The error with its causes, bounded: some causes are long debug dumps.
fn short<E: std::error::Error>(error: &E) -> String {
    let text = aws_sdk_ecr::error::DisplayErrorContext(error).to_string();
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_hosts_follow_the_partition() {
        assert_eq!(
            registry_host("123456789012", "eu-west-1"),
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            registry_host("123456789012", "cn-north-1"),
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            registry_host("123456789012", "cn-northwest-1"),
            "123456789012.dkr.ecr.cn-northwest-1.amazonaws.com.cn"
        );
        assert_eq!(
            registry_host("123456789012", "us-gov-west-1"),
            "123456789012.dkr.ecr.us-gov-west-1.amazonaws.com"
        );
        assert_eq!(
            registry_host("123456789012", "us-iso-east-1"),
            "123456789012.dkr.ecr.us-iso-east-1.c2s.ic.gov"
        );
    }

    #[test]
    fn tokens_decode_to_aws_and_the_password() {
        let (user, password) = decode_token(&STANDARD.encode("AWS:s3cr3t:with:colons")).unwrap();
        assert_eq!(user, "AWS");
        assert_eq!(password.expose_secret(), "s3cr3t:with:colons");
        assert!(decode_token("not base64!").is_err());
        assert!(decode_token(&STANDARD.encode("no-colon")).is_err());
    }
}
