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
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use tokio::sync::OnceCell;

use crate::{Minted, Provider, ProviderError, RegistryAuth};

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
            .get_or_init(|| {
                aws_config::defaults(BehaviorVersion::latest())
                    .timeout_config(timeouts())
                    .load()
            })
            .await
    }
}

impl Provider for Ecr {
    type Input<'a> = EcrRequest<'a>;
    type Error = EcrError;

    /// Mints one token: at most one STS call (if a role is involved) and exactly one
    /// `GetAuthorizationToken`.
    async fn provide(&self, request: Self::Input<'_>) -> Result<Minted, EcrError> {
        let issued_at = Timestamp::now();
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
            .and_then(|t| {
                Timestamp::new(t.secs(), i32::try_from(t.subsec_nanos()).unwrap_or(0)).ok()
            })
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
            issued_at,
            expires_at: Some(expires_at),
        })
    }
}

impl ProviderError for EcrError {
    fn reason(&self) -> &'static str {
        match self {
            EcrError::AccessDenied(_) => "AwsAccessDenied",
            EcrError::Throttled(_) => "AwsThrottled",
            EcrError::Unreachable(_) => "AwsUnreachable",
            EcrError::InvalidIdentity(_) => "AwsInvalidIdentity",
            EcrError::Other(_) => "AwsError",
        }
    }
}

/// The longest lifetime ECR gives a token.
pub const MAX_TOKEN_LIFETIME: jiff::SignedDuration = jiff::SignedDuration::from_hours(12);

/// How far AWS's clock may run ahead of ours: `issued_at` is taken before the call, and
/// ECR counts its 12 hours from its own clock, so a genuine token can appear to live a
/// little longer than 12 hours.
const CLOCK_SKEW: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

/// Whether a recorded lifetime is one ECR could have given.
pub fn plausible_lifetime(issued_at: Timestamp, expires_at: Timestamp) -> bool {
    expires_at > issued_at
        && expires_at.duration_since(issued_at) <= MAX_TOKEN_LIFETIME + CLOCK_SKEW
}

/// Whether entries read back from a Secret are what a mint could have produced: ECR's
/// user name on each, exactly the `expected_hosts` (at least those when the token's
/// `proxyEndpoint` host was asked for too), and a lifetime ECR could have given.
pub fn plausible_token(
    entries: &[RegistryAuth],
    expected_hosts: &[String],
    with_proxy_endpoint: bool,
    issued_at: Timestamp,
    expires_at: Timestamp,
) -> bool {
    let has = |host: &String| entries.iter().any(|e| &e.server == host);
    let hosts_match = if with_proxy_endpoint {
        entries.len() >= expected_hosts.len() && expected_hosts.iter().all(has)
    } else {
        entries.len() == expected_hosts.len()
            && entries.iter().all(|e| expected_hosts.contains(&e.server))
    };
    !entries.is_empty()
        && hosts_match
        && entries.iter().all(|e| e.username == "AWS")
        && plausible_lifetime(issued_at, expires_at)
}

/// Every AWS call is bounded: an endpoint that accepts the connection and never answers
/// must turn into an error (and a condition), not a refresh that waits forever.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(25);

fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(ATTEMPT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// AWS's own endpoint domains: where an `ecr.endpoint` may point without the operator's
/// say-so (a VPC endpoint is `vpce-….api.ecr.<region>.vpce.amazonaws.com`).
const AWS_ENDPOINT_DOMAINS: [&str; 5] = [
    "amazonaws.com",
    "amazonaws.com.cn",
    "api.aws",
    "c2s.ic.gov",
    "sc2s.sgov.gov",
];

/// Whether an `https://` endpoint's host is AWS's, or under one of `extra` (host suffixes
/// the operator allowed). Anything that is not a plain `https://host[:port][/path]` is not.
pub fn endpoint_allowed(endpoint: &str, extra: &[String]) -> bool {
    let Some(rest) = endpoint.strip_prefix("https://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = authority
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    // Plain DNS names only (no `?`, `#`, `\\`, ...: what a client might parse otherwise),
    // and an ECR API host: AWS domains also hold customers' own hosts (S3, API Gateway).
    let plain = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    let ecr_host = host
        .split('.')
        .any(|label| label == "ecr" || label == "ecr-fips");
    if !plain || !ecr_host {
        return false;
    }
    let under = |domain: &str| {
        let domain = domain.trim_start_matches('.').to_ascii_lowercase();
        !domain.is_empty() && (host == domain || host.ends_with(&format!(".{domain}")))
    };
    !host.is_empty()
        && (AWS_ENDPOINT_DOMAINS.iter().any(|d| under(d)) || extra.iter().any(|d| under(d)))
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
            let message = format!("{code}: {}", redact(e.message().unwrap_or("no message")));
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

/// The error with its causes, redacted and bounded: some causes are long debug dumps.
fn short<E: std::error::Error>(error: &E) -> String {
    redact(&aws_sdk_ecr::error::DisplayErrorContext(error).to_string())
}

/// What of an error text may reach status, Events and logs: AWS messages and SDK error
/// contexts can quote request signatures, pre-signed URLs, session tokens or key IDs, so
/// every long opaque run of characters (and anything after a `Signature`/`Credential`/
/// `Token` marker) is replaced, and the text is bounded.
pub fn redact(text: &str) -> String {
    const MAX_CHARS: usize = 300;
    let mut out = String::with_capacity(text.len().min(MAX_CHARS + 1));
    let separator = |c: char| c.is_whitespace() || c == '&' || c == ',';
    let mut redact_next = false;
    for word in text.split_inclusive(separator) {
        let trimmed = word.trim_end_matches(separator);
        let tail = &word[trimmed.len()..];
        let lower = trimmed.to_ascii_lowercase();
        let marker = [
            "signature",
            "credential",
            "token",
            "x-amz-",
            "authorization",
        ]
        .iter()
        .any(|m| lower.contains(m));
        // ARNs name things and are kept whole (role and session names contain digits);
        // access key IDs and long opaque runs (signatures, hashes, tokens) are not.
        let arn = lower.starts_with("arn:");
        let key_id = trimmed
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|run| {
                run.len() == 20
                    && (run.starts_with("AKIA") || run.starts_with("ASIA"))
                    && run
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            });
        let opaque = !arn
            && trimmed
                .split(|c: char| !(c.is_ascii_alphanumeric() || "+=_%".contains(c)))
                .any(|run| run.len() >= 20 && run.chars().any(|c| c.is_ascii_digit()));
        if key_id
            || opaque
            || (redact_next && !trimmed.is_empty())
            || (marker && trimmed.contains('='))
        {
            out.push_str("<redacted>");
        } else {
            out.push_str(trimmed);
        }
        out.push_str(tail);
        redact_next = [
            "authorization:",
            "token:",
            "credential:",
            "signature:",
            "key:",
        ]
        .iter()
        .any(|m| lower.ends_with(m));
    }
    match out.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &out[..cut]),
        None => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn aws(server: &str) -> RegistryAuth {
        RegistryAuth {
            server: server.into(),
            username: "AWS".into(),
            password: SecretString::from("token"),
        }
    }

    #[test]
    fn a_genuine_lifetime_is_plausible_despite_the_calls_latency() {
        // issued_at is taken before the call; ECR counts 12 hours from its own clock.
        assert!(plausible_lifetime(
            t("2026-12-01T00:54:37.999Z"),
            t("2026-12-01T12:54:38.004Z")
        ));
    }

    #[test]
    fn a_forged_lifetime_is_not() {
        for expires_at in [
            "2026-12-01T13:00:00Z",
            "2026-12-01T00:00:00Z",
            "2026-11-30T23:00:00Z",
        ] {
            assert!(
                !plausible_lifetime(t("2026-12-01T00:00:00Z"), t(expires_at)),
                "{expires_at}"
            );
        }
    }

    #[test]
    fn a_plausible_token_has_the_expected_hosts_and_ecrs_user_only() {
        let (issued, expires) = (t("2026-12-01T00:00:00Z"), t("2026-12-01T12:00:00Z"));
        let a = registry_host("111111111111", "eu-west-1");
        let b = registry_host("222222222222", "eu-west-1");
        let expected = [a.clone(), b.clone()];
        let plausible = |entries: &[RegistryAuth], proxy| {
            plausible_token(entries, &expected, proxy, issued, expires)
        };
        assert!(plausible(&[aws(&a), aws(&b)], false));
        assert!(!plausible(&[aws(&a)], false), "a host missing");
        assert!(
            !plausible(&[aws(&a), aws(&b), aws("evil.example.com")], false),
            "a host added"
        );
        assert!(
            plausible(
                &[
                    aws(&a),
                    aws(&b),
                    aws("333333333333.dkr.ecr.eu-west-1.amazonaws.com")
                ],
                true
            ),
            "the proxyEndpoint host beside the expected ones"
        );
        let mut robot = aws(&b);
        robot.username = "robot".into();
        assert!(!plausible(&[aws(&a), robot], false), "not ECR's user name");
        assert!(
            !plausible_token(&[], &[], true, issued, expires),
            "nothing at all"
        );
        assert!(
            !plausible_token(
                &[aws(&a), aws(&b)],
                &expected,
                false,
                issued,
                t("2026-12-02T00:00:00Z")
            ),
            "too long a lifetime"
        );
    }

    #[test]
    fn reasons_name_the_fault() {
        assert_eq!(EcrError::Throttled("x".into()).reason(), "AwsThrottled");
        assert_eq!(EcrError::Other("x".into()).reason(), "AwsError");
    }

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
    fn endpoints_must_be_aws_hosts_unless_allowed() {
        for ok in [
            "https://api.ecr.eu-west-1.amazonaws.com",
            "https://vpce-0abc.api.ecr.eu-west-1.vpce.amazonaws.com/",
            "https://api.ecr.cn-north-1.amazonaws.com.cn:443",
            "https://ecr.eu-west-1.api.aws",
        ] {
            assert!(endpoint_allowed(ok, &[]), "{ok}");
        }
        for bad in [
            "https://evil.example.com",
            "https://amazonaws.com.evil.example.com",
            "https://evilamazonaws.com",
            "http://api.ecr.eu-west-1.amazonaws.com",
            "https://user@api.ecr.eu-west-1.amazonaws.com",
            "https://",
        ] {
            assert!(!endpoint_allowed(bad, &[]), "{bad}");
        }
        for bad in [
            "https://evil.example?x.api.ecr.eu-west-1.amazonaws.com",
            "https://evil.example#.api.ecr.eu-west-1.amazonaws.com",
            "https://my-bucket.s3.eu-west-1.amazonaws.com",
            "https://abc123.execute-api.eu-west-1.amazonaws.com",
        ] {
            assert!(!endpoint_allowed(bad, &[]), "{bad}");
        }
        let extra = vec!["internal.example".to_owned()];
        assert!(endpoint_allowed(
            "https://api.ecr.internal.example:8443",
            &extra
        ));
        assert!(!endpoint_allowed(
            "https://api.ecr.internal.example.evil",
            &extra
        ));
    }

    #[test]
    fn error_texts_lose_signatures_tokens_and_key_ids() {
        let text = "SignatureDoesNotMatch: The request signature we calculated does not match. \
            Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261130/eu-west-1/ecr/aws4_request, \
            Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7 \
            url https://x/?X-Amz-Security-Token=IQoJb3JpZ2luX2VjEJr%2F%2F%2F%2F&X-Amz-Date=1";
        let out = redact(text);
        for secret in [
            "AKIAIOSFODNN7EXAMPLE",
            "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
            "IQoJb3JpZ2luX2VjEJr",
        ] {
            assert!(!out.contains(secret), "{out}");
        }
        assert!(
            out.starts_with("SignatureDoesNotMatch: The request signature"),
            "{out}"
        );
        let denied = "User: arn:aws:sts::123456789012:assumed-role/ecr-pull-team-1234567890/regcred-team-1234567890-ecr is not authorized to perform: ecr:GetAuthorizationToken";
        assert_eq!(redact(denied), denied, "ARNs and actions stay readable");
        let bare = redact("The access key ID AKIAABCDEFGHIJKLMNOP does not exist");
        assert!(!bare.contains("AKIAABCDEFGHIJKLMNOP"), "{bare}");
        assert!(redact(&"x ".repeat(1000)).chars().count() <= 301);
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
