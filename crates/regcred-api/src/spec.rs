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
    #[schemars(length(min = 1, max = 32), transform = unique_servers)]
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
}

impl CredentialSpec {
    /// The generated Secret's name: `secretName`, or else the credential's name.
    pub fn secret_name_or<'a>(&'a self, credential_name: &'a str) -> &'a str {
        self.secret_name.as_deref().unwrap_or(credential_name)
    }
}

fn unique_servers(schema: &mut Schema) {
    rules::add_rule(
        schema,
        "self.all(r, !has(r.server) || self.filter(o, has(o.server) && o.server == r.server).size() == 1)",
        "registries: each server may appear only once (they are merged into one .dockerconfigjson)",
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
}

fn registry_rules(schema: &mut Schema) {
    rules::add_rule(
        schema,
        "has(self.static)",
        "each registry needs exactly one provider; supported: static",
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
        "a Secret key may contain only letters, digits, '-', '_' and '.'",
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
    let key = format!("'{}'", rules::LABEL_KEY.replace('\\', "\\\\"));
    let value = format!("'{}'", rules::LABEL_VALUE.replace('\\', "\\\\"));
    rules::add_rule(
        schema,
        &format!("self.all(k, k.size() <= 253 && k.matches({key}))"),
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
    #[schemars(length(min = 1, max = 316))]
    pub key: String,
    /// One of `In`, `NotIn`, `Exists`, `DoesNotExist`.
    pub operator: SelectorOperator,
    /// Values for `In` and `NotIn` (required there); empty for `Exists` and `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), transform = label_values)]
    pub values: Vec<String>,
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
