//! `ClusterRegistryCredential`: one credential kept right across many namespaces.

use kube::CustomResource;
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

use crate::spec::Selector;
use crate::{CredentialSpec, CredentialStatus, rules};

/// Keeps a pull Secret and the `imagePullSecrets` of ServiceAccounts right in every
/// targeted namespace. For the platform team.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "regcred.io",
    version = "v1alpha1",
    kind = "ClusterRegistryCredential",
    shortname = "cregcred",
    status = "CredentialStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Registries","type":"string","jsonPath":".status.registries"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","description":"Namespaces with a current Secret / namespaces targeted","jsonPath":".status.targets.synced"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","description":"When the current token expires","jsonPath":".status.expiresAt"}"#,
    printcolumn = r#"{"name":"Next Refresh","type":"string","jsonPath":".status.nextRefreshTime","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = sources_name_their_namespace)]
pub struct ClusterRegistryCredentialSpec {
    #[serde(flatten)]
    pub credential: CredentialSpec,

    /// Which namespaces get the Secret. Absent: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<NamespaceTargets>,
}

fn sources_name_their_namespace(schema: &mut Schema) {
    rules::add_rule(
        schema,
        "self.registries.all(r, !has(r.static) || has(r.static.secretRef.namespace))",
        "a ClusterRegistryCredential must name the namespace of each source Secret (secretRef.namespace)",
    );
    rules::add_rule(
        schema,
        "self.registries.all(r, !has(r.ecr) || !has(r.ecr.auth) || ((!has(r.ecr.auth.secretRef) || has(r.ecr.auth.secretRef.namespace)) && (!has(r.ecr.auth.serviceAccountRef) || has(r.ecr.auth.serviceAccountRef.namespace))))",
        "a ClusterRegistryCredential must name the namespace of ecr.auth.secretRef and ecr.auth.serviceAccountRef",
    );
}

/// Which namespaces a `ClusterRegistryCredential` covers. Set at most one of `names` and
/// `selector`; neither means all. `exclude` always wins.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = one_way_to_pick_namespaces)]
pub struct NamespaceTargets {
    /// Namespaces by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), transform = namespace_names)]
    pub names: Option<Vec<String>>,

    /// Namespaces by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,

    /// Namespaces never covered, whatever else matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), transform = namespace_names)]
    pub exclude: Vec<String>,
}

fn one_way_to_pick_namespaces(schema: &mut Schema) {
    rules::add_rule(
        schema,
        "!(has(self.names) && has(self.selector))",
        "namespaces: set either names or selector, not both",
    );
}

fn namespace_names(schema: &mut Schema) {
    rules::bound_items(schema, 63);
    rules::all_match(
        schema,
        rules::DNS_LABEL,
        "namespace names must be valid DNS labels",
    );
}
