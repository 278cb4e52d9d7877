//! Proves which Secrets regcred wrote.
//!
//! A label or an annotation is something anyone who can write Secrets in a namespace can
//! set, so "managed by regcred" and "holds a token regcred minted" are decided by HMAC
//! signatures under a key only the controller reads (a Secret in its own namespace):
//! - the owner signature covers the Secret's namespace, name and owner: a Secret regcred
//!   created is recognised (and restored after someone edits it); a look-alike is not;
//! - the content signature also covers the type, the data and the token's lifetime: only
//!   untouched content is trusted when a restarted controller resumes from its Secrets.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use regcred_api::names::{FIELD_MANAGER, MANAGED_BY};
use regcred_providers::dockerconfig::SECRET_TYPE as DOCKER_CONFIG_TYPE;
use sha2::Sha256;
use tracing::info;

use crate::cached_secret::PullSecret;
use crate::error::Error;

pub(crate) const OWNER_SIGNATURE_ANNOTATION: &str = "regcred.io/owner-signature";
pub(crate) const CONTENT_SIGNATURE_ANNOTATION: &str = "regcred.io/content-signature";
/// The timing annotations the content signature covers, besides the data: they let a
/// restarted controller resume the refresh schedule.
pub(crate) const ISSUED_AT_ANNOTATION: &str = "regcred.io/issued-at";
pub(crate) const EXPIRES_AT_ANNOTATION: &str = "regcred.io/expires-at";
pub(crate) const INPUTS_ANNOTATION: &str = "regcred.io/inputs";

/// The Secret, in the controller's namespace, that holds the key.
pub(crate) const KEY_SECRET: &str = "regcred-signing-key";
const KEY_FIELD: &str = "key";
const KEY_BYTES: usize = 32;
/// Signatures name their scheme, so a new one can be introduced beside it.
const SCHEME: &str = "v1";

type HmacSha256 = Hmac<Sha256>;

/// Signs and verifies managed Secrets. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Signer {
    key: Arc<[u8; KEY_BYTES]>,
}

// The key must never reach a log.
impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

impl Signer {
    pub(crate) fn from_key(key: [u8; KEY_BYTES]) -> Self {
        Signer { key: Arc::new(key) }
    }

    /// Reads the key from `namespace/regcred-signing-key`, creating it on first start.
    /// Every replica reads the same key; a racing create is resolved by reading the
    /// winner's.
    pub(crate) async fn load_or_create(client: Client, namespace: &str) -> Result<Self, Error> {
        let api: Api<Secret> = Api::namespaced(client, namespace);
        if let Some(secret) = api.get_opt(KEY_SECRET).await? {
            return Self::from_secret(&secret);
        }
        let mut key = [0u8; KEY_BYTES];
        getrandom::fill(&mut key).map_err(|e| Error::SigningKey(e.to_string()))?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(KEY_SECRET.into()),
                namespace: Some(namespace.into()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_owned(),
                    MANAGED_BY.to_owned(),
                )])),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([(
                KEY_FIELD.to_owned(),
                ByteString(key.to_vec()),
            )])),
            ..Default::default()
        };
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api.create(&params, &secret).await {
            Ok(_) => {
                info!(namespace, secret = KEY_SECRET, "created the signing key");
                Ok(Self::from_key(key))
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Self::from_secret(&api.get(KEY_SECRET).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn from_secret(secret: &Secret) -> Result<Self, Error> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(KEY_FIELD))
            .map(|v| v.0.as_slice())
            .unwrap_or_default();
        let key: [u8; KEY_BYTES] = bytes.try_into().map_err(|_| {
            Error::SigningKey(format!(
                "Secret {}/{KEY_SECRET} must hold {KEY_BYTES} bytes under {KEY_FIELD:?}",
                secret.namespace().unwrap_or_default()
            ))
        })?;
        Ok(Self::from_key(key))
    }

    fn mac(&self, domain: &str, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&*self.key).expect("HMAC takes any key size");
        // Length-prefixed, so no two different part lists feed the same bytes.
        for part in std::iter::once(domain.as_bytes()).chain(parts.iter().copied()) {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    fn owner_parts(secret: &impl PullSecret) -> Option<[Vec<u8>; 3]> {
        let meta = secret.meta();
        Some([
            meta.namespace.clone()?.into_bytes(),
            meta.name.clone()?.into_bytes(),
            secret.owner()?.as_bytes().to_vec(),
        ])
    }

    fn content_parts(secret: &impl PullSecret) -> Option<Vec<Vec<u8>>> {
        let annotation = |key: &str| {
            secret
                .annotation(key)
                .unwrap_or_default()
                .as_bytes()
                .to_vec()
        };
        let mut parts = Self::owner_parts(secret)?.to_vec();
        parts.push(secret.secret_type().unwrap_or_default().as_bytes().to_vec());
        parts.push(secret.docker_config().unwrap_or_default().to_vec());
        for key in [
            ISSUED_AT_ANNOTATION,
            EXPIRES_AT_ANNOTATION,
            INPUTS_ANNOTATION,
        ] {
            parts.push(annotation(key));
        }
        Some(parts)
    }

    fn signature(&self, domain: &str, parts: &[Vec<u8>]) -> String {
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let tag = self.mac(domain, &parts).finalize().into_bytes();
        format!("{SCHEME}:{}", hex::encode(tag))
    }

    fn verify(&self, domain: &str, parts: Option<Vec<Vec<u8>>>, signature: Option<&str>) -> bool {
        let (Some(parts), Some(signature)) = (parts, signature) else {
            return false;
        };
        let Some(tag) = signature
            .strip_prefix(SCHEME)
            .and_then(|s| s.strip_prefix(':'))
            .and_then(|hex| hex::decode(hex).ok())
        else {
            return false;
        };
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        // Constant-time comparison.
        self.mac(domain, &parts).verify_slice(&tag).is_ok()
    }

    /// Adds both signatures to a Secret regcred is about to write (its namespace, name,
    /// owner annotation, type, data and timing annotations must be final).
    pub(crate) fn sign(&self, secret: &mut Secret) {
        let owner = Self::owner_parts(secret).map(|p| self.signature("owner", &p));
        let content = Self::content_parts(secret).map(|p| self.signature("content", &p));
        let annotations = secret
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new);
        if let (Some(owner), Some(content)) = (owner, content) {
            annotations.insert(OWNER_SIGNATURE_ANNOTATION.into(), owner);
            annotations.insert(CONTENT_SIGNATURE_ANNOTATION.into(), content);
        }
    }

    /// Whether regcred created this Secret for the owner it names: the owner signature
    /// holds and the type is one regcred writes (a type cannot change, so a Secret of
    /// another type was made by someone else, whatever its annotations say).
    pub(crate) fn is_managed(&self, secret: &impl PullSecret) -> bool {
        secret.secret_type() == Some(DOCKER_CONFIG_TYPE)
            && self.verify(
                "owner",
                Self::owner_parts(secret).map(|p| p.to_vec()),
                secret.annotation(OWNER_SIGNATURE_ANNOTATION),
            )
    }

    /// Whether the data and timing annotations are exactly as regcred wrote them.
    pub(crate) fn content_intact(&self, secret: &impl PullSecret) -> bool {
        self.is_managed(secret)
            && self.verify(
                "content",
                Self::content_parts(secret),
                secret.annotation(CONTENT_SIGNATURE_ANNOTATION),
            )
    }
}

#[cfg(test)]
mod tests {
    use regcred_api::names::OWNER_ANNOTATION;
    use regcred_providers::dockerconfig::SECRET_KEY as DOCKER_CONFIG_KEY;

    use super::*;

    fn secret() -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("pull".into()),
                namespace: Some("team-a".into()),
                annotations: Some(BTreeMap::from([
                    (
                        OWNER_ANNOTATION.to_owned(),
                        "ClusterRegistryCredential/ecr".to_owned(),
                    ),
                    (
                        EXPIRES_AT_ANNOTATION.to_owned(),
                        "2026-12-01T00:00:00Z".to_owned(),
                    ),
                ])),
                ..Default::default()
            },
            type_: Some(DOCKER_CONFIG_TYPE.into()),
            data: Some(BTreeMap::from([(
                DOCKER_CONFIG_KEY.to_owned(),
                ByteString(b"{\"auths\":{}}".to_vec()),
            )])),
            ..Default::default()
        }
    }

    fn signed() -> (Signer, Secret) {
        let signer = Signer::from_key([7; KEY_BYTES]);
        let mut s = secret();
        signer.sign(&mut s);
        (signer, s)
    }

    #[test]
    fn a_signed_secret_verifies_and_signing_is_deterministic() {
        let (signer, s) = signed();
        assert!(signer.is_managed(&s) && signer.content_intact(&s));
        let mut again = s.clone();
        signer.sign(&mut again);
        assert_eq!(
            again, s,
            "the same content signs the same: no write in steady state"
        );
    }

    #[test]
    fn labels_and_owner_annotations_alone_prove_nothing() {
        let signer = Signer::from_key([7; KEY_BYTES]);
        assert!(!signer.is_managed(&secret()));
        let (_, s) = signed();
        let other = Signer::from_key([8; KEY_BYTES]);
        assert!(!other.is_managed(&s), "another key's signature");
    }

    #[test]
    fn copying_a_signature_to_another_place_or_owner_fails() {
        let (signer, s) = signed();
        for edit in [
            |s: &mut Secret| s.metadata.namespace = Some("team-b".into()),
            |s: &mut Secret| s.metadata.name = Some("other".into()),
            |s: &mut Secret| {
                s.metadata.annotations.as_mut().unwrap().insert(
                    OWNER_ANNOTATION.into(),
                    "ClusterRegistryCredential/x".into(),
                );
            },
            |s: &mut Secret| s.type_ = Some("Opaque".into()),
        ] {
            let mut forged = s.clone();
            edit(&mut forged);
            assert!(!signer.is_managed(&forged), "{forged:?}");
        }
    }

    #[test]
    fn edited_content_or_lifetime_is_managed_but_not_intact() {
        let (signer, s) = signed();
        let mut data = s.clone();
        data.data.as_mut().unwrap().insert(
            DOCKER_CONFIG_KEY.into(),
            ByteString(b"{\"auths\":{\"x\":{}}}".to_vec()),
        );
        let mut lifetime = s.clone();
        lifetime
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(EXPIRES_AT_ANNOTATION.into(), "9999-12-31T23:59:59Z".into());
        for edited in [data, lifetime] {
            assert!(
                signer.is_managed(&edited),
                "still regcred's Secret: restore it"
            );
            assert!(!signer.content_intact(&edited), "but not to be trusted");
        }
    }

    #[test]
    fn malformed_signatures_are_rejected_without_panicking() {
        let (signer, s) = signed();
        for bad in ["", "v1:", "v1:zz", "v2:00", &"f".repeat(100_000)] {
            let mut forged = s.clone();
            forged
                .metadata
                .annotations
                .as_mut()
                .unwrap()
                .insert(OWNER_SIGNATURE_ANNOTATION.into(), bad.into());
            assert!(!signer.is_managed(&forged));
        }
    }
}
