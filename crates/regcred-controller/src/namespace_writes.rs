//! The fast path for one namespace. A namespace that appears, or a managed Secret deleted
//! by hand, gets the Secrets of the credentials covering it at once, with the content
//! their last reconcile prepared, instead of queueing behind a reconcile over every
//! namespace (at 1,000 namespaces that queue made a new namespace wait seconds). The
//! credential's own reconcile still follows and reports in status.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use tracing::debug;

use crate::context::{Context, ObjectKey, Stores};
use crate::credential::Credential;
use crate::reconcile::{self, Payload};
use crate::secrets::Outcome;

/// What a credential's last reconcile would write into any namespace it covers, by UID.
#[derive(Default)]
pub(crate) struct Prepared {
    by_uid: Mutex<HashMap<String, Arc<Content>>>,
}

/// One credential's Secret content, as its last successful reconcile computed it.
pub(crate) struct Content {
    /// The spec it was computed from: a changed spec waits for the reconcile.
    generation: Option<i64>,
    /// [`inputs`] as the reconcile began: a source or role that changed since (seen as an
    /// event, in a re-list, or while that reconcile ran) waits for the next reconcile.
    inputs: String,
    pub(crate) config: Vec<u8>,
    pub(crate) annotations: BTreeMap<String, String>,
    /// When the minted tokens in it expire: never written after that.
    expires_at: Option<Timestamp>,
}

impl Prepared {
    pub(crate) fn put<C: Credential>(
        &self,
        credential: &C,
        inputs: String,
        config: &[u8],
        annotations: &BTreeMap<String, String>,
        expires_at: Option<Timestamp>,
    ) {
        let Some(uid) = credential.meta().uid.clone() else {
            return;
        };
        let content = Content {
            generation: credential.meta().generation,
            inputs,
            config: config.to_vec(),
            annotations: annotations.clone(),
            expires_at,
        };
        self.lock().insert(uid, Arc::new(content));
    }

    /// Drops a credential's content: it failed, or it went.
    pub(crate) fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }

    /// The content for `credential` as it is now (its spec and `inputs`), if still good
    /// at `now`.
    fn get<C: Credential>(
        &self,
        credential: &C,
        inputs: &str,
        now: Timestamp,
    ) -> Option<Arc<Content>> {
        let uid = credential.meta().uid.as_deref()?;
        self.lock()
            .get(uid)
            .filter(|c| c.generation == credential.meta().generation)
            .filter(|c| c.inputs == inputs)
            .filter(|c| c.expires_at.is_none_or(|at| at > now))
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Content>>> {
        self.by_uid.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a credential's content depends on besides its spec, from the caches: the version
/// of each static source and, for ECR, everything a mint reads (key Secrets, roles).
pub(crate) fn inputs<C: Credential>(stores: &Stores, credential: &C) -> String {
    let mut inputs = String::new();
    for registry in &credential.spec().registries {
        let Some(source) = &registry.static_source else {
            continue;
        };
        let secret_ref = &source.secret_ref;
        let namespace = credential.source_namespace(secret_ref).unwrap_or_default();
        let version = stores
            .source_secrets
            .get(&ObjectRef::new(&secret_ref.name).within(namespace))
            .and_then(|s| s.metadata.resource_version.clone())
            .unwrap_or_default();
        inputs.push_str(&format!("{namespace}/{}@{version};", secret_ref.name));
    }
    if credential.has_minted() {
        inputs.push_str(&crate::minting::inputs(stores, credential));
    }
    inputs
}

/// Secrets being written right now. The fast path and a credential's reconcile never
/// write the same Secret at once: a second create would be refused, and look like
/// someone else's Secret.
#[derive(Default)]
pub(crate) struct Writing {
    keys: Mutex<HashSet<ObjectKey>>,
}

/// Held while one Secret is written; releases it when dropped.
pub(crate) struct Claim<'a> {
    writing: &'a Writing,
    key: ObjectKey,
}

impl Writing {
    /// Waits until no one else writes `key`, then claims it.
    pub(crate) async fn claim(&self, key: &ObjectKey) -> Claim<'_> {
        loop {
            if self.lock().insert(key.clone()) {
                return Claim {
                    writing: self,
                    key: key.clone(),
                };
            }
            // Contention is rare (one namespace's event meeting a reconcile) and short.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<ObjectKey>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.writing.lock().remove(&self.key);
    }
}

/// Writes the Secret of every credential covering `namespace` whose content is prepared.
/// Failures are left to the credential's reconcile, which the same event triggers.
pub(crate) async fn write_namespace(ctx: Arc<Context>, namespace: String) {
    ctx.stores.wait_ready().await;
    if !ctx.is_leader() || !ctx.stores.namespaces.is_live(&namespace) {
        return;
    }
    for credential in ctx.stores.credentials.state() {
        if credential.metadata.namespace.as_deref() == Some(namespace.as_str()) {
            write_for(&ctx, &*credential, &namespace).await;
        }
    }
    for credential in ctx.stores.cluster_credentials.state() {
        write_for(&ctx, &*credential, &namespace).await;
    }
}

async fn write_for<C: Credential>(ctx: &Context, credential: &C, namespace: &str) {
    if !ctx.stores.covers(credential, namespace) {
        return;
    }
    let prepared = || {
        let inputs = inputs(&ctx.stores, credential);
        ctx.prepared.get(credential, &inputs, Timestamp::now())
    };
    if prepared().is_none() {
        return; // nothing to write: no need to wait for the Secret
    }
    let key = ObjectKey::secret(namespace, &credential.secret_name());
    // The content is read (again) once the Secret is ours: a reconcile writing newer
    // content meanwhile has put it by then, and is not overwritten with the older one.
    let _claim = ctx.writing.claim(&key).await;
    let Some(content) = prepared() else {
        return;
    };
    let payload = Payload {
        config: &content.config,
        annotations: &content.annotations,
        force: false,
    };
    let written = reconcile::write_claimed(ctx, credential, &payload, namespace).await;
    if let Ok(Outcome::Created | Outcome::Updated) = written {
        debug!(
            namespace,
            credential = %credential.id(),
            "Secret written ahead of the credential's reconcile"
        );
    }
}

#[cfg(test)]
mod tests {
    use kube::core::ObjectMeta;
    use regcred_api::{CredentialSpec, DeletionPolicy, RegistryCredential, RegistryCredentialSpec};

    use super::*;

    fn credential(generation: i64) -> RegistryCredential {
        let spec = RegistryCredentialSpec {
            credential: CredentialSpec {
                registries: vec![],
                secret_name: None,
                service_accounts: None,
                deletion_policy: DeletionPolicy::Delete,
                renew_before: None,
            },
        };
        let mut c = RegistryCredential::new("harbor", spec);
        c.metadata = ObjectMeta {
            name: Some("harbor".into()),
            namespace: Some("app".into()),
            uid: Some("uid-1".into()),
            generation: Some(generation),
            ..Default::default()
        };
        c
    }

    #[test]
    fn content_is_for_the_spec_it_was_computed_from_and_until_its_tokens_expire() {
        let prepared = Prepared::default();
        let now = Timestamp::now();
        let expires = now
            .checked_add(jiff::SignedDuration::from_secs(60))
            .unwrap();
        let inputs = "app/source@7;";
        prepared.put(
            &credential(1),
            inputs.into(),
            b"{}",
            &BTreeMap::new(),
            Some(expires),
        );
        assert!(prepared.get(&credential(1), inputs, now).is_some());
        assert!(
            prepared.get(&credential(2), inputs, now).is_none(),
            "spec changed"
        );
        assert!(
            prepared.get(&credential(1), "app/source@8;", now).is_none(),
            "source changed"
        );
        assert!(
            prepared.get(&credential(1), inputs, expires).is_none(),
            "expired"
        );
        prepared.forget("uid-1");
        assert!(prepared.get(&credential(1), inputs, now).is_none());
    }

    #[tokio::test]
    async fn one_writer_per_secret_at_a_time() {
        let writing = Writing::default();
        let key = ObjectKey::secret("app", "pull");
        let first = writing.claim(&key).await;
        let second = tokio::time::timeout(Duration::from_millis(20), writing.claim(&key)).await;
        assert!(second.is_err(), "claimed twice");
        drop(first);
        let _second = tokio::time::timeout(Duration::from_millis(100), writing.claim(&key))
            .await
            .expect("released on drop");
        let _other = writing.claim(&ObjectKey::secret("app", "other")).await;
    }
}
