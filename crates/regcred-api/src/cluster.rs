//! `ClusterRegistryCredential`: one credential kept right across many namespaces.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
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

/// The CRD with its rules on the whole object.
pub(crate) fn crd() -> CustomResourceDefinition {
    let mut crd = ClusterRegistryCredential::crd();
    let name = rules::PULL_SECRET_NAME;
    // Whether the namespace `n` is surely targeted; with a selector it cannot be known here.
    let targeted = |n: &str| {
        format!(
            "((!has(self.spec.namespaces) || (has(self.spec.namespaces.names) ? {n} in self.spec.namespaces.names : !has(self.spec.namespaces.selector))) && !(has(self.spec.namespaces) && has(self.spec.namespaces.exclude) && {n} in self.spec.namespaces.exclude))"
        )
    };
    let source = targeted("r.static.secretRef.namespace");
    let keys = targeted("r.ecr.auth.secretRef.namespace");
    rules::add_root_rule(
        &mut crd,
        &format!(
            "!has(self.spec) || !has(self.metadata.name) || self.spec.registries.all(r, !(has(r.static) && has(r.static.secretRef.namespace) && r.static.secretRef.name == {name} && {source}) && !(has(r.ecr) && has(r.ecr.auth) && has(r.ecr.auth.secretRef) && has(r.ecr.auth.secretRef.namespace) && r.ecr.auth.secretRef.name == {name} && {keys}))"
        ),
        "the pull Secret would have the name of a source Secret in a namespace this credential targets (the pull Secret is named secretName, or the credential's name when secretName is absent): set a different secretName, or exclude the source's namespace",
        ".spec.secretName",
    );
    crd
}

fn sources_name_their_namespace(schema: &mut Schema) {
    crate::spec::shared_spec_rules(schema);
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
    rules::add_rule_at(
        schema,
        "!has(self.names) || !has(self.exclude) || !self.names.exists(n, n in self.exclude)",
        "namespaces: a namespace is in both names and exclude; exclude wins, so it would never get the Secret: remove it from one of them",
        ".exclude",
    );
}

fn namespace_names(schema: &mut Schema) {
    rules::bound_items(schema, 63);
    rules::all_match(
        schema,
        rules::DNS_LABEL,
        "namespace names must be valid DNS labels",
    );
    rules::unique(
        schema,
        "namespaces: names and exclude must not list a namespace twice",
    );
}
