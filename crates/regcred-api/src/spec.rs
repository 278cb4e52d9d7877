//! The spec shared by both kinds: which registries, which Secret, which ServiceAccounts.

use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

use crate::rules;

/// What a credential keeps in place. Shared by `RegistryCredential` and
/// `ClusterRegistryCredential`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialSpec {
    /// Registries whose credentials are merged into one `.dockerconfigjson`. Servers must
    /// be unique.
    #[schemars(length(min = 1, max = 32), transform = unique_hosts)]
    pub registries: Vec<Registry>,

    /// Name of the generated `kubernetes.io/dockerconfigjson` Secret in each target
    /// namespace. Defaults to the credential's own name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), transform = secret_name)]
    pub secret_name: Option<String>,

    /// Which ServiceAccounts get the Secret in their `imagePullSecrets`. Absent: every
    /// ServiceAccount of the namespace (Helm charts mostly create their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_accounts: Option<ServiceAccountTargets>,

    /// What happens to the written Secrets and `imagePullSecrets` entries when this
    /// credential is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// How long before a minted token expires it is renewed, e.g. `4h` or `90m`. Default:
    /// a third of the token's lifetime (ECR: 4h of 12h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 16), transform = duration)]
    pub renew_before: Option<String>,
}

fn duration(schema: &mut Schema) {
    rules::matches(
        schema,
        rules::DURATION,
        "renewBefore must be a duration such as 4h, 90m or 1h30m",
    );
    // duration() fails with CEL's own type-conversion text on a huge value (99999999h):
    // it is called only on a string short enough, and a longer one is simply too long.
    rules::add_rule(
        schema,
        &format!(
            "!self.matches({}) || (self.matches({}) && duration(self) >= duration('1m') && duration(self) <= duration('168h'))",
            rules::cel_regex(rules::DURATION),
            rules::cel_regex(rules::DURATION_FOR_CEL),
        ),
        "renewBefore must be between 1m and 168h",
    );
}

/// The AWS registry domain of a region, as `regcred_providers::ecr::registry_host` has it,
/// as a CEL expression over the region string `region`.
fn ecr_domain(region: &str) -> String {
    format!(
        "({region}.startsWith('cn-') ? 'amazonaws.com.cn' : {region}.startsWith('us-isob-') ? 'sc2s.sgov.gov' : {region}.startsWith('us-iso-') ? 'c2s.ic.gov' : 'amazonaws.com')"
    )
}

/// Rules of the shared spec that involve more than one field. Both kinds flatten the
/// shared spec into their own, so each kind's schema transform calls this.
pub(crate) fn shared_spec_rules(schema: &mut Schema) {
    // ECR tokens live 12 hours: a longer renewBefore cannot be honoured, and the
    // controller would fall back to a third of the lifetime.
    rules::add_rule_at(
        schema,
        &format!(
            "!has(self.renewBefore) || !self.renewBefore.matches({}) || !self.registries.exists(r, has(r.ecr)) || duration(self.renewBefore) < duration('12h')",
            rules::cel_regex(rules::DURATION_FOR_CEL),
        ),
        "renewBefore must be shorter than 12h, the lifetime of an ECR token (the default is 4h, a third of it)",
        ".renewBefore",
    );
}

impl CredentialSpec {
    /// The generated Secret's name: `secretName`, or else the credential's name.
    pub fn secret_name_or<'a>(&'a self, credential_name: &'a str) -> &'a str {
        self.secret_name.as_deref().unwrap_or(credential_name)
    }
}

fn unique_hosts(schema: &mut Schema) {
    rules::add_rule(
        schema,
        "self.all(r, !has(r.server) || self.filter(o, has(o.server) && o.server == r.server).size() == 1)",
        "registries: each server may appear only once (they are merged into one .dockerconfigjson)",
    );
    // Two entries writing one host: the merged .dockerconfigjson keeps only one of them.
    rules::add_rule(
        schema,
        "self.all(r, !has(r.ecr) || !has(r.ecr.registryIds) || r.ecr.registryIds.all(id, self.filter(o, has(o.ecr) && o.ecr.region == r.ecr.region && has(o.ecr.registryIds) && id in o.ecr.registryIds).size() == 1))",
        "registries: two ecr entries list the same account in the same region, so both would write the same registry host: list each account once per region",
    );
    rules::add_rule(
        schema,
        &format!(
            "self.all(r, !has(r.ecr) || !has(r.ecr.registryIds) || r.ecr.registryIds.all(id, !self.exists(s, has(s.server) && s.server == id + '.dkr.ecr.' + r.ecr.region + '.' + {})))",
            ecr_domain("r.ecr.region")
        ),
        "registries: a server is also the registry host of an account in an ecr entry (<id>.dkr.ecr.<region>.<domain>); each host may appear only once",
    );
}

fn secret_name(schema: &mut Schema) {
    rules::matches(
        schema,
        rules::DNS_SUBDOMAIN,
        "secretName must be a valid Secret name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
    );
}

/// One registry and the provider of its credential. Exactly one provider must be set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = registry_rules)]
pub struct Registry {
    /// The registry as kubelet matches images against it: `host[:port][/path]`, no
    /// scheme; a host label may be a glob (`*.example.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), transform = server)]
    pub server: Option<String>,

    /// A user name and password read from a Secret labelled `regcred.io/source=true`.
    #[serde(default, rename = "static", skip_serializing_if = "Option::is_none")]
    pub static_source: Option<StaticSource>,

    /// An AWS ECR authorization token, minted by the controller and renewed before it
    /// expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecr: Option<EcrSource>,
}

fn registry_rules(schema: &mut Schema) {
    rules::add_rule(
        schema,
        "(has(self.static) ? 1 : 0) + (has(self.ecr) ? 1 : 0) == 1",
        "each registry needs exactly one provider: static or ecr",
    );
    rules::add_rule(
        schema,
        "!has(self.ecr) || !has(self.server)",
        "an ecr registry takes its hosts from ecr.registryIds (or the token's proxyEndpoint): remove server",
    );
    rules::add_rule(
        schema,
        "!has(self.static) || has(self.server)",
        "a registry with a static provider needs a server (host[:port][/path])",
    );
}

fn server(schema: &mut Schema) {
    rules::matches(
        schema,
        rules::SERVER,
        "server must be host[:port][/path] in lowercase without a scheme, e.g. harbor.example.com or registry.example.com:5000/team",
    );
    rules::port_in_range(
        schema,
        "^",
        "server: the port must be a number from 1 to 65535 without leading zeros, e.g. registry.example.com:5000",
    );
}

/// AWS ECR: one `GetAuthorizationToken` call per refresh, whatever the number of target
/// namespaces; the token is written under each listed account's registry host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = ecr_rules)]
pub struct EcrSource {
    /// AWS region of the registries, e.g. `eu-west-1` or `cn-north-1`.
    #[schemars(length(min = 1, max = 32), transform = region)]
    pub region: String,

    /// AWS account IDs whose registry hosts (`<id>.dkr.ecr.<region>.<domain>`) get the
    /// token. Empty: the host of the token's `proxyEndpoint` (the caller's own account).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), transform = account_ids)]
    pub registry_ids: Vec<String>,

    /// How AWS credentials are obtained. Absent: the controller's own AWS credential
    /// chain, which only a `ClusterRegistryCredential` may use unless the controller runs
    /// with `--allow-controller-aws-identity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<EcrAuth>,

    /// An `https://` URL for the ECR API instead of the public one (a VPC endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 253), transform = https_url)]
    pub endpoint: Option<String>,
}

fn ecr_rules(schema: &mut Schema) {
    // IAM roles cannot be assumed across partitions, and STS is called in `region`.
    rules::add_rule_at(
        schema,
        "!has(self.auth) || !has(self.auth.roleArn) || (self.region.startsWith('cn-') ? self.auth.roleArn.startsWith('arn:aws-cn:') : self.region.startsWith('us-gov-') ? self.auth.roleArn.startsWith('arn:aws-us-gov:') : self.region.startsWith('us-isob-') ? self.auth.roleArn.startsWith('arn:aws-iso-b:') : self.region.startsWith('us-iso-') ? self.auth.roleArn.startsWith('arn:aws-iso:') : (self.region.matches('^[a-z]{2}-(gov|iso)') || self.auth.roleArn.startsWith('arn:aws:')))",
        "roleArn is in another AWS partition than region: use arn:aws-cn: for cn-* regions, arn:aws-us-gov: for us-gov-*, arn:aws-iso: for us-iso-*, arn:aws-iso-b: for us-isob-*, arn:aws: for the others",
        ".auth.roleArn",
    );
    // A token is valid in the region of the API that issued it, and requests are signed
    // for `region`: an AWS endpoint of another region cannot work.
    rules::add_rule_at(
        schema,
        r"!has(self.endpoint) || !self.endpoint.matches('^https://[^/]*\\.amazonaws\\.com(\\.cn)?(:[0-9]+)?(/.*)?$') || self.endpoint.contains('.' + self.region + '.')",
        "endpoint is an AWS endpoint of another region than region: use the ECR API endpoint of region (its host names the region, e.g. api.ecr.eu-west-1.amazonaws.com)",
        ".endpoint",
    );
    // regcred writes <id>.dkr.ecr.<region>.<domain> and knows the domains of the
    // partitions aws, aws-cn, aws-us-gov, aws-iso and aws-iso-b only.
    rules::add_rule_at(
        schema,
        "!has(self.registryIds) || size(self.registryIds) == 0 || !self.region.matches('^[a-z]{2}-iso[ac-z]-')",
        "registryIds: regcred does not know the registry hosts of this region's partition; omit registryIds to use the host of the token's proxyEndpoint",
        ".registryIds",
    );
}

fn region(schema: &mut Schema) {
    rules::matches(
        schema,
        r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]+$",
        "region must be an AWS region such as eu-west-1, us-gov-west-1 or cn-north-1",
    );
}

fn account_ids(schema: &mut Schema) {
    rules::bound_items(schema, 12);
    rules::all_match(
        schema,
        r"^[0-9]{12}$",
        "registryIds must be 12-digit AWS account IDs",
    );
    rules::unique(schema, "registryIds must not list an account twice");
}

fn https_url(schema: &mut Schema) {
    rules::matches(
        schema,
        r"^https://[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*(:[0-9]{1,5})?(/[^\s?#]*)?$",
        "endpoint must be an https:// URL with a lowercase host name, no spaces, query or fragment, e.g. https://api.ecr.eu-west-1.amazonaws.com",
    );
    rules::port_in_range(
        schema,
        "^https://",
        "endpoint: the port must be a number from 1 to 65535 without leading zeros",
    );
}

/// Where AWS credentials come from. Set at most one of `secretRef` and
/// `serviceAccountRef`; `roleArn` may be added to either, or stand alone on top of the
/// controller's own identity.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = one_way_to_authenticate)]
pub struct EcrAuth {
    /// Access keys in a Secret labelled `regcred.io/source=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<AwsKeysRef>,

    /// A ServiceAccount whose token the controller requests and exchanges with STS
    /// `AssumeRoleWithWebIdentity` (IRSA-style, no keys anywhere). The role comes from
    /// `roleArn` or from the ServiceAccount's `eks.amazonaws.com/role-arn` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_ref: Option<ServiceAccountRef>,

    /// A role to assume: with `serviceAccountRef` the web-identity role; otherwise a role
    /// assumed on top of the other credentials (cross-account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 20, max = 2048), transform = role_arn)]
    pub role_arn: Option<String>,
}

fn one_way_to_authenticate(schema: &mut Schema) {
    rules::add_rule(
        schema,
        "!(has(self.secretRef) && has(self.serviceAccountRef))",
        "ecr.auth: set either secretRef or serviceAccountRef, not both",
    );
}

fn role_arn(schema: &mut Schema) {
    rules::matches(
        schema,
        r"^arn:aws(-cn|-us-gov|-iso|-iso-b)?:iam::[0-9]{12}:role/([A-Za-z0-9+=,.@_-]+/)*[A-Za-z0-9+=,.@_-]{1,64}$",
        "roleArn must be an IAM role ARN such as arn:aws:iam::123456789012:role/ecr-pull",
    );
}

/// A Secret holding AWS access keys, and the keys to read.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = distinct_aws_keys)]
pub struct AwsKeysRef {
    /// Name of the Secret. It must carry the label `regcred.io/source=true`.
    #[schemars(length(min = 1, max = 253), transform = source_name)]
    pub name: String,

    /// Namespace of the Secret: required on a `ClusterRegistryCredential`, refused on a
    /// `RegistryCredential`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), transform = source_namespace)]
    pub namespace: Option<String>,

    /// Key holding the access key ID.
    #[serde(default = "default_access_key_id_key")]
    #[schemars(length(min = 1, max = 253), transform = secret_key)]
    pub access_key_id_key: String,

    /// Key holding the secret access key.
    #[serde(default = "default_secret_access_key_key")]
    #[schemars(length(min = 1, max = 253), transform = secret_key)]
    pub secret_access_key_key: String,

    /// Key holding a session token, read if present.
    #[serde(default = "default_session_token_key")]
    #[schemars(length(min = 1, max = 253), transform = secret_key)]
    pub session_token_key: String,
}

fn distinct_aws_keys(schema: &mut Schema) {
    rules::add_rule_at(
        schema,
        "!has(self.accessKeyIdKey) || !has(self.secretAccessKeyKey) || !has(self.sessionTokenKey) || (self.accessKeyIdKey != self.secretAccessKeyKey && self.accessKeyIdKey != self.sessionTokenKey && self.secretAccessKeyKey != self.sessionTokenKey)",
        "secretRef: accessKeyIdKey, secretAccessKeyKey and sessionTokenKey must name three different keys",
        ".secretAccessKeyKey",
    );
}

fn default_access_key_id_key() -> String {
    "AWS_ACCESS_KEY_ID".into()
}

fn default_secret_access_key_key() -> String {
    "AWS_SECRET_ACCESS_KEY".into()
}

fn default_session_token_key() -> String {
    "AWS_SESSION_TOKEN".into()
}

/// A ServiceAccount whose tokens stand for an AWS role.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = audience_rules)]
pub struct ServiceAccountRef {
    /// Name of the ServiceAccount.
    #[schemars(length(min = 1, max = 253), transform = service_account_name)]
    pub name: String,

    /// Namespace of the ServiceAccount: required on a `ClusterRegistryCredential`, refused
    /// on a `RegistryCredential`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), transform = service_account_namespace)]
    pub namespace: Option<String>,

    /// The token's audience, as the IAM OIDC provider expects it.
    #[serde(default = "default_audience")]
    #[schemars(length(min = 1, max = 253), transform = audience)]
    pub audience: String,
}

fn default_audience() -> String {
    "sts.amazonaws.com".into()
}

fn service_account_name(schema: &mut Schema) {
    rules::matches(
        schema,
        rules::DNS_SUBDOMAIN,
        "serviceAccountRef.name must be a valid ServiceAccount name",
    );
}

fn service_account_namespace(schema: &mut Schema) {
    rules::matches(
        schema,
        rules::DNS_LABEL,
        "serviceAccountRef.namespace must be a valid namespace name",
    );
}

fn audience(schema: &mut Schema) {
    rules::matches(
        schema,
        r"^\S+$",
        "serviceAccountRef.audience must not contain spaces",
    );
}

fn audience_rules(schema: &mut Schema) {
    rules::add_rule(
        schema,
        "!self.audience.startsWith('https://kubernetes.default') && self.audience != 'kubernetes' && self.audience != 'api'",
        "serviceAccountRef.audience must not be the Kubernetes API server's own audience: a token for STS must not also open the cluster",
    );
}

/// Static credentials: a user name and password kept in a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StaticSource {
    /// The Secret holding the user name and password. It must carry the label
    /// `regcred.io/source=true`.
    pub secret_ref: SourceSecretRef,
}

/// A reference to a source Secret and the keys to read from it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = distinct_login_keys)]
pub struct SourceSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), transform = source_name)]
    pub name: String,

    /// Namespace of the Secret. Only a `ClusterRegistryCredential` names one (and must); a
    /// `RegistryCredential` always reads from its own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), transform = source_namespace)]
    pub namespace: Option<String>,

    /// Key holding the user name.
    #[serde(default = "default_username_key")]
    #[schemars(length(min = 1, max = 253), transform = secret_key)]
    pub username_key: String,

    /// Key holding the password or token.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253), transform = secret_key)]
    pub password_key: String,
}

fn distinct_login_keys(schema: &mut Schema) {
    rules::add_rule_at(
        schema,
        "!has(self.usernameKey) || !has(self.passwordKey) || self.usernameKey != self.passwordKey",
        "secretRef: usernameKey and passwordKey must name different keys",
        ".passwordKey",
    );
}

fn default_username_key() -> String {
    "username".into()
}

fn default_password_key() -> String {
    "password".into()
}

fn source_name(schema: &mut Schema) {
    rules::matches(
        schema,
        rules::DNS_SUBDOMAIN,
        "secretRef.name must be a valid Secret name",
    );
}

fn source_namespace(schema: &mut Schema) {
    rules::matches(
        schema,
        rules::DNS_LABEL,
        "secretRef.namespace must be a valid namespace name",
    );
}

fn secret_key(schema: &mut Schema) {
    rules::matches(
        schema,
        rules::SECRET_KEY,
        "a Secret key may contain only letters, digits, '-', '_' and '.', and may not be '.' or start with '..'",
    );
}

/// Which ServiceAccounts of a target namespace are patched. Set at most one of `names` and
/// `selector`; neither means all. `names: []` patches none (Secret only).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = one_way_to_pick_service_accounts)]
pub struct ServiceAccountTargets {
    /// ServiceAccounts by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), transform = service_account_names)]
    pub names: Option<Vec<String>>,

    /// ServiceAccounts by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
}

fn one_way_to_pick_service_accounts(schema: &mut Schema) {
    rules::add_rule(
        schema,
        "!(has(self.names) && has(self.selector))",
        "serviceAccounts: set either names or selector, not both",
    );
}

fn service_account_names(schema: &mut Schema) {
    rules::bound_items(schema, 253);
    rules::all_match(
        schema,
        rules::DNS_SUBDOMAIN,
        "serviceAccounts.names must be valid ServiceAccount names",
    );
    rules::unique(schema, "serviceAccounts.names must not list a name twice");
}

/// A label selector, as in Kubernetes: all `matchLabels` and all `matchExpressions` must
/// hold.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    /// Labels that must be present with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32), transform = match_labels)]
    pub match_labels: BTreeMap<String, String>,

    /// Set-based requirements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub match_expressions: Vec<SelectorRequirement>,
}

fn match_labels(schema: &mut Schema) {
    if let Some(serde_json::Value::Object(values)) = schema.get_mut("additionalProperties") {
        values.insert("maxLength".into(), 63.into());
    }
    let value = rules::cel_regex(rules::LABEL_VALUE);
    rules::add_rule(
        schema,
        &format!("self.all(k, {})", rules::is_label_key("k")),
        "matchLabels keys must be valid label keys ([prefix/]name)",
    );
    rules::add_rule(
        schema,
        &format!("self.all(k, self[k].size() <= 63 && self[k].matches({value}))"),
        "matchLabels values must be valid label values (at most 63 letters, digits, '-', '_' or '.')",
    );
}

/// One set-based requirement of a [`Selector`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = requirement_rules)]
pub struct SelectorRequirement {
    /// The label key.
    #[schemars(length(min = 1, max = 317), transform = label_key)]
    pub key: String,
    /// One of `In`, `NotIn`, `Exists`, `DoesNotExist`.
    pub operator: SelectorOperator,
    /// Values for `In` and `NotIn` (required there); empty for `Exists` and `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), transform = label_values)]
    pub values: Vec<String>,
}

fn label_key(schema: &mut Schema) {
    rules::add_rule(
        schema,
        &rules::is_label_key("self"),
        "matchExpressions keys must be valid label keys ([prefix/]name): an optional DNS subdomain and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
    );
}

fn requirement_rules(schema: &mut Schema) {
    rules::add_rule(
        schema,
        "(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",
        "matchExpressions: In and NotIn need values; Exists and DoesNotExist take none",
    );
}

fn label_values(schema: &mut Schema) {
    rules::all_match(
        schema,
        rules::LABEL_VALUE,
        "matchExpressions values must be valid label values",
    );
    rules::bound_items(schema, 63);
}

/// Operator of a [`SelectorRequirement`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// What deletion of the credential does to what it wrote.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Remove the Secrets (through their ownerReference) and the `imagePullSecrets`
    /// entries regcred added.
    #[default]
    Delete,
    /// Leave the Secrets (they carry no ownerReference) and the entries in place.
    Orphan,
}
