//! `RegistryCredential`: one namespace's credential, safe to hand to a tenant.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
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

/// The CRD with its rules on the whole object.
pub(crate) fn crd() -> CustomResourceDefinition {
    let mut crd = RegistryCredential::crd();
    let name = rules::PULL_SECRET_NAME;
    rules::add_root_rule(
        &mut crd,
        &format!(
            "!has(self.spec) || !has(self.metadata.name) || self.spec.registries.all(r, !(has(r.static) && r.static.secretRef.name == {name}) && !(has(r.ecr) && has(r.ecr.auth) && has(r.ecr.auth.secretRef) && r.ecr.auth.secretRef.name == {name}))"
        ),
        "the pull Secret would have the name of a source Secret of this credential (the pull Secret is named secretName, or the credential's name when secretName is absent): set a different secretName",
        ".spec.secretName",
    );
    crd
}

fn own_namespace_only(schema: &mut Schema) {
    crate::spec::shared_spec_rules(schema);
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
