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
use kube::CustomResourceExt;

/// Every CRD this API defines, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![RegistryCredential::crd(), ClusterRegistryCredential::crd()]
}
