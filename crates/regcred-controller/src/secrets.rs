//! Writes the pull Secrets: created once, then updated in place by a merge patch guarded by
//! the cached resourceVersion, never deleted and recreated; nothing is sent when the cached
//! Secret already matches. A Secret regcred did not create is never modified.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use regcred_api::DeletionPolicy;
use regcred_api::names::{FIELD_MANAGER, GROUP, MANAGED_BY, MANAGED_LABEL, OWNER_ANNOTATION};

use crate::cached_secret::{CachedSecret, PullSecret};
use crate::credential::Credential;
use crate::error::Error;
use crate::signing::Signer;
use kube::Client;

pub(crate) use regcred_providers::dockerconfig::{
    SECRET_KEY as DOCKER_CONFIG_KEY, SECRET_TYPE as DOCKER_CONFIG_TYPE,
};

/// The well-known label naming the tool that manages an object.
pub(crate) const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// What happened to one namespace's Secret.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Unchanged,
    Created,
    Updated,
    /// A Secret of that name exists and is not regcred's: left untouched.
    Unmanaged,
}

/// The Secret `credential` wants in `namespace` (pure), signed. `annotations` are added
/// to the owner annotation (the lifetime of minted tokens).
pub(crate) fn desired<C: Credential>(
    credential: &C,
    namespace: &str,
    config: &[u8],
    annotations: &BTreeMap<String, String>,
    signer: &Signer,
) -> Secret {
    let labels = BTreeMap::from([
        (MANAGED_LABEL.to_owned(), "true".to_owned()),
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
    ]);
    let mut annotations = annotations.clone();
    annotations.insert(OWNER_ANNOTATION.to_owned(), credential.id().to_string());
    // Orphan: no ownerReference, so garbage collection leaves the Secret when the
    // credential goes. Switching to Orphan drops it: the update patch replaces regcred's.
    let owner_references = match credential.spec().deletion_policy {
        DeletionPolicy::Delete => credential.owner_reference().map(|o| vec![o]),
        DeletionPolicy::Orphan => None,
    };
    let mut secret = Secret {
        metadata: ObjectMeta {
            name: Some(credential.secret_name()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references,
            ..Default::default()
        },
        type_: Some(DOCKER_CONFIG_TYPE.to_owned()),
        data: Some(BTreeMap::from([(
            DOCKER_CONFIG_KEY.to_owned(),
            ByteString(config.to_vec()),
        )])),
        ..Default::default()
    };
    signer.sign(&mut secret);
    secret
}

/// Whether `existing` differs from `desired` in anything regcred sets (pure). Read in
/// place from the cached form: a reconcile compares every target namespace's Secret.
pub(crate) fn differs(existing: &impl PullSecret, desired: &Secret) -> bool {
    let labels_kept = desired
        .metadata
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| existing.label(k) == Some(v.as_str()));
    let annotations_kept = desired
        .metadata
        .annotations
        .iter()
        .flatten()
        .all(|(k, v)| existing.annotation(k) == Some(v.as_str()));
    existing.docker_config() != desired.docker_config()
        || !labels_kept
        || !annotations_kept
        || regcred_owners(&existing.meta().owner_references)
            != regcred_owners(&desired.metadata.owner_references)
}

/// The UIDs of regcred's own ownerReferences, sorted: someone else's are kept, not
/// fought over.
fn regcred_owners(references: &Option<Vec<OwnerReference>>) -> Vec<&str> {
    let mut uids: Vec<&str> = references
        .iter()
        .flatten()
        .filter(|o| is_regcred_owner(o))
        .map(|o| o.uid.as_str())
        .collect();
    uids.sort_unstable();
    uids
}

/// Brings one namespace's Secret to `desired`. `existing` is the cached managed Secret.
pub(crate) async fn ensure(
    client: &Client,
    desired: &Secret,
    existing: Option<&impl PullSecret>,
    force: bool,
) -> Result<Outcome, Error> {
    let namespace = desired.metadata.namespace.as_deref().unwrap_or_default();
    let name = desired.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match existing {
        Some(existing) if !force && !differs(existing, desired) => Ok(Outcome::Unchanged),
        Some(existing) => {
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            api.patch(
                name,
                &params,
                &Patch::Merge(update_patch(existing, desired)),
            )
            .await?;
            Ok(Outcome::Updated)
        }
        None => {
            // Create, never apply: apply would take over a same-named Secret regcred does
            // not manage. AlreadyExists means exactly that case.
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            match api.create(&params, desired).await {
                Ok(_) => Ok(Outcome::Created),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(Outcome::Unmanaged),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Deletes a managed Secret that is no longer wanted (namespace no longer targeted, or the
/// Secret was renamed), guarded by its UID and resourceVersion: a replacement, or a
/// version the cache has not seen, is never deleted (the next event brings it back here).
pub(crate) async fn remove(client: &Client, secret: &CachedSecret) -> Result<(), Error> {
    let namespace = secret.metadata.namespace.as_deref().unwrap_or_default();
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: secret.metadata.uid.clone(),
            resource_version: secret.metadata.resource_version.clone(),
        }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A merge patch that sets what regcred owns and keeps everything else: other labels,
/// annotations and ownerReferences stay. The resourceVersion makes it fail rather than
/// overwrite a change the cache has not seen yet.
fn update_patch(existing: &impl PullSecret, desired: &Secret) -> serde_json::Value {
    // Keep others' ownerReferences; replace those pointing at regcred's resources.
    let mut owner_references: Vec<_> = existing
        .meta()
        .owner_references
        .iter()
        .flatten()
        .filter(|o| !is_regcred_owner(o))
        .cloned()
        .collect();
    owner_references.extend(desired.metadata.owner_references.iter().flatten().cloned());
    serde_json::json!({
        "metadata": {
            "resourceVersion": existing.meta().resource_version,
            "labels": desired.metadata.labels,
            "annotations": desired.metadata.annotations,
            "ownerReferences": owner_references,
        },
        "data": desired.data,
    })
}

fn is_regcred_owner(owner: &OwnerReference) -> bool {
    owner
        .api_version
        .strip_prefix(GROUP)
        .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use kube::core::ObjectMeta;
    use regcred_api::{CredentialSpec, RegistryCredential, RegistryCredentialSpec};

    use super::*;

    fn signer() -> Signer {
        Signer::from_key([1; 32])
    }

    fn credential(policy: DeletionPolicy) -> RegistryCredential {
        let mut c = RegistryCredential::new(
            "harbor",
            RegistryCredentialSpec {
                credential: CredentialSpec {
                    registries: vec![],
                    secret_name: Some("pull".into()),
                    service_accounts: None,
                    deletion_policy: policy,
                    renew_before: None,
                },
            },
        );
        c.metadata = ObjectMeta {
            name: Some("harbor".into()),
            namespace: Some("app".into()),
            uid: Some("uid-1".into()),
            labels: Some(BTreeMap::from([(
                "argocd.argoproj.io/instance".into(),
                "x".into(),
            )])),
            ..Default::default()
        };
        c
    }

    #[test]
    fn desired_secret_is_typed_labelled_and_owned() {
        let s = desired(
            &credential(DeletionPolicy::Delete),
            "app",
            b"{}",
            &BTreeMap::new(),
            &signer(),
        );
        assert_eq!(s.metadata.name.as_deref(), Some("pull"));
        assert_eq!(s.type_.as_deref(), Some(DOCKER_CONFIG_TYPE));
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[MANAGED_LABEL], "true");
        assert!(
            !labels.contains_key("argocd.argoproj.io/instance"),
            "credential labels are not copied"
        );
        assert_eq!(
            s.metadata.annotations.as_ref().unwrap()[OWNER_ANNOTATION],
            "RegistryCredential/app/harbor"
        );
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.uid.as_str(), owner.controller),
            ("uid-1", Some(true))
        );
    }

    #[test]
    fn orphan_policy_writes_no_owner_reference() {
        let s = desired(
            &credential(DeletionPolicy::Orphan),
            "app",
            b"{}",
            &BTreeMap::new(),
            &signer(),
        );
        assert!(s.metadata.owner_references.is_none());
    }

    #[test]
    fn differs_only_on_what_regcred_sets() {
        // Whole, and in the cached form a reconcile compares: the same verdict.
        let differs = |have: &Secret, want: &Secret| {
            let whole = differs(have, want);
            let cached = differs(&CachedSecret::from(have.clone()), want);
            assert_eq!(whole, cached, "the cached form judged otherwise");
            whole
        };
        let want = desired(
            &credential(DeletionPolicy::Delete),
            "app",
            b"{\"auths\":{}}",
            &BTreeMap::new(),
            &signer(),
        );
        let mut have = want.clone();
        have.metadata.resource_version = Some("7".into());
        have.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("extra".into(), "kept".into());
        assert!(!differs(&have, &want));

        let mut edited = have.clone();
        edited
            .data
            .as_mut()
            .unwrap()
            .insert(DOCKER_CONFIG_KEY.into(), ByteString(b"{}".to_vec()));
        assert!(differs(&edited, &want));

        let orphan = desired(
            &credential(DeletionPolicy::Orphan),
            "app",
            b"{\"auths\":{}}",
            &BTreeMap::new(),
            &signer(),
        );
        assert!(differs(&have, &orphan));

        let mut foreign_owner = have.clone();
        foreign_owner
            .metadata
            .owner_references
            .get_or_insert_with(Vec::new)
            .push(OwnerReference {
                api_version: "argoproj.io/v1alpha1".into(),
                kind: "Application".into(),
                name: "app".into(),
                uid: "uid-argo".into(),
                ..Default::default()
            });
        assert!(
            !differs(&foreign_owner, &want),
            "someone else's ownerReference is no reason to write"
        );
    }

    #[test]
    fn desired_secrets_are_signed_as_regcred_s() {
        let s = desired(
            &credential(DeletionPolicy::Delete),
            "app",
            b"{}",
            &BTreeMap::new(),
            &signer(),
        );
        assert!(signer().content_intact(&s));
    }

    /// The exact calls `ensure` and `remove` make, against a scripted API server.
    mod calls {
        use http::{Method, StatusCode};
        use serde_json::json;

        use super::*;
        use crate::api_mock::{self, status};

        fn want() -> Secret {
            desired(
                &credential(DeletionPolicy::Delete),
                "app",
                b"{\"auths\":{}}",
                &BTreeMap::new(),
                &signer(),
            )
        }

        /// As the cache holds it, whole again (an API server's answer).
        fn cached(secret: &Secret) -> Secret {
            cached_form(secret).to_secret()
        }

        /// As the cache holds it, and as a write compares it.
        fn cached_form(secret: &Secret) -> CachedSecret {
            let mut s = secret.clone();
            s.metadata.resource_version = Some("41".into());
            s.metadata.uid = Some("secret-uid".into());
            CachedSecret::from(s)
        }

        #[tokio::test]
        async fn a_secret_that_matches_the_cache_costs_no_request() {
            let (client, server) = api_mock::client();
            let want = want();
            let outcome = ensure(&client, &want, Some(&cached_form(&want)), false)
                .await
                .unwrap();
            assert_eq!(outcome, Outcome::Unchanged);
            drop(client);
            server.nothing_more().await;
        }

        #[tokio::test]
        async fn a_changed_secret_is_one_merge_patch_preconditioned_on_the_cached_version() {
            let (client, mut server) = api_mock::client();
            let want = want();
            let mut old = want.clone();
            old.data = Some(BTreeMap::from([(
                DOCKER_CONFIG_KEY.to_owned(),
                ByteString(b"{\"auths\":{\"old\":{}}}".to_vec()),
            )]));
            let have = cached_form(&old);
            let answered = cached(&want);
            let (outcome, sent) = tokio::join!(
                ensure(&client, &want, Some(&have), false),
                server.answer(StatusCode::OK, serde_json::to_value(&answered).unwrap())
            );
            assert_eq!(outcome.unwrap(), Outcome::Updated);
            assert_eq!(sent.method, Method::PATCH);
            assert_eq!(
                sent.uri,
                "/api/v1/namespaces/app/secrets/pull?&fieldManager=regcred"
            );
            assert_eq!(
                sent.content_type.as_deref(),
                Some("application/merge-patch+json")
            );
            assert_eq!(sent.body["metadata"]["resourceVersion"], "41");
            assert_eq!(
                sent.body["data"][DOCKER_CONFIG_KEY],
                json!(ByteString(b"{\"auths\":{}}".to_vec()))
            );
            drop(client);
            server.nothing_more().await;
        }

        #[tokio::test]
        async fn a_missing_secret_is_created_and_a_same_named_one_is_left_alone() {
            let (client, mut server) = api_mock::client();
            let want = want();
            let (outcome, sent) = tokio::join!(
                ensure(&client, &want, None::<&Secret>, false),
                server.answer(StatusCode::CREATED, serde_json::to_value(&want).unwrap())
            );
            assert_eq!(outcome.unwrap(), Outcome::Created);
            assert_eq!(sent.method, Method::POST);
            assert_eq!(
                sent.uri,
                "/api/v1/namespaces/app/secrets?&fieldManager=regcred"
            );
            assert_eq!(sent.body["metadata"]["name"], "pull");
            assert_eq!(sent.body["type"], DOCKER_CONFIG_TYPE);

            // Someone else's Secret by that name: AlreadyExists, and no second attempt.
            let (outcome, sent) = tokio::join!(
                ensure(&client, &want, None::<&Secret>, false),
                server.answer(StatusCode::CONFLICT, status(409, "AlreadyExists"))
            );
            assert_eq!(outcome.unwrap(), Outcome::Unmanaged);
            assert_eq!(sent.method, Method::POST);
            drop(client);
            server.nothing_more().await;
        }

        #[tokio::test]
        async fn removal_is_preconditioned_and_a_gone_secret_is_fine() {
            let (client, mut server) = api_mock::client();
            let have = cached_form(&want());
            let (removed, sent) = tokio::join!(
                remove(&client, &have),
                server.answer(StatusCode::NOT_FOUND, status(404, "NotFound"))
            );
            removed.unwrap();
            assert_eq!(sent.method, Method::DELETE);
            assert_eq!(sent.uri, "/api/v1/namespaces/app/secrets/pull?");
            assert_eq!(
                sent.body["preconditions"],
                json!({"uid": "secret-uid", "resourceVersion": "41"})
            );
            drop(client);
            server.nothing_more().await;
        }
    }
}
