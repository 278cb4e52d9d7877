//! The form in which every ServiceAccount in the cluster is cached: only what regcred
//! reads. Each one is cached, so anything more costs memory in proportion to the cluster
//! (at 5,000 namespaces, 17,000 of them); an annotation map alone holds a whole tree node
//! of over 500 bytes, for the two values read here.

use k8s_openapi::api::core::v1::{LocalObjectReference, ServiceAccount};
use kube::core::ObjectMeta;
use regcred_api::names::SA_ENTRIES_ANNOTATION;
use serde::Deserialize;

use crate::minting::ROLE_ANNOTATION;

/// A ServiceAccount as cached: name, namespace, resourceVersion, labels (for selectors),
/// its `imagePullSecrets` and the two annotations regcred reads. Converted from each
/// ServiceAccount as the watch reads it; nothing else of it is kept.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(from = "ServiceAccount")]
pub(crate) struct CachedServiceAccount {
    pub(crate) metadata: ObjectMeta,
    pub(crate) image_pull_secrets: Vec<LocalObjectReference>,
    /// regcred's record of the entries it added ([`SA_ENTRIES_ANNOTATION`]), as written.
    pub(crate) record: Option<String>,
    /// The IAM role it stands for ([`ROLE_ANNOTATION`]).
    pub(crate) role: Option<String>,
}

impl From<ServiceAccount> for CachedServiceAccount {
    fn from(sa: ServiceAccount) -> Self {
        let ObjectMeta {
            name,
            namespace,
            resource_version,
            labels,
            mut annotations,
            deletion_timestamp,
            ..
        } = sa.metadata;
        let mut annotation = |key: &str| annotations.as_mut().and_then(|a| a.remove(key));
        let (record, role) = (
            annotation(SA_ENTRIES_ANNOTATION),
            annotation(ROLE_ANNOTATION),
        );
        CachedServiceAccount {
            metadata: ObjectMeta {
                name,
                namespace,
                resource_version,
                labels: labels.filter(|l| !l.is_empty()),
                deletion_timestamp,
                ..ObjectMeta::default()
            },
            image_pull_secrets: sa.image_pull_secrets.unwrap_or_default(),
            record,
            role,
        }
    }
}

crate::cached_resource::core_v1_resource!(
    CachedServiceAccount,
    "ServiceAccount",
    "serviceaccounts"
);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kube::Resource;
    use serde_json::json;

    use super::*;

    #[test]
    fn keeps_what_regcred_reads_and_nothing_else() {
        let cached: CachedServiceAccount = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": "builder",
                "namespace": "app",
                "uid": "8f1c",
                "resourceVersion": "42",
                "labels": {"team": "a"},
                "annotations": {
                    SA_ENTRIES_ANNOTATION: "{\"pull\":\"RegistryCredential/app/harbor\"}",
                    ROLE_ANNOTATION: "arn:aws:iam::123456789012:role/pull",
                    "kubectl.kubernetes.io/last-applied-configuration": "{...}".repeat(1000),
                },
                "managedFields": [{"manager": "kubectl"}],
            },
            "imagePullSecrets": [{"name": "pull"}],
            "secrets": [{"name": "builder-token"}],
            "automountServiceAccountToken": false,
        }))
        .unwrap();
        let meta = cached.meta();
        assert_eq!(meta.name.as_deref(), Some("builder"));
        assert_eq!(meta.namespace.as_deref(), Some("app"));
        assert_eq!(meta.resource_version.as_deref(), Some("42"));
        assert_eq!(
            meta.labels,
            Some(BTreeMap::from([("team".into(), "a".into())]))
        );
        assert_eq!((&meta.uid, &meta.annotations), (&None, &None));
        assert!(meta.managed_fields.is_none());
        assert_eq!(cached.image_pull_secrets[0].name, "pull");
        assert_eq!(
            cached.record.as_deref(),
            Some("{\"pull\":\"RegistryCredential/app/harbor\"}")
        );
        assert_eq!(
            cached.role.as_deref(),
            Some("arn:aws:iam::123456789012:role/pull")
        );
        assert_eq!(CachedServiceAccount::kind(&()), "ServiceAccount");
        assert_eq!(CachedServiceAccount::api_version(&()), "v1");
    }
}
