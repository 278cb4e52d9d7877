//! The form in which Secrets labelled managed are cached: what regcred reads and writes of
//! them, and nothing else. There is one per namespace and credential (at 5,000 namespaces,
//! 5,000 of them); as whole Secrets, their labels, annotations and data were three tree
//! maps of over 500 bytes each.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::core::ObjectMeta;
use regcred_api::names::{GROUP, MANAGED_BY, MANAGED_LABEL, OWNER_ANNOTATION};
use serde::Deserialize;

use crate::secrets::{DOCKER_CONFIG_KEY, DOCKER_CONFIG_TYPE, MANAGED_BY_LABEL};
use crate::signing::{
    CONTENT_SIGNATURE_ANNOTATION, EXPIRES_AT_ANNOTATION, INPUTS_ANNOTATION, ISSUED_AT_ANNOTATION,
    OWNER_SIGNATURE_ANNOTATION,
};

/// What regcred reads of a pull Secret, whole or cached: signatures are checked, and
/// owners compared, on either.
pub(crate) trait PullSecret: kube::Resource<DynamicType = ()> {
    fn label(&self, key: &str) -> Option<&str>;
    fn annotation(&self, key: &str) -> Option<&str>;
    fn secret_type(&self) -> Option<&str>;
    /// The `.dockerconfigjson` bytes.
    fn docker_config(&self) -> Option<&[u8]>;

    /// The credential it was written for, as recorded.
    fn owner(&self) -> Option<&str> {
        self.annotation(OWNER_ANNOTATION)
    }
}

impl PullSecret for Secret {
    fn label(&self, key: &str) -> Option<&str> {
        self.metadata.labels.as_ref()?.get(key).map(String::as_str)
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    fn secret_type(&self) -> Option<&str> {
        self.type_.as_deref()
    }

    fn docker_config(&self) -> Option<&[u8]> {
        Some(self.data.as_ref()?.get(DOCKER_CONFIG_KEY)?.0.as_slice())
    }
}

/// A managed Secret as cached: name, namespace, UID and resourceVersion (deletes are
/// guarded by both), ownerReferences, the type, the `.dockerconfigjson` bytes, and only
/// the labels and annotations regcred sets. Converted as the watch reads each Secret.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(from = "Secret")]
pub(crate) struct CachedSecret {
    pub(crate) metadata: ObjectMeta,
    labels: Box<[(Text, Text)]>,
    annotations: Box<[(Text, Text)]>,
    type_: Option<Text>,
    docker_config: Option<Box<[u8]>>,
}

/// A label or annotation regcred sets on its Secrets.
fn regcred_sets(key: &str) -> bool {
    key.strip_prefix(GROUP)
        .is_some_and(|rest| rest.starts_with('/'))
        || key == MANAGED_BY_LABEL
}

/// A string as cached: the keys, label values and type every managed Secret repeats are
/// not allocated once per Secret.
type Text = Cow<'static, str>;

const COMMON: [&str; 11] = [
    MANAGED_LABEL,
    MANAGED_BY_LABEL,
    "true",
    MANAGED_BY,
    OWNER_ANNOTATION,
    OWNER_SIGNATURE_ANNOTATION,
    CONTENT_SIGNATURE_ANNOTATION,
    ISSUED_AT_ANNOTATION,
    EXPIRES_AT_ANNOTATION,
    INPUTS_ANNOTATION,
    DOCKER_CONFIG_TYPE,
];

fn interned(text: String) -> Text {
    match COMMON.iter().find(|common| **common == text) {
        Some(common) => Cow::Borrowed(common),
        None => Cow::Owned(text),
    }
}

fn kept(map: Option<BTreeMap<String, String>>) -> Box<[(Text, Text)]> {
    map.into_iter()
        .flatten()
        .filter(|(k, _)| regcred_sets(k))
        .map(|(k, v)| (interned(k), interned(v)))
        .collect()
}

impl From<Secret> for CachedSecret {
    fn from(secret: Secret) -> Self {
        let ObjectMeta {
            name,
            namespace,
            uid,
            resource_version,
            labels,
            annotations,
            owner_references,
            ..
        } = secret.metadata;
        let docker_config = secret
            .data
            .and_then(|mut d| d.remove(DOCKER_CONFIG_KEY))
            .map(|bytes| bytes.0.into_boxed_slice());
        CachedSecret {
            metadata: ObjectMeta {
                name,
                namespace,
                uid,
                resource_version,
                owner_references: owner_references.filter(|o| !o.is_empty()),
                ..ObjectMeta::default()
            },
            labels: kept(labels),
            annotations: kept(annotations),
            type_: secret.type_.map(interned),
            docker_config,
        }
    }
}

impl CachedSecret {
    /// The Secret as far as cached.
    #[cfg(test)]
    pub(crate) fn to_secret(&self) -> Secret {
        let map = |pairs: &[(Text, Text)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        Secret {
            metadata: ObjectMeta {
                labels: map(&self.labels),
                annotations: map(&self.annotations),
                ..self.metadata.clone()
            },
            type_: self.type_.as_deref().map(str::to_owned),
            data: self.docker_config.as_ref().map(|bytes| {
                BTreeMap::from([(
                    DOCKER_CONFIG_KEY.to_owned(),
                    k8s_openapi::ByteString(bytes.to_vec()),
                )])
            }),
            ..Secret::default()
        }
    }
}

impl PullSecret for CachedSecret {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    fn secret_type(&self) -> Option<&str> {
        self.type_.as_deref()
    }

    fn docker_config(&self) -> Option<&[u8]> {
        self.docker_config.as_deref()
    }
}

crate::cached_resource::core_v1_resource!(CachedSecret, "Secret", "secrets");

#[cfg(test)]
mod tests {
    use kube::Resource;
    use serde_json::json;

    use super::*;

    #[test]
    fn keeps_what_regcred_reads_and_writes_and_nothing_else() {
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "pull",
                "namespace": "app",
                "uid": "8f1c",
                "resourceVersion": "42",
                "creationTimestamp": "2026-12-01T00:00:00Z",
                "labels": {
                    "regcred.io/managed": "true",
                    "app.kubernetes.io/managed-by": "regcred",
                    "team": "a",
                },
                "annotations": {
                    OWNER_ANNOTATION: "ClusterRegistryCredential/harbor",
                    "regcred.io/owner-signature": "v1:ab",
                    "regcred.iox/look-alike": "x",
                    "kubectl.kubernetes.io/last-applied-configuration": "{...}".repeat(1000),
                },
                "ownerReferences": [{
                    "apiVersion": "regcred.io/v1alpha1",
                    "kind": "ClusterRegistryCredential",
                    "name": "harbor",
                    "uid": "77",
                }],
                "managedFields": [{"manager": "kubectl"}],
            },
            "type": "kubernetes.io/dockerconfigjson",
            "data": {
                ".dockerconfigjson": "e30=",
                "extra": "eA==",
            },
        }))
        .unwrap();
        let cached: CachedSecret = serde_json::from_value(serde_json::to_value(&secret).unwrap())
            .expect("deserialized from a Secret");
        let meta = cached.meta();
        assert_eq!(meta.name.as_deref(), Some("pull"));
        assert_eq!(meta.namespace.as_deref(), Some("app"));
        assert_eq!(meta.uid.as_deref(), Some("8f1c"));
        assert_eq!(meta.resource_version.as_deref(), Some("42"));
        assert!(meta.creation_timestamp.is_none() && meta.managed_fields.is_none());
        assert_eq!(cached.owner(), Some("ClusterRegistryCredential/harbor"));
        assert_eq!(cached.annotation("regcred.iox/look-alike"), None);
        assert_eq!(cached.docker_config(), Some(&b"{}"[..]));
        assert_eq!(cached.secret_type(), secret.secret_type());
        // What every managed Secret repeats is shared, not allocated per Secret.
        assert!(matches!(cached.type_, Some(Cow::Borrowed(_))));
        assert!(
            cached
                .labels
                .iter()
                .all(|(k, v)| { matches!((k, v), (Cow::Borrowed(_), Cow::Borrowed(_))) })
        );
        assert_eq!(CachedSecret::kind(&()), "Secret");
        assert_eq!(CachedSecret::plural(&()), "secrets");

        let whole = cached.to_secret();
        assert_eq!(
            whole.metadata.labels,
            Some(BTreeMap::from([
                ("app.kubernetes.io/managed-by".into(), "regcred".into()),
                ("regcred.io/managed".into(), "true".into()),
            ]))
        );
        assert_eq!(
            whole.metadata.annotations.as_ref().map(BTreeMap::len),
            Some(2)
        );
        assert_eq!(
            whole.metadata.owner_references,
            secret.metadata.owner_references
        );
        assert_eq!(whole.docker_config(), Some(&b"{}"[..]));
        assert_eq!(whole.data.as_ref().map(BTreeMap::len), Some(1));
    }
}
