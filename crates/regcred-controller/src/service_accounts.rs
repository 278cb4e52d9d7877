//! Reconciles one ServiceAccount's `imagePullSecrets`: every Secret that a covering
//! credential has in place is listed; entries regcred added and no longer wants are
//! removed; everything else is kept. The list is atomic, so updates carry the
//! resourceVersion and are recomputed on conflict: a concurrent writer loses nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use regcred_api::names::{FIELD_MANAGER, SA_ENTRIES_ANNOTATION};
use tracing::{debug, info, instrument, warn};

use crate::cached_account::CachedServiceAccount;
use crate::cached_secret::PullSecret;
use crate::context::{Context, ObjectKey, RetryKey, Stores};
use crate::credential::{Credential, CredentialId};
use crate::error::Error;
use crate::metrics::ControllerName;
use crate::named_secrets::Seen;
use crate::pull_secrets::{self, Keep, Plan};
use crate::targets;

/// Attempts before giving up to the backoff when other writers keep winning the race.
const CONFLICT_RETRIES: usize = 5;

#[instrument(skip_all, fields(namespace = sa.namespace(), name = %sa.name_any()))]
pub(crate) async fn reconcile(
    sa: Arc<CachedServiceAccount>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.account_queue
        .done(&(sa.namespace().unwrap_or_default(), sa.name_any()));
    ctx.stores.wait_ready().await;
    if !ctx.is_leader() || !ctx.patch_service_accounts {
        return Ok(Action::await_change());
    }
    let metrics = ctx.metrics.clone();
    metrics
        .reconcile(ControllerName::ServiceAccount, sync(sa, ctx))
        .await
}

/// Reconciles one ServiceAccount's `imagePullSecrets` (the leader, caches listed).
async fn sync(sa: Arc<CachedServiceAccount>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = sa.namespace().unwrap_or_default();
    if !ctx.stores.namespaces.is_live(&namespace) {
        return Ok(Action::await_change());
    }
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &namespace);
    let key = ObjectKey::service_account(&namespace, &sa.name_any());
    if ctx
        .cache_lag
        .is_stale(&key, sa.metadata.resource_version.as_deref())
    {
        // regcred just patched it; the watch brings the new version and another reconcile.
        return Ok(Action::await_change());
    }
    let retry_key = RetryKey::Reconcile(ObjectKey::of(&*sa));
    let mut current = sa;
    for _ in 0..CONFLICT_RETRIES {
        let plan = plan_for(&ctx.stores, &current, Pointing::InPlace);
        if !changes(&current, &plan) {
            ctx.backoff.reset(&retry_key);
            return Ok(Action::await_change());
        }
        match api
            .patch(
                &current.name_any(),
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &Patch::Merge(patch(&current, &plan)),
            )
            .await
        {
            Ok(_) => {
                ctx.backoff.reset(&retry_key);
                ctx.cache_lag
                    .wrote(&key, current.metadata.resource_version.clone());
                info!(recorded = ?plan.recorded, list = ?plan.image_pull_secrets.iter().map(|r| &r.name).collect::<Vec<_>>(), "imagePullSecrets updated");
                return Ok(Action::await_change());
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                debug!("ServiceAccount changed meanwhile; recomputing from a fresh read");
                match api.get_opt(&current.name_any()).await? {
                    Some(fresh) => current = Arc::new(fresh.into()),
                    None => return Ok(Action::await_change()),
                }
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Ok(Action::await_change());
            }
            Err(e) => return Err(e.into()),
        }
    }
    warn!("ServiceAccount kept changing; retrying later");
    Err(Error::Contended(format!(
        "ServiceAccount {namespace}/{}",
        current.name_any()
    )))
}

/// Whether a reconcile of `sa` would change it, judged from the caches (listed: until
/// then nothing is judged, and everything is judged once they are). Only such
/// ServiceAccounts are queued: queueing every one of 17,000 on each change held 13 MB in
/// the controller's queue and spent the CPU of as many no-op reconciles.
pub(crate) fn needs_reconcile(stores: &Stores, sa: &CachedServiceAccount) -> bool {
    let listed = *stores.ready.borrow();
    listed
        && sa
            .metadata
            .namespace
            .as_deref()
            .is_some_and(|ns| stores.namespaces.is_live(ns))
        && changes(sa, &plan_for(stores, sa, Pointing::InPlace))
}

/// Which of the winner's Secrets a plan may point at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pointing {
    /// Only a Secret regcred has in place (the watch path: the ServiceAccount exists, and
    /// its entry can wait for the Secret's event).
    InPlace,
    /// Also one the leader is about to write: the credential wins the name, has content,
    /// and no one else's Secret holds the name (admission: the object is being created,
    /// its Pods copy the list now, and nothing can add to a Pod later).
    InPlaceOrDue,
}

/// The plan for one ServiceAccount, from the caches alone. The watch path and the
/// admission webhook both call this (with [`Pointing::InPlace`] and
/// [`Pointing::InPlaceOrDue`]): one implementation of what regcred wants on a
/// ServiceAccount.
pub(crate) fn plan_for(stores: &Stores, sa: &CachedServiceAccount, pointing: Pointing) -> Plan {
    let namespace = sa.namespace().unwrap_or_default();
    let name = sa.name_any();
    let labels = sa.metadata.labels.as_ref();
    let recorded = recorded(sa);
    let mut wanted = BTreeMap::new();
    let mut consider = |id: CredentialId,
                        spec: &regcred_api::CredentialSpec,
                        status: Option<&regcred_api::CredentialStatus>,
                        secret: String| {
        if !targets::covers_service_account(spec, &name, labels) {
            return;
        }
        let key = id.to_string();
        // Add an entry only once the winner's own Secret is in place (never point at a
        // Secret regcred does not manage); keep one already added while the credential
        // still wins, so a Secret deleted by hand and restored causes no churn here.
        let in_place = stores
            .managed_secret(&namespace, &secret)
            .is_some_and(|s| s.owner() == Some(key.as_str()));
        let kept = recorded.get(&secret) == Some(&key);
        if stores.winner(&namespace, &secret).as_ref() != Some(&id) {
            return;
        }
        let due =
            || pointing == Pointing::InPlaceOrDue && due(stores, &id, status, &namespace, &secret);
        if in_place || kept || due() {
            wanted.insert(secret, key);
        }
    };
    for c in stores.credentials.state() {
        if c.metadata.namespace.as_deref() == Some(namespace.as_str())
            && stores.covers(&*c, &namespace)
        {
            consider(c.id(), c.spec(), c.status(), c.secret_name());
        }
    }
    for c in stores.cluster_credentials.state() {
        if stores.covers(&*c, &namespace) {
            consider(c.id(), c.spec(), c.status(), c.secret_name());
        }
    }
    let current = &sa.image_pull_secrets;
    let keep = |secret: &str, owner: &str| {
        if wanted.values().any(|o| o == owner) {
            return Keep::No;
        }
        // The credential still covers this ServiceAccount but its (renamed) Secret is not
        // in place yet: keep the old entry until the new one replaces it.
        let replacing = CredentialId::parse(owner).is_some_and(|id| {
            stores.credential_covers_service_account(&id, &namespace, &name, labels)
        });
        if replacing {
            Keep::Recorded
        } else if orphaned(stores, &namespace, secret, owner) {
            Keep::Unrecorded
        } else {
            Keep::No
        }
    };
    pull_secrets::plan(current, &recorded, &wanted, keep)
}

/// Whether the leader is about to write `secret` for the credential `id` in `namespace`
/// (the credential already wins the name there): the credential has content (its last
/// status is not blocked, or it has Secrets in place), and no Secret that is not
/// regcred's, nor another credential's, holds the name.
fn due(
    stores: &Stores,
    id: &CredentialId,
    status: Option<&regcred_api::CredentialStatus>,
    namespace: &str,
    secret: &str,
) -> bool {
    use regcred_api::condition_reasons as reasons;
    if let Some(existing) = stores.labelled_secret(namespace, secret) {
        let key = id.to_string();
        return stores.signer.is_managed(&*existing) && existing.owner() == Some(key.as_str());
    }
    if stores.named.seen(namespace, secret) == Some(Seen::Foreign) {
        return false;
    }
    let writing = status
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == crate::status::READY)
        })
        .is_some_and(|c| {
            // Not blocked by its sources or its registry: its content is at hand (a
            // credential that covered nothing so far says NoTargets).
            [
                reasons::READY,
                reasons::PARTIALLY_SYNCED,
                reasons::CONFLICT,
                reasons::NO_TARGETS,
            ]
            .contains(&c.reason.as_str())
        });
    writing || !stores.secrets_owned_by(id).is_empty()
}

/// Whether some ServiceAccount in `namespace` lists `secret` as an entry regcred added for
/// `owner`.
pub(crate) fn lists_entry(
    stores: &Stores,
    namespace: &str,
    secret: &str,
    owner: &CredentialId,
) -> bool {
    let owner = owner.to_string();
    stores.service_accounts.state().iter().any(|sa| {
        sa.metadata.namespace.as_deref() == Some(namespace)
            && recorded(sa).get(secret) == Some(&owner)
    })
}

/// A recorded entry whose credential is gone, or going (someone else's finalizer may hold
/// its deletion), is left in place only when its Secret was orphaned on purpose: it still
/// exists and carries no ownerReference.
fn orphaned(stores: &Stores, namespace: &str, secret: &str, owner: &str) -> bool {
    let owner_gone = CredentialId::parse(owner).is_none_or(|id| !stores.credential_live(&id));
    owner_gone
        && stores.managed_secret(namespace, secret).is_some_and(|s| {
            s.metadata
                .owner_references
                .as_ref()
                .is_none_or(Vec::is_empty)
        })
}

/// What regcred recorded on the ServiceAccount; an unreadable record counts as empty.
pub(crate) fn recorded(sa: &CachedServiceAccount) -> BTreeMap<String, String> {
    let Some(raw) = &sa.record else {
        return BTreeMap::new();
    };
    serde_json::from_str(raw).unwrap_or_else(|e| {
        warn!(error = %e, "ignoring an unreadable {SA_ENTRIES_ANNOTATION} annotation");
        BTreeMap::new()
    })
}

pub(crate) fn changes(sa: &CachedServiceAccount, plan: &Plan) -> bool {
    sa.image_pull_secrets != plan.image_pull_secrets || recorded(sa) != plan.recorded
}

/// A merge patch replacing the (atomic) list, guarded by the resourceVersion it was
/// computed from.
fn patch(sa: &CachedServiceAccount, plan: &Plan) -> serde_json::Value {
    let record = record_text(plan).map_or(serde_json::Value::Null, Into::into);
    let list = if plan.image_pull_secrets.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::to_value(&plan.image_pull_secrets).expect("references serialize")
    };
    serde_json::json!({
        "metadata": {
            "resourceVersion": sa.metadata.resource_version,
            "annotations": { SA_ENTRIES_ANNOTATION: record },
        },
        "imagePullSecrets": list,
    })
}

/// The [`SA_ENTRIES_ANNOTATION`] value for `plan` (`None`: no annotation), written the same
/// by the watch path's patch and by admission.
pub(crate) fn record_text(plan: &Plan) -> Option<String> {
    (!plan.recorded.is_empty())
        .then(|| serde_json::to_string(&plan.recorded).expect("a map of strings serializes"))
}
