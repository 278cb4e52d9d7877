//! One face for both kinds, so targeting, writing and status are written once.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Api, Client, Resource, ResourceExt};
use regcred_api::names::owner_key;
use regcred_api::{
    ClusterRegistryCredential, CredentialSpec, CredentialStatus, EcrSource, RegistryCredential,
    SourceSecretRef,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::selector;

/// Which of the two kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    Namespaced,
    Cluster,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Namespaced => "RegistryCredential",
            Kind::Cluster => "ClusterRegistryCredential",
        }
    }
}

/// A credential's identity; its string form is what managed objects record as owner.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct CredentialId {
    pub(crate) kind: Kind,
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
}

impl CredentialId {
    /// Parses `RegistryCredential/<ns>/<name>` or `ClusterRegistryCredential/<name>`.
    pub(crate) fn parse(key: &str) -> Option<Self> {
        let mut parts = key.split('/');
        let id = match (parts.next()?, parts.next()?, parts.next()) {
            ("RegistryCredential", ns, Some(name)) => CredentialId {
                kind: Kind::Namespaced,
                namespace: Some(ns.to_owned()),
                name: name.to_owned(),
            },
            ("ClusterRegistryCredential", name, None) => CredentialId {
                kind: Kind::Cluster,
                namespace: None,
                name: name.to_owned(),
            },
            _ => return None,
        };
        parts.next().is_none().then_some(id)
    }
}

impl fmt::Display for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&owner_key(
            self.kind.as_str(),
            self.namespace.as_deref(),
            &self.name,
        ))
    }
}

/// What targeting needs to know of a namespace.
pub(crate) struct NamespaceView<'a> {
    pub(crate) name: &'a str,
    /// As cached: without [`NAME_LABEL`], which [`NamespaceView::label`] adds back.
    pub(crate) labels: Option<&'a BTreeMap<String, String>>,
}

/// The label the API server sets on every namespace, to its name (immutable). Not cached:
/// on most namespaces it is the only label, and a label map costs a 544-byte tree node.
pub(crate) const NAME_LABEL: &str = "kubernetes.io/metadata.name";

impl<'a> NamespaceView<'a> {
    pub(crate) fn label(&self, key: &str) -> Option<&'a str> {
        if key == NAME_LABEL {
            return Some(self.name);
        }
        self.labels?.get(key).map(String::as_str)
    }
}

/// Behaviour both kinds share.
pub(crate) trait Credential:
    Resource<DynamicType = ()>
    + Clone
    + fmt::Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const KIND: Kind;
    fn spec(&self) -> &CredentialSpec;
    fn status(&self) -> Option<&CredentialStatus>;
    /// Whether this credential wants its Secret in `namespace` (terminating namespaces are
    /// filtered out by the caller).
    fn covers_namespace(&self, namespace: &NamespaceView<'_>) -> bool;
    /// The API for this kind (`namespace` is ignored for the cluster kind).
    fn api(client: Client, namespace: Option<&str>) -> Api<Self>;
    /// The namespace a source Secret is read from.
    fn source_namespace<'a>(&'a self, source: &'a SourceSecretRef) -> Option<&'a str>;

    fn id(&self) -> CredentialId {
        CredentialId {
            kind: Self::KIND,
            namespace: self.namespace(),
            name: self.name_any(),
        }
    }

    fn secret_name(&self) -> String {
        self.spec()
            .secret_name_or(&self.meta().name.clone().unwrap_or_default())
            .to_owned()
    }

    /// The ownerReference managed Secrets carry (so garbage collection removes them).
    fn owner_reference(&self) -> Option<OwnerReference> {
        self.controller_owner_ref(&())
    }

    /// Its ECR registries: those whose credentials are minted.
    fn ecr_sources(&self) -> impl Iterator<Item = &EcrSource> {
        self.spec().registries.iter().filter_map(|r| r.ecr.as_ref())
    }

    /// Whether it has minted registries at all.
    fn has_minted(&self) -> bool {
        self.ecr_sources().next().is_some()
    }
}

impl Credential for RegistryCredential {
    const KIND: Kind = Kind::Namespaced;

    fn spec(&self) -> &CredentialSpec {
        &self.spec.credential
    }

    fn status(&self) -> Option<&CredentialStatus> {
        self.status.as_ref()
    }

    fn covers_namespace(&self, namespace: &NamespaceView<'_>) -> bool {
        self.metadata.namespace.as_deref() == Some(namespace.name)
    }

    fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
        Api::namespaced(client, namespace.unwrap_or_default())
    }

    fn source_namespace<'a>(&'a self, _source: &'a SourceSecretRef) -> Option<&'a str> {
        // Tenancy: a namespaced credential reads only its own namespace, whatever it says.
        self.metadata.namespace.as_deref()
    }
}

impl Credential for ClusterRegistryCredential {
    const KIND: Kind = Kind::Cluster;

    fn spec(&self) -> &CredentialSpec {
        &self.spec.credential
    }

    fn status(&self) -> Option<&CredentialStatus> {
        self.status.as_ref()
    }

    fn covers_namespace(&self, namespace: &NamespaceView<'_>) -> bool {
        let Some(targets) = &self.spec.namespaces else {
            return true;
        };
        if targets.exclude.iter().any(|n| n == namespace.name) {
            return false;
        }
        match (&targets.names, &targets.selector) {
            (Some(names), _) => names.iter().any(|n| n == namespace.name),
            (None, Some(sel)) => selector::matches_by(sel, |key| namespace.label(key)),
            (None, None) => true,
        }
    }

    fn api(client: Client, _namespace: Option<&str>) -> Api<Self> {
        Api::all(client)
    }

    fn source_namespace<'a>(&'a self, source: &'a SourceSecretRef) -> Option<&'a str> {
        source.namespace.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_their_string_form() {
        for key in [
            "RegistryCredential/team-a/harbor",
            "ClusterRegistryCredential/harbor",
        ] {
            assert_eq!(CredentialId::parse(key).unwrap().to_string(), key);
        }
        for bad in [
            "RegistryCredential/x",
            "Other/x",
            "ClusterRegistryCredential/a/b",
            "",
        ] {
            assert_eq!(CredentialId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn selectors_see_the_name_label_the_cache_leaves_out() {
        let credential: ClusterRegistryCredential = serde_json::from_value(serde_json::json!({
            "apiVersion": "regcred.io/v1alpha1",
            "kind": "ClusterRegistryCredential",
            "metadata": {"name": "harbor"},
            "spec": {
                "registries": [],
                "namespaces": {"selector": {"matchExpressions": [
                    {"key": NAME_LABEL, "operator": "In", "values": ["team-a"]},
                    {"key": "tier", "operator": "NotIn", "values": ["test"]},
                ]}},
            },
        }))
        .unwrap();
        let test = BTreeMap::from([("tier".to_owned(), "test".to_owned())]);
        let view = |name, labels| NamespaceView { name, labels };
        assert!(credential.covers_namespace(&view("team-a", None)));
        assert!(!credential.covers_namespace(&view("team-b", None)));
        assert!(!credential.covers_namespace(&view("team-a", Some(&test))));
    }
}
