//! What the controller reports: conditions, target counts and a bounded list of failures.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of a credential, written only by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` tells whether every target namespace has a current Secret; its reason says
    /// why not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// The registry servers in the Secret, comma-separated (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registries: Option<String>,

    /// How many targets are in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<TargetCounts>,

    /// Namespaces where something is wrong, at most [`MAX_FAILURES`], sorted by namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<TargetFailure>,

    /// When the credentials were last read or minted and written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_time: Option<Time>,

    /// When the token in the Secrets expires (minted credentials only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,

    /// When the controller will mint a new token (or retry after a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_refresh_time: Option<Time>,

    /// Refresh attempts that failed in a row; 0 after a success.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refresh_failures: i32,

    /// The last value of the `regcred.io/refresh` annotation that was acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_request: Option<String>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// The most failures listed in status; the rest are only counted.
pub const MAX_FAILURES: usize = 10;

/// Counts of what the credential targets and what is in place.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetCounts {
    /// Namespaces targeted.
    pub namespaces: i32,
    /// Namespaces whose Secret holds the current credentials.
    pub secrets_ready: i32,
    /// ServiceAccounts targeted in those namespaces.
    pub service_accounts: i32,
    /// Targeted ServiceAccounts whose `imagePullSecrets` list the Secret.
    pub service_accounts_patched: i32,
    /// `secretsReady/namespaces`, for `kubectl get`.
    pub synced: String,
}

/// Something wrong in one namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetFailure {
    /// The namespace.
    pub namespace: String,
    /// A CamelCase reason, as in conditions.
    pub reason: String,
    /// What is wrong, for a person.
    pub message: String,
}

/// Reasons of the `Ready` condition. Each runtime fault has its own.
pub mod condition_reasons {
    /// Every target namespace has a current Secret.
    pub const READY: &str = "Synced";
    /// A source Secret does not exist.
    pub const SOURCE_NOT_FOUND: &str = "SourceNotFound";
    /// A source Secret exists but lacks the `regcred.io/source=true` label.
    pub const SOURCE_NOT_LABELLED: &str = "SourceNotLabelled";
    /// A source Secret lacks a key or holds something unusable.
    pub const SOURCE_INVALID: &str = "SourceInvalid";
    /// Some namespaces could not be written (see `failures`).
    pub const PARTIALLY_SYNCED: &str = "PartiallySynced";
    /// A Secret with the target name exists and is not regcred's, or another credential
    /// owns it.
    pub const CONFLICT: &str = "Conflict";
    /// No namespace is targeted.
    pub const NO_TARGETS: &str = "NoTargets";
    /// The API server refused or failed a request.
    pub const API_ERROR: &str = "ApiError";
    /// AWS refused the credentials or the operation.
    pub const AWS_ACCESS_DENIED: &str = "AwsAccessDenied";
    /// AWS throttled the requests.
    pub const AWS_THROTTLED: &str = "AwsThrottled";
    /// The AWS endpoint could not be reached or was unavailable.
    pub const AWS_UNREACHABLE: &str = "AwsUnreachable";
    /// STS refused the ServiceAccount token, or the credentials expired.
    pub const AWS_INVALID_IDENTITY: &str = "AwsInvalidIdentity";
    /// Another AWS error.
    pub const AWS_ERROR: &str = "AwsError";
    /// The ECR registry's configuration cannot be used (for example the controller's own
    /// AWS identity for a namespaced credential).
    pub const AWS_NOT_ALLOWED: &str = "AwsIdentityNotAllowed";
    /// The current token has expired and no new one could be minted.
    pub const EXPIRED: &str = "Expired";
    /// A ServiceAccount token for ECR web identity could not be requested (denied,
    /// throttled, or the API server failed).
    pub const TOKEN_REQUEST_FAILED: &str = "TokenRequestFailed";
    /// `ecr.endpoint` names a host the operator has not allowed for RegistryCredentials.
    pub const AWS_ENDPOINT_NOT_ALLOWED: &str = "AwsEndpointNotAllowed";
}
