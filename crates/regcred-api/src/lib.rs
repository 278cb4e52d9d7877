//! regcred's API: the `RegistryCredential` (namespaced) and `ClusterRegistryCredential`
//! (cluster-scoped) custom resources in `regcred.io/v1alpha1`.
//!
//! This crate holds types, their schema and validation rules, and the names (labels,
//! annotations) that other components agree on. It performs no I/O.
#![forbid(unsafe_code)]

mod cluster;
pub mod names;
mod namespaced;
mod rules;
mod spec;
mod status;

pub use cluster::{ClusterRegistryCredential, ClusterRegistryCredentialSpec, NamespaceTargets};
pub use namespaced::{RegistryCredential, RegistryCredentialSpec};
pub use spec::{
    AwsKeysRef, CredentialSpec, DeletionPolicy, EcrAuth, EcrSource, Registry, Selector,
    SelectorOperator, SelectorRequirement, ServiceAccountRef, ServiceAccountTargets,
    SourceSecretRef, StaticSource,
};
pub use status::{CredentialStatus, MAX_FAILURES, TargetCounts, TargetFailure, condition_reasons};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// Every CRD this API defines, in a stable order, with all their validation rules (use
/// these rather than `CustomResourceExt::crd`, which lacks the rules on the whole object).
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![namespaced::crd(), cluster::crd()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rule on the whole object runs on every status write; unless it skips unchanged
    /// specs, an object stored before the rule existed would refuse the controller's status.
    #[test]
    fn rules_on_the_whole_object_skip_unchanged_specs() {
        for crd in crds() {
            for version in &crd.spec.versions {
                let schema = version.schema.as_ref().unwrap();
                let root = schema.open_api_v3_schema.as_ref().unwrap();
                let rules = root.x_kubernetes_validations.as_deref().unwrap_or_default();
                assert!(!rules.is_empty(), "{}", crd.spec.names.kind);
                for rule in rules {
                    assert_eq!(rule.optional_old_self, Some(true), "{}", rule.rule);
                    assert!(
                        rule.rule.starts_with("(oldSelf.hasValue() && "),
                        "{}",
                        rule.rule
                    );
                }
            }
        }
    }
}
