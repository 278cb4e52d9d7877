//! `RegistryCredential`: one namespace's credential, safe to hand to a tenant.

use kube::CustomResource;
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

use crate::{CredentialSpec, CredentialStatus, rules};

/// Keeps a pull Secret and the `imagePullSecrets` of ServiceAccounts right in its own
/// namespace. Reads sources, writes the Secret and patches ServiceAccounts only there.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "regcred.io",
    version = "v1alpha1",
    kind = "RegistryCredential",
    namespaced,
    shortname = "regcred",
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
#[schemars(transform = own_namespace_only)]
pub struct RegistryCredentialSpec {
    #[serde(flatten)]
    pub credential: CredentialSpec,
}

fn own_namespace_only(schema: &mut Schema) {
    rules::add_rule(
        schema,
        "self.registries.all(r, !has(r.static) || !has(r.static.secretRef.namespace))",
        "a RegistryCredential reads Secrets only in its own namespace: remove secretRef.namespace (only a ClusterRegistryCredential names one)",
    );
    rules::add_rule(
        schema,
        "self.registries.all(r, !has(r.ecr) || !has(r.ecr.auth) || ((!has(r.ecr.auth.secretRef) || !has(r.ecr.auth.secretRef.namespace)) && (!has(r.ecr.auth.serviceAccountRef) || !has(r.ecr.auth.serviceAccountRef.namespace))))",
        "a RegistryCredential uses Secrets and ServiceAccounts of its own namespace only: remove ecr.auth.*.namespace",
    );
}
